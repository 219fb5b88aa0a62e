//! API clients that try to exhaust a node's memory, descriptors or patience: bundles of
//! hundreds of MiB sent at once, clients that ask for the whole history and never read it, a
//! flood of connections from one address, and connections that send nothing, half a header or
//! half a body. Each is bounded (memory measured), refused or cut off, nothing stored
//! changes, and an honest client from another address writes throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ed25519_consensus::SigningKey;
use lcloud_store::bundle::Encoder;

use super::{Lab, Writer, ensure, node_id, proc_kib};

/// A connection to `api` from the loopback address `from` (127.0.0.x), so that an attacker
/// and the honest client are told apart as two machines would be.
pub(super) fn connect_from(from: [u8; 4], api: &str) -> Result<TcpStream, String> {
    let to: SocketAddr = api.parse().map_err(|e| format!("{api}: {e}"))?;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    let local = SocketAddr::from((from, 0));
    s.bind(&local.into())
        .map_err(|e| format!("bind {local}: {e}"))?;
    s.connect(&to.into())
        .map_err(|e| format!("connect {to}: {e}"))?;
    Ok(s.into())
}

/// The node's open descriptors.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Sends a bundle of `records` records of 1 MiB of noise (its layout and checksum right, so
/// that the node receives all of it) without ever holding it: the HTTP status.
fn send_noise_bundle(
    api: &str,
    cloud: &lcloud_core::Id,
    records: u64,
    seed: u8,
) -> Result<u16, String> {
    const RECORD: usize = lcloud_core::EXPERIENCE_BYTES_MAX;
    let len = 56 + records * (4 + RECORD as u64) + 32;
    let mut s = TcpStream::connect(api).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    write!(
        s,
        "POST /api/bundle HTTP/1.1\r\nHost: {api}\r\n{}Content-Type: application/octet-stream\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n",
        crate::tokens::header(api)
    )
    .map_err(|e| e.to_string())?;
    let (mut enc, head) = Encoder::start(cloud, records);
    let mut sent = s.write_all(&head);
    let mut out = Vec::with_capacity(RECORD + 4);
    let mut noise = vec![seed; RECORD];
    for i in 0..records {
        noise[..8].copy_from_slice(&i.to_le_bytes());
        out.clear();
        enc.record(&mut out, &noise);
        if sent.is_ok() {
            sent = s.write_all(&out);
        }
    }
    out.clear();
    enc.finish(&mut out);
    if sent.is_ok() {
        let _ = s.write_all(&out);
    }
    // A refusal may come (and the connection close) before everything was sent.
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no answer to a bundle (sent: {sent:?})"))
}

