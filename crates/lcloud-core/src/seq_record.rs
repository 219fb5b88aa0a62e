//! The sequences' canonical record: what the state root hashes and the leaves table stores
//! for a text or list. Columnar, as Loro and Automerge store theirs: the experiences and
//! authors the elements name are listed once, sorted, and the segments
//! ([`Seq::segments`], which do not depend on arrival order) become eight columns of small
//! integers, each run-length coded. Typing makes long runs of alike segments (the same
//! experience, the next op, one element, left origin the element before, the same right
//! origin), so a column costs a few bytes per run of typing, not per keystroke: the
//! `automerge-paper` trace's text went from 29 MB as one array per segment to under 1 MB.
//!
//! A text's record is `[marks, exps, authors, columns, refs, chars]`, a list's
//! `[marks, exps, authors, columns, refs, values, moves]`:
//!
//! - `exps`: `[[depth, id], …]`, sorted; `authors`: `[node, …]`, sorted;
//! - `columns`: eight arrays, each `[value, count, value, count, …]` (a count ≥ 1, and
//!   two neighbours never of equal value), expanding to one value per segment: the change of
//!   the segment's experience index from the segment before, the change of its op index,
//!   its offset, its author's index, its left origin's code, its right origin's code, its
//!   length, and its flags: 1 if its elements are deleted, plus 2 if it is a run of
//!   single-element ops (`Seq::segments`);
//! - an origin's code: 0 none (the start or the end; a segment that does not begin its op's
//!   run has its left origin implied and codes 0), 1 the same as the segment before gives
//!   (left: its last element; right: its right origin), 2 the next entry of `refs`;
//! - `refs`: `[exp index, op, offset, …]`, three integers an element, in the order the
//!   segments use them; `moves`: a list's moved elements, each as two such triples
//!   (the element, then the slot of its greatest move), sorted by element;
//! - `chars`: the text's undeleted characters in order; `values`: the list's undeleted
//!   slots' values.

use std::collections::BTreeSet;

use super::{List, Seqs, Slot, Text};
use crate::dot::Dot;
use crate::id::{Id, NodeId};
use crate::seq::{ElemId, Segment, SegmentParts, Seq};
use crate::value::Value;

/// Most segments a record may expand to: a record of a few bytes may describe many
/// segments, so the count is capped before anything is allocated for them (16.7 million
/// segments, a few GiB of memory; no real text comes near it).
pub const SEGMENTS_MAX: u64 = 1 << 24;

/// The eight run-length coded columns.
type Columns = [Vec<i64>; 8];

/// A text's record: `[marks, exps, authors, columns, refs, chars]`.
type TextRecord = (
    Vec<Dot>,
    Vec<(u64, Id)>,
    Vec<NodeId>,
    Columns,
    Vec<u64>,
    String,
);

/// A list's record: `[marks, exps, authors, columns, refs, values, moves]`.
type ListRecord = (
    Vec<Dot>,
    Vec<(u64, Id)>,
    Vec<NodeId>,
    Columns,
    Vec<u64>,
    Vec<Value>,
    Vec<u64>,
);

/// [`Seqs::record`]: `[text, list]`, each `null` when there is none.
pub(crate) type SeqsRecord = (Option<TextRecord>, Option<ListRecord>);

/// A run-length coded column being written.
#[derive(Default)]
struct RleOut {
    out: Vec<i64>,
    last: Option<i64>,
    count: i64,
}

impl RleOut {
    fn push(&mut self, v: i64) {
        if self.last == Some(v) {
            self.count += 1;
            return;
        }
        self.flush();
        self.last = Some(v);
        self.count = 1;
    }

    fn flush(&mut self) {
        if let Some(v) = self.last.take() {
            self.out.extend([v, self.count]);
        }
    }

    fn finish(mut self) -> Vec<i64> {
        self.flush();
        self.out
    }
}

/// A run-length coded column being read: every count checked, and the total capped.
struct RleIn<'a> {
    col: &'a [i64],
    value: i64,
    left: i64,
}

