//! A replica of one cloud: the lattice, the incrementally maintained fold, checkpoints, and
//! the views built on them (time travel, one node's chain, perspective, without a node, diff,
//! the stable frontier).

use std::sync::{Arc, OnceLock};

use ed25519_consensus::SigningKey;

use crate::clock::VectorClock;
use crate::doc::Doc;
use crate::experience::{Draft, Experience, Verified};
use crate::fold::{OrderedFold, OrderedState, State, apply_calls, apply_doc, has_calls};
use crate::id::{Id, NodeId};
use crate::lattice::{Idx, InsertError, Inserted, Lattice, clock_at, dense_le};
use crate::morphism::Registry;
use crate::op::{ForkPolicy, Op, Path};
use crate::value::Value;
use crate::write::{WriteRefused, check_shapes};

#[path = "replica_base.rs"]
mod base;
use base::Base;
#[path = "replica_writes.rs"]
mod writes;

/// Most document checkpoints kept; past this, every other one is dropped and the spacing
/// doubles, so a cut replays at most about 1/128 of the history (or the spacing below).
const CHECKPOINTS_MAX: usize = 256;
/// Ops between document checkpoints at the start.
const CHECKPOINT_OPS_MIN: usize = 1024;
/// Ops between document checkpoints, at least, per path the document holds. A checkpoint
/// shares what has not changed since with the live document, and keeps the old version of
/// every leaf rewritten after it: up to the whole document. Spacing checkpoints by the
/// document's size bounds what they keep to about an eighth of a leaf per op (at a fixed 1 024
/// ops, 1 000 keys each rewritten 100 times kept ~465 bytes per op in checkpoints, more than
/// half the size of the experiences themselves).
const CHECKPOINT_OPS_PER_LEAF: usize = 8;
/// ... up to this spacing: a cut replays at most this many ops after its checkpoint (unless
/// the history is longer than 128 times this).
const CHECKPOINT_OPS_MAX: usize = 65_536;

/// A causal cut, named by a clock or by heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Every experience whose clock is ≤ this clock.
    Clock(VectorClock),
    /// These experiences and their causal past.
    Heads(Vec<Id>),
}

/// What to fold: a cut (default: everything) and optionally a node left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The cut; `None` is the whole lattice.
    pub cut: Option<Cut>,
    /// Leave out this node's ops (its experiences stay as links; see ARCHITECTURE.md).
    pub without: Option<NodeId>,
}

/// Why a view could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A head is not in the lattice.
    #[error("unknown experience {0}")]
    UnknownExperience(Id),
    /// The view needs history this replica compacted away.
    #[error(
        "this replica was compacted at a final checkpoint; the earliest cut it still holds is \
         {earliest} (a cut must include it, and views without a node need the whole history)"
    )]
    Compacted {
        /// The compaction point's clock.
        earliest: VectorClock,
    },
    /// The clock asks for more of a chain than this replica has.
    #[error("clock asks for {node}:{asked}, but this replica has only {node}:{known}")]
    ClockAhead {
        /// The node.
        node: NodeId,
        /// Seq asked for.
        asked: u64,
        /// Seq known.
        known: u64,
    },
}

/// One difference between two documents.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Where.
    pub path: Path,
    /// The value in the first cut (`None`: absent).
    pub before: Option<Value>,
    /// The value in the second cut (`None`: absent).
    pub after: Option<Value>,
    /// For a text or list in both cuts: the splices from one to the other, by element id.
    pub splices: Option<Vec<crate::seq_doc::Splice>>,
}

#[derive(Clone, Debug)]
struct Checkpoint {
    /// Covers arrival indexes `0..upto`.
    upto: usize,
    /// Dense join of their clocks.
    clock: Vec<u64>,
    doc: Doc,
}

