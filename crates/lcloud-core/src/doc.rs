//! The built-in JSON document CRDT: registers (`set`/`del`), PN-counters (`incr`) and add-wins
//! OR-sets (`add`/`remove`), nested by path.
//!
//! Every element is tagged with the [`Dot`] of the op that wrote it. A removing op (`set`,
//! `del`, `remove`) removes exactly the elements under its scope that it had *observed*: those
//! whose experience is in its causal past (or earlier in the same experience). Concurrent
//! elements survive (add-wins, update-wins). Because a removal only ever touches elements in
//! its own past, the state after applying a set of experiences is the same for every
//! topological order: the document morphism is commutative and ops apply on arrival.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::Serialize;

use crate::codec::ByteRef;
use crate::id::{Id, NodeId};
use crate::op::{Op, Path};
use crate::seq::SeqError;
use crate::seq_doc::{Seqs, SeqsRecord};
use crate::value::Value;

/// Names one op: the experience's canonical sort key `(depth, id)` and the op's index. Dots
/// order exactly as the canonical order of the ops they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Causal depth of the experience.
    pub depth: u64,
    /// The experience id.
    pub exp: Id,
    /// Index of the op within the experience.
    pub op: u32,
}

impl Serialize for Dot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.depth, &self.exp, self.op).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Dot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (depth, exp, op) = <(u64, Id, u32)>::deserialize(d)?;
        Ok(Dot { depth, exp, op })
    }
}

/// Every element was observed by every op of another experience: true for an experience
/// whose causal past is everything folded so far (a local write that depends on all heads).
#[derive(Clone, Copy, Debug, Default)]
pub struct ObservesEverything;

impl Observer for ObservesEverything {
    fn observed(&self, elem: &Dot, by: &Dot) -> bool {
        elem.exp != by.exp || elem.op < by.op
    }
}

/// The stored form of a leaf: `[regs, incs, elems]`, canonical DAG-CBOR.
type LeafRecord = (
    Vec<(Dot, Value)>,
    Vec<(Dot, i64)>,
    Vec<(crate::codec::ByteBuf, Vec<Dot>)>,
);

/// Answers "had the op at `by` observed the element written at `elem`?".
pub trait Observer {
    /// True if `elem`'s experience precedes `by`'s, or is the same experience at a lower op.
    fn observed(&self, elem: &Dot, by: &Dot) -> bool;
}

/// Everything at one path.
///
/// Registers are a short sorted vector (usually one entry); increments and set elements,
/// which can grow large, are persistent maps so that a checkpoint never copies them whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leaf {
    /// Surviving register writes, sorted by dot; the last (greatest) is the winner.
    pub regs: Vec<(Dot, Value)>,
    /// Surviving increments.
    pub incs: OrdMap<Dot, i64>,
    /// Cached sum of `incs`.
    pub inc_sum: i128,
    /// Set elements by canonical bytes, with the adds (sorted dots) that keep them alive.
    pub elems: OrdMap<Vec<u8>, Vec<Dot>>,
    /// The text and list here, if any was made (`seq_doc.rs`).
    pub seqs: Option<Box<Seqs>>,
}