impl<'a> RleIn<'a> {
    /// The column and the number of values it expands to.
    fn new(col: &'a [i64], which: &str) -> Result<(RleIn<'a>, u64), String> {
        if !col.len().is_multiple_of(2) {
            return Err(format!("the {which} column has an odd length"));
        }
        let mut total = 0u64;
        for pair in col.chunks_exact(2) {
            let n = u64::try_from(pair[1])
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("the {which} column has a count below 1"))?;
            total = total.saturating_add(n);
            if total > SEGMENTS_MAX {
                return Err(format!(
                    "the {which} column describes more than {SEGMENTS_MAX} segments"
                ));
            }
        }
        Ok((
            RleIn {
                col,
                value: 0,
                left: 0,
            },
            total,
        ))
    }

    fn next(&mut self) -> i64 {
        if self.left == 0 {
            // The caller reads exactly the total `new` gave.
            self.value = self.col[0];
            self.left = self.col[1];
            self.col = &self.col[2..];
        }
        self.left -= 1;
        self.value
    }
}

/// The experiences and authors a sequence names, and the columns that name them.
struct Coder {
    exps: Vec<(u64, Id)>,
    authors: Vec<NodeId>,
    refs: Vec<u64>,
}

impl Coder {
    fn new<'a, T: Clone + 'a>(
        segs: impl Iterator<Item = Segment<'a, T>>,
        more: impl Iterator<Item = ElemId>,
    ) -> Coder {
        let mut exps = BTreeSet::new();
        let mut authors = BTreeSet::new();
        let mut add = |e: ElemId| {
            exps.insert((e.dot.depth, e.dot.exp));
        };
        for s in segs {
            authors.insert(s.author());
            for e in [Some(s.id()), s.left(), s.right()].into_iter().flatten() {
                add(e);
            }
        }
        more.for_each(add);
        Coder {
            exps: exps.into_iter().collect(),
            authors: authors.into_iter().collect(),
            refs: Vec::new(),
        }
    }

    fn exp(&self, e: &ElemId) -> usize {
        self.exps
            .binary_search(&(e.dot.depth, e.dot.exp))
            .expect("every experience named is listed")
    }

    fn push_ref(&mut self, e: &ElemId) {
        let x = self.exp(e) as u64;
        self.refs
            .extend([x, u64::from(e.dot.op), u64::from(e.offset)]);
    }

    /// An origin's code: 0 none, 1 `same` (what the segment before gives), else 2 and a ref.
    fn code(&mut self, origin: Option<ElemId>, same: Option<ElemId>) -> i64 {
        match origin {
            None => 0,
            Some(o) if Some(o) == same => 1,
            Some(o) => {
                self.push_ref(&o);
                2
            }
        }
    }

    /// The columns of `seq`, calling `items` with each undeleted segment.
    fn columns<'a, T: Clone + 'a>(
        &mut self,
        seq: &'a Seq<T>,
        mut items: impl FnMut(&Segment<'a, T>),
    ) -> Columns {
        let mut cols: [RleOut; 8] = Default::default();
        let (mut exp, mut op) = (0i64, 0i64);
        let mut last: Option<ElemId> = None;
        let mut right: Option<ElemId> = None;
        for s in seq.segments() {
            let id = s.id();
            let x = self.exp(&id) as i64;
            cols[0].push(x - exp);
            cols[1].push(i64::from(id.dot.op) - op);
            (exp, op) = (x, i64::from(id.dot.op));
            cols[2].push(i64::from(id.offset));
            let a = self
                .authors
                .binary_search(&s.author())
                .expect("every author is listed");
            cols[3].push(a as i64);
            let left = self.code(s.left(), last);
            cols[4].push(left);
            let r = self.code(s.right(), right);
            cols[5].push(r);
            cols[6].push(i64::from(s.count()));
            cols[7].push(i64::from(s.deleted()) | i64::from(s.ops()) << 1);
            if !s.deleted() {
                items(&s);
            }
            last = Some(s.last());
            right = s.right();
        }
        cols.map(RleOut::finish)
    }
}

/// A record being read: its tables and the refs not used yet.
struct Decoder<'a> {
    exps: &'a [(u64, Id)],
    authors: &'a [NodeId],
    refs: &'a [u64],
}

/// One segment read from the columns, its items not yet.
struct Head {
    id: ElemId,
    ops: bool,
    author: NodeId,
    left: Option<ElemId>,
    right: Option<ElemId>,
    len: u32,
    deleted: bool,
}

