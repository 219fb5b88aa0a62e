//! A store settles as the core's fold does (issue 20, `lcloud_core::Settle`): a member alone
//! writes increments through the store's fast path and its attestations through a loaded
//! replica (the fast path refuses them: what they settle is read off the lattice); what the
//! store reads back, what it loads and what it reads after reopening are the core's root, and
//! time travel through the store's index settles as the fold does (store format 8), at every
//! cut, alone or with members writing concurrently.

use ed25519_consensus::SigningKey;
use lcloud_core::{Cut, Experience, Genesis, NodeId, Op, Path, Replica, Value, VectorClock};
use lcloud_store::{Identity, Store};

/// Time travel to `clock` through the store's index answers, with the root the core folds.
fn travels_as_the_core(store: &Store, core: &Replica, clock: &VectorClock) {
    let travelled = store
        .state_at_clock(clock)
        .unwrap()
        .expect("time travel answers from the index")
        .root();
    let folded = core.state_at(&Cut::Clock(clock.clone())).unwrap().root();
    assert_eq!(travelled, folded, "time travel to {clock:?}");
}

#[test]
fn a_store_settles_as_the_core_does() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let g = Experience::create_genesis(me.key(), Genesis::members_only("settle", Vec::new()));
    let mut store = Store::create(dir.path(), &g).unwrap();
    // Time-travel checkpoints among the settles, so that travel starts from them too.
    store.set_checkpoint_ops(40);
    let c = Path::from(vec!["c".into()]);
    let mut refused = 0;
    for i in 0..600 {
        store
            .write_local(
                &me,
                vec![Op::Incr {
                    path: c.clone(),
                    by: 1,
                }],
            )
            .unwrap()
            .unwrap();
        if i % 50 != 0 {
            continue;
        }
        let mut r = store.load(&mut |_| {}).unwrap();
        if let Some(depth) = r.lattice().attestation_due(&me.id(), 16) {
            let root = r
                .state_at(&Cut::Clock(r.lattice().depth_cut(depth)))
                .unwrap()
                .root();
            let attest = vec![Op::Attest { depth, root }];
            if store.write_local(&me, attest.clone()).unwrap().is_none() {
                refused += 1;
            }
            let exp = Experience::sign(r.draft(&me.id(), attest), me.key());
            let out = r.insert(exp).unwrap();
            store.persist(&r, &[&out]).unwrap();
        }
    }
    assert!(refused > 0, "the fast path refuses attestations");
    let loaded = store.load(&mut |_| {}).unwrap();
    let mut core = Replica::new(g).unwrap();
    for e in loaded.lattice().iter().skip(1) {
        core.insert(e.clone()).unwrap();
    }
    assert!(core.lattice().any_settled(), "something settles");
    let leaf = core.state().doc.leaf(&c).unwrap().clone();
    assert!(leaf.incs.len() < 100, "{} elements", leaf.incs.len());
    assert_eq!(
        store.state().unwrap().root(),
        core.root(),
        "the store's state"
    );
    assert_eq!(loaded.root(), core.root(), "the store's load");
    let clock = core.lattice().frontier();
    let me_id = me.id();
    let mut compared = 0;
    for seq in (1..=clock.get(&me_id))
        .step_by(7)
        .chain([clock.get(&me_id)])
    {
        let mut at = VectorClock::default();
        at.observe(me_id, seq);
        travels_as_the_core(&store, &core, &at);
        compared += 1;
    }
    assert!(compared > 80, "{compared} cuts compared");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.state().unwrap().root(),
        core.root(),
        "after reopening"
    );
    assert_eq!(
        store
            .load(&mut |_| {})
            .unwrap()
            .state_at(&Cut::Clock(clock))
            .unwrap()
            .root(),
        core.root()
    );
}

/// Three members write increments, set adds and removes, sync in a scrambled order and attest
/// checkpoints every 8 depths; a store holds one member's replica. At every cut of each
/// member's chain crossed with the others', time travel through the store's index gives the
/// root the core folds for that cut, settles included (some of them leave concurrent
/// elements out of their cut).
#[test]
fn time_travel_settles_as_the_fold_does_with_concurrent_members() {
    const EVERY: u64 = 8;
    let keys: Vec<SigningKey> = (1..=3u8).map(|i| SigningKey::from([i; 32])).collect();
    let ids: Vec<NodeId> = keys
        .iter()
        .map(|k| NodeId(k.verification_key().to_bytes()))
        .collect();
    let g = Experience::create_genesis(
        &keys[0],
        Genesis::members_only("settle-travel", ids[1..].to_vec()),
    );
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let (c, s) = (Path::parse("/c").unwrap(), Path::parse("/s").unwrap());
    // A fixed pseudo-random schedule (a linear congruential generator): reproducible.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    for _ in 0..2400 {
        let by = next(3) as usize;
        match next(10) {
            0..=4 => {
                let ops = match next(4) {
                    0 | 1 => vec![Op::Incr {
                        path: c.clone(),
                        by: 1 + next(3) as i64,
                    }],
                    2 => vec![Op::Add {
                        path: s.clone(),
                        value: Value::Int(next(4) as i64),
                    }],
                    _ => vec![Op::Remove {
                        path: s.clone(),
                        value: Value::Int(next(4) as i64),
                    }],
                };
                rs[by].write(&keys[by], ops).unwrap();
            }
            5..=7 => {
                let from = rs[next(3) as usize].clone();
                rs[by].merge(&from);
            }
            _ => {
                let r = &mut rs[by];
                if let Some(d) = r.lattice().attestation_due(&ids[by], EVERY) {
                    let root = r
                        .state_at(&Cut::Clock(r.lattice().depth_cut(d)))
                        .unwrap()
                        .root();
                    r.write(&keys[by], vec![Op::Attest { depth: d, root }])
                        .unwrap();
                }
            }
        }
    }
    let all = rs.clone();
    for o in &all {
        rs[0].merge(o);
    }
    let core = &rs[0];
    let settles = core.lattice().settled().count();
    assert!(settles >= 5, "{settles} attestations settled");
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path(), &g).unwrap();
    store.set_checkpoint_ops(30);
    let mut fresh = Replica::new(g.clone()).unwrap();
    for e in core.lattice().iter().skip(1) {
        let out = fresh.insert(e.clone()).unwrap();
        store.persist(&fresh, &[&out]).unwrap();
    }
    assert_eq!(store.state().unwrap().root(), core.root());
    // Cuts: each experience's causal past, and the union of two experiences' pasts.
    let past = |i: u32| -> VectorClock {
        let mut c = VectorClock::default();
        for (n, q) in core.lattice().clock_entries(i) {
            c.observe(*n, q);
        }
        c
    };
    let n = core.lattice().len() as u32;
    let mut compared = 0;
    for i in (1..n).step_by(3) {
        let j = (i * 7 + 11) % n;
        let mut both = past(i);
        both.join(&past(j.max(1)));
        for clock in [past(i), both] {
            travels_as_the_core(&store, core, &clock);
            compared += 1;
        }
    }
    assert!(compared > 100, "{compared} cuts compared");
}
