//! Lists and text: a sequence CRDT, FugueMax in the list form Yjs integrates with (the
//! "YjsMod" rule of Gentle's reference implementation, which Weidner and Kleppmann show to
//! order elements exactly as FugueMax does), so concurrent runs typed at one place never
//! interleave, forwards or backwards (maximal non-interleaving, `tests/seq.rs`).
//!
//! Every element is named by an [`ElemId`]: the dot of the op that inserted it and its offset
//! in that op's run. An insert names its *origins*, the elements left and right of where it
//! was typed (the left one may be deleted; none: the list's start or end), and every replica
//! places it among the elements already between those origins by the same rule, so the order
//! depends on the set of inserts, not on the order they arrive in (any order that delivers an
//! insert after its origins, as the fold's topological order does). A delete marks elements
//! deleted; they stay as tombstones, which later inserts may name as origins.
//!
//! The elements are kept in runs (an op's elements, or the elements of consecutive
//! single-element ops of one experience typed one after the other, split where another op
//! names one inside), the runs in chunks of at most `RUNS_MAX`, shared between clones (a checkpoint copies
//! the chunk list, not the elements), with an index from each run's first id to its chunk and
//! partial sums of the chunks' lengths.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::dot::Dot;
use crate::id::NodeId;

#[path = "seq_run.rs"]
mod run;
#[path = "seq_segments.rs"]
mod segments;
use run::{Chunk, Run};
pub use segments::{Segment, SegmentParts};

/// One element of a list or text: the op that inserted it, and its offset in that op's run.
/// Encoded as `[depth, experience id, op, offset]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElemId {
    /// The inserting op.
    pub dot: Dot,
    /// Which of its elements (0: the first).
    pub offset: u32,
}

impl Serialize for ElemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.dot.depth, &self.dot.exp, self.dot.op, self.offset).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ElemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (depth, exp, op, offset) = <(u64, crate::id::Id, u32, u32)>::deserialize(d)?;
        Ok(ElemId {
            dot: Dot { depth, exp, op },
            offset,
        })
    }
}

impl ElemId {
    fn plus(self, k: u32) -> ElemId {
        ElemId {
            offset: self.offset + k,
            ..self
        }
    }

    /// Whether `other` is an element of the same op's run, `k` after this one.
    fn is(self, other: ElemId, k: u32) -> bool {
        self.dot == other.dot && self.offset.checked_add(k) == Some(other.offset)
    }
}

/// Where an insert goes: between these two elements as the inserting replica saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origins {
    /// The element just left of the insert (deleted or not); `None`: the start.
    pub left: Option<ElemId>,
    /// The element just right of it, when typed; `None`: the end.
    pub right: Option<ElemId>,
}

/// Most runs in a chunk; a chunk past it splits in two.
const RUNS_MAX: usize = 64;

/// An element's place in the list as it is now: chunk, run, offset in the run. Places order
/// as the elements do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    chunk: usize,
    run: usize,
    offset: u32,
}

/// The place past the last element.
const END: Place = Place {
    chunk: usize::MAX,
    run: 0,
    offset: 0,
};

/// Why an insert or delete was not applied. Every replica refuses the same ops: the fold
/// applies each op after everything it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeqError {
    /// An origin or deleted element is not in the list.
    #[error("no element {0:?} in the list")]
    Unknown(ElemId),
    /// The op's own elements are already there.
    #[error("elements of {0:?} are already in the list")]
    Duplicate(Dot),
    /// An insert of nothing, or a run too long to name.
    #[error("an insert must hold 1 to 2^32 - 1 elements")]
    Length,
    /// The right origin is not right of the left one. Two elements keep their order once
    /// both are in a list, so every replica refuses such an insert alike.
    #[error("the right origin {right:?} is not after the left origin {left:?}")]
    Origins {
        /// The left origin.
        left: ElemId,
        /// The right origin.
        right: ElemId,
    },
    /// An element the op names is not in its causal past (or, named as an element of the
    /// op's own experience, not inserted by an earlier op of it).
    #[error("element {0:?} is not in the causal past of the op naming it")]
    Unseen(ElemId),
    /// An index past the end.
    #[error("index {index} is past the end of the list ({len} elements)")]
    Index {
        /// What was asked.
        index: usize,
        /// How many elements there are.
        len: usize,
    },
}

