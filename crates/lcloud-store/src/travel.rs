//! Time travel without loading the history: an index of every experience (author, seq,
//! depth, vector clock), each author's chain by seq, and checkpoints of the document at
//! arrival prefixes. The state at a clock is the latest checkpoint inside the cut plus the
//! experiences of the cut that came after it, applied with causality read from the index.

use std::collections::{BTreeMap, HashMap};

use lcloud_core::codec::{ByteBuf, from_canonical_stored as from_canonical, to_canonical};
use lcloud_core::{Doc, Dot, Id, Leaf, NodeId, Observer, Path, VectorClock, revalidate_stored};
use redb::{ReadableTable, WriteTransaction};

use crate::entry::Entry;
use crate::error::{StoreError, corrupt, db};
use crate::record::Names;
use crate::records::{self, Records, Written};
use crate::schema::{
    AUTHORS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS, CHECKPOINTS, GROUPS, RUNS, SETTLES,
};
use crate::state::{sealed, sealed_at, unseal, unseal_at};

/// Ops between checkpoints, at least; past that, at least as many ops as the state has leaves,
/// so writing checkpoints costs O(1) per op.
pub(crate) const CHECKPOINT_OPS_MIN: u64 = 4096;

/// Who wrote each experience whose ops are still visible in a document: (id, author, seq).
pub(crate) type Writers = BTreeMap<Id, (u32, u64)>;

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

/// Checkpoints written from format 4 on start with this byte (those before are a CBOR array):
/// they name each writer by (author, seq) and each element by (writer, op), and leave out the
/// register values the records hold ([`INLINE_VALUE_MAX`]).
const CHECKPOINT_REFS: u8 = 0x02;

/// Checkpoints written from format 5 on start with this byte instead: the same layout, with
/// each experience's increments of a counter merged as the fold merges them
/// (`Leaf::add_increment`). Those before hold one increment per op, merged when read.
const CHECKPOINT_MERGED: u8 = 0x03;

/// Checkpoints written from format 9 on may start with this byte instead: the length of what
/// follows expanded (u32 LE, at most [`CHECKPOINT_UNPACKED_MAX`]), then one zstd frame of a
/// [`CHECKPOINT_MERGED`] checkpoint. Written so when that saves at least an eighth.
const CHECKPOINT_PACKED: u8 = 0x04;

/// The most bytes a compressed checkpoint may expand to (its length is checked, after the
/// record's tag, before anything is allocated).
const CHECKPOINT_UNPACKED_MAX: usize = 1 << 31;

/// A checkpoint's bytes as stored: compressed when that pays.
fn pack_checkpoint(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(packed) = zstd::bulk::compress(&bytes, crate::group::LEVEL) else {
        return bytes;
    };
    if packed.len() + 5 > bytes.len() - bytes.len() / 8 {
        return bytes;
    }
    let mut out = Vec::with_capacity(5 + packed.len());
    out.push(CHECKPOINT_PACKED);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    out
}

