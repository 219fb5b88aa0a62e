//! The group format: one redb value holds the records of consecutive arrivals (up to
//! [`GROUP_MAX`], and about 32 KiB), sealed as one, so a commit of many experiences is a few
//! B-tree inserts instead of two per experience, and each record does not pay its own key,
//! slot and checksum (docs/store.md, "Tables": a group). This file reads and checks a group's
//! content ([`parse`], [`walk`]) and decides what a record may leave out of its index entry
//! ([`derive`], [`follows`]); `records.rs` above it reads and writes groups in the table.

use std::borrow::Cow;
use std::ops::Range;

use lcloud_core::Id;

use crate::entry::Entry;
use crate::error::{StoreError, corrupt};
use crate::record::{Before, ENTRY, Names, expand, record_end};

/// The bytes of a sealed value's tag (see `state::sealed`).
pub(crate) const TAG_BYTES: usize = 16;

/// Records per group, at most (256 before format 9, whose groups may hold more compressed).
pub(crate) const GROUP_MAX: usize = 1024;

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
pub(crate) const GROUP_BYTES: usize = 32768 - 32;

/// How errors name a group: by its first experience, the one a reader is pointed to.
pub(crate) fn group_name(first: u64) -> String {
    format!("experience #{first} and the rest of its group")
}

/// The count's top bit marks a packed group (store format 4). A packed group stores no record
/// lengths (records are self-delimiting: [`record_end`]), and a record's index entry only
/// when its kind has [`ENTRY`] set, after the record (`entry_len: varint, entry`); left out,
/// the entry follows from the one before ([`derive`]). Groups written before (format 3) have
/// `entry_len: u32 LE, entry, record_len: u32 LE, record` for every record; both are read.
pub(crate) const PACKED: u32 = 1 << 31;

/// The count's second bit marks a compressed group (store format 9): after the count, the
/// length of the records' bytes (u32 LE, at most [`UNPACKED_MAX`]) and those bytes as one
/// zstd frame. A group is stored compressed when that saves at least an eighth of it.
pub(crate) const COMPRESSED: u32 = 1 << 30;

/// The most bytes a compressed group's records may expand to: a group's room, or one record
/// of the largest experience with its index entry (a group's first record may pass its room).
pub(crate) const UNPACKED_MAX: usize = lcloud_core::EXPERIENCE_BYTES_MAX + 64 * 1024;

/// zstd's level for groups and checkpoints: its fastest, which on W2's 1 000-op experiences
/// already takes 25 bytes of ops to about 1.3.
pub(crate) const LEVEL: i32 = 1;

/// The most bytes a group's content may take before compression (format 9): a group that
/// compresses well takes records until its compressed form nearly fills its room
/// ([`grown_limit`]), so that it does not waste the rest of its run of pages.
pub(crate) const GROUP_RAW_MAX: usize = 32 * GROUP_BYTES;

/// How far a group whose content is `content` may grow before compression, at least `limit`:
/// from what it compresses to now, as far as would fill seven eighths of its room
/// compressed, up to [`GROUP_RAW_MAX`]. (Checked when a record would pass `limit`: each check
/// compresses the group once, and moves the limit most of the way to where it ends.)
pub(crate) fn grown_limit(content: &[u8], limit: usize) -> usize {
    let Some(packed) = content
        .get(4..)
        .and_then(|r| zstd::bulk::compress(r, LEVEL).ok())
    else {
        return limit;
    };
    let stored = packed.len() + 8;
    let target = GROUP_BYTES / 8 * 7;
    if stored >= target {
        return limit;
    }
    (content.len() * target / stored).clamp(limit, GROUP_RAW_MAX)
}