impl Leaf {
    /// The canonical bytes of this leaf, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.regs.len() * 64);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Leaf::to_bytes`] to `out`: the canonical DAG-CBOR of `LeafRecord`
    /// (`[regs, incs, elems]`, each dot `[depth, id, op]`), written directly (tested against
    /// serde's encoding), with the sequences' record (`seq_doc.rs`) as a fourth element
    /// when there are any.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use crate::codec::{write_bytes, write_head};
        let dot = |out: &mut Vec<u8>, d: &Dot| {
            out.push(0x83);
            write_head(out, 0, d.depth);
            write_bytes(out, d.exp.as_bytes());
            write_head(out, 0, u64::from(d.op));
        };
        out.push(if self.seqs.is_some() { 0x84 } else { 0x83 });
        write_head(out, 4, self.regs.len() as u64);
        for (d, v) in &self.regs {
            out.push(0x82);
            dot(out, d);
            v.encode_into(out);
        }
        write_head(out, 4, self.incs.len() as u64);
        for (d, n) in self.incs.iter() {
            out.push(0x82);
            dot(out, d);
            Value::Int(*n).encode_into(out);
        }
        write_head(out, 4, self.elems.len() as u64);
        for (k, ds) in self.elems.iter() {
            out.push(0x82);
            write_bytes(out, k);
            write_head(out, 4, ds.len() as u64);
            for d in ds {
                dot(out, d);
            }
        }
        if let Some(seqs) = &self.seqs {
            serde_ipld_dagcbor::to_writer(&mut *out, &seqs.record()).expect("a vector cannot fail");
        }
    }

    /// Decodes [`Leaf::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Leaf, crate::codec::DecodeError> {
        let ((regs, incs, elems), seqs): (LeafRecord, Option<Box<Seqs>>) = match bytes.first() {
            Some(0x84) => {
                let (regs, incs, elems, seqs): (_, _, _, SeqsRecord) =
                    crate::codec::from_canonical_stored(bytes)?;
                let seqs = Seqs::from_record(seqs).map_err(|e| {
                    crate::codec::DecodeError::Shape(format!("a leaf's sequence: {e}"))
                })?;
                ((regs, incs, elems), Some(Box::new(seqs)))
            }
            _ => (crate::codec::from_canonical_stored(bytes)?, None),
        };
        let inc_sum = incs.iter().map(|(_, n)| i128::from(*n)).sum();
        Ok(Leaf {
            regs,
            incs: incs.into_iter().collect(),
            inc_sum,
            elems: elems.into_iter().map(|(k, ds)| (k.0, ds)).collect(),
            seqs,
        })
    }

    /// Whether a settle may merge anything here: more than one counter element, or a set
    /// element (one with several dots; any, so that the answer costs nothing to keep).
    pub fn may_merge(&self) -> bool {
        self.incs.len() > 1 || !self.elems.is_empty()
    }

    /// True if nothing is stored here.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty() && self.incs.is_empty() && self.elems.is_empty() && self.seqs.is_none()
    }

    /// The winning register value (greatest dot in canonical order).
    pub fn winner(&self) -> Option<&Value> {
        self.regs.last().map(|(_, v)| v)
    }

    /// Adds the increment `by` written at `dot`, merged into the element of an earlier
    /// increment of the same experience when one is here and the sum fits in an `i64`: the
    /// merged element is named by the later op. The merge changes nothing anyone can observe:
    /// an op of another experience observes every op of this one or none (the observer asks
    /// whether one experience precedes the other), a later op of this one observes both, and
    /// an op of this one between the two that removed what it observed here would have
    /// removed the earlier element (so it is not here). An experience's increments of one
    /// counter thus keep one element, not one per op (W3: a thousand increments in one
    /// experience were a thousand elements, rewritten into the leaf at every commit).
    pub fn add_increment(&mut self, dot: Dot, by: i64) {
        self.add_increments(std::iter::once((dot, by)));
    }

    /// [`Leaf::add_increment`] of a run of one experience's increments in op order, with one
    /// look-up of the leaf's elements for the run, not one per increment (W3's batches of
    /// 1 000 increments of one counter).
    pub fn add_increments(&mut self, incs: impl IntoIterator<Item = (Dot, i64)>) {
        let mut incs = incs.into_iter();
        let Some((first, by)) = incs.next() else {
            return;
        };
        self.inc_sum += i128::from(by);
        let earlier = self
            .incs
            .range(..first)
            .next_back()
            .filter(|(d, _)| d.depth == first.depth && d.exp == first.exp)
            .and_then(|(d, n)| Some((*d, n.checked_add(by)?)));
        let mut open = match earlier {
            Some((d, sum)) => {
                self.incs.remove(&d);
                (first, sum)
            }
            None => (first, by),
        };
        for (dot, by) in incs {
            debug_assert!(dot.depth == first.depth && dot.exp == first.exp && dot > open.0);
            self.inc_sum += i128::from(by);
            open = match open.1.checked_add(by) {
                Some(sum) => (dot, sum),
                None => {
                    // The sum would overflow: the run so far stays an element of its own.
                    self.incs.insert(open.0, open.1);
                    (dot, by)
                }
            };
        }
        self.incs.insert(open.0, open.1);
    }

    /// Merges the increments of each experience as [`Leaf::add_increment`] would have, in op
    /// order: for leaves written before increments were merged (store format 4 and older),
    /// whose elements are one per op. Applied to a leaf whose increments are already merged,
    /// it may merge further (an `i64` overflow that split an experience's increments), so
    /// it is for old leaves only.
    pub fn merge_increments(&mut self) {
        let incs = std::mem::take(&mut self.incs);
        self.inc_sum = 0;
        for (dot, by) in incs {
            self.add_increment(dot, by);
        }
    }

    /// Merges what a settled checkpoint's cut holds here (`in_cut`, see `settle.rs`): its
    /// increments into one element, named by the greatest of their dots, when their sum fits
    /// an `i64`; each set element's dots into the greatest. Returns whether anything changed.
    /// Merging at one cut and then at a larger one, or the other way round, gives the same.
    pub fn settle(&mut self, in_cut: &dyn Fn(&Dot) -> bool) -> bool {
        let mut changed = false;
        if self.incs.len() > 1 {
            let cut: Vec<(Dot, i64)> = self
                .incs
                .iter()
                .filter(|(d, _)| in_cut(d))
                .map(|(d, n)| (*d, *n))
                .collect();
            let total: i128 = cut.iter().map(|(_, n)| i128::from(*n)).sum();
            if let (Some((last, _)), Ok(total)) = (cut.last(), i64::try_from(total))
                && cut.len() > 1
            {
                for (d, _) in &cut {
                    self.incs.remove(d);
                }
                self.incs.insert(*last, total);
                changed = true;
            }
        }
        let many: Vec<Vec<u8>> = self
            .elems
            .iter()
            .filter(|(_, ds)| ds.len() > 1 && ds.iter().filter(|d| in_cut(d)).nth(1).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for k in many {
            let Some(ds) = self.elems.get(&k) else {
                continue;
            };
            let last = ds.iter().rev().find(|d| in_cut(d)).copied();
            let kept: Vec<Dot> = ds
                .iter()
                .filter(|d| !in_cut(d) || Some(**d) == last)
                .copied()
                .collect();
            self.elems.insert(k, kept);
            changed = true;
        }
        changed
    }

    fn insert_reg(&mut self, dot: Dot, value: Value) {
        match self.regs.binary_search_by(|(d, _)| d.cmp(&dot)) {
            Ok(i) => self.regs[i].1 = value,
            Err(i) => self.regs.insert(i, (dot, value)),
        }
    }

    /// Whether anything here was observed by `by` (so `remove_observed` would change it).
    fn any_observed(&self, by: &Dot, obs: &dyn Observer) -> bool {
        self.regs.iter().any(|(d, _)| obs.observed(d, by))
            || self.incs.keys().any(|d| obs.observed(d, by))
            || self.elems.values().flatten().any(|d| obs.observed(d, by))
            || self.seqs.as_ref().is_some_and(|s| s.any_observed(by, obs))
    }

    fn remove_observed(&mut self, by: &Dot, obs: &dyn Observer) {
        self.regs.retain(|(d, _)| !obs.observed(d, by));
        if let Some(seqs) = &mut self.seqs {
            seqs.remove_observed(by, obs);
        }
        if self.incs.is_empty() && self.elems.is_empty() {
            // A register alone (the usual leaf): nothing else to look through.
            return;
        }
        let incs: Vec<Dot> = self
            .incs
            .keys()
            .filter(|d| obs.observed(d, by))
            .copied()
            .collect();
        for d in incs {
            if let Some(n) = self.incs.remove(&d) {
                self.inc_sum -= i128::from(n);
            }
        }
        let keys: Vec<Vec<u8>> = self.elems.keys().cloned().collect();
        for k in keys {
            remove_elem_observed(&mut self.elems, &k, by, obs);
        }
    }
}

