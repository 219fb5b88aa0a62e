//! The `lcloud` binary on real stores in temporary directories.

mod common;

use std::process::Command;

use common::cli_node::Node;
use common::{lcloud, lcloud_stdin};

/// Alice creates a cloud; Bob joins from her bundle.
fn pair() -> (Node, Node) {
    let a = Node::new();
    a.ok(&["init", "--open", "--alias", "alice", "--cloud", "test"]);
    let b = Node::new();
    let file = a.bundle("genesis.bundle");
    b.ok(&["join", file.to_str().unwrap(), "--alias", "bob"]);
    (a, b)
}

#[test]
fn concurrent_writers_converge_through_bundles_in_any_order_and_any_number_of_times() {
    let (a, b) = pair();
    a.ok(&["set", "/doc/title", "\"from alice\""]);
    a.ok(&["incr", "/visits"]);
    b.ok(&["set", "/doc/title", "\"from bob\""]);
    b.ok(&["incr", "/visits", "5"]);
    b.ok(&["add", "/tags", "\"b\""]);
    // Alice imports first, then Bob; then both again, twice.
    let fa = a.bundle("a1.bundle");
    let fb = b.bundle("b1.bundle");
    let report = a.import(&fb);
    assert_eq!(report["new"], 3);
    b.import(&fa);
    for _ in 0..2 {
        let fa = a.bundle("a2.bundle");
        let fb = b.bundle("b2.bundle");
        assert_eq!(b.import(&fa)["new"], 0);
        assert_eq!(a.import(&fb)["new"], 0);
    }
    assert_eq!(a.root(), b.root());
    assert_eq!(a.state(), b.state());
    assert_eq!(a.state()["visits"], 6);
    // Both concurrent titles stay inspectable.
    let conflicts: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "conflicts", "/doc/title"])).unwrap();
    assert_eq!(conflicts["values"].as_array().unwrap().len(), 2);
    a.ok(&["verify"]);
    b.ok(&["verify"]);
}

#[test]
fn time_travel_without_and_seen_by() {
    let (a, b) = pair();
    a.ok(&["set", "/v", "1"]); // alice:2
    a.ok(&["set", "/v", "2"]); // alice:3
    b.import(&a.bundle("a.bundle"));
    b.ok(&["set", "/w", "\"bob\""]); // bob:1, saw alice:3
    a.ok(&["set", "/v", "3"]); // alice:4
    a.import(&b.bundle("b.bundle"));
    let at: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "state", "--at", "alice:2"])).unwrap();
    assert_eq!(at, serde_json::json!({"v": 1}));
    let now = a.state();
    assert_eq!(now, serde_json::json!({"v": 3, "w": "bob"}));
    let bob_prefix = &b.ok(&["id"])[..8];
    let without: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "state", "--without", bob_prefix])).unwrap();
    assert_eq!(without, serde_json::json!({"v": 3}));
    let seen: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "state", "--seen-by", &format!("{bob_prefix}@1")]))
            .unwrap();
    assert_eq!(seen, serde_json::json!({"v": 2}));
    let diff = a.ok(&["diff", "alice:3", "now"]);
    assert!(
        diff.contains("~ /v: 2 -> 3") && diff.contains("+ /w"),
        "{diff}"
    );
    let log = a.ok(&["log", "--graph"]);
    assert_eq!(log.lines().count(), 5, "{log}");
    // Two lanes: alice's (she wrote first) on the left, bob's on the right.
    let bob_line = log.lines().find(|l| l.contains(" seq 1  set")).unwrap();
    assert_eq!(bob_line.chars().nth(2), Some('●'), "{log}");
    assert!(
        log.lines().filter(|l| l.starts_with('●')).count() == 4,
        "{log}"
    );
    let chain = a.ok(&["log", "--node", "alice"]);
    assert_eq!(chain.lines().count(), 4, "{chain}");
}

