//! Signed checkpoints (issue 20): once everything up to a depth is stable, every member folds
//! the state there and attests its root; all current members on one root make it final, two
//! roots are a divergence reported with both. Whatever the delivery order, a checkpoint a
//! node finds due has the same root in the history everyone ends with.

mod common;

use common::history::{cloud, run, step};
use common::*;
use lcloud_core::{Checkpoint, Cut, Experience, ForkPolicy, Id, Op, Replica, Verified, validate};
use proptest::prelude::*;
use std::sync::Arc;

/// Spacing used here: small, so that short histories have checkpoints.
const EVERY: u64 = 2;

fn sync_all(rs: &mut [Replica]) {
    let all: Vec<Replica> = rs.to_vec();
    for r in rs.iter_mut() {
        for o in &all {
            r.merge(o);
        }
    }
}

fn due(r: &Replica) -> Option<u64> {
    let l = r.lattice();
    l.checkpoint_due(&l.stability(), EVERY)
}

fn root_at(r: &Replica, depth: u64) -> Id {
    let clock = r.lattice().depth_cut(depth);
    r.state_at(&Cut::Clock(clock)).unwrap().root()
}

/// Three members write in rounds, each on top of everything, until a checkpoint is due.
fn rounds(n: usize) -> Vec<Replica> {
    let g = cloud();
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    for round in 0..n {
        for (i, r) in rs.iter_mut().enumerate() {
            r.write(&key(i as u8), vec![set("/n", &round.to_string())])
                .unwrap();
        }
        sync_all(&mut rs);
    }
    rs
}

#[test]
fn members_attest_a_due_checkpoint_and_it_becomes_final() {
    let mut rs = rounds(6);
    let d = due(&rs[0]).expect("a checkpoint is due after six rounds");
    assert_eq!(d % EVERY, 0);
    assert!(
        rs.iter().all(|r| due(r) == Some(d)),
        "every member finds the same one"
    );
    let root = root_at(&rs[0], d);
    for (i, r) in rs.iter_mut().enumerate() {
        assert_eq!(root_at(r, d), root);
        r.write(&key(i as u8), vec![Op::Attest { depth: d, root }])
            .unwrap();
    }
    // Two of three attested: not final yet.
    let partial = rs[0].clone();
    let mut two = partial.clone();
    two.merge(&rs[1]);
    let c = &two.lattice().checkpoints()[0];
    assert_eq!((c.depth, c.root()), (d, Some(root)));
    assert!(!c.is_final());
    assert_eq!(c.missing, vec![node(2)]);
    sync_all(&mut rs);
    let c = rs[2].lattice().final_checkpoint().expect("final");
    assert_eq!(c.depth, d);
    assert_eq!(c.root(), Some(root));
    assert!(rs[0].lattice().attested(&node(1), d));
    // The attestations changed nothing in the state.
    assert_eq!(root_at(&rs[0], d), root);
}

#[test]
fn a_member_attesting_another_root_is_a_divergence_with_both_roots() {
    let mut rs = rounds(6);
    let d = due(&rs[0]).unwrap();
    let root = root_at(&rs[0], d);
    let wrong = Id([9; 32]);
    for (i, r) in rs.iter_mut().enumerate() {
        let claimed = if i == 2 { wrong } else { root };
        r.write(
            &key(i as u8),
            vec![Op::Attest {
                depth: d,
                root: claimed,
            }],
        )
        .unwrap();
    }
    sync_all(&mut rs);
    let c: Checkpoint = rs[0].lattice().checkpoints().remove(0);
    assert!(c.is_divergent() && !c.is_final());
    assert_eq!(c.root(), None);
    let mut agreeing = vec![node(0), node(1)];
    agreeing.sort();
    assert_eq!(c.roots[&root], agreeing);
    assert_eq!(c.roots[&wrong], vec![node(2)]);
    assert!(rs[0].lattice().final_checkpoint().is_none());
}

#[test]
fn nothing_is_due_while_a_member_is_silent() {
    let g = cloud();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    for round in 0..10 {
        a.write(&key(0), vec![set("/a", &round.to_string())])
            .unwrap();
        b.merge(&a);
        b.write(&key(1), vec![set("/b", &round.to_string())])
            .unwrap();
        a.merge(&b);
    }
    assert_eq!(due(&a), None, "node 2 has acknowledged the genesis alone");
    a.write(&key(0), vec![Op::RemoveMember { node: node(2) }])
        .unwrap();
    b.merge(&a);
    b.write(&key(1), vec![set("/b", "99")]).unwrap();
    a.merge(&b);
    assert!(
        due(&a).is_some(),
        "removed, it no longer holds checkpoints back"
    );
}