/// A checkpoint's bytes, unsealed, expanded if they are compressed.
fn unpack_checkpoint(bytes: &[u8], upto: u64) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    let Some((&CHECKPOINT_PACKED, rest)) = bytes.split_first() else {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    };
    let bad = |why: String| corrupt(format!("checkpoint {upto}: {why}"));
    let len = rest
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("truncated compressed length".into()))?;
    if len > CHECKPOINT_UNPACKED_MAX {
        return Err(bad(format!("claims {len} bytes expanded")));
    }
    let out = zstd::bulk::decompress(&rest[4..], len)
        .map_err(|e| bad(format!("its compressed bytes: {e}")))?;
    if out.len() != len || out.first() == Some(&CHECKPOINT_PACKED) {
        return Err(bad(format!(
            "its compressed bytes expand to {} bytes, not the {len} it claims",
            out.len()
        )));
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// A checkpoint's references (after its first byte) and whether its increments are merged,
/// or `None` for a checkpoint of copied leaves (before format 4).
fn checkpoint_refs(bytes: &[u8]) -> Option<(&[u8], bool)> {
    match bytes.split_first() {
        Some((&CHECKPOINT_MERGED, refs)) => Some((refs, true)),
        Some((&CHECKPOINT_REFS, refs)) => Some((refs, false)),
        _ => None,
    }
}

/// A register value whose encoding is longer than this many bytes is not copied into a
/// checkpoint: the checkpoint names the op that wrote it, and reading the checkpoint takes
/// the value from that op's record. (A checkpoint of a thousand 200-byte values every 4096
/// ops cost 52 bytes per op when it copied them.)
const INLINE_VALUE_MAX: usize = 40;

/// A register in a checkpoint: (writer, op, `[value]`, or `[]` when it is left out).
type RegRef = (u32, u32, Vec<lcloud_core::Value>);
/// A leaf in a checkpoint: registers, increments (writer, op, amount), set elements.
type LeafRefs = (
    Vec<RegRef>,
    Vec<(u32, u32, i64)>,
    Vec<(ByteBuf, Vec<(u32, u32)>)>,
);
/// A checkpoint: its writers as (author, seq), then its leaves.
type CheckpointRefs = (Vec<(u32, u64)>, Vec<(Path, LeafRefs)>);

/// Writes a checkpoint of `doc` after the first `upto` arrivals: its frontier clock, every
/// leaf, and who wrote each experience the leaves still name (so time travel never looks an
/// id up). `cached` is the last checkpoint's writers if the caller kept them. Returns the
/// bytes written and the new checkpoint's writers, or `None` when no checkpoint can be
/// written (see below).
pub(crate) fn write_checkpoint<'a>(
    txn: &WriteTransaction,
    cloud: &Id,
    upto: u64,
    clock: &VectorClock,
    doc: &Doc,
    from: WritersFrom<'_, impl Iterator<Item = &'a Written>>,
    cached: Option<(u64, &Writers)>,
) -> Result<Option<(u64, Writers)>, StoreError> {
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
        WritersFrom::Recent(recent) => look_up(
            &known_writers(txn, cloud, upto, Some(recent), cached)?,
            needed,
        ),
        WritersFrom::Groups => look_up(
            &known_writers(txn, cloud, upto, None::<std::iter::Empty<&Written>>, cached)?,
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
    let leaves = sealed_at(
        "checkpoints",
        upto,
        &pack_checkpoint(encode_checkpoint(doc, &writers)),
    );
    txn.open_table(CHECKPOINT_CLOCKS)
        .map_err(db)?
        .insert(
            upto,
            sealed_at("checkpoint_clocks", upto, &to_canonical(&clock)).as_slice(),
        )
        .map_err(db)?;
    txn.open_table(CHECKPOINTS)
        .map_err(db)?
        .insert(upto, leaves.as_slice())
        .map_err(db)?;
    let writers: Writers = writers.into_iter().map(|(id, a, s)| (id, (a, s))).collect();
    Ok(Some((leaves.len() as u64, writers)))
}

/// The bytes of a checkpoint of `doc` whose writers are `writers` (sorted by id): see
/// [`CHECKPOINT_MERGED`].
fn encode_checkpoint(doc: &Doc, writers: &[(Id, u32, u64)]) -> Vec<u8> {
    let index = |id: &Id| -> u32 {
        writers
            .binary_search_by(|(w, _, _)| w.cmp(id))
            .expect("every writer was resolved") as u32
    };
    let mut scratch = Vec::new();
    let root = Path::root();
    let leaves: Vec<(&Path, LeafRefs)> = doc
        .leaves_under(&root)
        .map(|(path, leaf)| {
            let regs = leaf
                .regs
                .iter()
                .map(|(d, v)| {
                    scratch.clear();
                    v.encode_into(&mut scratch);
                    let inline = if scratch.len() > INLINE_VALUE_MAX {
                        Vec::new()
                    } else {
                        vec![v.clone()]
                    };
                    (index(&d.exp), d.op, inline)
                })
                .collect();
            let incs = leaf
                .incs
                .iter()
                .map(|(d, n)| (index(&d.exp), d.op, *n))
                .collect();
            let elems = leaf
                .elems
                .iter()
                .map(|(k, ds)| {
                    let refs = ds.iter().map(|d| (index(&d.exp), d.op)).collect();
                    (ByteBuf(k.clone()), refs)
                })
                .collect();
            (path, (regs, incs, elems))
        })
        .collect();
    let list: Vec<(u32, u64)> = writers.iter().map(|(_, a, s)| (*a, *s)).collect();
    let mut out = vec![CHECKPOINT_MERGED];
    out.extend_from_slice(&to_canonical(&(list, leaves)));
    out
}

/// `(id, author, seq)` of each of `ids`, or `None` if one is not in `known`.
fn look_up(known: &Writers, ids: std::collections::BTreeSet<Id>) -> Option<Vec<(Id, u32, u64)>> {
    ids.into_iter()
        .map(|id| known.get(&id).map(|(a, s)| (id, *a, *s)))
        .collect()
}

/// The writers of the previous checkpoint and of every experience stored since, up to `upto`:
/// `recent` if the store remembers them, else read back from the groups. The previous
/// checkpoint's are `cached` if that is the one the caller kept, else read back.
fn known_writers<'a>(
    txn: &WriteTransaction,
    cloud: &Id,
    upto: u64,
    recent: Option<impl Iterator<Item = &'a Written>>,
    cached: Option<(u64, &Writers)>,
) -> Result<Writers, StoreError> {
    let last = txn
        .open_table(CHECKPOINTS)
        .map_err(db)?
        .last()
        .map_err(db)?
        .map(|(k, v)| (k.value(), v.value().to_vec()));
    let (after, mut known) = match (last, cached) {
        (None, _) => (0, Writers::new()),
        (Some((k, _)), Some((c, writers))) if c == k => (k, writers.clone()),
        (Some((k, rec)), _) => {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let names = Names::read(&txn.open_table(AUTHORS).map_err(db)?, *cloud)?;
            let runs = txn.open_table(RUNS).map_err(db)?;
            let mut records = Records::new(&groups, names);
            let writers = txn.open_table(CHECKPOINT_WRITERS).map_err(db)?;
            (
                k,
                checkpoint_writers(k, &rec, &writers, &runs, &mut records)?,
            )
        }
    };
    match recent {
        Some(recent) => known.extend(recent.map(|(id, a, s)| (*id, (*a, *s)))),
        None => {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let names = Names::read(&txn.open_table(AUTHORS).map_err(db)?, *cloud)?;
            records::for_each(&groups, &names, after, |n, entry, _, _| {
                if n < upto {
                    let entry = entry.decode()?;
                    known.insert(entry.id, (entry.author, entry.seq));
                }
                Ok(())
            })?;
        }
    }
    Ok(known)
}