#[test]
fn bad_input_gives_a_clear_error_and_changes_nothing() {
    let (a, _) = pair();
    a.ok(&["set", "/a", "{\"b\": 1}"]);
    a.ok(&["add", "/s", "1"]);
    let root = a.root();
    let junk = a.path().join("junk.bin");
    std::fs::write(&junk, b"this is not a bundle at all, just some bytes").unwrap();
    for (args, expect) in [
        (vec!["set", "/a", "{not json"], "malformed JSON"),
        (vec!["set", "a/b", "1"], "bad path"),
        (vec!["del", "/nope"], "nothing at /nope"),
        (vec!["remove", "/s", "2"], "not in the set"),
        (vec!["state", "/nope"], "nothing at /nope"),
        (vec!["state", "--at", "alice3"], "bad clock"),
        (vec!["state", "--at", "alice:x"], "bad clock"),
        (vec!["state", "--at", "nobody:1"], "unknown node"),
        (vec!["state", "--at", "alice:99"], "has only"),
        (vec!["state", "--heads", "zz"], "bad experience id"),
        (vec!["state", "--seen-by", "alice"], "NODE@SEQ"),
        (vec!["diff", "alice:1", "bogus"], "bad clock"),
        (
            vec!["import", junk.to_str().unwrap()],
            "not a λCLOUD bundle",
        ),
        (vec!["import", "/does/not/exist"], "cannot read"),
        (vec!["member", "add", "abc"], "unknown node \"abc\""),
        (vec!["incr", "/n", "many"], "invalid value"),
    ] {
        let err = if args == ["incr", "/n", "many"] {
            // clap's own usage error: not one line, but a non-zero exit and a reason.
            let out = a.run(&args);
            assert!(!out.status.success());
            String::from_utf8(out.stderr).unwrap()
        } else {
            a.fails(&args)
        };
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
        assert_eq!(a.root(), root, "{args:?} changed the state");
    }
    let none = Node::new();
    assert!(none.fails(&["state"]).contains("no λCLOUD store"));
}

#[test]
fn membership_is_enforced_from_the_cli() {
    let b = Node::new();
    let bob = b.ok(&["id"]);
    let a = Node::new();
    a.ok(&["init", "--member", &bob]);
    let c = Node::new();
    let genesis = a.bundle("g.bundle");
    b.ok(&["join", genesis.to_str().unwrap()]);
    c.ok(&["join", genesis.to_str().unwrap()]);
    b.ok(&["set", "/ok", "1"]);
    // Carol is not a member: her write is refused at once and nothing is stored.
    assert!(c.fails(&["set", "/no", "1"]).contains("not a member"));
    let carol = c.ok(&["id"]);
    a.ok(&["member", "add", &carol]);
    c.import(&a.bundle("grant.bundle"));
    c.ok(&["set", "/now", "1"]);
    // Who may write, and why.
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["--json", "member", "list"])).unwrap();
    assert_eq!(list["open"], false);
    let how = |id: &str| {
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node"] == id)
            .map(|m| m["how"].as_str().unwrap().to_owned())
    };
    let alice = a.ok(&["id"]);
    assert_eq!(how(&alice).as_deref(), Some("creator"));
    assert_eq!(how(&bob).as_deref(), Some("genesis"));
    assert_eq!(how(&carol).as_deref(), Some("granted"));
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
}

#[test]
fn a_cloud_is_members_only_unless_made_open() {
    // Made without --member: only its creator may write.
    let a = Node::new();
    a.ok(&["init"]);
    let joiner = Node::new();
    joiner.ok(&["join", a.bundle("g.bundle").to_str().unwrap()]);
    assert!(joiner.fails(&["set", "/x", "1"]).contains("not a member"));
    // With --open, anyone who holds the genesis may.
    let open = Node::new();
    open.ok(&["init", "--open"]);
    let other = Node::new();
    other.ok(&["join", open.bundle("g.bundle").to_str().unwrap()]);
    other.ok(&["set", "/x", "1"]);
    // Both at once make no sense.
    let both = Node::new().run(&["init", "--open", "--member", &"0".repeat(64)]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("'--open' cannot be used with"));
}

