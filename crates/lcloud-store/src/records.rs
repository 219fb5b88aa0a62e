//! Experience records with their index entries, stored in groups: one redb value holds the
//! records of consecutive arrivals (up to [`GROUP_MAX`], and about a page of bytes), so a commit
//! of many experiences is a few B-tree inserts instead of two per experience, and each record
//! does not pay its own key, slot and checksum.
//!
//! A group is sealed (16-byte BLAKE3 tag, then the content). The content is
//! `count: u32 LE`, then `count` times `entry_len: u32 LE, entry, record_len: u32 LE, record`,
//! where `entry` is the index entry ([`Entry`]) and `record` the experience: its canonical bytes
//! less what the store knows already (see [`compact`]).

use std::collections::BTreeMap;
use std::ops::Range;

use std::borrow::Cow;

use lcloud_core::codec::item_end;
use lcloud_core::{Id, NodeId, VectorClock};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::state::unseal;
use crate::store::StoreError;
use crate::travel::{AUTHORS, Entry};

/// Arrival index of a group's first experience → sealed group.
pub(crate) const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");

/// (author index, first seq, first arrival) → count: each author's chain as runs of
/// consecutive seqs stored at consecutive arrivals (one entry for a whole import of one chain,
/// or a writer's stream of commits; one per experience where authors interleave).
pub(crate) const RUNS: TableDefinition<(u32, u64, u64), u64> = TableDefinition::new("runs");

