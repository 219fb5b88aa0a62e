//! W3 settled: W3's counter increments in a cloud of one member that attests its checkpoints
//! as they fall due and compacts at each final one by the node's rule
//! (`lcloud_store::compaction_due`), so that the counter's increments below each settled
//! checkpoint merge into one element (`lcloud_core::Settle`). One core replica in memory,
//! every experience signed and verified, as Loro's and Automerge's W3 are in memory.

use std::time::Instant;

use ed25519_consensus::SigningKey;
use lcloud_core::{CHECKPOINT_EVERY, Cut, Experience, Genesis, NodeId, Op, Path, Replica, Value};
use serde_json::{Value as J, json};

/// Writes `n` increments of one counter in experiences of `batch`; returns increments per
/// second, the counter's elements at the end, the experiences held at the end, and the
/// compactions made. With `settle` off the cloud is open: nothing is ever final.
fn run(n: usize, batch: usize, settle: bool) -> (f64, usize, usize, usize) {
    let key = SigningKey::from([3u8; 32]);
    let me = NodeId(key.verification_key().to_bytes());
    let genesis = Experience::create_genesis(
        &key,
        if settle {
            Genesis::members_only("w3s", Vec::new())
        } else {
            Genesis::open("w3s")
        },
    );
    let mut r = Replica::new(genesis).expect("genesis");
    let path = Path::from(vec!["c".into()]);
    let mut compactions = 0;
    let t = Instant::now();
    for _ in 0..n / batch {
        let ops = (0..batch)
            .map(|_| Op::Incr {
                path: path.clone(),
                by: 1,
            })
            .collect();
        r.write(&key, ops).expect("a write");
        if !settle {
            continue;
        }
        if let Some(depth) = r.lattice().attestation_due(&me, CHECKPOINT_EVERY) {
            let cut = Cut::Clock(r.lattice().depth_cut(depth));
            let root = r.state_at(&cut).expect("a due cut").root();
            r.write(&key, vec![Op::Attest { depth, root }])
                .expect("an attestation");
        }
        if lcloud_store::compaction_due(&r) {
            r = r.compacted().expect("a final checkpoint");
            compactions += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let state = r.state();
    assert_eq!(
        state.get(&path),
        Some(Value::Int(((n / batch) * batch) as i64)),
        "the counter counts every increment"
    );
    let elements = state.doc.leaf(&path).map_or(0, |l| l.incs.len());
    (
        ((n / batch) * batch) as f64 / secs,
        elements,
        r.lattice().len(),
        compactions,
    )
}

/// The child: `mode` is `settled` (one member, attesting and compacting) or `open` (nothing
/// settles); both halves of W3, batches of 1 and of 1 000.
pub fn child(n: usize, mode: &str) -> J {
    let settle = match mode {
        "settled" => true,
        "open" => false,
        other => panic!("unknown W3 mode {other}"),
    };
    let (b1, e1, h1, c1) = run(n, 1, settle);
    let (b1000, e1000, h1000, c1000) = run(n, 1000, settle);
    json!({
        "mode": mode,
        "batch1_per_s": b1, "batch1_elements": e1, "batch1_held": h1, "batch1_compactions": c1,
        "batch1000_per_s": b1000, "batch1000_elements": e1000, "batch1000_held": h1000,
        "batch1000_compactions": c1000,
    })
}
