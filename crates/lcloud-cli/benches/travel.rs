//! Time travel served by a node, beside the same command on a local store, in one run.
//!
//! `cargo bench -p lcloud-cli --bench travel` (N = 1 000 000; `-- --quick` for N = 100 000)
//!
//! 1. `lcloud state --at CLOCK` on a store of N one-op experiences (a writer's stream through
//!    the group committer), at 21 cuts spread over the history, median seconds per command;
//!    then `lcloud --node URL state --at CLOCK` at the same cuts against a node serving a
//!    copy of that store. Reported: both medians and their ratio (target ≤ 2).
//! 2. `lcloud --node URL log --graph --limit 1000` against a node holding 100 000 experiences
//!    of 20 nodes (each writing on what it has seen of the others), median of 11 (target
//!    < 0.1 s); beside it, the same page on the local store (which loads the history).
//! 3. The debugger (`/ui`) on that history in headless Chromium, when chromedriver is
//!    installed: when the first rows are drawn after the page begins loading (target < 1 s),
//!    and how long redrawing the rows on screen takes at each of 200 scroll positions.
//!
//! Each command is the real binary, its process started and ended: what a person types.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use lcloud_core::{Experience, Genesis, Op, Path as DocPath, Replica, Value};
use lcloud_store::{Committer, Identity, Store};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// A running `lcloud node run`, killed by pid when dropped.
struct NodeProc {
    child: Child,
    api: String,
}

