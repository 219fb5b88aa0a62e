//! Lists and text through the `lcloud` binary and running nodes: `insert`, `delete`,
//! `splice` and `move` on a store and through `--node`, the same edits as JSON in
//! `/api/ops`, clear refusals, two partitioned nodes typing at one place that merge without
//! interleaving, and an editing trace replayed through a node's API to its final text.

mod common;

use std::io::Read;

use common::procs::{NodeProc, cloud, converge};
use common::{auth_line, lcloud, ok, request};

fn state(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&ok(dir, &["--json", "state"])).unwrap()
}

fn fails(dir: &std::path::Path, args: &[&str]) -> String {
    let out = lcloud(dir, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn edits_by_index_on_a_store_read_back_as_strings_and_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init", "--cloud", "lists", "--open"]);
    let first: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["--json", "splice", "/para", "0", "0", "Hello world"],
    ))
    .unwrap();
    let first = format!("@{}", first["id"].as_str().unwrap());
    ok(d, &["splice", "/para", "6", "5", "thére"]);
    ok(d, &["insert", "/para", "11", "\"!\""]);
    ok(d, &["delete", "/para", "0", "1"]);
    ok(d, &["insert", "/todo", "0", "\"milk\""]);
    ok(d, &["insert", "/todo", "1", "{\"eggs\": 12}"]);
    ok(d, &["insert", "/todo", "0", "\"bread\""]);
    ok(d, &["move", "/todo", "0", "2"]);
    ok(d, &["delete", "/todo", "0"]);
    assert_eq!(
        state(d),
        serde_json::json!({"para": "ello thére!", "todo": [{"eggs": 12}, "bread"]})
    );
    // A batch mixes edits and ops; each edit sees the ones before it.
    let batch = concat!(
        r#"{"op":"splice","path":"/para","index":0,"delete":0,"text":"H"}"#,
        "\n",
        r#"{"op":"delete","path":"/para","index":1,"count":4}"#,
        "\n",
        r#"{"op":"incr","path":"/n"}"#,
        "\n"
    );
    let out = common::lcloud_stdin(d, &["batch"], batch.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(d)["para"], " thére!".replacen(' ', "H ", 1));
    // Refusals name what is wrong, and write nothing.
    let root = ok(d, &["root"]);
    let e = fails(d, &["delete", "/para", "5", "9"]);
    assert!(e.contains("it holds 8 characters"), "{e}");
    let e = fails(d, &["splice", "/todo", "0", "0", "x"]);
    assert!(e.contains("not a text"), "{e}");
    let e = fails(d, &["move", "/para", "0", "1"]);
    assert!(e.contains("not a list"), "{e}");
    let e = fails(d, &["insert", "/n", "0", "1"]);
    assert!(e.contains("counter"), "{e}");
    let e = fails(d, &["set", "/para/x", "1"]);
    assert!(e.contains("holds a text"), "{e}");
    assert_eq!(ok(d, &["root"]), root);
    // The diff of a text is its splices: applied to the text before, they give the text now.
    let diff: serde_json::Value =
        serde_json::from_str(&ok(d, &["--json", "diff", &first, "now"])).unwrap();
    let para = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/para")
        .unwrap();
    let mut chars: Vec<char> = para["before"].as_str().unwrap().chars().collect();
    for s in para["splices"].as_array().unwrap() {
        let at = s["index"].as_u64().unwrap() as usize;
        let del = s["delete"].as_u64().unwrap() as usize;
        chars.splice(at..at + del, s["insert"].as_str().unwrap().chars());
    }
    assert_eq!(chars.into_iter().collect::<String>(), "H thére!");
    // Time travel from the store's index: the text as the first write left it.
    let then: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["--json", "state", "/para", "--heads", &first[1..]],
    ))
    .unwrap();
    assert_eq!(then, "Hello world");
    let human = ok(d, &["diff", &first, "now"]);
    assert!(
        human.contains("~ /para: ") && human.contains("splices"),
        "{human}"
    );
    let help = ok(d, &["splice", "--help"]);
    assert!(help.contains("Unicode scalar values"), "{help}");
}

