//! Time travel without loading the history: an index of every experience (author, seq,
//! depth, vector clock), each author's chain by seq, and checkpoints of the document at
//! arrival prefixes. The state at a clock is the latest checkpoint inside the cut plus the
//! experiences of the cut that came after it, applied with causality read from the index.

use std::collections::{BTreeMap, HashMap};

use lcloud_core::codec::{ByteBuf, from_canonical, to_canonical};
use lcloud_core::{Doc, Dot, Id, Leaf, NodeId, Observer, Path, VectorClock, revalidate_stored};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::records::{self, GROUPS, Names, RUNS, Records, Written};
use crate::state::{sealed, unseal};
use crate::store::StoreError;

/// Author index (first-seen order in this store) → node id.
pub(crate) const AUTHORS: TableDefinition<u32, &[u8; 32]> = TableDefinition::new("authors");
/// Arrival count covered → sealed leaves: the document after that many arrivals.
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// Arrival count covered → the frontier clock of that checkpoint (kept apart, so finding the
/// checkpoint for a cut reads only small records).
pub(crate) const CHECKPOINT_CLOCKS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("checkpoint_clocks");
/// Arrival count covered → sealed (id, author index, seq) of every experience whose ops are
/// still visible in that checkpoint's document.
pub(crate) const CHECKPOINT_WRITERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("checkpoint_writers");

/// Ops between checkpoints, at least; past that, at least as many ops as the state has leaves,
/// so writing checkpoints costs O(1) per op.
pub(crate) const CHECKPOINT_OPS_MIN: u64 = 4096;

/// One experience in the index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub id: Id,
    pub author: u32,
    pub seq: u64,
    pub depth: u64,
    /// Non-zero clock entries by author index.
    pub clock: Vec<(u32, u64)>,
}

type EntryRecord = (u32, u64, u64, Vec<(u32, u64)>);

impl Entry {
    /// The stored form leaves out the id: it is the hash of the record's header, which the
    /// record holds.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        to_canonical(&(self.author, self.seq, self.depth, &self.clock))
    }

    /// The entry stored as `bytes` for the experience `id`.
    pub(crate) fn from_bytes(bytes: &[u8], id: Id) -> Result<Entry, StoreError> {
        let (author, seq, depth, clock): EntryRecord =
            from_canonical(bytes).map_err(|e| corrupt(&format!("an index entry: {e}")))?;
        Ok(Entry {
            id,
            author,
            seq,
            depth,
            clock,
        })
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
    }
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io {
        path: "store.redb".into(),
        error: e.into().to_string(),
    }
}

/// Who wrote each experience whose ops are still visible in a document: (id, author, seq).
type Writers = BTreeMap<Id, (u32, u64)>;

/// Writes a checkpoint covering arrivals `0..upto`: its frontier clock, every leaf, and who
/// wrote each experience the leaves still name (so time travel never looks an id up). Those
/// writers are the previous checkpoint's plus the experiences indexed since it. Returns
/// whether it was written.
/// Writes a checkpoint of `doc` after the first `upto` arrivals. Returns the bytes written, or
/// `None` when no checkpoint can be written (see below).
pub(crate) fn write_checkpoint<'a>(
    txn: &WriteTransaction,
    cloud: &Id,
    upto: u64,
    clock: &VectorClock,
    doc: &Doc,
    recent: Option<impl Iterator<Item = &'a Written>>,
) -> Result<Option<u64>, StoreError> {
    let mut known: Writers = BTreeMap::new();
    let from = {
        let table = txn.open_table(CHECKPOINT_WRITERS).map_err(db)?;
        let last = table.last().map_err(db)?;
        match last {
            Some((k, v)) => {
                known = decode_writers(v.value())?;
                k.value()
            }
            None => 0,
        }
    };
    match recent {
        // The caller remembers everything stored since the last checkpoint.
        Some(recent) => known.extend(recent.map(|(id, a, s)| (*id, (*a, *s)))),
        None => {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let names = Names::read(&txn.open_table(AUTHORS).map_err(db)?, *cloud)?;
            records::for_each(&groups, &names, from, |n, entry, _, id| {
                if n < upto {
                    let entry = Entry::from_bytes(entry, id)?;
                    known.insert(entry.id, (entry.author, entry.seq));
                }
                Ok(())
            })?;
        }
    }
    let mut writers: Vec<(Id, u32, u64)> = Vec::new();
    for id in doc.dot_experiences() {
        match known.get(&id) {
            Some((a, s)) => writers.push((id, *a, *s)),
            // Only a refold after a fork (quarantine) can bring back an element whose writer
            // the chain of checkpoints has not seen; time travel through the index is off once
            // anyone forked, so this checkpoint is simply not written.
            None => return Ok(None),
        }
    }
    let clock: Vec<(&NodeId, &u64)> = clock.0.iter().collect();
    let root = Path::root();
    let leaves: Vec<(&Path, ByteBuf)> = doc
        .leaves_under(&root)
        .map(|(p, l)| (p, ByteBuf(l.to_bytes())))
        .collect();
    let leaves = sealed(&to_canonical(&leaves));
    let writers = sealed(&to_canonical(&writers));
    txn.open_table(CHECKPOINT_CLOCKS)
        .map_err(db)?
        .insert(upto, sealed(&to_canonical(&clock)).as_slice())
        .map_err(db)?;
    txn.open_table(CHECKPOINTS)
        .map_err(db)?
        .insert(upto, leaves.as_slice())
        .map_err(db)?;
    txn.open_table(CHECKPOINT_WRITERS)
        .map_err(db)?
        .insert(upto, writers.as_slice())
        .map_err(db)?;
    Ok(Some((leaves.len() + writers.len()) as u64))
}

