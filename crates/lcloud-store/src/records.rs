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

use lcloud_core::{Id, NodeId, VectorClock};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::entry::Entry;
use crate::error::{StoreError, corrupt};
use crate::record::{Before, ENTRY, Names, Shape, WHOLE, expand, record_end};
use crate::schema::{AUTHORS, GROUPS, RUNS};
use crate::state::unseal_at;

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
/// the group's first: with its key, tag and slot a full group just fits eight 4 KiB pages
/// (redb gives a value larger than a page its own run of pages, rounded up to a power of
/// two). Large groups waste little: a group ends where the next record does not fit (about
/// half a record per group), and its first record carries what later ones leave out (its
/// author, seq, prev and index entry, about 60 bytes); with 1-op experiences of a 200-byte
/// value, 4 KiB groups held 14 each and took 297 bytes of pages per experience, 32 KiB ones
/// hold 117 and take 279. Each group is also one B-tree insert and one checksum (inserting
/// 4 KiB groups was two fifths of storing a pushed experience, measured with callgrind on the
/// node's ingest benchmark). A read of one record checks at most 32 KiB; a commit rewrites
/// the group it appends to (`Recorder::keeping` spares it reading that group back).
const GROUP_BYTES: usize = 32768 - 32;

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

/// The count's top bit marks a packed group (store format 4). A packed group stores no record
/// lengths (records are self-delimiting: [`record_end`]), and a record's index entry only
/// when its kind has [`ENTRY`] set, after the record (`entry_len: varint, entry`); left out,
/// the entry follows from the one before ([`derive`]). Groups written before (format 3) have
/// `entry_len: u32 LE, entry, record_len: u32 LE, record` for every record; both are read.
const PACKED: u32 = 1 << 31;

/// Byte ranges of each record of a group's content: its index entry (`None`: it follows
/// from the one before) and its experience.
type Spans = Vec<(Option<Range<usize>>, Range<usize>)>;

/// Appends `n` as a LEB128 varint (7 bits a byte, low first).
fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The bytes [`write_varint`] takes for `n`.
fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// Parses a group's content, checking every length against what is left before using it.
fn parse(content: &[u8], first: u64) -> Result<Spans, StoreError> {
    let bad = |why: &str| corrupt(format!("{}: {why}", group_name(first)));
    let head = content.get(..4).ok_or_else(|| bad("truncated length"))?;
    let raw = u32::from_le_bytes(head.try_into().expect("4 bytes"));
    let packed = raw & PACKED != 0;
    let count = (raw & !PACKED) as usize;
    if count == 0 || count > GROUP_MAX {
        return Err(bad(&format!("holds {count} records (1 to {GROUP_MAX})")));
    }
    let mut at = 4usize;
    // A length, checked to lie within what is left.
    let length = |at: &mut usize| -> Result<usize, StoreError> {
        let n = if packed {
            let mut n = 0usize;
            let mut shift = 0;
            loop {
                let b = *content.get(*at).ok_or_else(|| bad("truncated length"))?;
                *at += 1;
                if shift == 28 && b > 0x0f {
                    return Err(bad("a length is too large"));
                }
                n |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    if b == 0 && shift > 0 {
                        return Err(bad("a length is not in its shortest form"));
                    }
                    break n;
                }
                shift += 7;
            }
        } else {
            let end = *at + 4;
            let b = content
                .get(*at..end)
                .ok_or_else(|| bad("truncated length"))?;
            *at = end;
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        };
        if n > content.len() - *at {
            return Err(bad("a record runs past the end"));
        }
        Ok(n)
    };
    let mut spans = Vec::with_capacity(count);
    for i in 0..count {
        if packed {
            let start = at;
            let end =
                record_end(content, start).map_err(|why| bad(&format!("record {i}: {why}")))?;
            at = end;
            let e = if content[start] & ENTRY != 0 {
                let n = length(&mut at)?;
                at += n;
                Some(at - n..at)
            } else if i == 0 {
                return Err(bad("its first index entry is left out"));
            } else {
                None
            };
            spans.push((e, start..end));
        } else {
            let n = length(&mut at)?;
            let e = Some(at..at + n);
            at += n;
            let n = length(&mut at)?;
            spans.push((e, at..at + n));
            at += n;
        }
    }
    if at != content.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(spans)
}