/// Delivers `order` one at a time; after each, the checkpoint due and its root.
fn stepwise(g: &Verified<Experience>, order: &[&Experience]) -> (Replica, Vec<(u64, Id)>) {
    let mut r = Replica::new(g.clone()).unwrap();
    let mut seen = Vec::new();
    for e in order {
        r.insert(validate(&e.to_bytes(), &g.id()).unwrap()).unwrap();
        if let Some(d) = due(&r) {
            seen.push((d, root_at(&r, d)));
        }
    }
    (r, seen)
}

// Histories for the property: four nodes, each writing with its own key at its own replica
// (no forks), syncing often, while the creator adds and removes nodes 1 to 3.

#[derive(Clone, Debug)]
enum Step {
    Write { by: u8, byte: u8 },
    Sync { from: u8, to: u8 },
    Change { add: bool, who: u8 },
}

fn busy_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..4u8, any::<u8>()).prop_map(|(by, byte)| Step::Write { by, byte }),
        5 => (0..4u8, 0..4u8).prop_map(|(from, to)| Step::Sync { from, to }),
        1 => (any::<bool>(), 1..4u8).prop_map(|(add, who)| Step::Change { add, who }),
    ]
}

fn busy(steps: &[Step]) -> (Verified<Experience>, Vec<Experience>) {
    let g = cloud();
    let mut rs: Vec<Replica> = (0..4).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let mut written = Vec::new();
    for s in steps {
        let (by, ops) = match *s {
            Step::Sync { from, to } => {
                let src = rs[from as usize].clone();
                rs[to as usize].merge(&src);
                continue;
            }
            Step::Write { by, byte } => (
                by,
                vec![set(["/a", "/b"][byte as usize % 2], &byte.to_string())],
            ),
            Step::Change { add, who } => {
                let node = node(who);
                (
                    0,
                    vec![if add {
                        Op::AddMember { node }
                    } else {
                        Op::RemoveMember { node }
                    }],
                )
            }
        };
        if let Ok(e) = rs[by as usize].write(&key(by), ops) {
            written.push(Arc::unwrap_or_clone(e).into_inner());
        }
    }
    (g, written)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Whatever the delivery order of a history with members added and removed, a
    /// checkpoint a node found due, and the root it folded there, are those of the history
    /// everyone ends with: what a node compacts below a checkpoint it may attest is never
    /// needed again.
    #[test]
    fn a_due_checkpoint_keeps_its_root_in_every_later_history(
        steps in prop::collection::vec(busy_step(), 1..120),
        seed in any::<u64>(),
    ) {
        let (g, written) = busy(&steps);
        let order = shuffled(&written, seed);
        let (last, seen) = stepwise(&g, &order);
        prop_assert!(!last.lattice().has_forks());
        for (d, root) in seen {
            prop_assert_eq!(root_at(&last, d), root, "checkpoint {} changed its root", d);
        }
    }

    /// The same with stolen keys, rotations and admins (common/history.rs); histories with a
    /// fork are left out (a forked key can sign on top of any past).
    #[test]
    fn a_due_checkpoint_keeps_its_root_with_rotations_and_admins(
        steps in prop::collection::vec(step(), 1..60),
        seed in any::<u64>(),
    ) {
        let (g, written) = run(&steps);
        let order = shuffled(&written, seed);
        let (last, seen) = stepwise(&g, &order);
        if last.lattice().has_forks() {
            return Ok(());
        }
        for (d, root) in seen {
            prop_assert_eq!(root_at(&last, d), root, "checkpoint {} changed its root", d);
        }
    }
}

/// Every experience `r` holds but the genesis, in arrival order.
fn history(r: &Replica) -> Vec<Experience> {
    r.lattice().iter().skip(1).map(|e| (**e).clone()).collect()
}