/// A replica of one cloud.
#[derive(Clone, Debug)]
pub struct Replica {
    base: Option<Base>,
    lattice: Lattice,
    registry: Registry,
    doc: Doc,
    ordered: OrderedFold,
    checkpoints: Vec<Checkpoint>,
    checkpoint_ops: usize,
    ops_since: usize,
    frontier: Vec<u64>,
    root: OnceLock<Id>,
    self_check: bool,
}

struct CutSet {
    clock: Vec<u64>,
    exact: Option<Vec<bool>>,
}

/// What a view includes: the experiences in `cut` (all when `None`), less `without`'s.
struct Scope {
    cut: Option<CutSet>,
    without: Option<u32>,
}

impl Replica {
    /// A replica holding only `genesis`, with the built-in morphisms.
    pub fn new(genesis: Verified<Experience>) -> Result<Replica, InsertError> {
        Replica::with_registry(genesis, Registry::builtin())
    }

    /// A replica with a given morphism registry.
    pub fn with_registry(
        genesis: Verified<Experience>,
        registry: Registry,
    ) -> Result<Replica, InsertError> {
        let mut r = Replica::unfolded(Lattice::new(genesis)?, registry, None);
        r.fold_admitted(&[0]);
        Ok(r)
    }

    /// A replica of `lattice` (on `base`, if compacted) with nothing folded yet.
    fn unfolded(lattice: Lattice, registry: Registry, base: Option<Base>) -> Replica {
        Replica {
            base,
            lattice,
            registry,
            doc: Doc::default(),
            ordered: OrderedFold::default(),
            checkpoints: Vec::new(),
            checkpoint_ops: CHECKPOINT_OPS_MIN,
            ops_since: 0,
            frontier: Vec::new(),
            root: OnceLock::new(),
            self_check: false,
        }
    }

    /// The lattice.
    pub fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    /// The cloud id.
    pub fn cloud(&self) -> Id {
        self.lattice.cloud()
    }

    /// Inserts a verified experience and folds whatever it admits.
    pub fn insert(
        &mut self,
        exp: impl Into<Arc<Verified<Experience>>>,
    ) -> Result<Inserted, InsertError> {
        self.insert_arc(exp.into())
    }

    /// [`Replica::insert`] of an experience the caller shares (it keeps a handle, not a copy).
    pub fn insert_arc(&mut self, exp: Arc<Verified<Experience>>) -> Result<Inserted, InsertError> {
        let out = self.lattice.insert_arc(exp)?;
        self.after_insert(&out);
        Ok(out)
    }

    /// Set union with another replica of the same cloud.
    pub fn merge(&mut self, other: &Replica) -> Inserted {
        let out = self.lattice.merge(&other.lattice);
        self.after_insert(&out);
        out
    }

    fn after_insert(&mut self, out: &Inserted) {
        if out.admitted.is_empty() {
            return;
        }
        self.root = OnceLock::new();
        let quarantine = self.lattice.rules().fork_policy == ForkPolicy::Quarantine;
        if (quarantine && !out.forks.is_empty()) || out.revoked {
            // A fork retroactively removes the author's ops from the fork point, a revocation
            // those of its concurrent experiences: refold.
            self.rebuild();
        } else {
            self.fold_admitted(&out.admitted);
        }
        if self.self_check {
            let fresh = self.refold();
            assert_eq!(
                fresh.root(),
                self.state().root(),
                "incremental fold diverged from a fresh fold in canonical order"
            );
        }
    }

    /// Slow-path assertion for tests: after every insert, recompute the state from genesis in
    /// canonical order and assert that the incremental fold agrees.
    pub fn set_self_check(&mut self, on: bool) {
        self.self_check = on;
    }

