//! Behaviour of the replica: the CRDT semantics, forks, membership, ordered morphisms and
//! rewinds, time travel and the other views.

mod common;

use common::*;
use lcloud_core::{
    Cut, Experience, ForkPolicy, InsertError, Ledger, Op, Replica, VectorClock, View, validate,
};
use serde_json::json;

fn sync(a: &mut Replica, b: &mut Replica) {
    let (ca, cb) = (a.clone(), b.clone());
    a.merge(&cb);
    b.merge(&ca);
}

#[test]
fn concurrent_sets_keep_both_values_and_agree_on_a_winner() {
    let g = genesis();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    a.write(&key(1), vec![set("/x", "1")]).unwrap();
    b.write(&key(2), vec![set("/x", "2")]).unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.document(), b.document());
    let conflicts = a.state().doc.conflicts(&p("/x"));
    assert_eq!(
        conflicts.len(),
        2,
        "both concurrent values stay inspectable"
    );
    // The winner is the greatest dot in canonical order.
    assert_eq!(a.state().get(&p("/x")), Some(conflicts[1].1.clone()));
    // A later write that saw both replaces both.
    a.write(&key(1), vec![set("/x", "3")]).unwrap();
    assert_eq!(a.state().doc.conflicts(&p("/x")).len(), 1);
    assert_eq!(a.document().to_json(), json!({"x": 3}));
}

