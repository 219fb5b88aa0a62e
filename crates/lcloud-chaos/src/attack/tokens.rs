//! API clients with no token, a forged one, an expired one, a revoked one, and one whose scope
//! is too small, hammering a node while an honest client writes with a valid token: every
//! request refused with the right status and counted by reason, nothing stored changes, and
//! the honest writes go on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ed25519_consensus::SigningKey;

use super::{Lab, Writer, ensure, node_id};

/// Requests of each kind.
const EACH: usize = 200;

/// One request with `token` (or none): the status.
fn send(
    api: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<u16, String> {
    let mut s = TcpStream::connect(api).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no status".to_owned())
}

fn counter(metrics: &str, reason: &str) -> u64 {
    let key = format!("lcloud_api_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn bad_tokens(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let (dirs, _) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let create = |args: &[&str]| -> Result<String, String> {
        let mut full = vec!["--json", "token", "create"];
        full.extend_from_slice(args);
        let j: serde_json::Value =
            serde_json::from_str(&lab.lcloud(dir, &full)?).map_err(|e| e.to_string())?;
        Ok(j["token"].as_str().unwrap_or_default().to_owned())
    };
    let read = create(&["--scope", "read", "--name", "reader"])?;
    let revoked = create(&["--scope", "admin", "--name", "gone"])?;
    let expired = create(&["--scope", "admin", "--expires", "1s"])?;
    lab.lcloud(dir, &["token", "revoke", "gone"])?;
    std::thread::sleep(Duration::from_millis(2100));
    let mut a = lab.start(dir, &[])?;
    let honest = Writer::start(&a.api, 0);
    let forged = format!("lct1.{}.{}", "0".repeat(8), "f".repeat(64));
    let evil = r#"{"ops":[{"op":"set","path":"/evil","value":1}]}"#;
    // (token, status it must get, counter it must raise)
    let cases: [(Option<&str>, u16, &str); 5] = [
        (None, 401, "missing"),
        (Some(&forged), 401, "invalid"),
        (Some(&expired), 401, "invalid"),
        (Some(&revoked), 401, "invalid"),
        (Some(&read), 403, "scope"),
    ];
    let t = Instant::now();
    for (token, want, _) in &cases {
        for i in 0..EACH {
            let (method, path, body) = if i % 4 == 0 {
                ("POST", "/api/contracts", r#"{"code":"00"}"#)
            } else {
                ("POST", "/api/ops", evil)
            };
            let got = send(&a.api, method, path, *token, body)?;
            ensure(got == *want, || {
                format!("{method} {path} with {token:?}: HTTP {got}, expected {want}")
            })?;
        }
    }
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    let state = a.get("/api/state")?;
    ensure(state.get("evil").is_none(), || {
        format!("a refused request wrote: {state}")
    })?;
    let metrics = a.metrics_text()?;
    for reason in ["missing", "invalid", "scope"] {
        let want = cases.iter().filter(|c| c.2 == reason).count() * EACH;
        let got = counter(&metrics, reason);
        ensure(got == want as u64, || {
            format!("lcloud_api_refused_total{{reason={reason:?}}} is {got}, expected {want}")
        })?;
    }
    Ok(format!(
        "{} requests with no, forged, expired, revoked and read-only tokens refused (401/403) and counted by reason in {:.1} s, nothing written; {acked} honest writes meanwhile, p99 {:.0} ms, 0 failed",
        cases.len() * EACH,
        took.as_secs_f64(),
        p99.as_secs_f64() * 1e3
    ))
}

/// Opens an event stream with `token` from another address than the honest writer's (so that
/// the per-address connection cap, which the flood reaches, does not turn the honest client
/// away): the status, and the connection (kept open). A connection refused past that cap
/// (answered 503 and closed, maybe before the request was sent) counts as 503.
fn open_stream(api: &str, token: &str) -> Result<(u16, TcpStream), String> {
    let mut s = super::clients::connect_from([127, 0, 0, 2], api)?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return Ok((503, s));
    }
    let code = String::from_utf8_lossy(&head[9..12])
        .parse()
        .map_err(|_| "no status".to_owned())?;
    Ok((code, s))
}

/// Twenty tokens each open as many event streams as they may, and more: the node keeps at
/// most its cap open (the rest refused with 503 or 429), keeps its memory, and honest writes
/// go on.
pub(super) fn stream_flood(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    use lcloud_node::api::{STREAMS_MAX, STREAMS_PER_TOKEN_MAX};
    let (dirs, _) = lab.cloud(1, &[node_id(&keys[0])])?;
    let dir = &dirs[0];
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let j: serde_json::Value = serde_json::from_str(
            &lab.lcloud(dir, &["--json", "token", "create", "--scope", "read"])?,
        )
        .map_err(|e| e.to_string())?;
        tokens.push(j["token"].as_str().unwrap_or_default().to_owned());
    }
    let mut a = lab.start(dir, &[])?;
    let rss_before = a.rss_mib();
    let honest = Writer::start(&a.api, 0);
    let mut held = Vec::new();
    let (mut busy, mut too_many) = (0, 0);
    for t in &tokens {
        for _ in 0..STREAMS_PER_TOKEN_MAX + 4 {
            match open_stream(&a.api, t)? {
                (200, s) => held.push(s),
                (503, _) => busy += 1,
                (429, _) => too_many += 1,
                (code, _) => return Err(format!("an event stream got HTTP {code}")),
            }
        }
    }
    let rss_after = a.rss_mib();
    std::thread::sleep(Duration::from_millis(300));
    let (acked, p99, failed) = honest.stop();
    ensure(a.alive(), || "the node stopped".into())?;
    ensure(held.len() == STREAMS_MAX, || {
        format!("{} streams open, the cap is {STREAMS_MAX}", held.len())
    })?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    let growth = rss_after - rss_before;
    ensure(growth <= 32.0, || format!("RSS grew by {growth:.1} MiB"))?;
    Ok(format!(
        "{} event streams asked for by 20 tokens: {} open (the cap), {busy} refused 503, {too_many} refused 429; RSS {rss_before:.0} → {rss_after:.0} MiB; {acked} honest writes meanwhile, p99 {:.0} ms, 0 failed",
        20 * (STREAMS_PER_TOKEN_MAX + 4),
        held.len(),
        p99.as_secs_f64() * 1e3
    ))
}