fn remove_elem_observed(
    elems: &mut OrdMap<Vec<u8>, Vec<Dot>>,
    key: &[u8],
    by: &Dot,
    obs: &dyn Observer,
) {
    let Some(dots) = elems.get(key) else { return };
    if !dots.iter().any(|d| obs.observed(d, by)) {
        return;
    }
    let keep: Vec<Dot> = dots
        .iter()
        .filter(|d| !obs.observed(d, by))
        .copied()
        .collect();
    if keep.is_empty() {
        elems.remove(key);
    } else {
        elems.insert(key.to_vec(), keep);
    }
}

/// The document state: path → leaf. Cheap to clone (persistent maps share structure), which
/// is what makes checkpoints cheap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Doc {
    leaves: OrdMap<Arc<Path>, Arc<Leaf>>,
    /// For every path with leaves strictly below it, how many. Most ops write a path with
    /// nothing below, and this answers "anything below?" without a range scan of the leaves
    /// (a `set` cost two lookups of the leaves, a range and a get, instead of one). Derived
    /// from `leaves` alone (so equal leaves give equal counts); kept by [`Doc::add_leaf`] and
    /// [`Doc::drop_leaf`], the only ways a path gains or loses its leaf.
    below: OrdMap<Arc<Path>, u32>,
    /// The paths whose leaves a settle may merge: more than one counter element, or any set
    /// element ([`Leaf::may_merge`]). [`Doc::settle`] visits these, not every leaf (a
    /// document of a million registers has none). Derived from `leaves` alone; kept by
    /// [`Doc::noted`] wherever a leaf changes.
    mergeable: OrdSet<Arc<Path>>,
}

