//! Time travel without loading the history: an index of every experience (author, seq,
//! depth, vector clock), each author's chain by seq, and checkpoints of the document at
//! arrival prefixes. The state at a clock is the latest checkpoint inside the cut plus the
//! experiences of the cut that came after it, applied with causality read from the index.

use std::collections::{BTreeMap, HashMap};

use lcloud_core::codec::{ByteBuf, from_canonical_stored as from_canonical, to_canonical};
use lcloud_core::{Doc, Dot, Id, NodeId, Observer, VectorClock, revalidate_stored};
use redb::{ReadableTable, WriteTransaction};

use crate::entry::Entry;
use crate::error::{StoreError, corrupt, db};
use crate::record::Names;
use crate::records::{self, Records};
use crate::schema::{
    AUTHORS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS, CHECKPOINTS, GROUPS, RUNS, SETTLES,
};
use crate::state::{sealed, unseal};

#[path = "checkpoint.rs"]
mod checkpoint;
use checkpoint::*;
pub(crate) use checkpoint::{
    CHECKPOINT_OPS_MIN, Writers, WritersFrom, checkpoint_due, checkpoint_meta, read_checkpoint,
    read_checkpoint_meta, write_checkpoint,
};

/// Causality for the experiences applied after a checkpoint: who wrote each element (from the
/// checkpoint and the tail), and what each tail experience had seen (its clock).
struct IndexObserver {
    writers: Writers,
    clocks: HashMap<Id, Vec<(u32, u64)>>,
}

impl Observer for IndexObserver {
    fn observed(&self, elem: &Dot, by: &Dot) -> bool {
        if elem.exp == by.exp {
            return elem.op < by.op;
        }
        match (self.writers.get(&elem.exp), self.clocks.get(&by.exp)) {
            // No author forked (time travel through the index requires it), so seeing the
            // author's seq means seeing the element's experience.
            (Some((author, seq)), Some(clock)) => {
                clock
                    .iter()
                    .find(|(a, _)| a == author)
                    .map_or(0, |(_, s)| *s)
                    >= *seq
            }
            _ => false,
        }
    }
}

/// What an experience settles, as [`SETTLES`] keeps it: its id, the checkpoint's depth and
/// the checkpoint's cut as a clock (`lcloud_core::Lattice::settled_clock`).
type SettleRecord = (ByteBuf, u64, Vec<(NodeId, u64)>);

/// Records in [`SETTLES`] what the experiences at `idxs` of `lattice` settle, if anything.
pub(crate) fn record_settles(
    txn: &WriteTransaction,
    lattice: &lcloud_core::Lattice,
    idxs: impl IntoIterator<Item = lcloud_core::Idx>,
) -> Result<(), StoreError> {
    let mut table = None;
    for idx in idxs {
        let Some(s) = lattice.settles(idx) else {
            continue;
        };
        let table = match &mut table {
            Some(t) => t,
            None => table.insert(txn.open_table(SETTLES).map_err(db)?),
        };
        let id = lattice.get(idx).id();
        let record: SettleRecord = (
            ByteBuf(id.0.to_vec()),
            s.depth,
            lattice.settled_clock(s).0.into_iter().collect(),
        );
        table
            .insert(&id.0, sealed(&to_canonical(&record)).as_slice())
            .map_err(db)?;
    }
    Ok(())
}

/// What experience `id` settles, from [`SETTLES`]: the checkpoint's depth and its cut as a
/// clock.
fn settle_of(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    id: &Id,
) -> Result<Option<(u64, VectorClock)>, StoreError> {
    let Some(rec) = table.get(&id.0).map_err(db)? else {
        return Ok(None);
    };
    let what = || format!("what experience {} settles", id.to_hex());
    let bytes = unseal(rec.value(), &what)?;
    let (named, depth, clock): SettleRecord =
        from_canonical(bytes).map_err(|e| corrupt(format!("{}: {e}", what())))?;
    if named.0 != id.0 {
        return Err(corrupt(format!("{} names another experience", what())));
    }
    Ok(Some((depth, VectorClock(clock.into_iter().collect()))))
}

