//! One stored record: an experience's canonical bytes less what the store knows (the cloud,
//! the author's key, the ops digest; the prev, author and seq when the record before it in its
//! group has them), its kinds, and how it is expanded back byte for byte (docs/store.md,
//! "A group holds consecutive arrivals"). Below the group format of `records.rs`.

use std::borrow::Cow;
use std::ops::Range;

use lcloud_core::codec::item_end_stored as item_end;
use lcloud_core::{Id, NodeId};

/// Set in a packed group's record kind when its index entry is written out after it.
pub(crate) const ENTRY: u8 = 8;

/// Where the record that starts at `at` in `content` ends. Every record is a kind byte, then
/// fixed-size fields and CBOR items the kind determines, so packed groups store no record
/// lengths.
pub(crate) fn record_end(content: &[u8], at: usize) -> Result<usize, String> {
    let kind = *content.get(at).ok_or("truncated record")? & !ENTRY;
    let mut p = at + 1;
    let item = |p: &mut usize| -> Result<(), String> {
        if *p >= content.len() {
            return Err("truncated record".into());
        }
        *p = item_end(content, *p).map_err(|e| format!("malformed record: {e}"))?;
        Ok(())
    };
    let plain = kind & PLAIN != 0;
    match kind & !PLAIN {
        WHOLE if !plain => {
            item(&mut p)?;
            return Ok(p);
        }
        base @ (COMPACT | CHAINED) => {
            p += 4; // the author number
            item(&mut p)?; // seq
            if base == COMPACT {
                item(&mut p)?; // prev
            }
        }
        NEXT => {}
        _ => return Err(format!("unknown record kind {kind}")),
    }
    if plain {
        p += 64; // the signature
    } else {
        for _ in 0..4 {
            item(&mut p)?; // deps, root, fuel, signature
        }
    }
    item(&mut p)?; // ops
    Ok(p)
}

/// What a record may leave out because the record before it in its group has it: that
/// record's id, author number (`None` for a record kept whole) and seq.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Before {
    pub id: Id,
    pub author: Option<u32>,
    pub seq: u64,
}

/// Record kinds: the first byte of a stored experience.
pub(crate) const WHOLE: u8 = 0;
pub(crate) const COMPACT: u8 = 1;
pub(crate) const CHAINED: u8 = 2;
/// Chained, by the same author as the record before, at the next seq: the author number and
/// the seq are left out too.
pub(crate) const NEXT: u8 = 3;
/// Added to `COMPACT`, `CHAINED` or `NEXT`: the experience depends on no other chain, names
/// no root and no fuel, so its empty deps, its two nulls and its signature's 2-byte head are
/// left out (5 bytes: the usual local write).
pub(crate) const PLAIN: u8 = 4;
/// What a `PLAIN` record leaves out after its deps (`[]`) and digest: root and fuel (`null`),
/// the signature's head.
const PLAIN_TAIL: [u8; 4] = [0xf6, 0xf6, 0x58, 0x40];
/// An experience array (3 items), its header array (9 items), version 1.
const PREFIX: [u8; 3] = [0x83, 0x89, 0x01];
/// The head of a 32-byte string.
const B32: [u8; 2] = [0x58, 0x20];

/// The stored form of an experience's canonical `bytes` by `node` (author number `author`):
/// `COMPACT, author: u32 LE`, then the bytes without the cloud id, the author's key and the ops
/// digest, and the array heads before them (105 bytes the store knows or can recompute: the
/// cloud is the store's, the author is in the authors table, the digest is the hash of the
/// ops). When the experience's prev is the record just before it in its group, the prev is
/// left out too (34 bytes more): kind `CHAINED`; and when that record is the same author's
/// (always, for a valid chain) the author number and the seq are left out as well: kind
/// `NEXT`. What does not have the expected shape (the genesis, whose cloud field is zero) is
/// kept whole: `WHOLE`, then the bytes.
#[cfg(test)]
pub(crate) fn compact(
    bytes: &[u8],
    cloud: &Id,
    author: u32,
    node: &NodeId,
    before: Option<&Before>,
) -> Vec<u8> {
    let shape = Shape::of(bytes, cloud, node);
    let mut out = Vec::with_capacity(bytes.len() + 1);
    shape.write(&mut out, bytes, author, before);
    out
}