    /// The state folded from scratch, every included experience in canonical order.
    pub fn refold(&self) -> State {
        let mut state = State::default();
        let from = self.base.as_ref().map_or(0, |b| {
            state.doc = b.doc.clone();
            b.end
        });
        for idx in self.canonical_order() {
            if idx < from || self.skipped(idx) {
                continue;
            }
            apply_doc(&mut state.doc, &self.lattice, idx);
            // Documents of the past come from the document checkpoints, so a refold (`lcloud
            // verify`) does not fold the whole past again for every call that reads it.
            let past = |i| self.doc_before(i, &|j| !self.skipped(j), false);
            apply_calls(
                &mut state.ordered,
                &self.registry,
                &self.lattice,
                idx,
                &past,
            );
        }
        state
    }

    fn rebuild(&mut self) {
        self.doc = Doc::default();
        self.ordered = OrderedFold::default();
        self.checkpoints.clear();
        self.checkpoint_ops = CHECKPOINT_OPS_MIN;
        self.ops_since = 0;
        self.frontier.clear();
        let from = match &self.base {
            None => 0,
            Some(b) => {
                self.doc = b.doc.clone();
                self.frontier = b.clock.clone();
                self.checkpoints.push(Checkpoint {
                    upto: b.end as usize,
                    clock: b.clock.clone(),
                    doc: b.doc.clone(),
                });
                b.end
            }
        };
        let all: Vec<Idx> = (from..self.lattice.len() as Idx).collect();
        self.fold_admitted(&all);
    }

    fn fold_admitted(&mut self, admitted: &[Idx]) {
        for &idx in admitted {
            let (author, seq) = self.lattice.author_seq(idx);
            if self.frontier.len() <= author as usize {
                self.frontier.resize(author as usize + 1, 0);
            }
            let slot = &mut self.frontier[author as usize];
            *slot = (*slot).max(seq);
            if !self.skipped(idx) {
                apply_doc(&mut self.doc, &self.lattice, idx);
                if has_calls(&self.lattice, idx) {
                    // The fold borrows the replica's checkpoints to find documents of the past.
                    let mut ordered = std::mem::take(&mut self.ordered);
                    let past = |i| self.doc_before(i, &|j| !self.skipped(j), false);
                    ordered.insert(&self.registry, &self.lattice, idx, &past);
                    self.ordered = ordered;
                }
            }
            self.ops_since += self.lattice.get(idx).ops().len();
            let by_size = (CHECKPOINT_OPS_PER_LEAF * self.doc.len()).min(CHECKPOINT_OPS_MAX);
            if self.ops_since >= self.checkpoint_ops.max(by_size) {
                self.push_checkpoint(idx as usize + 1);
            }
        }
    }

    fn push_checkpoint(&mut self, upto: usize) {
        self.ops_since = 0;
        self.checkpoints.push(Checkpoint {
            upto,
            clock: self.frontier.clone(),
            doc: self.doc.clone(),
        });
        if self.checkpoints.len() > CHECKPOINTS_MAX {
            let mut i = 0;
            self.checkpoints.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.checkpoint_ops *= 2;
        }
    }

    /// Whether the fold leaves out `idx`: under the cloud's fork rule, or because its author
    /// lost the right to write it ([`Lattice::is_void`]).
    fn skipped(&self, idx: Idx) -> bool {
        if self.lattice.is_void(idx) {
            return true;
        }
        let (author, seq) = self.lattice.author_seq(idx);
        self.quarantined_from(author).is_some_and(|s| seq >= s)
    }

    /// The lowest seq from which the fold leaves out `author`'s ops: its chain forked and the
    /// cloud quarantines forks. `None` when everything it writes folds.
    pub fn quarantined(&self, author: &NodeId) -> Option<u64> {
        self.lattice
            .author_idx(author)
            .and_then(|a| self.quarantined_from(a))
    }

    /// [`Replica::quarantined`] by author index.
    fn quarantined_from(&self, author: u32) -> Option<u64> {
        if self.lattice.rules().fork_policy != ForkPolicy::Quarantine {
            return None;
        }
        // A fork whose other branch is late (a final checkpoint leaves it out) quarantines
        // nothing: the fold keeps one branch, as if the other had never been written.
        self.lattice.live_fork_seq(author)
    }