impl NodeProc {
    fn start(dir: &Path) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .arg("--dir")
            .arg(dir)
            .args([
                "node",
                "run",
                "--api",
                "127.0.0.1:0",
                "--sync-every",
                "3600",
            ])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--token-rate", "0"])
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let api = loop {
            let line = lines.next().expect("node prints its API").unwrap();
            if let Some(a) = line.strip_prefix("api ") {
                break a.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        NodeProc { child, api }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lcloud ARGS…` (with `--dir DIR` or `--node URL --token-file DIR/admin.token`), which must
/// succeed; returns the seconds it took and its stdout.
fn timed(dir: &Path, node: Option<&str>, args: &[&str]) -> (f64, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lcloud"));
    match node {
        Some(url) => cmd
            .args(["--node", url, "--token-file"])
            .arg(dir.join("admin.token")),
        None => cmd.arg("--dir").arg(dir),
    };
    cmd.args(args)
        .env_remove("LCLOUD_DIR")
        .env_remove("LCLOUD_NODE");
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "lcloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8(out.stdout).unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["store.redb", "identity.key", "signed-seq"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

/// `n` one-op experiences of one writer, through the group committer (64 writers sharing
/// commits), in a new store in `dir`; returns the writer's node id, hex.
fn stream(dir: &Path, n: usize) -> String {
    let me = Identity::load_or_create(dir).unwrap();
    let id = me.id().to_hex();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("travel"));
    let store = Store::create(dir, &genesis).unwrap();
    let committer = Committer::start(store, me);
    let writers = 64;
    std::thread::scope(|s| {
        for w in 0..writers {
            let writer = committer.writer();
            s.spawn(move || {
                for i in 0..n / writers {
                    let k = w * (n / writers) + i;
                    let op = Op::Set {
                        path: DocPath::from(vec!["m".into(), format!("k{}", k % 1000)]),
                        value: Value::Int(k as i64),
                    };
                    writer.write(vec![op]).unwrap();
                }
            });
        }
    });
    committer.stop().close().unwrap();
    id
}

fn state_at(base: &Path, n: usize) {
    let dir = base.join("stream");
    let t = Instant::now();
    let author = stream(&dir, n);
    let n = n / 64 * 64;
    eprintln!(
        "wrote {n} one-op experiences in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cuts: Vec<String> = (1..=21)
        .map(|i| format!("{author}:{}", 2 + i * n / 22))
        .collect();
    let local: Vec<f64> = cuts
        .iter()
        .map(|c| timed(&dir, None, &["root", "--at", c]).0)
        .collect();
    let served = base.join("served");
    copy_store(&dir, &served);
    let t = Instant::now();
    let node = NodeProc::start(&served);
    // The node answers once it has loaded the history.
    let (_, root_now) = timed(&served, Some(&node.api), &["root"]);
    eprintln!(
        "the node loaded {n} experiences in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut remote = Vec::new();
    for c in &cuts {
        let (secs, root) = timed(&served, Some(&node.api), &["root", "--at", c]);
        let (_, here) = timed(&dir, None, &["root", "--at", c]);
        assert_eq!(root, here, "the node and the store agree at {c}");
        remote.push(secs);
    }
    assert_eq!(root_now, timed(&dir, None, &["root"]).1);
    let (l, r) = (median(local), median(remote));
    println!(
        "state --at, {n} experiences: local {:.1} ms, --node {:.1} ms (median of 21 cuts): {:.2} × (target ≤ 2)",
        l * 1e3,
        r * 1e3,
        r / l
    );
}

/// 100 000 experiences of `nodes` writers: each writes on everything the replica holds, in
/// turn, so every lane links to the others.
fn lanes(base: &Path, n: usize, nodes: usize) {
    let dir = base.join("lanes");
    let keys: Vec<ed25519_consensus::SigningKey> = (0..nodes)
        .map(|i| ed25519_consensus::SigningKey::from([i as u8 + 1; 32]))
        .collect();
    let t = Instant::now();
    let genesis = Experience::create_genesis(&keys[0], Genesis::open("lanes"));
    let mut replica = Replica::new(genesis.clone()).unwrap();
    for i in 0..n {
        let op = Op::Set {
            path: DocPath::from(vec!["m".into(), format!("k{}", i % 1000)]),
            value: Value::Int(i as i64),
        };
        replica.write(&keys[i % nodes], vec![op]).unwrap();
    }
    let mut store = Store::create(&dir, &genesis).unwrap();
    let mut local = store.load(&mut |_| {}).unwrap();
    let records: Vec<Vec<u8>> = replica
        .lattice()
        .iter()
        .skip(1)
        .map(|e| e.to_bytes())
        .collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    store.import(&mut local, &refs, &mut |_| {}).unwrap();
    drop(store);
    // The node needs an identity of its own; the history is the writers'.
    Identity::load_or_create(&dir).unwrap();
    eprintln!(
        "wrote {n} experiences of {nodes} nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let args = ["log", "--graph", "--limit", "1000"];
    let (local_secs, local_page) = timed(&dir, None, &args);
    let node = NodeProc::start(&dir);
    let mut remote = Vec::new();
    for _ in 0..11 {
        let (secs, page) = timed(&dir, Some(&node.api), &args);
        assert_eq!(page, local_page, "the node's page is the store's");
        remote.push(secs);
    }
    let r = median(remote);
    println!(
        "log --graph --limit 1000 of {n} experiences of {nodes} nodes: --node {:.1} ms (median of 11; target < 100 ms), local store {:.0} ms (loads the history)",
        r * 1e3,
        local_secs * 1e3
    );
    debugger(&dir, &node, n, nodes);
}

/// The debugger's page on that history in headless Chromium (when chromedriver is installed):
/// the first rows drawn after the page began loading (median of 5 loads), and the time to
/// draw the rows on screen at each of 200 scroll positions across the first pages.
fn debugger(dir: &Path, node: &NodeProc, n: usize, nodes: usize) {
    let Ok(port) =
        std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().unwrap().port())
    else {
        return;
    };
    let Ok(child) = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!(
            "debugger: not measured (no chromedriver; Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _driver = Kill(child);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 20, "chromedriver did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let page = format!("{}/ui#token={}", node.api, token.trim());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (paints, steps) = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]}),
        );
        let c = fantoccini::ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        let mut paints = Vec::new();
        for _ in 0..5 {
            c.goto("about:blank").await.unwrap();
            c.goto(&page).await.unwrap();
            let t = Instant::now();
            loop {
                let v = c.execute("return window.lcloudFirstPaint ?? null", vec![]).await.unwrap();
                if let Some(ms) = v.as_f64() {
                    paints.push(ms / 1e3);
                    break;
                }
                assert!(t.elapsed().as_secs() < 30, "the page drew nothing");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        // Scrolling: each step moves by 37 rows and redraws what is then on screen.
        let steps = c
            .execute(
                "const sc = document.getElementById('scroller'); const out = [];
                 for (let i = 0; i < 200; i++) { sc.scrollTop = (i * 37 % 900) * 24; const t = performance.now(); render(); out.push(performance.now() - t); }
                 return out;",
                vec![],
            )
            .await
            .unwrap();
        let steps: Vec<f64> = steps.as_array().unwrap().iter().filter_map(|v| v.as_f64()).map(|ms| ms / 1e3).collect();
        c.close().await.unwrap();
        (paints, steps)
    });
    let mut sorted = steps.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "debugger on {n} experiences of {nodes} nodes: first rows drawn {:.0} ms after the page began loading (median of 5; target < 1000 ms); a scroll step redraws in {:.1} ms median, {:.1} ms p99 (200 steps; a 60 Hz frame is 16.7 ms)",
        median(paints) * 1e3,
        median(steps) * 1e3,
        sorted[sorted.len() * 99 / 100] * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--quick") {
        eprintln!("(full sizes: 1 000 000 experiences; `-- --quick` for 100 000)");
    }
    let base = tempfile::tempdir().unwrap();
    let n = if quick() { 100_000 } else { 1_000_000 };
    state_at(base.path(), n);
    lanes(base.path(), if quick() { 20_000 } else { 100_000 }, 20);
}
