//! Membership that changes (issue 19): removal, admins, key rotation, and the rule for what a
//! node wrote concurrently with losing its right: the fold keeps it only if the revocation
//! has it in its past, the same on every replica whatever the delivery order.

mod common;

use common::history::{cloud, deliver, run, step};
use common::*;
use lcloud_core::{Experience, InsertError, NodeId, Op, Replica, Verified, WriteRefused};
use proptest::prelude::*;
use serde_json::json;

fn sync(a: &mut Replica, b: &mut Replica) {
    let (ca, cb) = (a.clone(), b.clone());
    a.merge(&cb);
    b.merge(&ca);
}

fn checked(g: &Verified<Experience>) -> Replica {
    let mut r = Replica::new(g.clone()).unwrap();
    r.set_self_check(true);
    r
}

#[test]
fn a_removed_member_is_refused_and_what_it_wrote_unseen_is_left_out() {
    let g = cloud();
    let mut admin = checked(&g);
    let mut gone = checked(&g);
    gone.write(&key(1), vec![set("/before", "1")]).unwrap();
    sync(&mut admin, &mut gone);
    // The admin removes node 1 while node 1, not yet knowing, writes on.
    admin
        .write(&key(0), vec![Op::RemoveMember { node: node(1) }])
        .unwrap();
    gone.write(&key(1), vec![set("/unseen", "1")]).unwrap();
    assert!(gone.document().to_json()["unseen"] == json!(1));
    sync(&mut admin, &mut gone);
    assert_eq!(admin.root(), gone.root());
    let doc = admin.document().to_json();
    assert_eq!(
        doc["before"],
        json!(1),
        "kept: the removal has it in its past"
    );
    assert!(
        doc.get("unseen").is_none(),
        "left out: concurrent with the removal"
    );
    assert_eq!(admin.lattice().void_count(), 1);
    assert!(!admin.lattice().may_write(&node(1)));
    assert!(admin.lattice().removed().contains(&node(1)));
    // Having seen its removal, node 1 can no longer write at all.
    assert_eq!(
        gone.check_writes(&node(1), &[&[set("/after", "1")]]),
        vec![Err(WriteRefused::NotMember)]
    );
    let after = Experience::sign(gone.draft(&node(1), vec![set("/after", "1")]), &key(1));
    assert!(matches!(
        admin.insert(after),
        Err(InsertError::NotMember { .. })
    ));
    // An admin may add it back: a grant after the removal re-admits.
    admin
        .write(&key(0), vec![Op::AddMember { node: node(1) }])
        .unwrap();
    sync(&mut admin, &mut gone);
    gone.write(&key(1), vec![set("/back", "1")]).unwrap();
    assert_eq!(gone.document().to_json()["back"], json!(1));
    assert!(gone.document().to_json().get("unseen").is_none());
}

#[test]
fn admins_change_membership_and_the_creator_stays() {
    let g = cloud();
    let mut r = checked(&g);
    let m = |n: u8| Op::AddMember { node: node(n) };
    // A member who is not an admin cannot change membership.
    assert!(matches!(
        r.write(&key(1), vec![m(3)]),
        Err(InsertError::NotAdmin { .. })
    ));
    assert_eq!(
        r.check_writes(&node(1), &[&[m(3)], &[set("/a", "1")]]),
        vec![Err(WriteRefused::NotAdmin), Ok(())]
    );
    r.write(&key(0), vec![Op::AddAdmin { node: node(1) }])
        .unwrap();
    r.write(&key(1), vec![m(3)]).unwrap();
    r.write(&key(3), vec![set("/three", "3")]).unwrap();
    assert_eq!(r.lattice().admins(), sorted(&[0, 1]));
    r.write(&key(0), vec![Op::RemoveAdmin { node: node(1) }])
        .unwrap();
    assert!(matches!(
        r.write(&key(1), vec![m(4)]),
        Err(InsertError::NotAdmin { .. })
    ));
    // Demoted, node 1 still writes; node 3, added while it was an admin, stays.
    r.write(&key(1), vec![set("/one", "1")]).unwrap();
    r.write(&key(3), vec![set("/three", "4")]).unwrap();
    assert_eq!(r.document().to_json(), json!({"one": 1, "three": 4}));
    assert_eq!(r.lattice().members(), Some(sorted(&[0, 1, 2, 3])));
    // Nobody removes or demotes the creator.
    for op in [
        Op::RemoveMember { node: node(0) },
        Op::RemoveAdmin { node: node(0) },
    ] {
        assert!(matches!(
            r.write(&key(0), vec![op]),
            Err(InsertError::BadMembership { .. })
        ));
    }
}