fn decode_checkpoint_clock(rec: &[u8]) -> Result<VectorClock, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint clock".into())?;
    let clock: Vec<(NodeId, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(&format!("a checkpoint clock: {e}")))?;
    Ok(VectorClock(clock.into_iter().collect()))
}

fn decode_checkpoint(rec: &[u8]) -> Result<Doc, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint".into())?;
    let leaves: Vec<(Path, ByteBuf)> =
        from_canonical(bytes).map_err(|e| corrupt(&format!("a checkpoint: {e}")))?;
    let mut doc = Doc::default();
    for (path, leaf) in leaves {
        let leaf = Leaf::from_bytes(&leaf.0).map_err(|e| corrupt(&format!("a checkpoint: {e}")))?;
        doc.insert_leaf(path, leaf);
    }
    Ok(doc)
}

fn decode_writers(rec: &[u8]) -> Result<Writers, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint's writers".into())?;
    let writers: Vec<(Id, u32, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(&format!("a checkpoint's writers: {e}")))?;
    Ok(writers.into_iter().map(|(id, a, s)| (id, (a, s))).collect())
}

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

/// The document at `clock`, from the index and checkpoints. The caller has checked that no
/// author forked and that there are no calls to order-sensitive morphisms.
pub(crate) fn document_at(
    txn: &redb::ReadTransaction,
    cloud: &Id,
    clock: &VectorClock,
) -> Result<Doc, StoreError> {
    let authors = txn.open_table(AUTHORS).map_err(db)?;
    let groups = txn.open_table(GROUPS).map_err(db)?;
    let mut records = Records::new(&groups, Names::read(&authors, *cloud)?);
    let runs = txn.open_table(RUNS).map_err(db)?;
    let checkpoints = txn.open_table(CHECKPOINTS).map_err(db)?;
    let checkpoint_clocks = txn.open_table(CHECKPOINT_CLOCKS).map_err(db)?;
    let checkpoint_writers = txn.open_table(CHECKPOINT_WRITERS).map_err(db)?;
    let mut dense: Vec<(u32, u64)> = Vec::new();
    let mut by_node = BTreeMap::new();
    for row in authors.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        by_node.insert(NodeId(*v.value()), k.value());
    }
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
        let cp_clock = decode_checkpoint_clock(v.value())?;
        if cp_clock.le(clock) {
            let upto = k.value();
            let rec = checkpoints
                .get(upto)
                .map_err(db)?
                .ok_or_else(|| corrupt(&format!("checkpoint {upto} is missing")))?;
            let writers = checkpoint_writers
                .get(upto)
                .map_err(db)?
                .ok_or_else(|| corrupt(&format!("checkpoint {upto} has no writers")))?;
            let base_doc = decode_checkpoint(rec.value())?;
            base = Some((upto, cp_clock, (base_doc, decode_writers(writers.value())?)));
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
        records::chain(&runs, *a, from, to, |_, arrival| {
            let entry = records.entry(arrival)?;
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
    for (arrival, entry) in rest {
        let exp = revalidate_stored(&records.bytes(arrival)?, cloud)
            .map_err(|e| corrupt(&format!("experience #{arrival}: {e}")))?;
        if exp.id() != entry.id {
            return Err(corrupt(&format!(
                "experience #{arrival} does not match its index entry"
            )));
        }
        for (i, op) in exp.ops().iter().enumerate() {
            let dot = Dot {
                depth: entry.depth,
                exp: entry.id,
                op: i as u32,
            };
            doc.apply(op, dot, &observer);
        }
    }
    Ok(doc)
}

/// Bytes of checkpoint (or of rewritten leaves) each op may cost, amortized: the next
/// checkpoint waits for at least the last one's size divided by this many ops. A state whose
/// leaves grow with history (a set that is only added to, a counter's increments) would
/// otherwise be written whole every few thousand ops: quadratic in the history.
pub(crate) const BYTES_PER_OP: u64 = 64;

/// Whether a new checkpoint is due: `ops_since` ops since the last, whose size was
/// `last_bytes`, against the fewest ops between checkpoints. Time travel replays at most this
/// many ops after reading a checkpoint, so its cost stays proportional to the checkpoint's.
pub(crate) fn checkpoint_due(ops_since: u64, last_bytes: u64, min: u64) -> bool {
    ops_since >= min.max(last_bytes / BYTES_PER_OP)
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
                1 => drop(decode_checkpoint_clock(&sealed(rest))),
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
        assert_eq!(decode_checkpoint_clock(&rec).unwrap().0.len(), 1);
        let mut bad = rec.clone();
        bad[20] ^= 1;
        assert!(
            decode_checkpoint_clock(&bad).is_err(),
            "a flipped bit is caught"
        );
    }
}
