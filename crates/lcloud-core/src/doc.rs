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

use imbl::OrdMap;
use serde::Serialize;

use crate::codec::ByteRef;
use crate::id::Id;
use crate::op::{Op, Path};
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
}

impl Leaf {
    /// The canonical bytes of this leaf, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        // The same encoding as `LeafRecord`, borrowing the values instead of cloning them.
        let incs: Vec<(Dot, i64)> = self.incs.iter().map(|(d, n)| (*d, *n)).collect();
        let elems: Vec<(ByteRef<'_>, &[Dot])> = self
            .elems
            .iter()
            .map(|(k, ds)| (ByteRef(k), ds.as_slice()))
            .collect();
        crate::codec::to_canonical(&(&self.regs, incs, elems))
    }

    /// Decodes [`Leaf::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Leaf, crate::codec::DecodeError> {
        let (regs, incs, elems): LeafRecord = crate::codec::from_canonical(bytes)?;
        let inc_sum = incs.iter().map(|(_, n)| i128::from(*n)).sum();
        Ok(Leaf {
            regs,
            incs: incs.into_iter().collect(),
            inc_sum,
            elems: elems.into_iter().map(|(k, ds)| (k.0, ds)).collect(),
        })
    }

    /// True if nothing is stored here.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty() && self.incs.is_empty() && self.elems.is_empty()
    }

    /// The winning register value (greatest dot in canonical order).
    pub fn winner(&self) -> Option<&Value> {
        self.regs.last().map(|(_, v)| v)
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
    }

    fn remove_observed(&mut self, by: &Dot, obs: &dyn Observer) {
        self.regs.retain(|(d, _)| !obs.observed(d, by));
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
}

impl Doc {
    /// Applies one document op (a genesis writes its initial value). Other ops are ignored.
    pub fn apply(&mut self, op: &Op, dot: Dot, obs: &dyn Observer) {
        match op {
            Op::Set { path, value } => {
                let present = self.remove_observed_below(path, &dot, obs);
                let leaf = self.leaf_mut_known(path, present);
                leaf.remove_observed(&dot, obs);
                match value {
                    Value::Map(_) => self.write(path, value, dot),
                    scalar => leaf.insert_reg(dot, scalar.clone()),
                }
            }
            Op::Del { path } => self.remove_observed(path, &dot, obs),
            Op::Incr { path, by } => {
                let leaf = self.leaf_mut(path);
                leaf.incs.insert(dot, *by);
                leaf.inc_sum += i128::from(*by);
            }
            Op::Add { path, value } => {
                let key = value.to_cbor();
                let leaf = self.leaf_mut(path);
                let mut dots = leaf.elems.get(&key).cloned().unwrap_or_default();
                if let Err(i) = dots.binary_search(&dot) {
                    dots.insert(i, dot);
                }
                leaf.elems.insert(key, dots);
            }
            Op::Remove { path, value } => {
                let key = value.to_cbor();
                if let Some(leaf) = self.leaves.get_mut(path) {
                    let leaf = Arc::make_mut(leaf);
                    remove_elem_observed(&mut leaf.elems, &key, &dot, obs);
                    if leaf.is_empty() {
                        self.leaves.remove(path);
                    }
                }
            }
            Op::Genesis(g) => self.write(&Path::root(), &g.init, dot),
            Op::Call { .. } | Op::AddMember { .. } => {}
        }
    }

    fn leaf_mut(&mut self, path: &Path) -> &mut Leaf {
        let present = self.leaves.contains_key(path);
        self.leaf_mut_known(path, present)
    }

    /// [`Doc::leaf_mut`] when the caller already knows whether the leaf is `present` (one
    /// lookup fewer).
    fn leaf_mut_known(&mut self, path: &Path, present: bool) -> &mut Leaf {
        if !present {
            self.leaves
                .insert(Arc::new(path.clone()), Arc::new(Leaf::default()));
        }
        let leaf = self
            .leaves
            .get_mut(path)
            .expect("present or inserted above");
        Arc::make_mut(leaf)
    }

    /// Writes `value` at `path`: maps become an empty-map marker plus one write per key, so a
    /// later write or delete of one key touches only that key.
    fn write(&mut self, path: &Path, value: &Value, dot: Dot) {
        match value {
            Value::Map(m) => {
                self.leaf_mut(path).insert_reg(dot, Value::map());
                for (k, v) in m {
                    self.write(&path.child(k), v, dot);
                }
            }
            other => {
                self.leaf_mut(path).insert_reg(dot, other.clone());
            }
        }
    }

    fn remove_observed(&mut self, scope: &Path, by: &Dot, obs: &dyn Observer) {
        if let Some(leaf) = self.leaves.get_mut(scope) {
            let leaf = Arc::make_mut(leaf);
            leaf.remove_observed(by, obs);
            if leaf.is_empty() {
                self.leaves.remove(scope);
            }
        }
        self.remove_observed_below(scope, by, obs);
    }

    /// `remove_observed` for the paths strictly below `scope`. Returns whether a leaf is at
    /// `scope` itself (found by the same seek).
    fn remove_observed_below(&mut self, scope: &Path, by: &Dot, obs: &dyn Observer) -> bool {
        let mut under = self
            .leaves
            .range::<_, Path>((Bound::Included(scope), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(scope))
            .peekable();
        let present = under.next_if(|(p, _)| ***p == *scope).is_some();
        let touched: Vec<Arc<Path>> = under
            .filter(|(_, leaf)| leaf.any_observed(by, obs))
            .map(|(p, _)| p.clone())
            .collect();
        for p in touched {
            let Some(leaf) = self.leaves.get_mut(&*p) else {
                continue;
            };
            let leaf = Arc::make_mut(leaf);
            leaf.remove_observed(by, obs);
            if leaf.is_empty() {
                self.leaves.remove(&*p);
            }
        }
        present
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
        }
        out
    }

    /// Puts a leaf (read back from storage) at `path`.
    pub fn insert_leaf(&mut self, path: Path, leaf: Leaf) {
        self.leaves.insert(Arc::new(path), Arc::new(leaf));
    }

    /// The leaf at exactly `path`.
    pub fn leaf(&self, path: &Path) -> Option<&Leaf> {
        self.leaves.get(path).map(|l| &**l)
    }

    /// All surviving register values at `path`, in canonical order (the last one wins).
    /// More than one means concurrent writes.
    pub fn conflicts(&self, path: &Path) -> Vec<(Dot, Value)> {
        self.leaves
            .get(path)
            .map(|l| l.regs.clone())
            .unwrap_or_default()
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
    /// then the winning register value.
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
            let record = (&**path, regs, incs, elems);
            serde_ipld_dagcbor::to_writer(&mut *out, &record).expect("hash writer cannot fail");
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
                    .filter_map(|k| crate::codec::from_canonical(k).ok())
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
        leaf.and_then(Leaf::winner).cloned()
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
    }
}
