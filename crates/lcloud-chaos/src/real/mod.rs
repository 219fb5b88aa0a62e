//! The real-process backend: `lcloud node run` processes, one per Linux network namespace,
//! joined by veth pairs to a bridge in a namespace of their own; the harness reaches their
//! HTTP APIs through one more veth on that bridge. Clients write through the APIs and the
//! history records what they were told; faults are nftables DROP partitions (isolate one,
//! halves, one way), lossy links (nft `numgen`), `kill -9` and restart, and SIGSTOP/SIGCONT
//! pauses. Then the final heal, convergence, final reads, checks.
//!
//! The cloud is members-only (every node a member from the genesis), so its checkpoints become
//! final once every member has attested them, and the nodes of [`COMPACTING`] run with
//! `--retain checkpoint`: they compact their stores below final checkpoints under the same
//! faults. After convergence the run waits for each of them to have compacted, then checks
//! that every node, compacted or not, reports the same root.
//!
//! Needs root and `ip`/`nft`. Traffic stays inside the namespaces it creates (no route leads
//! out); everything it starts it stops by process id, and it deletes what it created.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check::{self, CounterReport, SetReport};
use crate::history::{Event, F, Kind};

mod api;
mod net;
mod procs;

use api::*;
use net::*;
use procs::*;

/// The run's subnet, `10.233.X` with X from the process id, so that two runs at once (a soak
/// and a CI tier, say) do not both claim the harness's address on the host.
fn subnet_of_run() -> &'static str {
    static NET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NET.get_or_init(|| format!("10.233.{}", 1 + std::process::id() % 250))
}
const API_PORT: u16 = 7400;
/// The nodes that keep only what their final checkpoints need (`--retain checkpoint`).
pub const COMPACTING: [usize; 2] = [2, 3];
/// How long after convergence the compacting nodes may take to compact.
const COMPACT_WAIT: Duration = Duration::from_secs(30);
const P2P_PORT: u16 = 7401;

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `lcloud` binary.
    pub lcloud: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Length of the write phase.
    pub seconds: u64,
    /// Faults during the write phase.
    pub faults: usize,
    /// Writes per second each node's client aims for (0: as fast as the node answers).
    pub rate: f64,
    /// Seed for the fault schedule.
    pub seed: u64,
}

/// What the run found.
#[derive(Debug)]
pub struct Outcome {
    /// Nodes.
    pub nodes: usize,
    /// The clients' history.
    pub history: Vec<Event>,
    /// Set checker.
    pub set: SetReport,
    /// Counter checker.
    pub counter: CounterReport,
    /// Same heads and root everywhere at the end.
    pub converged: bool,
    /// Seconds from the final heal until converged.
    pub t_conv: f64,
    /// Faults applied, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Peak resident memory of each node process (MiB), the largest seen.
    pub peak_rss_mib: f64,
    /// Experiences each node held at the end (the most any node reported).
    pub experiences: usize,
    /// Nodes that ran with a skewed clock (libfaketime).
    pub skewed: usize,
    /// Writes the disk-full node acknowledged after its space was last freed (`None`: the
    /// disk never filled).
    pub resumed_after_full: Option<usize>,
    /// Faults scheduled.
    pub fault_count: usize,
    /// For each heal during the run, seconds until every node held what any node held at
    /// the heal (writes go on meanwhile), sorted; a heal not caught up within [`HEAL_WAIT`]
    /// counts as infinitely slow, so it fails any bound on the quantiles.
    pub heal_times: Vec<f64>,
    /// Heals not caught up within [`HEAL_WAIT`].
    pub heals_timed_out: usize,
    /// Every node served the same fork proofs at the end.
    pub forks_identical: bool,
    /// Stores that failed `lcloud verify` after the run (DAG integrity), with the reason.
    pub verify_failures: Vec<String>,
    /// For each node of [`COMPACTING`]: the checkpoint its store was compacted at, once
    /// converged (`None`: it never compacted within [`COMPACT_WAIT`]).
    pub compacted: Vec<(usize, Option<u64>)>,
    /// After the compactions, every node reported one root.
    pub same_root_after_compaction: bool,
}