#[test]
fn tampered_bundles_are_refused_by_name() {
    let (a, b) = pair();
    a.ok(&["set", "/x", "\"original\""]);
    let file = a.bundle("a.bundle");
    let mut bytes = std::fs::read(&file).unwrap();
    // Change the value inside the last record and fix up the trailer, as an attacker would.
    let at = bytes
        .windows(8)
        .rposition(|w| w == b"original")
        .expect("value present");
    bytes[at] = b'O';
    let body = bytes.len() - 32;
    let trailer = *blake3::hash(&bytes[..body]).as_bytes();
    bytes[body..].copy_from_slice(&trailer);
    let forged = a.path().join("forged.bundle");
    std::fs::write(&forged, &bytes).unwrap();
    let root = b.root();
    // Exit 3 (rejected records; 2 is a usage error), naming the first rejected record and why.
    let out = b.run(&["import", forged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "rejected records exit 3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 rejected") && stdout.contains("OpsDigestMismatch"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: 1 of the ") && stderr.contains("record #"),
        "{stderr}"
    );
    assert!(stderr.contains("digest"), "says why: {stderr}");
    assert_eq!(b.root(), root);
    // Damage without fixing the trailer: the whole file is refused.
    bytes[at] = b'X';
    std::fs::write(&forged, &bytes).unwrap();
    assert!(
        b.fails(&["import", forged.to_str().unwrap()])
            .contains("checksum mismatch")
    );
    // A bundle of another cloud.
    let other = Node::new();
    other.ok(&["init"]);
    let f = other.bundle("other.bundle");
    assert!(
        b.fails(&["import", f.to_str().unwrap()])
            .contains("bundle of cloud")
    );
}

#[test]
fn a_tampered_store_is_refused_by_name() {
    let (a, _) = pair();
    a.ok(&["set", "/x", "\"precious value\""]);
    let db = a.path().join("store.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    // The value is stored twice: in the experience record and in the persisted document.
    let places: Vec<usize> = bytes
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == b"precious")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(places.len(), 2, "the value is in the file twice");
    for at in places {
        bytes[at] ^= 0x20;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = a.fails(&["state"]);
    assert!(
        err.contains("corrupt") && err.contains("checksum mismatch"),
        "{err}"
    );
    let err = a.fails(&["verify"]);
    assert!(
        err.contains("corrupt") && err.contains("experience #"),
        "{err}"
    );
    // A file of garbage in place of the store is refused by name, not a panic.
    std::fs::write(&db, vec![0x5au8; 8192]).unwrap();
    let err = a.fails(&["state"]);
    assert!(err.contains("store"), "{err}");
    // A truncated file is refused too.
    std::fs::write(&db, &bytes[..bytes.len() / 3]).unwrap();
    let err = a.fails(&["state"]);
    assert!(err.contains("store"), "{err}");
}

#[test]
fn a_store_restored_from_an_old_backup_refuses_to_sign_until_it_catches_up() {
    let (a, _) = pair();
    a.ok(&["set", "/v", "1"]);
    let backup = std::fs::read(a.path().join("store.redb")).unwrap();
    a.ok(&["set", "/v", "2"]);
    let published = a.bundle("published.bundle");
    std::fs::write(a.path().join("store.redb"), backup).unwrap();
    let err = a.fails(&["set", "/v", "3"]);
    assert!(err.contains("backup"), "{err}");
    a.import(&published);
    a.ok(&["set", "/v", "3"]);
    assert_eq!(a.state()["v"], 3);
}

#[test]
fn batch_writes_one_experience() {
    let (a, _) = pair();
    let out = lcloud_stdin(
        a.path(),
        &["--json", "batch"],
        b"{\"op\":\"set\",\"path\":\"/a\",\"value\":1}\n{\"op\":\"incr\",\"path\":\"/n\",\"by\":3}\n{\"op\":\"add\",\"path\":\"/s\",\"value\":\"x\"}\n",
    );
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ops"], 3);
    assert_eq!(a.state(), serde_json::json!({"a": 1, "n": 3, "s": ["x"]}));
}

#[test]
fn forks_are_listed_with_valid_proofs() {
    let (a, _) = pair();
    a.ok(&["set", "/v", "1"]);
    let backup = a.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    for f in ["store.redb", "identity.key"] {
        std::fs::copy(a.path().join(f), backup.join(f)).unwrap();
    }
    a.ok(&["set", "/v", "2"]);
    // The backup copy signs a different seq 3 with the same key: an equivocation (made
    // possible here by deliberately dropping the signed-seq guard file).
    lcloud(&backup, &["set", "/v", "\"other\""]);
    let f = backup.join("b.bundle");
    lcloud(&backup, &["export", f.to_str().unwrap()]);
    a.import(&f);
    let forks: serde_json::Value = serde_json::from_str(&a.ok(&["--json", "forks"])).unwrap();
    assert_eq!(forks["forks"].as_array().unwrap().len(), 1);
    assert_eq!(forks["forks"][0]["valid"], true);
    assert!(a.ok(&["log", "--graph"]).contains("FORK"));
}

#[test]
fn the_demo_converges_and_explains_itself() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .env_remove("LCLOUD_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "carol is on her own branch (true)",
        "converged: one state root on every node",
        "time travel",
        "verified",
        "not linearizability",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The nodes it leaves behind agree.
    let roots: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| String::from_utf8(lcloud(&dir.join(n), &["root"]).stdout).unwrap())
        .collect();
    assert!(roots.windows(2).all(|w| w[0] == w[1]));
    // A non-empty directory is refused rather than mixed into.
    let again = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn the_demo_leaves_the_debugger_running_only_when_asked() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("demo");
    // Stopped by pid whatever happens below.
    let demo = common::kept_demo(&dir);
    let (api, token, pid) = (
        demo.api.trim_start_matches("http://"),
        &demo.token,
        demo.pid,
    );
    let (status, _) = common::request(api, "GET", "/ui", "", "");
    assert_eq!(status, 200);
    let (status, body) = common::request(
        api,
        "GET",
        "/api/log",
        &format!("Authorization: Bearer {token}\r\n"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let log: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(log["log"].as_array().unwrap().len() >= 8, "{log}");
    drop(demo);
    let t = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed().as_secs() < 20,
            "the debugger's node did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its store is alice's, whole and free again.
    assert!(lcloud(&dir.join("alice"), &["verify"]).status.success());
}

#[test]
fn every_command_has_help_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let top = String::from_utf8(lcloud(dir.path(), &["--help"]).stdout).unwrap();
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 20, "{commands:?}");
    for c in &commands {
        let mut args = vec![c.as_str()];
        if c == "member" {
            args.push("add");
        }
        args.push("--help");
        let out = lcloud(dir.path(), &args);
        assert!(out.status.success(), "{c} --help");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("Example"),
            "`lcloud {c} --help` has no example:\n{text}"
        );
    }
}

