//! Core benchmarks beside the machine's limits, measured in the same run.
//!
//! `cargo bench -p lcloud-core --bench core` runs every benchmark with criterion, then prints
//! a table of rates and of ratios against the Ed25519 and BLAKE3 limits measured in this same
//! run (read back from criterion's own estimates). Copy the table into docs/BENCHMARKS.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use ed25519_consensus::{SigningKey, VerificationKeyBytes};
use lcloud_core::{
    Cut, Experience, Genesis, NodeId, Op, Path, Replica, Value, Verified, validate, validate_batch,
};

const PAYLOAD: usize = 200;

fn key(n: u8) -> SigningKey {
    SigningKey::from([n + 1; 32])
}

fn genesis() -> Verified<Experience> {
    Experience::create_genesis(&key(0), Genesis::open("bench"))
}

fn op(i: usize) -> Op {
    // A 200-byte string value at a fresh key: the size of a typical small event.
    let mut s = format!("{i:08}");
    s.extend(std::iter::repeat_n('x', PAYLOAD - s.len()));
    Op::Set {
        path: Path::from(vec!["k".into(), format!("{}", i % 1000)]),
        value: Value::Str(s),
    }
}

/// One author's chain of `n` experiences of `ops_each` ops.
fn chain(n: usize, ops_each: usize) -> (Verified<Experience>, Vec<Verified<Experience>>) {
    let g = genesis();
    let mut r = Replica::new(g.clone()).unwrap();
    let k = key(1);
    let exps = (0..n)
        .map(|i| {
            let e = r.write(&k, (0..ops_each).map(|j| op(i * ops_each + j)).collect());
            std::sync::Arc::unwrap_or_clone(e.unwrap())
        })
        .collect();
    (g, exps)
}

/// `authors` nodes writing in rounds and syncing after each round: a history of
/// `total_ops` ops in experiences of `ops_each`.
fn history(authors: u8, total_ops: usize, ops_each: usize) -> Replica {
    let g = genesis();
    let mut replicas: Vec<Replica> = (0..authors)
        .map(|_| Replica::new(g.clone()).unwrap())
        .collect();
    let mut written = 0;
    while written < total_ops {
        for (a, r) in replicas.iter_mut().enumerate() {
            let ops = (0..ops_each).map(|j| op(written + j)).collect();
            r.write(&key(a as u8 + 1), ops).unwrap();
            written += ops_each;
        }
        let (first, rest) = replicas.split_at_mut(1);
        for r in rest.iter() {
            first[0].merge(r);
        }
        for r in rest.iter_mut() {
            r.merge(&first[0]);
        }
    }
    replicas.swap_remove(0)
}

fn limits(c: &mut Criterion) {
    let mut g = c.benchmark_group("limits");
    let k = key(9);
    let msg = vec![7u8; PAYLOAD];
    let sig = k.sign(&msg);
    let vk = k.verification_key();
    g.bench_function("ed25519_sign", |b| b.iter(|| k.sign(black_box(&msg))));
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| vk.verify(black_box(&sig), black_box(&msg)).unwrap())
    });
    for n in [64usize, 1024] {
        let items: Vec<(SigningKey, Vec<u8>)> = (0..n)
            .map(|i| {
                (
                    SigningKey::from([(i % 250) as u8 + 1; 32]),
                    i.to_le_bytes().to_vec(),
                )
            })
            .collect();
        let signed: Vec<_> = items
            .iter()
            .map(|(k, m)| {
                (
                    VerificationKeyBytes::from(k.verification_key()),
                    k.sign(m),
                    m.clone(),
                )
            })
            .collect();
        g.bench_function(format!("ed25519_batch_verify_{n}"), |b| {
            b.iter(|| {
                let mut v = ed25519_consensus::batch::Verifier::new();
                for (vk, s, m) in &signed {
                    v.queue((*vk, *s, m));
                }
                v.verify(rand_core::OsRng).unwrap()
            })
        });
    }
    g.bench_function("blake3_200B", |b| b.iter(|| blake3::hash(black_box(&msg))));
    g.finish();
}