impl Outcome {
    /// The `q` quantile of the heal times (0 when none was measured).
    pub fn heal_quantile(&self, q: f64) -> f64 {
        quantile(&self.heal_times, q)
    }

    /// Nothing lost, unexpected or duplicated; counters in bounds; converged; and, when the
    /// run had room for them (3 faults or more), a node ran with a skewed clock and the
    /// disk-full node acknowledged writes again after its space was freed.
    pub fn valid(&self) -> bool {
        let extra = self.fault_count < 3
            || (self.skewed > 0 && self.resumed_after_full.is_some_and(|n| n > 0));
        self.set.valid()
            && self.counter.valid()
            && self.converged
            && extra
            && self.forks_identical
            && self.verify_failures.is_empty()
            && self.compacted.iter().all(|(_, d)| d.is_some())
            && self.same_root_after_compaction
    }
}

/// A heal during the run and how long until every node held what any node held at the heal.
#[derive(Clone)]
struct Heal {
    at: Instant,
    target: BTreeMap<String, u64>,
    took: Option<f64>,
    /// Not caught up within [`HEAL_WAIT`]: no longer measured.
    timed_out: bool,
}

/// The `q` quantile of sorted `times` (0 when there are none).
fn quantile(times: &[f64], q: f64) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len());
    times[i - 1]
}