impl Doc {
    /// Applies the ops of experience `exp` at `depth` by `author`, op `i` at dot
    /// `(depth, exp, i)`, as [`Doc::apply`] of each in turn would; a run of increments of one
    /// counter is added at once ([`Leaf::add_increments`]).
    pub fn apply_experience(
        &mut self,
        ops: &[Op],
        depth: u64,
        exp: Id,
        author: NodeId,
        obs: &dyn Observer,
    ) {
        let dot = |i: usize| Dot {
            depth,
            exp,
            op: i as u32,
        };
        let mut i = 0;
        while i < ops.len() {
            let Op::Incr { path, .. } = &ops[i] else {
                self.apply(&ops[i], dot(i), author, obs);
                i += 1;
                continue;
            };
            let run = ops[i..]
                .iter()
                .take_while(|o| matches!(o, Op::Incr { path: p, .. } if p == path))
                .count();
            let incs = ops[i..i + run].iter().enumerate().map(|(j, o)| match o {
                Op::Incr { by, .. } => (dot(i + j), *by),
                _ => unreachable!("the run holds increments only"),
            });
            self.with_leaf(path, |leaf| leaf.add_increments(incs));
            i += run;
        }
    }

    /// Applies one document op at `dot`, written by `author` (a genesis writes its initial
    /// value); other ops are ignored. `obs` says which elements the op observed, and so
    /// removes. A list or text op that names an element not in its causal past, or not there,
    /// changes nothing ([`Doc::apply_seq`] says why).
    pub fn apply(&mut self, op: &Op, dot: Dot, author: NodeId, obs: &dyn Observer) {
        match op {
            Op::Insert { .. } | Op::Delete { .. } | Op::Move { .. } => {
                let _refused = self.apply_seq(op, dot, author, obs);
            }
            Op::Set { path, value } => {
                self.remove_observed_below(path, &dot, obs);
                match value {
                    Value::Map(_) => {
                        self.with_leaf(path, |leaf| leaf.remove_observed(&dot, obs));
                        self.write(path, value, dot);
                    }
                    scalar => self.with_leaf(path, |leaf| {
                        leaf.remove_observed(&dot, obs);
                        leaf.insert_reg(dot, scalar.clone());
                    }),
                }
            }
            Op::Del { path } => self.remove_observed(path, &dot, obs),
            Op::Incr { path, by } => self.with_leaf(path, |leaf| leaf.add_increment(dot, *by)),
            Op::Add { path, value } => {
                let key = value.to_cbor();
                self.with_leaf(path, |leaf| {
                    let mut dots = leaf.elems.get(&key).cloned().unwrap_or_default();
                    if let Err(i) = dots.binary_search(&dot) {
                        dots.insert(i, dot);
                    }
                    leaf.elems.insert(key, dots);
                });
            }
            Op::Remove { path, value } => {
                let key = value.to_cbor();
                let mut emptied = false;
                if let Some(leaf) = self.leaves.get_mut(path) {
                    let leaf = Arc::make_mut(leaf);
                    remove_elem_observed(&mut leaf.elems, &key, &dot, obs);
                    emptied = leaf.is_empty();
                }
                if emptied {
                    self.drop_leaf(path);
                } else {
                    self.noted(path);
                }
            }
            Op::Genesis(g) => self.write(&Path::root(), &g.init, dot),
            Op::Call { .. }
            | Op::Deploy { .. }
            | Op::AddMember { .. }
            | Op::RemoveMember { .. }
            | Op::AddAdmin { .. }
            | Op::RemoveAdmin { .. }
            | Op::RotateKey { .. }
            | Op::Attest { .. } => {}
        }
    }

    /// Applies a list or text op (others are refused with [`SeqError::Length`]); a refused
    /// op changes nothing.
    pub fn apply_seq(
        &mut self,
        op: &Op,
        dot: Dot,
        author: NodeId,
        obs: &dyn Observer,
    ) -> Result<(), SeqError> {
        let Some(path) = op.path() else {
            return Err(SeqError::Length);
        };
        let r = self.with_leaf(path, |leaf| {
            let seqs = leaf.seqs.get_or_insert_default();
            let r = match op {
                Op::Insert { at, items, .. } => seqs.insert(at, items, dot, author, obs),
                Op::Delete { kind, ranges, .. } => seqs.delete(*kind, ranges, dot, obs),
                Op::Move { elem, at, .. } => seqs.moved(*elem, at, dot, author, obs),
                _ => Err(SeqError::Length),
            };
            if seqs.text.is_none() && seqs.list.is_none() {
                leaf.seqs = None;
            }
            r
        });
        if self.leaves.get(path).is_some_and(|l| l.is_empty()) {
            self.drop_leaf(path);
        }
        r
    }

