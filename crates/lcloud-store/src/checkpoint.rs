//! Time-travel checkpoints: the document after a prefix of arrivals, written every few
//! thousand ops (and at least one op per 64 bytes the last one took), naming each writer by
//! (author, seq) and leaving out what the records hold; compressed when that pays; read back
//! with their writers resolved through the index (docs/store.md, "Time travel without
//! replaying history").

use std::collections::BTreeMap;

use lcloud_core::codec::{ByteBuf, from_canonical_stored as from_canonical, to_canonical};
use lcloud_core::{Doc, Dot, Id, Leaf, NodeId, Path, VectorClock, revalidate_stored};
use redb::{ReadableTable, WriteTransaction};

use crate::error::{StoreError, corrupt, db};
use crate::record::Names;
use crate::records::{self, Records, Written};
use crate::schema::{AUTHORS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS, CHECKPOINTS, GROUPS, RUNS};
use crate::state::{sealed_at, unseal, unseal_at};

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
pub(super) const CHECKPOINT_REFS: u8 = 0x02;

/// Checkpoints written from format 5 on start with this byte instead: the same layout, with
/// each experience's increments of a counter merged as the fold merges them
/// (`Leaf::add_increment`). Those before hold one increment per op, merged when read.
pub(super) const CHECKPOINT_MERGED: u8 = 0x03;

/// Checkpoints written from format 9 on may start with this byte instead: the length of what
/// follows expanded (u32 LE, at most [`CHECKPOINT_UNPACKED_MAX`]), then one zstd frame of a
/// [`CHECKPOINT_MERGED`] checkpoint. Written so when that saves at least an eighth.
pub(super) const CHECKPOINT_PACKED: u8 = 0x04;

/// The most bytes a compressed checkpoint may expand to (its length is checked, after the
/// record's tag, before anything is allocated).
pub(super) const CHECKPOINT_UNPACKED_MAX: usize = 1 << 31;

/// A checkpoint's bytes as stored: compressed when that pays.
pub(super) fn pack_checkpoint(bytes: Vec<u8>) -> Vec<u8> {
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
pub(super) fn unpack_checkpoint(
    bytes: &[u8],
    upto: u64,
) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
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
pub(super) fn checkpoint_refs(bytes: &[u8]) -> Option<(&[u8], bool)> {
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
pub(super) const INLINE_VALUE_MAX: usize = 40;

/// A register in a checkpoint: (writer, op, `[value]`, or `[]` when it is left out).
pub(super) type RegRef = (u32, u32, Vec<lcloud_core::Value>);
/// A leaf in a checkpoint: registers, increments (writer, op, amount), set elements.
pub(super) type LeafRefs = (
    Vec<RegRef>,
    Vec<(u32, u32, i64)>,
    Vec<(ByteBuf, Vec<(u32, u32)>)>,
);
/// A checkpoint: its writers as (author, seq), then its leaves.
pub(super) type CheckpointRefs = (Vec<(u32, u64)>, Vec<(Path, LeafRefs)>);

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
pub(super) fn encode_checkpoint(doc: &Doc, writers: &[(Id, u32, u64)]) -> Vec<u8> {
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
pub(super) fn look_up(
    known: &Writers,
    ids: std::collections::BTreeSet<Id>,
) -> Option<Vec<(Id, u32, u64)>> {
    ids.into_iter()
        .map(|id| known.get(&id).map(|(a, s)| (id, *a, *s)))
        .collect()
}

/// The writers of the previous checkpoint and of every experience stored since, up to `upto`:
/// `recent` if the store remembers them, else read back from the groups. The previous
/// checkpoint's are `cached` if that is the one the caller kept, else read back.
pub(super) fn known_writers<'a>(
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
pub(super) fn encode_leaves(doc: &Doc, root: &Path) -> Vec<u8> {
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

pub(super) fn decode_checkpoint_clock(upto: u64, rec: &[u8]) -> Result<VectorClock, StoreError> {
    let bytes = unseal_at("checkpoint_clocks", upto, rec, &|| {
        format!("checkpoint {upto}'s clock")
    })?;
    let clock: Vec<(NodeId, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(format!("a checkpoint clock: {e}")))?;
    Ok(VectorClock(clock.into_iter().collect()))
}

pub(super) fn decode_checkpoint(rec: &[u8]) -> Result<Doc, StoreError> {
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

pub(super) fn decode_writers(rec: &[u8]) -> Result<Writers, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint's writers".into())?;
    let writers: Vec<(Id, u32, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(format!("a checkpoint's writers: {e}")))?;
    Ok(writers.into_iter().map(|(id, a, s)| (id, (a, s))).collect())
}

/// Each of a checkpoint's writers, (author, seq), looked up through the runs and checked
/// against its record: its (arrival, id, depth), and the writers by id.
#[allow(clippy::type_complexity)]
pub(super) fn resolve_writers<G: ReadableTable<u64, &'static [u8]>>(
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
pub(super) fn checkpoint_writers<G: ReadableTable<u64, &'static [u8]>>(
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
pub(super) fn written_at<'v>(
    op: &'v lcloud_core::Op,
    path: &Path,
) -> Option<&'v lcloud_core::Value> {
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