impl<'a> Decoder<'a> {
    fn new(
        exps: &'a [(u64, Id)],
        authors: &'a [NodeId],
        refs: &'a [u64],
    ) -> Result<Decoder<'a>, String> {
        if !exps.is_sorted_by(|a, b| a < b) || !authors.is_sorted_by(|a, b| a < b) {
            return Err("its experiences or authors are not sorted and distinct".into());
        }
        Ok(Decoder {
            exps,
            authors,
            refs,
        })
    }

    fn elem(&self, x: u64, op: u64, offset: u64) -> Result<ElemId, String> {
        let &(depth, exp) = usize::try_from(x)
            .ok()
            .and_then(|x| self.exps.get(x))
            .ok_or_else(|| format!("experience index {x} is past its table"))?;
        let op = u32::try_from(op).map_err(|_| format!("op index {op} is too large"))?;
        let offset = u32::try_from(offset).map_err(|_| format!("offset {offset} is too large"))?;
        Ok(ElemId {
            dot: Dot { depth, exp, op },
            offset,
        })
    }

    fn next_ref(&mut self) -> Result<ElemId, String> {
        let [x, op, offset] = *self.refs.first_chunk::<3>().ok_or("its refs run out")?;
        self.refs = &self.refs[3..];
        self.elem(x, op, offset)
    }

    /// Every segment's head, in order.
    fn heads(&mut self, cols: &Columns) -> Result<Vec<Head>, String> {
        const NAMES: [&str; 8] = [
            "experience",
            "op",
            "offset",
            "author",
            "left origin",
            "right origin",
            "length",
            "flags",
        ];
        let mut ins = Vec::with_capacity(8);
        let mut n = None;
        for (col, name) in cols.iter().zip(NAMES) {
            let (rle, total) = RleIn::new(col, name)?;
            if n.is_some_and(|n| n != total) {
                return Err(format!("the {name} column has another length"));
            }
            n = Some(total);
            ins.push(rle);
        }
        let n = n.unwrap_or(0);
        let mut out = Vec::new();
        let (mut exp, mut op) = (0i64, 0i64);
        let mut last: Option<ElemId> = None;
        let mut right: Option<ElemId> = None;
        for _ in 0..n {
            let mut v = [0i64; 8];
            for (slot, rle) in v.iter_mut().zip(ins.iter_mut()) {
                *slot = rle.next();
            }
            exp = exp
                .checked_add(v[0])
                .ok_or("an experience index overflows")?;
            op = op.checked_add(v[1]).ok_or("an op index overflows")?;
            let unsigned =
                |v: i64, what: &str| u64::try_from(v).map_err(|_| format!("a negative {what}"));
            let id = self.elem(
                unsigned(exp, "experience index")?,
                unsigned(op, "op index")?,
                unsigned(v[2], "offset")?,
            )?;
            let author = *usize::try_from(v[3])
                .ok()
                .and_then(|a| self.authors.get(a))
                .ok_or("an author index past its table")?;
            let left = match (v[4], id.offset) {
                (0, _) => None,
                (1, 0) => Some(last.ok_or("the first segment's left origin is the one before")?),
                (2, 0) => Some(self.next_ref()?),
                _ => return Err(format!("left origin code {} for this segment", v[4])),
            };
            let r = match v[5] {
                0 => None,
                1 => Some(right.ok_or("a right origin is the one before, which has none")?),
                2 => Some(self.next_ref()?),
                c => return Err(format!("right origin code {c}")),
            };
            let len = u32::try_from(v[6])
                .ok()
                .filter(|l| *l >= 1)
                .ok_or("a segment's length is not 1 to 2^32 - 1")?;
            if !(0..4).contains(&v[7]) {
                return Err(format!("flags {}", v[7]));
            }
            let (deleted, ops) = (v[7] & 1 == 1, v[7] & 2 == 2);
            last = Some(if ops {
                if id.offset != 0 {
                    return Err("a run of ops at an offset".into());
                }
                let op = id.dot.op.checked_add(len - 1);
                ElemId {
                    dot: Dot {
                        op: op.ok_or("a segment's ops overflow")?,
                        ..id.dot
                    },
                    offset: 0,
                }
            } else {
                ElemId {
                    offset: id
                        .offset
                        .checked_add(len - 1)
                        .ok_or("a segment's offsets overflow")?,
                    ..id
                }
            });
            right = r;
            out.push(Head {
                id,
                ops,
                author,
                left,
                right: r,
                len,
                deleted,
            });
        }
        Ok(out)
    }

    fn done(&self) -> Result<(), String> {
        if self.refs.is_empty() {
            Ok(())
        } else {
            Err("it has refs left over".into())
        }
    }
}

