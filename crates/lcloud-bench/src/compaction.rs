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
use lcloud_core::{CHECKPOINT_EVERY, Cut, Experience, Genesis, NodeId, Op, Path, Replica, Value};
use serde_json::{Value as J, json};

/// Ops per experience.
const OPS: usize = 100;

/// Runs `ops` ops through one replica, compacting at every final checkpoint if `compact`.
pub fn run(ops: usize, mode: &str) -> J {
    let t = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (r, stats) = match mode {
        "stored" => history(ops, Keep::Stored(dir.path())),
        "compacted" => history(ops, Keep::Compacted),
        _ => history(ops, Keep::Full),
    };
    json!({
        "ops": stats.written,
        "compact": mode != "full",
        "mode": mode,
        "secs": t.elapsed().as_secs_f64(),
        "compactions": stats.compactions,
        "held_max": stats.held_max,
        "held_end": r.lattice().len(),
        "root": r.root().to_string(),
    })
}

/// What building a history did.
struct Stats {
    written: usize,
    compactions: u64,
    held_max: usize,
}

/// How W10 keeps its history.
enum Keep<'a> {
    /// Whole, in memory.
    Full,
    /// In memory, compacted at every final checkpoint.
    Compacted,
    /// As a node with `--retain checkpoint` holds it: every experience stored in a store in
    /// this directory as it is written, the store compacted at a final checkpoint by the
    /// node's rule (above its last compaction, with at least as much history above the base
    /// as kept below it, and 256 experiences) and the replica loaded again from it.
    Stored(&'a std::path::Path),
}

/// W10's history of `ops` ops, kept as `keep` says.
fn history(ops: usize, keep: Keep<'_>) -> (Replica, Stats) {
    let (keys, ids, genesis) = crate::three_members("w10");
    let mut stored = match keep {
        Keep::Stored(dir) => {
            Some(lcloud_store::Store::create(&dir.join("w10"), &genesis).expect("a store"))
        }
        _ => None,
    };
    let compact = !matches!(keep, Keep::Full);
    let mut r = Replica::with_registry(genesis, lcloud_contracts::registry()).expect("a genesis");
    let (mut written, mut compactions, mut held_max) = (0usize, 0u64, 0usize);
    let mut point = None;
    while written < ops {
        for (k, key) in keys.iter().enumerate() {
            let batch: Vec<Op> = (written..written + OPS)
                .map(|i| Op::Set {
                    path: Path::from(vec![crate::key(i)]),
                    value: Value::Str(crate::value16(i + k)),
                })
                .collect();
            write(&mut r, stored.as_mut(), key, batch);
            written += OPS;
        }
        for (key, me) in keys.iter().zip(&ids) {
            let due = r.lattice().attestation_due(me, CHECKPOINT_EVERY);
            if let Some(depth) = due {
                let cut = Cut::Clock(r.lattice().depth_cut(depth));
                let root = r.state_at(&cut).expect("a due cut").root();
                write(
                    &mut r,
                    stored.as_mut(),
                    key,
                    vec![Op::Attest { depth, root }],
                );
            }
        }
        held_max = held_max.max(r.lattice().len());
        let fixed = r.lattice().fixed_depth();
        match stored.as_mut() {
            None if compact && fixed > point => {
                r = r.compacted().expect("compaction at a final checkpoint");
                point = fixed;
                compactions += 1;
            }
            Some(s) if lcloud_store::compaction_due(&r) => {
                s.compact(&r, lcloud_store::Retain::Checkpoint)
                    .expect("compaction at a final checkpoint");
                r = s.load(&mut |_| {}).expect("the compacted store loads");
                compactions += 1;
            }
            _ => {}
        }
    }
    let stats = Stats {
        written,
        compactions,
        held_max,
    };
    (r, stats)
}

/// `key` writes `ops` into `r`, and the experience is stored in `store` if there is one.
fn write(r: &mut Replica, store: Option<&mut lcloud_store::Store>, key: &SigningKey, ops: Vec<Op>) {
    let author = NodeId(key.verification_key().to_bytes());
    let exp = Experience::sign(r.draft(&author, ops), key);
    let out = r.insert(exp).expect("a member's write");
    if let Some(s) = store {
        s.persist(r, &[&out]).expect("a durable commit");
    }
}

