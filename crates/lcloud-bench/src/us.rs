//! The workloads on λCLOUD: the real store on disk (redb, fsync), the group committer, the
//! core's sync protocol with every message encoded, decoded and every experience validated.

use std::path::Path;
use std::time::Instant;

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{self, Request, Response, Summary};
use lcloud_core::{
    Experience, Genesis, Op, Path as DocPath, Replica, Value, VectorClock, Verified,
};
use lcloud_store::{Committer, Identity, Store};
use serde_json::{Value as J, json};

use crate::{Rng, Size, key, p50_p99, value16};

fn genesis(key: &ed25519_consensus::SigningKey) -> Verified<Experience> {
    Experience::create_genesis(key, Genesis::open("bench"))
}

fn new_store(dir: &Path) -> (Store, Identity) {
    let me = Identity::load_or_create(dir).unwrap();
    let store = Store::create(dir, &genesis(me.key())).unwrap();
    (store, me)
}

fn set(i: usize) -> Op {
    Op::Set {
        path: DocPath(vec!["m".into(), key(i)]),
        value: Value::Str(value16(i)),
    }
}

fn incr() -> Op {
    Op::Incr {
        path: DocPath(vec!["c".into()]),
        by: 1,
    }
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("store.redb")).map_or(0, |m| m.len())
}