/// Three clients send a 256 MiB bundle each, at once: the node receives at most two at a
/// time (the third is told to come back), its peak memory grows by a bounded amount, the
/// spooled files are gone afterwards, and honest writes go on.
pub(super) fn big_bundles(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    const CLIENTS: u8 = 3;
    const RECORDS: u64 = 256;
    let (dirs, genesis) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let cloud = genesis.id();
    let mut a = lab.start(dir, &[])?;
    let rss_before = a.rss_mib();
    let before = a.status()?;
    let honest = Writer::start(&a.api, 0);
    let t = Instant::now();
    let codes: Vec<Result<u16, String>> = std::thread::scope(|s| {
        let api = &a.api;
        let sends: Vec<_> = (0..CLIENTS)
            .map(|c| s.spawn(move || send_noise_bundle(api, &cloud, RECORDS, c + 1)))
            .collect();
        sends
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let took = t.elapsed();
    let peak = proc_kib(a.pid(), "VmHWM:") / 1024.0;
    std::thread::sleep(Duration::from_millis(300));
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    let codes = codes.into_iter().collect::<Result<Vec<_>, _>>()?;
    let received = codes.iter().filter(|c| **c == 200).count();
    let busy = codes.iter().filter(|c| **c == 503).count();
    ensure(received >= 1 && received + busy == codes.len(), || {
        format!("bundle answers {codes:?}")
    })?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    let growth = peak - rss_before;
    ensure(growth <= 256.0, || {
        format!("peak RSS grew by {growth:.0} MiB receiving {CLIENTS} × {RECORDS} MiB")
    })?;
    let after = a.status()?;
    let honest_writes =
        after["experiences"].as_u64().unwrap_or(0) - before["experiences"].as_u64().unwrap_or(0);
    ensure(honest_writes as usize == acked, || {
        format!("{honest_writes} experiences stored, {acked} honest writes acknowledged")
    })?;
    let spooled = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("incoming-"))
        .count();
    ensure(spooled == 0, || {
        format!("{spooled} received bundles left on disk")
    })?;
    Ok(format!(
        "{CLIENTS} bundles of {RECORDS} MiB sent at once: {received} received and checked \
         (every record refused, nothing stored), {busy} told to come back (503); peak RSS \
         {rss_before:.0} → {peak:.0} MiB in {:.1} s; {acked} honest writes meanwhile, p99 {:.0} ms, 0 failed",
        took.as_secs_f64(),
        p99.as_secs_f64() * 1e3
    ))
}

/// Thirty clients ask for the whole history (~54 MiB) and read 1 KiB of it: the node holds
/// one piece per client (not the history), cuts them off at its write deadline, and honest
/// writes go on.
pub(super) fn stalled_readers(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    const CLIENTS: usize = 30;
    let (dirs, _) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let mut a = lab.start_with(dir, &[], &["--write-timeout", "2s"])?;
    // A history of 60 experiences of ~900 KiB.
    let blob = "x".repeat(900 << 10);
    for i in 0..60 {
        let body = format!(r#"{{"ops":[{{"op":"set","path":"/blob{i}","value":"{blob}"}}]}}"#);
        match super::http(&a.api, "POST", "/api/ops", body.as_bytes())? {
            (200, _) => {}
            (code, b) => {
                return Err(format!(
                    "a large write: HTTP {code} {}",
                    String::from_utf8_lossy(&b)
                ));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = a.rss_mib();
    let honest = Writer::start(&a.api, 0);
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = connect_from([127, 0, 0, 2], &a.api)?;
        write!(
            s,
            "GET /api/bundle HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            a.api,
            crate::tokens::header(&a.api)
        )
        .map_err(|e| e.to_string())?;
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).map_err(|e| e.to_string())?;
        ensure(first.starts_with(b"HTTP/1.1 200"), || {
            format!("GET /api/bundle: {}", String::from_utf8_lossy(&first[..40]))
        })?;
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let rss_stalled = a.rss_mib();
    // The write deadline (2 s) cuts them off.
    std::thread::sleep(Duration::from_millis(3000));
    let metrics = a.metrics_text()?;
    let cut: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lcloud_api_connections_total{outcome=\"write_stalled\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    ensure(cut == CLIENTS as u64, || {
        format!("{cut} of {CLIENTS} stalled readers were cut off")
    })?;
    let growth = rss_stalled - rss_before;
    ensure(growth <= 64.0, || {
        format!("RSS grew by {growth:.0} MiB with {CLIENTS} stalled readers")
    })?;
    drop(held);
    Ok(format!(
        "{CLIENTS} clients asked for a 54 MiB history and stopped reading: RSS {rss_before:.0} → \
         {rss_stalled:.0} MiB, all {cut} cut off at the 2 s write deadline; {acked} honest writes \
         meanwhile, p99 {:.0} ms, 0 failed",
        p99.as_secs_f64() * 1e3
    ))
}

/// One address opens 1 000 connections and sends nothing: it gets its 128 places and 503s
/// for the rest, the node's descriptors stay bounded, and a client from another address
/// writes throughout.
pub(super) fn api_flood(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    const FLOOD: usize = 1000;
    const PER_ADDRESS: usize = 128;
    // This process needs the descriptors too.
    lcloud_node::serve::connection_cap(FLOOD + 256);
    let (dirs, _) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let per = PER_ADDRESS.to_string();
    let mut a = lab.start_with(
        dir,
        &[],
        &[
            "--max-connections",
            "512",
            "--max-connections-per-address",
            &per,
            "--header-timeout",
            "60s",
        ],
    )?;
    let fds_before = descriptors(a.pid());
    let rss_before = a.rss_mib();
    let honest = Writer::start(&a.api, 0);
    let t = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..FLOOD {
        conns.push(connect_from([127, 0, 0, 2], &a.api)?);
    }
    let opened = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    // Held: still open with nothing to read. Refused: a 503 and closed, or closed at once
    // (past the refusals the node takes time to explain).
    let (mut held, mut refused, mut told) = (0, 0, 0);
    for c in &mut conns {
        c.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Ok(0) => refused += 1,
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 503") => {
                refused += 1;
                told += 1;
            }
            other => return Err(format!("a flood connection got {other:?}")),
        }
    }
    let fds_during = descriptors(a.pid());
    let rss_during = a.rss_mib();
    std::thread::sleep(Duration::from_millis(300));
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    ensure(
        held == PER_ADDRESS && refused == FLOOD - PER_ADDRESS,
        || format!("{held} held, {refused} refused of {FLOOD}"),
    )?;
    ensure(fds_during <= fds_before + PER_ADDRESS + 16, || {
        format!("descriptors {fds_before} → {fds_during}")
    })?;
    drop(conns);
    Ok(format!(
        "{FLOOD} connections from one address in {:.2} s: {held} held (its cap), {refused} refused \
         ({told} with a 503, the rest closed at once); node descriptors {fds_before} → {fds_during}, RSS {rss_before:.0} → \
         {rss_during:.0} MiB; {acked} honest writes from another address meanwhile, p99 {:.0} ms, \
         0 failed",
        opened.as_secs_f64(),
        p99.as_secs_f64() * 1e3
    ))
}

/// 300 connections from three addresses: 100 send nothing, 100 half a header, 100 a write's
/// header and half its body. All are closed at the 1 s deadlines, nothing half-sent is
/// written, and honest writes go on.
pub(super) fn slow_clients(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    const EACH: usize = 100;
    let (dirs, _) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let mut a = lab.start_with(
        dir,
        &[],
        &["--header-timeout", "1s", "--body-timeout", "1s"],
    )?;
    let honest = Writer::start(&a.api, 0);
    let auth = crate::tokens::header(&a.api);
    let mut conns = Vec::new();
    for i in 0..3 * EACH {
        let mut s = connect_from([127, 0, 0, 2 + (i / EACH) as u8], &a.api)?;
        match i / EACH {
            0 => Ok(()),
            1 => write!(s, "POST /api/ops HTTP/1.1\r\nHost: {}\r\nCont", a.api),
            _ => write!(
                s,
                "POST /api/ops HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{{\"ops\":[{{\"op\":\"set\",\"path\":\"/evil\"",
                a.api
            ),
        }
        .map_err(|e| e.to_string())?;
        conns.push(s);
    }
    let t = Instant::now();
    let mut closed = 0;
    for c in &mut conns {
        let left = Duration::from_secs(10).saturating_sub(t.elapsed());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut sink = Vec::new();
        if c.read_to_end(&mut sink).is_ok() {
            closed += 1;
        }
    }
    let all_closed = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    ensure(closed == conns.len(), || {
        format!(
            "{} of {} slow connections still open after 10 s",
            conns.len() - closed,
            conns.len()
        )
    })?;
    let state = a.get("/api/state")?;
    ensure(state.get("evil").is_none(), || {
        format!("a half-sent write was stored: {state}")
    })?;
    Ok(format!(
        "{} slow connections (nothing, half a header, half a body) all closed within {:.1} s of \
         the 1 s deadlines; nothing half-sent stored; {acked} honest writes meanwhile, p99 {:.0} ms, 0 failed",
        conns.len(),
        all_closed.as_secs_f64(),
        p99.as_secs_f64() * 1e3
    ))
}