/// The canonical DAG-CBOR of `[[path, leaf bytes], …]` for every leaf of `doc` under `root`
/// (what `decode_checkpoint` reads): a checkpoint as stores before format 4 wrote them.
#[cfg(test)]
fn encode_leaves(doc: &Doc, root: &Path) -> Vec<u8> {
    use lcloud_core::codec::{write_bytes, write_head, write_text};
    let mut out = Vec::with_capacity(doc.len() * 64);
    let mut leaf_bytes = Vec::new();
    write_head(&mut out, 4, doc.leaves_under(root).count() as u64);
    for (path, leaf) in doc.leaves_under(root) {
        out.push(0x82);
        write_head(&mut out, 4, path.0.len() as u64);
        for seg in path.0.iter() {
            write_text(&mut out, seg);
        }
        leaf_bytes.clear();
        leaf.encode_into(&mut leaf_bytes);
        write_bytes(&mut out, &leaf_bytes);
    }
    out
}

fn decode_checkpoint_clock(upto: u64, rec: &[u8]) -> Result<VectorClock, StoreError> {
    let bytes = unseal_at("checkpoint_clocks", upto, rec, &|| {
        format!("checkpoint {upto}'s clock")
    })?;
    let clock: Vec<(NodeId, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(format!("a checkpoint clock: {e}")))?;
    Ok(VectorClock(clock.into_iter().collect()))
}

fn decode_checkpoint(rec: &[u8]) -> Result<Doc, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint".into())?;
    let leaves: Vec<(Path, ByteBuf)> =
        from_canonical(bytes).map_err(|e| corrupt(format!("a checkpoint: {e}")))?;
    let mut doc = Doc::default();
    for (path, leaf) in leaves {
        let mut leaf =
            Leaf::from_bytes(&leaf.0).map_err(|e| corrupt(format!("a checkpoint: {e}")))?;
        // Written before increments were merged (format 3 and older).
        leaf.merge_increments();
        doc.insert_leaf(path, leaf);
    }
    Ok(doc)
}

fn decode_writers(rec: &[u8]) -> Result<Writers, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint's writers".into())?;
    let writers: Vec<(Id, u32, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(format!("a checkpoint's writers: {e}")))?;
    Ok(writers.into_iter().map(|(id, a, s)| (id, (a, s))).collect())
}

