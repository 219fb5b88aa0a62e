//! Store benchmarks beside the machine's limits, each workload in its own process (so peak
//! memory is per workload), all in one run. `cargo bench -p lcloud-store --bench store`
//! prints a table; `-- --quick` runs small versions in a few seconds.

use std::process::Command;
use std::time::Instant;

use ed25519_consensus::{SigningKey, VerificationKeyBytes};
use lcloud_core::{Experience, Genesis, Op, Path, Replica, Value, Verified};
use lcloud_store::{Committer, Identity, Store};
use serde_json::{Value as J, json};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn op(i: usize) -> Op {
    let mut s = String::with_capacity(200);
    s.push_str(&format!("{i:08}"));
    s.push_str(&"x".repeat(200 - s.len()));
    Op::Set {
        path: Path::from(vec!["k".into(), (i % 1000).to_string()]),
        value: Value::Str(s),
    }
}

fn genesis(key: &SigningKey) -> Verified<Experience> {
    Experience::create_genesis(key, Genesis::open("bench"))
}

fn new_store(dir: &std::path::Path) -> (Store, Identity) {
    let me = Identity::load_or_create(dir).unwrap();
    let store = Store::create(dir, &genesis(me.key())).unwrap();
    (store, me)
}

/// Bytes the store file occupies on disk (its allocated blocks, as `du` counts them). redb
/// grows its file in large steps with `set_len`, so the file's length runs ahead of what it
/// holds (the gap is a hole: no disk is used for it); both are reported.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join("store.redb")).map_or(0, |m| m.blocks() * 512)
}

/// The store file's length.
fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("store.redb")).map_or(0, |m| m.len())
}

/// `writers` threads each writing `per_writer` experiences of `ops_each` ops via group commit.
fn committed(dir: &std::path::Path, writers: usize, per_writer: usize, ops_each: usize) -> f64 {
    let (store, me) = new_store(dir);
    let committer = Committer::start(store, me);
    let start = Instant::now();
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
    let secs = start.elapsed().as_secs_f64();
    committer.stop();
    secs
}

fn limits() -> J {
    let n = if quick() { 300 } else { 3000 };
    let key = SigningKey::from([7; 32]);
    let msg = [1u8; 200];
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.sign(&msg));
    }
    let sign = n as f64 / t.elapsed().as_secs_f64();
    let sig = key.sign(&msg);
    let vk = key.verification_key();
    let t = Instant::now();
    for _ in 0..n {
        vk.verify(&sig, &msg).unwrap();
    }
    let verify = n as f64 / t.elapsed().as_secs_f64();
    let items: Vec<_> = (0..1024u32)
        .map(|i| {
            let k = SigningKey::from([(i % 250) as u8 + 1; 32]);
            let m = i.to_le_bytes().to_vec();
            (
                VerificationKeyBytes::from(k.verification_key()),
                k.sign(&m),
                m,
            )
        })
        .collect();
    let batch = |rounds: usize| {
        for _ in 0..rounds {
            let mut v = ed25519_consensus::batch::Verifier::new();
            for (k, s, m) in &items {
                v.queue((*k, *s, m));
            }
            v.verify(rand_core::OsRng).unwrap();
        }
    };
    let rounds = if quick() { 1 } else { 4 };
    let t = Instant::now();
    batch(rounds);
    let batch1 = (rounds * 1024) as f64 / t.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| batch(rounds));
        }
    });
    let batch_all = (cores * rounds * 1024) as f64 / t.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fsync");
    let mut f = std::fs::File::create(&path).unwrap();
    let fsyncs = if quick() { 50 } else { 300 };
    let t = Instant::now();
    for i in 0..fsyncs {
        use std::io::Write;
        f.write_all(&[i as u8; 512]).unwrap();
        f.sync_data().unwrap();
    }
    let fsync = fsyncs as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..100_000u32 {
        std::hint::black_box(blake3::hash(&[i as u8; 200]));
    }
    let blake = 100_000.0 / t.elapsed().as_secs_f64();
    json!({"sign": sign, "verify": verify, "batch_1core": batch1, "batch_all_cores": batch_all,
           "cores": cores, "fsync": fsync, "blake3_200": blake})
}

