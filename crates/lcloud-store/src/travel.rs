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
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 10 * self.clock.len());
        Entry::encode_into(&mut out, self.author, self.seq, self.depth, &self.clock);
        out
    }

    /// Appends the stored form of an entry to `out`: the canonical DAG-CBOR of
    /// `[author, seq, depth, [[author, seq], …]]`, written directly (serde's encoder took a
    /// twentieth of storing a pushed experience).
    pub(crate) fn encode_into(
        out: &mut Vec<u8>,
        author: u32,
        seq: u64,
        depth: u64,
        clock: &[(u32, u64)],
    ) {
        use lcloud_core::codec::write_head;
        const UINT: u8 = 0;
        const ARRAY: u8 = 4;
        write_head(out, ARRAY, 4);
        write_head(out, UINT, u64::from(author));
        write_head(out, UINT, seq);
        write_head(out, UINT, depth);
        write_head(out, ARRAY, clock.len() as u64);
        for (a, s) in clock {
            write_head(out, ARRAY, 2);
            write_head(out, UINT, u64::from(*a));
            write_head(out, UINT, *s);
        }
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

/// Where a checkpoint learns who wrote the experiences its document still names.
pub(crate) enum WritersFrom<'a, I> {
    /// Everything stored since the previous checkpoint, as a long-lived store remembers it
    /// (the previous checkpoint's writers cover the rest).
    Recent(I),
    /// Nothing remembered: the previous checkpoint's writers plus the groups stored since,
    /// read back.
    Groups,
    /// The replica's lattice, which holds every experience (a node, an import).
    Lattice(&'a lcloud_core::Lattice),
}

/// Writes a checkpoint of `doc` after the first `upto` arrivals: its frontier clock, every
/// leaf, and who wrote each experience the leaves still name (so time travel never looks an
/// id up). Returns the bytes written, or `None` when no checkpoint can be written (see below).
pub(crate) fn write_checkpoint<'a>(
    txn: &WriteTransaction,
    cloud: &Id,
    upto: u64,
    clock: &VectorClock,
    doc: &Doc,
    from: WritersFrom<'_, impl Iterator<Item = &'a Written>>,
) -> Result<Option<u64>, StoreError> {
    let needed = doc.dot_experiences();
    let resolved = match from {
        WritersFrom::Lattice(lattice) => {
            let names = Names::read(&txn.open_table(AUTHORS).map_err(db)?, *cloud)?;
            let number: BTreeMap<&NodeId, u32> = names.authors.iter().zip(0u32..).collect();
            needed
                .into_iter()
                .map(|id| {
                    let exp = lattice.get(lattice.idx(&id)?);
                    Some((id, *number.get(&exp.author())?, exp.seq()))
                })
                .collect::<Option<Vec<_>>>()
        }
        WritersFrom::Recent(recent) => {
            look_up(&known_writers(txn, cloud, upto, Some(recent))?, needed)
        }
        WritersFrom::Groups => look_up(
            &known_writers(txn, cloud, upto, None::<std::iter::Empty<&Written>>)?,
            needed,
        ),
    };
    // Only a refold after a fork (quarantine) can bring back an element whose writer the chain
    // of checkpoints has not seen; time travel through the index is off once anyone forked,
    // so this checkpoint is simply not written.
    let Some(writers) = resolved else {
        return Ok(None);
    };
    let clock: Vec<(&NodeId, &u64)> = clock.0.iter().collect();
    let root = Path::root();
    let leaves = sealed(&encode_leaves(doc, &root));
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

/// `(id, author, seq)` of each of `ids`, or `None` if one is not in `known`.
fn look_up(known: &Writers, ids: std::collections::BTreeSet<Id>) -> Option<Vec<(Id, u32, u64)>> {
    ids.into_iter()
        .map(|id| known.get(&id).map(|(a, s)| (id, *a, *s)))
        .collect()
}

/// The writers of the previous checkpoint and of every experience stored since, up to `upto`:
/// `recent` if the store remembers them, else read back from the groups.
fn known_writers<'a>(
    txn: &WriteTransaction,
    cloud: &Id,
    upto: u64,
    recent: Option<impl Iterator<Item = &'a Written>>,
) -> Result<Writers, StoreError> {
    let mut known: Writers = BTreeMap::new();
    let after = {
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
        Some(recent) => known.extend(recent.map(|(id, a, s)| (*id, (*a, *s)))),
        None => {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let names = Names::read(&txn.open_table(AUTHORS).map_err(db)?, *cloud)?;
            records::for_each(&groups, &names, after, |n, entry, _, id| {
                if n < upto {
                    let entry = Entry::from_bytes(entry, id)?;
                    known.insert(entry.id, (entry.author, entry.seq));
                }
                Ok(())
            })?;
        }
    }
    Ok(known)
}

/// The canonical DAG-CBOR of `[[path, leaf bytes], …]` for every leaf of `doc` under `root`
/// (what `decode_checkpoint` reads), written directly into one buffer.
fn encode_leaves(doc: &Doc, root: &Path) -> Vec<u8> {
    use lcloud_core::codec::{write_bytes, write_head, write_text};
    let mut out = Vec::with_capacity(doc.len() * 64);
    let mut leaf_bytes = Vec::new();
    write_head(&mut out, 4, doc.leaves_under(root).count() as u64);
    for (path, leaf) in doc.leaves_under(root) {
        out.push(0x82);
        write_head(&mut out, 4, path.0.len() as u64);
        for seg in &path.0 {
            write_text(&mut out, seg);
        }
        leaf_bytes.clear();
        leaf.encode_into(&mut leaf_bytes);
        write_bytes(&mut out, &leaf_bytes);
    }
    out
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
mod entry_tests {
    use super::*;

    /// A checkpoint's leaves, written directly, are serde's canonical bytes and read back.
    #[test]
    fn checkpoint_leaves_encode_as_serde_would() {
        use lcloud_core::{ObservesEverything, Op, Value};
        let mut doc = Doc::default();
        for i in 0..40u32 {
            let path = Path(vec!["k".repeat(i as usize % 30), i.to_string()]);
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
            doc.apply(&op, dot, &ObservesEverything);
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
