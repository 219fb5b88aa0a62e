//! Stores written by older formats open in this one and keep everything: fixtures of formats
//! 1, 3, 4 and 6, converted on open, checked against the same history imported afresh.

mod common;

use std::path::Path;

use common::cli_node::Node;
use common::lcloud_stdin;

/// A store written by format 4 (`tests/fixtures/v4-store`, made by
/// `tests/fixtures/make-v4-store.sh` with the lcloud of 7e56005), whose counters kept one
/// element per increment op and whose checkpoint (tag `0x02`) names each of them: opening it
/// merges the stored leaves as the fold now merges increments, so `verify` (persisted fold =
/// refold) passes, the counters are what the script wrote, and the root, now and at past cuts
/// (through the old checkpoint), is the root of the same history imported into a new store.
#[test]
fn a_format_4_store_merges_its_increments_and_keeps_everything() {
    let a = fixture_node("v4-store");
    let state = a.state();
    // Bob's 5 survive Alice's concurrent reset; Alice's 2 after it, then 2 more.
    assert_eq!(
        (state["hits"].clone(), state["big"].clone()),
        (9.into(), 4201.into())
    );
    assert!(a.ok(&["verify"]).contains("verified"), "verify passes");
    // The same history, refolded from scratch in a new store.
    let b = refolded(&a);
    assert_eq!(a.root(), b.root());
    assert_eq!(b.state(), state);
    let clock: serde_json::Value = serde_json::from_str(&a.ok(&["--json", "clock"])).unwrap();
    let me = a.ok(&["id"]).trim().to_string();
    let entries: Vec<(String, u64)> = clock["clock"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let mine = entries
        .iter()
        .find(|(k, _)| me.contains(k.as_str()))
        .unwrap()
        .1;
    for back in 0..4 {
        let cut: Vec<String> = entries
            .iter()
            .map(|(k, s)| {
                let s = if me.contains(k.as_str()) {
                    mine - back
                } else {
                    *s
                };
                format!("{k}:{s}")
            })
            .collect();
        let cut = cut.join(",");
        assert_eq!(
            a.ok(&["root", "--at", &cut]),
            b.ok(&["root", "--at", &cut]),
            "at {cut}"
        );
    }
    // New increments merge as they fold, beside the old ones.
    let ops: String = (0..100)
        .map(|_| "{\"op\":\"incr\",\"path\":\"/big\"}\n")
        .collect();
    assert!(
        lcloud_stdin(a.path(), &["batch"], ops.as_bytes())
            .status
            .success()
    );
    assert_eq!(a.state()["big"], 4301);
    assert!(a.ok(&["verify"]).contains("verified"));
}

/// A store written by format 3 (groups with record lengths and every index entry, checkpoints
/// that copy every leaf; `tests/fixtures/v3-store`, made by `tests/fixtures/make-v3-store.sh`
/// with the lcloud of 572e48f: Alice and Bob wrote, exchanged bundles, then Alice wrote 4100
/// ops, enough for a checkpoint, many of them values long enough that format 4 names them
/// instead of copying them) opens as it is, serves the same state, root and time travel
/// (through its old checkpoint), and takes new writes, new groups and a new checkpoint
/// beside the old ones.
#[test]
fn a_format_3_store_opens_as_it_is_and_keeps_everything() {
    let a = fixture_node("v3-store");
    let long = |s: &str| format!("{s}-{}", "v".repeat(42));
    // Roots at cuts before, at and after the checkpoint, as that lcloud printed them.
    let cuts = [
        (
            "alice:8,16a44ec1:6",
            "dacbe62dcc6da363aa070f8488635bb4c381e7ff8e134bc6908316dfbd77e74e",
        ),
        (
            "alice:7,16a44ec1:6",
            "0aeb2d378608644d7f53420df1f456f9775e5cbb91d168e461ddbcf3cf23fc63",
        ),
        (
            "alice:6,16a44ec1:6",
            "fa361affcea5c706970b38453baa2d09cc557b6118739bed5d4ed1509df932d4",
        ),
        (
            "alice:5,16a44ec1:3",
            "9993cf9383a1d92c8a0a50cdb651d7868edc238a845953287bdd24d34a446919",
        ),
        (
            "alice:3,16a44ec1:6",
            "2a9a7089032c78b3468096c48524be65abce415ee7b56e50385556f06707af79",
        ),
        (
            "alice:2",
            "cf5ab77bab04fd02c612bccd0ed7989016d12d2c0bf7fb385f4749956aa3bcaf",
        ),
    ];
    let check_cuts = || {
        for (cut, root) in cuts {
            assert_eq!(
                a.ok(&["--json", "root", "--at", cut]),
                format!("{{\"root\":\"{root}\"}}"),
                "at {cut}"
            );
        }
    };
    assert_eq!(
        a.ok(&["--json", "root"]),
        r#"{"root":"5e7c833d1709bbb8a5a4163e35c05e3940237ccce4121ed885da8eeaf6bbc1a2"}"#
    );
    let state = a.state();
    assert_eq!(state["title"], long("title"));
    assert_eq!(state["count"], 4);
    assert_eq!(state["k"]["1"], long("k2001-2"));
    check_cuts();
    assert!(a.ok(&["verify"]).contains("verified 15 experiences"));
    // New writes go into new groups (format 4) after the old ones, and 4100 more ops into a
    // new checkpoint after the old one.
    a.ok(&["set", "/title", &format!("\"{}\"", long("new title"))]);
    let ops: String = (0..4100)
        .map(|i| {
            format!(
                "{{\"op\":\"set\",\"path\":\"/k/{}\",\"value\":\"{}\"}}\n",
                i % 500,
                long(&i.to_string())
            )
        })
        .collect();
    assert!(
        lcloud_stdin(a.path(), &["batch"], ops.as_bytes())
            .status
            .success()
    );
    a.ok(&["incr", "/count"]);
    let state = a.state();
    assert_eq!(
        (state["count"].clone(), state["title"].clone()),
        (5.into(), long("new title").into())
    );
    assert_eq!(state["k"]["1"], long("4001"));
    assert!(a.ok(&["verify"]).contains("verified 18 experiences"));
    let log = a.ok(&["log"]);
    assert!(
        log.lines().any(|l| l.ends_with("alice seq 11  set×4100")),
        "{log}"
    );
    check_cuts();
    // Time travel to now and to just before the last write reads the new checkpoint.
    let now = a.ok(&["clock"]);
    assert_eq!(a.ok(&["root", "--at", &now]), a.root());
    let before = now.replace("alice:12", "alice:11");
    assert_ne!(before, now);
    let at: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "state", "--at", &before])).unwrap();
    assert_eq!(
        (at["count"].clone(), at["k"]["1"].clone()),
        (4.into(), long("4001").into())
    );
}