/// The parts to build a sequence from: each head with the next `len` items.
fn parts<T>(
    heads: Vec<Head>,
    items: &mut impl Iterator<Item = T>,
) -> Result<Vec<SegmentParts<T>>, String> {
    heads
        .into_iter()
        .map(|h| {
            let items = if h.deleted {
                None
            } else {
                let v: Vec<T> = items.by_ref().take(h.len as usize).collect();
                if v.len() != h.len as usize {
                    return Err("its items run out".to_string());
                }
                Some(v)
            };
            Ok(SegmentParts {
                id: h.id,
                ops: h.ops,
                author: h.author,
                left: h.left,
                right: h.right,
                len: h.len,
                items,
            })
        })
        .collect()
}

impl Seqs {
    /// The canonical record (this module's documentation says how it is laid out).
    pub(crate) fn record(&self) -> SeqsRecord {
        let text = self.text.as_ref().map(|t| {
            let mut coder = Coder::new(t.seq.segments(), std::iter::empty());
            let mut chars = String::new();
            let cols = coder.columns(&t.seq, |s| chars.extend(s.items()));
            (
                t.marks.clone(),
                coder.exps,
                coder.authors,
                cols,
                coder.refs,
                chars,
            )
        });
        let list = self.list.as_ref().map(|l| {
            let moved = l.moves.iter().flat_map(|(e, s)| [*e, *s]);
            let mut coder = Coder::new(l.seq.segments(), moved.clone());
            let mut values = Vec::new();
            let cols = coder.columns(&l.seq, |s| {
                values.extend(s.items().map(|slot| slot.value().clone()))
            });
            let refs = std::mem::take(&mut coder.refs);
            for e in moved {
                coder.push_ref(&e);
            }
            (
                l.marks.clone(),
                coder.exps,
                coder.authors,
                cols,
                refs,
                values,
                coder.refs,
            )
        });
        (text, list)
    }

    /// The sequences a [`Seqs::record`] describes; refused, with what is wrong, if it does
    /// not describe any.
    pub(crate) fn from_record(record: SeqsRecord) -> Result<Seqs, String> {
        let (text, list) = record;
        let text = text
            .map(|(marks, exps, authors, cols, refs, chars)| {
                let mut d = Decoder::new(&exps, &authors, &refs)?;
                let heads = d.heads(&cols)?;
                d.done()?;
                let mut chars = chars.chars();
                let parts = parts(heads, &mut chars)?;
                if chars.next().is_some() {
                    return Err("it has characters left over".to_string());
                }
                let seq = Seq::from_segments(parts).map_err(|e| e.to_string())?;
                Ok(Text { seq, marks })
            })
            .transpose()
            .map_err(|e| format!("the text: {e}"))?;
        let list = list
            .map(|(marks, exps, authors, cols, refs, values, moves)| {
                let mut d = Decoder::new(&exps, &authors, &refs)?;
                let heads = d.heads(&cols)?;
                d.done()?;
                let mut values = values.into_iter().map(Slot::Own);
                let parts = parts(heads, &mut values)?;
                if values.next().is_some() {
                    return Err("it has values left over".to_string());
                }
                let mut seq = Seq::from_segments(parts).map_err(|e| e.to_string())?;
                if !moves.len().is_multiple_of(6) {
                    return Err("its moves are not pairs of elements".to_string());
                }
                let mut m = Decoder::new(&exps, &authors, &moves)?;
                let mut pairs = Vec::with_capacity(moves.len() / 6);
                while !m.refs.is_empty() {
                    pairs.push((m.next_ref()?, m.next_ref()?));
                }
                if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
                    return Err("its moves are not sorted by element".to_string());
                }
                // A moved element's value is in the slot of its greatest move, if that is
                // not deleted.
                for (elem, slot) in &pairs {
                    if let Some(item) = seq.item_mut(*slot) {
                        let v = std::mem::take(item).into_value();
                        *item = Slot::Moved(Box::new((*elem, v)));
                    }
                }
                Ok(List {
                    seq,
                    marks,
                    moves: pairs.into_iter().collect(),
                })
            })
            .transpose()
            .map_err(|e| format!("the list: {e}"))?;
        Ok(Seqs { text, list })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::leaf::Leaf;
    use crate::seq::Origins;