/// The entry of a record whose entry is left out, `steps` records after the one written out
/// (`base`): each step is the same author's next experience, one deeper, whose clock has the
/// author's own entry one higher (so a chain stored in order, whose experiences saw nothing
/// new from others, writes out one entry per group). `None` on overflow.
fn derive(base: &Entry, steps: u64, id: Id) -> Option<Entry> {
    let mut clock = base.clock.clone();
    match clock.binary_search_by_key(&base.author, |(a, _)| *a) {
        Ok(i) => clock[i].1 = clock[i].1.checked_add(steps)?,
        Err(i) => clock.insert(i, (base.author, steps)),
    }
    Some(Entry {
        id,
        author: base.author,
        seq: base.seq.checked_add(steps)?,
        depth: base.depth.checked_add(steps)?,
        clock,
    })
}

/// Whether `next` is what [`derive`] makes of `prev` in one step, compared in place (the
/// committer asks this of every record it stores).
fn follows(prev: &Entry, next: &Entry) -> bool {
    let a = prev.author;
    let own = |c: &[(u32, u64)]| c.iter().find(|(x, _)| *x == a).map(|(_, s)| *s);
    let others = next.clock.iter().filter(|(x, _)| *x != a);
    next.author == a
        && Some(next.seq) == prev.seq.checked_add(1)
        && Some(next.depth) == prev.depth.checked_add(1)
        && own(&next.clock) == own(&prev.clock).unwrap_or(0).checked_add(1)
        && others.eq(prev.clock.iter().filter(|(x, _)| *x != a))
}

/// A record's index entry, decoded only when asked for: the last entry written out at or
/// before it, and how many records after that one it is.
pub(crate) struct EntryAt<'c> {
    base: &'c [u8],
    steps: u64,
    id: Id,
}

impl EntryAt<'_> {
    /// The entry (its id is the record's).
    pub(crate) fn decode(&self) -> Result<Entry, StoreError> {
        let base = Entry::from_bytes(self.base, self.id)?;
        if self.steps == 0 {
            return Ok(base);
        }
        derive(&base, self.steps, self.id)
            .ok_or_else(|| corrupt("an index entry left out overflows the one before"))
    }
}

/// Expands a group's records in order, `visit(i, entry, canonical bytes, id)`; returns the
/// last record's [`Before`].
fn walk<'c>(
    content: &'c [u8],
    spans: &Spans,
    first: u64,
    names: &Names,
    mut visit: impl FnMut(usize, EntryAt<'c>, Cow<'c, [u8]>, Id) -> Result<(), StoreError>,
) -> Result<Before, StoreError> {
    let mut before: Option<Before> = None;
    let mut base: &[u8] = &[];
    let mut steps = 0u64;
    for (i, (e, x)) in spans.iter().enumerate() {
        let (bytes, this) = expand(&content[x.clone()], names, before.as_ref())
            .map_err(|why| corrupt(format!("experience #{}: {why}", first + i as u64)))?;
        match e {
            Some(e) => {
                base = &content[e.clone()];
                steps = 0;
            }
            None => steps += 1,
        }
        visit(
            i,
            EntryAt {
                base,
                steps,
                id: this.id,
            },
            bytes,
            this.id,
        )?;
        before = Some(this);
    }
    before.ok_or_else(|| corrupt(format!("{}: holds no records", group_name(first))))
}

impl Names {
    /// Reads the authors table through a read transaction.
    pub fn in_txn(txn: &redb::ReadTransaction, cloud: Id) -> Result<Names, StoreError> {
        Names::read(&txn.open_table(AUTHORS).map_err(db)?, cloud)
    }