/// A store written by format 1 (one record per experience and a separate index, before record
/// groups; `tests/fixtures/v1-store`, made by the lcloud of 7cf093d: Alice's store after she
/// and Bob wrote and exchanged bundles) opens, converted, with the same history, state, root
/// and time travel, and takes new writes.
#[test]
fn a_format_1_store_is_converted_on_open_and_keeps_everything() {
    let a = fixture_node("v1-store");
    let root = "a09171583bb37bbce9094f72b5638d3f4f08b936bbcbf9f4c3d0108ba10059db";
    assert_eq!(
        a.ok(&["--json", "root"]),
        format!("{{\"root\":\"{root}\"}}")
    );
    assert_eq!(
        a.state(),
        serde_json::json!({"count": 7, "tags": ["x", "y"],
            "users": {"alice": {"visits": 1}, "bob": {"visits": 2}}})
    );
    assert!(a.ok(&["verify"]).contains("verified 7 experiences"));
    let cut = "alice:2,9392c7b1:1";
    assert_eq!(
        a.ok(&["--json", "state", "--at", cut]),
        r#"{"users":{"alice":{"visits":1},"bob":{"visits":2}}}"#
    );
    assert_eq!(
        a.ok(&["--json", "root", "--at", cut]),
        r#"{"root":"cdaad2feb0960a0f76125646984c5b835d2296053b7c85634a19567d16ebde2a"}"#
    );
    assert_eq!(a.ok(&["log"]).lines().count(), 7);
    a.ok(&["incr", "/count"]);
    assert_eq!(a.state()["count"], 8);
    assert!(a.ok(&["verify"]).contains("verified 8 experiences"));
    // The time travel index covers the converted history and the new write alike.
    assert_eq!(
        a.ok(&["--json", "state", "--at", cut]),
        r#"{"users":{"alice":{"visits":1},"bob":{"visits":2}}}"#
    );
}

/// A new node holding everything `a` holds, imported afresh (so refolded from scratch).
fn refolded(a: &Node) -> Node {
    let b = Node::new();
    let file = a.bundle("all.bundle");
    b.ok(&["join", file.to_str().unwrap()]);
    b.import(&file);
    b
}

/// A copy of the fixture store `name` in a new node's directory.
fn fixture_node(name: &str) -> Node {
    let a = Node::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    for f in ["store.redb", "identity.key", "signed-seq"] {
        std::fs::copy(fixture.join(f), a.path().join(f)).unwrap();
    }
    a
}

/// Stores written by format 6 (`tests/fixtures/v6-store` and `v6-compacted`, made by
/// `tests/fixtures/make-v6-store.sh` with the lcloud of 57bc2e7): one member incremented a
/// counter and added to a set in 600 experiences, then its node attested checkpoint 512, which
/// settles it. Format 6 folded without settling; opening the store replays it once, so the
/// counter's increments below the checkpoint are one element, `verify` passes, and the root
/// is that of the same history imported afresh. The copy compacted by format 6 cannot be
/// replayed below its base, which holds what a settle merges: it is refused, naming what to do.
#[test]
fn a_format_6_store_settles_on_open_and_a_compacted_one_is_refused_by_name() {
    let a = fixture_node("v6-store");
    let state = a.state();
    assert_eq!(state["hits"], 600);
    assert!(a.ok(&["verify"]).contains("verified"), "verify passes");
    let store = lcloud_store::Store::open(a.path()).unwrap();
    let doc = store.state().unwrap().doc;
    let hits = doc
        .leaf(&lcloud_core::Path::from(vec!["hits".into()]))
        .unwrap();
    assert!(hits.incs.len() < 100, "{} elements", hits.incs.len());
    drop(store);
    let b = refolded(&a);
    assert_eq!(a.root(), b.root());
    assert_eq!(b.state(), state);

    let c = fixture_node("v6-compacted");
    let why = c.fails(&["state"]);
    assert!(
        why.contains("cannot be opened") && why.contains("lcloud join --shallow"),
        "{why}"
    );
    // Refused, not converted: still format 6, and refused again.
    {
        use redb::ReadableDatabase;
        const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let db = redb::Database::open(c.path().join("store.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let format = txn
            .open_table(META)
            .unwrap()
            .get("format")
            .unwrap()
            .unwrap();
        assert_eq!(format.value(), [6u8]);
    }
    assert_eq!(c.fails(&["state"]), why);
}
