//! Fuzz target for the bundle decoder (bolero): no input panics or allocates beyond what it
//! holds, and an accepted bundle re-encodes to exactly its input.

use lcloud_store::bundle;

#[test]
fn fuzz_bundles() {
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok(b) = bundle::decode(bytes) {
            let again = bundle::encode(&b.cloud, b.records.iter().copied());
            assert_eq!(again, bytes);
        }
    });
}

/// A valid shallow bundle: two members, 60 rounds of writes and attestations.
fn shallow_seed() -> &'static [u8] {
    use ed25519_consensus::SigningKey;
    use lcloud_core::{Cut, Experience, Genesis, NodeId, Op, Path, Replica, Value};
    static SEED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SEED.get_or_init(|| {
        let keys: Vec<SigningKey> = (1..=2u8).map(|k| SigningKey::from([k; 32])).collect();
        let ids: Vec<NodeId> = keys
            .iter()
            .map(|k| NodeId(k.verification_key().to_bytes()))
            .collect();
        let genesis =
            Experience::create_genesis(&keys[0], Genesis::members_only("fuzz", vec![ids[1]]));
        let mut r = Replica::new(genesis).unwrap();
        for i in 0..60i64 {
            for (k, id) in keys.iter().zip(&ids) {
                let path = Path::parse(&format!("/k{}", i % 5)).unwrap();
                let op = match i % 3 {
                    0 => Op::Incr { path, by: i },
                    1 => Op::Add {
                        path,
                        value: Value::Int(i),
                    },
                    _ => Op::Set {
                        path,
                        value: Value::Str(format!("{i:-<50}")),
                    },
                };
                let _ = r.write(k, vec![op]);
                if let Some(depth) = r.lattice().attestation_due(id, 16) {
                    let cut = Cut::Clock(r.lattice().depth_cut(depth));
                    let root = r.state_at(&cut).unwrap().root();
                    r.write(k, vec![Op::Attest { depth, root }]).unwrap();
                }
            }
        }
        lcloud_store::shallow::export(&r).unwrap()
    })
}

/// Shallow bundles with bytes of the base changed and its checksum made good again (so the
/// decoder and the proof checks see them): none panics, and one accepted holds a checkpoint
/// whose attested root is its document's.
#[test]
fn fuzz_shallow_bundles() {
    let seed = shallow_seed();
    let len = u64::from_le_bytes(seed[16..24].try_into().unwrap()) as usize;
    bolero::check!()
        .with_type::<Vec<(u16, u8)>>()
        .for_each(|changes| {
            let mut bytes = seed.to_vec();
            for (at, x) in changes {
                bytes[24 + usize::from(*at) % len] ^= x;
            }
            let check = blake3::hash(&bytes[..24 + len]);
            bytes[24 + len..24 + len + 32].copy_from_slice(check.as_bytes());
            if let Ok(r) = lcloud_store::shallow::restore(&bytes) {
                assert_eq!(r.replica.lattice().fixed_depth(), Some(r.depth));
            }
        });
}
