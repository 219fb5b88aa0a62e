//! The receiving node's core thread alone: experiences a peer pushes, already checked (as the
//! network task hands them over), inserted, stored durably and answered, one push batch after
//! the other. This is the part of a two-node sync that runs on one thread; the two-node
//! benchmark (`cargo bench -p lcloud-cli --bench net`) measures the whole.
//!
//! `cargo bench -p lcloud-node --bench ingest` (N = 100 000 single-op experiences of 200-byte
//! values over 1 000 keys, in push batches of 1 MiB; `-- --quick` for N = 10 000). Prints
//! microseconds of the core thread per experience (wall time and the thread's CPU time), and
//! the machine's ZIP-215 verification cost per experience on one core for scale.

use std::time::Instant;

use lcloud_core::codec::ByteBuf;
use lcloud_core::{Experience, Genesis, Op, Path, Replica, Value};
use lcloud_node::node::{Msg, Node, check};
use lcloud_store::{Identity, Store};
use tokio::sync::{broadcast, mpsc};

fn op(i: usize) -> Op {
    // 200 bytes that do not compress (as the network benchmark's).
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let s: String = (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    Op::Set {
        path: Path::from(vec!["k".into(), (i % 1000).to_string()]),
        value: Value::Str(s),
    }
}

/// CPU seconds the calling thread has used (Linux: `/proc/thread-self/stat`).
fn thread_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10_000 } else { 100_000 };
    let base = tempfile::tempdir().unwrap();
    let writer = Identity::load_or_create(&base.path().join("writer")).unwrap();
    let genesis = Experience::create_genesis(writer.key(), Genesis::open("ingest"));
    let cloud = genesis.id();
    let mut source = Replica::new(genesis.clone()).unwrap();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| source.write(writer.key(), vec![op(i)]).unwrap().to_bytes())
        .collect();
    // Push batches of at most 1 MiB, checked beforehand (not timed).
    let mut pushes = Vec::new();
    let mut batch: Vec<ByteBuf> = Vec::new();
    let mut bytes = 0;
    for r in &records {
        if !batch.is_empty() && bytes + r.len() > lcloud_core::sync::BATCH_BYTES {
            pushes.push(check(std::mem::take(&mut batch), &cloud));
            bytes = 0;
        }
        bytes += r.len();
        batch.push(ByteBuf(r.clone()));
    }
    pushes.push(check(batch, &cloud));
    let refs: Vec<&[u8]> = records[..2048].iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    for part in refs.chunks(1024) {
        for r in lcloud_core::validate_batch(part, &cloud) {
            r.unwrap();
        }
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / refs.len() as f64;

    let dir = base.path().join("node");
    let me = Identity::load_or_create(&dir).unwrap();
    drop(Store::create(&dir, &genesis).unwrap());
    let (store, replica) = Store::open_loaded(&dir, &mut |_| {}).unwrap();
    let (net, mut commands) = mpsc::channel(1024);
    let (announce, _) = broadcast::channel(16);
    let node = Node::open(
        lcloud_net::peer_of(&me.id()).unwrap(),
        store,
        replica,
        me,
        net,
        announce,
    )
    .unwrap();
    let (inbox, rx) = mpsc::unbounded_channel();
    let core = std::thread::spawn(move || {
        let cpu = thread_cpu_s();
        let store = node.run(rx);
        (thread_cpu_s() - cpu, store)
    });
    let peer = lcloud_net::peer_of(&writer.id()).unwrap();
    let count = pushes.len();
    let t = Instant::now();
    for (token, exps) in pushes.into_iter().enumerate() {
        inbox
            .send(Msg::Push {
                peer,
                token: token as u64,
                cloud,
                exps,
            })
            .unwrap_or_else(|_| panic!("the core runs"));
        // One push at a time, as a sender whose window is full would see: wait for the answer.
        loop {
            match commands.blocking_recv() {
                Some(lcloud_net::Command::Respond { .. }) => break,
                Some(_) => continue,
                None => panic!("the core stopped"),
            }
        }
    }
    let wall = t.elapsed().as_secs_f64();
    inbox
        .send(Msg::Stop)
        .unwrap_or_else(|_| panic!("the core runs"));
    let (cpu, store) = core.join().unwrap();
    assert_eq!(
        store.into_store().len(),
        n as u64 + 1,
        "every experience stored"
    );
    println!(
        "ingest of {n} pushed experiences ({count} pushes): {:.2} µs per experience on the core thread (wall; CPU {:.2} µs, including the final flush); ZIP-215 verification {verify_us:.2} µs per experience per core",
        wall * 1e6 / n as f64,
        cpu * 1e6 / n as f64,
    );
}