/// A list of `T` (text: `char`) that merges concurrent inserts and deletes.
#[derive(Clone, Debug)]
pub struct Seq<T> {
    /// Chunks in list order, each with its id (ids are never reused).
    chunks: Vec<(u32, Arc<Chunk<T>>)>,
    /// Each chunk id's place in `chunks`.
    slot: Vec<u32>,
    /// Each run's first element → its chunk's id.
    at: OrdMap<ElemId, u32>,
    visible: usize,
    /// Partial sums of the chunks' visible elements (a Fenwick tree, 1-based): the chunk
    /// holding an index is found in log time.
    sums: Vec<usize>,
    /// Most runs in a chunk (`Seq::tuned`).
    runs_max: usize,
}

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Seq {
            chunks: Vec::new(),
            slot: Vec::new(),
            at: OrdMap::new(),
            visible: 0,
            sums: vec![0],
            runs_max: RUNS_MAX,
        }
    }
}

impl<T: Clone> Seq<T> {
    /// An empty list.
    pub fn new() -> Seq<T> {
        Seq::default()
    }

    /// An empty list whose chunks hold at most `runs_max` runs (at least 2): a small value
    /// makes chunks split in small tests. The elements and their order are the same whatever
    /// the value.
    pub fn tuned(runs_max: usize) -> Seq<T> {
        Seq {
            runs_max: runs_max.max(2),
            ..Seq::default()
        }
    }

    /// How many elements are not deleted.
    pub fn len(&self) -> usize {
        self.visible
    }

    /// Whether no element was ever inserted (deleted ones count).
    pub fn is_bare(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether every element is deleted (or there never was one).
    pub fn is_empty(&self) -> bool {
        self.visible == 0
    }

    /// The elements not deleted, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.runs().flat_map(|r| r.items.iter())
    }

