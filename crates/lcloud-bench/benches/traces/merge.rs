//! The concurrent trace `friendsforever` through whole systems: each system replays it as
//! two agents, each transaction written by its agent once it holds exactly the transactions
//! the trace says it had seen (the other agent's delivered at the merge points), then a fresh
//! document takes in both agents' whole histories, timed: the merge of the concurrent trace.

use std::sync::Arc;
use std::time::Instant;

use automerge::{
    ActorId, AutoCommit, Change, ObjType, ROOT, ReadDoc, TextEncoding, transaction::Transactable,
};
use ed25519_consensus::SigningKey;
use lcloud_core::{Edit, Experience, Genesis, Path, Replica, Verified};
use serde_json::{Value as J, json};

/// A transaction: its agent, what it had seen of each agent's transactions, its patches.
struct Txn {
    agent: usize,
    need: [usize; 2],
    patches: Vec<(usize, usize, String)>,
}

fn txns(trace: &J) -> Vec<Txn> {
    let mut seen: Vec<[usize; 2]> = Vec::new();
    let mut have = [[0usize; 2]; 2];
    let mut out = Vec::new();
    for t in trace["txns"].as_array().expect("transactions") {
        let agent = t["agent"].as_u64().expect("an agent") as usize;
        let mut need = [0usize; 2];
        for p in t["parents"].as_array().expect("parents") {
            for (n, s) in need
                .iter_mut()
                .zip(seen[p.as_u64().expect("an index") as usize])
            {
                *n = (*n).max(s);
            }
        }
        need[agent] = have[agent][agent];
        have[agent] = need;
        have[agent][agent] += 1;
        seen.push(have[agent]);
        let patches = t["patches"]
            .as_array()
            .expect("patches")
            .iter()
            .map(|p| {
                (
                    p[0].as_u64().expect("an index") as usize,
                    p[1].as_u64().expect("a count") as usize,
                    p[2].as_str().expect("text").to_owned(),
                )
            })
            .collect();
        out.push(Txn {
            agent,
            need,
            patches,
        });
    }
    out
}

/// Replays `txns` with two agents of one system: `write` makes an agent's transaction and
/// returns its update, `deliver` hands an agent the other's updates. Returns every update in
/// trace order, and the agents.
fn replay<D, U: Clone>(
    txns: &[Txn],
    mut agents: [D; 2],
    mut write: impl FnMut(&mut D, usize, &Txn) -> U,
    mut deliver: impl FnMut(&mut D, &U),
) -> (Vec<U>, [D; 2]) {
    let mut updates: [Vec<U>; 2] = [Vec::new(), Vec::new()];
    let mut have = [[0usize; 2]; 2];
    let mut all = Vec::with_capacity(txns.len());
    for t in txns {
        let (a, b) = (t.agent, 1 - t.agent);
        for u in &updates[b][have[a][b]..t.need[b]] {
            deliver(&mut agents[a], u);
        }
        have[a][b] = t.need[b];
        let u = write(&mut agents[a], a, t);
        updates[a].push(u.clone());
        all.push(u);
        have[a][a] += 1;
    }
    (all, agents)
}

