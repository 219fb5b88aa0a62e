//! Finality and compaction across real nodes: members attest checkpoints, which become
//! final with one root everywhere; a stopped node's store compacts at the final checkpoint
//! and starts again, serving and syncing as before.

mod common;

use std::time::{Duration, Instant};

use common::procs::{NodeProc, cloud, converge};
use common::{lcloud, ok};

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn members_attest_checkpoints_and_they_become_final() {
    let base = tempfile::tempdir().unwrap();
    let dirs = cloud(base.path(), &["a", "b", "c"], Some(&["b", "c"]));
    // b's store as it joined: later, a node far behind every checkpoint.
    let b_old = base.path().join("b-old");
    copy_dir(&dirs[1], &b_old);
    let a = NodeProc::start(&dirs[0], &[]);
    let b = NodeProc::start(&dirs[1], &[&a.p2p]);
    // c compacts as it runs, keeping nothing of what it drops.
    let c = NodeProc::start_with(&dirs[2], &[&a.p2p, &b.p2p], &["--retain", "checkpoint"]);
    // No checkpoint is final yet: there is nothing to join shallow from.
    let e = base.path().join("e");
    let token = |d: &std::path::Path| d.join("admin.token").to_str().unwrap().to_owned();
    let out = lcloud(
        &e,
        &[
            "--token-file",
            &token(&dirs[0]),
            "join",
            "--shallow",
            &a.api,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no checkpoint is final yet") && err.contains("409"),
        "{err}"
    );
    assert!(!e.join("store.redb").exists());
    // One chain deeper than the first checkpoint (depth 256), then every member writes on
    // top of it, so that everything up to it is stable.
    for i in 0..260 {
        a.cli(&["set", "/n", &i.to_string()]).unwrap();
    }
    converge(&[&a, &b, &c]);
    for node in [&b, &c, &a] {
        node.cli(&["incr", "/after"]).unwrap();
        converge(&[&a, &b, &c]);
    }
    // At their next ticks the members attest checkpoint 256; once all three attestations
    // are everywhere it is final, with one root, on every node.
    let status = |n: &NodeProc| -> serde_json::Value {
        serde_json::from_str(&n.cli(&["--json", "status"]).unwrap()).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let finals = loop {
        let finals: Vec<serde_json::Value> = [&a, &b, &c]
            .iter()
            .map(|n| status(n)["finality"]["final_checkpoint"].clone())
            .collect();
        if finals.iter().all(|f| f["depth"] == 256) {
            break finals;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint 256 not final everywhere: {finals:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(finals.iter().all(|f| f == &finals[0]), "{finals:?}");
    let s = status(&a);
    assert_eq!(
        s["finality"]["divergent_checkpoints"],
        serde_json::json!([])
    );
    assert!(
        a.cli(&["status"])
            .unwrap()
            .contains("checkpoint   depth 256 final")
    );
    assert!(a.metrics().contains("lcloud_final_checkpoint_depth 256\n"));
    assert!(a.metrics().contains("lcloud_checkpoint_divergences 0\n"));
    assert!(a.metrics().contains("lcloud_late_experiences 0\n"));
    assert!(a.metrics().contains("lcloud_compaction_depth 0\n"));
    // c compacts at its next tick, and goes on with the same root.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&c)["finality"]["compacted"].is_null() {
        assert!(
            Instant::now() < deadline,
            "c did not compact: {}",
            status(&c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let compacted = status(&c)["finality"]["compacted"].clone();
    assert_eq!(compacted["depth"], 256, "{compacted}");
    assert!(
        compacted["kept_below"].as_u64().unwrap() < 20,
        "{compacted}"
    );
    assert!(c.metrics().contains("lcloud_compaction_depth 256\n"));
    a.cli(&["set", "/after-compaction", "1"]).unwrap();
    converge(&[&a, &b, &c]);
    assert_eq!(c.state()["after-compaction"], 1);
    // A new node joins shallow straight from c, over the API.
    let joined: serde_json::Value = serde_json::from_str(&ok(
        &e,
        &[
            "--json",
            "--token-file",
            &token(&dirs[2]),
            "join",
            "--shallow",
            &c.api,
        ],
    ))
    .unwrap();
    assert_eq!(joined["checkpoint"]["depth"], 256, "{joined}");
    assert_eq!(ok(&e, &["root"]), c.root());
    // A node behind the checkpoint that asks c is refused by name and sent nothing.
    drop(b);
    let old = NodeProc::start(&b_old, &[&c.p2p]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .metrics()
        .contains("lcloud_rejected_total{reason=\"behind checkpoint\"}")
    {
        assert!(Instant::now() < deadline, "{}", c.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(old.state(), serde_json::json!({}));
    assert_eq!(status(&old)["parked"], 0, "{}", status(&old));
    drop(old);
    // The attested root is the state at the checkpoint's cut: the genesis (depth 0) and the
    // first 256 writes of /n, as a stopped node folds it from its store.
    let root = finals[0]["root"].as_str().unwrap().to_owned();
    let a_id = String::from_utf8_lossy(&lcloud(&dirs[0], &["id"]).stdout)
        .trim()
        .to_owned();
    assert_eq!(finals[0]["clock"], serde_json::json!({ a_id.clone(): 257 }));
    drop((a, c));
    let at = format!("{}:257", &a_id[..16]);
    let out = lcloud(&dirs[1], &["root", "--at", &at]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), root, "{at}");
    let out = lcloud(&dirs[1], &["--json", "state", "--at", &at, "/n"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "255");

    // A shallow join from a's full store: the state at checkpoint 256 and what follows,
    // proven by the members' attestations, the same root; nothing earlier.
    let shallow = base.path().join("a.shallow");
    let full = base.path().join("a.bundle");
    ok(
        &dirs[0],
        &["export", "--shallow", shallow.to_str().unwrap()],
    );
    ok(&dirs[0], &["export", full.to_str().unwrap()]);
    assert!(
        std::fs::metadata(&shallow).unwrap().len() * 4 < std::fs::metadata(&full).unwrap().len()
    );
    let d = base.path().join("d");
    let out = lcloud(&d, &["join", "--shallow", full.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a shallow one"),
        "{err}"
    );
    let joined: serde_json::Value = serde_json::from_str(&ok(
        &d,
        &["--json", "join", "--shallow", shallow.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(joined["checkpoint"]["depth"], 256, "{joined}");
    assert_eq!(joined["checkpoint"]["root"], root.as_str(), "{joined}");
    assert_eq!(ok(&d, &["root"]), ok(&dirs[0], &["root"]));
    assert_eq!(ok(&d, &["--json", "state", "/n"]), "259");
    assert_eq!(ok(&d, &["root", "--at", &at]), root);
    let out = lcloud(&d, &["state", "--at", &format!("{}:100", &a_id[..16])]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("earliest cut"));
    assert!(lcloud(&d, &["verify"]).status.success());
    let out = lcloud(&dirs[0], &["import", shallow.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lcloud join --shallow"),
        "{err}"
    );

    // Proofs of the checkpoint's cut from a's full store: from the checkpoint (the state
    // there and its attestations) and from the genesis, each checked with nothing but the
    // file (no node directory) to the attested root.
    let nowhere = base.path().join("nowhere");
    let proof = |name: &str| base.path().join(name).to_str().unwrap().to_owned();
    ok(&dirs[0], &["export", "--proof", &at, &proof("cp.proof")]);
    ok(
        &dirs[0],
        &["export", "--proof", &at, "--full", &proof("full.proof")],
    );
    let size = |name: &str| std::fs::metadata(proof(name)).unwrap().len();
    assert!(size("cp.proof") * 2 < size("full.proof"));
    for (name, checkpoint) in [
        ("cp.proof", serde_json::json!(256)),
        ("full.proof", serde_json::Value::Null),
    ] {
        let checked: serde_json::Value =
            serde_json::from_str(&ok(&nowhere, &["--json", "verify-proof", &proof(name)])).unwrap();
        assert_eq!(checked["root"], root.as_str(), "{name}: {checked}");
        assert_eq!(checked["checkpoint"], checkpoint, "{name}: {checked}");
        assert_eq!(
            ok(&nowhere, &["verify-proof", &proof(name)]).lines().next(),
            Some(root.as_str())
        );
    }
    assert!(!nowhere.exists(), "verify-proof made a node directory");
    // Another machine, as far as a process can tell: a copy of the binary and the proof in an
    // empty directory, an empty environment (no HOME, no LCLOUD_*), nothing else.
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_lcloud"), elsewhere.join("lcloud")).unwrap();
    std::fs::copy(proof("cp.proof"), elsewhere.join("cp.proof")).unwrap();
    let out = std::process::Command::new(elsewhere.join("lcloud"))
        .args(["verify-proof", "cp.proof"])
        .current_dir(&elsewhere)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(root.as_str())
    );
    let mut left: Vec<String> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cp.proof", "lcloud"], "verify-proof wrote nothing");
    // A damaged proof is refused, naming what failed.
    let mut bytes = std::fs::read(proof("cp.proof")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(proof("bad.proof"), &bytes).unwrap();
    let out = lcloud(&nowhere, &["verify-proof", &proof("bad.proof")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not prove a root") && err.contains("damaged"),
        "{err}"
    );
    // The shallow-joined node proves what it holds, from its checkpoint on, and says why
    // not before it.
    ok(&d, &["export", "--proof", "now", &proof("d.proof")]);
    assert_eq!(
        ok(&nowhere, &["verify-proof", &proof("d.proof")])
            .lines()
            .next(),
        Some(ok(&d, &["root"]).as_str())
    );
    let out = lcloud(
        &d,
        &[
            "export",
            "--proof",
            &format!("{}:100", &a_id[..16]),
            &proof("e.proof"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("compacted"), "{err}");

    // Compaction at the final checkpoint: the root stays, time travel reaches back to the
    // checkpoint and refuses earlier cuts by name, verify still checks every link.
    let now = ok(&dirs[1], &["root"]);
    let before = std::fs::metadata(dirs[1].join("store.redb")).unwrap().len();
    let done: serde_json::Value =
        serde_json::from_str(&ok(&dirs[1], &["--json", "compact"])).unwrap();
    assert_eq!(done["depth"], 256, "{done}");
    assert_eq!(done["root"], now.as_str(), "{done}");
    let kept = done["experiences"]["after"].as_u64().unwrap();
    assert!(kept < 20, "{done}");
    assert_eq!(
        done["headers"].as_u64().unwrap(),
        done["experiences"]["before"].as_u64().unwrap() - kept
    );
    assert_eq!(done["bytes"]["before"].as_u64().unwrap(), before);
    assert_eq!(ok(&dirs[1], &["root"]), now);
    assert_eq!(ok(&dirs[1], &["root", "--at", &at]), root);
    assert_eq!(ok(&dirs[1], &["--json", "state", "--at", &at, "/n"]), "255");
    let early = format!("{}:100", &a_id[..16]);
    let out = lcloud(&dirs[1], &["state", "--at", &early, "/n"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("compacted") && err.contains("earliest cut"),
        "{err}"
    );
    let verified: serde_json::Value =
        serde_json::from_str(&ok(&dirs[1], &["--json", "verify"])).unwrap();
    assert_eq!(verified["headers"], done["headers"], "{verified}");
    // Compacting again finds nothing newer to drop below.
    let again: serde_json::Value = serde_json::from_str(&ok(
        &dirs[1],
        &["--json", "compact", "--retain", "checkpoint"],
    ))
    .unwrap();
    assert_eq!(again["compacted"], false, "{again}");

    // A write with no node running goes on the compacted chain.
    ok(&dirs[1], &["set", "/offline", "3"]);
    let now = ok(&dirs[1], &["root"]);
    assert!(lcloud(&dirs[1], &["verify"]).status.success());

    // The compacted node starts, serves the same state and goes on syncing with the others.
    let a = NodeProc::start(&dirs[0], &[]);
    let b = NodeProc::start(&dirs[1], &[&a.p2p]);
    assert_eq!(b.root(), now);
    a.cli(&["set", "/later", "1"]).unwrap();
    b.cli(&["set", "/later-b", "2"]).unwrap();
    converge(&[&a, &b]);
    assert_eq!(b.state()["later"], 1);
    assert_eq!(a.state()["later-b"], 2);
    assert_eq!(a.state()["offline"], 3);
}