    /// One answer per experience `author` is about to write (in order): refused if the fold
    /// would leave it out (a quarantined chain), mask it (a guarded path) or misread it
    /// ([`check_shapes`] against the current document).
    pub fn check_writes(&self, author: &NodeId, batch: &[&[Op]]) -> Vec<Result<(), WriteRefused>> {
        if !self.lattice.may_write(author) {
            return batch.iter().map(|_| Err(WriteRefused::NotMember)).collect();
        }
        let administers = |ops: &&[Op]| ops.iter().any(Op::needs_admin);
        let mut out: Vec<_> = match self.quarantined(author) {
            Some(seq) => batch
                .iter()
                .map(|_| Err(WriteRefused::Quarantined { seq }))
                .collect(),
            None => self
                .ordered
                .state
                .guarded
                .check_with(batch, check_shapes(&self.doc, batch)),
        };
        let creator = self.lattice.rules().creator;
        for (r, ops) in out.iter_mut().zip(batch) {
            if let Some(why) = crate::lattice::membership_refusal(&creator, author, ops) {
                *r = Err(WriteRefused::BadMembership(why));
            }
        }
        if batch.iter().any(administers) && !self.lattice.is_admin(author) {
            for (r, ops) in out.iter_mut().zip(batch) {
                if administers(ops) {
                    *r = Err(WriteRefused::NotAdmin);
                }
            }
        }
        out
    }

    /// The current folded state.
    pub fn state(&self) -> State {
        State {
            doc: self.doc.clone(),
            ordered: self.ordered.state.clone(),
        }
    }

    /// The order-sensitive part of the current state: contracts, their state, rejections.
    pub fn ordered(&self) -> &OrderedState {
        &self.ordered.state
    }

    /// The current document (guarded paths as their contracts wrote them).
    pub fn document(&self) -> Value {
        self.ordered
            .state
            .guarded
            .visible(&self.doc, &Path::root())
            .unwrap_or(Value::Null)
    }

    /// The current state root (cached until the next insert).
    pub fn root(&self) -> Id {
        *self.root.get_or_init(|| self.state().root())
    }

    /// The current state root if it is already computed (nothing inserted since).
    pub fn cached_root(&self) -> Option<Id> {
        self.root.get().copied()
    }

    /// How many rewinds the order-sensitive fold has done.
    pub fn rewinds(&self) -> u64 {
        self.ordered.rewinds
    }

    /// The next experience `author` would write: seq, prev and deps filled in.
    pub fn draft(&self, author: &NodeId, ops: Vec<Op>) -> Draft {
        let tip = self.lattice.tip(author).map(|i| self.lattice.get(i));
        // Not on top of what a checkpoint this author attested leaves out
        // (`Lattice::held_apart`).
        let deps: Vec<Id> = self
            .lattice
            .heads()
            .iter()
            .filter(|h| {
                self.lattice.idx(h).is_some_and(|i| {
                    self.lattice.get(i).author() != *author && !self.lattice.held_apart(author, i)
                })
            })
            .copied()
            .collect();
        Draft {
            cloud: self.cloud(),
            seq: tip.map_or(1, |t| t.seq() + 1),
            prev: tip.map(|t| t.id()),
            deps,
            ops,
            root: None,
            fuel: None,
        }
    }

    /// Signs `ops` as the next experience of `key`'s chain and inserts it; returns it shared
    /// with the replica (a handle, not a copy of its ops).
    pub fn write(
        &mut self,
        key: &SigningKey,
        ops: Vec<Op>,
    ) -> Result<Arc<Verified<Experience>>, InsertError> {
        let author = NodeId(key.verification_key().to_bytes());
        let exp = Arc::new(Experience::sign(self.draft(&author, ops), key));
        self.insert_arc(exp.clone())?;
        Ok(exp)
    }