/// The canonical uint that is all of `item`.
fn uint(item: &[u8]) -> Option<u64> {
    let (&head, rest) = item.split_first()?;
    if head >> 5 != 0 {
        return None;
    }
    let n = match (head & 0x1f, rest.len()) {
        (n @ 0..=23, 0) => u64::from(n),
        (24, 1) => u64::from(rest[0]),
        (25, 2) => u64::from(u16::from_be_bytes(rest.try_into().ok()?)),
        (26, 4) => u64::from(u32::from_be_bytes(rest.try_into().ok()?)),
        (27, 8) => u64::from_be_bytes(rest.try_into().ok()?),
        _ => return None,
    };
    Some(n)
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

    /// The kind of record `bytes` by author number `author` is stored as after `before`.
    fn kind(&self, bytes: &[u8], author: u32, before: Option<&Before>) -> u8 {
        let (Some((seq_end, prev_end, _)), Some(b)) = (self.0, before) else {
            return if self.0.is_some() { COMPACT } else { WHOLE };
        };
        let prev = &bytes[seq_end..prev_end];
        if prev.len() != 34 || prev[2..] != b.id.0 {
            return COMPACT;
        }
        let next = b.author == Some(author)
            && uint(&bytes[71..seq_end]).is_some_and(|s| Some(s) == b.seq.checked_add(1));
        if next { NEXT } else { CHAINED }
    }

    /// How the record is made: its kind byte, whether the author number follows, then the
    /// byte ranges of `bytes` it takes, in order.
    fn plan(
        &self,
        bytes: &[u8],
        author: u32,
        before: Option<&Before>,
    ) -> (u8, bool, [Range<usize>; 3]) {
        let Some((seq_end, prev_end, deps_end)) = self.0 else {
            return (WHOLE, false, [0..bytes.len(), 0..0, 0..0]);
        };
        let kind = self.kind(bytes, author, before);
        let plain = bytes[prev_end..deps_end] == [0x80]
            && bytes.get(deps_end + 34..deps_end + 38) == Some(&PLAIN_TAIL);
        // What follows the deps: root, fuel, signature, ops (after the digest), or for a
        // plain record the signature's 64 bytes and the ops.
        let (deps_end, tail) = if plain {
            (prev_end, prev_end + 1 + 34 + PLAIN_TAIL.len()..bytes.len())
        } else {
            (deps_end, deps_end + 34..bytes.len())
        };
        let kind_byte = if plain { kind | PLAIN } else { kind };
        match kind {
            NEXT => (kind_byte, false, [prev_end..deps_end, tail, 0..0]),
            CHAINED => (kind_byte, true, [71..seq_end, prev_end..deps_end, tail]),
            _ => (kind_byte, true, [71..deps_end, tail, 0..0]),
        }
    }

    /// The length of the record [`Shape::write`] appends.
    pub(crate) fn len(&self, bytes: &[u8], author: u32, before: Option<&Before>) -> usize {
        let (_, with_author, ranges) = self.plan(bytes, author, before);
        1 + if with_author { 4 } else { 0 } + ranges.iter().map(|r| r.len()).sum::<usize>()
    }

    /// Appends the record to `out`; returns its kind byte's offset in `out`.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        bytes: &[u8],
        author: u32,
        before: Option<&Before>,
    ) -> usize {
        let (kind, with_author, ranges) = self.plan(bytes, author, before);
        let at = out.len();
        out.push(kind);
        if with_author {
            out.extend_from_slice(&author.to_le_bytes());
        }
        for r in ranges {
            out.extend_from_slice(&bytes[r]);
        }
        at
    }
}

