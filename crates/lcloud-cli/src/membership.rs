//! `lcloud member …` and `lcloud key rotate`: who may write, and changing it.

use std::path::Path as FsPath;

use anyhow::{Context, Result, anyhow, bail};
use lcloud_core::{NodeId, Op};
use lcloud_store::Identity;
use serde_json::json;

use crate::MemberAction;
use crate::commands::{open, print, write_loaded};

/// The op of a `member` command (`None` for `list`); `alias` finds a node by its local name.
pub(crate) fn op(
    action: &MemberAction,
    alias: impl Fn(&str) -> Option<NodeId>,
) -> Result<Option<Op>> {
    let id = |name: &str| {
        NodeId::from_hex(name).or_else(|| alias(name)).ok_or_else(|| {
            anyhow!("unknown node {name:?}: give its id (64 hex digits, from `lcloud id` on it) or a local alias")
        })
    };
    Ok(Some(match action {
        MemberAction::Add { node } => Op::AddMember { node: id(node)? },
        MemberAction::Remove { node } => Op::RemoveMember { node: id(node)? },
        MemberAction::Promote { node } => Op::AddAdmin { node: id(node)? },
        MemberAction::Demote { node } => Op::RemoveAdmin { node: id(node)? },
        MemberAction::List => return Ok(None),
    }))
}

/// `lcloud key rotate`: the rotation, signed by the old key, then the switch to the new one
/// (each step survives a crash: see `lcloud_store::rotate`).
pub(crate) fn rotate_key(dir: &FsPath, json_out: bool) -> Result<()> {
    let old = Identity::load(dir)?.ok_or_else(|| {
        anyhow!(
            "no identity in {}: run `lcloud init` or `lcloud join`",
            dir.display()
        )
    })?;
    if lcloud_store::rotate::retired(dir)?.is_some() {
        bail!(
            "the previous key rotation has not reached any peer yet (its old key waits in \
             identity.key.retired): start the node once with --peer so it tells them, or hand \
             them a bundle (`lcloud export`) and delete that file, before rotating again"
        );
    }
    let mut node = open(dir).map_err(|e| {
        if matches!(
            e.downcast_ref::<lcloud_store::StoreError>(),
            Some(lcloud_store::StoreError::Busy(_))
        ) {
            anyhow!(
                "{e}: a running node rotates its key through its API: `lcloud --node URL key rotate`"
            )
        } else {
            e
        }
    })?;
    if !node.replica.lattice().may_write(&old.id()) {
        bail!(
            "this node may not write in this cloud (not a member, removed, or its key already \
             rotated), so it cannot hand its rights to a new key"
        );
    }
    let next = lcloud_store::rotate::prepare(dir)?;
    let exp = write_loaded(&mut node, &old, vec![Op::RotateKey { to: next.id() }], None)?;
    let new = lcloud_store::rotate::finish(dir, &old, &node.replica)?
        .context("the rotation was written, but the new key was not found to switch to")?;
    print(
        json_out,
        json!({"old": old.id().to_hex(), "node": new.id().to_hex(), "rotation": exp.id().to_hex()}),
        || {
            format!(
                "rotated: this node is now {}\nthe old key {} may no longer write (rotation {})",
                new.id().to_hex(),
                old.id().to_hex(),
                exp.id().short()
            )
        },
    );
    Ok(())
}

/// Finishes a key rotation a crash interrupted (or drops a key prepared for one that was
/// never written), before a command uses the identity.
pub(crate) fn settle_rotation(dir: &FsPath) -> Result<()> {
    if !dir.join("identity.key.next").exists() && !dir.join("signed-seq.next").exists() {
        return Ok(());
    }
    let Some(current) = Identity::load(dir)? else {
        return Ok(());
    };
    let node = open(dir)?;
    if let Some(new) = lcloud_store::rotate::finish(dir, &current, &node.replica)? {
        eprintln!(
            "finished an interrupted key rotation: this node is now {}",
            new.id().to_hex()
        );
    }
    Ok(())
}

/// `lcloud member list`: who may write now and why, who administers, who was removed.
pub(crate) fn list(dir: &FsPath, json_out: bool) -> Result<()> {
    let node = open(dir)?;
    let aliases = node.store.aliases()?;
    let lattice = node.replica.lattice();
    let rules = lattice.rules();
    let admins = lattice.admins();
    let how = |m: &NodeId| {
        if *m == rules.creator {
            "creator"
        } else if rules.members.as_ref().is_some_and(|g| g.contains(m)) {
            "genesis"
        } else {
            "granted"
        }
    };
    let open = rules.members.is_none();
    // In an open cloud anyone may write: list the creator and the admins.
    let members: Vec<NodeId> = match lattice.members() {
        Some(m) => m,
        None => admins.clone(),
    };
    let removed = lattice.removed();
    let row = |m: &NodeId| {
        json!({
            "node": m.to_hex(),
            "how": how(m),
            "admin": admins.contains(m),
            "alias": aliases.get(m),
        })
    };
    let value = json!({
        "open": open,
        "members": members.iter().map(row).collect::<Vec<_>>(),
        "admins": admins.iter().map(|a| a.to_hex()).collect::<Vec<_>>(),
        "removed": removed.iter().map(|r| json!({"node": r.to_hex(), "alias": aliases.get(r)})).collect::<Vec<_>>(),
        "left_out": lattice.void_count(),
    });
    print(json_out, value, || {
        let mut out = if open {
            "an open cloud: anyone who holds its genesis may write, unless removed; its admins:"
                .to_owned()
        } else {
            "members-only: these may write".to_owned()
        };
        let line = |m: &NodeId, what: &str| {
            let alias = aliases.get(m).map_or("", |a| a.as_str());
            format!("\n{}  {what:<14} {alias}", m.to_hex())
                .trim_end()
                .to_owned()
        };
        for m in &members {
            let what = if admins.contains(m) {
                format!("{} admin", how(m))
            } else {
                how(m).to_owned()
            };
            out.push_str(&line(m, &what));
        }
        if !removed.is_empty() {
            out.push_str("\nremoved (may no longer write):");
            for r in &removed {
                out.push_str(&line(r, "removed"));
            }
        }
        if lattice.void_count() > 0 {
            out.push_str(&format!(
                "\n{} experience(s) of removed members are left out of the state (written concurrently with their removal)",
                lattice.void_count()
            ));
        }
        out
    });
    Ok(())
}