#[test]
fn a_rotated_key_hands_over_its_rights_and_writes_no_more() {
    let g = cloud();
    let mut r = checked(&g);
    let mut thief = checked(&g);
    r.write(&key(0), vec![set("/a", "1")]).unwrap();
    sync(&mut r, &mut thief);
    // The creator rotates to key 5; a copy of the old key goes on writing elsewhere.
    r.write(&key(0), vec![Op::RotateKey { to: node(5) }])
        .unwrap();
    thief.write(&key(0), vec![set("/stolen", "1")]).unwrap();
    thief
        .write(&key(0), vec![Op::AddMember { node: node(6) }])
        .unwrap();
    thief.write(&key(6), vec![set("/puppet", "1")]).unwrap();
    // The new key writes and administers; the old one may not.
    r.write(&key(5), vec![set("/b", "2")]).unwrap();
    r.write(&key(5), vec![Op::AddMember { node: node(3) }])
        .unwrap();
    assert!(matches!(
        r.write(&key(0), vec![set("/old", "1")]),
        Err(InsertError::NotMember { .. })
    ));
    assert!(matches!(
        r.write(&key(5), vec![Op::RotateKey { to: node(5) }]),
        Err(InsertError::BadMembership { .. })
    ));
    sync(&mut r, &mut thief);
    assert_eq!(r.root(), thief.root());
    // The old key's fork and everything resting on its grant are left out.
    assert_eq!(r.document().to_json(), json!({"a": 1, "b": 2}));
    assert!(
        !r.lattice().forks().is_empty(),
        "the old key forked its chain"
    );
    assert!(r.lattice().may_write(&node(3)));
    assert!(
        !r.lattice().may_write(&node(6)),
        "a grant by the old key after rotating"
    );
    assert_eq!(r.lattice().admins(), sorted(&[5]));
}

#[test]
fn two_admins_who_remove_each_other_concurrently_are_both_removed() {
    let g = cloud();
    let mut a = checked(&g);
    a.write(&key(0), vec![Op::AddAdmin { node: node(1) }])
        .unwrap();
    a.write(&key(0), vec![Op::AddAdmin { node: node(2) }])
        .unwrap();
    let mut b = a.clone();
    a.write(&key(1), vec![Op::RemoveMember { node: node(2) }])
        .unwrap();
    b.write(&key(2), vec![Op::RemoveMember { node: node(1) }])
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.lattice().members(), Some(sorted(&[0])));
    assert_eq!(a.lattice().admins(), sorted(&[0]));
}

#[test]
fn an_open_cloud_can_bar_a_key() {
    let g = genesis();
    let mut r = checked(&g);
    r.write(&key(4), vec![set("/x", "1")]).unwrap();
    r.write(&key(0), vec![Op::RemoveMember { node: node(4) }])
        .unwrap();
    assert!(matches!(
        r.write(&key(4), vec![set("/x", "2")]),
        Err(InsertError::NotMember { .. })
    ));
    assert_eq!(r.lattice().members(), None);
    assert_eq!(r.lattice().removed(), vec![node(4)]);
    assert_eq!(r.document().to_json(), json!({"x": 1}));
}

fn sorted(ns: &[u8]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ns.iter().map(|n| node(*n)).collect();
    v.sort();
    v
}

// Property: every delivery order of a random history (common/history.rs) gives one root, one
// set of left-out experiences, and the incremental fold equals a fresh one.

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_gives_one_root_and_one_choice_of_what_is_left_out(
        steps in prop::collection::vec(step(), 1..40),
        seed in any::<u64>(),
    ) {
        let (g, written) = run(&steps);
        let first = deliver(&g, &written.iter().collect::<Vec<_>>());
        let order = shuffled(&written, seed);
        let other = deliver(&g, &order);
        prop_assert_eq!(other.lattice().parked_len(), 0);
        prop_assert_eq!(other.lattice().len(), first.lattice().len());
        prop_assert_eq!(first.root(), other.root());
        let void = |r: &Replica| {
            let mut ids: Vec<_> = (0..r.lattice().len() as u32)
                .filter(|i| r.lattice().is_void(*i))
                .map(|i| r.lattice().get(i).id())
                .collect();
            ids.sort();
            ids
        };
        prop_assert_eq!(void(&first), void(&other));
        prop_assert_eq!(first.lattice().members(), other.lattice().members());
        prop_assert_eq!(first.lattice().admins(), other.lattice().admins());
    }
}
