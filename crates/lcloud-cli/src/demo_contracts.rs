//! `lcloud demo contracts`: the bank story on two real node daemons. A contract built from
//! source (contracts/bank) is deployed; the nodes are partitioned and each spends most of one
//! shared balance, and each sees its spend accepted; after the heal both fold both spends in
//! canonical order and keep exactly the one that fits, rejecting the other identically. Then a
//! second contract (contracts/schema) guards a document path: entries arrive only through it
//! and keep its rules, and a direct write under the path is refused.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::demo::{Daemon, Demo, assert_same, short_addr};

pub fn run(base: PathBuf) -> Result<()> {
    let started = Instant::now();
    let d = Demo {
        exe: std::env::current_exe()?,
        base: base.clone(),
    };
    println!(
        "λCLOUD contracts demo: a bank contract (WebAssembly, built from contracts/bank) on two\nnodes in {}; no coordinator decides which spend of one balance wins\n",
        base.display()
    );
    let wasm = base.join("bank.wasm");
    std::fs::write(&wasm, lcloud_examples::BANK)?;
    let wasm = wasm.to_str().context("UTF-8")?.to_owned();

    println!("1. alice creates a cloud; bob joins; both nodes start and connect");
    d.say(
        "alice",
        &["init", "--open", "--alias", "alice", "--cloud", "bank"],
    )?;
    let genesis = base.join("genesis.bundle");
    let genesis = genesis.to_str().context("UTF-8")?;
    d.run("alice", &["export", genesis])?;
    d.say("bob", &["join", genesis, "--alias", "bob"])?;
    let ids = [d.run("alice", &["id"])?, d.run("bob", &["id"])?];
    d.run("alice", &["alias", "bob", &ids[1]])?;
    d.run("bob", &["alias", "alice", &ids[0]])?;
    let alice = Daemon::start(&d.exe, &base.join("alice"), &[])?;
    let bob = Daemon::start(&d.exe, &base.join("bob"), &[&alice.p2p])?;
    let nodes = [("alice", &alice), ("bob", &bob)];
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

    println!(
        "\n2. alice deploys the bank ({} bytes of WebAssembly) and mints 100 into a shared account",
        lcloud_examples::BANK.len()
    );
    d.remote(
        "alice",
        &alice,
        &["contract", "deploy", &wasm, "--name", "bank"],
    )?;
    d.remote(
        "alice",
        &alice,
        &["call", "bank", "mint", r#"{"to":"shared","amount":100}"#],
    )?;
    d.converge(&nodes)?;
    // Names are local, like node aliases: bob names the contract alice deployed by its id.
    let list = d.remote_quiet(&bob, &["--json", "contract", "list"])?;
    let list: serde_json::Value = serde_json::from_str(&list)?;
    let id = list[0]["id"].as_str().context("bob sees the contract")?;
    println!(
        "  bob sees contract {} (deployed by alice) and calls it by an id prefix",
        &id[..16]
    );
    let bank_b = &id[..16];
    d.remote(
        "bob",
        &bob,
        &["contract", "state", bank_b, "balance/shared"],
    )?;

    println!(
        "\n3. bob is cut off; each side spends most of the shared balance, and each is accepted"
    );
    d.isolate(&bob, true)?;
    d.remote(
        "alice",
        &alice,
        &[
            "call",
            "bank",
            "transfer",
            r#"{"from":"shared","to":"alice","amount":70}"#,
        ],
    )?;
    d.remote(
        "bob",
        &bob,
        &[
            "call",
            bank_b,
            "transfer",
            r#"{"from":"shared","to":"bob","amount":60}"#,
        ],
    )?;
    d.remote(
        "alice",
        &alice,
        &["contract", "state", "bank", "balance/shared"],
    )?;
    d.remote(
        "bob",
        &bob,
        &["contract", "state", bank_b, "balance/shared"],
    )?;

    println!("\n4. the partition heals: both nodes fold both spends in canonical order");
    let healed = Instant::now();
    d.isolate(&bob, false)?;
    let root = d.converge(&nodes)?;
    println!(
        "  converged in {:.1} s: one state root on both nodes ({})",
        healed.elapsed().as_secs_f64(),
        &root[..16]
    );
    d.remote("alice", &alice, &["contract", "state", "bank"])?;
    d.remote("bob", &bob, &["contract", "state", bank_b])?;

    println!(
        "\n5. bob deploys a schema contract ({} bytes) guarding /people: entries need a name",
        lcloud_examples::SCHEMA.len()
    );
    let schema = base.join("schema.wasm");
    std::fs::write(&schema, lcloud_examples::SCHEMA)?;
    let schema = schema.to_str().context("UTF-8")?;
    let rules = r#"{"path":"/people","rules":{"type":"object","required":["name"],"additionalProperties":false,"properties":{"name":{"type":"string","maxLength":40},"age":{"type":"integer","minimum":0}}}}"#;
    d.remote(
        "bob",
        &bob,
        &[
            "contract", "deploy", schema, "--name", "people", "--init", rules,
        ],
    )?;
    d.converge(&nodes)?;
    let list = d.remote_quiet(&alice, &["--json", "contract", "list"])?;
    let list: serde_json::Value = serde_json::from_str(&list)?;
    let people = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"].is_null()))
        .and_then(|c| c["id"].as_str())
        .context("alice sees the schema contract")?;
    let people = &people[..16];
    d.remote(
        "alice",
        &alice,
        &[
            "call",
            people,
            "put",
            r#"{"key":"ada","value":{"name":"Ada","age":36}}"#,
        ],
    )?;
    d.remote_refused(
        "alice",
        &alice,
        &["call", people, "put", r#"{"key":"eve","value":{"age":-1}}"#],
    )?;
    d.remote_refused("alice", &alice, &["set", "/people/eve", r#"{"age":-1}"#])?;
    d.converge(&nodes)?;
    d.remote("bob", &bob, &["state", "/people"])?;

    println!("\n6. the nodes stop; the history shows which spend was rejected, and why, on both");
    alice.stop()?;
    bob.stop()?;
    let log_a = d.say("alice", &["log"])?;
    let log_b = d.run("bob", &["log"])?;
    let rejected = |log: &str| {
        log.lines()
            .filter(|l| l.contains("REJECTED"))
            .map(|l| l.split("REJECTED").nth(1).unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let spends = |log: &str| {
        rejected(log)
            .into_iter()
            .filter(|r| r.contains("insufficient funds"))
            .collect::<Vec<_>>()
    };
    anyhow::ensure!(
        spends(&log_a).len() == 1 && rejected(&log_a) == rejected(&log_b),
        "the nodes should reject exactly the same one spend (and the same bad entry): {:?} vs {:?}",
        rejected(&log_a),
        rejected(&log_b)
    );
    let roots = d.roots(&["alice", "bob"])?;
    assert_same(&roots)?;
    println!(
        "\nsummary: one balance spent on both sides of a partition; after the heal exactly the\nspend that fits in canonical order is kept on both nodes, the other rejected the same way;\na guarded path took only entries that keep its rules (root {}), in {:.1} s, with no coordinator",
        &roots[0][..16],
        started.elapsed().as_secs_f64()
    );
    println!("guarantee: strong eventual consistency and causal consistency, not linearizability");
    Ok(())
}
