//! A store's history as a whole: `export` and `import` (bundles), `verify` (every signature,
//! hash and link, and the fold, checked again) and `forks` (the proofs found).

use super::*;

pub(super) fn export(
    dir: &FsPath,
    json_out: bool,
    file: &FsPath,
    since: Option<String>,
    shallow: bool,
) -> Result<()> {
    let node = open(dir)?;
    if shallow {
        let bytes = lcloud_store::shallow::export(&node.replica)?;
        write_atomically(file, &bytes)?;
        let depth = node.replica.lattice().fixed_depth().unwrap_or_default();
        print(
            json_out,
            json!({"file": file, "bytes": bytes.len(), "checkpoint": depth}),
            || {
                format!(
                    "wrote {} ({} bytes): the state at the final checkpoint of depth {depth} and everything since",
                    file.display(),
                    bytes.len()
                )
            },
        );
        return Ok(());
    }
    let lattice = node.replica.lattice();
    let since = since.as_deref().map(|c| node.names.clock(c)).transpose()?;
    let bar = progress(lattice.len() as u64, "exporting");
    let mut records: Vec<Vec<u8>> = Vec::new();
    for (i, e) in lattice.iter().enumerate() {
        let old = since
            .as_ref()
            .is_some_and(|c| i > 0 && lattice.clock(i as u32).le(c));
        if !old {
            records.push(e.to_bytes());
        }
        bar.set_position(i as u64);
    }
    bar.finish_and_clear();
    let bytes = bundle::encode(&node.store.cloud(), records.iter().map(|r| r.as_slice()));
    write_atomically(file, &bytes)?;
    print(
        json_out,
        json!({"file": file, "experiences": records.len(), "bytes": bytes.len()}),
        || {
            format!(
                "wrote {} experiences ({} bytes) to {}",
                records.len(),
                bytes.len(),
                file.display()
            )
        },
    );
    Ok(())
}

/// `export --proof CUT FILE`: a proof of the root at a cut (`lcloud_store::proof`).
pub(super) fn export_proof(
    dir: &FsPath,
    json_out: bool,
    file: &FsPath,
    cut: &str,
    full: bool,
) -> Result<()> {
    let node = open(dir)?;
    let lattice = node.replica.lattice();
    let clock = match resolve::cut(&node.names, &node.replica, cut)? {
        None => lattice.frontier(),
        Some(Cut::Clock(c)) => c,
        Some(Cut::Heads(ids)) => {
            let mut c = lcloud_core::VectorClock::default();
            for id in ids {
                c.join(&lattice.clock(lattice.idx(&id).expect("resolved")));
            }
            c
        }
    };
    let (bytes, checked) = lcloud_store::proof::export_checked(&node.replica, &clock, full)
        .with_context(|| format!("cannot prove the cut {cut:?}"))?;
    write_atomically(file, &bytes)?;
    print(
        json_out,
        json!({
            "file": file,
            "bytes": bytes.len(),
            "root": checked.root.to_hex(),
            "cut": clock_json(&checked.cut),
            "checkpoint": checked.checkpoint,
            "experiences": checked.experiences,
        }),
        || {
            format!(
                "wrote {} ({} bytes): proof of root {} at cut {}, {}",
                file.display(),
                bytes.len(),
                checked.root.to_hex(),
                node.names.show_clock(&checked.cut),
                proof_from(&checked),
            )
        },
    );
    Ok(())
}

/// `verify-proof FILE`: checks a proof with nothing but the file, and prints its root.
pub(super) fn verify_proof(json_out: bool, file: &FsPath) -> Result<()> {
    let bytes = read_file(file)?;
    let checked = lcloud_store::proof::verify(&bytes)
        .with_context(|| format!("{} does not prove a root", file.display()))?;
    print(
        json_out,
        json!({
            "root": checked.root.to_hex(),
            "cloud": checked.cloud.to_hex(),
            "cut": clock_json(&checked.cut),
            "checkpoint": checked.checkpoint,
            "attested_by": checked.attested_by.iter().map(|n| n.to_hex()).collect::<Vec<_>>(),
            "experiences": checked.experiences,
        }),
        || {
            format!(
                "{}\nproof verified: that is the root at cut {} of cloud {}, {}; every \
                 signature, hash and link checked",
                checked.root.to_hex(),
                checked
                    .cut
                    .0
                    .iter()
                    .map(|(n, s)| format!("{}:{s}", n.short()))
                    .collect::<Vec<_>>()
                    .join(","),
                checked.cloud.short(),
                proof_from(&checked),
            )
        },
    );
    Ok(())
}

fn proof_from(c: &lcloud_store::proof::Checked) -> String {
    match c.checkpoint {
        Some(d) => format!(
            "from the final checkpoint at depth {d} (attested by {} members) and {} \
             experiences",
            c.attested_by.len(),
            c.experiences
        ),
        None => format!("from the genesis: {} experiences", c.experiences),
    }
}