    /// Reads the authors table (numbered densely from 0), checking it against its digest.
    pub fn read(
        authors: &impl ReadableTable<u32, &'static [u8; 32]>,
        cloud: Id,
    ) -> Result<Names, StoreError> {
        let mut all = Vec::new();
        let mut digest = None;
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            if k.value() == AUTHORS_DIGEST {
                digest = Some(*v.value());
            } else if k.value() as usize != all.len() {
                return Err(corrupt(format!("author #{} is missing", all.len())));
            } else {
                all.push(NodeId(*v.value()));
            }
        }
        if digest != Some(authors_digest(&all)) {
            return Err(corrupt("the authors table: checksum mismatch"));
        }
        Ok(Names {
            cloud,
            authors: all,
        })
    }
}

/// The authors table's row that holds [`authors_digest`] of the others (from store format 4
/// on: a damaged author id would otherwise rebuild that author's experiences, and read their
/// clocks, as another node's).
pub(crate) const AUTHORS_DIGEST: u32 = u32::MAX;

/// The digest of the authors, in their order.
pub(crate) fn authors_digest(authors: &[NodeId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud authors\0");
    for a in authors {
        h.update(a.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Writes the digest row of the authors table as it stands (store format 3 → 4).
pub(crate) fn seal_authors(
    authors: &mut Table<'_, u32, &'static [u8; 32]>,
) -> Result<(), StoreError> {
    let mut all = Vec::new();
    for row in authors.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        if k.value() != AUTHORS_DIGEST {
            all.push(NodeId(*v.value()));
        }
    }
    authors
        .insert(AUTHORS_DIGEST, &authors_digest(&all))
        .map_err(db)?;
    Ok(())
}

/// Number of experiences stored: the last group's first arrival plus its count.
pub(crate) fn count(groups: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
    let Some((k, v)) = groups.last().map_err(db)? else {
        return Ok(0);
    };
    let first = k.value();
    let content = unseal_at("groups", first, v.value(), &|| group_name(first))?;
    Ok(first + parse(content, first)?.len() as u64)
}

/// Visits every record from arrival `from` on, in arrival order: `(arrival, entry, canonical
/// experience bytes, id)`.
/// Checks each group's checksum and that no arrival is missing.
pub(crate) fn for_each(
    groups: &impl ReadableTable<u64, &'static [u8]>,
    names: &Names,
    from: u64,
    mut visit: impl FnMut(u64, &EntryAt<'_>, &[u8], Id) -> Result<(), StoreError>,
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
        let content = unseal_at("groups", first, v.value(), &|| group_name(first))?;
        let spans = parse(content, first)?;
        walk(content, &spans, first, names, |i, entry, bytes, id| {
            let n = first + i as u64;
            if n >= from {
                visit(n, &entry, &bytes, id)?;
            }
            Ok(())
        })?;
        expected = first + spans.len() as u64;
    }
    if expected < from {
        return Err(corrupt(format!("experience #{from} is missing")));
    }
    Ok(())
}

/// A group's records as canonical bytes, each with its id.
type Expanded = Vec<(Vec<u8>, Id)>;

/// Random access to records, keeping the last group read decoded.
pub(crate) struct Records<'a, T> {
    table: &'a T,
    names: Names,
    /// The last group read: its first arrival, content, records and their canonical bytes
    /// and ids (expanding a record needs the one before, so a load expands them all).
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
            let content =
                unseal_at("groups", first, row.1.value(), &|| group_name(first))?.to_vec();
            let spans = parse(&content, first)?;
            if arrival - first >= spans.len() as u64 {
                return Err(missing());
            }
            let mut expanded: Expanded = Vec::with_capacity(spans.len());
            walk(&content, &spans, first, &self.names, |_, _, bytes, id| {
                expanded.push((bytes.into_owned(), id));
                Ok(())
            })?;
            self.group = Some((first, content, spans, expanded));
        }
        Ok(())
    }

    /// The index entry of the `arrival`-th experience.
    pub fn entry(&mut self, arrival: u64) -> Result<Entry, StoreError> {
        self.load(arrival)?;
        let (first, content, spans, expanded) = self.group.as_ref().expect("just loaded");
        let k = (arrival - first) as usize;
        // The last entry written out at or before it (`parse` saw that the first is).
        let (j, base) = (0..=k)
            .rev()
            .find_map(|j| spans[j].0.clone().map(|e| (j, e)))
            .ok_or_else(|| corrupt(format!("experience #{arrival}: no index entry")))?;
        EntryAt {
            base: &content[base],
            steps: (k - j) as u64,
            id: expanded[k].1,
        }
        .decode()
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
    /// The last record in the group being filled: what the next may leave out, and its entry.
    last: Option<(Before, Entry)>,
    /// The group the previous commit left open, as it kept it.
    kept: Option<KeptGroup>,
    written: Vec<Written>,
    /// Buffers reused for each record's clock and index entry.
    clock_scratch: Vec<(u32, u64)>,
    entry_scratch: Vec<u8>,
}

/// (id, author index, seq) of a stored experience.
pub(crate) type Written = (Id, u32, u64);

/// The last group a commit wrote, kept in memory while it has room, so the next commit
/// appends to it without reading it back and expanding its records (16 KiB groups made that
/// a quarter of a small commit's work).
pub(crate) struct KeptGroup {
    first: u64,
    count: u32,
    /// As stored: tag, then content.
    sealed: Vec<u8>,
    last: (Before, Entry),
}

/// Whether a group of `sealed` bytes has room for a small record more.
fn has_room(sealed: usize) -> bool {
    sealed + 128 <= TAG_BYTES + GROUP_BYTES
}

impl<'t> Recorder<'t> {
    pub fn open(txn: &'t WriteTransaction, cloud: Id) -> Result<Recorder<'t>, StoreError> {
        let authors = txn.open_table(AUTHORS).map_err(db)?;
        let mut by_node = BTreeMap::new();
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            if k.value() != AUTHORS_DIGEST {
                by_node.insert(NodeId(*v.value()), k.value());
            }
        }
        Ok(Recorder {
            cloud,
            authors,
            by_node,
            groups: txn.open_table(GROUPS).map_err(db)?,
            runs: txn.open_table(RUNS).map_err(db)?,
            open_runs: BTreeMap::new(),
            open: None,
            last: None,
            kept: None,
            written: Vec::new(),
            clock_scratch: Vec::new(),
            entry_scratch: Vec::new(),
        })
    }

    fn author(&mut self, node: &NodeId) -> Result<u32, StoreError> {
        if let Some(a) = self.by_node.get(node) {
            return Ok(*a);
        }
        let a = self.by_node.len() as u32;
        self.authors.insert(a, node.as_bytes()).map_err(db)?;
        self.by_node.insert(*node, a);
        seal_authors(&mut self.authors)?;
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
        let entry = Entry {
            id,
            author: a,
            seq,
            depth,
            clock: dense,
        };
        self.written.push((id, a, seq));
        self.extend_run(a, seq, arrival)?;
        if self.open.is_none() {
            (self.open, self.last) = match self.last_with_room(arrival)? {
                Some((open, last)) => (Some(open), Some(last)),
                None => (None, None),
            };
        }
        let shape = Shape::of(bytes, &self.cloud, author);
        let mut entry_bytes = std::mem::take(&mut self.entry_scratch);
        // The record's size and its entry as they would follow the last record of the open
        // group (the entry is left out when it follows from that one's).
        let mut size = |last: Option<&(Before, Entry)>| {
            entry_bytes.clear();
            let follows = last.is_some_and(|(_, e)| follows(e, &entry));
            if !follows {
                Entry::encode_into(&mut entry_bytes, a, seq, depth, &entry.clock);
            }
            let e = entry_bytes.len();
            let record = shape.len(bytes, a, last.map(|(b, _)| b));
            if e > 0 {
                record + varint_len(e) + e
            } else {
                record
            }
        };
        let fits = size(self.last.as_ref());
        if let Some((first, n, content)) = &self.open {
            assert_eq!(
                arrival,
                first + u64::from(*n),
                "records are added in arrival order"
            );
            let full = *n as usize >= GROUP_MAX || content.len() - TAG_BYTES + fits > GROUP_BYTES;
            if full {
                // First in a new group: nothing before it to leave out.
                self.close()?;
                size(None);
            }
        }
        let (_, n, content) = self.open.get_or_insert_with(|| {
            // The tag's room first (filled in when the group is closed), then the count.
            let mut content = Vec::with_capacity(TAG_BYTES + GROUP_BYTES + 64);
            content.extend_from_slice(&[0; TAG_BYTES + 4]);
            (arrival, 0, content)
        });
        *n += 1;
        let before = self.last.as_ref().map(|(b, _)| b);
        let at = shape.write(content, bytes, a, before);
        let kind = content[at];
        if !entry_bytes.is_empty() {
            content[at] |= ENTRY;
            write_varint(content, entry_bytes.len());
            content.extend_from_slice(&entry_bytes);
        }
        let this = Before {
            id,
            author: (kind != WHOLE).then_some(a),
            seq,
        };
        self.entry_scratch = entry_bytes;
        if let Some((_, old)) = self.last.replace((this, entry)) {
            self.clock_scratch = old.clock;
        }
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

    /// The last stored group, to fill further, if it ends just before `arrival`, is packed
    /// and has room: so commits of a few experiences each (one writer, a node's steady
    /// stream) fill their pages. Returns it with its last record and that record's entry:
    /// from the group the last commit left open if the caller kept it and it is still what is
    /// stored, else read back and checked.
    #[allow(clippy::type_complexity)]
    fn last_with_room(
        &mut self,
        arrival: u64,
    ) -> Result<Option<((u64, u32, Vec<u8>), (Before, Entry))>, StoreError> {
        let kept = self.kept.take();
        let Some((k, v)) = self.groups.last().map_err(db)? else {
            return Ok(None);
        };
        let first = k.value();
        if !has_room(v.value().len()) {
            return Ok(None);
        }
        if let Some(kept) = kept
            && kept.first == first
            && kept.sealed == v.value()
            && first + u64::from(kept.count) == arrival
        {
            return Ok(Some(((first, kept.count, kept.sealed), kept.last)));
        }
        let content = unseal_at("groups", first, v.value(), &|| group_name(first))?;
        if content.get(3).is_none_or(|b| b & 0x80 == 0) {
            // A group written before format 4: its layout is not extended.
            return Ok(None);
        }
        let spans = parse(content, first)?;
        let n = spans.len();
        if first + n as u64 != arrival || n >= GROUP_MAX {
            return Ok(None);
        }
        let names = Names::read(&self.authors, self.cloud)?;
        let mut last_entry = None;
        let last = walk(content, &spans, first, &names, |i, entry, _, _| {
            if i + 1 == n {
                last_entry = Some(entry.decode()?);
            }
            Ok(())
        })?;
        let Some(last_entry) = last_entry else {
            return Err(corrupt(format!("{}: holds no records", group_name(first))));
        };
        let mut open = Vec::with_capacity(TAG_BYTES + GROUP_BYTES + 64);
        open.extend_from_slice(&[0; TAG_BYTES]);
        open.extend_from_slice(content);
        Ok(Some(((first, n as u32, open), (last, last_entry))))
    }

    /// Seals the group being filled and writes it; returns it (first arrival, count, sealed).
    fn close(&mut self) -> Result<Option<(u64, u32, Vec<u8>)>, StoreError> {
        self.last = None;
        let Some((first, n, mut group)) = self.open.take() else {
            return Ok(None);
        };
        group[TAG_BYTES..TAG_BYTES + 4].copy_from_slice(&(n | PACKED).to_le_bytes());
        // Sealed in place: the tag goes in the room left for it (a 32 KiB group is not
        // copied once more to put 16 bytes in front of it). It covers the group's key too.
        crate::state::seal_in_place("groups", first, &mut group);
        self.groups.insert(first, group.as_slice()).map_err(db)?;
        Ok(Some((first, n, group)))
    }

    /// Writes the group being filled. Returns what was added: (id, author index, seq) of each.
    pub fn finish(self) -> Result<Vec<Written>, StoreError> {
        Ok(self.finish_keeping()?.0)
    }

    /// [`Recorder::finish`], also returning the last group if the next commit can fill it
    /// further: hand it to that commit's recorder ([`Recorder::keeping`]) once this commit
    /// is durable, and it will not read the group back.
    pub fn finish_keeping(mut self) -> Result<(Vec<Written>, Option<KeptGroup>), StoreError> {
        let last = self.last.clone();
        let kept = match (self.close()?, last) {
            (Some((first, count, sealed)), Some(last))
                if has_room(sealed.len()) && (count as usize) < GROUP_MAX =>
            {
                Some(KeptGroup {
                    first,
                    count,
                    sealed,
                    last,
                })
            }
            _ => None,
        };
        for (author, (s0, a0, n, changed)) in std::mem::take(&mut self.open_runs) {
            if changed {
                self.runs.insert((author, s0, a0), n).map_err(db)?;
            }
        }
        Ok((self.written, kept))
    }

    /// Starts from `kept`, the group the previous commit left open (see
    /// [`Recorder::finish_keeping`]), if it is still the last one stored.
    pub fn keeping(mut self, kept: Option<KeptGroup>) -> Recorder<'t> {
        self.kept = kept;
        self
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
    use crate::record::*;

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
        let at = |r: &Option<Range<usize>>| &c[r.clone().unwrap()];
        assert_eq!(at(&spans[0].0), b"e1");
        assert_eq!(&c[spans[0].1.clone()], b"exp one");
        assert_eq!(at(&spans[1].0), b"");
        assert_eq!(&c[spans[1].1.clone()], b"x");
    }

    /// A packed group's content (format 4): each record, then its entry if it has one.
    fn packed(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut c = (records.len() as u32 | PACKED).to_le_bytes().to_vec();
        for (e, x) in records {
            c.push(x[0] | if e.is_empty() { 0 } else { ENTRY });
            c.extend_from_slice(&x[1..]);
            if !e.is_empty() {
                write_varint(&mut c, e.len());
                c.extend_from_slice(e);
            }
        }
        c
    }

    #[test]
    fn a_packed_group_parses_back_and_leaves_entries_out() {
        let (genesis, first, second) = cloud_and_chain();
        let author = genesis.author();
        let names = Names {
            cloud: genesis.id(),
            authors: vec![author],
        };
        let whole = compact(&genesis.to_bytes(), &genesis.id(), 0, &author, None);
        let one = compact(&first, &genesis.id(), 0, &author, None);
        let first_id = lcloud_core::revalidate_stored(&first, &genesis.id())
            .unwrap()
            .id();
        let before = Before {
            id: first_id,
            author: Some(0),
            seq: 2,
        };
        let two = compact(&second, &genesis.id(), 0, &author, Some(&before));
        let entry = vec![0x84, 0, 1, 0, 0x80];
        let c = packed(&[(&entry, &whole), (&entry, &one), (b"", &two)]);
        let spans = parse(&c, 0).unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(&c[spans[0].0.clone().unwrap()], entry.as_slice());
        assert_eq!(&c[spans[1].1.clone()][1..], &one[1..]);
        assert_eq!(spans[2].0, None, "an entry left out");
        let (back, _) = expand(&c[spans[2].1.clone()], &names, Some(&before)).unwrap();
        assert_eq!(&*back, second.as_slice());
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            u32::MAX as usize,
        ] {
            let mut v = Vec::new();
            write_varint(&mut v, n);
            assert_eq!(v.len(), varint_len(n), "{n}");
        }
        // The first entry cannot be left out; a truncated record, an entry length not in its
        // shortest form or past the end, or bytes after the last record are refused.
        let mut long_len = c.clone();
        let at = spans[0].0.clone().unwrap().start - 1;
        long_len[at] = 0x80 | entry.len() as u8;
        long_len.insert(at + 1, 0);
        for bad in [
            packed(&[(b"", &two)]),
            packed(&[(&entry, &one[..one.len() - 1])]),
            long_len,
            [&c[..c.len() - 2], &[0x7f]].concat(),
            [c.as_slice(), b"!"].concat(),
        ] {
            let err = parse(&bad, 3).unwrap_err().to_string();
            assert!(
                err.contains("experience #3 and the rest of its group"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_left_out_entry_follows_from_the_one_before() {
        let base = Entry {
            id: Id([1; 32]),
            author: 2,
            seq: 5,
            depth: 9,
            clock: vec![(0, 3), (2, 5), (4, 1)],
        };
        let next = derive(&base, 3, Id([2; 32])).unwrap();
        assert_eq!(
            next,
            Entry {
                id: Id([2; 32]),
                author: 2,
                seq: 8,
                depth: 12,
                clock: vec![(0, 3), (2, 8), (4, 1)],
            }
        );
        let bytes = base.to_bytes();
        let at = EntryAt {
            base: &bytes,
            steps: 3,
            id: Id([2; 32]),
        };
        assert_eq!(at.decode().unwrap(), next);
        let huge = Entry {
            seq: u64::MAX,
            ..base
        };
        assert!(
            derive(&huge, 1, Id([2; 32])).is_none(),
            "overflow is refused"
        );
        // The committer's in-place test agrees with derive.
        let base = Entry { seq: 5, ..huge };
        let one = derive(&base, 1, Id([2; 32])).unwrap();
        assert!(follows(&base, &one));
        let first = Entry {
            clock: vec![(0, 3)],
            ..base.clone()
        };
        assert!(follows(&first, &derive(&first, 1, Id([2; 32])).unwrap()));
        for bad in [
            Entry {
                depth: 99,
                ..one.clone()
            },
            Entry {
                seq: 7,
                ..one.clone()
            },
            Entry {
                author: 0,
                ..one.clone()
            },
            Entry {
                clock: vec![(0, 3), (2, 6), (4, 2)],
                ..one.clone()
            },
            Entry {
                clock: vec![(0, 3), (2, 7), (4, 1)],
                ..one.clone()
            },
            Entry {
                clock: vec![(0, 3), (4, 1)],
                ..one.clone()
            },
        ] {
            assert!(!follows(&base, &bad), "{bad:?}");
        }
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
        // The record before: the author's seq 2 (the genesis is seq 1), as stored (author
        // number 0) or kept whole.
        let stored = Before {
            id: first_id,
            author: Some(0),
            seq: 2,
        };
        let whole = Before {
            author: None,
            ..stored
        };
        let alone = compact(&second, &genesis.id(), 0, &author, None);
        let chained = compact(&second, &genesis.id(), 0, &author, Some(&whole));
        let next = compact(&second, &genesis.id(), 0, &author, Some(&stored));
        // Plain: it depends on no other chain and names no root or fuel.
        assert_eq!(
            (alone[0], chained[0], next[0]),
            (COMPACT | PLAIN, CHAINED | PLAIN, NEXT | PLAIN)
        );
        assert_eq!(chained.len() + 34, alone.len());
        // The length a group reserves is the length written, whatever the kind.
        let shape = Shape::of(&second, &genesis.id(), &author);
        for (record, before) in [
            (&alone, None),
            (&chained, Some(&whole)),
            (&next, Some(&stored)),
        ] {
            assert_eq!(shape.len(&second, 0, before), record.len());
        }
        let g = genesis.to_bytes();
        let whole_shape = Shape::of(&g, &genesis.id(), &author);
        assert_eq!(
            whole_shape.len(&g, 0, None),
            compact(&g, &genesis.id(), 0, &author, None).len()
        );
        assert_eq!(
            next.len() + 4 + 1,
            chained.len(),
            "author and seq 3 left out"
        );
        for (record, before) in [(&chained, &whole), (&next, &stored)] {
            let (back, this) = expand(record, &names, Some(before)).unwrap();
            assert_eq!((&*back, this.id), (second.as_slice(), second_id));
            assert_eq!((this.author, this.seq), (Some(0), 3));
        }
        // Only the record's actual prev chains it; another seq or author does not make it
        // NEXT.
        let other = Before {
            id: second_id,
            ..stored
        };
        assert_eq!(
            compact(&second, &genesis.id(), 0, &author, Some(&other))[0],
            COMPACT | PLAIN
        );
        for not_next in [
            Before { seq: 3, ..stored },
            Before {
                author: Some(1),
                ..stored
            },
        ] {
            assert_eq!(
                compact(&second, &genesis.id(), 0, &author, Some(&not_next))[0],
                CHAINED | PLAIN
            );
        }
        // Without the record before it, or with another, it does not come back as it was.
        assert!(expand(&chained, &names, None).is_err());
        assert!(expand(&next, &names, None).is_err());
        assert!(
            expand(&next, &names, Some(&whole)).is_err(),
            "no author to take"
        );
        let wrong = Before {
            id: Id([1; 32]),
            ..stored
        };
        for record in [&chained, &next] {
            let (other, this) = expand(record, &names, Some(&wrong)).unwrap();
            assert_ne!((&*other, this.id), (second.as_slice(), second_id));
        }
        let (other, _) = expand(&next, &names, Some(&Before { seq: 5, ..stored })).unwrap();
        assert_ne!(&*other, second.as_slice());
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
        assert_eq!(record[0], COMPACT | PLAIN);
        assert_eq!(
            record.len() + 105,
            bytes.len(),
            "105 bytes left out and 5 more (plain), 5 added"
        );
        let (back, this) = expand(&record, &names, None).unwrap();
        assert_eq!(&*back, bytes.as_slice());
        assert_eq!(this.id, exp.id());
        // The genesis (its cloud field is zero) is kept whole.
        let g = genesis.to_bytes();
        let record = compact(&g, &genesis.id(), 1, &author, None);
        assert_eq!(record[0], WHOLE);
        let (back, this) = expand(&record, &names, None).unwrap();
        assert_eq!((&*back, this.id), (g.as_slice(), genesis.id()));
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
            expand(&[16, 1, 2], &names, None)
                .unwrap_err()
                .contains("unknown record kind 16")
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
            for author in [None, Some(0), Some(1)] {
                let before = Before {
                    id: Id([3; 32]),
                    author,
                    seq: u64::from(input.len() as u8) << 56,
                };
                let _ = expand(input, &names, Some(&before));
            }
        });
    }

    /// The authors table is checked against its digest: a changed author id, a missing
    /// digest or a missing author is refused.
    #[test]
    fn a_damaged_authors_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(AUTHORS).unwrap();
            t.insert(0, &[1; 32]).unwrap();
            t.insert(1, &[2; 32]).unwrap();
            assert!(Names::read(&t, Id::default()).is_err(), "no digest");
            seal_authors(&mut t).unwrap();
            let names = Names::read(&t, Id::default()).unwrap();
            assert_eq!(names.authors, [NodeId([1; 32]), NodeId([2; 32])]);
            let mut other = [2; 32];
            other[7] ^= 4;
            t.insert(1, &other).unwrap();
            let err = Names::read(&t, Id::default()).unwrap_err().to_string();
            assert!(
                err.contains("the authors table: checksum mismatch"),
                "{err}"
            );
            t.insert(1, &[2; 32]).unwrap();
            t.insert(3, &[3; 32]).unwrap();
            let err = Names::read(&t, Id::default()).unwrap_err().to_string();
            assert!(err.contains("author #2 is missing"), "{err}");
        }
        txn.commit().unwrap();
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
                    assert!(e.is_none_or(|e| e.end <= input.len()) && x.end <= input.len());
                }
            }
        });
    }
}