    /// Merges the elements of a settled checkpoint's cut ([`Leaf::settle`]): `depth` is the
    /// checkpoint's (no deeper dot is in its cut) and `in_cut` says which of the others are.
    /// Only leaves that change are replaced, so a store sees what to write.
    pub fn settle(&mut self, depth: u64, in_cut: &dyn Fn(&Dot) -> bool) {
        let shallow = |d: &Dot| d.depth <= depth && in_cut(d);
        debug_assert!(
            self.leaves
                .iter()
                .filter(|(_, l)| l.may_merge())
                .map(|(p, _)| p)
                .eq(self.mergeable.iter()),
            "the mergeable paths are out of step with the leaves"
        );
        let changed: Vec<(Arc<Path>, Leaf)> = self
            .mergeable
            .iter()
            .filter_map(|p| {
                let mut leaf = (**self.leaves.get(&**p)?).clone();
                leaf.settle(&shallow).then(|| (p.clone(), leaf))
            })
            .collect();
        for (p, leaf) in changed {
            if let Some(old) = self.leaves.get_mut(&*p) {
                *old = Arc::new(leaf);
            }
            self.noted(&p);
        }
    }

    /// Runs `f` on the leaf at `path`, made first (empty) if there is none: one lookup of the
    /// leaves when the leaf exists. The leaf is left in place even if `f` empties it.
    fn with_leaf<R>(&mut self, path: &Path, f: impl FnOnce(&mut Leaf) -> R) -> R {
        if let Some(leaf) = self.leaves.get_mut(path) {
            let leaf = Arc::make_mut(leaf);
            let r = f(leaf);
            note(&mut self.mergeable, path, leaf.may_merge());
            return r;
        }
        let mut leaf = Leaf::default();
        let r = f(&mut leaf);
        self.add_leaf(Arc::new(path.clone()), Arc::new(leaf));
        r
    }

    /// Brings [`Doc::mergeable`] in step with the leaf at `path` (or its absence) after a
    /// change to it.
    fn noted(&mut self, path: &Path) {
        let may = self.leaves.get(path).is_some_and(|l| l.may_merge());
        note(&mut self.mergeable, path, may);
    }

    /// Puts `leaf` at `path`, which has none, counting it under every proper prefix.
    fn add_leaf(&mut self, path: Arc<Path>, leaf: Arc<Leaf>) {
        debug_assert!(
            !self.leaves.contains_key(&*path),
            "add_leaf on a path with a leaf"
        );
        for n in 0..path.0.len() {
            let prefix = Arc::new(Path(path.0[..n].into()));
            *self.below.entry(prefix).or_insert(0) += 1;
        }
        if leaf.may_merge() {
            self.mergeable.insert(path.clone());
        }
        self.leaves.insert(path, leaf);
    }

    /// Removes the leaf at `path` (if any), uncounting it under every proper prefix.
    fn drop_leaf(&mut self, path: &Path) {
        if self.leaves.remove(path).is_none() {
            return;
        }
        self.mergeable.remove(path);
        for n in 0..path.0.len() {
            let prefix = Path(path.0[..n].into());
            match self.below.get_mut(&prefix) {
                Some(count) if *count > 1 => *count -= 1,
                _ => {
                    self.below.remove(&prefix);
                }
            }
        }
    }

    /// The leaf at exactly `path` as a shared pointer (see [`Doc::shared_leaves_under`]).
    pub fn shared_leaf(&self, path: &Path) -> Option<&Arc<Leaf>> {
        self.leaves.get(path)
    }

    /// Whether any leaf lies strictly below `path`.
    pub fn has_below(&self, path: &Path) -> bool {
        let below = self.below.contains_key(path);
        // Slow-path check in test builds: the count agrees with a scan of the leaves.
        debug_assert_eq!(
            below,
            self.leaves
                .range::<_, Path>((Bound::Excluded(path), Bound::Unbounded))
                .next()
                .is_some_and(|(p, _)| p.starts_with(path)),
            "the count of leaves below {path:?} is out of step with the leaves"
        );
        below
    }

    /// Writes `value` at `path`: maps become an empty-map marker plus one write per key, so a
    /// later write or delete of one key touches only that key.
    fn write(&mut self, path: &Path, value: &Value, dot: Dot) {
        match value {
            Value::Map(m) => {
                self.with_leaf(path, |leaf| leaf.insert_reg(dot, Value::map()));
                for (k, v) in m {
                    self.write(&path.child(k), v, dot);
                }
            }
            other => self.with_leaf(path, |leaf| leaf.insert_reg(dot, other.clone())),
        }
    }

