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

use crate::codec::ByteRef;
pub use crate::dot::{Dot, Observer, ObservesEverything};
use crate::id::{Id, NodeId};
pub use crate::leaf::Leaf;
use crate::leaf::remove_elem_observed;
use crate::op::{Op, Path};
use crate::seq::SeqError;
use crate::value::Value;

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
#[path = "doc_tests.rs"]
mod tests;
