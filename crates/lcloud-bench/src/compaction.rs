//! W10: memory with and without compaction, in the core (a replica, no store, no node).
//!
//! Three members write into one replica in turn, each experience 100 `set`s over 1 000 keys
//! (16-byte values) on top of every head, and attest each checkpoint as it falls due (every
//! 256 depths, the node's spacing). With compaction, the replica is compacted at every deeper
//! final checkpoint ([`Replica::compacted`]). One child process per history length and mode,
//! so each reports its own peak resident memory: with compaction it must not grow with the
//! history.

use std::time::Instant;

use ed25519_consensus::SigningKey;
use lcloud_core::{
    CHECKPOINT_EVERY, Cut, Experience, ForkPolicy, Genesis, NodeId, Op, Path, Replica, Value,
};
use serde_json::{Value as J, json};

/// Ops per experience.
const OPS: usize = 100;

/// Runs `ops` ops through one replica, compacting at every final checkpoint if `compact`.
pub fn run(ops: usize, compact: bool) -> J {
    let keys: Vec<SigningKey> = (1..=3u8).map(|k| SigningKey::from([k; 32])).collect();
    let ids: Vec<NodeId> = keys
        .iter()
        .map(|k| NodeId(k.verification_key().to_bytes()))
        .collect();
    let genesis = Experience::create_genesis(
        &keys[0],
        Genesis {
            name: "w10".into(),
            init: Value::map(),
            members: Some(ids[1..].to_vec()),
            fork_policy: ForkPolicy::Concurrent,
        },
    );
    let mut r = Replica::new(genesis).expect("a genesis");
    let t = Instant::now();
    let (mut written, mut compactions, mut held_max) = (0usize, 0u64, 0usize);
    let mut point = None;
    while written < ops {
        for (k, key) in keys.iter().enumerate() {
            let batch: Vec<Op> = (written..written + OPS)
                .map(|i| Op::Set {
                    path: Path(vec![crate::key(i)]),
                    value: Value::Str(crate::value16(i + k)),
                })
                .collect();
            r.write(key, batch).expect("a member's write");
            written += OPS;
        }
        for (key, me) in keys.iter().zip(&ids) {
            let due = r.lattice().attestation_due(me, CHECKPOINT_EVERY);
            if let Some(depth) = due {
                let cut = Cut::Clock(r.lattice().depth_cut(depth));
                let root = r.state_at(&cut).expect("a due cut").root();
                r.write(key, vec![Op::Attest { depth, root }])
                    .expect("an attestation");
            }
        }
        held_max = held_max.max(r.lattice().len());
        let fixed = r.lattice().fixed_depth();
        if compact && fixed > point {
            r = r.compacted().expect("compaction at a final checkpoint");
            point = fixed;
            compactions += 1;
        }
    }
    json!({
        "ops": written,
        "compact": compact,
        "secs": t.elapsed().as_secs_f64(),
        "compactions": compactions,
        "held_max": held_max,
        "held_end": r.lattice().len(),
        "root": r.root().to_string(),
    })
}
