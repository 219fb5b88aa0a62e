//! Causal stability (issue 20): an experience is stable once every current member has an
//! experience that follows it. Removed members stop holding it back, new members do not pull
//! it back, a silent member is named as the one holding it back, a forked member holds it at
//! its fork; and once stable, nothing admitted later is concurrent with it or sorts before
//! it, whatever the delivery order.

mod common;

use common::history::{cloud, deliver, run, step};
use common::*;
use lcloud_core::{
    Experience, ForkPolicy, Op, Replica, Stability, VectorClock, Verified, validate,
};
use proptest::prelude::*;

fn sync(a: &mut Replica, b: &mut Replica) {
    let (ca, cb) = (a.clone(), b.clone());
    a.merge(&cb);
    b.merge(&ca);
}

fn stability(r: &Replica) -> Stability {
    r.lattice().stability()
}

fn held_back_by(r: &Replica) -> Option<lcloud_core::NodeId> {
    stability(r).held_back_by().map(|w| w.node)
}

#[test]
fn a_write_is_stable_once_every_member_wrote_on_top_of_it() {
    let g = cloud();
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let x = rs[1].write(&key(1), vec![set("/x", "1")]).unwrap();
    assert!(!stability(&rs[1]).is_stable(&x.author(), x.seq()));
    // Nodes 0 and 2 see it and write on top; node 1 has not written after it yet.
    for n in [0usize, 2] {
        let src = rs[1].clone();
        rs[n].merge(&src);
        rs[n].write(&key(n as u8), vec![set("/y", "2")]).unwrap();
    }
    let (r0, r2) = (rs[0].clone(), rs[2].clone());
    rs[1].merge(&r0);
    rs[1].merge(&r2);
    let s = stability(&rs[1]);
    assert!(
        !s.is_stable(&x.author(), x.seq()),
        "its author has nothing after it yet"
    );
    assert_eq!(s.held_back_by().map(|w| w.node), Some(node(1)));
    rs[1].write(&key(1), vec![set("/x", "2")]).unwrap();
    let s = stability(&rs[1]);
    assert!(s.is_stable(&x.author(), x.seq()));
    assert!(s.is_stable(&g.author(), 1), "the genesis is stable");
    assert_eq!(s.stable, 2, "the genesis and x; the three latest are not");
    assert_eq!(s.held, 5);
    assert_eq!(s.witnesses.len(), 3);
    // Stability is a function of the history: another replica holding it agrees.
    let r1 = rs[1].clone();
    rs[0].merge(&r1);
    assert_eq!(stability(&rs[0]), s);
}

#[test]
fn a_silent_member_is_named_and_its_removal_releases_finality() {
    let g = cloud();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    for round in 0..3 {
        a.write(&key(0), vec![set("/a", &round.to_string())])
            .unwrap();
        sync(&mut a, &mut b);
        b.write(&key(1), vec![set("/b", &round.to_string())])
            .unwrap();
        sync(&mut a, &mut b);
    }
    // Node 2 is listed but never wrote: it has acknowledged the genesis alone.
    let s = stability(&a);
    assert_eq!(s.stable, 1);
    let silent = s.held_back_by().unwrap();
    assert_eq!(silent.node, node(2));
    assert_eq!(silent.behind, s.held - 1);
    // The admin removes it: everything the two remaining members saw becomes stable.
    a.write(&key(0), vec![Op::RemoveMember { node: node(2) }])
        .unwrap();
    sync(&mut a, &mut b);
    b.write(&key(1), vec![set("/b", "9")]).unwrap();
    sync(&mut a, &mut b);
    let s = stability(&a);
    assert_eq!(s.witnesses.len(), 2);
    assert_eq!(s.frontier.get(&node(1)), 3, "b's writes before its last");
    assert_eq!(
        s.frontier.get(&node(0)),
        4,
        "a's writes before its last (the removal)"
    );
    assert_eq!(s.held_back_by().map(|w| w.node), Some(node(0)));
}

#[test]
fn a_new_member_does_not_pull_the_frontier_back() {
    let g = cloud();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    a.write(&key(0), vec![Op::RemoveMember { node: node(2) }])
        .unwrap();
    for round in 0..2 {
        sync(&mut a, &mut b);
        b.write(&key(1), vec![set("/b", &round.to_string())])
            .unwrap();
        sync(&mut a, &mut b);
        a.write(&key(0), vec![set("/a", &round.to_string())])
            .unwrap();
    }
    let before = stability(&a).frontier;
    assert!(before.total() > 1);
    a.write(&key(0), vec![Op::AddMember { node: node(3) }])
        .unwrap();
    let s = stability(&a);
    assert!(before.le(&s.frontier), "{before:?} then {:?}", s.frontier);
    // Until it writes, the new member has acknowledged its grant and what came before.
    let new = s.witnesses.iter().find(|w| w.node == node(3)).unwrap();
    assert_eq!(new.seen, a.lattice().frontier());
    assert_eq!(new.behind, 0);
    // Node 1 has not seen a's last two.
    assert_eq!(held_back_by(&a), Some(node(1)));
}

/// Node 1's key used at two places: `a` and `thief` each hold one of two experiences at its
/// seq 2 (writing `/a` = 2 and 3).
fn forked_key() -> (Replica, Replica) {
    let g = cloud();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut thief = Replica::new(g).unwrap();
    a.write(&key(1), vec![set("/a", "1")]).unwrap();
    sync(&mut a, &mut thief);
    a.write(&key(1), vec![set("/a", "2")]).unwrap();
    thief.write(&key(1), vec![set("/a", "3")]).unwrap();
    (a, thief)
}

