//! When writers disagree on a path's type. A node refuses its own write that would reshape
//! what it sees (`lcloud_core::write`), but concurrent writers cannot see each other: their
//! experiences are all valid, and the document rule decides what is visible, the same on every
//! node whatever the order of arrival. At one path: set elements if any, else a counter, else
//! the children as a map, else the winning register (docs/format.md, "Document").

mod common;

use common::*;
use lcloud_core::{Experience, Op, Replica, WriteRefused};
use std::sync::Arc;

/// Every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for rest in permutations(n - 1) {
        for i in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(i, n - 1);
            out.push(p);
        }
    }
    out
}

/// Four nodes that have seen only the genesis and `/x = [1,2,3]` each write another type at
/// or under `/x`; every order of arrival gives one root, and the visible value follows the
/// documented precedence.
#[test]
fn concurrent_writes_of_different_types_resolve_the_same_in_every_order() {
    let g = genesis();
    let mut base = Replica::new(g.clone()).unwrap();
    let list = base.write(&key(0), vec![set("/x", "[1,2,3]")]).unwrap();
    let writes: Vec<(u8, Vec<Op>)> = vec![
        (1, vec![set("/x/1", "9")]),
        (
            2,
            vec![Op::Incr {
                path: p("/x"),
                by: 2,
            }],
        ),
        (
            3,
            vec![Op::Add {
                path: p("/x"),
                value: v("\"e\""),
            }],
        ),
        (0, vec![set("/x", "\"plain\"")]),
    ];
    let exps: Vec<Experience> = writes
        .iter()
        .map(|(n, ops)| {
            let mut r = base.clone();
            Arc::unwrap_or_clone(r.write(&key(*n), ops.clone()).unwrap()).into_inner()
        })
        .collect();
    let mut roots = std::collections::BTreeSet::new();
    let mut docs = std::collections::BTreeSet::new();
    for order in permutations(exps.len()) {
        let mut r = Replica::new(g.clone()).unwrap();
        r.set_self_check(true);
        r.insert(list.clone()).unwrap();
        for i in order {
            let bytes = exps[i].to_bytes();
            r.insert(lcloud_core::validate(&bytes, &g.id()).unwrap())
                .unwrap();
        }
        roots.insert(r.root());
        docs.insert(r.document().to_json().to_string());
    }
    assert_eq!(roots.len(), 1, "one root in every order");
    // Set elements win over the counter, the map and the registers.
    assert_eq!(docs.into_iter().collect::<Vec<_>>(), vec![r#"{"x":["e"]}"#]);
}

/// The writer's check agrees with the document: what it refuses is exactly what would show
/// up under another type.
#[test]
fn a_refused_write_is_one_the_document_would_reshape() {
    let g = genesis();
    let mut r = Replica::new(g).unwrap();
    r.write(&key(0), vec![set("/list", "[1,2,3]")]).unwrap();
    let reshaping = set("/list/1", "9");
    assert!(matches!(
        r.check_writes(&node(0), &[std::slice::from_ref(&reshaping)])[..],
        [Err(WriteRefused::ThroughNonMap { .. })]
    ));
    // Written anyway (as a peer that did not check could), the list becomes a map.
    r.write(&key(0), vec![reshaping]).unwrap();
    assert_eq!(
        r.document().to_json(),
        serde_json::json!({"list": {"1": 9}})
    );
}