/// The canonical bytes of a stored record, and its [`Before`] for the record after it (its id
/// is the hash of its header). `before` is what the record just before it in its group left
/// (what a `CHAINED` or `NEXT` record leaves out). Fails (naming why) on a record that is not
/// one [`compact`] makes; the caller names the record. What it returns is still to be checked
/// as any stored experience is.
pub(crate) fn expand<'r>(
    record: &'r [u8],
    names: &Names,
    before: Option<&Before>,
) -> Result<(Cow<'r, [u8]>, Before), String> {
    let bad = |e: lcloud_core::codec::DecodeError| format!("malformed record: {e}");
    let (&kind, rest) = record.split_first().ok_or("empty record")?;
    let kind = &(kind & !ENTRY);
    if *kind == WHOLE {
        // The header is the first item after the array's one-byte head.
        let header_end = item_end(rest, 1).map_err(bad)?;
        let id = Id::hash(&rest[1..header_end]);
        let this = Before {
            id,
            author: None,
            seq: 0,
        };
        return Ok((Cow::Borrowed(rest), this));
    }
    let before_or =
        |what: &str| before.ok_or_else(|| format!("a {what} record first in its group"));
    // (author number, the seq's canonical bytes, the prev to put back, the rest)
    let mut seq_item = Vec::new();
    let plain = *kind & PLAIN != 0 && *kind != WHOLE | PLAIN;
    let kind = if plain { *kind & !PLAIN } else { *kind };
    let (author, seq, prev, body): (u32, u64, Option<Id>, &[u8]) = match kind {
        NEXT => {
            let b = before_or("chained")?;
            let author = b
                .author
                .ok_or("a record chained to one kept whole names no author")?;
            let seq = b.seq.checked_add(1).ok_or("its seq overflows")?;
            lcloud_core::codec::write_head(&mut seq_item, 0, seq);
            (author, seq, Some(b.id), rest)
        }
        COMPACT | CHAINED => {
            let (author, body) = rest.split_first_chunk::<4>().ok_or("truncated record")?;
            let seq_end = item_end(body, 0).map_err(bad)?;
            let seq = uint(&body[..seq_end]).ok_or("its seq is not a canonical number")?;
            seq_item.extend_from_slice(&body[..seq_end]);
            let prev = if kind == CHAINED {
                Some(before_or("chained")?.id)
            } else {
                None
            };
            (u32::from_le_bytes(*author), seq, prev, &body[seq_end..])
        }
        _ => return Err(format!("unknown record kind {kind}")),
    };
    let node = names
        .authors
        .get(author as usize)
        .ok_or_else(|| format!("the record names unknown author #{author}"))?;
    // `body` now starts at the prev (unless it was left out), then the deps.
    let prev_end = if prev.is_some() {
        0
    } else {
        item_end(body, 0).map_err(bad)?
    };
    // A plain record's deps, root, fuel and signature head put back (the digest goes in
    // below, as for any record).
    let restored;
    let body: &[u8] = if plain {
        let mut b = Vec::with_capacity(body.len() + 1 + PLAIN_TAIL.len());
        b.extend_from_slice(&body[..prev_end]);
        b.push(0x80);
        b.extend_from_slice(&PLAIN_TAIL);
        b.extend_from_slice(&body[prev_end..]);
        restored = b;
        &restored
    } else {
        body
    };
    let deps_end = item_end(body, prev_end).map_err(bad)?;
    let mut header_rest = deps_end;
    for _ in 0..2 {
        // root, fuel
        header_rest = item_end(body, header_rest).map_err(bad)?;
    }
    let ops_start = item_end(body, header_rest).map_err(bad)?; // after the signature
    let digest = Id::hash(&body[ops_start..]);
    let mut out = Vec::with_capacity(body.len() + 150);
    out.extend_from_slice(&PREFIX);
    out.extend_from_slice(&B32);
    out.extend_from_slice(names.cloud.as_bytes());
    out.extend_from_slice(&B32);
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&seq_item);
    if let Some(prev) = prev {
        out.extend_from_slice(&B32);
        out.extend_from_slice(prev.as_bytes());
    }
    out.extend_from_slice(&body[..deps_end]);
    out.extend_from_slice(&B32);
    out.extend_from_slice(digest.as_bytes());
    let header_end = out.len() + header_rest - deps_end;
    out.extend_from_slice(&body[deps_end..]);
    let id = Id::hash(&out[1..header_end]);
    let this = Before {
        id,
        author: Some(author),
        seq,
    };
    Ok((Cow::Owned(out), this))
}

/// What expanding a record needs: the cloud id and the authors by number.
#[derive(Debug)]
pub(crate) struct Names {
    pub cloud: Id,
    pub authors: Vec<NodeId>,
}