    /// What `view` includes: its cut resolved, and the index of the node it leaves out.
    fn scope(&self, view: &View) -> Result<Scope, ViewError> {
        let mut cut = match &view.cut {
            Some(c) => Some(self.resolve(c)?),
            None => None,
        };
        if let Some(b) = &self.base {
            let compacted = || ViewError::Compacted {
                earliest: self
                    .lattice
                    .compaction_point()
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
            };
            if view.without.is_some() {
                return Err(compacted());
            }
            if let Some(c) = &mut cut {
                if !dense_le(&b.clock, &c.clock) {
                    return Err(compacted());
                }
                // The cut holds the whole checkpoint, so everything kept below it.
                if let Some(set) = &mut c.exact {
                    set[..b.end as usize].fill(true);
                }
            }
        }
        // A node with no experiences here: leaving it out changes nothing.
        let without = view.without.and_then(|n| self.lattice.author_idx(&n));
        Ok(Scope { cut, without })
    }

    /// Whether the view of `scope` includes experience `i`.
    fn includes(&self, scope: &Scope, i: Idx) -> bool {
        !self.skipped(i)
            && scope.cut.as_ref().is_none_or(|c| self.in_cut(c, i))
            && scope
                .without
                .is_none_or(|w| self.lattice.author_seq(i).0 != w)
    }

    /// Folds a view: a cut, optionally without one node.
    pub fn view(&self, view: &View) -> Result<State, ViewError> {
        let scope = self.scope(view)?;
        let included = |i: Idx| self.includes(&scope, i);
        let doc = match (&scope.cut, scope.without) {
            (None, None) => self.doc.clone(),
            (Some(c), None) => self.doc_at(c, &included),
            (_, Some(_)) => {
                let mut doc = Doc::default();
                for i in (0..self.lattice.len() as Idx).filter(|i| included(*i)) {
                    apply_doc(&mut doc, &self.lattice, i);
                }
                doc
            }
        };
        let leaves_out = scope.without.is_some();
        let past = |i| self.doc_before(i, &included, leaves_out);
        let ordered =
            self.ordered
                .state_of(&self.registry, &self.lattice, included, &past, !leaves_out);
        Ok(State { doc, ordered })
    }

    /// Why op `op` of experience `id` (a call or a deploy) was rejected in the current fold:
    /// `None` when it was applied, or when there is no such op. A later experience that
    /// sorts before it can still change this (the fold rewinds); every node that holds the
    /// same history gives the same answer.
    pub fn rejection(&self, id: &Id, op: u32) -> Option<crate::fold::Rejected> {
        let idx = self.lattice.idx(id)?;
        let dot = crate::doc::Dot {
            depth: self.lattice.depth(idx),
            exp: *id,
            op,
        };
        self.ordered.state.rejections.get(&dot).cloned()
    }

    /// Time travel: the state at a cut.
    pub fn state_at(&self, cut: &Cut) -> Result<State, ViewError> {
        self.view(&View {
            cut: Some(cut.clone()),
            without: None,
        })
    }

    /// The state `id`'s author saw when writing it: the fold of its causal past, without it.
    pub fn perspective(&self, id: &Id) -> Result<State, ViewError> {
        let exp = self
            .lattice
            .experience(id)
            .ok_or(ViewError::UnknownExperience(*id))?;
        let parents: Vec<Id> = exp.parents().copied().collect();
        self.state_at(&Cut::Heads(parents))
    }

    /// The state without `node`'s ops.
    pub fn without(&self, node: &NodeId) -> Result<State, ViewError> {
        self.view(&View {
            cut: None,
            without: Some(*node),
        })
    }

