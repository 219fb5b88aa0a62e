//! A store settles as the core's fold does (issue 20, `lcloud_core::Settle`): a member alone
//! writes increments through the store's fast path and its attestations through a loaded
//! replica (the fast path refuses them: what they settle is read off the lattice); what the
//! store reads back, what it loads and what it reads after reopening are the core's root, and
//! time travel answers from the full history.

use lcloud_core::{Cut, Experience, Genesis, Op, Path, Replica};
use lcloud_store::{Identity, Store};

#[test]
fn a_store_settles_as_the_core_does() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let g = Experience::create_genesis(me.key(), Genesis::members_only("settle", Vec::new()));
    let mut store = Store::create(dir.path(), &g).unwrap();
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
    assert!(
        store.state_at_clock(&clock).unwrap().is_none(),
        "time travel past a settle asks for the full history"
    );
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
