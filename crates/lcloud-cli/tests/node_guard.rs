//! A node process refuses what it must not accept: a P2P port another process listens on,
//! an address it cannot bind (with the reason), and API requests from other sites' pages or
//! under other host names (issue 17, items 3 and 4).

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::{lcloud, node_cmd, start};

fn store(base: &Path, name: &str) -> std::path::PathBuf {
    let dir = base.join(name);
    assert!(lcloud(&dir, &["init", "--alias", name]).status.success());
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_second_node_on_a_port_in_use_fails_with_the_reason() {
    let base = tempfile::tempdir().unwrap();
    let (a, b) = (store(base.path(), "a"), store(base.path(), "b"));
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let _first = start(&a, &listen);
    let out = node_cmd(&b, &listen).output().unwrap();
    assert!(!out.status.success(), "the second node must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");
    assert!(err.contains("in use"), "names the reason: {err}");
    // An address this machine does not have: the reason is said, not left empty.
    let out = node_cmd(&b, "/ip4/192.0.2.1/tcp/7999").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let reason = err
        .lines()
        .find_map(|l| l.split_once("cannot listen on /ip4/192.0.2.1/tcp/7999: "))
        .map(|(_, r)| r.trim().to_owned())
        .unwrap_or_default();
    assert!(!reason.is_empty(), "a reason: {err}");
}

/// One HTTP/1.1 request over a plain socket; returns the status code.
fn request(api: &str, head: &str, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(api).unwrap();
    write!(
        s,
        "{head}\r\n{}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        common::auth_line(api),
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_api_refuses_other_sites_and_other_host_names() {
    let base = tempfile::tempdir().unwrap();
    let a = store(base.path(), "a");
    let (_node, api) = start(&a, "/ip4/127.0.0.1/tcp/0");
    let write = r#"{"ops":[{"op":"set","path":"/x","value":1}]}"#;
    let post = |extra: &str| {
        request(
            &api,
            &format!("POST /api/ops HTTP/1.1\r\nHost: {api}{extra}"),
            write,
        )
    };
    // A page on another site, posting a "simple" request that needs no preflight.
    assert_eq!(
        post("\r\nContent-Type: text/plain\r\nOrigin: http://evil.example"),
        403
    );
    assert_eq!(post("\r\nContent-Type: text/plain"), 415);
    assert_eq!(
        post("\r\nContent-Type: application/json\r\nOrigin: http://evil.example"),
        403
    );
    // DNS rebinding: another name, resolved to this machine.
    let rebound = request(
        &api,
        "POST /api/ops HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json",
        write,
    );
    assert_eq!(rebound, 403);
    let port = api.rsplit_once(':').unwrap().1;
    let read = request(
        &api,
        &format!("GET /api/state HTTP/1.1\r\nHost: evil.example:{port}"),
        "",
    );
    assert_eq!(read, 403);
    // Nothing of it was written.
    let state = request(
        &api,
        &format!("GET /api/state?path=/x HTTP/1.1\r\nHost: {api}"),
        "",
    );
    assert_eq!(state, 404);
    // Programs on this machine, and the node's own pages, are served.
    assert_eq!(post("\r\nContent-Type: application/json"), 200);
    assert_eq!(
        post(&format!(
            "\r\nContent-Type: application/json\r\nOrigin: http://{api}"
        )),
        200
    );
    let local = format!("localhost:{port}");
    assert_eq!(
        request(
            &api,
            &format!("GET /api/state HTTP/1.1\r\nHost: {local}"),
            ""
        ),
        200
    );
}

/// Through the API as through the CLI (`tests/refusals.rs`): values up to the nesting limit are
/// written and read back, deeper ones refused with 422 naming the limit, and the node keeps
/// serving and restarts on its store.
#[test]
fn the_api_refuses_values_nested_past_the_limit_and_reads_back_the_rest() {
    let base = tempfile::tempdir().unwrap();
    let a = store(base.path(), "a");
    let max = lcloud_core::VALUE_DEPTH_MAX;
    let nested = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
    {
        let (_node, api) = start(&a, "/ip4/127.0.0.1/tcp/0");
        for depth in max - 2..=max + 2 {
            let body = format!(
                r#"{{"ops":[{{"op":"set","path":"/d{depth}","value":{}}}]}}"#,
                nested(depth)
            );
            let head =
                format!("POST /api/ops HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json");
            let want = if depth <= max { 200 } else { 422 };
            assert_eq!(request(&api, &head, &body), want, "depth {depth}");
        }
        let read = format!("GET /api/state?path=/d{max} HTTP/1.1\r\nHost: {api}");
        assert_eq!(request(&api, &read, ""), 200);
    }
    // The node is gone (killed); its store opens and verifies.
    let out = lcloud(&a, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lcloud(&a, &["--json", "state"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        state[format!("d{max}")],
        serde_json::from_str::<serde_json::Value>(&nested(max)).unwrap()
    );
    assert!(state.get(format!("d{}", max + 1)).is_none());
}
