//! Compaction (issue 20): a replica compacted at its deepest final checkpoint keeps only what
//! the history above the checkpoint asks about, folds everything that arrives later to the
//! same root as a replica that kept the whole history, refuses what is behind the checkpoint
//! with the reason, and answers views before it with a clear error.

mod common;

use common::*;
use lcloud_core::sync::Summary;
use lcloud_core::{
    CompactError, Cut, Experience, InsertError, Op, Replica, SETTLE_WITHIN, VectorClock, Verified,
    View, ViewError, validate,
};
use proptest::prelude::*;

/// Checkpoint spacing here: small, so that short histories have checkpoints.
const EVERY: u64 = 2;

fn cloud() -> Verified<Experience> {
    genesis_with(
        Some(vec![node(1), node(2)]),
        lcloud_core::ForkPolicy::Concurrent,
    )
}

fn sync_all(rs: &mut [Replica]) {
    let all: Vec<Replica> = rs.to_vec();
    for r in rs.iter_mut() {
        for o in &all {
            r.merge(o);
        }
    }
}

/// Node `i` attests the checkpoint due at its replica, if any (the node's own rule).
fn attest(r: &mut Replica, i: u8) {
    if let Some(d) = r.lattice().attestation_due(&node(i), EVERY) {
        let cut = Cut::Clock(r.lattice().depth_cut(d));
        let root = r.state_at(&cut).unwrap().root();
        r.write(&key(i), vec![Op::Attest { depth: d, root }])
            .unwrap();
    }
}

/// Rounds of writes, syncs and attestations until node 0 holds a final checkpoint.
fn until_final(rs: &mut [Replica]) {
    for round in 0..12 {
        if rs[0].lattice().fixed_depth().is_some() {
            return;
        }
        for (i, r) in rs.iter_mut().enumerate() {
            if r.lattice().may_write(&node(i as u8)) {
                r.write(&key(i as u8), vec![set("/round", &round.to_string())])
                    .unwrap();
            }
        }
        sync_all(rs);
        for (i, r) in rs.iter_mut().enumerate() {
            if r.lattice().may_write(&node(i as u8)) {
                attest(r, i as u8);
            }
        }
        sync_all(rs);
    }
    panic!("no checkpoint became final in 12 rounds");
}

#[derive(Clone, Debug)]
enum Step {
    Write { by: u8, op: u8, arg: u8 },
    Sync { from: u8, to: u8 },
    Attest { by: u8 },
    Member { add: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4u8, 0..5u8, any::<u8>()).prop_map(|(by, op, arg)| Step::Write { by, op, arg }),
        4 => (0..4u8, 0..4u8).prop_map(|(from, to)| Step::Sync { from, to }),
        2 => (0..4u8).prop_map(|by| Step::Attest { by }),
        1 => (0..2u8).prop_map(|add| Step::Member { add }),
    ]
}

fn op(kind: u8, arg: u8) -> Op {
    let k = format!("/k{}", arg % 3);
    match kind {
        0 => set(&k, &arg.to_string()),
        1 => Op::Del { path: p(&k) },
        2 => Op::Incr {
            path: p("/c"),
            by: i64::from(arg) - 100,
        },
        3 => Op::Add {
            path: p("/s"),
            value: lcloud_core::Value::Int(i64::from(arg % 7)),
        },
        _ => Op::Remove {
            path: p("/s"),
            value: lcloud_core::Value::Int(i64::from(arg % 7)),
        },
    }
}

/// Runs `steps` on four replicas (node 3 joins and leaves by node 0's changes); what each
/// refuses to write (not a member) is skipped.
fn run(rs: &mut [Replica], steps: &[Step]) {
    for s in steps {
        match *s {
            Step::Write { by, op: kind, arg } => {
                let _ = rs[by as usize].write(&key(by), vec![op(kind, arg)]);
            }
            Step::Sync { from, to } => {
                let src = rs[from as usize].clone();
                rs[to as usize].merge(&src);
            }
            Step::Attest { by } => {
                if rs[by as usize].lattice().may_write(&node(by)) {
                    attest(&mut rs[by as usize], by);
                }
            }
            Step::Member { add } => {
                let change = if add == 1 {
                    Op::AddMember { node: node(3) }
                } else {
                    Op::RemoveMember { node: node(3) }
                };
                let _ = rs[0].write(&key(0), vec![change]);
            }
        }
    }
}

