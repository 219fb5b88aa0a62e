//! Keys that lost their right keep writing: a removed member, and a rotated-away key (a
//! stolen laptop's, or a backup's). What they sign with the loss in its past is refused and
//! never stored; what they signed without having seen it is stored (the history keeps it) but
//! left out of the state on every node; the peer-to-peer port shuts them out; honest writes
//! go on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_consensus::SigningKey;
use lcloud_core::sync::{Request, Response, Summary};
use lcloud_core::{Experience, Id, NodeId};
use lcloud_store::bundle::Encoder;

use super::{ATTACKER_KEYS, Attacker, Lab, Node, ensure, node_id, push, runtime, signed};

/// Posts a bundle of `exps` to the node's API (as an admin who relays what reached it): the
/// status and the answer.
fn relay(api: &str, cloud: &Id, exps: &[&Experience]) -> Result<(u16, serde_json::Value), String> {
    let (mut enc, mut body) = Encoder::start(cloud, exps.len() as u64);
    for e in exps {
        enc.record(&mut body, &e.to_bytes());
    }
    enc.finish(&mut body);
    let mut s = TcpStream::connect(api).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    write!(
        s,
        "POST /api/bundle HTTP/1.1\r\nHost: {api}\r\n{}Content-Type: application/octet-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        crate::tokens::header(api),
        body.len()
    )
    .and_then(|()| s.write_all(&body))
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    Ok((code, json))
}