/// The child `("merge", system)`: its JSON answer.
pub fn child(system: &str, trace: &J) -> J {
    let end = trace["endContent"].as_str().expect("the final text");
    let txns = txns(trace);
    match system {
        "lcloud" => {
            let keys = [SigningKey::from([1; 32]), SigningKey::from([2; 32])];
            let ids = keys
                .each_ref()
                .map(|k| lcloud_core::NodeId(k.verification_key().to_bytes()));
            // Of two inserts at one place the smaller author's goes first, as the trace's
            // editor ordered its agents: agent 0 writes with the smaller id.
            let order = if ids[0] < ids[1] { [0, 1] } else { [1, 0] };
            let genesis = Experience::create_genesis(&keys[0], Genesis::open("trace"));
            let fresh = || Replica::new(genesis.clone()).expect("a genesis");
            let (all, _) = replay(
                &txns,
                [fresh(), fresh()],
                |r: &mut Replica, a, t| -> Arc<Verified<Experience>> {
                    let k = order[a];
                    let edits = t
                        .patches
                        .iter()
                        .map(|(at, del, ins)| Edit::Splice {
                            path: Path::parse("/t").expect("a path"),
                            index: *at,
                            delete: *del,
                            text: ins.clone(),
                        })
                        .collect();
                    let ops =
                        lcloud_core::resolve(&r.state().doc, ids[k], edits).expect("in range");
                    r.write(&keys[k], ops).expect("a valid write")
                },
                |r, e| {
                    r.insert_arc(e.clone()).expect("a valid experience");
                },
            );
            let t = Instant::now();
            let mut r = fresh();
            for e in all {
                r.insert_arc(e).expect("a valid experience");
            }
            let got = r.document().to_json()["t"].clone();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end, "λCLOUD did not reach the trace's final text");
            json!({"merge_s": s, "end": true})
        }
        "automerge" => {
            let agent = |n: u8| {
                let mut d = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint);
                d.set_actor(ActorId::from(vec![n]));
                d
            };
            // Both agents start from one document holding the text object.
            let mut first = agent(0);
            let text = first
                .put_object(ROOT, "text", ObjType::Text)
                .expect("a text");
            first.commit();
            let base: Vec<Change> = first.get_changes(&[]);
            let mut second = agent(1);
            second.apply_changes(base.clone()).expect("the base");
            let (all, mut agents) = replay(
                &txns,
                [first, second],
                |d: &mut AutoCommit, _, t| -> Change {
                    for (at, del, ins) in &t.patches {
                        d.splice_text(&text, *at, *del as isize, ins)
                            .expect("in range");
                    }
                    d.commit();
                    d.get_last_local_change().expect("a change")
                },
                |d, c| d.apply_changes([c.clone()]).expect("a change"),
            );
            let t = Instant::now();
            let mut fresh = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint);
            fresh
                .apply_changes(base.into_iter().chain(all))
                .expect("the changes");
            let got = fresh.text(&text).expect("a text");
            let s = t.elapsed().as_secs_f64();
            let [mut a, mut b] = std::mem::replace(&mut agents, [agent(0), agent(1)]);
            a.merge(&mut b).expect("merges");
            assert!(
                a.text(&text).expect("a text") == got,
                "Automerge's agents diverge"
            );
            json!({"merge_s": s, "end": got == end})
        }
        "loro" => {
            let agent = |n: u64| {
                let d = loro::LoroDoc::new();
                d.set_peer_id(n).expect("a peer id");
                d
            };
            let (all, agents) = replay(
                &txns,
                [agent(0), agent(1)],
                |d: &mut loro::LoroDoc, _, t| -> Vec<u8> {
                    let before = d.oplog_vv();
                    let text = d.get_text("text");
                    for (at, del, ins) in &t.patches {
                        if *del > 0 {
                            text.delete(*at, *del).expect("in range");
                        }
                        if !ins.is_empty() {
                            text.insert(*at, ins).expect("in range");
                        }
                    }
                    d.commit();
                    d.export(loro::ExportMode::updates(&before))
                        .expect("exports")
                },
                |d: &mut loro::LoroDoc, u| {
                    d.import(u).expect("imports");
                },
            );
            let t = Instant::now();
            let fresh = loro::LoroDoc::new();
            fresh.import_batch(&all).expect("imports");
            let got = fresh.get_text("text").to_string();
            let s = t.elapsed().as_secs_f64();
            let [a, b] = agents;
            a.import(&b.export(loro::ExportMode::all_updates()).expect("exports"))
                .expect("imports");
            assert!(
                a.get_text("text").to_string() == got,
                "Loro's agents diverge"
            );
            json!({"merge_s": s, "end": got == end})
        }
        other => panic!("no system {other}"),
    }
}