/// `content` (count, then records) as a group is stored: compressed when that pays.
pub(crate) fn pack(content: &[u8]) -> Option<Vec<u8>> {
    let (head, records) = content.split_at(4);
    let packed = zstd::bulk::compress(records, LEVEL).ok()?;
    if packed.len() + 8 > content.len() - content.len() / 8 {
        return None;
    }
    let raw = u32::from_le_bytes(head.try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(8 + packed.len());
    out.extend_from_slice(&(raw | COMPRESSED).to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    Some(out)
}

/// A group's content as stored, expanded if it is compressed (see [`COMPRESSED`]); its length
/// is checked before anything is allocated.
pub(crate) fn unpack(stored: &[u8], first: u64) -> Result<Cow<'_, [u8]>, StoreError> {
    let bad = |why: String| corrupt(format!("{}: {why}", group_name(first)));
    let Some(head) = stored.get(..4) else {
        return Ok(Cow::Borrowed(stored));
    };
    let raw = u32::from_le_bytes(head.try_into().expect("4 bytes"));
    if raw & COMPRESSED == 0 {
        return Ok(Cow::Borrowed(stored));
    }
    let len = stored
        .get(4..8)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("truncated compressed length".into()))?;
    if len > UNPACKED_MAX {
        return Err(bad(format!(
            "claims {len} bytes of records (at most {UNPACKED_MAX})"
        )));
    }
    let records = zstd::bulk::decompress(&stored[8..], len)
        .map_err(|e| bad(format!("its compressed records: {e}")))?;
    if records.len() != len {
        return Err(bad(format!(
            "its compressed records expand to {} bytes, not the {len} it claims",
            records.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(raw & !COMPRESSED).to_le_bytes());
    out.extend_from_slice(&records);
    Ok(Cow::Owned(out))
}

/// Byte ranges of each record of a group's content: its index entry (`None`: it follows
/// from the one before) and its experience.
pub(crate) type Spans = Vec<(Option<Range<usize>>, Range<usize>)>;

/// Appends `n` as a LEB128 varint (7 bits a byte, low first).
pub(crate) fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The bytes [`write_varint`] takes for `n`.
pub(crate) fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// Parses a group's content, checking every length against what is left before using it.
pub(crate) fn parse(content: &[u8], first: u64) -> Result<Spans, StoreError> {
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
pub(crate) fn derive(base: &Entry, steps: u64, id: Id) -> Option<Entry> {
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
pub(crate) fn follows(prev: &Entry, next: &Entry) -> bool {
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
    pub(crate) base: &'c [u8],
    pub(crate) steps: u64,
    pub(crate) id: Id,
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
pub(crate) fn walk<'c>(
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

#[cfg(test)]
pub(crate) mod tests {
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

    #[test]
    fn a_compressed_group_expands_to_its_content_and_damage_is_named() {
        let (_, a, b) = cloud_and_chain();
        let plain = packed(&[(b"" as &[u8], &a), (b"", &b), (b"", &a), (b"", &b)]);
        let stored = pack(&plain).expect("four records with a repeated value compress");
        assert!(
            stored.len() * 2 < plain.len(),
            "{} of {}",
            stored.len(),
            plain.len()
        );
        assert_eq!(stored[3] & 0x40, 0x40, "the count says it is compressed");
        assert_eq!(unpack(&stored, 0).unwrap().as_ref(), plain.as_slice());
        // Content that would not shrink by an eighth stays as it is, and reads as it is.
        let noise: Vec<u8> = (0..4096u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[..4].to_vec())
            .collect();
        let raw = [1u32.to_le_bytes().as_slice(), &noise].concat();
        assert!(pack(&raw).is_none());
        assert!(matches!(unpack(&raw, 0).unwrap(), Cow::Borrowed(_)));
        // A claimed length past the cap, one the frame does not fill, a damaged frame.
        let with_len = |len: u32| {
            let mut s = stored.clone();
            s[4..8].copy_from_slice(&len.to_le_bytes());
            s
        };
        let claimed = u32::from_le_bytes(stored[4..8].try_into().unwrap());
        for bad in [
            with_len(u32::MAX),
            with_len(claimed + 1),
            with_len(claimed - 1),
            [&stored[..stored.len() / 2]].concat(),
            stored[..6].to_vec(),
        ] {
            let err = unpack(&bad, 5).unwrap_err().to_string();
            assert!(
                err.contains("experience #5 and the rest of its group"),
                "{err}"
            );
        }
    }

    /// Group contents (bolero): no input panics, and whatever parses has spans inside it;
    /// no stored group panics the expansion, which never passes its cap.
    #[test]
    fn fuzz_group_content() {
        bolero::check!().for_each(|input: &[u8]| {
            if let Ok(content) = unpack(input, 0) {
                assert!(content.len() <= 4 + UNPACKED_MAX);
            }
            if let Ok(spans) = parse(input, 0) {
                for (e, x) in spans {
                    assert!(e.is_none_or(|e| e.end <= input.len()) && x.end <= input.len());
                }
            }
        });
    }

    /// A genesis, then the bytes of its author's seq 2 and seq 3 (whose prev is seq 2).
    pub(crate) fn cloud_and_chain() -> (
        lcloud_core::Verified<lcloud_core::Experience>,
        Vec<u8>,
        Vec<u8>,
    ) {
        use lcloud_core::{Experience, Genesis, Op, Path, Replica, Value};
        let key = ed25519_consensus::SigningKey::from([5; 32]);
        let genesis = Experience::create_genesis(&key, Genesis::open("t"));
        let mut replica = Replica::new(genesis.clone()).unwrap();
        let op = Op::Set {
            path: Path::from(vec!["a".into()]),
            value: Value::Str("x".repeat(200)),
        };
        let first = replica.write(&key, vec![op.clone()]).unwrap();
        let second = replica.write(&key, vec![op]).unwrap();
        (genesis, first.to_bytes(), second.to_bytes())
    }
}