/// Writes `bytes` to `file` through a `.partial` file renamed over it.
fn write_atomically(file: &FsPath, bytes: &[u8]) -> Result<()> {
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, file))
        .with_context(|| format!("cannot write {}", file.display()))
}

pub(super) fn import(node: &mut Node, json_out: bool, file: &FsPath) -> Result<()> {
    let bytes = read_file(file)?;
    if lcloud_store::shallow::is_shallow(&bytes) {
        bail!(
            "{} is a shallow bundle, which starts a new node (`lcloud join --shallow`); to merge into this one, export a bundle of the history (`lcloud export FILE`, or `--since`)",
            file.display()
        );
    }
    let b = bundle::decode(&bytes).with_context(|| format!("cannot import {}", file.display()))?;
    let cloud = node.store.cloud();
    if b.cloud != cloud {
        bail!(
            "{} is a bundle of cloud {}, but this store holds cloud {cloud}",
            file.display(),
            b.cloud
        );
    }
    let bar = progress(b.records.len() as u64, "importing");
    let report = node
        .store
        .import(&mut node.replica, &b.records, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let rejected = report.rejected_total();
    print(
        json_out,
        json!({
            "new": report.new, "known": report.known, "parked": report.parked,
            "rejected": report.rejected, "root": node.replica.root().to_hex(),
        }),
        || {
            let mut s = format!(
                "imported {}: {} new, {} already known, {} parked (waiting for missing experiences), {rejected} rejected",
                file.display(),
                report.new,
                report.known,
                report.parked
            );
            for (why, n) in &report.rejected {
                s.push_str(&format!("\n  rejected {n} × {why}"));
            }
            if let Some(first) = &report.first_rejection {
                s.push_str(&format!("\n  first rejection: {first}"));
            }
            s.push_str(&format!("\nroot {}", node.replica.root()));
            s
        },
    );
    if rejected > 0 {
        let first = report.first_rejection.as_deref().unwrap_or("unknown");
        return Err(Rejected(format!(
            "{rejected} of the {} records of {} were rejected (the rest is imported); the first: {first}",
            b.records.len(),
            file.display()
        ))
        .into());
    }
    Ok(())
}

/// A command that did part of its work and refused the rest (`lcloud import` with rejected
/// records): exits with [`Rejected::EXIT_CODE`], not the code of a usage error or a failure.
#[derive(Debug)]
pub struct Rejected(pub String);

impl Rejected {
    /// The exit code (clap's usage errors exit 2, other failures 1).
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

pub(super) fn verify(dir: &FsPath, json_out: bool) -> Result<()> {
    let store = Store::open(dir)?;
    let cloud = store.cloud();
    let names = Names::from_store(store.aliases()?, store.authors()?);
    let bar = progress(store.len(), "verifying");
    let compacted = store.compaction_point()?.is_some();
    let mut replica: Option<Replica> = None;
    store.for_each_indexed(|n, indexed, bytes| {
        let bad = |check: &str, why: &dyn std::fmt::Display| {
            let who = match indexed {
                Some((author, seq)) => format!(
                    "{}:{seq} (stored as arrival #{n}, author {author})",
                    names.show(&author)
                ),
                None => format!("arrival #{n} (its index entry is unreadable)"),
            };
            lcloud_store::StoreError::Corrupt {
                what: format!("experience {who} fails verification ({check}): {why}"),
            }
        };
        let exp = validate(bytes, &cloud).map_err(|e| bad(e.reason(), &e))?;
        match replica.as_mut() {
            // A compacted store's experiences below its base have no parents to link to:
            // their signatures are checked here, the rest when the store loads below.
            _ if compacted => {}
            None => {
                replica = Some(
                    Replica::with_registry(exp, lcloud_contracts::registry())
                        .map_err(|e| bad("genesis", &e))?,
                )
            }
            Some(r) => {
                r.insert(exp).map_err(|e| bad(e.reason(), &e))?;
            }
        }
        bar.set_position(n);
        Ok(())
    })?;
    bar.finish_and_clear();
    let mut headers = 0;
    if compacted {
        let loaded = store.load(&mut |_| {})?;
        headers = store.verify_headers(&loaded)?;
        replica = Some(loaded);
    }
    let replica = replica.ok_or_else(|| anyhow!("the store holds no genesis"))?;
    let root = replica.root();
    let fresh = replica.refold().root();
    if fresh != root {
        bail!("state root mismatch: incremental fold gives {root}, a fresh fold gives {fresh}");
    }
    let persisted = store.state()?.root();
    if persisted != root {
        bail!(
            "the persisted state (root {persisted}) differs from the fold of the history (root {root})"
        );
    }
    // The time-travel index and checkpoints must give the same state at the frontier.
    let frontier = replica.lattice().frontier();
    if let Some(state) = store.state_at_clock(&frontier)? {
        let indexed = state.root();
        if indexed != root {
            bail!(
                "the time-travel index gives root {indexed} at the frontier, the history gives {root}"
            );
        }
    }
    let n = replica.lattice().len();
    // Closing reads the file too: a damaged page found there fails the verification.
    drop(store);
    if let Some(why) = crate::engine_panic() {
        bail!("store corrupt: the database engine failed on a damaged page ({why})");
    }
    print(
        json_out,
        json!({"experiences": n, "headers": headers, "root": root.to_hex(), "ok": true}),
        || {
            let held = match (compacted, headers) {
                (false, _) => String::new(),
                (true, 0) => " (a compacted store; no headers of what it dropped are kept)".into(),
                (true, n) => format!(" and {n} signed headers of experiences compacted away"),
            };
            format!(
                "verified {n} experiences{held}: every hash, signature and link holds\nroot {root}"
            )
        },
    );
    Ok(())
}

pub(super) fn compact(dir: &FsPath, json_out: bool, retain: crate::RetainArg) -> Result<()> {
    let mut node = open(dir)?;
    let lattice = node.replica.lattice();
    if let (Some((at, _)), Some(fixed)) = (lattice.compaction_point(), lattice.fixed_depth())
        && *at >= fixed
    {
        let at = *at;
        print(
            json_out,
            json!({"depth": at, "compacted": false, "root": node.replica.root().to_hex()}),
            || {
                format!(
                    "already compacted at the deepest final checkpoint (depth {at}): nothing to drop"
                )
            },
        );
        return Ok(());
    }
    let retain = match retain {
        crate::RetainArg::Headers => lcloud_store::Retain::Headers,
        crate::RetainArg::Checkpoint => lcloud_store::Retain::Checkpoint,
    };
    let done = node.store.compact(&node.replica, retain)?;
    let dropped = done.before.saturating_sub(done.after);
    let earliest = node.names.show_clock(&done.earliest);
    print(
        json_out,
        json!({
            "depth": done.depth,
            "compacted": true,
            "earliest": done.earliest.to_string(),
            "experiences": {"before": done.before, "after": done.after, "kept_below": done.kept_below},
            "headers": done.headers,
            "bytes": {"before": done.bytes.0, "after": done.bytes.1},
            "root": node.replica.root().to_hex(),
        }),
        || {
            format!(
                "compacted at the final checkpoint of depth {}: {dropped} of {} experiences dropped \
                 ({} kept below it{}), store {} → {}\nearliest cut held: {earliest}\nroot {} (unchanged)",
                done.depth,
                done.before,
                done.kept_below,
                if done.headers > 0 {
                    format!(", {} signed headers held", done.headers)
                } else {
                    String::new()
                },
                human_bytes(done.bytes.0),
                human_bytes(done.bytes.1),
                node.replica.root(),
            )
        },
    );
    Ok(())
}

pub(super) fn vacuum(dir: &FsPath, json_out: bool) -> Result<()> {
    let done = Store::open(dir)?.vacuum()?;
    let (before, after) = done.bytes;
    print(
        json_out,
        json!({"bytes": {"before": before, "after": after}}),
        || {
            format!(
                "store {} → {} ({} given back)",
                human_bytes(before),
                human_bytes(after),
                human_bytes(before.saturating_sub(after))
            )
        },
    );
    Ok(())
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

pub(super) fn forks(dir: &FsPath, json_out: bool) -> Result<()> {
    // Fork proofs are stored as they are found: no history is read.
    let store = Store::open(dir)?;
    let proofs = store.forks()?;
    let names = Names::from_store(store.aliases()?, Vec::new());
    if json_out {
        let rows: Vec<_> = proofs
            .iter()
            .map(|p| {
                json!({
                    "author": p.author().to_hex(), "seq": p.seq(),
                    "a": {"header": hex::encode(p.a.header.to_bytes()), "sig": hex::encode(p.a.sig.0)},
                    "b": {"header": hex::encode(p.b.header.to_bytes()), "sig": hex::encode(p.b.sig.0)},
                    "valid": p.check().is_ok(),
                })
            })
            .collect();
        println!("{}", json!({"forks": rows}));
        return Ok(());
    }
    if proofs.is_empty() {
        println!("no forks");
    }
    for p in &proofs {
        let (a, b) = p.ids();
        println!(
            "{} forked at seq {}: {} and {} — proof {}",
            names.show(&p.author()),
            p.seq(),
            a.short(),
            b.short(),
            match p.check() {
                Ok(()) => "valid".to_owned(),
                Err(e) => format!("INVALID: {e}"),
            }
        );
    }
    Ok(())
}
