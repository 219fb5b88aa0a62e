//! `lcloud bisect A B`: the first experience, in the fold's canonical order, after which two
//! nodes' roots at the same cut differ (`lcloud_core::bisect`). Each node answers for its own
//! cuts, the way `lcloud root --at` does: from its store's time-travel index when that can
//! answer, else from its own fold. A node is a directory (its node stopped) or a running
//! node's API URL (`GET /api/root?at=CLOCK`; its history is fetched once, for the order).

use std::path::Path as FsPath;

use anyhow::{Context, Result, anyhow, bail};
use lcloud_core::bisect::{first_difference, prefix_clock};
use lcloud_core::{Cut, Id, Idx, Replica, VectorClock};
use lcloud_store::Store;
use serde_json::json;

use crate::commands::{clock_json, print};

/// One node: a directory, opened, or a running node's API.
struct Side {
    name: String,
    /// The node's history: its own store's, or a snapshot of a remote node's.
    replica: Replica,
    answers: Answers,
}

enum Answers {
    Store(Box<Store>),
    Remote(crate::remote::Remote),
}

impl Side {
    fn open(spec: &str, remote: &dyn Fn(&str) -> Result<crate::remote::Remote>) -> Result<Side> {
        let name = spec.to_owned();
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let r = remote(spec)?;
            let snapshot = crate::remote::Snapshot::fetch(&r)
                .with_context(|| format!("cannot fetch the history of {name}"))?;
            let replica = Store::open(snapshot.dir())?.load(&mut |_| {})?;
            return Ok(Side {
                name,
                replica,
                answers: Answers::Remote(r),
            });
        }
        let dir = FsPath::new(spec);
        if !Store::exists(dir) {
            bail!("{name} holds no λCLOUD store (give two node directories or API URLs)");
        }
        let store = Store::open(dir).with_context(|| format!("cannot open {name}"))?;
        let replica = store
            .load(&mut |_| {})
            .with_context(|| format!("cannot load {name}"))?;
        Ok(Side {
            name,
            replica,
            answers: Answers::Store(Box::new(store)),
        })
    }

    /// This node's root at `clock`, as it answers it.
    fn root_at(&self, clock: &VectorClock) -> Result<Id> {
        match &self.answers {
            Answers::Store(store) => {
                let state = match store.state_at_clock(clock) {
                    Ok(Some(state)) => state,
                    Ok(None) => self.replica.state_at(&Cut::Clock(clock.clone()))?,
                    Err(e) => return Err(e).with_context(|| format!("{} at {clock}", self.name)),
                };
                Ok(state.root())
            }
            Answers::Remote(r) => {
                let at: Vec<String> = clock
                    .0
                    .iter()
                    .map(|(n, s)| format!("{}:{s}", n.to_hex()))
                    .collect();
                let answer = r.get("/api/root", &[("at", &at.join(","))])?;
                answer["root"]
                    .as_str()
                    .and_then(Id::from_hex)
                    .ok_or_else(|| anyhow!("{} answered no root at {clock}: {answer}", self.name))
            }
        }
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn short_clock(c: &VectorClock) -> String {
    if c.0.is_empty() {
        return "(empty)".into();
    }
    c.0.iter()
        .map(|(n, s)| format!("{}:{s}", n.short()))
        .collect::<Vec<_>>()
        .join(",")
}

/// How to reach a node given by URL.
pub type Connect<'a> = &'a dyn Fn(&str) -> Result<crate::remote::Remote>;

pub fn run(json_out: bool, a: (&str, Connect<'_>), b: (&str, Connect<'_>)) -> Result<()> {
    let (a, b) = (Side::open(a.0, a.1)?, Side::open(b.0, b.1)?);
    if a.replica.cloud() != b.replica.cloud() {
        bail!(
            "{} and {} hold different clouds ({} and {}): nothing to compare",
            a.name,
            b.name,
            a.replica.cloud().short(),
            b.replica.cloud().short()
        );
    }
    let (la, lb) = (a.replica.lattice(), b.replica.lattice());
    // A's canonical order, of what both hold: a prefix of it is still a causal cut.
    let order: Vec<Idx> = a
        .replica
        .canonical_order()
        .into_iter()
        .filter(|i| lb.contains(&la.get(*i).id()))
        .collect();
    let only_a = la.len() - order.len();
    let only_b = lb.len() - order.len();
    // Cuts must hold both compaction points (a compacted node answers nothing earlier).
    let mut floor = VectorClock::default();
    for l in [la, lb] {
        if let Some((_, at)) = l.compaction_point() {
            floor.join(at);
        }
    }
    let mut comparisons = 0u32;
    let mut answers: std::collections::BTreeMap<usize, (VectorClock, Id, Id)> = Default::default();
    let found = first_difference(order.len(), |k| -> Result<bool> {
        comparisons += 1;
        let clock = prefix_clock(la, &order, k, &floor);
        let (ra, rb) = (a.root_at(&clock)?, b.root_at(&clock)?);
        answers.insert(k, (clock, ra, rb));
        Ok(ra != rb)
    })?;
    let mut out = json!({
        "a": a.name,
        "b": b.name,
        "compared": order.len(),
        "only_a": only_a,
        "only_b": only_b,
        "comparisons": comparisons,
        "diverged": found.is_some(),
    });
    let held_apart = if only_a + only_b > 0 {
        format!(
            " (left out: {} only {} holds, {} only {} holds)",
            plural(only_a, "experience"),
            a.name,
            plural(only_b, "experience"),
            b.name
        )
    } else {
        String::new()
    };
    let Some(k) = found else {
        let (clock, root, _) = answers
            .get(&(order.len().saturating_sub(1)))
            .cloned()
            .unwrap_or_default();
        out["root"] = json!(root.to_hex());
        out["clock"] = clock_json(&clock);
        print(json_out, out, || {
            format!(
                "no divergence: {} and {} agree on every cut of the {} both \
                 hold{held_apart}, ending at root {} ({})",
                a.name,
                b.name,
                plural(order.len(), "experience"),
                root.to_hex(),
                plural(comparisons as usize, "root comparison")
            )
        });
        return Ok(());
    };
    let idx = order[k];
    let exp = la.get(idx);
    let (clock, ra, rb) = answers[&k].clone();
    out["experience"] = json!({
        "id": exp.id().to_hex(),
        "author": exp.author().to_hex(),
        "seq": exp.seq(),
        "depth": la.depth(idx),
        "position": k,
        "ops": exp.ops().len(),
    });
    out["differ_at"] = json!({"clock": clock_json(&clock), "a": ra.to_hex(), "b": rb.to_hex()});
    let before = match k.checked_sub(1) {
        Some(j) => {
            let (c, ra, rb) = match answers.get(&j) {
                Some(known) => known.clone(),
                None => {
                    comparisons += 1;
                    let c = prefix_clock(la, &order, j, &floor);
                    let (ra, rb) = (a.root_at(&c)?, b.root_at(&c)?);
                    (c, ra, rb)
                }
            };
            out["comparisons"] = json!(comparisons);
            out["agree_at"] = json!({"clock": clock_json(&c), "a": ra.to_hex(), "b": rb.to_hex()});
            if ra == rb {
                format!(
                    "at the cut just before it ({}) both have root {}",
                    short_clock(&c),
                    ra.to_hex()
                )
            } else {
                // Not monotone: an earlier difference that went away again.
                format!(
                    "at the cut just before it ({}) they differ too ({} and {}): an earlier \
                     difference went away and came back; this is where one stretch of it starts",
                    short_clock(&c),
                    ra.to_hex(),
                    rb.to_hex()
                )
            }
        }
        None => "it is the first experience in canonical order".into(),
    };
    print(json_out, out, || {
        format!(
            "{} and {} first differ at experience {} ({}:{}, depth {}, {}), #{} of the {} \
             both hold in canonical order{held_apart}\n  {before}\n  at the cut that adds it \
             ({}): {} has root {}, {} has root {}\n  {comparisons} root comparisons",
            a.name,
            b.name,
            exp.id().to_hex(),
            exp.author().short(),
            exp.seq(),
            la.depth(idx),
            plural(exp.ops().len(), "op"),
            k + 1,
            order.len(),
            short_clock(&clock),
            a.name,
            ra.to_hex(),
            b.name,
            rb.to_hex(),
        )
    });
    Ok(())
}