/// W11: a new node joining W10's cloud of `ops` ops, from a bundle of the whole history
/// (`lcloud join FILE`: every experience validated, folded and stored) and from a shallow
/// bundle (`lcloud join --shallow FILE`: the base and what follows, validated, restored,
/// proven against the members' attestations and stored), each into a store on disk.
pub fn join(ops: usize) -> J {
    let (full, _) = history(ops, Keep::Full);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let records: Vec<Vec<u8>> = full.lattice().iter().map(|e| e.to_bytes()).collect();
    let cloud = full.lattice().get(0).id();
    let bundle = lcloud_store::bundle::encode(&cloud, records.iter().map(|r| r.as_slice()));
    drop(records);

    let t = Instant::now();
    let b = lcloud_store::bundle::decode(&bundle).expect("a bundle");
    let genesis = lcloud_core::validate(b.records[0], &b.cloud).expect("a genesis");
    let mut store =
        lcloud_store::Store::create(&dir.path().join("full"), &genesis).expect("a store");
    let mut joined =
        Replica::with_registry(genesis, lcloud_contracts::registry()).expect("a genesis");
    let report = store
        .import(&mut joined, &b.records, &mut |_| {})
        .expect("an import");
    let full_secs = t.elapsed().as_secs_f64();
    assert_eq!(joined.root(), full.root(), "the full join ends on the root");
    drop((store, joined));

    let t = Instant::now();
    let shallow = lcloud_store::shallow::export(&full).expect("a final checkpoint");
    let export_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let restored = lcloud_store::shallow::restore(&shallow).expect("a proven shallow bundle");
    lcloud_store::Store::create_compacted(&dir.path().join("shallow"), &restored.replica)
        .expect("a compacted store");
    let shallow_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        restored.replica.root(),
        full.root(),
        "the shallow join ends on the root"
    );
    json!({
        "ops": ops,
        "full": {"secs": full_secs, "bytes": bundle.len(), "experiences": report.new + 1},
        "shallow": {
            "secs": shallow_secs,
            "bytes": shallow.len(),
            "experiences": restored.replica.lattice().len(),
            "export_secs": export_secs,
            "checkpoint": restored.depth,
        },
        "speedup": full_secs / shallow_secs,
    })
}

/// W12: a store's bytes against its state's, before and after compaction (`lcloud compact
/// --retain checkpoint`), for W1's history (`n` single-op experiences) and W2's (at least
/// 300 experiences of 1 000 ops, so that one checkpoint is final): one member writes the workload's sets and attests each checkpoint
/// as it falls due; the history is stored whole (as an import does), then compacted at the
/// last final checkpoint. The state's bytes are its document's canonical DAG-CBOR.
pub fn store_bytes(n: usize) -> J {
    let run = |n: usize, ops_each: usize| -> J {
        let key = SigningKey::from([1u8; 32]);
        let me = NodeId(key.verification_key().to_bytes());
        let genesis = Experience::create_genesis(&key, Genesis::members_only("w12", Vec::new()));
        let mut r =
            Replica::with_registry(genesis.clone(), lcloud_contracts::registry()).expect("genesis");
        for e in 0..n / ops_each {
            let ops: Vec<Op> = (0..ops_each)
                .map(|j| {
                    let i = e * ops_each + j;
                    Op::Set {
                        path: Path::from(vec!["m".into(), crate::key(i)]),
                        value: Value::Str(crate::value16(i)),
                    }
                })
                .collect();
            r.write(&key, ops).expect("a write");
            if let Some(depth) = r.lattice().attestation_due(&me, CHECKPOINT_EVERY) {
                let cut = Cut::Clock(r.lattice().depth_cut(depth));
                let root = r.state_at(&cut).expect("a due cut").root();
                r.write(&key, vec![Op::Attest { depth, root }])
                    .expect("an attestation");
            }
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("s");
        let mut store = lcloud_store::Store::create(&path, &genesis).expect("a store");
        let records: Vec<Vec<u8>> = r.lattice().iter().skip(1).map(|e| e.to_bytes()).collect();
        let refs: Vec<&[u8]> = records.iter().map(|x| x.as_slice()).collect();
        let mut local = store.load(&mut |_| {}).expect("a replica");
        store
            .import(&mut local, &refs, &mut |_| {})
            .expect("an import");
        let file = path.join("store.redb");
        let full = std::fs::metadata(&file).expect("a store file").len();
        let done = store
            .compact(&local, lcloud_store::Retain::Checkpoint)
            .expect("a final checkpoint");
        let state = lcloud_core::codec::to_canonical(
            &r.state()
                .doc
                .materialize(&Path::root())
                .unwrap_or(Value::Null),
        )
        .len();
        json!({
            "ops": (n / ops_each) * ops_each,
            "ops_each": ops_each,
            "state_bytes": state,
            "full_bytes": full,
            "compacted_bytes": done.bytes.1,
            "kept": done.after,
            "ratio": done.bytes.1 as f64 / state as f64,
        })
    };
    // W2's 100 experiences lie below the first checkpoint (depth 256): 300 of them (of 100
    // ops each in the smoke test's small sizes, whose debug build this keeps short).
    let each = if n < 100_000 { 100 } else { 1000 };
    json!({"w1": run(n, 1), "w2": run(n.max(300 * each), each)})
}