/// Member 2 forks at its second write: branch A goes to everyone, branch B (and one more
/// write on top of it) is kept back. Rounds go on until a checkpoint deeper than the fork is
/// due; every member attests it and it is final. Returns the members' replicas, the
/// checkpoint, and the withheld branch.
fn late_fork(policy: ForkPolicy) -> (Vec<Replica>, u64, Vec<Experience>) {
    let g = genesis_with(Some(vec![node(1), node(2)]), policy);
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let mut withheld = Vec::new();
    for round in 0..8 {
        for (i, r) in rs.iter_mut().enumerate() {
            if i == 2 && round == 1 {
                let mut other = r.clone();
                let b = other.write(&key(2), vec![set("/b", "\"late\"")]).unwrap();
                let b2 = other.write(&key(2), vec![set("/b2", "1")]).unwrap();
                withheld = vec![
                    Arc::unwrap_or_clone(b).into_inner(),
                    Arc::unwrap_or_clone(b2).into_inner(),
                ];
            }
            r.write(&key(i as u8), vec![set("/n", &round.to_string())])
                .unwrap();
        }
        sync_all(&mut rs);
    }
    let d = due(&rs[0]).expect("a checkpoint is due after eight rounds");
    let fork_depth = {
        let l = rs[0].lattice();
        l.depth(l.at_seq(&node(2), 2)[0])
    };
    assert!(d >= fork_depth, "the checkpoint covers the fork's seq");
    let root = root_at(&rs[0], d);
    for (i, r) in rs.iter_mut().enumerate() {
        r.write(&key(i as u8), vec![Op::Attest { depth: d, root }])
            .unwrap();
    }
    sync_all(&mut rs);
    assert_eq!(rs[0].lattice().fixed_depth(), Some(d));
    (rs, d, withheld)
}

#[test]
fn a_fork_that_surfaces_after_its_checkpoint_is_final_is_late_and_changes_nothing() {
    for policy in [ForkPolicy::Concurrent, ForkPolicy::Quarantine] {
        let (mut rs, d, withheld) = late_fork(policy);
        let (root_d, now) = (root_at(&rs[0], d), rs[0].root());
        let g = rs[0].lattice().get(0).clone();
        for e in &withheld {
            let out = rs[0]
                .insert(validate(&e.to_bytes(), &g.id()).unwrap())
                .unwrap();
            assert_eq!(out.admitted.len(), 1, "admitted, not refused");
        }
        let l = rs[0].lattice();
        assert!(l.has_forks(), "the fork is proven");
        for e in &withheld {
            let i = l.idx(&e.id()).unwrap();
            assert!(
                l.is_late(i) && l.is_void(i),
                "{policy:?}: the branch is late"
            );
        }
        assert_eq!(l.late_count(), 2);
        assert_eq!(
            root_at(&rs[0], d),
            root_d,
            "{policy:?}: the final state stands"
        );
        assert_eq!(rs[0].root(), now, "{policy:?}: nothing late is folded");
        assert_eq!(rs[0].quarantined(&node(2)), None, "one branch is folded");
        assert_eq!(rs[0].document().to_json().get("b"), None);
        // Stability ignores the late branch: the next checkpoint comes due.
        for round in 0..6 {
            for (i, r) in rs.iter_mut().enumerate() {
                r.write(&key(i as u8), vec![set("/m", &round.to_string())])
                    .unwrap();
            }
            sync_all(&mut rs);
        }
        assert!(
            due(&rs[1]).is_some_and(|next| next > d),
            "{policy:?}: finality goes on"
        );

        // Whatever the order, every node decides alike.
        let all = history(&rs[0]);
        for seed in 0..8 {
            let order = shuffled(&all, seed);
            let (r, _) = stepwise(&g, &order);
            assert_eq!(r.root(), rs[0].root(), "{policy:?}, order {seed}");
            assert_eq!(r.lattice().late_count(), 2, "{policy:?}, order {seed}");
        }
    }
}

#[test]
fn a_member_that_attested_never_writes_on_top_of_a_late_experience() {
    let (mut rs, d, withheld) = late_fork(ForkPolicy::Concurrent);
    // Member 1 has attested `d`; member 0's attestation has not reached it yet, so it does
    // not know the checkpoint is final when the late branch arrives.
    let g = rs[1].lattice().get(0).clone();
    let mut one = Replica::new(g.clone()).unwrap();
    for e in history(&rs[1]) {
        let attests_0 = e.author() == node(0) && matches!(e.ops()[0], Op::Attest { .. });
        if !attests_0 {
            one.insert(validate(&e.to_bytes(), &g.id()).unwrap())
                .unwrap();
        }
    }
    assert_eq!(one.lattice().fixed_depth(), None, "not final here yet");
    for e in &withheld {
        one.insert(validate(&e.to_bytes(), &g.id()).unwrap())
            .unwrap();
    }
    let b2 = one.lattice().idx(&withheld[1].id()).unwrap();
    assert!(one.lattice().heads().contains(&withheld[1].id()));
    assert!(
        !one.lattice().is_late(b2),
        "not late while the checkpoint is not final"
    );
    assert!(one.lattice().held_apart(&node(1), b2));
    assert!(!one.lattice().held_apart(&node(0), b2) || one.lattice().attested(&node(0), d));
    let w = one.write(&key(1), vec![set("/after", "1")]).unwrap();
    assert!(
        !w.header().deps.contains(&withheld[1].id()),
        "member 1 does not build on the branch its checkpoint leaves out"
    );
    // Once everything meets, the write stands and the branch is late.
    rs[0].merge(&one);
    let l = rs[0].lattice();
    assert!(!l.is_void(l.idx(&w.id()).unwrap()));
    assert!(l.is_late(l.idx(&withheld[1].id()).unwrap()));
    assert_eq!(rs[0].document().to_json()["after"], serde_json::json!(1));
}

