//! Divergence bisection (issue 21): two nodes hold one history of 100 000 experiences, and
//! one node's store was damaged in this test build (feature `damage` of lcloud-store: every
//! cut holding a planted experience answers with a leaf nobody wrote). `lcloud bisect` must
//! name that experience, with the root both agree on just before it, in at most
//! 1 + ⌈log₂ 100 000⌉ = 18 root comparisons; with the damage gone, it finds no divergence.

mod common;

use common::procs::NodeProc;
use common::{lcloud, ok};
use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, Genesis, NodeId, Op, Path, Replica, Value};

const EXPERIENCES: usize = 100_000;

#[test]
fn bisect_names_the_experience_after_which_a_damaged_store_differs() {
    let tmp = tempfile::tempdir().unwrap();
    // Three writers in turn, each on top of what the others wrote: one experience each time.
    let keys: Vec<SigningKey> = (1..=3u8).map(|k| SigningKey::from([k; 32])).collect();
    let genesis = Experience::create_genesis(&keys[0], Genesis::open("bisect"));
    let mut r = Replica::new(genesis).unwrap();
    for i in 0..EXPERIENCES - 1 {
        let op = Op::Set {
            path: Path::from(vec![format!("k{}", i % 1000)]),
            value: Value::Int(i as i64),
        };
        r.write(&keys[i % 3], vec![op]).unwrap();
    }
    assert_eq!(r.lattice().len(), EXPERIENCES);
    let records: Vec<Vec<u8>> = r.lattice().iter().map(|e| e.to_bytes()).collect();
    let bundle = lcloud_store::bundle::encode(&r.cloud(), records.iter().map(|x| x.as_slice()));
    let file = tmp.path().join("all.bundle");
    std::fs::write(&file, bundle).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        ok(dir, &["join", file.to_str().unwrap()]);
    }
    assert_eq!(ok(&a, &["root"]), ok(&b, &["root"]));

    // The damage: b's answers for every cut that holds the planted experience.
    let planted = r.lattice().get(61_803);
    let author: NodeId = planted.author();
    std::fs::write(
        b.join("damage"),
        format!("{}:{}", author.to_hex(), planted.seq()),
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(
        tmp.path(),
        &["--json", "bisect", a.to_str().unwrap(), b.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(report["diverged"], true, "{report}");
    assert_eq!(
        report["experience"]["id"],
        planted.id().to_hex(),
        "{report}"
    );
    assert_eq!(report["experience"]["seq"], planted.seq(), "{report}");
    assert_eq!(report["compared"], EXPERIENCES, "{report}");
    let comparisons = report["comparisons"].as_u64().unwrap();
    assert!(comparisons <= 18, "{comparisons} root comparisons");
    assert_eq!(report["agree_at"]["a"], report["agree_at"]["b"], "{report}");
    assert_ne!(
        report["differ_at"]["a"], report["differ_at"]["b"],
        "{report}"
    );
    // The roots are each node's own answers at those cuts.
    let at = |clock: &serde_json::Value| -> String {
        clock
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, s)| format!("{n}:{s}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let differ = at(&report["differ_at"]["clock"]);
    assert_eq!(
        ok(&b, &["root", "--at", &differ]),
        report["differ_at"]["b"].as_str().unwrap()
    );
    assert_eq!(
        ok(&a, &["root", "--at", &differ]),
        report["differ_at"]["a"].as_str().unwrap()
    );
    let text = ok(
        tmp.path(),
        &["bisect", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert!(
        text.contains(&planted.id().to_hex()) && text.contains("both have root"),
        "{text}"
    );

    // The same, asking two running nodes over their APIs (`GET /api/root?at=CLOCK`).
    {
        let (na, nb) = (NodeProc::start(&a, &[]), NodeProc::start(&b, &[]));
        let token = |d: &std::path::Path| d.join("admin.token").to_str().unwrap().to_owned();
        let report: serde_json::Value = serde_json::from_str(&ok(
            tmp.path(),
            &[
                "--json",
                "bisect",
                &na.api,
                &nb.api,
                "--token-a",
                &token(&a),
                "--token-b",
                &token(&b),
            ],
        ))
        .unwrap();
        assert_eq!(
            report["experience"]["id"],
            planted.id().to_hex(),
            "{report}"
        );
        assert!(report["comparisons"].as_u64().unwrap() <= 18, "{report}");
        // A cut a node does not hold, and one that is not a clock, are refused by name.
        let ahead = format!("{}:{}", author.to_hex(), EXPERIENCES);
        let out = lcloud(
            tmp.path(),
            &[
                "--node",
                &na.api,
                "--token-file",
                &token(&a),
                "root",
                "--at",
                &ahead,
            ],
        );
        assert!(!out.status.success());
        let addr = na.api.trim_start_matches("http://");
        let (status, body) = common::request(
            addr,
            "GET",
            &format!("/api/root?at={ahead}"),
            &common::auth_line(&na.api),
            "",
        );
        assert!(
            status == 404 && body.contains("has only"),
            "{status} {body}"
        );
        let (status, body) = common::request(
            addr,
            "GET",
            "/api/root?at=nobody:3",
            &common::auth_line(&na.api),
            "",
        );
        assert!(
            status == 422 && body.contains("bad clock"),
            "{status} {body}"
        );
    }

    // Without the damage, the two agree everywhere, found with one comparison.
    std::fs::remove_file(b.join("damage")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(
        tmp.path(),
        &["--json", "bisect", a.to_str().unwrap(), b.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(report["diverged"], false, "{report}");
    assert_eq!(report["comparisons"], 1, "{report}");
    assert_eq!(report["root"], ok(&a, &["root"]).as_str(), "{report}");

    // Not two node directories: said so.
    let out = lcloud(
        tmp.path(),
        &[
            "bisect",
            a.to_str().unwrap(),
            tmp.path().join("none").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds no λCLOUD store"),
        "{err}"
    );
}
