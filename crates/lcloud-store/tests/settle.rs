//! A store's own fold paths settle as the core's fold does (issue 20, `lcloud_core::Settle`):
//! a member alone writes increments and attestations through the store's local write path;
//! what the store reads back, and what it loads after reopening, is the core's root.

use lcloud_core::{Cut, Experience, ForkPolicy, Genesis, Op, Path, Replica, Value};
use lcloud_store::{Identity, Store};

#[test]
fn local_writes_and_attestations_settle_in_the_store_as_in_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let g = Experience::create_genesis(
        me.key(),
        Genesis {
            name: "settle".into(),
            init: Value::map(),
            members: Some(Vec::new()),
            fork_policy: ForkPolicy::Concurrent,
        },
    );
    let mut store = Store::create(dir.path(), &g).unwrap();
    let c = Path(vec!["c".into()]);
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
        if i % 50 == 0 {
            let r = store.load(&mut |_| {}).unwrap();
            if let Some(depth) = r.lattice().attestation_due(&me.id(), 16) {
                let root = r
                    .state_at(&Cut::Clock(r.lattice().depth_cut(depth)))
                    .unwrap()
                    .root();
                store
                    .write_local(&me, vec![Op::Attest { depth, root }])
                    .unwrap()
                    .unwrap();
            }
        }
    }
    let loaded = store.load(&mut |_| {}).unwrap();
    let mut core = Replica::new(g).unwrap();
    for e in loaded.lattice().iter().skip(1) {
        core.insert(e.clone()).unwrap();
    }
    let settled = (0..core.lattice().len() as u32).filter(|i| core.lattice().settles(*i).is_some());
    assert!(settled.count() > 0, "something settles");
    assert_eq!(
        store.state().unwrap().root(),
        core.root(),
        "the store's state"
    );
    assert_eq!(loaded.root(), core.root(), "the store's load");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.state().unwrap().root(),
        core.root(),
        "after reopening"
    );
}