/// Visits the arrivals of `author`'s experiences at seqs `from..=to` in seq order, as
/// `visit(seq, arrival)`, until it returns `false`. (A forked author has runs that overlap;
/// callers that need exactness check for forks first.)
pub(crate) fn chain(
    runs: &impl ReadableTable<(u32, u64, u64), u64>,
    author: u32,
    from: u64,
    to: u64,
    mut visit: impl FnMut(u64, u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if to < from {
        return Ok(());
    }
    // The run holding `from`, if one starts before it, then those that start after it.
    let before = runs
        .range((author, 0, 0)..=(author, from, u64::MAX))
        .map_err(db)?
        .next_back()
        .transpose()
        .map_err(db)?
        .map(|(k, v)| (k.value(), v.value()));
    let after = runs
        .range((author, from + 1, 0)..=(author, to, u64::MAX))
        .map_err(db)?;
    let first = before.into_iter().map(Ok);
    let rest = after.map(|row| row.map(|(k, v)| (k.value(), v.value())).map_err(db));
    for run in first.chain(rest) {
        let ((_, s0, arrival0), count) = run?;
        for seq in s0.max(from)..=to.min(s0.saturating_add(count).saturating_sub(1)) {
            if !visit(seq, arrival0 + (seq - s0))? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The bytes of a sealed value's tag (see `state::sealed`).
const TAG_BYTES: usize = 16;

/// Records per group, at most.
pub(crate) const GROUP_MAX: usize = 256;

/// A group takes no record that would make its content pass this many bytes, unless it is
/// the group's first: with its key, tag and slot a full group just fits a 4 KiB page. redb
/// gives a value larger than a page its own run of pages, rounded up to a power of two, so a
/// group is cut to fit such a run exactly; and one large commit (an import's chunk) must not
/// make a value that every read of one record must check whole.
const GROUP_BYTES: usize = 4096 - 64;

/// [`GROUP_BYTES`] for a commit of many experiences (a sync's push, an import's chunk): eight
/// pages. Each group is one B-tree insert and one checksum, and inserting 4 KiB groups was
/// two fifths of storing a pushed experience (measured with callgrind on the node's ingest
/// benchmark: 24.3k → 21.0k instructions per experience with these). Such groups are written
/// whole and never reopened (a later commit reopens a group only while it is under half of
/// [`GROUP_BYTES`]); a read of one record checks at most 32 KiB.
const BULK_GROUP_BYTES: usize = 32768 - 64;

/// Records a commit must store for it to fill [`BULK_GROUP_BYTES`] groups.
pub(crate) const BULK_RECORDS: usize = 256;

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt { what }
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io {
        path: "store.redb".into(),
        error: e.into().to_string(),
    }
}

/// How errors name a group: by its first experience, the one a reader is pointed to.
fn group_name(first: u64) -> String {
    format!("experience #{first} and the rest of its group")
}

/// Byte ranges (entry, experience) of each record of a group's content.
type Spans = Vec<(Range<usize>, Range<usize>)>;

/// Parses a group's content, checking every length against what is left before using it.
fn parse(content: &[u8], first: u64) -> Result<Spans, StoreError> {
    let bad = |why: &str| corrupt(format!("{}: {why}", group_name(first)));
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, StoreError> {
        let end = *at + 4;
        let b = content
            .get(*at..end)
            .ok_or_else(|| bad("truncated length"))?;
        *at = end;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let count = u32_at(&mut at)?;
    if count == 0 || count > GROUP_MAX {
        return Err(bad(&format!("holds {count} records (1 to {GROUP_MAX})")));
    }
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let span = |at: &mut usize| -> Result<Range<usize>, StoreError> {
            let n = u32_at(at)?;
            if n > content.len() - *at {
                return Err(bad("a record runs past the end"));
            }
            let r = *at..*at + n;
            *at += n;
            Ok(r)
        };
        let e = span(&mut at)?;
        let x = span(&mut at)?;
        spans.push((e, x));
    }
    if at != content.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(spans)
}

/// Record kinds: the first byte of a stored experience.
const WHOLE: u8 = 0;
const COMPACT: u8 = 1;
const CHAINED: u8 = 2;
/// An experience array (3 items), its header array (9 items), version 1.
const PREFIX: [u8; 3] = [0x83, 0x89, 0x01];
/// The head of a 32-byte string.
const B32: [u8; 2] = [0x58, 0x20];

/// The stored form of an experience's canonical `bytes` by `node` (author number `author`):
/// `COMPACT, author: u32 LE`, then the bytes without the cloud id, the author's key and the ops
/// digest, and the array heads before them (105 bytes the store knows or can recompute: the
/// cloud is the store's, the author is in the authors table, the digest is the hash of the
/// ops). When the experience's prev is `chained` (the id of the record just before it in its
/// group), the prev is left out too (34 bytes more): kind `CHAINED`. What does not have the
/// expected shape (the genesis, whose cloud field is zero) is kept whole: `WHOLE`, then the
/// bytes.
#[cfg(test)]
pub(crate) fn compact(
    bytes: &[u8],
    cloud: &Id,
    author: u32,
    node: &NodeId,
    chained: Option<&Id>,
) -> Vec<u8> {
    let shape = Shape::of(bytes, cloud, node);
    let mut out = Vec::with_capacity(shape.len(bytes, false) + 1);
    shape.write(&mut out, bytes, author, chained);
    out
}

/// Where the parts [`compact`] leaves out lie in an experience's canonical bytes, or `None`
/// for a record kept whole.
#[derive(Clone, Copy)]
pub(crate) struct Shape(Option<(usize, usize, usize)>);

impl Shape {
    /// The shape of `bytes` by `node` in `cloud`: (end of seq, end of prev, end of deps).
    pub(crate) fn of(bytes: &[u8], cloud: &Id, node: &NodeId) -> Shape {
        let spans = || -> Option<(usize, usize, usize)> {
            let fixed = bytes.get(..3)? == PREFIX
                && bytes.get(3..5)? == B32
                && bytes.get(5..37)? == cloud.as_bytes()
                && bytes.get(37..39)? == B32
                && bytes.get(39..71)? == node.as_bytes();
            if !fixed {
                return None;
            }
            let seq_end = item_end(bytes, 71).ok()?;
            let prev_end = item_end(bytes, seq_end).ok()?;
            let deps_end = item_end(bytes, prev_end).ok()?;
            if bytes.get(deps_end..deps_end + 2)? != B32 || bytes.len() < deps_end + 34 {
                return None;
            }
            Some((seq_end, prev_end, deps_end))
        };
        Shape(spans())
    }

    /// Whether the record leaves out its prev, being `chained` to the record before.
    fn chains(&self, bytes: &[u8], chained: Option<&Id>) -> bool {
        match (self.0, chained) {
            (Some((seq_end, prev_end, _)), Some(c)) => {
                let prev = &bytes[seq_end..prev_end];
                prev.len() == 34 && prev[2..] == c.0
            }
            _ => false,
        }
    }

    /// The record's length, chained or not.
    pub(crate) fn len(&self, bytes: &[u8], chain: bool) -> usize {
        match self.0 {
            // Kind and author (5 bytes) instead of the 105 the store knows.
            Some(_) => bytes.len() - 100 - if chain { 34 } else { 0 },
            None => bytes.len() + 1,
        }
    }

    /// Appends the record to `out`; returns whether it is chained.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        bytes: &[u8],
        author: u32,
        chained: Option<&Id>,
    ) -> bool {
        let Some((seq_end, prev_end, deps_end)) = self.0 else {
            out.push(WHOLE);
            out.extend_from_slice(bytes);
            return false;
        };
        let chain = self.chains(bytes, chained);
        out.push(if chain { CHAINED } else { COMPACT });
        out.extend_from_slice(&author.to_le_bytes());
        if chain {
            out.extend_from_slice(&bytes[71..seq_end]);
            out.extend_from_slice(&bytes[prev_end..deps_end]);
        } else {
            out.extend_from_slice(&bytes[71..deps_end]);
        }
        out.extend_from_slice(&bytes[deps_end + 34..]);
        chain
    }
}

/// The canonical bytes of a stored record, and the experience's id (the hash of its header).
/// `prev` is the id of the record just before it in its group (what a `CHAINED` record left
/// out). Fails (naming why) on a record that is not one [`compact`] makes; the caller names
/// the record. What it returns is still to be checked as any stored experience is.
pub(crate) fn expand<'r>(
    record: &'r [u8],
    names: &Names,
    prev: Option<&Id>,
) -> Result<(Cow<'r, [u8]>, Id), String> {
    let bad = |e: lcloud_core::codec::DecodeError| format!("malformed record: {e}");
    let (kind, rest) = record.split_first().ok_or("empty record")?;
    if *kind == WHOLE {
        // The header is the first item after the array's one-byte head.
        let header_end = item_end(rest, 1).map_err(bad)?;
        return Ok((Cow::Borrowed(rest), Id::hash(&rest[1..header_end])));
    }
    if *kind != COMPACT && *kind != CHAINED {
        return Err(format!("unknown record kind {kind}"));
    }
    let (author, body) = rest.split_first_chunk::<4>().ok_or("truncated record")?;
    let author = u32::from_le_bytes(*author);
    let node = names
        .authors
        .get(author as usize)
        .ok_or_else(|| format!("the record names unknown author #{author}"))?;
    let seq_end = item_end(body, 0).map_err(bad)?;
    let prev_end = if *kind == CHAINED {
        seq_end
    } else {
        item_end(body, seq_end).map_err(bad)?
    };
    let deps_end = item_end(body, prev_end).map_err(bad)?;
    let mut header_rest = deps_end;
    for _ in 0..2 {
        // root, fuel
        header_rest = item_end(body, header_rest).map_err(bad)?;
    }
    let ops_start = item_end(body, header_rest).map_err(bad)?; // after the signature
    let digest = Id::hash(&body[ops_start..]);
    let mut out = Vec::with_capacity(body.len() + 137);
    out.extend_from_slice(&PREFIX);
    out.extend_from_slice(&B32);
    out.extend_from_slice(names.cloud.as_bytes());
    out.extend_from_slice(&B32);
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&body[..seq_end]);
    if *kind == CHAINED {
        let prev = prev.ok_or("a chained record first in its group")?;
        out.extend_from_slice(&B32);
        out.extend_from_slice(prev.as_bytes());
    }
    out.extend_from_slice(&body[seq_end..deps_end]);
    out.extend_from_slice(&B32);
    out.extend_from_slice(digest.as_bytes());
    let header_end = out.len() + header_rest - deps_end;
    out.extend_from_slice(&body[deps_end..]);
    let id = Id::hash(&out[1..header_end]);
    Ok((Cow::Owned(out), id))
}