fn isolate(node: &NodeProc, on: bool) {
    let (code, body) = request(
        &node.api,
        "POST",
        "/debug/isolate",
        &auth_line(node.api.trim_start_matches("http://")),
        &format!(r#"{{"on":{on}}}"#),
    );
    assert_eq!(code, 200, "{body}");
}

/// Two running nodes, cut apart, type at the same place (one through the CLI, one through
/// JSON in `/api/ops`) and move and delete list elements; healed, they converge to one
/// root, and each word stays whole.
#[test]
fn partitioned_nodes_type_at_one_place_and_merge_without_interleaving() {
    let base = tempfile::tempdir().unwrap();
    let dirs = cloud(base.path(), &["a", "b"], None);
    let a = NodeProc::start(&dirs[0], &[]);
    let b = NodeProc::start(&dirs[1], &[&a.p2p]);
    a.cli(&["splice", "/t", "0", "0", "<>"]).unwrap();
    a.cli(&["insert", "/l", "0", "1"]).unwrap();
    a.cli(&["insert", "/l", "1", "2"]).unwrap();
    a.cli(&["insert", "/l", "2", "3"]).unwrap();
    converge(&[&a, &b]);
    isolate(&a, true);
    isolate(&b, true);
    for (i, c) in "alpha".chars().enumerate() {
        a.cli(&["splice", "/t", &(1 + i).to_string(), "0", &c.to_string()])
            .unwrap();
    }
    a.cli(&["move", "/l", "0", "2"]).unwrap();
    let auth = auth_line(b.api.trim_start_matches("http://"));
    for (i, c) in "beta".chars().enumerate() {
        let body = format!(
            r#"{{"ops":[{{"op":"splice","path":"/t","index":{},"delete":0,"text":"{c}"}}]}}"#,
            1 + i
        );
        let (code, answer) = request(&b.api, "POST", "/api/ops", &auth, &body);
        assert_eq!(code, 200, "{answer}");
    }
    let (code, answer) = request(
        &b.api,
        "POST",
        "/api/ops",
        &auth,
        r#"{"ops":[{"op":"delete","path":"/l","index":0}]}"#,
    );
    assert_eq!(code, 200, "{answer}");
    // Bad edits are refused with the reason, as any bad op is.
    let (code, answer) = request(
        &b.api,
        "POST",
        "/api/ops",
        &auth,
        r#"{"ops":[{"op":"move","path":"/l","from":7,"to":0}]}"#,
    );
    assert_eq!(code, 422, "{answer}");
    assert!(answer.contains("index 7"), "{answer}");
    let (code, answer) = request(
        &b.api,
        "POST",
        "/api/ops",
        &auth,
        r#"{"ops":[{"op":"splice","path":"/t","index":0,"text":"x"}]}"#,
    );
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("delete"), "{answer}");
    isolate(&a, false);
    isolate(&b, false);
    converge(&[&a, &b]);
    let doc = a.state();
    assert_eq!(doc, b.state());
    let t = doc["t"].as_str().unwrap();
    assert!(t == "<alphabeta>" || t == "<betaalpha>", "{t}");
    // a moved element 1 to the end while b deleted it: the delete wins.
    assert_eq!(doc["l"], serde_json::json!([2, 3]));
}

/// `seph-blog1` (137 993 edits by one author) through a running node's API, 100 edits a
/// write, ends exactly as the trace does.
#[test]
fn an_editing_trace_replays_through_a_node_to_its_final_text() {
    let path = format!(
        "{}/../../data/editing-traces/seph-blog1.json.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let base = tempfile::tempdir().unwrap();
    let dirs = cloud(base.path(), &["a"], None);
    let a = NodeProc::start(&dirs[0], &[]);
    let auth = auth_line(a.api.trim_start_matches("http://"));
    let edits: Vec<serde_json::Value> = trace["txns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["patches"].as_array().unwrap().iter())
        .map(|p| {
            serde_json::json!({"op": "splice", "path": "/blog", "index": p[0], "delete": p[1], "text": p[2]})
        })
        .collect();
    assert_eq!(edits.len(), 137_993);
    for batch in edits.chunks(100) {
        let body = serde_json::json!({ "ops": batch }).to_string();
        let (code, answer) = request(&a.api, "POST", "/api/ops", &auth, &body);
        assert_eq!(code, 200, "{answer}");
    }
    let (code, body) = request(&a.api, "GET", "/api/state?path=/blog", &auth, "");
    assert_eq!(code, 200);
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        got == trace["endContent"],
        "the text differs from the trace's end"
    );
}