/// `writers` threads write `per_writer` experiences each, of `ops_each` ops made by `op`,
/// through the group committer; returns the seconds taken.
fn committed(
    dir: &Path,
    writers: usize,
    per_writer: usize,
    ops_each: usize,
    op: &(dyn Fn(usize) -> Op + Sync),
) -> f64 {
    let (store, me) = new_store(dir);
    let committer = Committer::start(store, me);
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let writer = committer.writer();
            s.spawn(move || {
                for i in 0..per_writer {
                    let base = (w * per_writer + i) * ops_each;
                    writer
                        .write((0..ops_each).map(|j| op(base + j)).collect())
                        .unwrap();
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    drop(committer.stop());
    secs
}

pub fn run(workload: &str, size: Size) -> J {
    let n = size.n;
    match workload {
        "w1" => {
            let dir = tempfile::tempdir().unwrap();
            let secs = committed(dir.path(), 64, n / 64, 1, &set);
            let ops = (n / 64) * 64;
            let bytes = file_bytes(dir.path()) as f64 / ops as f64;
            let seq_dir = tempfile::tempdir().unwrap();
            let (mut store, me) = new_store(seq_dir.path());
            let t = Instant::now();
            for i in 0..size.sequential {
                store.write_local(&me, vec![set(i)]).unwrap().unwrap();
            }
            let seq = size.sequential as f64 / t.elapsed().as_secs_f64();
            json!({"ops_per_s": ops as f64 / secs, "bytes_per_op": bytes, "sequential_ops_per_s": seq})
        }
        "w2" => {
            let dir = tempfile::tempdir().unwrap();
            let exps = n / 1000;
            let secs = committed(dir.path(), 4, exps / 4, 1000, &set);
            let ops = (exps / 4) * 4 * 1000;
            json!({"ops_per_s": ops as f64 / secs, "bytes_per_op": file_bytes(dir.path()) as f64 / ops as f64})
        }
        "w3" => {
            let d1 = tempfile::tempdir().unwrap();
            let s1 = committed(d1.path(), 64, n / 64, 1, &|_| incr());
            let d2 = tempfile::tempdir().unwrap();
            let exps = n / 1000;
            let s2 = committed(d2.path(), 4, exps / 4, 1000, &|_| incr());
            json!({"batch1_per_s": ((n / 64) * 64) as f64 / s1,
                   "batch1000_per_s": ((exps / 4) * 4000) as f64 / s2})
        }
        "w4" => w4(n),
        "w6" => {
            let dir = tempfile::tempdir().unwrap();
            committed(dir.path(), 1, n / 1000, 1000, &set);
            let t = Instant::now();
            let store = Store::open(dir.path()).unwrap();
            let state = store.state().unwrap();
            std::hint::black_box(state.doc.materialize(&DocPath::root()));
            json!({"secs": t.elapsed().as_secs_f64()})
        }
        "w7" => w7(size.history),
        other => panic!("unknown workload {other}"),
    }
}

/// Two replicas each write `n` concurrent single-op experiences, then sync with the core's
/// protocol: every message encoded and decoded, every received experience validated
/// (ZIP-215 batches on every core) and inserted.
fn w4(n: usize) -> J {
    let ka = ed25519_consensus::SigningKey::from([1u8; 32]);
    let kb = ed25519_consensus::SigningKey::from([2u8; 32]);
    let g = genesis(&ka);
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    for i in 0..n {
        a.write(&ka, vec![set(i)]).unwrap();
        b.write(&kb, vec![set(n + i)]).unwrap();
    }
    let missing_bytes: usize = a
        .lattice()
        .iter()
        .skip(1)
        .chain(b.lattice().iter().skip(1))
        .map(|e| e.to_bytes().len())
        .sum();
    let mut wire = 0usize;
    let t = Instant::now();
    // a asks b: one round trip; b streams the rest of what a lacks as pushes, and a pushes
    // what b lacks.
    let req = Request::Sync {
        summary: Summary::of(a.lattice()),
    }
    .to_bytes();
    wire += req.len();
    let Request::Sync { summary } = Request::from_bytes(&req).unwrap() else {
        unreachable!()
    };
    let missing_for_a = sync::missing(b.lattice(), &summary);
    let resp = sync::answer(b.lattice(), &summary, sync::BATCH_BYTES).to_bytes();
    wire += resp.len();
    let Response::Sync {
        summary: b_summary,
        exps,
        ..
    } = Response::from_bytes(&resp).unwrap()
    else {
        unreachable!()
    };
    let first = exps.len();
    receive(&mut a, exps);
    let push = |from: &Replica, to: &mut Replica, idxs: &[u32], wire: &mut usize| {
        let mut rest = idxs;
        while !rest.is_empty() {
            let (batch, _) = sync::batch(from.lattice(), rest, sync::BATCH_BYTES);
            let k = batch.len();
            let msg = Request::Push {
                cloud: from.cloud(),
                exps: batch,
            }
            .to_bytes();
            *wire += msg.len();
            let Request::Push { exps, .. } = Request::from_bytes(&msg).unwrap() else {
                unreachable!()
            };
            let ack = Response::Pushed {
                new: k as u32,
                rejected: 0,
            }
            .to_bytes();
            *wire += ack.len();
            receive(to, exps);
            rest = &rest[k..];
        }
    };
    push(&b, &mut a, &missing_for_a[first..], &mut wire);
    let missing_for_b = sync::missing(a.lattice(), &b_summary);
    push(&a, &mut b, &missing_for_b, &mut wire);
    let secs = t.elapsed().as_secs_f64();
    json!({"secs": secs, "bytes_ratio": wire as f64 / missing_bytes as f64,
           "round_trips": 1, "converged": u8::from(a.root() == b.root())})
}

fn receive(r: &mut Replica, exps: Vec<ByteBuf>) {
    let cloud = r.cloud();
    let inputs: Vec<&[u8]> = exps.iter().map(|b| b.0.as_slice()).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let checked: Vec<_> = std::thread::scope(|s| {
        let parts: Vec<_> = inputs
            .chunks(inputs.len().div_ceil(cores).max(1))
            .map(|p| s.spawn(move || lcloud_core::validate_batch(p, &cloud)))
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for e in checked {
        r.insert(e.expect("valid")).unwrap();
    }
}

/// A store of `ops` ops (1000-op experiences); the state at 100 random cuts (open + index +
/// checkpoint + tail, what `lcloud state --at` does) against one full replay.
fn w7(ops: usize) -> J {
    let dir = tempfile::tempdir().unwrap();
    committed(dir.path(), 1, ops / 1000, 1000, &set);
    let store = Store::open(dir.path()).unwrap();
    let me = Identity::load(dir.path()).unwrap().unwrap().id();
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let replica = store.load(&mut |_| {}).unwrap();
    std::hint::black_box(replica.root());
    let replay = t.elapsed().as_secs_f64();
    drop((store, replica));
    let mut rng = Rng(7);
    let exps = ops / 1000;
    let times: Vec<f64> = (0..100)
        .map(|_| {
            // The genesis is seq 1 of the writer's chain; its writes are seqs 2..=exps+1.
            let seq = 2 + rng.below(exps) as u64;
            let clock = VectorClock([(me, seq)].into_iter().collect());
            let t = Instant::now();
            let store = Store::open(dir.path()).unwrap();
            let state = store
                .state_at_clock(&clock)
                .unwrap()
                .expect("answered from the index");
            std::hint::black_box(state.doc.materialize(&DocPath::root()));
            t.elapsed().as_secs_f64()
        })
        .collect();
    let (p50, p99) = p50_p99(times);
    json!({"p50": p50, "p99": p99, "replay": replay})
}