#[test]
fn a_forked_member_holds_finality_at_its_fork() {
    let (mut a, mut thief) = forked_key();
    sync(&mut a, &mut thief);
    for n in [0u8, 2, 1, 0, 2] {
        a.write(&key(n), vec![set("/z", &n.to_string())]).unwrap();
    }
    let s = stability(&a);
    assert!(a.lattice().has_forks());
    // Whoever holds its key may sign anything on top of either branch: it has acknowledged
    // no more than the past of its fork, for every author.
    assert_eq!(s.frontier.get(&node(1)), 1, "stable below its fork only");
    assert_eq!(s.frontier.get(&node(0)), 1);
    assert!(s.witnesses.iter().any(|w| w.node == node(1) && w.forked));
    assert_eq!(held_back_by(&a), Some(node(1)));
    // Removing it releases finality for everyone else's writes.
    a.write(&key(0), vec![Op::RemoveMember { node: node(1) }])
        .unwrap();
    a.write(&key(2), vec![set("/z", "9")]).unwrap();
    let s = stability(&a);
    assert!(s.frontier.get(&node(0)) >= 3, "{:?}", s.frontier);
    assert!(s.frontier.get(&node(2)) >= 2, "{:?}", s.frontier);
    // Both branches were in the members' pasts before the removal: once removed, the forker
    // can add nothing the fold keeps, so its branches are stable too, and checkpoints go on
    // past the fork.
    assert_eq!(
        s.frontier.get(&node(1)),
        3,
        "both branches, and the write on one, seen by every member"
    );
    let fork_depth = {
        let l = a.lattice();
        l.at_seq(&node(1), 2)
            .iter()
            .map(|i| l.depth(*i))
            .max()
            .unwrap()
    };
    let due = a
        .lattice()
        .checkpoint_due(&s, 1)
        .expect("a checkpoint is due");
    assert!(due >= fork_depth, "due {due}, fork at depth {fork_depth}");
}

#[test]
fn a_removed_forkers_branch_that_the_fold_leaves_out_holds_nothing_back() {
    let (mut a, thief) = forked_key();
    let hidden = thief.lattice().tip(&node(1)).unwrap();
    let hidden = thief.lattice().get(hidden).clone();
    // The admin removes node 1 after seeing its second write, and only that branch.
    a.write(&key(0), vec![Op::RemoveMember { node: node(1) }])
        .unwrap();
    for n in [2u8, 0, 2] {
        a.write(&key(n), vec![set("/z", &n.to_string())]).unwrap();
    }
    assert_eq!(
        stability(&a).frontier.get(&node(1)),
        2,
        "one branch, seen by all"
    );
    // The other branch surfaces: concurrent with the removal, the fold leaves it out, so it
    // holds nothing back once every member has it in its past.
    a.insert(hidden).unwrap();
    assert!(a.lattice().has_forks());
    let s = stability(&a);
    assert_eq!(s.frontier.get(&node(1)), 2, "the void branch holds nothing");
    assert_eq!(a.document().to_json()["a"], serde_json::json!(2));
}

#[test]
fn nothing_is_stable_in_an_open_cloud() {
    let mut r = Replica::new(genesis_with(None, ForkPolicy::Concurrent)).unwrap();
    r.write(&key(0), vec![set("/a", "1")]).unwrap();
    r.write(&key(0), vec![set("/a", "2")]).unwrap();
    let s = stability(&r);
    assert!(s.open);
    assert_eq!((s.stable, s.held), (0, 3));
    assert_eq!(s.frontier, VectorClock::default());
    assert!(s.held_back_by().is_none());
}

/// Delivers `order` one at a time; returns the stability after each, with how many
/// experiences the lattice had admitted by then (some park until their links arrive).
fn stepwise(g: &Verified<Experience>, order: &[&Experience]) -> (Replica, Vec<(Stability, u32)>) {
    let mut r = Replica::new(g.clone()).unwrap();
    let mut after = Vec::new();
    for e in order {
        r.insert(validate(&e.to_bytes(), &g.id()).unwrap()).unwrap();
        after.push((stability(&r), r.lattice().len() as u32));
    }
    (r, after)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    /// Whatever the delivery order of a history with removals, re-adds, admins, rotations and
    /// stolen keys: the final stability is the same; without forks the frontier never moves
    /// back; and whatever was stable at any step is in the past of every experience admitted
    /// later that the fold keeps, so it never sorts after one of them.
    #[test]
    fn stability_is_deterministic_monotone_and_nothing_later_precedes_it(
        steps in prop::collection::vec(step(), 1..40),
        seed in any::<u64>(),
    ) {
        let (g, written) = run(&steps);
        let order = shuffled(&written, seed);
        let (last, after) = stepwise(&g, &order);
        let first = deliver(&g, &written.iter().collect::<Vec<_>>());
        prop_assert_eq!(stability(&first), stability(&last));
        let lattice = last.lattice();
        if lattice.has_forks() {
            return Ok(());
        }
        let total = lattice.len() as u32;
        for (k, (s, admitted)) in after.iter().enumerate() {
            if k > 0 {
                prop_assert!(after[k - 1].0.frontier.le(&s.frontier), "frontier moved back at step {}", k);
            }
            // Arrival indices: what the lattice had admitted by step k, and what came later.
            let stable: Vec<u32> = (0..*admitted)
                .filter(|i| {
                    let e = lattice.get(*i);
                    s.is_stable(&e.author(), e.seq())
                })
                .collect();
            for later in *admitted..total {
                if lattice.is_void(later) {
                    continue;
                }
                for st in &stable {
                    prop_assert!(
                        lattice.precedes(*st, later),
                        "step {}: {} was stable, later {} does not follow it",
                        k, lattice.get(*st).id(), lattice.get(later).id()
                    );
                }
            }
        }
    }
}
