//! λCLOUD's benchmark suite: every workload for λCLOUD, Automerge and Loro side by side, and
//! the machine's limits, measured in one run; one table; the results section of
//! `docs/BENCHMARKS.md` rewritten with the date, the machine and the command.
//!
//! `cargo run --release -p lcloud-bench` (N = 100 000 ops per replica)
//! `cargo run --release -p lcloud-bench -- --quick` (small N, under a minute; CI's smoke test)
//! `--no-write` leaves `docs/BENCHMARKS.md` alone.
//!
//! Each (workload, system) runs in a child process of its own, so its peak memory (W8) is its
//! own. What is compared, honestly: λCLOUD's writes are signed and durable (fsync) before they
//! are acknowledged; Automerge's and Loro's are in memory (neither has a durable store), so
//! their W1–W3 rates are an upper bound for what a durable deployment of them would reach.

mod compaction;
mod contracts;
mod peers;
mod proofs;
mod report;
mod settle;
mod us;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value as J, json};

use report::{
    render, render_w3s, render_w9, render_w10, render_w11, render_w12, render_w13, write_docs,
};

/// Workload sizes.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Ops per replica (N).
    pub n: usize,
    /// Ops in the history of W7.
    pub history: usize,
    /// Writes by one sequential durable writer (fsync-bound).
    pub sequential: usize,
    /// Contract calls in W9.
    pub calls: usize,
}

fn size(quick: bool) -> Size {
    if quick {
        Size {
            n: 5_000,
            history: 100_000,
            sequential: 200,
            calls: 12_000,
        }
    } else {
        Size {
            n: 100_000,
            history: 1_000_000,
            sequential: 2_000,
            calls: 100_000,
        }
    }
}

/// The workloads, in the order they run (W5 is measured within W1 and W2; W8 within each).
pub const WORKLOADS: [&str; 7] = ["w1", "w2", "w3", "w4", "w6", "w7", "w5"];
/// The systems compared.
pub const SYSTEMS: [&str; 3] = ["lcloud", "automerge", "loro"];

/// Peak resident memory of this process, in MiB (Linux `VmHWM`).
pub fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The 16-byte value of op `i`.
pub fn value16(i: usize) -> String {
    format!("v{i:015}")
}

/// The key of op `i` (1000 keys).
pub fn key(i: usize) -> String {
    format!("k{}", i % 1000)
}

/// Three members' keys, their node ids, and the genesis of a members-only cloud named `name`
/// that the first creates (W10, W11, W13).
pub fn three_members(
    name: &str,
) -> (
    Vec<ed25519_consensus::SigningKey>,
    Vec<lcloud_core::NodeId>,
    lcloud_core::Verified<lcloud_core::Experience>,
) {
    let keys: Vec<ed25519_consensus::SigningKey> = (1..=3u8)
        .map(|k| ed25519_consensus::SigningKey::from([k; 32]))
        .collect();
    let ids: Vec<lcloud_core::NodeId> = keys
        .iter()
        .map(|k| lcloud_core::NodeId(k.verification_key().to_bytes()))
        .collect();
    let genesis = lcloud_core::Experience::create_genesis(
        &keys[0],
        lcloud_core::Genesis::members_only(name, ids[1..].to_vec()),
    );
    (keys, ids, genesis)
}