/// What expanding a record needs: the cloud id and the authors by number.
pub(crate) struct Names {
    pub cloud: Id,
    pub authors: Vec<NodeId>,
}

impl Names {
    /// Reads the authors table through a read transaction.
    pub fn in_txn(txn: &redb::ReadTransaction, cloud: Id) -> Result<Names, StoreError> {
        Names::read(&txn.open_table(AUTHORS).map_err(db)?, cloud)
    }

    /// Reads the authors table (numbered densely from 0).
    pub fn read(
        authors: &impl ReadableTable<u32, &'static [u8; 32]>,
        cloud: Id,
    ) -> Result<Names, StoreError> {
        let mut all = Vec::new();
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            if k.value() as usize != all.len() {
                return Err(corrupt(format!("author #{} is missing", all.len())));
            }
            all.push(NodeId(*v.value()));
        }
        Ok(Names {
            cloud,
            authors: all,
        })
    }
}

/// Number of experiences stored: the last group's first arrival plus its count.
pub(crate) fn count(groups: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
    let Some((k, v)) = groups.last().map_err(db)? else {
        return Ok(0);
    };
    let first = k.value();
    let content = unseal(v.value(), &|| group_name(first))?;
    Ok(first + parse(content, first)?.len() as u64)
}

/// Visits every record from arrival `from` on, in arrival order: `(arrival, entry, canonical
/// experience bytes, id)`.
/// Checks each group's checksum and that no arrival is missing.
pub(crate) fn for_each(
    groups: &impl ReadableTable<u64, &'static [u8]>,
    names: &Names,
    from: u64,
    mut visit: impl FnMut(u64, &[u8], &[u8], Id) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let start = match groups.range(..=from).map_err(db)?.next_back() {
        Some(row) => row.map_err(db)?.0.value(),
        None => 0,
    };
    let mut expected = start;
    for row in groups.range(start..).map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let first = k.value();
        if first != expected {
            return Err(corrupt(format!("experience #{expected} is missing")));
        }
        let content = unseal(v.value(), &|| group_name(first))?;
        let spans = parse(content, first)?;
        let mut prev = None;
        for (i, (e, x)) in spans.iter().enumerate() {
            let n = first + i as u64;
            let (bytes, id) = expand(&content[x.clone()], names, prev.as_ref())
                .map_err(|why| corrupt(format!("experience #{n}: {why}")))?;
            if n >= from {
                visit(n, &content[e.clone()], &bytes, id)?;
            }
            prev = Some(id);
        }
        expected = first + spans.len() as u64;
    }
    if expected < from {
        return Err(corrupt(format!("experience #{from} is missing")));
    }
    Ok(())
}