/// An admin op through the API; the experience's id.
fn admin_op(api: &str, op: &str, node: &NodeId) -> Result<Id, String> {
    let body = format!(r#"{{"ops":[{{"op":"{op}","node":"{}"}}]}}"#, node.to_hex());
    match super::http(api, "POST", "/api/ops", body.as_bytes())? {
        (200, b) => {
            let j: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
            j["id"]
                .as_str()
                .and_then(Id::from_hex)
                .ok_or_else(|| format!("{op}: no id in {j}"))
        }
        (code, b) => Err(format!("{op}: HTTP {code} {}", String::from_utf8_lossy(&b))),
    }
}

/// Tries `tries` times to sync from the node as `key`: how many got anything at all.
fn syncs_that_got_through(
    rt: &tokio::runtime::Runtime,
    key: &SigningKey,
    node: &Node,
    cloud: Id,
    tries: usize,
) -> usize {
    let sync = Request::Sync {
        summary: Summary {
            cloud,
            chains: vec![],
        },
    };
    (0..tries)
        .filter(|_| {
            Attacker::connect(rt, key, node)
                .and_then(|att| att.request(&sync))
                .is_ok_and(|r| matches!(r, Response::Sync { .. }))
        })
        .count()
}

/// The document's `/attack` and the count of stored experiences.
fn snapshot(node: &Node) -> Result<(serde_json::Value, serde_json::Value), String> {
    let doc = node.get("/api/state")?;
    Ok((doc["attack"].clone(), node.status()?["experiences"].clone()))
}

/// Relays `exps` (the first signed without seeing the loss of right, the second after) to
/// the node: exactly one is stored, and the document is unchanged.
fn relayed_one_stored_none_folded(
    node: &Node,
    cloud: &Id,
    exps: &[&Experience],
    (attack_before, stored_before): (serde_json::Value, serde_json::Value),
) -> Result<(), String> {
    let (code, report) = relay(&node.api, cloud, exps)?;
    ensure(code == 200, || {
        format!("the relayed bundle: HTTP {code} {report}")
    })?;
    let (attack_after, stored_after) = snapshot(node)?;
    ensure(attack_after == attack_before, || {
        format!("the state changed: /attack {attack_before} -> {attack_after}")
    })?;
    let stored = stored_after.as_u64().unwrap_or(0) - stored_before.as_u64().unwrap_or(0);
    ensure(stored == 1, || {
        format!(
            "{stored} of the 2 later writes were stored (expected only the first, concurrent one)"
        )
    })
}

/// Waits until `cond` holds (up to 20 s).
fn wait(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A member writes, is removed by the admin, and keeps writing: one write it signed before
/// seeing the removal, one after (naming the removal, which it read before losing access).
pub(super) fn removed_member(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let member = &keys[ATTACKER_KEYS];
    let (dirs, genesis) = lab.cloud(1, &[node_id(member)])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    a.write(1)?;
    let x1 = signed(member, cloud, 1, None, vec![genesis.id()], 1);
    let att = Attacker::connect(&rt, member, &a)?;
    match att.request(&push(cloud, vec![x1.to_bytes()]))? {
        Response::Pushed { new: 1, .. } => {}
        other => {
            return Err(format!(
                "the member's first write was not stored: {other:?}"
            ));
        }
    }
    let removal = admin_op(&a.api, "remove_member", &node_id(member))?;
    let before = snapshot(&a)?;
    // Its connection is cut, and it cannot come back.
    let through = syncs_that_got_through(&rt, member, &a, cloud, 5);
    ensure(through == 0, || {
        format!("a removed member synced {through} times out of 5")
    })?;
    // x2: signed before it saw the removal; x3: after (the removal in its past).
    let x2 = signed(member, cloud, 2, Some(x1.id()), vec![], 2);
    let x3 = signed(member, cloud, 3, Some(x2.id()), vec![removal], 3);
    relayed_one_stored_none_folded(&a, &cloud, &[&x2, &x3], before)?;
    let rejected = a.rejected()?;
    let refused = rejected.get("not a member").copied().unwrap_or(0);
    ensure(refused >= 1, || format!("no refusal counted: {rejected:?}"))?;
    a.write(2)?;
    Ok(format!(
        "after its removal the member's 5 sync attempts got nothing; of its 2 later writes the one naming the removal was refused, the concurrent one stored but left out of the state; {refused} refusals counted; honest writes go on"
    ))
}

/// A member's node rotates its key; a copy of the old key (a backup) keeps writing: on the old
/// chain as the backup left it (a fork of the rotation), and after the rotation.
pub(super) fn rotated_key(lab: &mut Lab, _keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(2, &[])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    let b = lab.start(&dirs[1], &[&a.p2p])?;
    b.write(1)?;
    wait("the member's write to reach the admin", || {
        snapshot(&a).is_ok_and(|(_, n)| n.as_u64() >= Some(2))
    })?;
    drop(b);
    // The backup: the old key and the chain as it was.
    let backup = dirs[1].with_extension("backup");
    copy_dir(&dirs[1], &backup)?;
    let old = lcloud_store::Identity::load(&backup)
        .map_err(|e| e.to_string())?
        .ok_or("no identity in the backup")?
        .key()
        .clone();
    let out = lab.lcloud(&dirs[1], &["--json", "key", "rotate"])?;
    let rotated: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let rotation = rotated["rotation"]
        .as_str()
        .and_then(Id::from_hex)
        .ok_or_else(|| format!("no rotation id in {rotated}"))?;
    let b = lab.start(&dirs[1], &[&a.p2p])?;
    b.write(2)?;
    wait(
        "the rotation and the new key's write to reach the admin",
        || {
            a.get("/api/state")
                .is_ok_and(|d| d["honest"].as_array().is_some_and(|h| h.len() == 2))
        },
    )?;
    wait(
        "the retired key to be deleted once a peer has the rotation",
        || !dirs[1].join("identity.key.retired").exists(),
    )?;
    let before = snapshot(&a)?;
    // The old key is shut out of the peer-to-peer port.
    let through = syncs_that_got_through(&rt, &old, &a, cloud, 5);
    ensure(through == 0, || {
        format!("the rotated-away key synced {through} times out of 5")
    })?;
    // The backup writes on its chain (seq 2: the rotation's seq too), then after the rotation.
    let store = lcloud_store::Store::open(&backup).map_err(|e| e.to_string())?;
    let replica = store.load(&mut |_| {}).map_err(|e| e.to_string())?;
    let d = replica.draft(&node_id(&old), vec![]);
    let forked = signed(&old, cloud, d.seq, d.prev, d.deps, 7);
    let after = signed(&old, cloud, d.seq + 1, Some(rotation), vec![], 8);
    relayed_one_stored_none_folded(&a, &cloud, &[&forked, &after], before)?;
    b.write(3)?;
    a.write(4)?;
    Ok(
        "the restarted node told its peer under the old key and retired that key once the peer held the rotation; after the rotation the old key's 5 sync attempts got nothing; a backup's write forking the rotation was stored but left out of the state, its write after the rotation refused; the new key and the admin write on"
            .into(),
    )
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().map_err(|e| e.to_string())?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