#[test]
fn export_since_sends_only_what_is_new_and_gaps_park_until_filled() {
    let (a, b) = pair();
    a.ok(&["set", "/v", "1"]); // alice:2
    let first = a.bundle("first.bundle");
    a.ok(&["set", "/v", "2"]); // alice:3
    a.ok(&["set", "/v", "3"]); // alice:4
    let since = a.path().join("since.bundle");
    a.ok(&["export", since.to_str().unwrap(), "--since", "alice:3"]);
    let all = a.bundle("all.bundle");
    assert!(
        std::fs::metadata(&since).unwrap().len() < std::fs::metadata(&all).unwrap().len(),
        "--since leaves out what the clock covers"
    );
    // Bob has only the genesis: alice:4 waits for alice:2 and alice:3.
    let report = b.import(&since);
    assert_eq!(
        (report["new"].as_u64(), report["parked"].as_u64()),
        (Some(0), Some(1))
    );
    let root_before = b.root();
    // The parked experience survives a restart of the command (it is stored)…
    let report = b.import(&first);
    assert_eq!(
        report["new"], 1,
        "alice:2 enters; alice:4 still waits for alice:3"
    );
    assert_eq!(report["parked"], 0);
    assert_ne!(b.root(), root_before);
    // …and enters once the gap is filled.
    let report = b.import(&all);
    assert_eq!(report["new"], 2, "alice:3 and the parked alice:4");
    assert_eq!(b.root(), a.root());
    b.ok(&["verify"]);
}