/// The ids of a group's experiences, in order (each record may need the one before).
fn group_ids(
    content: &[u8],
    spans: &Spans,
    first: u64,
    names: &Names,
) -> Result<Vec<Id>, StoreError> {
    let mut ids: Vec<Id> = Vec::with_capacity(spans.len());
    for (i, (_, x)) in spans.iter().enumerate() {
        let (_, id) = expand(&content[x.clone()], names, ids.last())
            .map_err(|why| corrupt(format!("experience #{}: {why}", first + i as u64)))?;
        ids.push(id);
    }
    Ok(ids)
}

/// A group's records as canonical bytes, each with its id.
type Expanded = Vec<(Vec<u8>, Id)>;

/// Random access to records, keeping the last group read decoded.
pub(crate) struct Records<'a, T> {
    table: &'a T,
    names: Names,
    /// The last group read: its first arrival, content, records and their canonical bytes
    /// and ids (expanding a record needs the id of the one before, so a load expands them all).
    group: Option<(u64, Vec<u8>, Spans, Expanded)>,
}

impl<'a, T: ReadableTable<u64, &'static [u8]>> Records<'a, T> {
    pub fn new(table: &'a T, names: Names) -> Records<'a, T> {
        Records {
            table,
            names,
            group: None,
        }
    }

    /// The canonical bytes of the `arrival`-th experience.
    pub fn bytes(&mut self, arrival: u64) -> Result<Cow<'_, [u8]>, StoreError> {
        self.load(arrival)?;
        let (first, _, _, expanded) = self.group.as_ref().expect("just loaded");
        Ok(Cow::Borrowed(&expanded[(arrival - first) as usize].0))
    }

    /// Reads and checks the group holding the `arrival`-th experience, unless it is the one
    /// read last.
    fn load(&mut self, arrival: u64) -> Result<(), StoreError> {
        let cached = self.group.as_ref().is_some_and(|(first, _, spans, _)| {
            (*first..*first + spans.len() as u64).contains(&arrival)
        });
        if !cached {
            self.group = None;
            let missing = || corrupt(format!("experience #{arrival} is missing"));
            let row = self
                .table
                .range(..=arrival)
                .map_err(db)?
                .next_back()
                .ok_or_else(missing)?
                .map_err(db)?;
            let first = row.0.value();
            let content = unseal(row.1.value(), &|| group_name(first))?.to_vec();
            let spans = parse(&content, first)?;
            if arrival - first >= spans.len() as u64 {
                return Err(missing());
            }
            let mut expanded: Expanded = Vec::with_capacity(spans.len());
            for (i, (_, x)) in spans.iter().enumerate() {
                let prev = expanded.last().map(|(_, id)| id);
                let (bytes, id) = expand(&content[x.clone()], &self.names, prev)
                    .map_err(|why| corrupt(format!("experience #{}: {why}", first + i as u64)))?;
                expanded.push((bytes.into_owned(), id));
            }
            self.group = Some((first, content, spans, expanded));
        }
        Ok(())
    }

    /// The index entry of the `arrival`-th experience.
    pub fn entry(&mut self, arrival: u64) -> Result<Entry, StoreError> {
        self.load(arrival)?;
        let (first, content, spans, expanded) = self.group.as_ref().expect("just loaded");
        let k = (arrival - first) as usize;
        Entry::from_bytes(&content[spans[k].0.clone()], expanded[k].1)
    }
}