/// Each of a checkpoint's writers, (author, seq), looked up through the runs and checked
/// against its record: its (arrival, id, depth), and the writers by id.
#[allow(clippy::type_complexity)]
fn resolve_writers<G: ReadableTable<u64, &'static [u8]>>(
    upto: u64,
    list: &[(u32, u64)],
    runs: &impl ReadableTable<(u32, u64, u64), u64>,
    records: &mut Records<'_, G>,
) -> Result<(Vec<(u64, Id, u64)>, Writers), StoreError> {
    let bad = |why: &str| corrupt(format!("checkpoint {upto}: {why}"));
    // Read in arrival order (records share groups).
    let mut at: Vec<(u64, usize)> = Vec::with_capacity(list.len());
    for (i, (author, seq)) in list.iter().enumerate() {
        let mut found = None;
        records::chain(runs, *author, *seq, *seq, |_, arrival| {
            found = Some(arrival);
            Ok(false)
        })?;
        let arrival =
            found.ok_or_else(|| bad(&format!("its writer #{author}:{seq} is not in the index")))?;
        at.push((arrival, i));
    }
    at.sort_unstable();
    let mut resolved: Vec<(u64, Id, u64)> = vec![(0, Id::default(), 0); list.len()];
    let mut known = Writers::new();
    for (arrival, i) in at {
        let entry = records.entry(arrival)?;
        if (entry.author, entry.seq) != list[i] {
            return Err(bad(&format!(
                "experience #{arrival} is not the writer it names"
            )));
        }
        resolved[i] = (arrival, entry.id, entry.depth);
        known.insert(entry.id, list[i]);
    }
    Ok((resolved, known))
}

/// The writers of the checkpoint `rec` after `upto` arrivals (what [`read_checkpoint`] gives
/// with its document, without reading the values the document leaves out).
fn checkpoint_writers<G: ReadableTable<u64, &'static [u8]>>(
    upto: u64,
    rec: &[u8],
    writers: &impl ReadableTable<u64, &'static [u8]>,
    runs: &impl ReadableTable<(u32, u64, u64), u64>,
    records: &mut Records<'_, G>,
) -> Result<Writers, StoreError> {
    let bytes = unpack_checkpoint(
        unseal_at("checkpoints", upto, rec, &|| format!("checkpoint {upto}"))?,
        upto,
    )?;
    let Some((refs, _)) = checkpoint_refs(&bytes) else {
        let w = writers
            .get(upto)
            .map_err(db)?
            .ok_or_else(|| corrupt(format!("checkpoint {upto} has no writers")))?;
        return decode_writers(w.value());
    };
    let (list, _): CheckpointRefs =
        from_canonical(refs).map_err(|e| corrupt(format!("checkpoint {upto}: {e}")))?;
    Ok(resolve_writers(upto, &list, runs, records)?.1)
}