/// A small seeded generator (SplitMix64) for the random cuts of W7.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// Median and 99th percentile of durations in seconds.
pub fn p50_p99(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn child(workload: &str, system: &str, size: Size) -> J {
    let mut out = match system {
        "lcloud" if workload == "w9" => contracts::run(size.calls),
        "lcloud" if workload == "w11" => compaction::join(size.history),
        "lcloud" if workload == "w12" => compaction::store_bytes(size.n),
        "lcloud" if workload == "w13" => proofs::run(size.history),
        "settled" | "open" if workload == "w3s" => settle::child(size.n, system),
        "full" | "compacted" | "stored" => {
            let ops = match workload {
                "w10a" => size.history,
                _ => 10 * size.history,
            };
            compaction::run(ops, system)
        }
        "lcloud" => us::run(workload, size),
        "automerge" => peers::automerge(workload, size),
        "loro" => peers::loro(workload, size),
        other => panic!("unknown system {other}"),
    };
    out["peak_mib"] = json!(peak_mib());
    out
}

/// The machine's limits, measured now.
fn limits() -> J {
    use ed25519_consensus::{SigningKey, VerificationKey, batch};
    let key = SigningKey::from([7u8; 32]);
    let vk = VerificationKey::from(&key);
    let msg = [0x5au8; 200];
    let rate = |n: usize, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let sign = rate(20_000, &mut || {
        std::hint::black_box(key.sign(&msg));
    });
    let sig = key.sign(&msg);
    let verify = rate(5_000, &mut || {
        vk.verify(&sig, &msg).unwrap();
    });
    let sigs: Vec<_> = (0..1024u32)
        .map(|i| {
            let m = i.to_le_bytes();
            (m, key.sign(&m))
        })
        .collect();
    let batch_rate = |size: usize| {
        let t = Instant::now();
        let rounds = (20_000 / size).max(4);
        for _ in 0..rounds {
            let mut v = batch::Verifier::new();
            for (m, s) in &sigs[..size] {
                v.queue((vk.into(), *s, m));
            }
            v.verify(rand_core::OsRng).unwrap();
        }
        (rounds * size) as f64 / t.elapsed().as_secs_f64()
    };
    let b64 = batch_rate(64);
    let b1024 = batch_rate(1024);
    let blake = rate(2_000_000, &mut || {
        std::hint::black_box(blake3::hash(std::hint::black_box(&msg)));
    });
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("sync")).unwrap();
    let fsync = {
        use std::io::Write;
        let mut f = f;
        rate(500, &mut || {
            f.write_all(&[1u8; 512]).unwrap();
            f.sync_data().unwrap();
        })
    };
    json!({"sign": sign, "verify": verify, "batch64": b64, "batch1024": b1024,
           "blake3_200": blake, "fsync": fsync})
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn today() -> String {
    // Days since the epoch to a civil date (no clock crate needed for a date line).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs / 86_400 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{}-{m:02}-{d:02}", if m <= 2 { y + 1 } else { y })
}

fn f(j: &J) -> f64 {
    j.as_f64().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let size = size(quick);
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let out = child(&args[i + 1], &args[i + 2], size);
        println!("{out}");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "λCLOUD benchmark suite: N = {} ops per replica, W7 history {} ops, {cores} cores ({})",
        size.n,
        size.history,
        cpu_model()
    );
    let lim = limits();
    let mut results: BTreeMap<(String, String), J> = BTreeMap::new();
    let exe = std::env::current_exe().expect("own path");
    for w in WORKLOADS {
        if w == "w5" {
            continue; // measured within w1 and w2
        }
        for s in SYSTEMS {
            results.insert((w.to_owned(), s.to_owned()), run_child(&exe, w, s, quick));
        }
    }
    // W9: contracts, on λCLOUD only (the peers have no user code in their merge).
    let w9 = run_child(&exe, "w9", "lcloud", quick);
    let mut w10: Vec<J> = ["w10a", "w10b"]
        .iter()
        .flat_map(|w| ["full", "compacted"].map(|m| run_child(&exe, w, m, quick)))
        .collect();
    w10.extend(["w10a", "w10b"].map(|w| run_child(&exe, w, "stored", quick)));
    let w11 = run_child(&exe, "w11", "lcloud", quick);
    let w12 = run_child(&exe, "w12", "lcloud", quick);
    let w13 = run_child(&exe, "w13", "lcloud", quick);
    let w3s = ["open", "settled"].map(|m| run_child(&exe, "w3s", m, quick));
    let mut table = render(&results, &lim, size, cores);
    table.push_str(&render_w9(&w9, &lim));
    table.push_str(&render_w10(&w10));
    table.push_str(&render_w11(&w11));
    table.push_str(&render_w12(&w12));
    table.push_str(&render_w13(&w13));
    table.push_str(&render_w3s(
        &w3s,
        &results[&("w3".to_owned(), "loro".to_owned())],
    ));
    println!("\n{table}");
    if !args.iter().any(|a| a == "--no-write") {
        let command = if quick {
            "cargo run --release -p lcloud-bench -- --quick"
        } else {
            "cargo run --release -p lcloud-bench"
        };
        let section = format!(
            "### Results — {}, {cores} cores ({}), `{command}`\n\n{table}",
            today(),
            cpu_model()
        );
        write_docs(&section);
    }
}

/// Runs one (workload, system) in a child process of its own: its JSON line, or the error.
fn run_child(exe: &std::path::Path, w: &str, s: &str, quick: bool) -> J {
    let mut cmd = Command::new(exe);
    cmd.args(["--child", w, s]);
    if quick {
        cmd.arg("--quick");
    }
    let t = Instant::now();
    let out = cmd.output().expect("the child runs");
    let line = String::from_utf8_lossy(&out.stdout);
    let j: J = match serde_json::from_str(line.lines().last().unwrap_or("")) {
        Ok(j) if out.status.success() => j,
        _ => {
            json!({"error": String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed").to_owned()})
        }
    };
    eprintln!("  {w} {s}: {:.1} s", t.elapsed().as_secs_f64());
    j
}