    fn remove_observed(&mut self, scope: &Path, by: &Dot, obs: &dyn Observer) {
        self.remove_observed_at(scope, by, obs);
        self.remove_observed_below(scope, by, obs);
    }

    /// `remove_observed` of the leaf at exactly `path`, dropping it if that empties it.
    fn remove_observed_at(&mut self, path: &Path, by: &Dot, obs: &dyn Observer) {
        let mut emptied = false;
        if let Some(leaf) = self.leaves.get_mut(path) {
            let leaf = Arc::make_mut(leaf);
            leaf.remove_observed(by, obs);
            emptied = leaf.is_empty();
        }
        if emptied {
            self.drop_leaf(path);
        } else {
            self.noted(path);
        }
    }

    /// `remove_observed` for the paths strictly below `scope`.
    fn remove_observed_below(&mut self, scope: &Path, by: &Dot, obs: &dyn Observer) {
        if !self.has_below(scope) {
            return;
        }
        let touched: Vec<Arc<Path>> = self
            .leaves
            .range::<_, Path>((Bound::Excluded(scope), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(scope))
            .filter(|(_, leaf)| leaf.any_observed(by, obs))
            .map(|(p, _)| p.clone())
            .collect();
        for p in touched {
            self.remove_observed_at(&p, by, obs);
        }
    }

    /// The leaves at and below `path`, in path order.
    pub fn leaves_under<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Leaf)> {
        self.shared_leaves_under(path).map(|(p, l)| (p, &**l))
    }

    /// The leaves at and below `path` as shared pointers: two documents that share a leaf
    /// (one cloned from the other and then changed elsewhere) hold the same pointer.
    pub fn shared_leaves_under<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Arc<Leaf>)> {
        self.leaves
            .range::<_, Path>(path..)
            .take_while(move |(p, _)| p.starts_with(path))
            .map(|(p, l)| (&**p, l))
    }

    /// The experiences whose ops wrote something still present, sorted.
    pub fn dot_experiences(&self) -> std::collections::BTreeSet<Id> {
        let mut out = std::collections::BTreeSet::new();
        for leaf in self.leaves.values() {
            out.extend(leaf.regs.iter().map(|(d, _)| d.exp));
            out.extend(leaf.incs.keys().map(|d| d.exp));
            out.extend(leaf.elems.values().flatten().map(|d| d.exp));
            if let Some(seqs) = &leaf.seqs {
                out.extend(seqs.dots().map(|d| d.exp));
            }
        }
        out
    }

    /// Puts a leaf (read back from storage) at `path`.
    pub fn insert_leaf(&mut self, path: Path, leaf: Leaf) {
        match self.leaves.get_mut(&path) {
            Some(old) => {
                *old = Arc::new(leaf);
                self.noted(&path);
            }
            None => self.add_leaf(Arc::new(path), Arc::new(leaf)),
        }
    }

    /// The leaf at exactly `path`.
    pub fn leaf(&self, path: &Path) -> Option<&Leaf> {
        self.leaves.get(path).map(|l| &**l)
    }

    /// The kind of value visible at `path` (as [`Doc::materialize`] would show it): `"set"`,
    /// `"counter"`, `"map"`, `"text"`, `"list"` (a sequence), or the winning register's
    /// [`Value::kind`] (`"array"` for a list written whole); `None` if nothing.
    pub fn kind(&self, path: &Path) -> Option<&'static str> {
        let leaf = self.leaves.get(path);
        if leaf.is_some_and(|l| !l.elems.is_empty()) {
            return Some("set");
        }
        if leaf.is_some_and(|l| !l.incs.is_empty()) {
            return Some("counter");
        }
        if self.has_below(path) {
            return Some("map");
        }
        if let Some(kind) = leaf.and_then(|l| l.seqs.as_ref()?.shown()) {
            return Some(kind.name());
        }
        leaf.and_then(|l| l.winner()).map(Value::kind)
    }

    /// All surviving register values at `path`, in canonical order (the last one wins),
    /// then the text and the list here if they have marks, as their values under their
    /// newest marks (the one shown last). More than one means concurrent writes.
    pub fn conflicts(&self, path: &Path) -> Vec<(Dot, Value)> {
        let Some(leaf) = self.leaves.get(path) else {
            return Vec::new();
        };
        let mut out = leaf.regs.clone();
        if let Some(seqs) = &leaf.seqs {
            out.extend(seqs.values_by_mark());
        }
        out
    }

    /// Number of paths that hold something.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The materialised document at `path` (the root by default), or `None` if nothing is
    /// there. Precedence at one path: set elements, then a counter, then children (a map),
    /// then a text or list, then the winning register value.
    pub fn materialize(&self, path: &Path) -> Option<Value> {
        let mut tree = Tree::default();
        for (p, leaf) in self.leaves_under(path) {
            let mut node = &mut tree;
            for seg in &p.0[path.0.len()..] {
                node = node.children.entry(seg.as_str()).or_default();
            }
            node.leaf = Some(leaf);
        }
        tree.value()
    }

    /// Feeds the canonical encoding of the full CRDT state (dots included) to `out`.
    pub fn encode_into(&self, out: &mut impl std::io::Write) {
        for (path, leaf) in &self.leaves {
            let regs = &leaf.regs;
            let incs: Vec<(&Dot, &i64)> = leaf.incs.iter().collect();
            let elems: Vec<(ByteRef<'_>, Vec<&Dot>)> = leaf
                .elems
                .iter()
                .map(|(k, ds)| (ByteRef(k), ds.iter().collect()))
                .collect();
            // A fifth element only where there are sequences: other roots stay as they were.
            match &leaf.seqs {
                None => {
                    let record = (&**path, regs, incs, elems);
                    serde_ipld_dagcbor::to_writer(&mut *out, &record)
                }
                Some(seqs) => {
                    let record = (&**path, regs, incs, elems, seqs.record());
                    serde_ipld_dagcbor::to_writer(&mut *out, &record)
                }
            }
            .expect("hash writer cannot fail");
        }
    }
}

