//! Time travel from the store's index and checkpoints equals time travel on the full replica,
//! for every experience's clock, through fast local writes and imports alike.

mod common;

use common::{import_all, new_store, ops, write};
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
                write(&mut store, &me, ops(&mut seed));
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

/// The stored rows of table `name` (u64 keys, byte values) of the store in `dir`.
fn rows(dir: &std::path::Path, name: &str) -> Vec<(u64, Vec<u8>)> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let db = redb::Database::open(dir.join("store.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(name))
        .unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

/// A store that stays open remembers what it stored since its last checkpoint instead of
/// reading it back; one opened afresh for every write reads it back from the records. Given
/// the same writes (one identity, whose signatures are deterministic) and imports, both write
/// the same records and the same checkpoints.
#[test]
fn checkpoints_are_the_same_whether_the_store_stays_open_or_not() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (store, _, genesis) = new_store(a_dir.path(), ForkPolicy::Concurrent);
    drop(store);
    for f in ["store.redb", "identity.key"] {
        std::fs::copy(a_dir.path().join(f), b_dir.path().join(f)).unwrap();
    }
    let mut a = lcloud_store::Store::open(a_dir.path()).unwrap();
    a.set_checkpoint_ops(3);
    let me = lcloud_store::Identity::load_or_create(a_dir.path()).unwrap();
    let b = || {
        let mut b = lcloud_store::Store::open(b_dir.path()).unwrap();
        b.set_checkpoint_ops(3);
        b
    };
    let me_b = lcloud_store::Identity::load_or_create(b_dir.path()).unwrap();
    assert_eq!(me.id(), me_b.id());
    let other = SigningKey::from([21; 32]);
    let mut remote = Replica::new(genesis).unwrap();
    let mut seed = 5;
    for step in 0..40 {
        if step % 5 == 0 {
            remote.write(&other, ops(&mut seed)).unwrap();
            import_all(&mut a, &remote);
            import_all(&mut b(), &remote);
        } else {
            let o = ops(&mut seed);
            let written = write(&mut a, &me, o.clone());
            assert_eq!(
                write(&mut b(), &me_b, o),
                written,
                "both stores judge alike"
            );
        }
    }
    drop(a);
    for table in [
        "groups",
        "checkpoints",
        "checkpoint_writers",
        "checkpoint_clocks",
    ] {
        let (in_a, in_b) = (rows(a_dir.path(), table), rows(b_dir.path(), table));
        assert_eq!(in_a, in_b, "table {table}");
        if table == "checkpoints" {
            assert!(in_a.len() >= 5, "{} checkpoints written", in_a.len());
        }
    }
}