    /// The documents' differences between two views, path by path.
    pub fn diff(&self, a: &View, b: &View) -> Result<Vec<Change>, ViewError> {
        let (a, b) = (self.view(a)?, self.view(b)?);
        let before = a.get(&Path::root());
        let after = b.get(&Path::root());
        let mut out = Vec::new();
        diff_values(&Path::root(), before.as_ref(), after.as_ref(), &mut out);
        for c in &mut out {
            let x = a.doc.leaf(&c.path).and_then(|l| l.seqs.as_deref());
            let y = b.doc.leaf(&c.path).and_then(|l| l.seqs.as_deref());
            if let (Some(x), Some(y)) = (x, y) {
                c.splices = crate::seq_doc::splices(x, y);
            }
        }
        Ok(out)
    }

    /// Checks an experience's optional state root against this replica's fold of its past.
    pub fn check_root(&self, id: &Id) -> Result<Option<bool>, ViewError> {
        let exp = self
            .lattice
            .experience(id)
            .ok_or(ViewError::UnknownExperience(*id))?;
        match exp.header().root {
            None => Ok(None),
            Some(claimed) => Ok(Some(self.perspective(id)?.root() == claimed)),
        }
    }

    /// All admitted experiences in canonical order: by causal depth, then by id.
    pub fn canonical_order(&self) -> Vec<Idx> {
        let mut order: Vec<Idx> = (0..self.lattice.len() as Idx).collect();
        order.sort_by_key(|i| self.lattice.order_key(*i));
        order
    }

    fn resolve(&self, cut: &Cut) -> Result<CutSet, ViewError> {
        match cut {
            Cut::Clock(c) => {
                for (node, asked) in &c.0 {
                    let known = self.lattice.frontier().get(node);
                    if *asked > known {
                        return Err(ViewError::ClockAhead {
                            node: *node,
                            asked: *asked,
                            known,
                        });
                    }
                }
                Ok(CutSet {
                    clock: self.lattice.densify(c),
                    exact: None,
                })
            }
            Cut::Heads(heads) => {
                let mut idxs = Vec::with_capacity(heads.len());
                for h in heads {
                    idxs.push(
                        self.lattice
                            .idx(h)
                            .ok_or(ViewError::UnknownExperience(*h))?,
                    );
                }
                let mut clock = vec![0u64; self.lattice.author_count()];
                for i in &idxs {
                    for (slot, s) in clock.iter_mut().zip(self.lattice.dense_clock(*i)) {
                        *slot = (*slot).max(*s);
                    }
                }
                let exact = self.lattice.has_forks().then(|| self.ancestors(&idxs));
                Ok(CutSet { clock, exact })
            }
        }
    }