#[derive(Default)]
struct Tree<'a> {
    leaf: Option<&'a Leaf>,
    children: BTreeMap<&'a str, Tree<'a>>,
}

impl Tree<'_> {
    fn value(&self) -> Option<Value> {
        let leaf = self.leaf;
        if let Some(l) = leaf.filter(|l| !l.elems.is_empty()) {
            return Some(Value::List(
                l.elems
                    .keys()
                    .filter_map(|k| crate::codec::from_canonical_stored(k).ok())
                    .collect(),
            ));
        }
        if let Some(l) = leaf.filter(|l| !l.incs.is_empty()) {
            let base = match l.winner() {
                Some(Value::Int(i)) => i128::from(*i),
                _ => 0,
            };
            let total = base + l.inc_sum;
            return Some(match i64::try_from(total) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(total as f64),
            });
        }
        let children: BTreeMap<String, Value> = self
            .children
            .iter()
            .filter_map(|(k, t)| Some(((*k).to_owned(), t.value()?)))
            .collect();
        if !children.is_empty() {
            return Some(Value::Map(children));
        }
        if let Some(v) = leaf.and_then(|l| l.seqs.as_ref()?.value()) {
            return Some(v);
        }
        leaf.and_then(Leaf::winner).cloned()
    }
}

/// Puts `path` in `mergeable` or takes it out, as `may` says (see `Doc::mergeable`).
fn note(mergeable: &mut OrdSet<Arc<Path>>, path: &Path, may: bool) {
    if may != mergeable.contains(path) {
        if may {
            mergeable.insert(Arc::new(path.clone()));
        } else {
            mergeable.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(depth: u64, op: u32) -> Dot {
        Dot {
            depth,
            exp: Id([depth as u8; 32]),
            op,
        }
    }

    fn set(doc: &mut Doc, path: &str, value: Value, depth: u64) {
        let op = Op::Set {
            path: Path::parse(path).unwrap(),
            value,
        };
        doc.apply(&op, dot(depth, 0), NodeId([0; 32]), &ObservesEverything);
    }

    /// The count of leaves below each path follows sets of maps, scalars over maps, deletes
    /// and leaves read back, and a scalar set over a map still removes what it observed below
    /// (`has_below` checks itself against a scan of the leaves in test builds).
    #[test]
    fn leaves_below_a_path_are_counted_through_every_change() {
        let mut doc = Doc::default();
        let map = Value::from_json(&serde_json::json!({"b": {"c": 1, "d": 2}, "e": 3})).unwrap();
        set(&mut doc, "/a", map, 1);
        assert!(doc.has_below(&Path::parse("/a").unwrap()));
        assert!(doc.has_below(&Path::parse("/a/b").unwrap()));
        assert!(!doc.has_below(&Path::parse("/a/e").unwrap()));
        assert_eq!(doc.below.get(&Path::parse("/a").unwrap()), Some(&4));
        set(&mut doc, "/a/b", Value::Int(7), 2);
        assert!(!doc.has_below(&Path::parse("/a/b").unwrap()));
        assert_eq!(
            doc.materialize(&Path::parse("/a/b").unwrap()),
            Some(Value::Int(7))
        );
        doc.apply(
            &Op::Del {
                path: Path::parse("/a").unwrap(),
            },
            dot(3, 0),
            NodeId([0; 32]),
            &ObservesEverything,
        );
        assert!(doc.is_empty());
        assert!(doc.below.is_empty(), "{:?}", doc.below);
        let mut read = Doc::default();
        let mut leaf = Leaf::default();
        leaf.insert_reg(dot(4, 0), Value::Int(1));
        read.insert_leaf(Path::parse("/x/y").unwrap(), leaf.clone());
        read.insert_leaf(Path::parse("/x/y").unwrap(), leaf);
        assert_eq!(read.below.get(&Path::parse("/x").unwrap()), Some(&1));
    }

    #[test]
    fn a_leaf_encodes_as_its_record_and_decodes_back() {
        let mut leaf = Leaf::default();
        leaf.insert_reg(dot(1, 0), Value::from("x".repeat(40).as_str()));
        leaf.insert_reg(dot(2, 1), Value::from(7i64));
        leaf.incs.insert(dot(3, 0), -4);
        leaf.incs.insert(dot(4, 2), 9);
        leaf.inc_sum = 5;
        leaf.elems.insert(vec![1, 2, 3], vec![dot(5, 0), dot(6, 1)]);
        leaf.elems.insert(vec![0xff], vec![dot(7, 0)]);
        let record: LeafRecord = (
            leaf.regs.clone(),
            leaf.incs.iter().map(|(d, n)| (*d, *n)).collect(),
            leaf.elems
                .iter()
                .map(|(k, ds)| (crate::codec::ByteBuf(k.clone()), ds.clone()))
                .collect(),
        );
        let bytes = leaf.to_bytes();
        assert_eq!(bytes, crate::codec::to_canonical(&record));
        assert_eq!(Leaf::from_bytes(&bytes).unwrap(), leaf);
        // Every CBOR length boundary of depths, op indexes, amounts and list lengths.
        let edges = [
            0u64,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let mut big = Leaf::default();
        for (i, &e) in edges.iter().enumerate() {
            let d = Dot {
                depth: e,
                exp: Id([i as u8; 32]),
                op: e.min(u64::from(u32::MAX)) as u32,
            };
            big.insert_reg(d, Value::Int(e as i64));
            for k in 0..30u64 {
                big.incs.insert(
                    Dot { op: k as u32, ..d },
                    (e as i64).wrapping_neg() ^ k as i64,
                );
            }
            big.elems.insert(e.to_be_bytes().to_vec(), vec![d; 25]);
        }
        let record: LeafRecord = (
            big.regs.clone(),
            big.incs.iter().map(|(d, n)| (*d, *n)).collect(),
            big.elems
                .iter()
                .map(|(k, ds)| (crate::codec::ByteBuf(k.clone()), ds.clone()))
                .collect(),
        );
        assert_eq!(big.to_bytes(), crate::codec::to_canonical(&record));
    }

    proptest::proptest! {
        /// An experience applied at once (runs of increments added together) leaves the
        /// document op-by-op application leaves, with sums that overflow an `i64` and earlier
        /// elements of the same experience (a run split by another op) among the cases.
        #[test]
        fn an_experience_applied_at_once_equals_its_ops_one_by_one(
            before in proptest::collection::vec((0usize..3, 0usize..5), 0..6),
            ops in proptest::collection::vec((0usize..4, 0usize..3, 0usize..5), 1..40),
        ) {
            let paths = ["/a", "/b", "/a/b"];
            let bys = [1, -1, i64::MAX, i64::MIN, 7];
            let op = |kind: usize, at: usize, n: usize| {
                let path = Path::parse(paths[at]).unwrap();
                match kind {
                    0 | 1 => Op::Incr { path, by: bys[n] },
                    2 => Op::Set { path, value: Value::Int(n as i64) },
                    _ => Op::Add { path, value: Value::Int(n as i64) },
                }
            };
            let mut base = Doc::default();
            for (i, (at, n)) in before.iter().enumerate() {
                base.apply(&op(0, *at, *n), dot(1, i as u32), NodeId([0; 32]), &ObservesEverything);
            }
            let ops: Vec<Op> = ops.iter().map(|(k, at, n)| op(*k, *at, *n)).collect();
            let mut one_by_one = base.clone();
            for (i, o) in ops.iter().enumerate() {
                one_by_one.apply(o, dot(2, i as u32), NodeId([0; 32]), &ObservesEverything);
            }
            let mut at_once = base;
            at_once.apply_experience(&ops, 2, Id([2; 32]), NodeId([2; 32]), &ObservesEverything);
            proptest::prop_assert_eq!(at_once, one_by_one);
        }
    }
}
