//! Network benchmarks: real `lcloud node run` processes on loopback, measured beside the
//! machine's limit (ZIP-215 batch verification on every core) in the same run.
//!
//! `cargo bench -p lcloud-cli --bench net` (N = 100 000; `-- --quick` for N = 5 000)
//!
//! 1. Two nodes, N experiences missing on one side: experiences per second until the second
//!    node holds them all, bytes on the wire (counted by a TCP relay between the two nodes)
//!    divided by the bytes of the missing experiences, and sync round trips.
//! 2. Five nodes in a full mesh: one is cut off, both sides write, the cut heals; time from
//!    heal to identical state roots.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lcloud_core::{Experience, ForkPolicy, Genesis, Op, Path as DocPath, Replica, Value};
use lcloud_store::{Identity, Store};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

struct NodeProc {
    child: Child,
    api: String,
    p2p: String,
}

impl NodeProc {
    fn start(dir: &Path, peers: &[String]) -> NodeProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lcloud"));
        cmd.arg("--dir")
            .arg(dir)
            .args([
                "node",
                "run",
                "--api",
                "127.0.0.1:0",
                "--sync-every",
                "3600",
            ])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.spawn().expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut api, mut p2p) = (None, None);
        while api.is_none() || p2p.is_none() {
            let line = lines.next().expect("node prints addresses").unwrap();
            if let Some(a) = line.strip_prefix("api http://") {
                api = Some(a.to_owned());
            } else if let Some(a) = line.strip_prefix("p2p ") {
                p2p = Some(a.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        NodeProc {
            child,
            api: api.unwrap(),
            p2p: p2p.unwrap(),
        }
    }

    fn get(&self, path: &str) -> String {
        http(&self.api, "GET", path, "")
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/status")).unwrap()
    }

    /// Experiences held, from the frontier clock: `/api/status` would hash the whole state at
    /// every poll, on the node being measured.
    fn held(&self) -> u64 {
        let clock: serde_json::Value = serde_json::from_str(&self.get("/api/clock")).unwrap();
        clock
            .as_object()
            .map_or(0, |c| c.values().filter_map(|v| v.as_u64()).sum())
    }

    fn metric(&self, name: &str) -> u64 {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A TCP relay to `target` that counts the bytes it carries, both ways.
fn relay(target: String, count: Arc<AtomicU64>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for inbound in l.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                (outbound, inbound),
            ] {
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        count.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

fn op(i: usize) -> Op {
    // 200 bytes that do not compress.
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
        path: DocPath(vec!["k".into(), (i % 1000).to_string()]),
        value: Value::Str(s),
    }
}

/// Two stores of one cloud: `a` with `n` experiences of a writer, `b` with the genesis only.
fn two_stores(base: &Path, n: usize) -> (PathBuf, PathBuf, usize) {
    let (a, b) = (base.join("a"), base.join("b"));
    let ida = Identity::load_or_create(&a).unwrap();
    Identity::load_or_create(&b).unwrap();
    let genesis = Experience::create_genesis(
        ida.key(),
        Genesis {
            name: "bench".into(),
            init: Value::map(),
            members: None,
            fork_policy: ForkPolicy::Concurrent,
        },
    );
    let mut source = Replica::new(genesis.clone()).unwrap();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| source.write(ida.key(), vec![op(i)]).unwrap().to_bytes())
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let mut sa = Store::create(&a, &genesis).unwrap();
    let mut replica = sa.load(&mut |_| {}).unwrap();
    sa.import(&mut replica, &refs, &mut |_| {}).unwrap();
    drop(Store::create(&b, &genesis).unwrap());
    (a, b, bytes)
}

/// ZIP-215 batch verification of `records` on every core, per second.
fn verify_limit(records: &[Vec<u8>], cloud: &lcloud_core::Id) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for part in refs.chunks(refs.len().div_ceil(cores)) {
            s.spawn(move || {
                for batch in part.chunks(1024) {
                    for r in lcloud_core::validate_batch(batch, cloud) {
                        r.unwrap();
                    }
                }
            });
        }
    });
    refs.len() as f64 / t.elapsed().as_secs_f64()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn main() {
    let n = if quick() { 5_000 } else { 100_000 };
    let base = tempfile::tempdir().unwrap();
    println!("preparing {n} experiences (1 op, 200-byte value each)…");
    let (a_dir, b_dir, missing_bytes) = two_stores(base.path(), n);
    // The limit, measured on the same experiences.
    let store = Store::open(&a_dir).unwrap();
    let cloud = store.cloud();
    let mut records = Vec::new();
    store
        .for_each(|i, bytes| {
            if i > 0 && records.len() < 50_000 {
                records.push(bytes.to_vec());
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    let limit = verify_limit(&records, &cloud);

    // 1. Two nodes, n missing on b.
    let a = NodeProc::start(&a_dir, &[]);
    let wire = Arc::new(AtomicU64::new(0));
    let port = relay(
        a.p2p
            .split("/p2p/")
            .next()
            .unwrap()
            .rsplit('/')
            .next()
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap(),
        wire.clone(),
    );
    let peer_id = a.p2p.split("/p2p/").nth(1).unwrap().to_owned();
    let t = Instant::now();
    let b = NodeProc::start(
        &b_dir,
        &[format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}")],
    );
    let total = n as u64 + 1;
    wait_until(
        "sync of the missing experiences",
        Duration::from_secs(600),
        || b.held() == total,
    );
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let bytes_ratio = wire.load(Ordering::Relaxed) as f64 / missing_bytes as f64;
    let trips = a.metric("lcloud_syncs_served_total") + b.metric("lcloud_syncs_served_total");
    let same = a.status()["root"] == b.status()["root"];
    drop((a, b));

    // 2. Five nodes: partition one, write on both sides, heal.
    let five: Vec<PathBuf> = (0..5).map(|i| base.path().join(format!("n{i}"))).collect();
    let genesis_bundle = base.path().join("g.bundle");
    let run = |dir: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&five[0], &["init", "--cloud", "five"]);
    run(&five[0], &["export", genesis_bundle.to_str().unwrap()]);
    for d in &five[1..] {
        run(d, &["join", genesis_bundle.to_str().unwrap()]);
    }
    let mut nodes: Vec<NodeProc> = Vec::new();
    for d in &five {
        let peers: Vec<String> = nodes.iter().map(|n| n.p2p.clone()).collect();
        nodes.push(NodeProc::start(d, &peers));
    }
    let write = |node: &NodeProc, i: usize| {
        let body = format!(r#"{{"ops":[{{"op":"incr","path":"/n/{i}","by":1}}]}}"#);
        http(&node.api, "POST", "/api/ops", &body);
    };
    let roots = |nodes: &[NodeProc]| -> Vec<String> {
        nodes
            .iter()
            .map(|n| n.get("/debug/state-hash").trim().to_owned())
            .collect()
    };
    for (i, node) in nodes.iter().enumerate() {
        write(node, i);
    }
    wait_until("five nodes converge", Duration::from_secs(60), || {
        roots(&nodes).windows(2).all(|w| w[0] == w[1])
    });
    http(&nodes[4].api, "POST", "/debug/isolate", r#"{"on":true}"#);
    std::thread::sleep(Duration::from_millis(300));
    let writes = if quick() { 20 } else { 200 };
    for i in 0..writes {
        write(&nodes[i % 4], i);
        write(&nodes[4], 1000 + i);
    }
    std::thread::sleep(Duration::from_millis(300));
    let healed = Instant::now();
    http(&nodes[4].api, "POST", "/debug/isolate", r#"{"on":false}"#);
    wait_until(
        "five nodes converge after healing",
        Duration::from_secs(60),
        || roots(&nodes).windows(2).all(|w| w[0] == w[1]),
    );
    let heal = healed.elapsed().as_secs_f64();
    drop(nodes);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!("limit: ZIP-215 batch-1024 verification on {cores} cores: {limit:.0} experiences/s");
    println!("| measure | result | ratio | target |");
    println!("|---|---:|---:|---|");
    println!(
        "| two nodes, {n} experiences missing on one: experiences/s | {rate:.0} | {:.2} of the {cores}-core verify limit | ≥ 0.60: {} |",
        rate / limit,
        if rate / limit >= 0.60 {
            "met"
        } else {
            "**missed**"
        }
    );
    println!(
        "| bytes on the wire ÷ bytes of the missing experiences | {bytes_ratio:.3} | | ≤ 1.02: {} |",
        if bytes_ratio <= 1.02 {
            "met"
        } else {
            "**missed**"
        }
    );
    println!(
        "| sync round trips (summary exchanges) | {trips} | | 1: {} |",
        if trips == 1 { "met" } else { "**missed**" }
    );
    println!("| same state root after the sync | {same} | | true |");
    println!(
        "| five nodes: heal to identical roots ({} writes on each side) | {heal:.2} s | | ≤ 1 s + transfer: {} |",
        writes,
        if heal <= 1.0 { "met" } else { "see transfer" }
    );
    println!(
        "\n(wall {secs:.2} s for the two-node sync; {missing_bytes} bytes of experiences; command: cargo bench -p lcloud-cli --bench net{})",
        if quick() { " -- --quick" } else { "" }
    );
}
