//! `lcloud status`: what this node holds and how far it is final, from the store or from a
//! running node's `/api/status`, printed the same way either way.

use std::path::Path as FsPath;

use anyhow::Result;
use lcloud_core::NodeId;
use lcloud_store::Identity;
use serde_json::{Value as J, json};

use crate::commands::{open, print};

/// The status of the node in `dir`, read from its store (the node must not be running).
pub fn offline(dir: &FsPath, json_out: bool) -> Result<()> {
    let node = open(dir)?;
    let lattice = node.replica.lattice();
    let me = Identity::load(dir)?.map(|i| i.id().to_hex());
    let root = node.replica.root();
    let value = json!({
        "node": me,
        "cloud": node.replica.cloud().to_hex(),
        "root": root.to_hex(),
        "experiences": lattice.len(),
        "heads": lattice.heads().iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "parked": lattice.parked_len(),
        "forks": lattice.forks().len(),
        "finality": lcloud_node::api::finality_json(lattice),
    });
    let names = &node.names;
    print(json_out, value.clone(), || {
        render(&value, &|hex| match NodeId::from_hex(hex) {
            Some(n) => names.show(&n),
            None => short(hex),
        })
    });
    Ok(())
}

/// What `/api/status` answered, for people.
pub fn render(v: &J, name: &dyn Fn(&str) -> String) -> String {
    let text = |k: &str| v[k].as_str().map(short).unwrap_or_else(|| "-".into());
    let count = |j: &J| j.as_u64().unwrap_or(0);
    let mut out = vec![
        format!(
            "node         {}",
            v["node"].as_str().map(name).unwrap_or_else(|| "-".into())
        ),
        format!("cloud        {}", text("cloud")),
        format!("root         {}", v["root"].as_str().unwrap_or("-")),
        format!(
            "experiences  {} ({} heads, {} parked, {} fork proofs)",
            count(&v["experiences"]),
            v["heads"].as_array().map_or(0, Vec::len),
            count(&v["parked"]),
            count(&v["forks"])
        ),
    ];
    if let Some(peers) = v["peers"].as_array() {
        out.push(format!("peers        {}", peers.len()));
    }
    let f = &v["finality"];
    if f["open"].as_bool() == Some(true) {
        out.push(
            "finality     none: the cloud is open (anyone may write on top of the genesis alone)"
                .into(),
        );
        return out.join("\n");
    }
    let clock = |c: &J| {
        c.as_object()
            .map(|m| {
                m.iter()
                    .map(|(n, s)| format!("{}:{s}", name(n)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    out.push(format!(
        "finality     {} stable, {} not yet seen by every member",
        count(&f["stable"]),
        count(&f["unstable"])
    ));
    out.push(format!("frontier     {}", clock(&f["frontier"])));
    if let Some(w) = f["held_back_by"].as_object() {
        out.push(format!(
            "held back by {} ({} experiences it has not acknowledged)",
            w.get("node")
                .and_then(J::as_str)
                .map(name)
                .unwrap_or_default(),
            w.get("behind").map(count).unwrap_or(0)
        ));
    }
    match f["final_checkpoint"].as_object() {
        Some(c) => out.push(format!(
            "checkpoint   depth {} final, root {}",
            c.get("depth").map(count).unwrap_or(0),
            c.get("root").and_then(J::as_str).unwrap_or("-")
        )),
        None => out.push("checkpoint   none final yet".into()),
    }
    let late = f.get("late").map(count).unwrap_or(0);
    if late > 0 {
        out.push(format!(
            "late         {late} experience(s) left out: below the final checkpoint, seen by no \
             member that attested it (a fork that surfaced late; see `lcloud forks`)"
        ));
    }
    for c in f["pending_checkpoints"].as_array().into_iter().flatten() {
        out.push(format!(
            "             depth {} waits for {} attestation(s)",
            count(&c["depth"]),
            c["missing"].as_array().map_or(0, Vec::len)
        ));
    }
    for c in f["divergent_checkpoints"].as_array().into_iter().flatten() {
        let roots = c["roots"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(root, by)| {
                        let by: Vec<String> = by
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(J::as_str)
                            .map(name)
                            .collect();
                        format!("{} by {}", short(root), by.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        out.push(format!(
            "DIVERGENCE   depth {}: {roots}",
            count(&c["depth"])
        ));
    }
    for m in f["members"].as_array().into_iter().flatten() {
        out.push(format!(
            "  member {:<12} behind {}{}",
            m["node"].as_str().map(name).unwrap_or_default(),
            count(&m["behind"]),
            if m["forked"].as_bool() == Some(true) {
                " (forked: holds finality at its fork until removed)"
            } else {
                ""
            }
        ));
    }
    out.join("\n")
}

/// The first 8 characters of an id (whatever a node answered: never a byte slice that could
/// split a character).
pub fn short(hex: &str) -> String {
    hex.chars().take(8).collect()
}
