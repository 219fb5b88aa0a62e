//! Experience records with their index entries in the `groups` table (the group format is
//! `group.rs`), each author's chain as `runs`, and the authors table: [`Records`] reads
//! records at random, [`for_each`] in order, and [`Recorder`] appends them in a write
//! transaction.

use std::collections::BTreeMap;

use std::borrow::Cow;

use lcloud_core::{Id, NodeId, VectorClock};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::authors::{AUTHORS_DIGEST, seal_authors};
use crate::entry::Entry;
use crate::error::{StoreError, corrupt, db};
use crate::group::{
    EntryAt, GROUP_BYTES, GROUP_MAX, GROUP_RAW_MAX, PACKED, Spans, TAG_BYTES, follows, group_name,
    grown_limit, pack, parse, unpack, varint_len, walk, write_varint,
};
use crate::record::{Before, ENTRY, Names, Shape, WHOLE};
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

/// The content of the group stored at `first` as `stored`: checked against its tag, and
/// expanded if it is compressed.
pub(crate) fn group_content(first: u64, stored: &[u8]) -> Result<Cow<'_, [u8]>, StoreError> {
    unpack(
        unseal_at("groups", first, stored, &|| group_name(first))?,
        first,
    )
}

/// Number of experiences stored: the last group's first arrival plus its count.
pub(crate) fn count(groups: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
    let Some((k, v)) = groups.last().map_err(db)? else {
        return Ok(0);
    };
    let first = k.value();
    let content = group_content(first, v.value())?;
    Ok(first + parse(&content, first)?.len() as u64)
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
        let content = group_content(first, v.value())?;
        let spans = parse(&content, first)?;
        walk(&content, &spans, first, names, |i, entry, bytes, id| {
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
            let content = group_content(first, row.1.value())?.into_owned();
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
    /// The bytes the open group's content may take before compression ([`grown_limit`]).
    limit: usize,
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
    /// Room for the tag, then the content, not compressed: what the next commit appends to.
    open: Vec<u8>,
    /// As stored (tag, then content, compressed if it paid): to check it still is.
    stored: Vec<u8>,
    last: (Before, Entry),
    /// Its limit before compression.
    limit: usize,
}

/// Whether a group whose content, not compressed, takes `open` bytes after room for its tag
/// has room for a small record more within `limit`.
fn has_room(open: usize, limit: usize) -> bool {
    open + 128 <= TAG_BYTES + limit
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
            limit: GROUP_BYTES,
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
            let raw = content.len() - TAG_BYTES;
            let mut full = *n as usize >= GROUP_MAX || raw + fits > self.limit;
            if full && (*n as usize) < GROUP_MAX && raw + fits <= GROUP_RAW_MAX {
                // Compressed, it may hold more.
                self.limit = grown_limit(&content[TAG_BYTES..], self.limit);
                full = raw + fits > self.limit;
            }
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
        if let Some(kept) = kept
            && kept.first == first
            && kept.stored == v.value()
            && first + u64::from(kept.count) == arrival
        {
            if !has_room(kept.open.len(), kept.limit) {
                return Ok(None);
            }
            self.limit = kept.limit;
            return Ok(Some(((first, kept.count, kept.open), kept.last)));
        }
        let content = group_content(first, v.value())?;
        if !has_room(TAG_BYTES + content.len(), GROUP_BYTES) {
            return Ok(None);
        }
        if content.get(3).is_none_or(|b| b & 0x80 == 0) {
            // A group written before format 4: its layout is not extended.
            return Ok(None);
        }
        let spans = parse(&content, first)?;
        let n = spans.len();
        if first + n as u64 != arrival || n >= GROUP_MAX {
            return Ok(None);
        }
        let names = Names::read(&self.authors, self.cloud)?;
        let mut last_entry = None;
        let last = walk(&content, &spans, first, &names, |i, entry, _, _| {
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
        open.extend_from_slice(&content);
        Ok(Some(((first, n as u32, open), (last, last_entry))))
    }

    /// Seals the group being filled and writes it, compressed if that pays; returns it
    /// (first arrival, count, the content not compressed after room for the tag, as stored).
    #[allow(clippy::type_complexity)]
    fn close(&mut self) -> Result<Option<(u64, u32, Vec<u8>, Vec<u8>, usize)>, StoreError> {
        self.last = None;
        let limit = std::mem::replace(&mut self.limit, GROUP_BYTES);
        let Some((first, n, mut group)) = self.open.take() else {
            return Ok(None);
        };
        group[TAG_BYTES..TAG_BYTES + 4].copy_from_slice(&(n | PACKED).to_le_bytes());
        let stored = match pack(&group[TAG_BYTES..]) {
            Some(packed) => {
                let mut stored = Vec::with_capacity(TAG_BYTES + packed.len());
                stored.extend_from_slice(&[0; TAG_BYTES]);
                stored.extend_from_slice(&packed);
                crate::state::seal_in_place("groups", first, &mut stored);
                stored
            }
            None => {
                // Sealed in place: the tag goes in the room left for it. It covers the
                // group's key too.
                crate::state::seal_in_place("groups", first, &mut group);
                group.clone()
            }
        };
        self.groups.insert(first, stored.as_slice()).map_err(db)?;
        Ok(Some((first, n, group, stored, limit)))
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
            (Some((first, count, open, stored, limit)), Some(last))
                if has_room(open.len(), limit) && (count as usize) < GROUP_MAX =>
            {
                Some(KeptGroup {
                    first,
                    count,
                    open,
                    stored,
                    last,
                    limit,
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
    use crate::group::tests::cloud_and_chain;
    use crate::record::*;

    fn cloud_and_experience() -> (lcloud_core::Verified<lcloud_core::Experience>, Vec<u8>) {
        let (genesis, _, second) = cloud_and_chain();
        (genesis, second)
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
}