    fn ancestors(&self, heads: &[Idx]) -> Vec<bool> {
        let mut seen = vec![false; self.lattice.len()];
        let mut stack: Vec<Idx> = heads.to_vec();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i as usize], true) {
                continue;
            }
            stack.extend(self.lattice.parents(i).iter().copied());
        }
        seen
    }

    fn in_cut(&self, cut: &CutSet, idx: Idx) -> bool {
        match &cut.exact {
            Some(set) => set[idx as usize],
            None => dense_le(self.lattice.dense_clock(idx), &cut.clock),
        }
    }

    /// The document experience `idx`'s author saw: the fold of its causal past (its parents'
    /// cut), of the experiences `included` holds for. `scratch` folds it from nothing (when
    /// `included` leaves out experiences the checkpoints hold) instead of from a checkpoint.
    fn doc_before(&self, idx: Idx, included: &dyn Fn(Idx) -> bool, scratch: bool) -> Doc {
        let parents: Vec<Idx> = self.lattice.parents(idx).to_vec();
        let mut clock = vec![0u64; self.lattice.author_count()];
        for i in &parents {
            for (slot, s) in clock.iter_mut().zip(self.lattice.dense_clock(*i)) {
                *slot = (*slot).max(*s);
            }
        }
        let exact = (scratch || self.lattice.has_forks()).then(|| self.ancestors(&parents));
        let cut = CutSet { clock, exact };
        if !scratch {
            return self.doc_at(&cut, &included);
        }
        let mut doc = Doc::default();
        for i in (0..self.lattice.len() as Idx).filter(|i| self.in_cut(&cut, *i) && included(*i)) {
            apply_doc(&mut doc, &self.lattice, i);
        }
        doc
    }

    /// The document at a cut: the latest checkpoint inside the cut, plus the rest of the cut
    /// applied in arrival order (a topological order; the document CRDT is order-free).
    fn doc_at(&self, cut: &CutSet, included: &impl Fn(Idx) -> bool) -> Doc {
        let usable = |cp: &Checkpoint| {
            dense_le(&cp.clock, &cut.clock)
                && cut
                    .exact
                    .as_ref()
                    .is_none_or(|set| set[..cp.upto].iter().all(|b| *b))
        };
        // Checkpoints cover growing prefixes, so usability is monotone: binary search.
        let n = self.checkpoints.partition_point(usable);
        // With no checkpoint inside the cut, start from the compaction point's document (a
        // compacted replica's views all include it: `view` refused the others), or from
        // nothing. Thinning may have dropped the checkpoint the base started as.
        let (mut doc, upto, base_clock) = match n.checked_sub(1).map(|i| &self.checkpoints[i]) {
            Some(cp) => (cp.doc.clone(), cp.upto, cp.clock.clone()),
            None => match &self.base {
                Some(b) => (b.doc.clone(), b.end as usize, b.clock.clone()),
                None => (Doc::default(), 0, Vec::new()),
            },
        };
        let mut rest: Vec<Idx> = if cut.exact.is_none() && !self.lattice.has_forks() {
            // Walk each chain from the checkpoint's clock up to the cut's clock.
            let mut rest = Vec::new();
            for (a, to) in cut.clock.iter().enumerate() {
                let from = clock_at(&base_clock, a as u32) + 1;
                for i in self.lattice.chain_range(a as u32, from, *to) {
                    if !self.in_cut(cut, i) {
                        break;
                    }
                    rest.push(i);
                }
            }
            rest.sort_unstable();
            rest
        } else {
            (upto as Idx..self.lattice.len() as Idx)
                .filter(|i| self.in_cut(cut, *i))
                .collect()
        };
        rest.retain(|i| *i as usize >= upto && included(*i));
        for i in rest {
            apply_doc(&mut doc, &self.lattice, i);
        }
        doc
    }
}

fn diff_values(path: &Path, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(Value::Map(x)), Some(Value::Map(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff_values(&path.child(k), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change {
            path: path.clone(),
            before: x.cloned(),
            after: y.cloned(),
            splices: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Genesis;

    /// Checkpoints are spaced by the document's size: 1 000 keys rewritten 20 times keep a few
    /// checkpoints, not one per 1 024 ops; cuts between them still come out as a replay does.
    #[test]
    fn checkpoints_are_spaced_by_the_documents_size() {
        let key = ed25519_consensus::SigningKey::from([6; 32]);
        let genesis = Experience::create_genesis(&key, Genesis::open("t"));
        let mut r = Replica::new(genesis.clone()).unwrap();
        for i in 0..20_000i64 {
            let op = Op::Set {
                path: Path::from(vec!["k".into(), (i % 1000).to_string()]),
                value: Value::Int(i),
            };
            r.write(&key, vec![op]).unwrap();
        }
        assert!(r.doc.len() >= 1000);
        assert!(
            (1..=3).contains(&r.checkpoints.len()),
            "{} checkpoints",
            r.checkpoints.len()
        );
        for upto in [1u32, 999, 8_500, 12_345, 19_999] {
            let cut = Cut::Clock(r.lattice().clock(upto));
            let mut replay = Replica::new(genesis.clone()).unwrap();
            for i in 1..=upto {
                replay.insert(r.lattice().get(i).clone()).unwrap();
            }
            assert_eq!(
                r.state_at(&cut).unwrap().root(),
                replay.root(),
                "cut at {upto}"
            );
        }
    }
}