/// The document at `clock`, from the index and checkpoints. The caller has checked that no
/// author forked and that there are no calls to order-sensitive morphisms.
pub(crate) fn document_at(
    txn: &redb::ReadTransaction,
    cloud: &Id,
    clock: &VectorClock,
) -> Result<Doc, StoreError> {
    let authors = txn.open_table(AUTHORS).map_err(db)?;
    let groups = txn.open_table(GROUPS).map_err(db)?;
    let names = Names::read(&authors, *cloud)?;
    let by_node: BTreeMap<NodeId, u32> = names.authors.iter().copied().zip(0u32..).collect();
    let mut records = Records::new(&groups, names);
    let runs = txn.open_table(RUNS).map_err(db)?;
    let checkpoints = txn.open_table(CHECKPOINTS).map_err(db)?;
    let checkpoint_clocks = txn.open_table(CHECKPOINT_CLOCKS).map_err(db)?;
    let checkpoint_writers = txn.open_table(CHECKPOINT_WRITERS).map_err(db)?;
    let mut dense: Vec<(u32, u64)> = Vec::new();
    for (node, s) in &clock.0 {
        if let Some(a) = by_node.get(node) {
            dense.push((*a, *s));
        }
    }
    let within = |c: &[(u32, u64)]| {
        c.iter()
            .all(|(a, s)| *s <= dense.iter().find(|(b, _)| b == a).map_or(0, |(_, t)| *t))
    };
    // The latest checkpoint whose frontier lies inside the cut.
    let mut base: Option<(u64, VectorClock, (Doc, Writers))> = None;
    for row in checkpoint_clocks.iter().map_err(db)?.rev() {
        let (k, v) = row.map_err(db)?;
        let cp_clock = decode_checkpoint_clock(k.value(), v.value())?;
        if cp_clock.le(clock) {
            let upto = k.value();
            let rec = checkpoints
                .get(upto)
                .map_err(db)?
                .ok_or_else(|| corrupt(format!("checkpoint {upto} is missing")))?;
            let read = read_checkpoint(
                upto,
                rec.value(),
                &checkpoint_writers,
                &runs,
                &mut records,
                cloud,
            )?;
            base = Some((upto, cp_clock, read));
            break;
        }
    }
    let (upto, cp_clock, (mut doc, writers)) =
        base.unwrap_or((0, VectorClock::default(), (Doc::default(), Writers::new())));
    // The rest of the cut: along each chain, from the checkpoint's seq up to the clock's.
    let mut rest: Vec<(u64, Entry)> = Vec::new();
    for (node, a) in &by_node {
        let from = cp_clock.get(node) + 1;
        let to = clock.get(node);
        if to < from {
            continue;
        }
        records::chain(&runs, *a, from, to, |seq, arrival| {
            let entry = records.entry(arrival)?;
            if (entry.author, entry.seq) != (*a, seq) {
                // The runs (whose keys no tag covers) sent the walk to another experience.
                return Err(corrupt(format!(
                    "the index puts author #{a}'s seq {seq} at experience #{arrival}, which is not it"
                )));
            }
            if !within(&entry.clock) {
                return Ok(false);
            }
            if arrival >= upto {
                rest.push((arrival, entry));
            }
            Ok(true)
        })?;
    }
    rest.sort_by_key(|(arrival, _)| *arrival);
    let mut observer = IndexObserver {
        writers,
        clocks: HashMap::new(),
    };
    for (_, entry) in &rest {
        observer.writers.insert(entry.id, (entry.author, entry.seq));
        observer.clocks.insert(entry.id, entry.clock.clone());
    }
    // Absent in a store that never stored a settling experience.
    let settles = match txn.open_table(SETTLES) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(db(e)),
    };
    for (arrival, entry) in rest {
        let exp = revalidate_stored(&records.bytes(arrival)?, cloud)
            .map_err(|e| corrupt(format!("experience #{arrival}: {e}")))?;
        if exp.id() != entry.id {
            return Err(corrupt(format!(
                "experience #{arrival} does not match its index entry"
            )));
        }
        doc.apply_experience(exp.ops(), entry.depth, entry.id, exp.author(), &observer);
        if let Some(table) = &settles
            && let Some((depth, cut)) = settle_of(table, &entry.id)?
        {
            // As the fold settles (`lcloud_core::Lattice::in_settled_cut`): no author forked
            // here, so an element is in the cut when its writer's seq is within the clock.
            let cut: HashMap<u32, u64> = cut
                .0
                .iter()
                .filter_map(|(n, q)| Some((*by_node.get(n)?, *q)))
                .collect();
            let names = &observer.writers;
            let in_cut = |d: &Dot| match names.get(&d.exp) {
                Some((a, seq)) => cut.get(a).is_some_and(|q| seq <= q),
                None => true,
            };
            doc.settle(depth, &in_cut);
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod entry_tests {
    use super::*;
    use crate::state::sealed;
    use lcloud_core::Path;

    /// A checkpoint is stored compressed when that pays, expands to what was written, and a
    /// damaged one is refused by name.
    #[test]
    fn a_compressed_checkpoint_expands_to_what_was_written() {
        let mut bytes = vec![CHECKPOINT_MERGED];
        for i in 0..1000 {
            bytes.extend_from_slice(format!("k{i} v{i:015}").as_bytes());
        }
        let stored = pack_checkpoint(bytes.clone());
        assert_eq!(stored[0], CHECKPOINT_PACKED);
        assert!(
            stored.len() * 3 < bytes.len(),
            "{} of {}",
            stored.len(),
            bytes.len()
        );
        assert_eq!(
            unpack_checkpoint(&stored, 4).unwrap().as_ref(),
            bytes.as_slice()
        );
        let short = vec![CHECKPOINT_MERGED, 1, 2, 3];
        assert_eq!(pack_checkpoint(short.clone()), short);
        assert_eq!(
            unpack_checkpoint(&short, 4).unwrap().as_ref(),
            short.as_slice()
        );
        let mut lying = stored.clone();
        lying[1..5].copy_from_slice(&(bytes.len() as u32 + 1).to_le_bytes());
        let mut huge = stored.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        for bad in [
            lying,
            huge,
            stored[..stored.len() - 3].to_vec(),
            vec![CHECKPOINT_PACKED],
        ] {
            let err = unpack_checkpoint(&bad, 4).unwrap_err().to_string();
            assert!(err.contains("checkpoint 4"), "{err}");
        }
    }

    /// A checkpoint's leaves, written directly, are serde's canonical bytes and read back.
    #[test]
    fn checkpoint_leaves_encode_as_serde_would() {
        use lcloud_core::{ObservesEverything, Op, Value};
        let mut doc = Doc::default();
        for i in 0..40u32 {
            let path = Path::from(vec!["k".repeat(i as usize % 30), i.to_string()]);
            let op = match i % 3 {
                0 => Op::Set {
                    path,
                    value: Value::Str("v".repeat(i as usize * 7)),
                },
                1 => Op::Incr {
                    path,
                    by: -(i64::from(i)) * 1000,
                },
                _ => Op::Add {
                    path,
                    value: Value::Int(i64::from(i)),
                },
            };
            let dot = Dot {
                depth: u64::from(i) * 300,
                exp: Id([i as u8; 32]),
                op: i,
            };
            doc.apply(&op, dot, NodeId([0; 32]), &ObservesEverything);
        }
        let root = Path::root();
        let serde: Vec<(&Path, ByteBuf)> = doc
            .leaves_under(&root)
            .map(|(p, l)| (p, ByteBuf(l.to_bytes())))
            .collect();
        let bytes = encode_leaves(&doc, &root);
        assert_eq!(bytes, to_canonical(&serde));
        assert_eq!(decode_checkpoint(&sealed(&bytes)).unwrap(), doc);
    }

    /// The hand-written encoding is byte for byte serde's canonical one, at every CBOR length
    /// boundary, and decodes back.
    #[test]
    fn an_entry_encodes_as_serde_would_and_decodes_back() {
        let edges = [
            0u64,
            1,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for (i, &x) in edges.iter().enumerate() {
            let a = x.min(u64::from(u32::MAX)) as u32;
            let y = edges[(i + 3) % edges.len()];
            let clock: Vec<(u32, u64)> = (0..(i % 4) as u32)
                .map(|k| (k + a / 2, y ^ u64::from(k)))
                .collect();
            let entry = Entry {
                id: Id([i as u8; 32]),
                author: a,
                seq: x,
                depth: y,
                clock: clock.clone(),
            };
            let bytes = entry.to_bytes();
            assert_eq!(
                bytes,
                to_canonical(&(a, x, y, &clock)),
                "author {a} seq {x} depth {y}"
            );
            assert_eq!(Entry::from_bytes(&bytes, entry.id).unwrap(), entry);
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::state::{Summary, sealed};

    /// Store records (bolero): every decoder of what the store keeps besides experiences —
    /// the checksum seal, index entries, checkpoint clocks, checkpoints, their writers, the
    /// summary, document leaves, fork proofs. The first byte picks the decoder; sealed kinds
    /// get the rest sealed with a valid checksum so the fuzzer reaches what is inside. No input
    /// panics; an accepted seal gives back exactly what was sealed.
    #[test]
    fn fuzz_store_records() {
        bolero::check!().for_each(|input: &[u8]| {
            let Some((&kind, rest)) = input.split_first() else {
                return;
            };
            match kind % 8 {
                0 => {
                    if let Ok(inner) = unseal(rest, &|| "a record".into()) {
                        assert_eq!(sealed(inner), rest);
                    }
                }
                1 => drop(decode_checkpoint_clock(0, &sealed(rest))),
                2 => drop(decode_checkpoint(&sealed(rest))),
                3 => drop(decode_writers(&sealed(rest))),
                4 => drop(Entry::from_bytes(rest, Id::default())),
                5 => drop(Summary::from_bytes(rest)),
                6 => drop(lcloud_core::Leaf::from_bytes(rest)),
                _ => drop(from_canonical::<lcloud_core::ForkProof>(rest)),
            }
        });
    }

    /// The same decoders take back what the store writes.
    #[test]
    fn records_round_trip() {
        let e = Entry {
            id: Id([3; 32]),
            author: 1,
            seq: 2,
            depth: 3,
            clock: vec![(0, 1), (1, 2)],
        };
        assert_eq!(Entry::from_bytes(&e.to_bytes(), e.id).unwrap(), e);
        let clock = vec![(lcloud_core::NodeId([1; 32]), 4u64)];
        let rec = sealed(&to_canonical(&clock));
        assert_eq!(decode_checkpoint_clock(5, &rec).unwrap().0.len(), 1);
        // Written from format 4 on, the tag covers the key: under another key it is refused.
        let keyed = crate::state::sealed_at("checkpoint_clocks", 5, &to_canonical(&clock));
        assert_eq!(decode_checkpoint_clock(5, &keyed).unwrap().0.len(), 1);
        assert!(
            decode_checkpoint_clock(6, &keyed).is_err(),
            "a moved clock is caught"
        );
        let mut bad = rec.clone();
        bad[20] ^= 1;
        assert!(
            decode_checkpoint_clock(5, &bad).is_err(),
            "a flipped bit is caught"
        );
    }
}