/// A reader that goes away (`lcloud log | head`) stops the command quietly, with the status a
/// broken pipe gives (141) or success if it had written everything: never a panic.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let (a, _) = pair();
    let ops: String = (0..2000)
        .map(|i| format!("{{\"op\":\"set\",\"path\":\"/k/{i}\",\"value\":{i}}}\n"))
        .collect();
    assert!(
        lcloud_stdin(a.path(), &["batch"], ops.as_bytes())
            .status
            .success()
    );
    for args in [&["log"][..], &["--json", "state"], &["state"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .arg("--dir")
            .arg(a.path())
            .args(args)
            .env_remove("LCLOUD_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "lcloud {args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0 | 141)),
            "lcloud {args:?}: {:?} {err}",
            out.status
        );
    }
}

/// Membership that changes (issue 19): removal, admins, key rotation, from the CLI.
#[test]
fn members_are_removed_promoted_and_keys_rotated() {
    let a = Node::new();
    let (b, c) = (Node::new(), Node::new());
    let bob = b.ok(&["id"]);
    let carol = c.ok(&["id"]);
    a.ok(&[
        "init", "--alias", "alice", "--member", &bob, "--member", &carol,
    ]);
    let genesis = a.bundle("g.bundle");
    for n in [&b, &c] {
        n.ok(&["join", genesis.to_str().unwrap()]);
    }
    a.ok(&["alias", "bob", &bob]);
    b.ok(&["set", "/from-bob", "1"]);
    a.import(&b.bundle("b.bundle"));
    // Bob is made an admin, removes Carol, and is demoted again.
    assert!(b.fails(&["member", "remove", &carol]).contains("admin"));
    a.ok(&["member", "promote", "bob"]);
    b.import(&a.bundle("a1.bundle"));
    b.ok(&["member", "remove", &carol]);
    c.ok(&["set", "/unseen", "1"]); // Carol does not know yet
    a.import(&b.bundle("b2.bundle"));
    a.import(&c.bundle("c.bundle"));
    a.ok(&["member", "demote", "bob"]);
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "member", "list"])).unwrap();
    let nodes = |k: &str| nodes_of(&list, k);
    assert!(nodes("members").contains(&bob) && !nodes("members").contains(&carol));
    assert_eq!(nodes("removed"), vec![carol.clone()]);
    assert_eq!(list["admins"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        list["left_out"], 1,
        "Carol's write, concurrent with her removal"
    );
    assert!(a.state().get("unseen").is_none());
    assert_eq!(a.state()["from-bob"], 1);
    // Carol, once she sees it, may not write; the creator may not be removed.
    c.import(&a.bundle("a2.bundle"));
    assert!(c.fails(&["set", "/again", "1"]).contains("not a member"));
    assert!(
        a.fails(&["member", "remove", &a.ok(&["id"])])
            .contains("genesis author")
    );
    // Alice rotates her key: the new one writes and administers; the old one is retired.
    let old = a.ok(&["id"]);
    let rotated: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "key", "rotate"])).unwrap();
    let new = a.ok(&["id"]);
    assert_eq!(rotated["old"], old.as_str());
    assert_eq!(rotated["node"], new.as_str());
    assert_ne!(old, new);
    // Until a peer has heard of it (the node was not started since), no second rotation.
    assert!(
        a.fails(&["key", "rotate"])
            .contains("has not reached any peer")
    );
    a.ok(&["set", "/after-rotation", "1"]);
    a.ok(&["member", "add", &carol]);
    b.import(&a.bundle("a3.bundle"));
    assert_eq!(b.state()["after-rotation"], 1);
    let list: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "member", "list"])).unwrap();
    assert!(nodes_of(&list, "removed").contains(&old));
    assert_eq!(list["admins"], serde_json::json!([new]));
    a.ok(&["verify"]);
    // A node that may not write cannot rotate.
    let stranger = Node::new();
    stranger.ok(&["join", genesis.to_str().unwrap()]);
    assert!(stranger.fails(&["key", "rotate"]).contains("may not write"));
}

