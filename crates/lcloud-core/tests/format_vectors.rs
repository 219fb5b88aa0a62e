//! Format version 1 test vectors: bytes written by this version that every future version must
//! still decode to the same experience with the same id. Regenerate only for a new format
//! version (`LCLOUD_WRITE_VECTORS=1`), never to make a failing test pass.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use lcloud_core::{Experience, Id, Ledger, Op, Replica, validate};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The experiences the vectors hold: a genesis with members, and one of each op kind.
fn make() -> Vec<Experience> {
    let g = genesis_with(Some(vec![node(1)]), lcloud_core::ForkPolicy::Quarantine);
    let mut r = Replica::new(g.clone()).unwrap();
    let e1 = r
        .write(
            &key(1),
            vec![
                set(
                    "/users/alice",
                    r#"{"visits": 1, "tags": ["a", 2, 3.5, null, true]}"#,
                ),
                Op::Incr {
                    path: p("/users/alice/visits"),
                    by: -1,
                },
                Op::Add {
                    path: p("/set"),
                    value: v(r#""x""#),
                },
                Op::Remove {
                    path: p("/set"),
                    value: v(r#""y""#),
                },
                Op::Del { path: p("/gone") },
                Op::Call {
                    morphism: Ledger::id(),
                    args: v(r#"{"op":"deposit","account":"a","amount":1}"#),
                },
            ],
        )
        .unwrap();
    let e2 = r
        .write(&key(0), vec![Op::AddMember { node: node(2) }])
        .unwrap();
    vec![
        g.into_inner(),
        Arc::unwrap_or_clone(e1).into_inner(),
        Arc::unwrap_or_clone(e2).into_inner(),
    ]
}

#[test]
fn version_1_vectors_still_decode_to_the_same_experiences() {
    let exps = make();
    if std::env::var("LCLOUD_WRITE_VECTORS").is_ok() {
        for (i, e) in exps.iter().enumerate() {
            std::fs::write(dir().join(format!("v1-{i}.cbor")), e.to_bytes()).unwrap();
            std::fs::write(dir().join(format!("v1-{i}.id")), e.id().to_hex()).unwrap();
        }
    }
    let cloud = exps[0].id();
    for (i, made) in exps.iter().enumerate() {
        let bytes = std::fs::read(dir().join(format!("v1-{i}.cbor"))).unwrap();
        let id = std::fs::read_to_string(dir().join(format!("v1-{i}.id"))).unwrap();
        let decoded = validate(&bytes, &cloud).unwrap();
        assert_eq!(
            decoded.id(),
            Id::from_hex(id.trim()).unwrap(),
            "vector {i} id"
        );
        assert_eq!(
            decoded.to_bytes(),
            bytes,
            "vector {i} re-encodes identically"
        );
        assert_eq!(
            *decoded, *made,
            "vector {i} decodes to what this version makes"
        );
    }
}
