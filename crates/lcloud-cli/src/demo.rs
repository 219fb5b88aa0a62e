//! `lcloud demo`: the seed story on three real nodes with real stores on disk, merging
//! offline through bundles. Every step runs this same `lcloud` binary against a node's
//! directory, exactly as a person would.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

struct Demo {
    exe: PathBuf,
    base: PathBuf,
}

impl Demo {
    fn run(&self, node: &str, args: &[&str]) -> Result<String> {
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

    fn say(&self, node: &str, args: &[&str]) -> Result<String> {
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

    /// `from` exports a bundle and `to` imports it.
    fn send(&self, from: &str, to: &str) -> Result<()> {
        let file = self.base.join(format!("{from}-to-{to}.bundle"));
        let f = file.to_str().context("path is UTF-8")?;
        self.run(from, &["export", f])?;
        let report = self.run(to, &["import", f])?;
        let first = report.lines().next().unwrap_or_default();
        println!(
            "  {from} → {to}: {}",
            first.split(": ").nth(1).unwrap_or(first)
        );
        Ok(())
    }

    fn roots(&self, nodes: &[&str]) -> Result<Vec<String>> {
        let mut roots = Vec::new();
        for n in nodes {
            let r = self.run(n, &["root"])?;
            println!("  {n:>5} root {}", &r[..16]);
            roots.push(r);
        }
        Ok(roots)
    }
}

pub fn run(base: Option<PathBuf>) -> Result<()> {
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
    let d = Demo {
        exe: std::env::current_exe()?,
        base: base.clone(),
    };
    let all = ["alice", "bob", "carol"];
    println!(
        "λCLOUD demo: three nodes, each with its own signed chain and its own store in {}\n",
        base.display()
    );

    println!("1. alice creates a cloud; bob and carol join from its genesis");
    d.say("alice", &["init", "--alias", "alice", "--cloud", "demo"])?;
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
    println!("  (each node names the others with `lcloud alias NAME NODEID`)");

    println!("\n2. each node writes, then they exchange bundles (offline merge)");
    d.say("alice", &["set", "/title", "\"hello from alice\""])?;
    d.say("bob", &["incr", "/visits"])?;
    d.say("carol", &["add", "/tags", "\"seed\""])?;
    for from in all {
        for to in all {
            if from != to {
                d.send(from, to)?;
            }
        }
    }
    let roots = d.roots(&all)?;
    assert_same(&roots)?;
    let before = d.run("alice", &["clock"])?;
    println!("  one state root everywhere; the vector clock now: {before}");

    println!("\n3. carol is cut off; both sides keep writing (partitions become branches)");
    d.say("alice", &["set", "/title", "\"alice's title\""])?;
    d.say("bob", &["incr", "/visits", "10"])?;
    d.say("carol", &["set", "/title", "\"carol's title\""])?;
    d.say("carol", &["incr", "/visits", "100"])?;
    d.send("alice", "bob")?;
    d.send("bob", "alice")?;
    let roots = d.roots(&all)?;
    println!(
        "  alice and bob agree ({}), carol is on her own branch ({})",
        roots[0] == roots[1],
        roots[2] != roots[0]
    );

    println!("\n4. the partition heals: bundles flow again and all three converge");
    for (from, to) in [
        ("carol", "alice"),
        ("alice", "bob"),
        ("bob", "carol"),
        ("alice", "carol"),
    ] {
        d.send(from, to)?;
    }
    let roots = d.roots(&all)?;
    assert_same(&roots)?;
    println!("  converged: one state root on every node");
    d.say("bob", &["state"])?;
    println!("  the concurrent titles are both kept; one wins deterministically everywhere:");
    d.say("bob", &["conflicts", "/title"])?;

    println!("\n5. time travel to the clock before the partition ({before})");
    d.say("carol", &["state", "--at", &before])?;

    println!("\n6. one node's chain alone (carol), and the whole history, one lane per node");
    d.say("alice", &["log", "--node", "carol"])?;
    d.say("alice", &["log", "--graph"])?;

    println!("\n7. audit: every hash, signature and link, and the state root");
    d.say("carol", &["verify"])?;

    println!(
        "\nsummary: 3 nodes, writes on both sides of a partition, merged offline, one root {}",
        &roots[0][..16]
    );
    println!(
        "explore:  {} --dir {} state    (also bob, carol; try log --graph, diff, forks)",
        d.exe.display(),
        base.join("alice").display()
    );
    println!("guarantee: strong eventual consistency and causal consistency, not linearizability");
    Ok(())
}

fn assert_same(roots: &[String]) -> Result<()> {
    if roots.windows(2).any(|w| w[0] != w[1]) {
        bail!("the nodes did not converge: {roots:?}");
    }
    Ok(())
}
