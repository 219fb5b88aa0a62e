//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use lcloud_core::{Experience, ForkPolicy, Genesis, Op, Path, Value, Verified};
use lcloud_store::{Identity, Store, StoreError};

/// Writes `ops` on the fast path; `false` when the writer refused them (they would reshape a
/// value of another type: the seeded ops mix types on purpose, and remote writers, which are
/// not checked, still bring those conflicts in).
pub fn write(store: &mut Store, me: &Identity, ops: Vec<Op>) -> bool {
    match store.write_local(me, ops) {
        Ok(Some(_)) => true,
        Err(StoreError::WriteRefused(_)) => false,
        other => panic!("a local write failed: {other:?}"),
    }
}

/// A seeded batch of 1–3 document ops over a few overlapping paths.
pub fn ops(seed: &mut u64) -> Vec<Op> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) as usize
    };
    let paths = ["/a", "/a/b", "/c", "/s", "/n", ""];
    (0..1 + next() % 3)
        .map(|_| {
            let path = Path::parse(paths[next() % paths.len()]).unwrap();
            let v = Value::Int((next() % 4) as i64);
            // Long enough that checkpoints leave it out and read it from its record.
            let long = Value::Str(format!("{:-<60}", next() % 4));
            match next() % 8 {
                0 => Op::Set { path, value: v },
                1 => Op::Set {
                    path,
                    value: Value::from_json(&serde_json::json!({"x": 1, "y": {"z": 2}})).unwrap(),
                },
                2 => Op::Incr { path, by: 2 },
                3 => Op::Add { path, value: v },
                4 => Op::Remove { path, value: v },
                5 => Op::Set { path, value: long },
                6 => Op::Set {
                    path,
                    value: Value::from_json(
                        &serde_json::json!({"x": 1, "y": {"z": long.to_json()}}),
                    )
                    .unwrap(),
                },
                _ => Op::Del { path },
            }
        })
        .collect()
}

/// A new identity and a store in `dir` for a new cloud it creates.
pub fn new_store(
    dir: &std::path::Path,
    fork_policy: ForkPolicy,
) -> (Store, Identity, Verified<Experience>) {
    let me = Identity::load_or_create(dir).unwrap();
    let genesis = Experience::create_genesis(
        me.key(),
        Genesis {
            name: "test".into(),
            init: Value::map(),
            members: None,
            fork_policy,
        },
    );
    let store = Store::create(dir, &genesis).unwrap();
    (store, me, genesis)
}

/// Imports everything `source` holds (but its genesis) into `store`, as a bundle would.
pub fn import_all(
    store: &mut lcloud_store::Store,
    source: &lcloud_core::Replica,
) -> lcloud_core::Replica {
    import_reporting(store, source).0
}

/// [`import_all`], with the import's report (what was refused, by reason).
pub fn import_reporting(
    store: &mut lcloud_store::Store,
    source: &lcloud_core::Replica,
) -> (lcloud_core::Replica, lcloud_store::ImportReport) {
    let mut local = store.load(&mut |_| {}).unwrap();
    let records: Vec<Vec<u8>> = source
        .lattice()
        .iter()
        .skip(1)
        .map(|e| e.to_bytes())
        .collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let report = store.import(&mut local, &refs, &mut |_| {}).unwrap();
    (local, report)
}

/// A members-only cloud of two members who attest checkpoints every [`members::EVERY`]
/// depths, so that short histories have final checkpoints.
pub mod members {
    use ed25519_consensus::SigningKey;
    use lcloud_core::{Cut, Experience, Genesis, NodeId, Op, Replica, Verified};

    /// Checkpoint spacing: small, so short histories have final checkpoints.
    pub const EVERY: u64 = 16;

    pub fn keys() -> Vec<SigningKey> {
        (1..=2u8).map(|k| SigningKey::from([k; 32])).collect()
    }

    pub fn id(k: &SigningKey) -> NodeId {
        NodeId(k.verification_key().to_bytes())
    }

    /// The cloud's genesis, named `name`: the first key creates it, the second is a member.
    pub fn genesis(name: &str) -> Verified<Experience> {
        let keys = keys();
        Experience::create_genesis(&keys[0], Genesis::members_only(name, vec![id(&keys[1])]))
    }

    /// `rounds` rounds in which both members write seeded ops and attest what is due.
    pub fn grow(r: &mut Replica, rounds: usize, seed: &mut u64) {
        let keys = keys();
        for _ in 0..rounds {
            for k in &keys {
                r.write(k, super::ops(seed)).unwrap();
            }
            for k in &keys {
                if let Some(depth) = r.lattice().attestation_due(&id(k), EVERY) {
                    let cut = Cut::Clock(r.lattice().depth_cut(depth));
                    let root = r.state_at(&cut).unwrap().root();
                    r.write(k, vec![Op::Attest { depth, root }]).unwrap();
                }
            }
        }
    }
}
