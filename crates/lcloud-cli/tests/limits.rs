//! What an API client cannot push past (issue 19): HTTPS with the node's certificate, a cap
//! on open connections, deadlines for headers and bodies that close idle and slow
//! connections, and a per-token request rate. Past each, the client is told why (or cut off)
//! and everyone else is served as before.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{lcloud, ok, start_with};

/// Reads until the server closes the connection (or `within` passes): what it sent, and
/// whether it closed.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[test]
fn the_api_serves_https_to_clients_that_trust_its_certificate() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    ok(&dir, &["init"]);
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = base.path().join("cert.pem");
    let key = base.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (_node, api) = start_with(
        &dir,
        "/ip4/127.0.0.1/tcp/0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{api}");
    let node = |args: &[&str]| {
        let mut full = vec!["--node", &url, "--ca-cert", cert.to_str().unwrap()];
        full.extend_from_slice(args);
        lcloud(&dir, &full)
    };
    let set = node(&["set", "/over", "\"tls\""]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let got = node(&["state", "/over"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "\"tls\"");

    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = lcloud(&dir, &["--node", &url, "state", "/over"]);
    assert!(!untrusting.status.success());
    let why = String::from_utf8_lossy(&untrusting.stderr);
    assert!(why.contains("cannot reach the node"), "{why}");
    // Plain HTTP to the HTTPS port gets no answer, and the node goes on serving.
    let mut plain = TcpStream::connect(&api).unwrap();
    // The node may cut the connection before the whole request is written: a broken pipe
    // here is that answer too.
    let _ = write!(plain, "GET /api/health HTTP/1.1\r\nHost: {api}\r\n\r\n");
    let (said, closed) = read_until_closed(&mut plain, Duration::from_secs(10));
    assert!(closed && !said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(node(&["state", "/over"]).status.success());

    // A certificate file that is not one is refused at start, naming the flag.
    let other = base.path().join("other");
    ok(&other, &["init"]);
    let bad = lcloud(
        &other,
        &[
            "node",
            "run",
            "--api",
            "127.0.0.1:0",
            "--tls-cert",
            key.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("--tls-cert"), "{why}");
}

#[test]
fn connections_past_the_cap_are_refused_and_idle_or_slow_ones_are_closed() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    ok(&dir, &["init"]);
    let (_node, api) = start_with(
        &dir,
        "/ip4/127.0.0.1/tcp/0",
        &[
            "--max-connections",
            "4",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    );
    let auth = common::auth_line(&api);
    // Four connections: one sends nothing, one half a header, one a header and half its
    // body, one a request and then nothing.
    let mut silent = TcpStream::connect(&api).unwrap();
    let mut half_header = TcpStream::connect(&api).unwrap();
    write!(half_header, "GET /api/health HTTP/1.1\r\nHo").unwrap();
    let mut half_body = TcpStream::connect(&api).unwrap();
    write!(
        half_body,
        "POST /api/ops HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"ops\":"
    )
    .unwrap();
    let mut idle = TcpStream::connect(&api).unwrap();
    write!(idle, "GET /api/health HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The fifth is told why and closed.
    let mut fifth = TcpStream::connect(&api).unwrap();
    let (said, closed) = read_until_closed(&mut fifth, Duration::from_secs(5));
    assert!(closed, "the fifth connection stays open");
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.contains("as many API connections"), "{said}");

    // Each of the four is closed after its deadline (1 s), long before the test's.
    let t = Instant::now();
    for (what, s) in [
        ("silent", &mut silent),
        ("half a header", &mut half_header),
        ("half a body", &mut half_body),
        ("idle after an answer", &mut idle),
    ] {
        let (said, closed) = read_until_closed(s, Duration::from_secs(10));
        assert!(closed, "{what}: still open");
        if what == "half a body" {
            assert!(!said.contains(" 200 "), "{what}: {said}");
        }
        if what == "idle after an answer" {
            assert!(said.starts_with("HTTP/1.1 200"), "{what}: {said}");
        }
    }
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // Their places are free again, and nothing half-sent was written.
    let (code, body) = common::request(&api, "GET", "/api/state", &auth, "");
    assert_eq!((code, body.as_str()), (200, "{}"));
    let (code, metrics) = common::request(&api, "GET", "/metrics", &auth, "");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lcloud_api_connections_total{outcome=\"refused_cap\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_token_past_its_rate_gets_429_while_other_tokens_are_served() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    ok(&dir, &["init"]);
    let reader = {
        let j: serde_json::Value =
            serde_json::from_str(&ok(&dir, &["--json", "token", "create", "--scope", "read"]))
                .unwrap();
        j["token"].as_str().unwrap().to_owned()
    };
    let (_node, api) = start_with(&dir, "/ip4/127.0.0.1/tcp/0", &["--token-rate", "5"]);
    let admin = common::auth_line(&api);
    // Well over five requests at once: the first five answered, the rest 429.
    let codes: Vec<(u16, String)> = (0..12)
        .map(|_| common::request(&api, "GET", "/api/clock", &admin, ""))
        .collect();
    let refused: Vec<_> = codes.iter().filter(|(c, _)| *c == 429).collect();
    assert!(
        refused.len() >= 5,
        "{:?}",
        codes.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert!(
        refused[0].1.contains("requests a second"),
        "{}",
        refused[0].1
    );
    assert_eq!(codes[0].0, 200);
    // Another token has its own rate.
    let other = format!("Authorization: Bearer {reader}\r\n");
    assert_eq!(
        common::request(&api, "GET", "/api/clock", &other, "").0,
        200
    );
    // And a second later the first one is served again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        common::request(&api, "GET", "/api/clock", &admin, "").0,
        200
    );
}
