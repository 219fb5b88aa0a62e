//! A sequence's runs: stretches of consecutive elements kept together, and the chunks that
//! hold them (`seq.rs` keeps the chunks in order and indexes them).

use super::ElemId;
use crate::dot::Dot;
use crate::id::NodeId;

/// Consecutive elements in the list's order: of one op's run (`ops` false), or (`ops`
/// true) of consecutive ops of one experience that each inserted one element, each after
/// the one before and with the same right origin: what typing makes, so an experience's
/// keystrokes take one run, not one each.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Run<T> {
    pub(super) id: ElemId,
    /// Whether the elements are of consecutive single-element ops (`(op + k, 0)`), not of
    /// one op (`(op, offset + k)`).
    pub(super) ops: bool,
    /// Who inserted it: of two inserts between the same origins, the smaller author's
    /// goes first (then the smaller id), as Yjs and diamond-types order by client.
    pub(super) author: NodeId,
    /// The first element's left origin: the op's, or the element before it in the op's run
    /// for a run split off another.
    pub(super) left: Option<ElemId>,
    /// The op's right origin (every element of the run has it).
    pub(super) right: Option<ElemId>,
    pub(super) len: u32,
    /// The elements; empty once deleted.
    pub(super) items: Vec<T>,
    pub(super) deleted: bool,
}

impl<T> Run<T> {
    pub(super) fn visible(&self) -> usize {
        if self.deleted { 0 } else { self.len as usize }
    }

    /// Its `k`th element.
    pub(super) fn elem(&self, k: u32) -> ElemId {
        if self.ops {
            ElemId {
                dot: Dot {
                    op: self.id.dot.op + k,
                    ..self.id.dot
                },
                offset: 0,
            }
        } else {
            self.id.plus(k)
        }
    }

    /// Its last element.
    pub(super) fn last(&self) -> ElemId {
        self.elem(self.len - 1)
    }

    /// Where element `id` is in it, if it is.
    pub(super) fn index_of(&self, id: ElemId) -> Option<u32> {
        let (start, at) = if self.ops {
            let same = id.offset == 0
                && id.dot.depth == self.id.dot.depth
                && id.dot.exp == self.id.dot.exp;
            (same.then_some(self.id.dot.op), id.dot.op)
        } else {
            ((id.dot == self.id.dot).then_some(self.id.offset), id.offset)
        };
        let k = at.checked_sub(start?)?;
        (k < self.len).then_some(k)
    }
}

impl<T: Clone> Run<T> {
    /// Splits off the elements from `k` on (0 < k < len).
    pub(super) fn split(&mut self, k: u32) -> Run<T> {
        let items = if self.deleted {
            Vec::new()
        } else {
            self.items.split_off(k as usize)
        };
        let tail = Run {
            id: self.elem(k),
            ops: self.ops,
            author: self.author,
            left: Some(self.elem(k - 1)),
            right: self.right,
            len: self.len - k,
            items,
            deleted: self.deleted,
        };
        self.len = k;
        tail
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Chunk<T> {
    pub(super) runs: Vec<Run<T>>,
    pub(super) visible: usize,
}
