//! The same workloads on Automerge and Loro (in memory: neither has a durable store).

use std::time::Instant;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue};
use loro::{ExportMode, LoroDoc, VersionVector};
use serde_json::{Value as J, json};

use crate::{Rng, Size, key, p50_p99, value16};

fn am_writes(doc: &mut AutoCommit, from: usize, n: usize, per_commit: usize) {
    let m = match doc.get(ROOT, "m").unwrap() {
        Some((_, id)) => id,
        None => doc.put_object(ROOT, "m", ObjType::Map).unwrap(),
    };
    for i in from..from + n {
        doc.put(&m, key(i), value16(i)).unwrap();
        if (i - from + 1).is_multiple_of(per_commit) {
            doc.commit();
        }
    }
    doc.commit();
}

pub fn automerge(workload: &str, size: Size) -> J {
    let n = size.n;
    match workload {
        "w1" | "w2" => {
            let per = if workload == "w1" { 1 } else { 1000 };
            let mut doc = AutoCommit::new();
            let t = Instant::now();
            am_writes(&mut doc, 0, n, per);
            let secs = t.elapsed().as_secs_f64();
            let bytes = doc.save().len();
            json!({"ops_per_s": n as f64 / secs, "bytes_per_op": bytes as f64 / n as f64})
        }
        "w3" => {
            let rate = |per: usize| {
                let mut doc = AutoCommit::new();
                doc.put(ROOT, "c", ScalarValue::counter(0)).unwrap();
                doc.commit();
                let t = Instant::now();
                for i in 0..n {
                    doc.increment(ROOT, "c", 1).unwrap();
                    if (i + 1).is_multiple_of(per) {
                        doc.commit();
                    }
                }
                doc.commit();
                n as f64 / t.elapsed().as_secs_f64()
            };
            json!({"batch1_per_s": rate(1), "batch1000_per_s": rate(1000)})
        }
        "w4" => {
            let mut a = AutoCommit::new().with_actor(ActorId::from(vec![1u8; 16]));
            let mut b = AutoCommit::new().with_actor(ActorId::from(vec![2u8; 16]));
            am_writes(&mut a, 0, n, 1);
            am_writes(&mut b, n, n, 1);
            let missing: usize = a
                .get_changes(&[])
                .iter()
                .chain(b.get_changes(&[]).iter())
                .map(|c| c.raw_bytes().len())
                .sum();
            let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
            let (mut wire, mut trips) = (0usize, 0usize);
            let t = Instant::now();
            loop {
                let ma = a.sync().generate_sync_message(&mut sa);
                let mb = b.sync().generate_sync_message(&mut sb);
                if ma.is_none() && mb.is_none() {
                    break;
                }
                trips += 1;
                if let Some(m) = ma {
                    let bytes = m.encode();
                    wire += bytes.len();
                    let m = automerge::sync::Message::decode(&bytes).unwrap();
                    b.sync().receive_sync_message(&mut sb, m).unwrap();
                }
                if let Some(m) = mb {
                    let bytes = m.encode();
                    wire += bytes.len();
                    let m = automerge::sync::Message::decode(&bytes).unwrap();
                    a.sync().receive_sync_message(&mut sa, m).unwrap();
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let same = a.get_heads() == b.get_heads()
                && a.hydrate(ROOT, None).unwrap() == b.hydrate(ROOT, None).unwrap();
            json!({"secs": secs, "bytes_ratio": wire as f64 / missing as f64,
                   "round_trips": trips, "converged": u8::from(same)})
        }
        "w6" => {
            let mut doc = AutoCommit::new();
            am_writes(&mut doc, 0, n, 1000);
            let saved = doc.save();
            let t = Instant::now();
            let doc = AutoCommit::load(&saved).unwrap();
            std::hint::black_box(doc.hydrate(ROOT, None).unwrap());
            json!({"secs": t.elapsed().as_secs_f64()})
        }
        "w7" => {
            let mut doc = AutoCommit::new();
            let mut heads = Vec::new();
            let m = doc.put_object(ROOT, "m", ObjType::Map).unwrap();
            for c in 0..size.history / 1000 {
                for j in 0..1000 {
                    let i = c * 1000 + j;
                    doc.put(&m, key(i), value16(i)).unwrap();
                }
                doc.commit();
                heads.push(doc.get_heads());
            }
            let saved = doc.save();
            let t = Instant::now();
            let loaded = AutoCommit::load(&saved).unwrap();
            std::hint::black_box(loaded.hydrate(ROOT, None).unwrap());
            let replay = t.elapsed().as_secs_f64();
            let mut rng = Rng(7);
            let times: Vec<f64> = (0..100)
                .map(|_| {
                    let h = &heads[rng.below(heads.len())];
                    let t = Instant::now();
                    std::hint::black_box(loaded.hydrate(ROOT, Some(h)).unwrap());
                    t.elapsed().as_secs_f64()
                })
                .collect();
            let (p50, p99) = p50_p99(times);
            json!({"p50": p50, "p99": p99, "replay": replay})
        }
        other => panic!("unknown workload {other}"),
    }
}

fn loro_writes(doc: &LoroDoc, from: usize, n: usize, per_commit: usize) {
    let m = doc.get_map("m");
    for i in from..from + n {
        m.insert(&key(i), value16(i)).unwrap();
        if (i - from + 1).is_multiple_of(per_commit) {
            doc.commit();
        }
    }
    doc.commit();
}

pub fn loro(workload: &str, size: Size) -> J {
    let n = size.n;
    match workload {
        "w1" | "w2" => {
            let per = if workload == "w1" { 1 } else { 1000 };
            let doc = LoroDoc::new();
            let t = Instant::now();
            loro_writes(&doc, 0, n, per);
            let secs = t.elapsed().as_secs_f64();
            let bytes = doc.export(ExportMode::Snapshot).unwrap().len();
            json!({"ops_per_s": n as f64 / secs, "bytes_per_op": bytes as f64 / n as f64})
        }
        "w3" => {
            let rate = |per: usize| {
                let doc = LoroDoc::new();
                let c = doc.get_counter("c");
                let t = Instant::now();
                for i in 0..n {
                    c.increment(1.0).unwrap();
                    if (i + 1).is_multiple_of(per) {
                        doc.commit();
                    }
                }
                doc.commit();
                n as f64 / t.elapsed().as_secs_f64()
            };
            json!({"batch1_per_s": rate(1), "batch1000_per_s": rate(1000)})
        }
        "w4" => {
            let a = LoroDoc::new();
            a.set_peer_id(1).unwrap();
            let b = LoroDoc::new();
            b.set_peer_id(2).unwrap();
            loro_writes(&a, 0, n, 1);
            loro_writes(&b, n, n, 1);
            let t = Instant::now();
            // One round trip each way: send your version, get what you lack.
            let va = a.oplog_vv().encode();
            let vb = b.oplog_vv().encode();
            let for_a = b
                .export(ExportMode::updates(&VersionVector::decode(&va).unwrap()))
                .unwrap();
            let for_b = a
                .export(ExportMode::updates(&VersionVector::decode(&vb).unwrap()))
                .unwrap();
            a.import(&for_a).unwrap();
            b.import(&for_b).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let wire = va.len() + vb.len() + for_a.len() + for_b.len();
            let missing = for_a.len() + for_b.len();
            let same = a.get_deep_value() == b.get_deep_value();
            json!({"secs": secs, "bytes_ratio": wire as f64 / missing as f64,
                   "round_trips": 1, "converged": u8::from(same)})
        }
        "w6" => {
            let doc = LoroDoc::new();
            loro_writes(&doc, 0, n, 1000);
            let snapshot = doc.export(ExportMode::Snapshot).unwrap();
            let t = Instant::now();
            let doc = LoroDoc::from_snapshot(&snapshot).unwrap();
            std::hint::black_box(doc.get_deep_value());
            json!({"secs": t.elapsed().as_secs_f64()})
        }
        "w7" => {
            let doc = LoroDoc::new();
            let m = doc.get_map("m");
            let mut frontiers = Vec::new();
            for c in 0..size.history / 1000 {
                for j in 0..1000 {
                    let i = c * 1000 + j;
                    m.insert(&key(i), value16(i)).unwrap();
                }
                doc.commit();
                frontiers.push(doc.oplog_frontiers());
            }
            let updates = doc.export(ExportMode::all_updates()).unwrap();
            let t = Instant::now();
            let fresh = LoroDoc::new();
            fresh.import(&updates).unwrap();
            std::hint::black_box(fresh.get_deep_value());
            let replay = t.elapsed().as_secs_f64();
            let mut rng = Rng(7);
            let times: Vec<f64> = (0..100)
                .map(|_| {
                    let f = &frontiers[rng.below(frontiers.len())];
                    let t = Instant::now();
                    doc.checkout(f).unwrap();
                    std::hint::black_box(doc.get_deep_value());
                    t.elapsed().as_secs_f64()
                })
                .collect();
            doc.checkout_to_latest();
            let (p50, p99) = p50_p99(times);
            json!({"p50": p50, "p99": p99, "replay": replay})
        }
        other => panic!("unknown workload {other}"),
    }
}