    fn runs(&self) -> impl Iterator<Item = &Run<T>> + '_ {
        self.chunks.iter().flat_map(|(_, c)| c.runs.iter())
    }

    /// Where an insert at `index` (of the elements not deleted) goes: after the element
    /// before it (deleted ones included), before the next element not deleted.
    pub fn origins_at(&self, index: usize) -> Result<Origins, SeqError> {
        if index > self.visible {
            return Err(SeqError::Index {
                index,
                len: self.visible,
            });
        }
        let last_of = |c: usize| {
            let run = self.chunks[c].1.runs.last();
            run.map(Run::last)
        };
        if index == self.visible {
            let left = self.chunks.len().checked_sub(1).and_then(last_of);
            return Ok(Origins { left, right: None });
        }
        let (c, before) = self.chunk_of(index);
        let mut left = c.checked_sub(1).and_then(last_of);
        let mut skip = index - before;
        for run in &self.chunks[c].1.runs {
            if skip == 0 && !run.deleted {
                return Ok(Origins {
                    left,
                    right: Some(run.id),
                });
            }
            if skip < run.visible() {
                let k = skip as u32;
                return Ok(Origins {
                    left: Some(run.elem(k - 1)),
                    right: Some(run.elem(k)),
                });
            }
            skip -= run.visible();
            left = Some(run.last());
        }
        unreachable!("the chunk holds the index")
    }

    /// The chunk holding the element at `index` (of those not deleted; `index` < `len()`),
    /// and how many such elements the chunks before it hold.
    fn chunk_of(&self, index: usize) -> (usize, usize) {
        let n = self.chunks.len();
        let mut pos = 0;
        let mut before = 0;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && before + self.sums[next] <= index {
                pos = next;
                before += self.sums[next];
            }
            step /= 2;
        }
        (pos, before)
    }

    /// Adds `delta` to chunk `c`'s visible elements in the partial sums.
    fn sums_add(&mut self, c: usize, delta: isize) {
        let mut i = c + 1;
        while i < self.sums.len() {
            self.sums[i] = self.sums[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Builds the partial sums again (after a chunk was added).
    fn sums_rebuild(&mut self) {
        let n = self.chunks.len();
        let mut sums = vec![0; n + 1];
        for (c, (_, chunk)) in self.chunks.iter().enumerate() {
            sums[c + 1] += chunk.visible;
            let parent = (c + 1) + ((c + 1) & (c + 1).wrapping_neg());
            if parent <= n {
                sums[parent] += sums[c + 1];
            }
        }
        self.sums = sums;
    }

    /// The ids of the `count` elements from `index` on (of those not deleted), as runs of
    /// consecutive ids: what a delete of that range names.
    pub fn ids_in(&self, index: usize, count: usize) -> Result<Vec<(ElemId, u32)>, SeqError> {
        let end = index.checked_add(count).filter(|e| *e <= self.visible);
        let Some(end) = end else {
            return Err(SeqError::Index {
                index: index.saturating_add(count),
                len: self.visible,
            });
        };
        let mut out: Vec<(ElemId, u32)> = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        let (first, mut at) = self.chunk_of(index);
        for (_, chunk) in &self.chunks[first..] {
            for run in &chunk.runs {
                let (from, to) = (at.max(index), (at + run.visible()).min(end));
                if from < to {
                    // A range names elements of one op: a run of ops gives one each.
                    let (step, pieces) = if run.ops {
                        (1, to - from)
                    } else {
                        (to - from, 1)
                    };
                    for p in 0..pieces {
                        let id = run.elem((from - at + p) as u32);
                        let n = step as u32;
                        match out.last_mut() {
                            Some((last, len)) if last.is(id, *len) => *len += n,
                            _ => out.push((id, n)),
                        }
                    }
                }
                at += run.visible();
                if at >= end {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Inserts `items` as the run of op `dot`, written by `author`, between `origins`, in the
    /// place every replica gives it.
    pub fn insert(
        &mut self,
        dot: Dot,
        author: NodeId,
        origins: Origins,
        items: Vec<T>,
    ) -> Result<(), SeqError> {
        let len = u32::try_from(items.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or(SeqError::Length)?;
        let id = ElemId { dot, offset: 0 };
        if self.find(id).is_some() {
            return Err(SeqError::Duplicate(dot));
        }
        let place = |o: Option<ElemId>| {
            o.map(|o| self.try_place(o).ok_or(SeqError::Unknown(o)))
                .transpose()
        };
        let (mut left, mut right) = (place(origins.left)?, place(origins.right)?);
        if let (Some(l), Some(r)) = (left, right)
            && r <= l
        {
            return Err(SeqError::Origins {
                left: origins.left.expect("placed"),
                right: origins.right.expect("placed"),
            });
        }
        // Origins are run boundaries from here on: the left one ends a run, the right one
        // starts one. Typing after what was just typed splits nothing, and looks nothing up
        // again.
        let ends_run = |p: Place| p.offset + 1 == self.chunks[p.chunk].1.runs[p.run].len;
        let split_left = left.is_some_and(|p| !ends_run(p));
        let split_right = right.is_some_and(|p| p.offset > 0);
        if split_left || split_right {
            if let (true, Some(l)) = (split_left, origins.left) {
                self.split_after(l);
            }
            if let (true, Some(r)) = (split_right, origins.right) {
                self.split_at(r);
            }
            left = origins.left.map(|l| self.place(l));
            right = origins.right.map(|r| self.place(r));
        }
        let right = right.unwrap_or(END);
        // Scan the runs between the origins (YjsMod): skip those whose left origin is right
        // of ours, stop at one whose left origin is left of ours; among those with our left
        // origin, go past one whose right origin is further right (tentatively, while
        // scanning), or, with our right origin too, whose author (then id) is smaller.
        let mut cursor = self.next_run(left);
        let mut dest = cursor;
        let mut scanning = false;
        loop {
            if !scanning {
                dest = cursor;
            }
            if cursor == END || cursor == right {
                break;
            }
            let other = &self.chunks[cursor.chunk].1.runs[cursor.run];
            let oleft = other.left.map(|l| self.place(l));
            let oright = other.right.map_or(END, |r| self.place(r));
            if oleft < left {
                break;
            }
            if oleft == left {
                if oright < right {
                    scanning = true;
                } else if oright == right {
                    if (author, id) < (other.author, other.id) {
                        break;
                    }
                    scanning = false;
                } else {
                    scanning = false;
                }
            }
            cursor = self.next_run(Some(cursor));
        }
        // Typing: the next single-element op of the experience whose run ends at the left
        // origin, put right after it with the run's right origin, extends the run.
        if let (1, Some(l), Some(lp)) = (len, origins.left, left)
            && dest == self.next_run(Some(lp))
        {
            let run = &self.chunks[lp.chunk].1.runs[lp.run];
            if run.ops
                && !run.deleted
                && run.right == origins.right
                && run.author == author
                && l.dot.depth == dot.depth
                && l.dot.exp == dot.exp
                && l.dot.op.checked_add(1) == Some(dot.op)
            {
                let chunk = Arc::make_mut(&mut self.chunks[lp.chunk].1);
                let run = &mut chunk.runs[lp.run];
                run.items.extend(items);
                run.len += 1;
                chunk.visible += 1;
                self.visible += 1;
                self.sums_add(lp.chunk, 1);
                return Ok(());
            }
        }
        let run = Run {
            id,
            ops: len == 1,
            author,
            left: origins.left,
            right: origins.right,
            len,
            items,
            deleted: false,
        };
        self.put(dest, run);
        Ok(())
    }

    /// Marks `len` elements from `id` on deleted (those already deleted stay so).
    pub fn delete(&mut self, id: ElemId, len: u32) -> Result<(), SeqError> {
        self.check_range(id, len)?;
        self.mark_deleted(id, len);
        Ok(())
    }

    /// Marks each range deleted, as [`Seq::delete`] does, once every range is known to be
    /// here: a refused delete changes nothing.
    pub fn delete_ranges(&mut self, ranges: &[(ElemId, u32)]) -> Result<(), SeqError> {
        for (id, len) in ranges {
            self.check_range(*id, *len)?;
        }
        for (id, len) in ranges {
            self.mark_deleted(*id, *len);
        }
        Ok(())
    }

    /// Marks the `len` elements from `id` on deleted; [`Seq::check_range`] has found them.
    fn mark_deleted(&mut self, id: ElemId, len: u32) {
        self.split_at(id);
        self.split_after(id.plus(len - 1));
        let mut k = 0;
        while k < len {
            let here = id.plus(k);
            let place = self.place(here);
            let chunk = Arc::make_mut(&mut self.chunks[place.chunk].1);
            let run = &mut chunk.runs[place.run];
            let len = run.len;
            if !run.deleted {
                run.deleted = true;
                run.items = Vec::new();
                chunk.visible -= len as usize;
                self.visible -= len as usize;
                self.sums_add(place.chunk, -(len as isize));
            }
            k += len;
        }
    }

    /// Whether all `len` elements from `id` on are here (deleted or not): a run of
    /// consecutive ids of one op. The error names the first one missing.
    pub fn check_range(&self, id: ElemId, len: u32) -> Result<(), SeqError> {
        if len == 0 || id.offset.checked_add(len).is_none() {
            return Err(SeqError::Length);
        }
        let mut k = 0;
        while k < len {
            let here = id.plus(k);
            let Some((key, start)) = self.find(here) else {
                return Err(SeqError::Unknown(here));
            };
            let c = self.chunk_index(key);
            let run = self.chunks[c].1.runs.iter().find(|r| r.id == start);
            // A range names elements of one op: in a run of ops, only this one.
            k += match run {
                Some(r) if r.ops => 1,
                Some(r) => r.len - r.index_of(here).unwrap_or(r.len),
                None => return Err(SeqError::Unknown(here)),
            };
        }
        Ok(())
    }

    /// Whether element `id` is here (deleted or not).
    pub fn contains(&self, id: ElemId) -> bool {
        self.find(id).is_some()
    }

    /// Element `id` if it is here and not deleted.
    pub fn item(&self, id: ElemId) -> Option<&T> {
        let (key, start) = self.find(id)?;
        let chunk = &self.chunks[self.chunk_index(key)].1;
        let run = chunk.runs.iter().find(|r| r.id == start)?;
        run.items.get(run.index_of(id)? as usize)
    }

    /// Element `id`, to change, if it is here and not deleted.
    pub fn item_mut(&mut self, id: ElemId) -> Option<&mut T> {
        let (key, start) = self.find(id)?;
        let c = self.chunk_index(key);
        let chunk = Arc::make_mut(&mut self.chunks[c].1);
        let run = chunk.runs.iter_mut().find(|r| r.id == start)?;
        let k = run.index_of(id)?;
        run.items.get_mut(k as usize)
    }

    /// The element at `index` (of those not deleted) and its id.
    pub fn get(&self, index: usize) -> Option<(ElemId, &T)> {
        if index >= self.visible {
            return None;
        }
        let (c, before) = self.chunk_of(index);
        let mut skip = index - before;
        for run in &self.chunks[c].1.runs {
            if skip < run.visible() {
                return Some((run.elem(skip as u32), &run.items[skip]));
            }
            skip -= run.visible();
        }
        None
    }

    /// The elements not deleted with their ids, in order.
    pub fn iter_ids(&self) -> impl Iterator<Item = (ElemId, &T)> + '_ {
        self.runs().flat_map(|r| {
            r.items
                .iter()
                .enumerate()
                .map(|(k, t)| (r.elem(k as u32), t))
        })
    }

    /// Marks deleted every element not yet deleted whose op's dot `pick` picks; returns how
    /// many.
    pub fn delete_where(&mut self, pick: impl Fn(&Dot) -> bool) -> usize {
        let doomed: Vec<(ElemId, u32)> = self
            .runs()
            .filter(|r| !r.deleted)
            .flat_map(|r| {
                // A run of ops: each element is an op of its own.
                let each = if r.ops { r.len } else { 1 };
                let len = if r.ops { 1 } else { r.len };
                (0..each).map(move |k| (r.elem(k), len))
            })
            .filter(|(id, _)| pick(&id.dot))
            .collect();
        let mut n = 0;
        for (id, len) in doomed {
            self.mark_deleted(id, len);
            n += len as usize;
        }
        n
    }

    /// Whether any element not deleted has a dot `pick` picks.
    pub fn any_visible(&self, pick: impl Fn(&Dot) -> bool) -> bool {
        self.runs().any(|r| {
            !r.deleted
                && if r.ops {
                    (0..r.len).any(|k| pick(&r.elem(k).dot))
                } else {
                    pick(&r.id.dot)
                }
        })
    }

    /// The chunk key and first id of the run holding `id`.
    fn find(&self, id: ElemId) -> Option<(u32, ElemId)> {
        let (start, key) = self.at.get_prev(&id)?;
        if start.dot.exp != id.dot.exp {
            return None;
        }
        let chunk = &self.chunks[self.chunk_index(*key)].1;
        let run = chunk.runs.iter().find(|r| r.id == *start)?;
        run.index_of(id).map(|_| (*key, *start))
    }

    fn chunk_index(&self, chunk: u32) -> usize {
        self.slot[chunk as usize] as usize
    }

    /// The place of element `id`, which is there.
    fn place(&self, id: ElemId) -> Place {
        self.try_place(id).expect("a known element")
    }

    /// The place of element `id`, if it is there.
    fn try_place(&self, id: ElemId) -> Option<Place> {
        let (start, key) = self.at.get_prev(&id)?;
        if start.dot.exp != id.dot.exp {
            return None;
        }
        let chunk = self.chunk_index(*key);
        let runs = &self.chunks[chunk].1.runs;
        let run = runs.iter().position(|r| r.id == *start)?;
        Some(Place {
            chunk,
            run,
            offset: runs[run].index_of(id)?,
        })
    }

    /// The first run after the run holding `place` (`None`: after the start), or `END`.
    fn next_run(&self, place: Option<Place>) -> Place {
        let (chunk, run) = match place {
            None => (0, 0),
            Some(p) => (p.chunk, p.run + 1),
        };
        let mut c = chunk;
        let mut r = run;
        while c < self.chunks.len() {
            if r < self.chunks[c].1.runs.len() {
                return Place {
                    chunk: c,
                    run: r,
                    offset: 0,
                };
            }
            c += 1;
            r = 0;
        }
        END
    }

    /// Makes element `id` (if it is there) the first of its run.
    fn split_at(&mut self, id: ElemId) {
        let Some((key, start)) = self.find(id) else {
            return;
        };
        if start == id {
            return;
        }
        let c = self.chunk_index(key);
        let chunk = Arc::make_mut(&mut self.chunks[c].1);
        let r = chunk
            .runs
            .iter()
            .position(|run| run.id == start)
            .expect("a run the index names");
        let k = chunk.runs[r].index_of(id).expect("the run holds it");
        let tail = chunk.runs[r].split(k);
        chunk.runs.insert(r + 1, tail);
        self.at.insert(id, key);
        self.balance(c);
    }

    /// Makes the element after `id` in its run (if `id` is there and not its run's last)
    /// the first of its run.
    fn split_after(&mut self, id: ElemId) {
        let Some((key, start)) = self.find(id) else {
            return;
        };
        let chunk = &self.chunks[self.chunk_index(key)].1;
        let next = chunk.runs.iter().find(|r| r.id == start).and_then(|r| {
            r.index_of(id)
                .filter(|k| k + 1 < r.len)
                .map(|k| r.elem(k + 1))
        });
        if let Some(next) = next {
            self.split_at(next);
        }
    }

    /// Puts `run` at `dest`: before the run there, or last.
    fn put(&mut self, dest: Place, run: Run<T>) {
        let visible = run.visible();
        self.visible += visible;
        let id = run.id;
        if self.chunks.is_empty() {
            self.chunks.push((
                0,
                Arc::new(Chunk {
                    runs: vec![run],
                    visible,
                }),
            ));
            self.slot = vec![0];
            self.at.insert(id, 0);
            self.sums_rebuild();
            return;
        }
        let (c, r) = if dest == END {
            let c = self.chunks.len() - 1;
            (c, self.chunks[c].1.runs.len())
        } else {
            (dest.chunk, dest.run)
        };
        let key = self.chunks[c].0;
        let chunk = Arc::make_mut(&mut self.chunks[c].1);
        chunk.runs.insert(r, run);
        chunk.visible += visible;
        self.at.insert(id, key);
        self.sums_add(c, visible as isize);
        self.balance(c);
    }

    /// Splits chunk `c` in two when it holds more than `runs_max` runs.
    fn balance(&mut self, c: usize) {
        if self.chunks[c].1.runs.len() <= self.runs_max {
            return;
        }
        let new_chunk = u32::try_from(self.slot.len()).expect("fewer than 2^32 chunks");
        let chunk = Arc::make_mut(&mut self.chunks[c].1);
        let half = chunk.runs.len() / 2;
        let tail: Vec<Run<T>> = chunk.runs.split_off(half);
        let moved: usize = tail.iter().map(Run::visible).sum();
        chunk.visible -= moved;
        for run in &tail {
            self.at.insert(run.id, new_chunk);
        }
        self.chunks.insert(
            c + 1,
            (
                new_chunk,
                Arc::new(Chunk {
                    runs: tail,
                    visible: moved,
                }),
            ),
        );
        self.slot.push(0);
        for (i, (id, _)) in self.chunks.iter().enumerate().skip(c + 1) {
            self.slot[*id as usize] = i as u32;
        }
        self.sums_rebuild();
    }
}
