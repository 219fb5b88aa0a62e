//! W13: proofs of a cut's root (`lcloud export --proof`, `lcloud verify-proof`).
//!
//! Three members write W1's sets (16-byte values over 1 000 keys) in turn, one op per
//! experience, and attest each checkpoint as it falls due (every 256 depths, the node's
//! spacing), until the history holds `ops` ops. Its proof at the frontier is made twice, from
//! the genesis (`--full`: every experience) and from the deepest final checkpoint, and each is
//! checked as `verify-proof` checks it: no store, every signature in ZIP-215 batches on every
//! core, every link, the attestations, the fold of the cut. The rate of the full proof's check
//! is compared with the machine's verification limit, measured in the same process just
//! before: ZIP-215 batches of 1 024 signatures verified on every core at once.

use std::time::Instant;

use lcloud_core::{CHECKPOINT_EVERY, Cut, Op, Path, Replica, Value};
use lcloud_store::proof;
use serde_json::{Value as J, json};

/// W13 for a history of `ops` single-op experiences.
pub fn run(ops: usize) -> J {
    let (keys, ids, genesis) = crate::three_members("w13");
    let mut r = Replica::with_registry(genesis, lcloud_contracts::registry()).expect("a genesis");
    let mut written = 0;
    while written < ops {
        for (key, me) in keys.iter().zip(&ids) {
            let op = Op::Set {
                path: Path::from(vec![crate::key(written)]),
                value: Value::Str(crate::value16(written)),
            };
            r.write(key, vec![op]).expect("a member's write");
            written += 1;
            if let Some(depth) = r.lattice().attestation_due(me, CHECKPOINT_EVERY) {
                let cut = Cut::Clock(r.lattice().depth_cut(depth));
                let root = r.state_at(&cut).expect("a due cut").root();
                r.write(key, vec![Op::Attest { depth, root }])
                    .expect("an attestation");
            }
        }
    }
    let now = r.lattice().frontier();
    let limit = verify_limit();
    let mut out = json!({"ops": written, "experiences": r.lattice().len(), "limit": limit});
    for (name, full) in [("full", true), ("checkpoint", false)] {
        let bytes = proof::export(&r, &now, full).expect("a proof");
        let t = Instant::now();
        let checked = proof::verify(&bytes).expect("the proof holds");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            checked.root,
            r.root(),
            "the proof folds to the replica's root"
        );
        out[name] = json!({
            "bytes": bytes.len(),
            "experiences": checked.experiences,
            "checkpoint": checked.checkpoint,
            "secs": secs,
            "experiences_per_s": checked.experiences as f64 / secs,
            "of_limit": checked.experiences as f64 / secs / limit,
        });
    }
    out
}

/// Signatures per second this machine verifies in ZIP-215 batches of 1 024 on all its cores
/// at once (each core its own batches, for about a second).
fn verify_limit() -> f64 {
    use ed25519_consensus::{SigningKey, VerificationKey, batch};
    let key = SigningKey::from([9u8; 32]);
    let vk = VerificationKey::from(&key);
    let sigs: Vec<([u8; 4], ed25519_consensus::Signature)> = (0..1024u32)
        .map(|i| (i.to_le_bytes(), key.sign(&i.to_le_bytes())))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rounds = 96 / cores.max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                for _ in 0..rounds {
                    let mut v = batch::Verifier::new();
                    for (m, sig) in &sigs {
                        v.queue((vk.into(), *sig, m));
                    }
                    v.verify(rand_core::OsRng).expect("valid signatures");
                }
            });
        }
    });
    (cores * rounds * sigs.len()) as f64 / t.elapsed().as_secs_f64()
}