/// The document and writers of the checkpoint `rec` after `upto` arrivals, in either form:
/// copied leaves with their writers in `writers` (before format 4), or [`CHECKPOINT_MERGED`]
/// (or [`CHECKPOINT_REFS`], format 4),
/// whose writers and left-out values are read from their records (and checked to be what
/// the checkpoint names).
pub(crate) fn read_checkpoint<G: ReadableTable<u64, &'static [u8]>>(
    upto: u64,
    rec: &[u8],
    writers: &impl ReadableTable<u64, &'static [u8]>,
    runs: &impl ReadableTable<(u32, u64, u64), u64>,
    records: &mut Records<'_, G>,
    cloud: &Id,
) -> Result<(Doc, Writers), StoreError> {
    let bytes = unpack_checkpoint(
        unseal_at("checkpoints", upto, rec, &|| format!("checkpoint {upto}"))?,
        upto,
    )?;
    let Some((refs, merged)) = checkpoint_refs(&bytes) else {
        let doc = decode_checkpoint(rec)?;
        let w = writers
            .get(upto)
            .map_err(db)?
            .ok_or_else(|| corrupt(format!("checkpoint {upto} has no writers")))?;
        return Ok((doc, decode_writers(w.value())?));
    };
    let bad = |why: &str| corrupt(format!("checkpoint {upto}: {why}"));
    let (list, leaves): CheckpointRefs = from_canonical(refs).map_err(|e| bad(&e.to_string()))?;
    let (resolved, known) = resolve_writers(upto, &list, runs, records)?;
    let dot = |w: u32, op: u32| -> Result<Dot, StoreError> {
        let (_, exp, depth) = resolved
            .get(w as usize)
            .ok_or_else(|| bad(&format!("it names writer {w} of {}", list.len())))?;
        Ok(Dot {
            depth: *depth,
            exp: *exp,
            op,
        })
    };
    // The leaves, with the values left out still to be read: (arrival, leaf, register).
    let mut built: Vec<(Path, Leaf)> = Vec::with_capacity(leaves.len());
    let mut missing: Vec<(u64, usize, usize)> = Vec::new();
    for (path, (regs, incs, elems)) in leaves {
        let mut leaf = Leaf::default();
        for (w, op, value) in regs {
            let d = dot(w, op)?; // checks that the writer exists
            let value = match <[_; 1]>::try_from(value) {
                Ok([v]) => v,
                Err(v) if v.is_empty() => {
                    missing.push((resolved[w as usize].0, built.len(), leaf.regs.len()));
                    lcloud_core::Value::Null
                }
                Err(_) => return Err(bad("a register holds more than one value")),
            };
            leaf.regs.push((d, value));
        }
        for (w, op, n) in incs {
            leaf.incs.insert(dot(w, op)?, n);
        }
        leaf.inc_sum = leaf.incs.values().map(|n| i128::from(*n)).sum();
        if !merged {
            leaf.merge_increments();
        }
        for (key, refs) in elems {
            let dots = refs
                .into_iter()
                .map(|(w, op)| dot(w, op))
                .collect::<Result<Vec<_>, _>>()?;
            leaf.elems.insert(key.0, dots);
        }
        if !leaf.regs.is_sorted_by(|a, b| a.0 < b.0) {
            return Err(bad(&format!("the registers at {path} are out of order")));
        }
        built.push((path, leaf));
    }
    missing.sort_unstable();
    let mut exp: Option<(u64, lcloud_core::Verified<lcloud_core::Experience>)> = None;
    for (arrival, l, r) in missing {
        if exp.as_ref().is_none_or(|(a, _)| *a != arrival) {
            let e = revalidate_stored(&records.bytes(arrival)?, cloud)
                .map_err(|e| corrupt(format!("experience #{arrival}: {e}")))?;
            exp = Some((arrival, e));
        }
        let (_, e) = exp.as_ref().expect("just read");
        let (path, leaf) = &mut built[l];
        let reg = &mut leaf.regs[r];
        let value = e
            .ops()
            .get(reg.0.op as usize)
            .and_then(|op| written_at(op, path))
            .ok_or_else(|| {
                bad(&format!(
                    "the value at {path} is not in the op it names (experience #{arrival})"
                ))
            })?;
        reg.1 = value.clone();
    }
    let mut doc = Doc::default();
    for (path, leaf) in built {
        doc.insert_leaf(path, leaf);
    }
    Ok((doc, known))
}

/// The scalar `op` wrote at `path`: a set's value at the set's path, or the part of a map it
/// set at a path below (as the document writes maps, one leaf per key), or the genesis's
/// initial value likewise.
fn written_at<'v>(op: &'v lcloud_core::Op, path: &Path) -> Option<&'v lcloud_core::Value> {
    use lcloud_core::{Op, Value};
    let (at, mut value) = match op {
        Op::Set { path, value } => (&path.0[..], value),
        Op::Genesis(g) => (&[][..], &g.init),
        _ => return None,
    };
    let below = path.0.strip_prefix(at)?;
    for key in below {
        let Value::Map(m) = value else { return None };
        value = m.get(key)?;
    }
    (!matches!(value, Value::Map(_))).then_some(value)
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
        doc.apply_experience(exp.ops(), entry.depth, entry.id, &observer);
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
    use crate::state::sealed;

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

/// The `checkpoint` meta record: the arrival count of the last time-travel checkpoint and
/// the ops since it.
pub(crate) fn checkpoint_meta(last: u64, since: u64) -> Vec<u8> {
    let mut m = last.to_le_bytes().to_vec();
    m.extend_from_slice(&since.to_le_bytes());
    m
}

/// Reads a `checkpoint` meta record: the last checkpoint's arrival, the ops since, and the
/// last checkpoint's size in bytes (stores written before sizes were recorded hold its number
/// of leaves there, or nothing).
pub(crate) fn read_checkpoint_meta(bytes: &[u8]) -> Result<(u64, u64, u64), StoreError> {
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match (word(0), word(1)) {
        (Some(last), Some(since)) => Ok((last, since, word(2).unwrap_or(0))),
        _ => Err(corrupt("the checkpoint record is malformed")),
    }
}