fn experiences(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    let gen_ = genesis();
    let r = Replica::new(gen_.clone()).unwrap();
    let k = key(1);
    let author = NodeId(k.verification_key().to_bytes());
    g.bench_function("create_and_sign", |b| {
        b.iter(|| Experience::sign(r.draft(&author, vec![op(1)]), &k))
    });
    let (g1, exps) = chain(1, 1);
    let bytes = exps[0].to_bytes();
    g.bench_function("validate", |b| {
        b.iter(|| validate(black_box(&bytes), &g1.id()).unwrap())
    });
    // Validate and insert a stream of single-op experiences, one signature check each.
    g.bench_function("validate_and_insert", |b| {
        b.iter_custom(|iters| {
            let (g, exps) = chain(iters as usize, 1);
            let bytes: Vec<Vec<u8>> = exps.iter().map(|e| e.to_bytes()).collect();
            let mut r = Replica::new(g.clone()).unwrap();
            let start = Instant::now();
            for b in &bytes {
                r.insert(validate(b, &g.id()).unwrap()).unwrap();
            }
            start.elapsed()
        })
    });
    // The same, with signatures checked in batches of 1024.
    g.bench_function("validate_batch_and_insert", |b| {
        b.iter_custom(|iters| {
            let (g, exps) = chain(iters as usize, 1);
            let bytes: Vec<Vec<u8>> = exps.iter().map(|e| e.to_bytes()).collect();
            let mut r = Replica::new(g.clone()).unwrap();
            let start = Instant::now();
            for batch in bytes.chunks(1024) {
                let refs: Vec<&[u8]> = batch.iter().map(|b| b.as_slice()).collect();
                for v in validate_batch(&refs, &g.id()) {
                    r.insert(v.unwrap()).unwrap();
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn fold(c: &mut Criterion) {
    let mut g = c.benchmark_group("fold");
    for ops_each in [1usize, 1000] {
        // Insert already-verified experiences: lattice admission plus the fold, per op.
        g.bench_function(format!("insert_{ops_each}_op_experiences_per_op"), |b| {
            b.iter_custom(|iters| {
                let n = (iters as usize).div_ceil(ops_each);
                let (g, exps) = chain(n, ops_each);
                let mut r = Replica::new(g).unwrap();
                let start = Instant::now();
                for e in exps {
                    r.insert(e).unwrap();
                }
                let per_op = start.elapsed().as_secs_f64() / (n * ops_each) as f64;
                Duration::from_secs_f64(per_op * iters as f64)
            })
        });
    }
    g.finish();
}

fn travel(c: &mut Criterion) {
    let mut g = c.benchmark_group("travel");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    // 1M ops: 4 nodes writing 100-op experiences in rounds, syncing after each round.
    let full = history(4, 1_000_000, 100);
    let exps: Vec<Verified<Experience>> = full.lattice().iter().skip(1).cloned().collect();
    let genesis = full.lattice().get(0).clone();
    g.bench_function("full_replay_1M_ops", |b| {
        b.iter_batched(
            || exps.clone(),
            |exps| {
                let mut r = Replica::new(genesis.clone()).unwrap();
                for e in exps {
                    r.insert(e).unwrap();
                }
                r
            },
            BatchSize::PerIteration,
        )
    });
    let n = full.lattice().len() as u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    g.sample_size(100);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("state_at_random_cut_1M_ops", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let idx = (x % n) as u32;
            full.state_at(&Cut::Clock(full.lattice().clock(idx)))
                .unwrap()
        })
    });
    g.finish();
}

/// criterion's mean estimate for a benchmark, in nanoseconds per iteration.
fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let target: PathBuf = exe.ancestors().nth(3)?.to_path_buf();
    let file = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn report() {
    let per_s = |ns: f64| 1e9 / ns;
    let get = |g: &str, n: &str| mean_ns(g, n).unwrap_or(f64::NAN);
    let sign = per_s(get("limits", "ed25519_sign"));
    let verify = per_s(get("limits", "ed25519_verify"));
    let batch64 = per_s(get("limits", "ed25519_batch_verify_64") / 64.0);
    let batch1024 = per_s(get("limits", "ed25519_batch_verify_1024") / 1024.0);
    let blake = per_s(get("limits", "blake3_200B"));
    let create = per_s(get("core", "create_and_sign"));
    let validate1 = per_s(get("core", "validate"));
    let insert1 = per_s(get("core", "validate_and_insert"));
    let insertb = per_s(get("core", "validate_batch_and_insert"));
    let fold1 = per_s(get("fold", "insert_1_op_experiences_per_op"));
    let fold1000 = per_s(get("fold", "insert_1000_op_experiences_per_op"));
    let replay = get("travel", "full_replay_1M_ops");
    let cut = get("travel", "state_at_random_cut_1M_ops");
    println!("\n## core benchmarks (one run, rates per second, per core)\n");
    println!("| measure | rate /s | ratio | vs |");
    println!("|---|---:|---:|---|");
    println!("| Ed25519 sign (limit) | {sign:.0} | | |");
    println!("| Ed25519 verify, ZIP-215 single (limit) | {verify:.0} | | |");
    println!("| Ed25519 verify, ZIP-215 batch of 64 (limit) | {batch64:.0} | | |");
    println!("| Ed25519 verify, ZIP-215 batch of 1024 (limit) | {batch1024:.0} | | |");
    println!("| BLAKE3 of 200 B (limit) | {blake:.0} | | |");
    println!(
        "| create and sign a 1-op experience | {create:.0} | {:.2} | sign |",
        create / sign
    );
    println!(
        "| validate one experience | {validate1:.0} | {:.2} | verify single |",
        validate1 / verify
    );
    println!(
        "| validate + insert, single verification | {insert1:.0} | {:.2} | verify single |",
        insert1 / verify
    );
    println!(
        "| validate + insert, batches of 1024 (target ≥ 0.60) | {insertb:.0} | {:.2} | batch-1024 verify |",
        insertb / batch1024
    );
    println!(
        "| fold: ops/s in 1-op experiences (no signature check) | {fold1:.0} | {:.2} | BLAKE3 200 B |",
        fold1 / blake
    );
    println!(
        "| fold: ops/s in 1000-op experiences | {fold1000:.0} | {:.2} | BLAKE3 200 B |",
        fold1000 / blake
    );
    println!(
        "| time travel: random cut of 1M ops, {:.2} ms vs full replay {:.0} ms (target ≤ 0.01) | | {:.4} | full replay |",
        cut / 1e6,
        replay / 1e6,
        cut / replay
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    limits(&mut c);
    experiences(&mut c);
    fold(&mut c);
    travel(&mut c);
    c.final_summary();
    report();
}