/// The heal times so far, sorted (a timed-out heal as infinity), and how many timed out.
fn heal_stats(heals: &Mutex<Vec<Heal>>) -> (Vec<f64>, usize) {
    let hs = heals.lock().expect("not poisoned");
    let mut times: Vec<f64> = hs
        .iter()
        .filter_map(|h| {
            if h.timed_out {
                Some(f64::INFINITY)
            } else {
                h.took
            }
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times, hs.iter().filter(|h| h.timed_out).count())
}

/// How long the next fault waits for a heal to be measured. A heal not caught up by then is
/// counted as timed out (infinitely slow), never dropped from the statistics.
pub const HEAL_WAIT: Duration = Duration::from_secs(10);

/// How often a run prints where it is (to stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Runs the real-process tier. `Err` when it cannot run here (no root, no `ip netns`).
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let net = Net::create(cfg.nodes)?;
    let base = std::env::temp_dir().join(format!("lcloud-chaos-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mut dirs: Vec<PathBuf> = (1..=cfg.nodes)
        .map(|i| base.join(format!("n{i}")))
        .collect();
    let lcloud = |dir: &Path, args: &[&str]| -> Result<(), String> {
        let out = Command::new(&cfg.lcloud)
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    };
    // Every node a member from the genesis: each makes its identity first.
    let mut members = Vec::new();
    for d in &dirs[1..] {
        let out = Command::new(&cfg.lcloud)
            .arg("--dir")
            .arg(d)
            .args(["id", "--json"])
            .env_remove("LCLOUD_DIR")
            .output()
            .map_err(|e| e.to_string())?;
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("`lcloud id --json` printed no JSON: {e}"))?;
        let id = j["node"]
            .as_str()
            .ok_or("`lcloud id --json` named no node")?;
        members.extend(["--member".to_owned(), id.to_owned()]);
    }
    let mut init = vec!["init", "--cloud", "chaos"];
    init.extend(members.iter().map(String::as_str));
    lcloud(&dirs[0], &init)?;
    let bundle = base.join("genesis.bundle");
    lcloud(&dirs[0], &["export", bundle.to_str().ok_or("utf-8")?])?;
    for d in &dirs[1..] {
        lcloud(d, &["join", bundle.to_str().ok_or("utf-8")?])?;
    }
    // The last node's directory is a small tmpfs of its own, to be filled (disk full).
    let full_node = cfg.nodes;
    std::fs::create_dir_all(&dirs[full_node - 1]).map_err(|e| e.to_string())?;
    let tmpfs = Tmpfs::mount(&dirs[full_node - 1].with_extension("tmpfs"), tmpfs_mib(cfg))?;
    copy_dir(&dirs[full_node - 1], &tmpfs.0)?;
    dirs[full_node - 1] = tmpfs.0.clone();
    let faketime = faketime();
    let mut skewed: BTreeSet<usize> = BTreeSet::new();
    let mut full_ended: Option<Instant> = None;
    let procs: Arc<Mutex<Vec<Proc>>> = Arc::new(Mutex::new(
        (1..=cfg.nodes)
            .map(|i| start(cfg, &net, &dirs[i - 1], i, None))
            .collect(),
    ));
    // Wait for every API.
    let t = Instant::now();
    while (1..=cfg.nodes).any(|i| http(i, "GET", "/api/root", "").is_err()) {
        if t.elapsed() > Duration::from_secs(20) {
            return Err("the nodes' APIs did not come up within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let heals: Arc<Mutex<Vec<Heal>>> = Arc::new(Mutex::new(Vec::new()));
    let measuring = Arc::new(AtomicBool::new(true));
    let measurer = {
        let (heals, measuring, nodes) = (heals.clone(), measuring.clone(), cfg.nodes);
        std::thread::spawn(move || {
            while measuring.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let open = heals
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .any(|h| h.took.is_none() && !h.timed_out);
                if !open {
                    continue;
                }
                let clocks: Option<Vec<BTreeMap<String, u64>>> =
                    (1..=nodes).map(clock_of).collect();
                let Some(clocks) = clocks else { continue };
                let now = Instant::now();
                for h in heals.lock().expect("not poisoned").iter_mut() {
                    if h.took.is_none()
                        && !h.timed_out
                        && clocks.iter().all(|c| dominates(c, &h.target))
                    {
                        h.took = Some(now.duration_since(h.at).as_secs_f64());
                    }
                }
            }
        })
    };
    let history: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_element = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (1..=cfg.nodes)
        .map(|i| {
            let (history, stop, next_element) =
                (history.clone(), stop.clone(), next_element.clone());
            let period = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
            std::thread::spawn(move || {
                let mut k = 0u64;
                let mut due = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(period) = period {
                        // Paced, without bursts to make up for slow answers: while its node
                        // answers slower than the rate, a client writes as often as it answers.
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        due = (due + period).max(Instant::now());
                    }
                    k += 1;
                    let (f, value, body) = if k.is_multiple_of(2) {
                        let e = next_element.fetch_add(1, Ordering::Relaxed) as i64;
                        (
                            F::Add,
                            e,
                            format!(r#"{{"ops":[{{"op":"add","path":"/s","value":{e}}}]}}"#),
                        )
                    } else {
                        (
                            F::Incr,
                            1,
                            r#"{"ops":[{"op":"incr","path":"/c","by":1}]}"#.to_owned(),
                        )
                    };
                    let time = started.elapsed().as_nanos() as u64;
                    let ev = |kind| Event {
                        kind,
                        process: i as u32,
                        f,
                        value,
                        time: started.elapsed().as_nanos() as u64,
                    };
                    history.lock().expect("not poisoned").push(Event {
                        kind: Kind::Invoke,
                        process: i as u32,
                        f,
                        value,
                        time,
                    });
                    let kind = match http(i, "POST", "/api/ops", &body) {
                        Ok((200, _)) => Kind::Ok,
                        // A refusal with a reason: nothing was written.
                        Ok((code, _)) if (400..500).contains(&code) => Kind::Fail,
                        Ok(_) => Kind::Info,
                        // Never reached the node: definitely not applied.
                        Err(false) => Kind::Fail,
                        Err(true) => Kind::Info,
                    };
                    history.lock().expect("not poisoned").push(ev(kind));
                    if kind != Kind::Ok {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    // Faults.
    let mut rng = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut below = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut peak = 0.0f64;
    let gap = Duration::from_millis(cfg.seconds * 1000 / cfg.faults.max(1) as u64);
    let mut paused: BTreeSet<usize> = BTreeSet::new();
    let faults_from = Instant::now();
    let mut reported = Instant::now();
    for f in 0..cfg.faults {
        if crate::interrupt::interrupted() {
            break;
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            let (times, timed_out) = heal_stats(&heals);
            let q99 = quantile(&times, 0.99);
            let writes = history
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|e| e.kind == Kind::Ok)
                .count();
            eprintln!(
                "real: {:.0}/{} s, {f}/{} faults, {writes} writes acknowledged, heals {} (p99 {q99:.1}s, {timed_out} not caught up in {} s), peak RSS per node {peak:.0} MiB",
                started.elapsed().as_secs_f64(),
                cfg.seconds,
                cfg.faults,
                times.len(),
                HEAL_WAIT.as_secs(),
            );
        }
        // On a fixed timeline; a heal may have taken longer (it waits to be measured).
        let due = faults_from + gap * (f as u32 + 1);
        crate::interrupt::sleep(due.saturating_duration_since(Instant::now()));
        for p in procs.lock().expect("not poisoned").iter() {
            if let Some(pid) = pid(p) {
                peak = peak.max(peak_rss_mib(pid));
            }
        }
        let n = cfg.nodes;
        let i = 1 + below(n as u64) as usize;
        let skew_now = f == cfg.faults / 3 && faketime.is_some();
        let full_now = f == cfg.faults / 2 || f == 2 * cfg.faults / 3;
        if skew_now || full_now {
            net.heal();
        }
        if skew_now {
            // Clock skew: node i stops (SIGTERM) and comes back with a skewed clock, which it
            // keeps (restarts included) until the end.
            let lib = faketime.as_deref();
            let mut ps = procs.lock().expect("not poisoned");
            ps[i - 1].stop();
            paused.remove(&i);
            skewed.insert(i);
            ps[i - 1] = start(cfg, &net, &dirs[i - 1], i, lib);
            drop(ps);
            *faults
                .entry("clock skew (libfaketime -2h x1.5)")
                .or_default() += 1;
            continue;
        }
        if full_now {
            // Disk full on the tmpfs node for a moment, then the space is freed.
            let filler = dirs[full_node - 1].join("filler");
            fill(&filler);
            std::thread::sleep(Duration::from_millis(1500));
            let _ = std::fs::remove_file(&filler);
            full_ended = Some(Instant::now());
            *faults
                .entry("disk full (tmpfs filled, then freed)")
                .or_default() += 1;
            continue;
        }
        let kind = below(8);
        match kind {
            6 => {
                // One way: i hears nobody; everybody hears i.
                net.heal();
                let others: Vec<usize> = (1..=n).filter(|j| *j != i).collect();
                net.drop_from(i, &others);
                *faults.entry("partition (one way)").or_default() += 1;
            }
            7 => {
                net.heal();
                net.lossy(20);
                *faults.entry("lossy links (20%, nft numgen)").or_default() += 1;
            }
            0 => {
                net.heal();
                let all: Vec<usize> = (1..=n).collect();
                net.drop_from(i, &all);
                for j in 1..=n {
                    if j != i {
                        net.drop_from(j, &[i]);
                    }
                }
                *faults.entry("partition (isolate one)").or_default() += 1;
            }
            1 => {
                net.heal();
                let half = n / 2;
                let (a, b): (Vec<usize>, Vec<usize>) = (1..=n).partition(|j| *j <= half);
                for x in &a {
                    net.drop_from(*x, &b);
                }
                for y in &b {
                    net.drop_from(*y, &a);
                }
                *faults.entry("partition (halves)").or_default() += 1;
            }
            2 | 3 => {
                net.heal();
                // What any node held at the heal: every node must come to hold it.
                let target = frontier(cfg.nodes);
                let at = Instant::now();
                let k = {
                    let mut hs = heals.lock().expect("not poisoned");
                    hs.push(Heal {
                        at,
                        target,
                        took: None,
                        timed_out: false,
                    });
                    hs.len() - 1
                };
                // The next fault waits until this heal is measured (at most HEAL_WAIT).
                while at.elapsed() < HEAL_WAIT
                    && !crate::interrupt::interrupted()
                    && heals.lock().expect("not poisoned")[k].took.is_none()
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                {
                    let mut hs = heals.lock().expect("not poisoned");
                    if hs[k].took.is_none() {
                        hs[k].timed_out = true;
                    }
                }
                *faults.entry("heal").or_default() += 1;
                continue;
            }
            4 => {
                // kill -9, restart a moment later.
                let mut ps = procs.lock().expect("not poisoned");
                if let Some(c) = ps[i - 1].child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                ps[i - 1].child = None;
                drop(ps);
                paused.remove(&i);
                std::thread::sleep(Duration::from_millis(300 + below(700)));
                let lib = faketime.as_deref().filter(|_| skewed.contains(&i));
                let p = start(cfg, &net, &dirs[i - 1], i, lib);
                procs.lock().expect("not poisoned")[i - 1] = p;
                *faults.entry("kill -9 and restart").or_default() += 1;
            }
            _ => {
                // Pause for a moment.
                let ps = procs.lock().expect("not poisoned");
                if let Some(pid) = pid(&ps[i - 1]) {
                    let _ = Command::new("kill")
                        .args(["-STOP", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                    drop(ps);
                    std::thread::sleep(Duration::from_millis(300 + below(1200)));
                    let _ = Command::new("kill")
                        .args(["-CONT", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
                *faults.entry("pause (SIGSTOP/SIGCONT)").or_default() += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    measuring.store(false, Ordering::Relaxed);
    let _ = measurer.join();
    for c in clients {
        let _ = c.join();
    }
    if crate::interrupt::interrupted() {
        drop(procs);
        drop(net);
        drop(tmpfs);
        let _ = std::fs::remove_dir_all(&base);
        return Err(
            "interrupted by a signal; every node, namespace and mount it started is gone".into(),
        );
    }
    // The final heal.
    net.heal();
    let healed = Instant::now();
    let mut converged = false;
    let mut t_conv = f64::NAN;
    let mut last_report = 0;
    let mut experiences = 0;
    while healed.elapsed() < Duration::from_secs(60) {
        let status: Vec<Option<serde_json::Value>> = (1..=cfg.nodes).map(status_of).collect();
        for j in status.iter().flatten() {
            experiences = experiences.max(j["experiences"].as_u64().unwrap_or(0) as usize);
        }
        if let Some(all) = status.into_iter().collect::<Option<Vec<_>>>()
            && agree(&all)
        {
            converged = true;
            t_conv = healed.elapsed().as_secs_f64();
            break;
        }
        let secs = healed.elapsed().as_secs();
        if secs >= 3 && secs != last_report {
            // Slow to converge: say where each node is (experiences, peers, parked, errors).
            last_report = secs;
            let line: Vec<String> = (1..=cfg.nodes)
                .map(|i| match http(i, "GET", "/api/status", "") {
                    Ok((_, b)) => {
                        let j: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
                        format!(
                            "n{i}: {} exps, {} peers, {} parked{}",
                            j["experiences"],
                            j["peers"].as_array().map_or(0, Vec::len),
                            j["parked"],
                            j["store_error"]
                                .as_str()
                                .map(|e| format!(", store error {e}"))
                                .unwrap_or_default()
                        )
                    }
                    Err(_) => format!("n{i}: no answer"),
                })
                .collect();
            println!("real: {secs} s after the final heal: {}", line.join("; "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The compacting nodes compact once a checkpoint is final and enough history lies
    // above their last compaction; then every node must still report one root.
    let compact_wait = Instant::now();
    let compaction_of = |i: usize| status_of(i)?["finality"]["compacted"]["depth"].as_u64();
    let mut compacted: Vec<(usize, Option<u64>)> = COMPACTING
        .iter()
        .filter(|i| **i <= cfg.nodes)
        .map(|i| (*i, None))
        .collect();
    while converged && compact_wait.elapsed() < COMPACT_WAIT {
        for (i, depth) in compacted.iter_mut() {
            *depth = depth.or_else(|| compaction_of(*i));
        }
        if compacted.iter().all(|(_, d)| d.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Attestations still flow (and settle what they make final), so the roots are compared
    // once every node holds the same heads again.
    let same_root_after_compaction = converged && {
        let t = Instant::now();
        loop {
            let status: Option<Vec<serde_json::Value>> = (1..=cfg.nodes).map(status_of).collect();
            if status.is_some_and(|s| agree(&s)) {
                break true;
            }
            if t.elapsed() > COMPACT_WAIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Final reads.
    let read = |i: usize, path: &str| -> serde_json::Value {
        http(i, "GET", &format!("/api/state?path={path}"), "")
            .ok()
            .and_then(|(code, b)| (code == 200).then_some(b))
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let sets: Vec<Vec<i64>> = (1..=cfg.nodes)
        .map(|i| {
            read(i, "/s")
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
                .unwrap_or_default()
        })
        .collect();
    let counters: Vec<i64> = (1..=cfg.nodes)
        .map(|i| read(i, "/c").as_i64().unwrap_or(0))
        .collect();
    for p in procs.lock().expect("not poisoned").iter() {
        if let Some(pid) = pid(p) {
            peak = peak.max(peak_rss_mib(pid));
        }
    }
    // Fork proofs: the same on every node (none, with honest writers).
    let forks: Vec<String> = (1..=cfg.nodes)
        .map(|i| http(i, "GET", "/api/forks", "").map_or_else(|_| "no answer".into(), |(_, b)| b))
        .collect();
    let forks_identical = forks.iter().all(|f| *f == forks[0] && f != "no answer");
    // DAG integrity: stop every node (SIGTERM) and verify each store offline (every hash,
    // signature and link, and the persisted state root against a replay).
    {
        for p in procs.lock().expect("not poisoned").iter_mut() {
            p.stop();
        }
    }
    let mut verify_failures = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        if let Err(e) = lcloud(d, &["verify"]) {
            verify_failures.push(format!("n{}: {e}", i + 1));
        }
    }
    let (heal_times, heals_timed_out) = heal_stats(&heals);
    let history = history.lock().expect("not poisoned").clone();
    // Writes the disk-full node acknowledged after its space was freed (writing resumed).
    let resumed_after_full = full_ended.map(|t| {
        let since = t.duration_since(started).as_nanos() as u64;
        history
            .iter()
            .filter(|e| e.kind == Kind::Ok && e.process == full_node as u32 && e.time >= since)
            .count()
    });
    let set = check::set_full(&history, &sets, &BTreeMap::new());
    let counter = check::counter(&history, &counters);
    drop(procs);
    drop(net);
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&base);
    Ok(Outcome {
        nodes: cfg.nodes,
        history,
        set,
        counter,
        converged,
        t_conv,
        faults,
        peak_rss_mib: peak,
        experiences,
        skewed: skewed.len(),
        resumed_after_full,
        fault_count: cfg.faults,
        heal_times,
        heals_timed_out,
        forks_identical,
        verify_failures,
        compacted,
        same_root_after_compaction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heal(took: Option<f64>, timed_out: bool) -> Heal {
        Heal {
            at: Instant::now(),
            target: BTreeMap::new(),
            took,
            timed_out,
        }
    }

    #[test]
    fn a_heal_that_timed_out_counts_as_infinitely_slow() {
        let mut heals: Vec<Heal> = (1..=99)
            .map(|i| heal(Some(i as f64 / 100.0), false))
            .collect();
        let (times, timed_out) = heal_stats(&Mutex::new(heals.clone()));
        assert_eq!((times.len(), timed_out), (99, 0));
        assert_eq!(quantile(&times, 0.5), 0.5);
        assert_eq!(quantile(&times, 1.0), 0.99);
        // One heal of a hundred never caught up: the maximum is infinite, p99 still finite.
        heals.push(heal(None, true));
        let (times, timed_out) = heal_stats(&Mutex::new(heals));
        assert_eq!((times.len(), timed_out), (100, 1));
        assert_eq!(quantile(&times, 0.99), 0.99);
        assert!(quantile(&times, 1.0).is_infinite());
        // Two of a hundred: p99 is infinite, so any bound on it fails.
        let mut heals: Vec<Heal> = (1..=98)
            .map(|i| heal(Some(i as f64 / 100.0), false))
            .collect();
        heals.extend([heal(None, true), heal(None, true)]);
        let (times, _) = heal_stats(&Mutex::new(heals));
        assert!(quantile(&times, 0.99) > 5.0);
        // A heal still open (neither measured nor timed out) is not counted.
        let (times, timed_out) = heal_stats(&Mutex::new(vec![heal(None, false)]));
        assert_eq!(
            (times.len(), timed_out, quantile(&times, 0.99)),
            (0, 0, 0.0)
        );
    }
}
