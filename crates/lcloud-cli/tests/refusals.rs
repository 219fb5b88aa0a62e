//! Writes the fold would lose or misread are refused, with a reason, and change nothing: a
//! quarantined chain, paths through values of another type, values nested past the decoder's
//! limit (issue 17, items 1, 5 and 7).

mod common;

use std::path::Path;
use std::process::Output;

use common::{lcloud, ok};

/// Runs a write that must be refused: exit 1 with a one-line error; returns it.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out: Output = lcloud(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "lcloud {args:?} must be refused"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A store in `base/NAME` (made with `init ARGS`) whose own chain forked at seq 3: a restored
/// backup written in both copies, the other copy's bundle imported.
fn forked_store(base: &Path, name: &str, init: &[&str]) -> std::path::PathBuf {
    let a = base.join(name);
    let b = base.join(format!("{name}-backup"));
    ok(&a, &[&["init", "--alias", name][..], init].concat());
    ok(&a, &["set", "/x", "1"]);
    copy_dir(&a, &b);
    ok(&a, &["set", "/x", "\"A\""]);
    ok(&b, &["set", "/x", "\"B\""]);
    let bundle = base.join(format!("{name}.bundle"));
    ok(&b, &["export", bundle.to_str().unwrap()]);
    ok(&a, &["import", bundle.to_str().unwrap()]);
    a
}

#[test]
fn a_node_whose_chain_is_quarantined_refuses_to_write() {
    let tmp = tempfile::tempdir().unwrap();
    let a = forked_store(tmp.path(), "alice", &["--quarantine-forks"]);
    assert!(ok(&a, &["forks"]).contains("seq 3"), "the fork is proven");
    let (state, root) = (ok(&a, &["--json", "state"]), ok(&a, &["root"]));
    let err = refused(&a, &["set", "/y", "\"after fork\""]);
    assert!(err.contains("forked at seq 3"), "{err}");
    assert!(err.contains("new identity"), "says what to do: {err}");
    refused(&a, &["incr", "/n"]);
    assert_eq!(ok(&a, &["--json", "state"]), state);
    assert_eq!(ok(&a, &["root"]), root);
    // Under the default rule both branches fold, and writing goes on.
    let c = forked_store(tmp.path(), "carol", &[]);
    ok(&c, &["set", "/y", "1"]);
    assert!(ok(&c, &["--json", "state"]).contains("\"y\":1"));
}

#[test]
fn a_write_through_a_value_of_another_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["init", "--alias", "alice"]);
    ok(a, &["set", "/list", "[1,2,3]"]);
    ok(a, &["set", "/name", "\"x\""]);
    ok(a, &["add", "/tags", "\"t\""]);
    ok(a, &["incr", "/n"]);
    let state = ok(a, &["--json", "state"]);
    let err = refused(a, &["set", "/list/1", "9"]);
    assert!(err.contains("/list holds a list"), "{err}");
    let err = refused(a, &["incr", "/list"]);
    assert!(
        err.contains("/list: it holds a list, not a counter"),
        "{err}"
    );
    let err = refused(a, &["set", "/name/first", "\"y\""]);
    assert!(err.contains("/name holds a string"), "{err}");
    let err = refused(a, &["add", "/n", "1"]);
    assert!(err.contains("holds a counter, not a set"), "{err}");
    let err = refused(a, &["incr", "/tags"]);
    assert!(err.contains("holds a set, not a counter"), "{err}");
    let err = refused(a, &["del", "/list/0"]);
    assert!(err.contains("/list/0"), "{err}");
    assert_eq!(ok(a, &["--json", "state"]), state, "nothing changed");
    // Replacing a value whole, or writing into a map, is fine.
    ok(a, &["set", "/list", "{\"a\": 1}"]);
    ok(a, &["set", "/list/b", "2"]);
    ok(a, &["set", "/name", "5"]);
    ok(a, &["incr", "/name"]);
    let state: serde_json::Value = serde_json::from_str(&ok(a, &["--json", "state"])).unwrap();
    assert_eq!(state["list"], serde_json::json!({"a": 1, "b": 2}));
    assert_eq!(state["name"], serde_json::json!(6));
}

/// `[[…[1]…]]`, `depth` lists deep.
pub fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn values_nested_past_the_limit_are_refused_and_every_accepted_one_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["init", "--alias", "alice"]);
    let max = lcloud_core::VALUE_DEPTH_MAX;
    for depth in max - 3..=max + 3 {
        let path = format!("/d{depth}");
        let value = nested(depth);
        if depth <= max {
            ok(a, &["set", &path, &value]);
            let map = format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth));
            ok(a, &["set", &format!("/m{depth}"), &map]);
        } else {
            let err = refused(a, &["set", &path, &value]);
            assert!(err.contains(&format!("at most {max}")), "{err}");
        }
    }
    // Everything accepted reads back: state, the history, verification, a fresh replay.
    let state: serde_json::Value = serde_json::from_str(&ok(a, &["--json", "state"])).unwrap();
    for depth in max - 3..=max {
        let want: serde_json::Value = serde_json::from_str(&nested(depth)).unwrap();
        assert_eq!(state[format!("d{depth}")], want);
    }
    assert!(state.get(format!("d{}", max + 1)).is_none());
    ok(a, &["verify"]);
    ok(a, &["log"]);
    ok(a, &["state", "--at", "alice:3"]);
    let bundle = tmp.path().join("all.bundle");
    ok(a, &["export", bundle.to_str().unwrap()]);
    let b = tmp.path().join("b");
    ok(&b, &["join", bundle.to_str().unwrap()]);
    assert_eq!(ok(&b, &["root"]), ok(a, &["root"]));
    // The genesis's initial value obeys the same limit.
    let c = tmp.path().join("c");
    let err = refused(
        &c,
        &["init", "--initial", &format!("{{\"a\": {}}}", nested(max))],
    );
    assert!(err.contains(&format!("at most {max}")), "{err}");
    ok(
        &c,
        &[
            "init",
            "--initial",
            &format!("{{\"a\": {}}}", nested(max - 1)),
        ],
    );
}
