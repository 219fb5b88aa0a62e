//! Time travel from the store's index and checkpoints equals time travel on the full replica,
//! for every experience's clock, through fast local writes and imports alike.

mod common;

use common::{import_all, new_store, ops};
use ed25519_consensus::SigningKey;
use lcloud_core::{Cut, ForkPolicy, Replica, VectorClock};
use lcloud_store::StoreError;

#[test]
fn store_time_travel_equals_replica_time_travel() {
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, me, genesis) = new_store(dir.path(), ForkPolicy::Concurrent);
        store.set_checkpoint_ops(1 + round * 3);
        let mut remote = Replica::new(genesis.clone()).unwrap();
        let other = SigningKey::from([round as u8 + 11; 32]);
        let mut seed = round + 100;
        for step in 0..60 {
            if step % 4 == 0 {
                remote.write(&other, ops(&mut seed)).unwrap();
                remote.write(&other, ops(&mut seed)).unwrap();
                let local = import_all(&mut store, &remote);
                if step % 8 == 0 {
                    remote.merge(&local);
                }
            } else {
                store.write_local(&me, ops(&mut seed)).unwrap().unwrap();
            }
        }
        let full = store.load(&mut |_| {}).unwrap();
        let lattice = full.lattice();
        for i in 0..lattice.len() as u32 {
            let clock = lattice.clock(i);
            let from_store = store
                .state_at_clock(&clock)
                .unwrap()
                .expect("index answers");
            let from_replica = full.state_at(&Cut::Clock(clock.clone())).unwrap();
            assert_eq!(
                from_store.root(),
                from_replica.root(),
                "round {round}, experience #{i}, clock {clock}"
            );
        }
        // A clock beyond what is held is refused by name.
        let mut ahead = VectorClock::default();
        ahead.observe(me.id(), 1000);
        assert!(matches!(
            store.state_at_clock(&ahead),
            Err(StoreError::ClockAhead { .. })
        ));
    }
}
