//! Contracts through the `lcloud` binary (issue 18): deploy, list, state and call on a node's
//! directory; rejections in `log`; fuel signed into the call; hostile modules refused naming
//! the rule; time travel and restarts include contract state; and the bank partition story on
//! two real node daemons (`lcloud demo contracts`).

mod common;

use std::path::Path;

use common::{lcloud, ok};
use serde_json::Value as J;

fn json(dir: &Path, args: &[&str]) -> J {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &full)).unwrap()
}

/// A call or deploy the fold rejects: exit 3, the reason on stderr.
fn rejected(dir: &Path, args: &[&str]) -> String {
    let out = lcloud(dir, args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "lcloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap().trim_end().to_owned()
}

fn init(dir: &Path) {
    ok(dir, &["init", "--alias", "me", "--cloud", "c"]);
}

fn bank(base: &Path) -> std::path::PathBuf {
    let wasm = base.join("bank.wasm");
    std::fs::write(&wasm, lcloud_examples::BANK).unwrap();
    wasm
}

#[test]
fn deploy_list_state_and_call_on_a_directory() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    init(&dir);
    let wasm = bank(base.path());
    assert!(ok(&dir, &["contract", "list"]).contains("no contracts deployed"));
    let d = json(
        &dir,
        &[
            "contract",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "bank",
        ],
    );
    assert_eq!(d["accepted"], true, "{d}");
    let id = d["contract"].as_str().unwrap().to_owned();
    let list = json(&dir, &["contract", "list"]);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["name"], "bank");
    // Deploying the same module again is rejected: a contract is deployed once.
    let again = rejected(&dir, &["contract", "deploy", wasm.to_str().unwrap()]);
    assert!(again.contains("is already deployed"), "{again}");
    let before = ok(&dir, &["clock"]);
    ok(
        &dir,
        &["call", "bank", "mint", r#"{"to":"ann","amount":10}"#],
    );
    ok(
        &dir,
        &[
            "call",
            &id[..8],
            "transfer",
            r#"{"from":"ann","to":"bo","amount":4}"#,
        ],
    );
    let why = rejected(
        &dir,
        &[
            "call",
            "bank",
            "transfer",
            r#"{"from":"ann","to":"bo","amount":7}"#,
        ],
    );
    assert_eq!(
        why,
        "error: rejected: insufficient funds: ann holds 6, the transfer needs 7"
    );
    let state = json(&dir, &["contract", "state", "bank"]);
    assert_eq!(state["balance/ann"], "6");
    assert_eq!(state["balance/bo"], "4");
    assert_eq!(
        json(&dir, &["contract", "state", "bank", "balance/bo"]),
        "4"
    );
    // Who set each balance: the mint, then the transfer that fit; not the refused one.
    let writes = json(&dir, &["contract", "writes", "bank", "balance/ann"]);
    let changes: Vec<(&str, &str)> = writes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["function"].as_str().unwrap(),
                c["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [("mint", "10"), ("transfer", "6")], "{writes}");
    assert_eq!(
        (&writes["value"], &writes["complete"]),
        (&J::from("6"), &J::from(true))
    );
    let text = ok(&dir, &["contract", "writes", "bank", "balance/ann"]);
    assert!(
        text.ends_with("transfer by me (seq 5): \"6\"  <- shown"),
        "{text}"
    );
    let minted = writes["changes"][0]["experience"].as_str().unwrap();
    let at_mint = json(
        &dir,
        &[
            "contract",
            "writes",
            "bank",
            "balance/bo",
            "--heads",
            minted,
        ],
    );
    assert_eq!(at_mint["changes"], J::Array(vec![]), "{at_mint}");
    assert!(ok(&dir, &["contract", "writes", "bank", "balance/zed"]).contains("never set"));
    // A running node answers the same (`/api/contracts/{name}/writes`).
    {
        let node = common::procs::NodeProc::start(&dir, &[]);
        let args = ["--json", "contract", "writes", "bank", "balance/ann"];
        let remote: J = serde_json::from_str(&node.cli(&args).unwrap()).unwrap();
        assert_eq!(remote, writes);
        let at = ["contract", "writes", "bank", "balance/ann", "--at", &before];
        assert_eq!(node.cli(&at).unwrap(), "balance/ann was never set");
        let without = [
            "contract",
            "writes",
            "bank",
            "balance/ann",
            "--without",
            "me",
        ];
        let refused = node.cli(&without).unwrap_err();
        assert!(refused.contains("not deployed at that cut"), "{refused}");
    }
    // The rejection is in the history, with its reason.
    let log = json(&dir, &["log"]);
    let rejections: Vec<&J> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["rejected"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(rejections.len(), 2, "{log}");
    assert!(ok(&dir, &["log"]).contains("REJECTED op 0 (rejected: insufficient funds"));
    // Time travel includes the contracts' state: before the calls the root differs, and the
    // root read again from a restarted store is the same.
    let now = ok(&dir, &["root"]);
    assert_ne!(ok(&dir, &["root", "--at", &before]), now);
    ok(&dir, &["verify"]);
    assert_eq!(ok(&dir, &["root"]), now);
    // Bad input names what is wrong and writes nothing.
    let clock = ok(&dir, &["clock"]);
    for (args, says) in [
        (
            vec!["call", "nope", "mint", "{}"],
            "no contract named \"nope\"",
        ),
        (
            vec!["call", "bank", "mint", "{not json"],
            "ARGS is not JSON",
        ),
        (
            vec!["call", "bank", "mint", "{}", "--fuel", "0"],
            "--fuel must be between",
        ),
        (
            vec![
                "contract",
                "deploy",
                base.path().join("missing.wasm").to_str().unwrap(),
            ],
            "cannot read",
        ),
        (
            vec!["contract", "deploy", "/etc/hostname", "--name", "x"],
            "not a WebAssembly module",
        ),
        (
            vec![
                "contract",
                "deploy",
                wasm.to_str().unwrap(),
                "--name",
                "a b",
            ],
            "bad contract name",
        ),
    ] {
        let out = lcloud(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(ok(&dir, &["clock"]), clock);
}

#[test]
fn fuel_is_signed_into_the_call_and_hostile_modules_are_refused_by_rule() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    init(&dir);
    let wasm = bank(base.path());
    ok(
        &dir,
        &[
            "contract",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "bank",
        ],
    );
    ok(
        &dir,
        &["call", "bank", "mint", r#"{"to":"ann","amount":10}"#],
    );
    let why = rejected(
        &dir,
        &[
            "call",
            "bank",
            "mint",
            r#"{"to":"ann","amount":1}"#,
            "--fuel",
            "300",
        ],
    );
    assert_eq!(why, "error: rejected: out of fuel (limit 300)");
    for (name, wat, says) in [
        (
            "float",
            r#"(module (memory (export "memory") 1) (func (export "f") (drop (f32.const 1))))"#,
            "floating-point",
        ),
        (
            "import",
            r#"(module (import "env" "clock" (func)) (memory (export "memory") 1))"#,
            "import env.clock",
        ),
        (
            "memory",
            r#"(module (memory (export "memory") 65))"#,
            "memory",
        ),
    ] {
        let file = base.path().join(format!("{name}.wasm"));
        std::fs::write(&file, wat::parse_str(wat).unwrap()).unwrap();
        let why = rejected(&dir, &["contract", "deploy", file.to_str().unwrap()]);
        assert!(
            why.contains("deploy refused") && why.contains(says),
            "{name}: {why}"
        );
    }
    // An endless loop runs out of its fuel, the same on every run.
    let spin = base.path().join("spin.wasm");
    std::fs::write(
        &spin,
        wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "spin") (loop (br 0))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    ok(
        &dir,
        &[
            "contract",
            "deploy",
            spin.to_str().unwrap(),
            "--name",
            "spin",
        ],
    );
    let why = rejected(&dir, &["call", "spin", "spin", "{}", "--fuel", "100000"]);
    assert_eq!(why, "error: rejected: out of fuel (limit 100000)");
    ok(&dir, &["verify"]);
}

#[test]
fn the_bank_story_on_two_node_daemons_rejects_the_same_spend_on_both() {
    let base = tempfile::tempdir().unwrap();
    let demo = base.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["demo", "contracts", "--dir"])
        .arg(&demo)
        .env_remove("LCLOUD_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("not linearizability"), "{text}");
    // Both spends were accepted during the partition (the demo fails otherwise); after it,
    // the stores the daemons left agree on the root, the state and the one rejection.
    let (a, b) = (demo.join("alice"), demo.join("bob"));
    assert_eq!(ok(&a, &["root"]), ok(&b, &["root"]));
    let state_a = json(&a, &["contract", "state", "bank"]);
    // Bob named only the contract he deployed (the schema); the bank is alice's.
    let list = json(&b, &["contract", "list"]);
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(state_a, json(&b, &["contract", "state", &id]));
    let total: i64 = state_a
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("balance/"))
        .map(|(_, v)| v.as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 100, "{state_a}");
    let rejections = |dir: &Path| -> Vec<J> {
        json(dir, &["log"])["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e["rejected"].as_array().unwrap().is_empty())
            .cloned()
            .collect()
    };
    let (ra, rb) = (rejections(&a), rejections(&b));
    assert_eq!(ra, rb);
    let reasons: Vec<&str> = ra
        .iter()
        .map(|e| e["rejected"][0]["reason"].as_str().unwrap())
        .collect();
    let spends = reasons
        .iter()
        .filter(|r| r.starts_with("rejected: insufficient funds: shared holds "))
        .count();
    assert_eq!(spends, 1, "{reasons:?}");
    assert!(
        reasons.contains(&r#"rejected: eve breaks the rules: /: "name" is required"#),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // The guarded path on both daemons' stores: the accepted entry, not the refused write.
    let people = serde_json::json!({"ada": {"name": "Ada", "age": 36}});
    assert_eq!(json(&a, &["state", "/people"]), people);
    assert_eq!(json(&b, &["state", "/people"]), people);
}

/// The `schema` example guards `/people`: entries arrive only through its calls and keep its
/// rules; a direct write under the path is refused before it is signed; every read (the fast
/// path of `get`, the loaded document, time travel) shows what the contract wrote.
#[test]
fn a_schema_contract_guards_a_path_against_direct_writes_and_bad_entries() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    init(&dir);
    let wasm = base.path().join("schema.wasm");
    std::fs::write(&wasm, lcloud_examples::SCHEMA).unwrap();
    ok(&dir, &["set", "/title", r#""staff""#]);
    let rules = r#"{"path": "/people", "rules": {"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}}"#;
    let d = json(
        &dir,
        &[
            "contract",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "people",
            "--init",
            rules,
        ],
    );
    assert_eq!(d["accepted"], true, "{d}");
    ok(
        &dir,
        &[
            "call",
            "people",
            "put",
            r#"{"key":"ada","value":{"name":"Ada","age":36}}"#,
        ],
    );
    let before_bad = ok(&dir, &["clock"]);
    let why = rejected(
        &dir,
        &[
            "call",
            "people",
            "put",
            r#"{"key":"bob","value":{"age":-3}}"#,
        ],
    );
    assert!(
        why.contains(r#"bob breaks the rules: /: "name" is required"#),
        "{why}"
    );
    // A direct write under the guarded path: refused, naming the guard, and nothing written.
    let seq = ok(&dir, &["clock"]);
    let out = lcloud(&dir, &["set", "/people/ada/age", "99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/people is guarded by contract"), "{err}");
    assert_eq!(
        ok(&dir, &["clock"]),
        seq,
        "a refused write changed the node"
    );
    let people = json(&dir, &["state", "/people"]);
    assert_eq!(
        people,
        serde_json::json!({"ada": {"name": "Ada", "age": 36}})
    );
    assert_eq!(json(&dir, &["state", "/people/ada/age"]), 36);
    let all = json(&dir, &["state"]);
    assert_eq!(all["title"], "staff");
    assert_eq!(all["people"]["ada"]["name"], "Ada");
    ok(&dir, &["call", "people", "remove", r#"{"key":"ada"}"#]);
    assert!(json(&dir, &["state"]).get("people").is_none());
    // Time travel: the entry as it was.
    let past = json(
        &dir,
        &["state", "/people/ada/name", "--at", before_bad.trim()],
    );
    assert_eq!(past, "Ada");
}