/// Appends records (and their index entries) within one write transaction. Call
/// [`Recorder::finish`] before anything in the transaction reads them.
pub(crate) struct Recorder<'t> {
    cloud: Id,
    authors: Table<'t, u32, &'static [u8; 32]>,
    by_node: BTreeMap<NodeId, u32>,
    groups: Table<'t, u64, &'static [u8]>,
    runs: Table<'t, (u32, u64, u64), u64>,
    /// Each author's last run as this transaction leaves it: (first seq, first arrival,
    /// count, changed).
    open_runs: BTreeMap<u32, (u64, u64, u64, bool)>,
    /// The group being filled: its first arrival, record count and sealed form so far (room
    /// for the tag, then the content).
    open: Option<(u64, u32, Vec<u8>)>,
    /// The id of the last record in the group being filled.
    last_id: Option<Id>,
    written: Vec<Written>,
    /// The most bytes of content a group takes ([`GROUP_BYTES`] or [`BULK_GROUP_BYTES`]).
    group_bytes: usize,
    /// Buffers reused for each record's clock and index entry.
    clock_scratch: Vec<(u32, u64)>,
    entry_scratch: Vec<u8>,
}

/// (id, author index, seq) of a stored experience.
pub(crate) type Written = (Id, u32, u64);

impl<'t> Recorder<'t> {
    pub fn open(txn: &'t WriteTransaction, cloud: Id) -> Result<Recorder<'t>, StoreError> {
        let authors = txn.open_table(AUTHORS).map_err(db)?;
        let mut by_node = BTreeMap::new();
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            by_node.insert(NodeId(*v.value()), k.value());
        }
        Ok(Recorder {
            cloud,
            authors,
            by_node,
            groups: txn.open_table(GROUPS).map_err(db)?,
            runs: txn.open_table(RUNS).map_err(db)?,
            open_runs: BTreeMap::new(),
            open: None,
            last_id: None,
            written: Vec::new(),
            group_bytes: GROUP_BYTES,
            clock_scratch: Vec::new(),
            entry_scratch: Vec::new(),
        })
    }