/// Concurrent writers in the W1 sweep: async tasks awaiting their acknowledgement, as an HTTP
/// server's requests would be. A writer has one write in flight, so the number of writers is
/// how many experiences can share one fsync.
const W1_WRITERS: [usize; 3] = [64, 256, 1024];

/// `writers` concurrent writers as async tasks on a two-thread runtime, each awaiting its
/// durable acknowledgement before writing again: (experiences/s, bytes on disk per
/// experience, file length per experience).
fn w1_async(writers: usize) -> (f64, f64, f64) {
    let n = if quick() { 6_400 } else { 102_400 };
    let dir = tempfile::tempdir().unwrap();
    let (store, me) = new_store(dir.path());
    let committer = Committer::start(store, me);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let writer = committer.writer();
                tokio::spawn(async move {
                    for i in 0..n / writers {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        writer
                            .submit(
                                vec![op(w * n / writers + i)],
                                Box::new(move |r| {
                                    let _ = tx.send(r);
                                }),
                            )
                            .unwrap();
                        rx.await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    committer.stop();
    let n = (n / writers * writers) as f64;
    (
        n / secs,
        dir_bytes(dir.path()) as f64 / n,
        file_len(dir.path()) as f64 / n,
    )
}

fn w1() -> J {
    let sweep: Vec<J> = W1_WRITERS
        .iter()
        .map(|&w| {
            let (rate, bytes, len) = w1_async(w);
            json!({"writers": w, "exps_per_s": rate, "bytes_per_exp": bytes, "file_len_per_exp": len})
        })
        .collect();
    json!({"sweep": sweep, "threads_per_s": w1_threads()})
}

/// 64 OS threads blocking on `Writer::write`.
fn w1_threads() -> f64 {
    let n = if quick() { 6_400 } else { 51_200 };
    let dir = tempfile::tempdir().unwrap();
    let secs = committed(dir.path(), 64, n / 64, 1);
    n as f64 / secs
}

fn w1_sequential() -> J {
    let n = if quick() { 200 } else { 2_000 };
    let dir = tempfile::tempdir().unwrap();
    let (mut store, me) = new_store(dir.path());
    let t = Instant::now();
    for i in 0..n {
        store.write_local(&me, vec![op(i)]).unwrap().unwrap();
    }
    json!({"exps_per_s": n as f64 / t.elapsed().as_secs_f64(), "n": n})
}

/// Concurrent writers in the W2 sweep, each writing 1000-op experiences one after another.
const W2_WRITERS: [usize; 2] = [4, 16];

fn w2() -> J {
    let exps = if quick() { 96 } else { 1_008 };
    let sweep: Vec<J> = W2_WRITERS
        .iter()
        .map(|&writers| {
            let dir = tempfile::tempdir().unwrap();
            let secs = committed(dir.path(), writers, exps / writers, 1000);
            let ops = (exps / writers * writers * 1000) as f64;
            json!({"writers": writers, "ops_per_s": ops / secs, "n": ops,
                   "bytes_per_op": dir_bytes(dir.path()) as f64 / ops,
                   "file_len_per_op": file_len(dir.path()) as f64 / ops})
        })
        .collect();
    json!({"sweep": sweep})
}

fn import() -> J {
    let n = if quick() { 5_000 } else { 100_000 };
    let writer = SigningKey::from([9; 32]);
    let g = genesis(&writer);
    let mut source = Replica::new(g.clone()).unwrap();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| source.write(&writer, vec![op(i)]).unwrap().to_bytes())
        .collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path(), &g).unwrap();
    let mut replica = store.load(&mut |_| {}).unwrap();
    let t = Instant::now();
    let report = store.import(&mut replica, &refs, &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.new, n);
    json!({"exps_per_s": n as f64 / secs, "n": n})
}

fn open() -> J {
    let exps = if quick() { 100 } else { 1_000 };
    let dir = tempfile::tempdir().unwrap();
    committed(dir.path(), 4, exps / 4, 1000);
    // Open and print the current state, as `lcloud state` does.
    let t = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let doc = store.document(&Path::root()).unwrap().unwrap();
    let printed = doc.to_json().to_string();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(printed.len() > 1000);
    // Full replay from the history.
    let t = Instant::now();
    let replica = store.load(&mut |_| {}).unwrap();
    let replay_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(store);
    // `state --at` at 100 random experiences' clocks, from the index and checkpoints.
    let n = replica.lattice().len() as u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut times: Vec<f64> = (0..100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let clock = replica.lattice().clock((x % n) as u32);
            let t = Instant::now();
            let store = Store::open(dir.path()).unwrap();
            let state = store
                .state_at_clock(&clock)
                .unwrap()
                .expect("the index answers");
            std::hint::black_box(state.root());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at_ms = times[50];
    let at_p99_ms = times[98];
    json!({"open_print_ms": open_ms, "replay_ms": replay_ms, "state_at_ms": at_ms,
           "state_at_p99_ms": at_p99_ms, "ops": exps * 1000})
}

fn run_child(name: &str) -> J {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--workload").arg(name);
    if quick() {
        cmd.arg("--quick");
    }
    let out = cmd.output().expect("benchmark child runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("child prints JSON")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        let mut r = match args[i + 1].as_str() {
            "limits" => limits(),
            "w1" => w1(),
            "w1seq" => w1_sequential(),
            "w2" => w2(),
            "import" => import(),
            "open" => open(),
            other => panic!("unknown workload {other}"),
        };
        r["peak_mib"] = json!(peak_rss_mib());
        println!("{r}");
        return;
    }
    let l = run_child("limits");
    let w1 = run_child("w1");
    let w1s = run_child("w1seq");
    let w2 = run_child("w2");
    let imp = run_child("import");
    let op = run_child("open");
    let f = |v: &J| v.as_f64().unwrap_or(f64::NAN);
    let sign = f(&l["sign"]);
    let limit2 = f(&l["batch_all_cores"]);
    let mark = |ok: bool| if ok { "met" } else { "**MISSED**" };
    println!(
        "\n## store benchmarks{}\n",
        if quick() {
            " (--quick: small sizes, not for the record)"
        } else {
            ""
        }
    );
    println!(
        "limits measured in this run: Ed25519 sign {:.0}/s (1 core), verify {:.0}/s (1 core), ZIP-215 batch-1024 verify {:.0}/s on 1 core and {:.0}/s on {} cores, BLAKE3 200 B {:.0}/s, fsync {:.0}/s\n",
        sign,
        f(&l["verify"]),
        f(&l["batch_1core"]),
        limit2,
        l["cores"],
        f(&l["blake3_200"]),
        f(&l["fsync"])
    );
    println!("| workload | result | ratio | target | peak MiB |");
    println!("|---|---:|---:|---|---:|");
    let threads = f(&w1["threads_per_s"]);
    let mut w1_rows = vec![("64 blocking writer threads".to_string(), threads)];
    for row in w1["sweep"].as_array().into_iter().flatten() {
        w1_rows.push((
            format!("{} async writer tasks", row["writers"]),
            f(&row["exps_per_s"]),
        ));
    }
    // The target is for many concurrent writers sharing fsyncs: each row says whether that
    // writer count reaches it, and the verdict names the counts that do.
    let at_count = |ok: bool| if ok { "met" } else { "not at this count" };
    let mut w1_met = Vec::new();
    for (label, rate) in w1_rows {
        let ok = rate >= 50_000.0 && rate / sign >= 0.9;
        if ok {
            w1_met.push(label.clone());
        }
        println!(
            "| durable 1-op experiences/s, {label}, group commit | {rate:.0} | {:.2} of 1-core sign | ≥ 50 000/s and ≥ 0.90: {} | {:.0} |",
            rate / sign,
            at_count(ok),
            f(&w1["peak_mib"])
        );
    }
    println!(
        "| **W1 target**: ≥ 50 000 durable 1-op experiences/s and ≥ 0.90 of 1-core sign, many concurrent writers sharing fsyncs | {} | | {} | |",
        if w1_met.is_empty() {
            "at no writer count".to_string()
        } else {
            format!("with {}", w1_met.join(", "))
        },
        mark(!w1_met.is_empty())
    );
    let w1sr = f(&w1s["exps_per_s"]);
    println!(
        "| durable 1-op experiences/s, one sequential writer | {w1sr:.0} | {:.2} of fsync/s | — | {:.0} |",
        w1sr / f(&l["fsync"]),
        f(&w1s["peak_mib"])
    );
    let mut w2_met = Vec::new();
    for row in w2["sweep"].as_array().into_iter().flatten() {
        let w2r = f(&row["ops_per_s"]);
        if w2r >= 1e6 {
            w2_met.push(format!("{} writers", row["writers"]));
        }
        println!(
            "| durable ops/s in 1000-op experiences, {} writers | {w2r:.0} | | ≥ 1 000 000/s: {} | {:.0} |",
            row["writers"],
            at_count(w2r >= 1e6),
            f(&w2["peak_mib"])
        );
    }
    println!(
        "| **W2 target**: ≥ 1 000 000 durable ops/s in 1000-op experiences | {} | | {} | |",
        if w2_met.is_empty() {
            "at no writer count".to_string()
        } else {
            format!("with {}", w2_met.join(", "))
        },
        mark(!w2_met.is_empty())
    );
    let ir = f(&imp["exps_per_s"]);
    println!(
        "| import of a {}-experience bundle, experiences/s | {ir:.0} | {:.2} of {}-core verify | ≥ 0.60: {} | {:.0} |",
        imp["n"],
        ir / limit2,
        l["cores"],
        mark(ir / limit2 >= 0.6),
        f(&imp["peak_mib"])
    );
    for row in w1["sweep"].as_array().into_iter().flatten() {
        let b1 = f(&row["bytes_per_exp"]);
        println!(
            "| bytes on disk per 1-op experience (200 B value), {} writers (file length {:.0}) | {b1:.0} | | ≤ 300: {} | |",
            row["writers"],
            f(&row["file_len_per_exp"]),
            mark(b1 <= 300.0)
        );
    }
    for row in w2["sweep"].as_array().into_iter().flatten() {
        println!(
            "| bytes on disk per op in 1000-op experiences, {} writers (file length {:.0}) | {:.0} | | — | |",
            row["writers"],
            f(&row["file_len_per_op"]),
            f(&row["bytes_per_op"])
        );
    }
    let om = f(&op["open_print_ms"]);
    println!(
        "| open a {}-op store and print the current state | {om:.1} ms | | ≤ 50 ms: {} | {:.0} |",
        op["ops"],
        mark(om <= 50.0),
        f(&op["peak_mib"])
    );
    let ratio = f(&op["state_at_ms"]) / f(&op["replay_ms"]);
    println!(
        "| `state --at` on that store (open + index + checkpoint + tail), median of 100 random cuts, vs a full replay ({:.0} ms) | {:.1} ms (p99 {:.1} ms) | {ratio:.4} | ≤ 0.01: {} | |",
        f(&op["replay_ms"]),
        f(&op["state_at_ms"]),
        f(&op["state_at_p99_ms"]),
        mark(ratio <= 0.01)
    );
}
