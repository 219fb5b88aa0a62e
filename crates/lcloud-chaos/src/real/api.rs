//! What the harness asks each node's HTTP API: status, clocks, agreement.

use super::*;

/// Node `i`'s `/api/status`, if it answers.
pub(super) fn status_of(i: usize) -> Option<serde_json::Value> {
    let (_, b) = http(i, "GET", "/api/status", "").ok()?;
    serde_json::from_str(&b).ok()
}

/// Whether every node's status shows one root and the same heads.
pub(super) fn agree(status: &[serde_json::Value]) -> bool {
    let roots: Vec<String> = status.iter().map(|j| j["root"].to_string()).collect();
    let heads: Vec<String> = status.iter().map(|j| j["heads"].to_string()).collect();
    check::converged(&heads, &roots)
}

/// One HTTP request with a timeout: `Ok((status, body))`, or `Err(sent)` where `sent` says
/// whether the request may have reached the node (then the outcome is unknown).
pub(super) fn http(i: usize, method: &str, path: &str, body: &str) -> Result<(u16, String), bool> {
    let subnet = subnet_of_run();
    let addr = format!("{subnet}.{i}:{API_PORT}");
    let mut s = TcpStream::connect_timeout(
        &addr.parse().expect("an address"),
        Duration::from_millis(500),
    )
    .map_err(|_| false)?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
        crate::tokens::header(&addr),
        body.len()
    )
    .map_err(|_| true)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|_| true)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(true)?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A node's frontier clock (author → highest seq), if it answers.
pub(super) fn clock_of(i: usize) -> Option<BTreeMap<String, u64>> {
    let (code, body) = http(i, "GET", "/api/clock", "").ok()?;
    if code != 200 {
        return None;
    }
    let j: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        j.as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect(),
    )
}

/// The pointwise maximum of the clocks of the nodes that answer.
pub(super) fn frontier(nodes: usize) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for c in (1..=nodes).filter_map(clock_of) {
        for (k, v) in c {
            let e = out.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    out
}

pub(super) fn dominates(c: &BTreeMap<String, u64>, target: &BTreeMap<String, u64>) -> bool {
    target
        .iter()
        .all(|(k, v)| c.get(k).copied().unwrap_or(0) >= *v)
}
