//! The persisted fold (what `lcloud state` reads without loading history) always equals the
//! fold of the stored history, through any mix of fast local writes and imported experiences.

mod common;

use common::{import_all, new_store, ops, write};
use ed25519_consensus::SigningKey;
use lcloud_core::{ForkPolicy, Op, Path, Replica, Value, validate};

#[test]
fn persisted_state_matches_the_fold_of_the_history() {
    for round in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, me, genesis) = new_store(dir.path(), ForkPolicy::Concurrent);
        let mut remote = Replica::new(genesis.clone()).unwrap();
        let other = SigningKey::from([round as u8 + 7; 32]);
        let mut seed = round;
        for step in 0..40 {
            if step % 3 == 0 {
                // Another node writes concurrently; its experiences arrive as an import.
                remote.write(&other, ops(&mut seed)).unwrap();
                let mut local = store.load(&mut |_| {}).unwrap();
                let mut outs = Vec::new();
                for e in remote.lattice().iter().skip(1) {
                    let v = validate(&e.to_bytes(), &genesis.id()).unwrap();
                    outs.push(local.insert(v).unwrap());
                }
                let refs: Vec<_> = outs.iter().collect();
                store.persist(&local, &refs).unwrap();
                // And the remote node hears from us.
                remote.merge(&local);
            } else {
                write(&mut store, &me, ops(&mut seed));
            }
            let loaded = store.load(&mut |_| {}).unwrap();
            assert_eq!(
                store.state().unwrap().root(),
                loaded.root(),
                "round {round} step {step}: persisted state diverged"
            );
            assert_eq!(
                store.document(&Path::root()).unwrap().unwrap_or_default(),
                loaded.document()
            );
        }
    }
}

#[test]
fn persisted_state_follows_a_quarantine_after_a_fork_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, me, genesis) = new_store(dir.path(), ForkPolicy::Quarantine);
    let other = SigningKey::from([42; 32]);
    let mut left = Replica::new(genesis.clone()).unwrap();
    left.write(
        &other,
        vec![Op::Set {
            path: Path::parse("/base").unwrap(),
            value: Value::Int(1),
        }],
    )
    .unwrap();
    let mut right = left.clone();
    // The other node equivocates: two different experiences at seq 2.
    left.write(
        &other,
        vec![Op::Set {
            path: Path::parse("/x").unwrap(),
            value: Value::Int(1),
        }],
    )
    .unwrap();
    right
        .write(
            &other,
            vec![Op::Incr {
                path: Path::parse("/n").unwrap(),
                by: 5,
            }],
        )
        .unwrap();
    store
        .write_local(
            &me,
            vec![Op::Set {
                path: Path::parse("/mine").unwrap(),
                value: Value::Int(7),
            }],
        )
        .unwrap()
        .unwrap();
    for source in [&left, &right] {
        let local = import_all(&mut store, source);
        assert_eq!(store.state().unwrap().root(), local.root());
    }
    let loaded = store.load(&mut |_| {}).unwrap();
    assert_eq!(loaded.lattice().forks().len(), 1);
    assert_eq!(store.forks().unwrap().len(), 1);
    // The forked author's ops from the fork point on are out; everything else stays.
    let doc = store.document(&Path::root()).unwrap().unwrap().to_json();
    assert_eq!(doc, serde_json::json!({"base": 1, "mine": 7}));
    // A local write after the fork still folds into the persisted state correctly.
    store
        .write_local(
            &me,
            vec![Op::Incr {
                path: Path::parse("/n").unwrap(),
                by: 1,
            }],
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        store.state().unwrap().root(),
        store.load(&mut |_| {}).unwrap().root()
    );
}
