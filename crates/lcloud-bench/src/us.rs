//! The workloads on λCLOUD: the real store on disk (redb, fsync), the group committer, the
//! core's sync protocol with every message encoded, decoded and every experience validated.

use std::path::Path;
use std::time::Instant;

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{Request, Response};
use lcloud_core::{
    Experience, Genesis, Limits, Op, Path as DocPath, Replica, Session, Value, VectorClock,
    Verified,
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
        path: DocPath::from(vec!["m".into(), key(i)]),
        value: Value::Str(value16(i)),
    }
}

fn incr() -> Op {
    Op::Incr {
        path: DocPath::from(vec!["c".into()]),
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
    // Closed as the node closes its store on stopping.
    committer.stop().close().unwrap();
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
    let t = Instant::now();
    let (wire, round_trips) = exchange([&mut a, &mut b]);
    let secs = t.elapsed().as_secs_f64();
    json!({"secs": secs, "bytes_ratio": wire as f64 / missing_bytes as f64,
           "round_trips": round_trips, "converged": u8::from(a.root() == b.root())})
}

/// One exchange initiated by the first replica, both sides driven by the core's sync
/// `Session` as `lcloud node run` drives it (the answer's first batch, then pushes of the rest
/// within the window, each answered), every message encoded and decoded, delivered in
/// order. Returns the bytes on the wire and the `Sync` round trips.
fn exchange(replicas: [&mut Replica; 2]) -> (usize, usize) {
    let mut sessions = [
        Session::new(Limits::default()),
        Session::new(Limits::default()),
    ];
    // (to, is a request, bytes)
    let mut queue: std::collections::VecDeque<(usize, bool, Vec<u8>)> = Default::default();
    let poll = |n: usize,
                sessions: &mut [Session; 2],
                replicas: &[&mut Replica; 2],
                queue: &mut std::collections::VecDeque<(usize, bool, Vec<u8>)>| {
        while let Some(req) = sessions[n].poll_request(replicas[n].lattice()) {
            queue.push_back((1 - n, true, req.to_bytes()));
        }
    };
    let (mut wire, mut trips) = (0, 0);
    sessions[0].start();
    poll(0, &mut sessions, &replicas, &mut queue);
    while let Some((n, request, bytes)) = queue.pop_front() {
        wire += bytes.len();
        if request {
            match Request::from_bytes(&bytes).unwrap() {
                Request::Sync { summary } => {
                    let answer = sessions[n].handle_sync(replicas[n].lattice(), &summary);
                    queue.push_back((1 - n, false, answer.to_bytes()));
                }
                Request::Push { exps, .. } => {
                    let new = exps.len() as u32;
                    receive(replicas[n], exps);
                    let ack = Response::Pushed { new, rejected: 0 };
                    queue.push_back((1 - n, false, ack.to_bytes()));
                }
            }
        } else {
            match Response::from_bytes(&bytes).unwrap() {
                Response::Sync {
                    summary,
                    exps,
                    more,
                } => {
                    trips += 1;
                    receive(replicas[n], exps);
                    sessions[n].handle_sync_answer(replicas[n].lattice(), &summary, more);
                }
                Response::Pushed { .. } => sessions[n].handle_pushed(),
                Response::Refused { reason } => panic!("refused: {reason}"),
            }
        }
        poll(n, &mut sessions, &replicas, &mut queue);
    }
    (wire, trips)
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