#[test]
fn counters_sets_and_nested_maps() {
    let mut r = Replica::new(genesis()).unwrap();
    let k = key(1);
    r.write(
        &k,
        vec![set("/users/alice", r#"{"visits": 5, "name": "A"}"#)],
    )
    .unwrap();
    r.write(
        &k,
        vec![
            Op::Incr {
                path: p("/users/alice/visits"),
                by: 2,
            },
            Op::Add {
                path: p("/tags"),
                value: v(r#""x""#),
            },
            Op::Add {
                path: p("/tags"),
                value: v(r#""y""#),
            },
        ],
    )
    .unwrap();
    assert_eq!(
        r.document().to_json(),
        json!({"users": {"alice": {"visits": 7, "name": "A"}}, "tags": ["x", "y"]})
    );
    r.write(
        &k,
        vec![
            Op::Remove {
                path: p("/tags"),
                value: v(r#""x""#),
            },
            Op::Del {
                path: p("/users/alice/name"),
            },
        ],
    )
    .unwrap();
    assert_eq!(
        r.document().to_json(),
        json!({"users": {"alice": {"visits": 7}}, "tags": ["y"]})
    );
    r.write(&k, vec![Op::Del { path: p("/users") }]).unwrap();
    assert_eq!(r.document().to_json(), json!({"tags": ["y"]}));
}

#[test]
fn add_wins_over_concurrent_remove_and_increments_survive_concurrent_reset() {
    let g = genesis();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    let add = |value: &str| Op::Add {
        path: p("/s"),
        value: v(value),
    };
    a.write(&key(1), vec![add("1"), set("/n", "10")]).unwrap();
    sync(&mut a, &mut b);
    // a removes 1 and resets n; b concurrently re-adds 1 and increments n.
    a.write(
        &key(1),
        vec![
            Op::Remove {
                path: p("/s"),
                value: v("1"),
            },
            set("/n", "0"),
        ],
    )
    .unwrap();
    b.write(
        &key(2),
        vec![
            add("1"),
            Op::Incr {
                path: p("/n"),
                by: 5,
            },
        ],
    )
    .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.root(), b.root());
    let doc = a.document().to_json();
    assert_eq!(doc["s"], json!([1]), "the concurrent add wins");
    // The reset saw 10 and replaced it with 0; b's concurrent +5 survives on top.
    assert_eq!(doc["n"], json!(5));
}

#[test]
fn time_travel_returns_the_earlier_state() {
    let mut r = Replica::new(genesis()).unwrap();
    let k = key(1);
    let first = r.write(&k, vec![set("/v", "1")]).unwrap();
    let mut clock = VectorClock::default();
    clock.observe(node(0), 1);
    clock.observe(node(1), 1);
    for i in 2..=50 {
        r.write(&k, vec![set("/v", &i.to_string())]).unwrap();
    }
    let then = r.state_at(&Cut::Clock(clock)).unwrap();
    assert_eq!(then.document().to_json(), json!({"v": 1}));
    let by_heads = r.state_at(&Cut::Heads(vec![first.id()])).unwrap();
    assert_eq!(by_heads.root(), then.root());
    assert_eq!(r.document().to_json(), json!({"v": 50}));
    // Asking for more than is known is an error, not a silent partial answer.
    let mut ahead = VectorClock::default();
    ahead.observe(node(1), 99);
    assert!(r.state_at(&Cut::Clock(ahead)).is_err());
}

#[test]
fn views_chain_perspective_without_and_diff() {
    let g = genesis();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    a.write(&key(1), vec![set("/a", "1")]).unwrap();
    b.write(&key(2), vec![set("/b", "2")]).unwrap();
    sync(&mut a, &mut b);
    let seen = a.write(&key(1), vec![set("/c", "3")]).unwrap();
    // Perspective: what node 1 saw when writing /c.
    let before = a.perspective(&seen.id()).unwrap();
    assert_eq!(before.document().to_json(), json!({"a": 1, "b": 2}));
    // Without node 2.
    let without = a.without(&node(2)).unwrap();
    assert_eq!(without.document().to_json(), json!({"a": 1, "c": 3}));
    // One node's chain.
    let chain = a.lattice().chain(&node(1));
    assert_eq!(chain.len(), 2);
    assert!(chain.iter().all(|e| e.author() == node(1)));
    // Diff between the perspective and now.
    let changes = a
        .diff(
            &View {
                cut: Some(Cut::Heads(seen.parents().copied().collect())),
                without: None,
            },
            &View::default(),
        )
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, p("/c"));
    assert_eq!(changes[0].after, Some(v("3")));
}

#[test]
fn forks_are_kept_proven_and_folded_by_policy() {
    for policy in [ForkPolicy::Concurrent, ForkPolicy::Quarantine] {
        let g = genesis_with(None, policy);
        let mut r = Replica::new(g.clone()).unwrap();
        let mut other = Replica::new(g).unwrap();
        let k = key(1);
        r.write(&k, vec![set("/base", "0")]).unwrap();
        other.merge(&r);
        // Node 1 equivocates: two different seq-2 experiences on two replicas.
        let x = r.write(&k, vec![set("/x", "1")]).unwrap();
        let y = other.write(&k, vec![set("/y", "1")]).unwrap();
        assert_eq!(x.seq(), y.seq());
        let mut r2 = other.clone();
        r.merge(&other);
        r2.merge(&r.clone());
        assert_eq!(r.root(), r2.root(), "same result on every node");
        let forks = r.lattice().forks();
        assert_eq!(forks.len(), 1);
        forks[0].check().unwrap();
        assert_eq!(forks[0], r2.lattice().forks()[0], "identical proofs");
        assert!(r.lattice().contains(&x.id()) && r.lattice().contains(&y.id()));
        let doc = r.document().to_json();
        match policy {
            ForkPolicy::Concurrent => assert_eq!(doc, json!({"base": 0, "x": 1, "y": 1})),
            ForkPolicy::Quarantine => assert_eq!(doc, json!({"base": 0})),
        }
    }
}

#[test]
fn a_forged_fork_proof_fails_its_check() {
    let g = genesis();
    let mut r = Replica::new(g.clone()).unwrap();
    let mut o = Replica::new(g).unwrap();
    r.write(&key(1), vec![set("/x", "1")]).unwrap();
    o.write(&key(1), vec![set("/x", "2")]).unwrap();
    r.merge(&o);
    let mut proof = r.lattice().forks()[0].clone();
    proof.b.header.seq += 1;
    assert!(proof.check().is_err());
    let mut proof = r.lattice().forks()[0].clone();
    proof.b = proof.a.clone();
    assert!(proof.check().is_err());
}

#[test]
fn membership_is_enforced_and_granted_by_the_admin() {
    let g = genesis_with(Some(vec![node(1)]), ForkPolicy::Concurrent);
    let mut r = Replica::new(g).unwrap();
    r.write(&key(1), vec![set("/ok", "1")]).unwrap();
    let err = r.write(&key(2), vec![set("/no", "1")]).unwrap_err();
    assert!(matches!(err, InsertError::NotMember { .. }));
    // A member who is not the admin cannot grant.
    let err = r
        .write(&key(1), vec![Op::AddMember { node: node(2) }])
        .unwrap_err();
    assert!(matches!(err, InsertError::NotAdmin { .. }));
    r.write(&key(0), vec![Op::AddMember { node: node(2) }])
        .unwrap();
    r.write(&key(2), vec![set("/now", "1")]).unwrap();
    assert_eq!(r.document().to_json(), json!({"ok": 1, "now": 1}));
}

#[test]
fn ledger_rejections_are_deterministic_and_late_experiences_rewind() {
    let g = genesis();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    let call = |json: &str| Op::Call {
        morphism: Ledger::id(),
        args: v(json),
    };
    a.write(
        &key(1),
        vec![call(r#"{"op":"deposit","account":"x","amount":10}"#)],
    )
    .unwrap();
    sync(&mut a, &mut b);
    // Two concurrent withdrawals of 7: exactly one must be refused, the same one everywhere.
    for _ in 0..3 {
        a.write(&key(1), vec![set("/pad", "0")]).unwrap();
    }
    a.write(
        &key(1),
        vec![call(r#"{"op":"withdraw","account":"x","amount":7}"#)],
    )
    .unwrap();
    b.write(
        &key(2),
        vec![call(r#"{"op":"withdraw","account":"x","amount":7}"#)],
    )
    .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.root(), b.root());
    let rejections = a.state().ordered.rejections;
    assert_eq!(rejections.len(), 1);
    assert!(
        rejections
            .values()
            .next()
            .unwrap()
            .reason
            .contains("overdraft")
    );
    assert_eq!(
        a.state()
            .ordered
            .contracts
            .get(&Ledger::id())
            .unwrap()
            .to_json(),
        json!({"x": 3})
    );
    // b's withdrawal has the lower depth, so it sorts first and wins; a had applied its own
    // first and had to rewind when b's arrived.
    assert!(a.rewinds() >= 1);
}

#[test]
fn own_experiences_validate_from_bytes() {
    let g = genesis();
    let mut r = Replica::new(g.clone()).unwrap();
    let e = r.write(&key(1), vec![set("/x", "1")]).unwrap();
    let back = validate(&e.to_bytes(), &g.id()).unwrap();
    assert_eq!(back.id(), e.id());
    assert_eq!(
        Experience::decode(&e.to_bytes()).unwrap().to_bytes(),
        e.to_bytes()
    );
}