fn four() -> Vec<Replica> {
    let g = cloud();
    (0..4).map(|_| Replica::new(g.clone()).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Whatever was written before and after, and in whatever order the later experiences
    /// arrive, the compacted replica folds to the full replica's root after every one of
    /// them, and holds fewer experiences.
    #[test]
    fn a_compacted_replica_folds_what_follows_to_the_full_replicas_root(
        before in prop::collection::vec(step(), 0..60),
        after in prop::collection::vec(step(), 1..60),
        seed in any::<u64>(),
    ) {
        let mut rs = four();
        run(&mut rs, &before);
        until_final(&mut rs);
        let full = rs[0].clone();
        let compacted = full.compacted().unwrap();
        prop_assert_eq!(compacted.root(), full.root());
        prop_assert_eq!(compacted.lattice().heads(), full.lattice().heads());
        // Everyone else goes on; node 0 (full and compacted alike) gets it all afterwards.
        let others = |n: u8| 1 + n % 2;
        run(&mut rs, &after.iter().map(|s| match *s {
            Step::Write { by, op, arg } => Step::Write { by: others(by), op, arg },
            Step::Sync { from, to } => Step::Sync { from: others(from), to: others(to) },
            Step::Attest { by } | Step::Member { add: by } => Step::Attest { by: others(by) },
        }).collect::<Vec<_>>());
        let mut later: Vec<Experience> = Vec::new();

        for r in &rs[1..3] {
            later.extend(r.lattice().iter().skip(1).map(|e| (**e).clone()));
        }
        let (mut full, mut compacted) = (full, compacted);
        let g = cloud();
        for e in shuffled(&later, seed) {
            let v = validate(&e.to_bytes(), &g.id()).unwrap();
            let f = full.insert(v.clone()).unwrap();
            match compacted.insert(v) {
                Ok(_) => {}
                Err(InsertError::BehindCheckpoint { .. }) => {
                    prop_assert!(f.duplicate, "only what the full replica holds is behind");
                }
                Err(e) => prop_assert!(false, "refused: {e}"),
            }
            prop_assert_eq!(compacted.root(), full.root());
            // Node 0 writes now and then: the same draft, the same experience, either way.
            if e.id().0[0] % 4 == 0 {
                let ops = vec![op(e.id().0[1] % 5, e.id().0[2])];
                let a = full.write(&key(0), ops.clone()).map(|x| x.id());
                let b = compacted.write(&key(0), ops).map(|x| x.id());
                prop_assert_eq!(a.as_ref().ok(), b.as_ref().ok());

                prop_assert_eq!(compacted.root(), full.root());
            }
        }
        prop_assert!(compacted.lattice().len() <= full.lattice().len());
        prop_assert_eq!(compacted.refold().root(), full.root(), "verify's refold too");
        let (c, f) = (compacted.lattice(), full.lattice());
        prop_assert_eq!(c.stability(), f.stability());
        prop_assert_eq!(c.fixed_depth(), f.fixed_depth());
        prop_assert_eq!(c.forked_authors(), f.forked_authors());
        prop_assert_eq!(c.heads(), f.heads());
        prop_assert_eq!(c.frontier(), f.frontier());
    }
}

/// Three members write the same few keys for many rounds, attesting as they go.
fn long_history(rounds: usize) -> Vec<Replica> {
    let mut rs = four();
    for round in 0..rounds {
        for i in 0..3u8 {
            rs[i as usize]
                .write(&key(i), vec![set(&format!("/k{i}"), &round.to_string())])
                .unwrap();
        }
        sync_all(&mut rs[..3]);
        for i in 0..3u8 {
            attest(&mut rs[i as usize], i);
        }
        sync_all(&mut rs[..3]);
    }
    rs
}

#[test]
fn compaction_keeps_what_the_state_needs_not_the_history() {
    let rs = long_history(200);
    let full = &rs[0];
    let c = full.compacted().unwrap();
    let (depth, clock) = c.lattice().compaction_point().unwrap().clone();
    assert_eq!(Some(depth), full.lattice().fixed_depth());
    assert!(full.lattice().len() > 1000, "{}", full.lattice().len());
    // Below the point: what the state and the membership need, and the attestations an
    // experience above it may still settle with (of checkpoints within SETTLE_WITHIN of it).
    let kept: Vec<_> = c.lattice().iter().take(c.lattice().kept_below()).collect();
    let attests = |e: &&Verified<Experience>| {
        e.ops()
            .iter()
            .all(|o| matches!(o, Op::Attest { depth: d, .. } if d + SETTLE_WITHIN >= depth))
    };
    let other = kept.iter().filter(|e| !attests(e)).count();
    assert!(
        other < 16,
        "kept {other} of the history below the checkpoint"
    );
    assert!(kept.len() < 16 + 3 * (SETTLE_WITHIN / EVERY) as usize);
    let settling = kept.len() - other;
    assert!((c.lattice().len() - settling) * 10 < full.lattice().len());
    assert_eq!(c.root(), full.root());
    assert_eq!(c.document(), full.document());
    // The cut at the checkpoint and anything after it: as before.
    let at = Cut::Clock(clock.clone());
    assert_eq!(
        c.state_at(&at).unwrap().root(),
        full.state_at(&at).unwrap().root()
    );
    // Before it: a clear error naming the earliest cut held.
    let mut before = clock.clone();
    before.0.insert(node(1), clock.get(&node(1)) - 1);
    let err = c.state_at(&Cut::Clock(before)).unwrap_err();
    assert_eq!(
        err,
        ViewError::Compacted {
            earliest: clock.clone()
        }
    );
    assert!(
        err.to_string().contains("earliest cut it still holds"),
        "{err}"
    );
    let without = c.view(&View {
        cut: None,
        without: Some(node(2)),
    });
    assert!(matches!(without, Err(ViewError::Compacted { .. })));
    assert!(c.state_at(&Cut::Clock(VectorClock::default())).is_err());
}

#[test]
fn an_experience_behind_the_checkpoint_is_refused_as_too_old_to_merge() {
    let rs = long_history(40);
    let mut c = rs[0].compacted().unwrap();
    let below = c.lattice().compaction_point().unwrap().1.get(&node(1));
    // Node 1's own early experience, compacted away here.
    let old = rs[0]
        .lattice()
        .chain(&node(1))
        .into_iter()
        .find(|e| e.seq() + 2 < below)
        .unwrap()
        .clone();
    let err = c.insert(old.clone()).unwrap_err();
    assert!(
        matches!(err, InsertError::BehindCheckpoint { seq, .. } if seq == old.seq()),
        "{err:?}"
    );
    assert!(err.to_string().contains("too old to merge"), "{err}");
    assert!(!err.is_invalid(), "being behind is no misbehaviour");
    // A fork built on one of them is refused the same way, and nothing changed.
    let root = c.root();
    let mut thief = Replica::new(cloud()).unwrap();
    for e in rs[0].lattice().iter().skip(1) {
        if e.author() != node(1) || e.seq() <= old.seq() {
            let _ = thief.insert(e.clone());
        }
    }
    let fork = thief.write(&key(1), vec![set("/x", "1")]).unwrap();
    assert_eq!(fork.seq(), old.seq() + 1);
    assert!(matches!(
        c.insert(fork),
        Err(InsertError::BehindCheckpoint { .. })
    ));
    assert_eq!(c.root(), root);
}

#[test]
fn nothing_is_compacted_without_a_final_checkpoint() {
    let mut rs = four();
    rs[0].write(&key(0), vec![set("/a", "1")]).unwrap();
    assert_eq!(
        rs[0].compacted().unwrap_err(),
        CompactError::NoFinalCheckpoint
    );
}

#[test]
fn a_compacted_replica_goes_on_attesting_and_compacts_again() {
    let mut rs = long_history(30);
    let first = rs[0].lattice().fixed_depth().unwrap();
    rs[0] = rs[0].compacted().unwrap();
    let mut full = long_history(30).remove(0);
    assert_eq!(full.root(), rs[0].root());
    for round in 0..30 {
        for i in 0..3u8 {
            rs[i as usize]
                .write(
                    &key(i),
                    vec![Op::Incr {
                        path: p("/c"),
                        by: i64::from(round),
                    }],
                )
                .unwrap();
        }
        sync_all(&mut rs[..3]);
        for i in 0..3u8 {
            attest(&mut rs[i as usize], i);
        }
        sync_all(&mut rs[..3]);
    }
    for r in &rs[1..3] {
        full.merge(r);
    }
    let c = &rs[0];
    assert_eq!(c.root(), full.root());
    let second = c.lattice().fixed_depth().unwrap();
    assert!(
        second > first,
        "the compacted member attested later checkpoints"
    );
    let again = c.compacted().unwrap();
    assert_eq!(again.lattice().compaction_point().unwrap().0, second);
    assert_eq!(again.root(), full.root());
    assert_eq!(again.document(), full.document());
}

/// Syncs `to` from `from` with the core's protocol: `from` answers `to`'s summary until it
/// has nothing more; returns how many experiences `from` sent.
fn pull(to: &mut Replica, from: &Replica) -> usize {
    let mut sent = 0;
    loop {
        let theirs = lcloud_core::sync::Summary::of(to.lattice());
        let missing = lcloud_core::sync::missing(from.lattice(), &theirs);
        if missing.is_empty() {
            return sent;
        }
        let before = to.lattice().len();
        for i in missing {
            let _ = to.insert(from.lattice().get(i).clone());
            sent += 1;
        }
        if to.lattice().len() == before {
            return sent;
        }
    }
}

#[test]
fn a_compacted_replica_syncs_what_follows_and_tells_a_peer_it_is_behind() {
    let mut rs = long_history(40);
    let c = rs[0].compacted().unwrap();
    let depth = c.lattice().compaction_point().unwrap().0;
    // A peer that has everything up to the checkpoint gets the rest and ends on the root.
    let mut peer = rs[1].clone();
    for round in 0..5 {
        rs[0]
            .write(&key(0), vec![set("/after", &round.to_string())])
            .unwrap();
    }
    let mut c = c;
    pull(&mut c, &rs[0]);
    assert_eq!(c.root(), rs[0].root());
    assert!(pull(&mut peer, &c) >= 5);
    assert_eq!(peer.root(), rs[0].root());
    assert_eq!(
        lcloud_core::sync::behind(c.lattice(), &Summary::of(peer.lattice())),
        None
    );
    // A fresh peer is told it is behind, and is sent nothing from below the checkpoint.
    let fresh = Replica::new(cloud()).unwrap();
    let theirs = Summary::of(fresh.lattice());
    assert_eq!(lcloud_core::sync::behind(c.lattice(), &theirs), Some(depth));
    for i in lcloud_core::sync::missing(c.lattice(), &theirs) {
        let e = c.lattice().get(i);
        assert!(
            e.seq() > c.lattice().compacted_seq(&e.author()),
            "sent {}:{} from below the checkpoint",
            e.author(),
            e.seq()
        );
    }
    // The sync session refuses it by name, and pushes it nothing when it answers.
    let mut session = lcloud_core::Session::new(lcloud_core::Limits::default());
    match session.handle_sync(c.lattice(), &theirs) {
        lcloud_core::sync::Response::Refused { reason } => {
            assert!(reason.starts_with(lcloud_core::sync::BEHIND), "{reason}");
            assert!(reason.contains(&format!("depth {depth}")), "{reason}");
        }
        other => panic!("answered a peer behind the checkpoint: {other:?}"),
    }
    session.start();
    assert!(session.poll_request(c.lattice()).is_some());
    assert!(!session.handle_sync_answer(c.lattice(), &theirs, false));
    assert_eq!(session.lag(), 0);
    // A peer that holds the checkpoint is answered as before.
    let ours = Summary::of(peer.lattice());
    assert!(matches!(
        session.handle_sync(c.lattice(), &ours),
        lcloud_core::sync::Response::Sync { .. }
    ));
}

#[test]
fn a_compacted_replica_restores_from_its_base_and_what_lies_above() {
    let mut rs = long_history(40);
    for round in 0..3 {
        rs[1]
            .write(&key(1), vec![set("/late", &round.to_string())])
            .unwrap();
    }
    let full = {
        let mut r = rs[0].clone();
        r.merge(&rs[1]);
        r
    };
    let c = full.compacted().unwrap();
    let l = c.lattice();
    let point = l.compaction_point().unwrap().clone();
    let above: Vec<Verified<Experience>> = l.iter().skip(l.kept_below()).cloned().collect();
    assert!(above.len() > 3);
    for seed in 0..4 {
        let mut r = Replica::restore(
            cloud(),
            lcloud_core::Registry::builtin(),
            point.clone(),
            l.kept(),
            c.base_document().unwrap().clone(),
        )
        .unwrap();
        for e in shuffled(&above, seed) {
            r.insert(e.clone()).unwrap();
        }
        assert_eq!(r.root(), full.root(), "order {seed}");
        assert_eq!(r.lattice().heads(), full.lattice().heads());
        assert_eq!(r.lattice().stability(), full.lattice().stability());
        assert_eq!(r.lattice().fixed_depth(), full.lattice().fixed_depth());
    }
    // A base that does not fit is refused, naming what is wrong.
    let mut wrong = l.kept();
    wrong[0].depth = point.0 + 1;
    let err = Replica::restore(
        cloud(),
        lcloud_core::Registry::builtin(),
        point.clone(),
        wrong,
        Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not below the compaction point"),
        "{err}"
    );
}

/// [`pull`] as a node syncs: nothing when `from` says `to` is behind its checkpoint.
fn pull_unless_behind(to: &mut Replica, from: &Replica) -> bool {
    let theirs = Summary::of(to.lattice());
    if lcloud_core::sync::behind(from.lattice(), &theirs).is_some() {
        return false;
    }
    pull(to, from);
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Every member compacts at each final checkpoint it holds and syncs only through the
    /// protocol (a peer behind a checkpoint is refused): once everyone syncs with everyone,
    /// all hold one root. No member may be left behind a checkpoint for good.
    #[test]
    fn members_that_all_compact_still_converge(
        steps in prop::collection::vec(step(), 20..200),
    ) {
        let g = cloud();
        let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
        for s in &steps {
            match *s {
                Step::Write { by, op: kind, arg } => {
                    let _ = rs[by as usize % 3].write(&key(by % 3), vec![op(kind, arg)]);
                }
                Step::Sync { from, to } => {
                    let src = rs[from as usize % 3].clone();
                    pull_unless_behind(&mut rs[to as usize % 3], &src);
                }
                Step::Attest { by } | Step::Member { add: by } => {
                    attest(&mut rs[by as usize % 3], by % 3);
                }
            }
            for r in rs.iter_mut() {
                let compacted_at = r.lattice().compaction_point().map(|(d, _)| *d);
                if r.lattice().fixed_depth().is_some_and(|f| Some(f) > compacted_at) {
                    // As a node reloads its compacted store: restored from the base, with
                    // everything above it inserted again.
                    let c = r.compacted().unwrap();
                    let l = c.lattice();
                    let mut back = Replica::restore(
                        g.clone(),
                        lcloud_core::Registry::builtin(),
                        l.compaction_point().unwrap().clone(),
                        l.kept(),
                        c.base_document().unwrap().clone(),
                    )
                    .unwrap();
                    for e in l.iter().skip(l.kept_below()) {
                        back.insert(e.clone()).unwrap();
                    }
                    prop_assert_eq!(back.root(), c.root());
                    *r = back;
                }
            }
        }
        for _ in 0..4 {
            for to in 0..3 {
                for from in 0..3 {
                    if from != to {
                        let src = rs[from].clone();
                        pull_unless_behind(&mut rs[to], &src);
                    }
                }
            }
        }
        for (i, r) in rs.iter().enumerate() {
            prop_assert_eq!(r.lattice().frontier(), rs[0].lattice().frontier(), "replica {}", i);
            prop_assert_eq!(r.root(), rs[0].root(), "replica {}", i);
        }
    }
}

#[test]
fn a_compacted_replica_summarises_its_chains_at_the_heights_the_full_one_does() {
    let rs = long_history(40);
    let full = &rs[0];
    let c = full.compacted().unwrap();
    let heights = |r: &Replica| -> Vec<(lcloud_core::NodeId, u64)> {
        Summary::of(r.lattice())
            .chains
            .iter()
            .map(|t| (t.author, t.seq))
            .collect()
    };
    assert_eq!(heights(&c), heights(full));
    assert_eq!(
        lcloud_core::sync::behind(c.lattice(), &Summary::of(full.lattice())),
        None
    );
    assert_eq!(
        lcloud_core::sync::behind(full.lattice(), &Summary::of(c.lattice())),
        None
    );
    // Two members' replicas, each compacted on its own, agree with each other.
    let c1 = rs[1].compacted().unwrap();
    assert_eq!(heights(&c1), heights(&c));
    assert_eq!(
        lcloud_core::sync::behind(c1.lattice(), &Summary::of(c.lattice())),
        None
    );
}