#[test]
fn a_member_added_after_a_final_checkpoint_leaves_it_final() {
    let (mut rs, d, _) = late_fork(ForkPolicy::Concurrent);
    rs[0]
        .write(&key(0), vec![Op::AddMember { node: node(3) }])
        .unwrap();
    let l = rs[0].lattice();
    assert!(l.members().unwrap().contains(&node(3)));
    let c = l.final_checkpoint().expect("still final");
    assert_eq!(c.depth, d);
    assert!(c.missing.is_empty(), "node 3 was no member at depth {d}");
    assert_eq!(l.fixed_depth(), Some(d));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Three members write in rounds with partial syncs and attest as checkpoints fall due;
    /// member 2's key signs a second branch at a random round that is kept back until some
    /// checkpoints are final. Whatever surfaces then, every final checkpoint keeps its root,
    /// and in any delivery order every replica folds the same root with the same late
    /// experiences.
    #[test]
    fn a_final_checkpoint_keeps_its_root_whatever_surfaces_later(
        rounds in 4..12usize,
        fork_at in 0..12usize,
        links in prop::collection::vec(any::<bool>(), 6 * 12),
        seed in any::<u64>(),
    ) {
        let g = genesis_with(Some(vec![node(1), node(2)]), ForkPolicy::Concurrent);
        let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
        let mut withheld: Vec<Experience> = Vec::new();
        let attest = |r: &mut Replica, i: u8| {
            if let Some(d) = r.lattice().attestation_due(&node(i), EVERY) {
                let root = root_at(r, d);
                r.write(&key(i), vec![Op::Attest { depth: d, root }]).unwrap();
            }
        };
        for round in 0..rounds + 8 {
            for (i, r) in rs.iter_mut().enumerate() {
                if i == 2 && round == fork_at.min(rounds) {
                    let mut other = r.clone();
                    for n in 0..2 {
                        let e = other.write(&key(2), vec![set("/b", &n.to_string())]).unwrap();
                        withheld.push(Arc::unwrap_or_clone(e).into_inner());
                    }
                }
                r.write(&key(i as u8), vec![set("/n", &round.to_string())]).unwrap();
            }
            if round < rounds {
                // Some links carry this round, others do not.
                for (k, (from, to)) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)].iter().enumerate() {
                    if links[(round * 6 + k) % links.len()] {
                        let src = rs[*from].clone();
                        rs[*to].merge(&src);
                    }
                }
            } else {
                sync_all(&mut rs);
            }
            for (i, r) in rs.iter_mut().enumerate() {
                attest(r, i as u8);
            }
        }
        sync_all(&mut rs);
        let finals: Vec<(u64, Id)> = rs[0]
            .lattice()
            .checkpoints()
            .iter()
            .filter(|c| c.is_final())
            .map(|c| (c.depth, c.root().unwrap()))
            .collect();
        prop_assume!(!finals.is_empty());
        for e in &withheld {
            for r in rs.iter_mut() {
                r.insert(validate(&e.to_bytes(), &g.id()).unwrap()).unwrap();
            }
        }
        for r in &rs {
            prop_assert_eq!(r.root(), rs[0].root());
            for (d, root) in &finals {
                let c = r.lattice().checkpoints().into_iter().find(|c| c.depth == *d).unwrap();
                prop_assert!(c.is_final());
                prop_assert_eq!(root_at(r, *d), *root, "checkpoint {} changed its root", d);
            }
        }
        let all = history(&rs[0]);
        let (last, _) = stepwise(&g, &shuffled(&all, seed));
        prop_assert_eq!(last.root(), rs[0].root());
        prop_assert_eq!(last.lattice().late_count(), rs[0].lattice().late_count());
    }
}