    fn dot(depth: u64, op: u32) -> Dot {
        Dot {
            depth,
            exp: Id::hash(&depth.to_le_bytes()),
            op,
        }
    }

    /// A text typed one character an op, `per` ops an experience, each after the one
    /// before, with every `gap`th character then deleted.
    fn typed(n: u32, per: u32, gap: u32) -> Seqs {
        let mut seq = Seq::new();
        let mut left = None;
        for i in 0..n {
            let d = dot(u64::from(i / per) + 1, i % per);
            let origins = Origins { left, right: None };
            seq.insert(d, NodeId([1; 32]), origins, vec!['a']).unwrap();
            left = Some(ElemId { dot: d, offset: 0 });
            if i % gap == 0 {
                seq.delete(ElemId { dot: d, offset: 0 }, 1).unwrap();
            }
        }
        Seqs {
            text: Some(Text {
                seq,
                marks: vec![dot(1, 0)],
            }),
            list: None,
        }
    }

    fn bytes(r: &SeqsRecord) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(r).unwrap()
    }

    #[test]
    fn typing_costs_bytes_per_experience_not_per_keystroke() {
        let seqs = typed(10_000, 100, 1_000);
        let record = seqs.record();
        let size = bytes(&record).len();
        // 9 990 characters and 100 experiences of 40 bytes each; the columns, a few bytes
        // an experience and a deletion, not the 120 bytes a keystroke the ids would take.
        let chars = seqs.text.as_ref().unwrap().seq.len();
        assert!(size < chars + 100 * 40 + 2_000, "{size} bytes");
        assert_eq!(Seqs::from_record(record).unwrap(), seqs);
    }

    #[test]
    fn a_record_that_describes_no_sequence_is_refused_by_name() {
        let good = typed(50, 10, 4).record();
        let text = |f: &dyn Fn(&mut TextRecord)| {
            let mut r = good.clone();
            f(r.0.as_mut().unwrap());
            Seqs::from_record(r).unwrap_err()
        };
        type Damage<'a> = (&'a dyn Fn(&mut TextRecord), &'a str);
        let cases: [Damage<'_>; 9] = [
            (&|r| r.3[6][1] = 1 << 40, "more than"),
            (&|r| r.3[2].push(0), "odd length"),
            (&|r| r.3[7][1] = 0, "count below 1"),
            (&|r| r.3[3] = vec![0, 3, 1, 1], "another length"),
            (&|r| r.4.extend([0, 0, 0]), "refs left over"),
            (
                &|r| r.3[4] = vec![2, r.3[0].chunks(2).map(|p| p[1]).sum()],
                "refs run out",
            ),
            (&|r| r.5.pop().map(drop).unwrap_or(()), "items run out"),
            (&|r| r.1.reverse(), "not sorted"),
            (&|r| r.3[3][0] = 9, "author index"),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            let e = text(f);
            assert!(e.contains(want), "case {i}: {e}");
        }
        // The first segment has nothing before it.
        let e = text(&|r| r.3[4][0] = 1);
        assert!(e.contains("left origin"), "{e}");
        assert!(Seqs::from_record(good).is_ok());
    }

    proptest! {
        /// Damaged bytes give an error or a sequence, never a panic, and what decodes
        /// encodes again.
        #[test]
        fn damaged_leaves_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let leaf = Leaf {
                seqs: Some(Box::new(typed(40, 6, 5))),
                ..Leaf::default()
            };
            let mut b = leaf.to_bytes();
            for (at, x) in flips {
                let n = b.len();
                b[at % n] ^= x.max(1);
            }
            if let Ok(back) = Leaf::from_bytes(&b) {
                let again = Leaf::from_bytes(&back.to_bytes()).unwrap();
                prop_assert_eq!(again, back);
            }
        }
    }
}
