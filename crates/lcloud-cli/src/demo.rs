//! `lcloud demo`: the seed story on three real nodes: three `lcloud node run` daemons on
//! loopback, each with its own store on disk, syncing peer to peer over real sockets. Every
//! step runs this same `lcloud` binary, exactly as a person would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A node daemon started by the demo; stopped (SIGTERM, then kill) when dropped.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) api: String,
    pub(crate) p2p: String,
    /// The node's admin API token (from `DIR/admin.token`).
    pub(crate) token_file: String,
}

impl Daemon {
    pub(crate) fn start(exe: &PathBuf, dir: &PathBuf, peers: &[&str]) -> Result<Daemon> {
        let mut cmd = Command::new(exe);
        cmd.arg("--dir")
            .arg(dir)
            .args(["node", "run", "--api", "127.0.0.1:0", "--sync-every", "0.5"])
            // The demo cuts nodes off their peers through the isolation switch.
            .arg("--debug-api")
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.spawn().context("cannot start a node")?;
        let out = BufReader::new(child.stdout.take().context("stdout is piped")?);
        let (mut api, mut p2p) = (None, None);
        let mut lines = out.lines();
        while api.is_none() || p2p.is_none() {
            let Some(line) = lines.next().transpose()? else {
                bail!("a node stopped before it listened");
            };
            if let Some(a) = line.strip_prefix("api ") {
                api = Some(a.to_owned());
            } else if let Some(a) = line.strip_prefix("p2p ") {
                p2p = Some(a.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let token_file = dir.join(lcloud_store::tokens::ADMIN_FILE);
        Ok(Daemon {
            child,
            api: api.context("api address")?,
            p2p: p2p.context("p2p address")?,
            token_file: token_file.to_str().context("UTF-8")?.to_owned(),
        })
    }

    /// SIGTERM and wait: the node stops cleanly, losing nothing acknowledged.
    pub(crate) fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("a node did not stop within 10 s of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) struct Demo {
    pub(crate) exe: PathBuf,
    pub(crate) base: PathBuf,
}

impl Demo {
    pub(crate) fn run(&self, node: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .arg("--dir")
            .arg(self.base.join(node))
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .context("cannot run lcloud")?;
        if !out.status.success() {
            bail!(
                "`lcloud {}` on {node} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    pub(crate) fn say(&self, node: &str, args: &[&str]) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') || a.contains('"') {
                    format!("'{a}'")
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        println!("  {node:>5}$ lcloud {}", shown.join(" "));
        let out = self.run(node, args)?;
        for line in out.lines() {
            println!("         {line}");
        }
        Ok(out)
    }

    /// `lcloud --node URL ARGS…`, shown as a person would type it.
    pub(crate) fn remote(&self, name: &str, node: &Daemon, args: &[&str]) -> Result<String> {
        let mut full = vec![
            "--node",
            node.api.as_str(),
            "--token-file",
            &node.token_file,
        ];
        full.extend_from_slice(args);
        println!("  {name:>5}$ lcloud --node {} {}", node.api, args.join(" "));
        let out = self.run_anywhere(&full)?;
        for line in out.lines() {
            println!("         {line}");
        }
        Ok(out)
    }

    /// Like [`Demo::remote`] for a command that must fail (a rejected call, a refused write):
    /// prints why, and is an error only if the command succeeds.
    pub(crate) fn remote_refused(&self, name: &str, node: &Daemon, args: &[&str]) -> Result<()> {
        println!("  {name:>5}$ lcloud --node {} {}", node.api, args.join(" "));
        let out = Command::new(&self.exe)
            .args([
                "--node",
                node.api.as_str(),
                "--token-file",
                &node.token_file,
            ])
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .context("cannot run lcloud")?;
        if out.status.success() {
            bail!("`lcloud {}` should have been refused", args.join(" "));
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("         {line}");
        }
        Ok(())
    }

    pub(crate) fn remote_quiet(&self, node: &Daemon, args: &[&str]) -> Result<String> {
        let mut full = vec![
            "--node",
            node.api.as_str(),
            "--token-file",
            &node.token_file,
        ];
        full.extend_from_slice(args);
        self.run_anywhere(&full)
    }

    fn run_anywhere(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .context("cannot run lcloud")?;
        if !out.status.success() {
            bail!(
                "`lcloud {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Waits (up to 20 s) until these nodes report one root.
    pub(crate) fn converge(&self, nodes: &[(&str, &Daemon)]) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let roots: Vec<String> = nodes
                .iter()
                .map(|(_, n)| self.remote_quiet(n, &["root"]))
                .collect::<Result<_>>()?;
            if roots.windows(2).all(|w| w[0] == w[1]) {
                return Ok(roots[0].clone());
            }
            if Instant::now() > deadline {
                bail!("the nodes did not converge within 20 s: {roots:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Cuts a node off from every peer, or heals it, through its API.
    pub(crate) fn isolate(&self, node: &Daemon, on: bool) -> Result<()> {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let token = std::fs::read_to_string(&node.token_file).context("the node's token")?;
        agent
            .post(format!("{}/debug/isolate", node.api))
            .header("authorization", format!("Bearer {}", token.trim()))
            .send_json(serde_json::json!({ "on": on }))
            .context("the node's API refused /debug/isolate")?;
        Ok(())
    }

    pub(crate) fn roots(&self, nodes: &[&str]) -> Result<Vec<String>> {
        let mut roots = Vec::new();
        for n in nodes {
            let r = self.run(n, &["root"])?;
            println!("  {n:>5} root {}", &r[..16]);
            roots.push(r);
        }
        Ok(roots)
    }
}

pub fn run(base: Option<PathBuf>, story: String, keep: bool) -> Result<()> {
    let base = fresh_dir(base)?;
    if story == "contracts" {
        crate::demo_contracts::run(base.clone())?;
        return if keep {
            keep_debugger(&base, "alice")
        } else {
            Ok(())
        };
    }
    seed(base.clone())?;
    if keep {
        keep_debugger(&base, "alice")?;
    }
    Ok(())
}

/// Leaves `lcloud ui` running on `node`'s store (its output in `ui.out` there) and prints the
/// page's address and how to stop it.
fn keep_debugger(base: &std::path::Path, node: &str) -> Result<()> {
    let dir = base.join(node);
    let out = dir.join("ui.out");
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--dir")
        .arg(&dir)
        .arg("ui")
        .env_remove("LCLOUD_NODE")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let started = Instant::now();
    let page = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("ui ")) {
            break line[3..].to_owned();
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            bail!("the debugger's node did not start (see {})", out.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    println!(
        "
debugger: {page}
          (a node serving reads only on {node}'s store; stop it with `kill {}`)",
        child.id()
    );
    Ok(())
}

/// The demo's directory: the one given (empty or new), else a new temporary one.
fn fresh_dir(base: Option<PathBuf>) -> Result<PathBuf> {
    let base = match base {
        Some(b) => b,
        None => std::env::temp_dir().join(format!("lcloud-demo-{}", std::process::id())),
    };
    if base.exists() && std::fs::read_dir(&base)?.next().is_some() {
        bail!(
            "{} is not empty: give an empty or new directory",
            base.display()
        );
    }
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

fn seed(base: PathBuf) -> Result<()> {
    let started = Instant::now();
    let d = Demo {
        exe: std::env::current_exe()?,
        base: base.clone(),
    };
    let all = ["alice", "bob", "carol"];
    println!(
        "λCLOUD demo: three nodes on this machine, each with its own signed chain and its own\nstore in {}, syncing peer to peer over TCP (libp2p: Noise, Yamux) on loopback\n",
        base.display()
    );

    println!("1. alice creates a cloud; bob and carol join from its genesis");
    d.say(
        "alice",
        &["init", "--open", "--alias", "alice", "--cloud", "demo"],
    )?;
    let genesis = base.join("genesis.bundle");
    d.run("alice", &["export", genesis.to_str().context("UTF-8")?])?;
    for n in ["bob", "carol"] {
        d.say(
            n,
            &["join", genesis.to_str().context("UTF-8")?, "--alias", n],
        )?;
    }
    // Aliases are local: each node learns the others' names.
    let ids: Vec<String> = all
        .iter()
        .map(|n| d.run(n, &["id"]))
        .collect::<Result<_>>()?;
    for n in all {
        for (other, id) in all.iter().zip(&ids) {
            if *other != n {
                d.run(n, &["alias", other, id])?;
            }
        }
    }

    println!("\n2. the three nodes start (`lcloud node run`) and connect to each other");
    let dir = |n: &str| base.join(n);
    let alice = Daemon::start(&d.exe, &dir("alice"), &[])?;
    let bob = Daemon::start(&d.exe, &dir("bob"), &[&alice.p2p])?;
    let carol = Daemon::start(&d.exe, &dir("carol"), &[&alice.p2p, &bob.p2p])?;
    let nodes = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    for (n, node) in &nodes {
        println!(
            "  {n:>5}: HTTP API {}  p2p {}",
            node.api,
            short_addr(&node.p2p)
        );
    }
    println!(
        "  the API asks for a token: each node's admin token is in its directory's admin.token\n  \
         (`lcloud --node URL --token-file DIR/admin.token …`, or `LCLOUD_TOKEN=… curl -H \"Authorization: Bearer $LCLOUD_TOKEN\" URL/api/state`;\n  \
         `lcloud --dir DIR token create --scope read` makes a narrower one)"
    );

    println!("\n3. each node writes (through its API: `lcloud --node URL …`); gossip spreads it");
    d.remote("alice", &alice, &["set", "/title", "\"hello from alice\""])?;
    d.remote("bob", &bob, &["incr", "/visits"])?;
    d.remote("carol", &carol, &["add", "/tags", "\"seed\""])?;
    let root = d.converge(&nodes)?;
    println!(
        "  converged: one state root on every node ({})",
        &root[..16]
    );
    let before = d.remote_quiet(&alice, &["clock"])?;
    println!("  the vector clock now: {before}");

    println!("\n4. carol is cut off (POST /debug/isolate); both sides keep writing");
    d.isolate(&carol, true)?;
    d.remote("alice", &alice, &["set", "/title", "\"alice's title\""])?;
    d.remote("bob", &bob, &["incr", "/visits", "10"])?;
    d.remote("carol", &carol, &["set", "/title", "\"carol's title\""])?;
    d.remote("carol", &carol, &["incr", "/visits", "100"])?;
    let ab = d.converge(&nodes[..2])?;
    let c = d.remote_quiet(&carol, &["root"])?;
    println!(
        "  alice and bob agree ({}), carol is on her own branch ({})",
        &ab[..16],
        c != ab
    );

    println!("\n5. the partition heals: the nodes reconnect, sync what each lacks, and converge");
    let healed = Instant::now();
    d.isolate(&carol, false)?;
    let root = d.converge(&nodes)?;
    println!(
        "  converged in {:.1} s: one state root on every node ({})",
        healed.elapsed().as_secs_f64(),
        &root[..16]
    );
    d.remote("bob", &bob, &["state"])?;

    println!("\n6. the nodes stop cleanly (SIGTERM); their stores keep everything");
    for (n, node) in [("alice", alice), ("bob", bob), ("carol", carol)] {
        node.stop()?;
        println!("  {n:>5} stopped");
    }
    println!("  the concurrent titles are both kept; one wins deterministically everywhere:");
    d.say("bob", &["conflicts", "/title"])?;

    println!("\n7. time travel to the clock before the partition ({before})");
    d.say("carol", &["state", "--at", &before])?;

    println!("\n8. one node's chain alone (carol), and the whole history, one lane per node");
    d.say("alice", &["log", "--node", "carol"])?;
    d.say("alice", &["log", "--graph"])?;

    println!("\n9. audit: every hash, signature and link, and the state root");
    d.say("carol", &["verify"])?;
    let roots = d.roots(&all)?;
    assert_same(&roots)?;

    println!(
        "\nsummary: 3 nodes over real sockets, writes on both sides of a partition, healed and\nconverged to one root {} in {:.1} s",
        &roots[0][..16],
        started.elapsed().as_secs_f64()
    );
    println!(
        "explore:  {exe} --dir {dir} node run --api 127.0.0.1:7400\n          then curl -H \"Authorization: Bearer $(cat {dir}/admin.token)\" http://127.0.0.1:7400/api/state\n          (also /api/events, /metrics; /api/openapi.json needs no token)\n          or {exe} --dir {dir} log --graph   (also bob, carol; try diff, forks)\n          or {exe} --dir {dir} ui   (the time-travel debugger in a browser; `lcloud demo --keep` leaves it running)",
        exe = d.exe.display(),
        dir = base.join("alice").display()
    );
    println!("guarantee: strong eventual consistency and causal consistency, not linearizability");
    Ok(())
}

pub(crate) fn short_addr(p2p: &str) -> &str {
    p2p.split("/p2p/").next().unwrap_or(p2p)
}

pub(crate) fn assert_same(roots: &[String]) -> Result<()> {
    if roots.windows(2).any(|w| w[0] != w[1]) {
        bail!("the nodes did not converge: {roots:?}");
    }
    Ok(())
}