fn nodes_of(list: &serde_json::Value, k: &str) -> Vec<String> {
    list[k]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn status_shows_what_is_final_and_who_holds_it_back() {
    let b = Node::new();
    let bob = b.ok(&["id"]);
    let a = Node::new();
    a.ok(&["init", "--alias", "alice", "--member", &bob]);
    a.ok(&["alias", "bob", &bob]);
    a.ok(&["set", "/a", "1"]);
    a.ok(&["set", "/a", "2"]);
    let status = |n: &Node| -> serde_json::Value {
        serde_json::from_str(&n.ok(&["--json", "status"])).unwrap()
    };
    // Bob never wrote: he has acknowledged the genesis alone, and holds the rest back.
    let s = status(&a);
    assert_eq!(s["experiences"], 3);
    assert_eq!(s["finality"]["stable"], 1);
    assert_eq!(s["finality"]["unstable"], 2);
    assert_eq!(s["finality"]["held_back_by"]["node"], bob.as_str());
    assert_eq!(s["finality"]["held_back_by"]["behind"], 2);
    assert_eq!(s["finality"]["late"], 0);
    let human = a.ok(&["status"]);
    assert!(human.contains("held back by bob (2 experiences"), "{human}");
    // He joins and writes on top of Alice's writes: they are now stable.
    b.ok(&["join", a.bundle("g.bundle").to_str().unwrap()]);
    b.import(&a.bundle("a1.bundle"));
    b.ok(&["set", "/b", "1"]);
    a.import(&b.bundle("b1.bundle"));
    let s = status(&a);
    assert_eq!(s["finality"]["frontier"][a.ok(&["id"])], 2);
    assert_eq!(s["finality"]["stable"], 2);
    assert_eq!(s, status(&a), "a function of the history");
    assert_eq!(
        s["finality"],
        status(&b)["finality"],
        "the same on both nodes"
    );
    // Removed, Bob no longer holds anything back.
    a.ok(&["member", "remove", "bob"]);
    let s = status(&a);
    assert_eq!(s["finality"]["members"].as_array().unwrap().len(), 1);
    assert_eq!(s["finality"]["stable"], 4, "all but the removal itself");
    // An open cloud has no finality, and says so.
    let open = Node::new();
    open.ok(&["init", "--open"]);
    assert!(open.ok(&["status"]).contains("none: the cloud is open"));
}

#[test]
fn vacuum_gives_free_pages_back_and_changes_nothing() {
    let (a, _) = pair();
    // Each write is its own commit; the large values overwritten leave free pages behind.
    for i in 0..40 {
        let ops: String = (0..8)
            .map(|k| {
                format!(
                    "{{\"op\":\"set\",\"path\":\"/big/{k}\",\"value\":\"{}\"}}\n",
                    "x".repeat(2000 + i)
                )
            })
            .collect();
        assert!(
            lcloud_stdin(a.path(), &["batch"], ops.as_bytes())
                .status
                .success()
        );
    }
    let state = a.state();
    let root = a.ok(&["root"]);
    let out: serde_json::Value = serde_json::from_str(&a.ok(&["--json", "vacuum"])).unwrap();
    let (before, after) = (
        out["bytes"]["before"].as_u64().unwrap(),
        out["bytes"]["after"].as_u64().unwrap(),
    );
    assert!(after < before, "nothing given back: {out}");
    assert_eq!(
        std::fs::metadata(a.path().join("store.redb"))
            .unwrap()
            .len(),
        after
    );
    assert_eq!(a.state(), state);
    assert_eq!(a.ok(&["root"]), root);
    a.ok(&["verify"]);
    // Again: nothing left to give back, and it says so without failing.
    let again: serde_json::Value = serde_json::from_str(&a.ok(&["--json", "vacuum"])).unwrap();
    assert!(again["bytes"]["after"].as_u64().unwrap() <= after);
}
