//! Time travel from the store's index and checkpoints equals time travel on the full replica,
//! for every experience's clock, through fast local writes and imports alike.

use ed25519_consensus::SigningKey;
use lcloud_core::{Cut, Experience, ForkPolicy, Genesis, Op, Path, Replica, Value, VectorClock};
use lcloud_store::{Identity, Store, StoreError};

fn ops(seed: &mut u64) -> Vec<Op> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) as usize
    };
    let paths = ["/a", "/a/b", "/c", "/s", "/n"];
    (0..1 + next() % 3)
        .map(|_| {
            let path = Path::parse(paths[next() % paths.len()]).unwrap();
            let v = Value::Int((next() % 4) as i64);
            match next() % 5 {
                0 => Op::Set { path, value: v },
                1 => Op::Del { path },
                2 => Op::Incr { path, by: 2 },
                3 => Op::Add { path, value: v },
                _ => Op::Remove { path, value: v },
            }
        })
        .collect()
}

#[test]
fn store_time_travel_equals_replica_time_travel() {
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::load_or_create(dir.path()).unwrap();
        let genesis = Experience::create_genesis(
            me.key(),
            Genesis {
                name: "t".into(),
                init: Value::map(),
                members: None,
                fork_policy: ForkPolicy::Concurrent,
            },
        );
        let mut store = Store::create(dir.path(), &genesis).unwrap();
        store.set_checkpoint_ops(1 + round * 3);
        let mut remote = Replica::new(genesis.clone()).unwrap();
        let other = SigningKey::from([round as u8 + 11; 32]);
        let mut seed = round + 100;
        for step in 0..60 {
            if step % 4 == 0 {
                remote.write(&other, ops(&mut seed)).unwrap();
                remote.write(&other, ops(&mut seed)).unwrap();
                let mut local = store.load(&mut |_| {}).unwrap();
                let records: Vec<Vec<u8>> = remote
                    .lattice()
                    .iter()
                    .skip(1)
                    .map(|e| e.to_bytes())
                    .collect();
                let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
                store.import(&mut local, &refs, &mut |_| {}).unwrap();
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
