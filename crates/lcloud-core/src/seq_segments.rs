//! A sequence's canonical form: its segments, which do not depend on how its elements fall
//! into runs and chunks (that depends on the order ops arrived in), so they are what is
//! hashed, stored and compared; and a sequence built back from them.

use std::sync::Arc;

use super::{Chunk, ElemId, Run, Seq, SeqError};
use crate::id::NodeId;

/// A stretch of a list as [`Seq::segments`] gives it.
pub struct Segment<'a, T> {
    runs: Vec<&'a Run<T>>,
    len: u32,
}

impl<'a, T> Segment<'a, T> {
    /// Its first element.
    pub fn id(&self) -> ElemId {
        self.runs[0].id
    }

    /// Who inserted it.
    pub fn author(&self) -> NodeId {
        self.runs[0].author
    }

    /// Whether its elements are of consecutive single-element ops (`(op + k, 0)`), not of
    /// one op (`(op, offset + k)`).
    pub fn ops(&self) -> bool {
        self.runs[0].ops
    }

    /// Its last element.
    pub fn last(&self) -> ElemId {
        self.runs[0].elem(self.len - 1)
    }

    /// The first element's left origin if it begins its op's run (`id().offset` is 0);
    /// `None` otherwise (the left origin is then the element before, of the same op).
    pub fn left(&self) -> Option<ElemId> {
        if self.runs[0].id.offset == 0 {
            self.runs[0].left
        } else {
            None
        }
    }

    /// The op's right origin.
    pub fn right(&self) -> Option<ElemId> {
        self.runs[0].right
    }

    /// How many elements.
    pub fn count(&self) -> u32 {
        self.len
    }

    /// Whether its elements are deleted (and so hold no items).
    pub fn deleted(&self) -> bool {
        self.runs[0].deleted
    }

    /// Its items (none if deleted).
    pub fn items(&self) -> impl Iterator<Item = &'a T> + '_ {
        self.runs.iter().flat_map(|r| r.items.iter())
    }
}

/// A segment to build a list from ([`Seq::from_segments`]).
pub struct SegmentParts<T> {
    /// Its first element.
    pub id: ElemId,
    /// Who inserted it.
    pub author: NodeId,
    /// Whether its elements are of consecutive single-element ops ([`Segment::ops`]).
    pub ops: bool,
    /// The first element's left origin (read only when `id.offset` is 0).
    pub left: Option<ElemId>,
    /// The op's right origin.
    pub right: Option<ElemId>,
    /// How many elements.
    pub len: u32,
    /// The items, or `None` if the elements are deleted.
    pub items: Option<Vec<T>>,
}

impl<T: Clone + PartialEq> PartialEq for Seq<T> {
    /// Equal elements, ids and origins in the same order, tombstones included: equal
    /// [`Seq::segments`] (how elements fall into runs and chunks is not compared).
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.segments(), other.segments());
        self.visible == other.visible
            && std::iter::from_fn(|| match (a.next(), b.next()) {
                (None, None) => None,
                (Some(a), Some(b)) => Some(
                    (
                        a.id(),
                        a.ops(),
                        a.author(),
                        a.left(),
                        a.right(),
                        a.count(),
                        a.deleted(),
                    ) == (
                        b.id(),
                        b.ops(),
                        b.author(),
                        b.left(),
                        b.right(),
                        b.count(),
                        b.deleted(),
                    ) && a.items().eq(b.items()),
                ),
                _ => Some(false),
            })
            .all(|same| same)
    }
}

impl<T: Clone> Seq<T> {
    /// The list as its segments: each the longest stretch of consecutive elements, all
    /// deleted or none, of one op, or of consecutive single-element ops of one experience
    /// each with the element before as its left origin and the same right origin (typing).
    /// Which elements those are does not depend on how they fall into runs and chunks
    /// (which depends on the order ops arrived in): equal lists give equal segments, so the
    /// segments are what is hashed and stored.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, T>> + '_ {
        let mut runs = self.runs().peekable();
        std::iter::from_fn(move || {
            let first = runs.next()?;
            let mut seg = Segment {
                runs: vec![first],
                len: first.len,
            };
            while let Some(next) = runs.peek() {
                let joins = if first.ops {
                    next.ops
                        && next.id == first.elem(seg.len)
                        && next.left == Some(first.elem(seg.len - 1))
                        && next.right == first.right
                        && next.author == first.author
                } else {
                    !next.ops && first.id.is(next.id, seg.len)
                };
                if next.deleted == first.deleted && joins {
                    seg.len += next.len;
                    seg.runs.push(next);
                    runs.next();
                } else {
                    break;
                }
            }
            Some(seg)
        })
    }

    /// A list made of `segments` in order, as [`Seq::segments`] gave them. Refused if one
    /// is empty, holds a number of items other than its length, names elements already
    /// named, or has an origin that is not an element of the list.
    pub fn from_segments(
        segments: impl IntoIterator<Item = SegmentParts<T>>,
    ) -> Result<Seq<T>, SeqError> {
        let mut seq = Seq::new();
        let fill = seq.runs_max / 2;
        let mut chunk: Vec<Run<T>> = Vec::new();
        let flush = |seq: &mut Seq<T>, runs: &mut Vec<Run<T>>| {
            if runs.is_empty() {
                return;
            }
            let key = seq.chunks.len() as u32;
            let visible = runs.iter().map(Run::visible).sum();
            seq.visible += visible;
            for r in runs.iter() {
                seq.at.insert(r.id, key);
            }
            seq.chunks.push((
                key,
                Arc::new(Chunk {
                    runs: std::mem::take(runs),
                    visible,
                }),
            ));
            seq.slot.push(key);
        };
        for s in segments {
            let deleted = s.items.is_none();
            let items = s.items.unwrap_or_default();
            let end = if s.ops {
                // A run of ops names each op's one element.
                (s.id.offset == 0)
                    .then(|| s.id.dot.op.checked_add(s.len))
                    .flatten()
            } else {
                s.id.offset.checked_add(s.len)
            };
            if s.len == 0 || end.is_none() || (!deleted && items.len() != s.len as usize) {
                return Err(SeqError::Length);
            }
            chunk.push(Run {
                id: s.id,
                ops: s.ops,
                author: s.author,
                left: match s.id.offset {
                    0 => s.left,
                    k => Some(ElemId {
                        offset: k - 1,
                        ..s.id
                    }),
                },
                right: s.right,
                len: s.len,
                items,
                deleted,
            });
            if chunk.len() >= fill {
                flush(&mut seq, &mut chunk);
            }
        }
        flush(&mut seq, &mut chunk);
        // No element twice: sorted by first element, each run's last element is before the
        // next run's first (ids order by experience, op, offset, so a run's elements lie
        // between its first and its last).
        let mut spans: Vec<(ElemId, ElemId)> = seq.runs().map(|r| (r.id, r.last())).collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].1 >= w[1].0 {
                return Err(SeqError::Duplicate(w[1].0.dot));
            }
        }
        // Every origin is an element of the list (the fold places runs by their origins).
        for r in seq.runs() {
            for o in [r.left, r.right].into_iter().flatten() {
                if seq.find(o).is_none() {
                    return Err(SeqError::Unknown(o));
                }
            }
        }
        seq.sums_rebuild();
        Ok(seq)
    }
}