    /// Fills groups of [`BULK_GROUP_BYTES`] from here on: for a commit that stores at least
    /// [`BULK_RECORDS`] experiences.
    pub fn bulk(mut self) -> Recorder<'t> {
        self.group_bytes = BULK_GROUP_BYTES;
        self
    }

    fn author(&mut self, node: &NodeId) -> Result<u32, StoreError> {
        if let Some(a) = self.by_node.get(node) {
            return Ok(*a);
        }
        let a = self.by_node.len() as u32;
        self.authors.insert(a, node.as_bytes()).map_err(db)?;
        self.by_node.insert(*node, a);
        Ok(a)
    }

    /// Stores the experience `bytes` (canonical) as the `arrival`-th, with its index entry.
    /// Arrivals must come in order, none skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn add<'c>(
        &mut self,
        arrival: u64,
        id: Id,
        author: &NodeId,
        seq: u64,
        depth: u64,
        clock: impl IntoIterator<Item = (&'c NodeId, u64)>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let a = self.author(author)?;
        let mut dense = std::mem::take(&mut self.clock_scratch);
        dense.clear();
        for (node, s) in clock {
            dense.push((self.author(node)?, s));
        }
        dense.sort_unstable();
        let mut entry = std::mem::take(&mut self.entry_scratch);
        entry.clear();
        Entry::encode_into(&mut entry, a, seq, depth, &dense);
        self.clock_scratch = dense;
        self.written.push((id, a, seq));
        self.extend_run(a, seq, arrival)?;
        if self.open.is_none() {
            (self.open, self.last_id) = match self.last_with_room(arrival)? {
                Some((open, last)) => (Some(open), Some(last)),
                None => (None, None),
            };
        }
        let shape = Shape::of(bytes, &self.cloud, author);
        if let Some((first, n, content)) = &self.open {
            // Whether it fits is judged by its unchained size (a chained record leaves out
            // its 34-byte prev), so a group's layout does not depend on who came before.
            let grown = content.len() - TAG_BYTES + 8 + entry.len() + shape.len(bytes, false);
            let full = *n as usize >= GROUP_MAX || grown > self.group_bytes;
            assert_eq!(
                arrival,
                first + u64::from(*n),
                "records are added in arrival order"
            );
            if full {
                self.close()?;
            }
        }
        let chained = self.last_id;
        self.last_id = Some(id);
        let group_bytes = self.group_bytes;
        let (_, n, content) = self.open.get_or_insert_with(|| {
            // The tag's room first (filled in when the group is closed), then the count.
            let mut content = Vec::with_capacity(TAG_BYTES + group_bytes + 64);
            content.extend_from_slice(&[0; TAG_BYTES + 4]);
            (arrival, 0, content)
        });
        *n += 1;
        content.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        content.extend_from_slice(&entry);
        let at = content.len();
        content.extend_from_slice(&[0; 4]);
        shape.write(content, bytes, a, chained.as_ref());
        let len = (content.len() - at - 4) as u32;
        content[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.entry_scratch = entry;
        Ok(())
    }

    /// Adds (seq, arrival) to `author`'s last run if it continues it, or starts a new run.
    fn extend_run(&mut self, author: u32, seq: u64, arrival: u64) -> Result<(), StoreError> {
        if !self.open_runs.contains_key(&author) {
            let last = self
                .runs
                .range((author, 0, 0)..=(author, u64::MAX, u64::MAX))
                .map_err(db)?
                .next_back()
                .transpose()
                .map_err(db)?
                .map(|(k, v)| (k.value(), v.value()));
            if let Some(((_, s0, a0), n)) = last {
                self.open_runs.insert(author, (s0, a0, n, false));
            }
        }
        match self.open_runs.get_mut(&author) {
            Some((s0, a0, n, changed)) if seq == *s0 + *n && arrival == *a0 + *n => {
                *n += 1;
                *changed = true;
            }
            _ => {
                if let Some((s0, a0, n, true)) = self.open_runs.get(&author).copied() {
                    self.runs.insert((author, s0, a0), n).map_err(db)?;
                }
                self.open_runs.insert(author, (seq, arrival, 1, true));
            }
        }
        Ok(())
    }

    /// The last stored group, to fill further, if it ends just before `arrival` and has room:
    /// so commits of a few experiences each (one writer, a node's steady stream) still fill
    /// their pages.
    /// Returns it with the id of its last experience.
    #[allow(clippy::type_complexity)]
    fn last_with_room(
        &self,
        arrival: u64,
    ) -> Result<Option<((u64, u32, Vec<u8>), Id)>, StoreError> {
        let Some((k, v)) = self.groups.last().map_err(db)? else {
            return Ok(None);
        };
        let first = k.value();
        if v.value().len() >= 16 + GROUP_BYTES / 2 {
            return Ok(None);
        }
        let content = unseal(v.value(), &|| group_name(first))?;
        let spans = parse(content, first)?;
        let n = spans.len();
        if first + n as u64 != arrival || n >= GROUP_MAX {
            return Ok(None);
        }
        let names = Names::read(&self.authors, self.cloud)?;
        let last = *group_ids(content, &spans, first, &names)?
            .last()
            .expect("a group holds at least one record");
        let mut open = Vec::with_capacity(TAG_BYTES + GROUP_BYTES + 64);
        open.extend_from_slice(&[0; TAG_BYTES]);
        open.extend_from_slice(content);
        Ok(Some(((first, n as u32, open), last)))
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.last_id = None;
        if let Some((first, n, mut group)) = self.open.take() {
            group[TAG_BYTES..TAG_BYTES + 4].copy_from_slice(&n.to_le_bytes());
            // Sealed in place: the tag goes in the room left for it (a 32 KiB group is not
            // copied once more to put 16 bytes in front of it).
            let tag = crate::state::tag(&group[TAG_BYTES..]);
            group[..TAG_BYTES].copy_from_slice(&tag);
            self.groups.insert(first, group.as_slice()).map_err(db)?;
        }
        Ok(())
    }

    /// Writes the group being filled. Returns what was added: (id, author index, seq) of each.
    pub fn finish(mut self) -> Result<Vec<Written>, StoreError> {
        self.close()?;
        for (author, (s0, a0, n, changed)) in std::mem::take(&mut self.open_runs) {
            if changed {
                self.runs.insert((author, s0, a0), n).map_err(db)?;
            }
        }
        Ok(self.written)
    }

    /// The clock of `author`'s stored experience at `seq` (one of them, if it forked).
    pub fn clock_at(&self, author: &NodeId, seq: u64) -> Result<Option<VectorClock>, StoreError> {
        assert!(
            self.open.is_none(),
            "clocks are read before records are added"
        );
        let Some(a) = self.by_node.get(author) else {
            return Ok(None);
        };
        let mut found = None;
        chain(&self.runs, *a, seq, seq, |_, arrival| {
            found = Some(arrival);
            Ok(false)
        })?;
        let Some(arrival) = found else {
            return Ok(None);
        };
        let names = Names::read(&self.authors, self.cloud)?;
        let mut records = Records::new(&self.groups, names);
        let entry = records.entry(arrival)?;
        let mut clock = VectorClock::default();
        for (a, s) in entry.clock {
            let node = records
                .names
                .authors
                .get(a as usize)
                .ok_or_else(|| corrupt(format!("the index names unknown author #{a}")))?;
            clock.observe(*node, s);
        }
        Ok(Some(clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut c = (records.len() as u32).to_le_bytes().to_vec();
        for (e, x) in records {
            for part in [e, x] {
                c.extend_from_slice(&(part.len() as u32).to_le_bytes());
                c.extend_from_slice(part);
            }
        }
        c
    }

    #[test]
    fn a_group_parses_back_into_its_records() {
        let c = content(&[(b"e1", b"exp one"), (b"", b"x")]);
        let spans = parse(&c, 7).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(&c[spans[0].0.clone()], b"e1");
        assert_eq!(&c[spans[0].1.clone()], b"exp one");
        assert_eq!(&c[spans[1].0.clone()], b"");
        assert_eq!(&c[spans[1].1.clone()], b"x");
    }

    #[test]
    fn a_malformed_group_is_refused_by_name() {
        let good = content(&[(b"e1", b"exp one")]);
        for bad in [
            Vec::new(),
            0u32.to_le_bytes().to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), b"!"].concat(),
            content(&vec![(b"" as &[u8], b"" as &[u8]); GROUP_MAX + 1]),
        ] {
            let err = parse(&bad, 3).unwrap_err().to_string();
            assert!(
                err.contains("experience #3 and the rest of its group"),
                "{err}"
            );
        }
        // A length far past the end is refused before anything is allocated for it.
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge, 0).is_err());
    }

    fn cloud_and_experience() -> (lcloud_core::Verified<lcloud_core::Experience>, Vec<u8>) {
        let (genesis, _, second) = cloud_and_chain();
        (genesis, second)
    }

    /// A genesis, then the bytes of its author's seq 2 and seq 3 (whose prev is seq 2).
    fn cloud_and_chain() -> (
        lcloud_core::Verified<lcloud_core::Experience>,
        Vec<u8>,
        Vec<u8>,
    ) {
        use lcloud_core::{Experience, Genesis, Op, Path, Replica, Value};
        let key = ed25519_consensus::SigningKey::from([5; 32]);
        let genesis = Experience::create_genesis(&key, Genesis::open("t"));
        let mut replica = Replica::new(genesis.clone()).unwrap();
        let op = Op::Set {
            path: Path(vec!["a".into()]),
            value: Value::Str("x".repeat(200)),
        };
        let first = replica.write(&key, vec![op.clone()]).unwrap();
        let second = replica.write(&key, vec![op]).unwrap();
        (genesis, first.to_bytes(), second.to_bytes())
    }

    #[test]
    fn a_record_after_its_prev_in_a_group_leaves_the_prev_out() {
        let (genesis, first, second) = cloud_and_chain();
        let author = genesis.author();
        let names = Names {
            cloud: genesis.id(),
            authors: vec![author],
        };
        let first_id = lcloud_core::revalidate_stored(&first, &genesis.id())
            .unwrap()
            .id();
        let second_id = lcloud_core::revalidate_stored(&second, &genesis.id())
            .unwrap()
            .id();
        let alone = compact(&second, &genesis.id(), 0, &author, None);
        let chained = compact(&second, &genesis.id(), 0, &author, Some(&first_id));
        assert_eq!((alone[0], chained[0]), (COMPACT, CHAINED));
        assert_eq!(chained.len() + 34, alone.len());
        let (back, id) = expand(&chained, &names, Some(&first_id)).unwrap();
        assert_eq!((&*back, id), (second.as_slice(), second_id));
        // Only the record's actual prev chains it.
        assert_eq!(
            compact(&second, &genesis.id(), 0, &author, Some(&second_id))[0],
            COMPACT
        );
        // Without the record before it, or with another, it does not come back as it was.
        assert!(expand(&chained, &names, None).is_err());
        let (other, other_id) = expand(&chained, &names, Some(&Id([1; 32]))).unwrap();
        assert_ne!((&*other, other_id), (second.as_slice(), second_id));
    }

    #[test]
    fn a_record_is_compacted_and_expands_to_the_same_bytes_and_id() {
        let (genesis, bytes) = cloud_and_experience();
        let author = genesis.author();
        let names = Names {
            cloud: genesis.id(),
            authors: vec![NodeId([9; 32]), author],
        };
        let exp = lcloud_core::revalidate_stored(&bytes, &genesis.id()).unwrap();
        let record = compact(&bytes, &genesis.id(), 1, &author, None);
        assert_eq!(record[0], COMPACT);
        assert_eq!(
            record.len() + 100,
            bytes.len(),
            "105 bytes left out, 5 added"
        );
        let (back, id) = expand(&record, &names, None).unwrap();
        assert_eq!(&*back, bytes.as_slice());
        assert_eq!(id, exp.id());
        // The genesis (its cloud field is zero) is kept whole.
        let g = genesis.to_bytes();
        let record = compact(&g, &genesis.id(), 1, &author, None);
        assert_eq!(record[0], WHOLE);
        let (back, id) = expand(&record, &names, None).unwrap();
        assert_eq!((&*back, id), (g.as_slice(), genesis.id()));
        // Another author's bytes, or another cloud's, are kept whole too.
        assert_eq!(
            compact(&bytes, &genesis.id(), 0, &NodeId([9; 32]), None)[0],
            WHOLE
        );
        assert_eq!(compact(&bytes, &Id([1; 32]), 1, &author, None)[0], WHOLE);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let (genesis, bytes) = cloud_and_experience();
        let author = genesis.author();
        let record = compact(&bytes, &genesis.id(), 1, &author, None);
        let names = Names {
            cloud: genesis.id(),
            authors: vec![NodeId([9; 32]), author],
        };
        let unknown = Names {
            cloud: genesis.id(),
            authors: vec![author],
        };
        assert!(
            expand(&record, &unknown, None)
                .unwrap_err()
                .contains("unknown author #1")
        );
        for cut in 0..record.len() {
            // A shorter record either fails or expands to bytes that are not the experience.
            if let Ok((back, _)) = expand(&record[..cut], &names, None) {
                assert_ne!(&*back, bytes.as_slice());
            }
        }
        assert!(
            expand(&[7, 1, 2], &names, None)
                .unwrap_err()
                .contains("unknown record kind 7")
        );
    }

    /// Stored records (bolero): expanding any bytes never panics.
    #[test]
    fn fuzz_record_expansion() {
        let names = Names {
            cloud: Id([1; 32]),
            authors: vec![NodeId([2; 32])],
        };
        bolero::check!().for_each(|input: &[u8]| {
            let _ = expand(input, &names, None);
            let _ = expand(input, &names, Some(&Id([3; 32])));
        });
    }

    #[test]
    fn runs_give_each_seq_its_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut runs = txn.open_table(RUNS).unwrap();
            // Author 0: seqs 1–3 at arrivals 0–2, seqs 4–5 at 10–11; author 1: seq 1 at 3.
            runs.insert((0, 1, 0), 3).unwrap();
            runs.insert((0, 4, 10), 2).unwrap();
            runs.insert((1, 1, 3), 1).unwrap();
            let all = |a, from, to| {
                let mut seen = Vec::new();
                chain(&runs, a, from, to, |s, arrival| {
                    seen.push((s, arrival));
                    Ok(true)
                })
                .unwrap();
                seen
            };
            assert_eq!(all(0, 1, 5), [(1, 0), (2, 1), (3, 2), (4, 10), (5, 11)]);
            assert_eq!(all(0, 2, 4), [(2, 1), (3, 2), (4, 10)]);
            assert_eq!(all(0, 5, 9), [(5, 11)]);
            assert_eq!(all(0, 6, 9), []);
            assert_eq!(all(0, 3, 2), []);
            assert_eq!(all(1, 1, 1), [(1, 3)]);
            assert_eq!(all(2, 1, 9), []);
            let mut first = Vec::new();
            chain(&runs, 0, 1, 5, |s, _| {
                first.push(s);
                Ok(s < 2)
            })
            .unwrap();
            assert_eq!(first, [1, 2], "stops when told");
        }
        txn.commit().unwrap();
    }

    /// Group contents (bolero): no input panics, and whatever parses has spans inside it.
    #[test]
    fn fuzz_group_content() {
        bolero::check!().for_each(|input: &[u8]| {
            if let Ok(spans) = parse(input, 0) {
                for (e, x) in spans {
                    assert!(e.end <= input.len() && x.end <= input.len());
                }
            }
        });
    }
}
