//! Time travel served by a node: `lcloud --node URL state|root|diff|log|conflicts` (at cuts
//! and views too) print what the same commands print on a copy of the node's store, the node
//! answering from its own store and memory (`/api/state`, `/api/root`, `/api/diff`, `/api/log`, `/api/conflicts`).

mod common;

use common::cli_node::{copy_dir, partition_story};
use common::procs::NodeProc;

#[test]
fn a_node_answers_time_travel_as_the_cli_does_on_its_store() {
    let (a, bob) = partition_story();
    let served = copy_dir(&a);
    let node = NodeProc::start(served.path(), &[]);
    let head = a.ok(&["--json", "log", "--limit", "1"]);
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    let head = head["log"][0]["id"].as_str().unwrap()[..10].to_owned();
    let seen_by = format!("{bob}@1");
    let heads = format!("@{head}");
    let asked: Vec<Vec<&str>> = vec![
        vec!["--json", "state"],
        vec!["state"],
        vec!["--json", "state", "--at", "alice:2"],
        vec!["--json", "state", "/v", "--at", "alice:3"],
        vec!["--json", "state", "--without", &bob],
        vec!["--json", "state", "--seen-by", &seen_by],
        vec!["--json", "state", "--heads", &head],
        vec!["--json", "state", "--at", "alice:4", "--without", &bob],
        vec!["root"],
        vec!["root", "--at", "alice:2"],
        vec!["root", "--seen-by", &seen_by],
        vec!["--json", "diff", "alice:3", "now"],
        vec!["diff", "alice:2", "now"],
        vec!["diff", "now", &heads],
        vec!["log"],
        vec!["log", "--graph"],
        vec!["--json", "log"],
        vec!["log", "--graph", "--limit", "3"],
        vec!["--json", "conflicts", "/t"],
        vec!["conflicts", "/t"],
        vec!["--json", "conflicts", "/t", "--at", "alice:4"],
        vec!["conflicts", "/t", "--without", &bob],
        vec!["--json", "conflicts", "/t", "--heads", &head],
    ];
    for args in &asked {
        let local = a.ok(args);
        let remote = node
            .cli(args)
            .unwrap_or_else(|e| panic!("lcloud --node {args:?} failed: {e}"));
        // (`cli` trims the answer at both ends, `ok` at its end: a graph's first row may
        // start with an empty lane.)
        assert_eq!(
            remote,
            local.trim_start(),
            "lcloud {args:?}: the node answered otherwise"
        );
    }
    // The answers are about this history, not empty ones.
    let at2: serde_json::Value =
        serde_json::from_str(&node.cli(&["--json", "state", "--at", "alice:2"]).unwrap()).unwrap();
    assert_eq!(at2, serde_json::json!({"v": 1}));
    let conflicts: serde_json::Value =
        serde_json::from_str(&node.cli(&["--json", "conflicts", "/t"]).unwrap()).unwrap();
    assert_eq!(conflicts["values"].as_array().unwrap().len(), 2);
    let before_heal: serde_json::Value = serde_json::from_str(
        &node
            .cli(&["--json", "conflicts", "/t", "--at", "alice:4"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(before_heal["values"][0]["value"], "from alice");
    assert_eq!(before_heal["values"].as_array().unwrap().len(), 1);

    // Pages, newest first: each page's cursor leads to the next, and together they are the
    // whole log.
    let whole: serde_json::Value =
        serde_json::from_str(&node.cli(&["--json", "log"]).unwrap()).unwrap();
    let whole = whole["log"].as_array().unwrap().clone();
    assert_eq!(whole.len(), 8, "the genesis and seven writes");
    let mut paged = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut args = vec!["--json", "log", "--limit", "3"];
        if let Some(b) = &before {
            args.extend(["--before", b.as_str()]);
        }
        let page: serde_json::Value = serde_json::from_str(&node.cli(&args).unwrap()).unwrap();
        assert_eq!(
            page,
            serde_json::from_str::<serde_json::Value>(&a.ok(&args)).unwrap(),
            "a page {args:?}"
        );
        paged.extend(page["log"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, whole);

    // What cannot be answered is refused by name, as on the store.
    for (args, says) in [
        (vec!["state", "--at", "alice:99"], "has only"),
        (vec!["conflicts", "/nothing"], "no register value"),
        (vec!["log", "--before", "junk"], "bad cursor"),
        (vec!["state", "--without", "nobody"], "unknown node"),
        (vec!["diff", "alice:2", "@zzzz"], "experience"),
    ] {
        let err = node.cli(&args).expect_err("refused");
        assert!(err.contains(says), "lcloud --node {args:?}: {err}");
        let out = a.run(&args);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "lcloud {args:?} on the store"
        );
    }
}
