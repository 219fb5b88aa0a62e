//! Folding: applying the ops of experiences to a state. The document part is commutative and
//! applies on arrival; calls to order-sensitive morphisms fold in canonical order, with
//! checkpoints to rewind to when a concurrent experience sorts earlier.

use std::collections::BTreeMap;
use std::ops::Bound;

use imbl::OrdMap;

use crate::doc::{Doc, Dot, Observer};
use crate::guarded::Guarded;
use crate::id::{Id, NodeId};
use crate::lattice::{Idx, Lattice};
use crate::morphism::{CallContext, Effects, Kv, Program, Registry, Rejection, contract_id};
use crate::op::{Op, Path};
use crate::value::Value;

/// Domain separation for state roots.
const ROOT_CONTEXT: &[u8] = b"lcloud/state/v1\0";

/// Calls applied between two checkpoints of the ordered part.
const CALL_CHECKPOINT_EVERY: usize = 64;

/// A call that a morphism refused: which op, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    /// The morphism called.
    pub morphism: Id,
    /// Why it refused.
    pub reason: String,
}

/// The state of the order-sensitive part: each morphism's state, and the refused calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderedState {
    /// Morphism id → its state (absent: never successfully called).
    pub contracts: OrdMap<Id, Value>,
    /// Refused calls, by the dot of the op.
    pub rejections: OrdMap<Dot, Rejected>,
    /// Deployed contracts: id → the dot of the deploy op that carries the code.
    pub deployed: OrdMap<Id, Dot>,
    /// Each deployed contract's state.
    pub kv: OrdMap<Id, Kv>,
    /// The paths contracts guard, and what they wrote there.
    pub guarded: Guarded,
}

/// A folded state: the document plus the order-sensitive part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The document CRDT.
    pub doc: Doc,
    /// Contract states and rejections.
    pub ordered: OrderedState,
}

impl OrderedState {
    /// Canonical bytes, for storage: `[contracts, rejections]`, and two more elements, the
    /// deployed contracts and their states, only when there are any (so stores written
    /// before contracts existed read the same), and two more, the guarded paths and the leaves
    /// under them (`[path, leaf bytes]`), only when a contract guards a path.
    pub fn to_bytes(&self) -> Vec<u8> {
        let contracts: Vec<(&Id, &Value)> = self.contracts.iter().collect();
        let rejections: Vec<(&Dot, &Rejected)> = self.rejections.iter().collect();
        if self.deployed.is_empty() {
            return crate::codec::to_canonical(&(contracts, rejections));
        }
        let deployed: Vec<(&Id, &Dot)> = self.deployed.iter().collect();
        let kv: Vec<(&Id, Vec<(&String, &String)>)> = self
            .kv
            .iter()
            .map(|(id, kv)| (id, kv.iter().collect()))
            .collect();
        if self.guarded.is_empty() {
            return crate::codec::to_canonical(&(contracts, rejections, deployed, kv));
        }
        let guards: Vec<(&Path, &Id)> = self.guarded.paths.iter().collect();
        let root = Path::root();
        let leaves: Vec<(&Path, crate::codec::ByteBuf)> = self
            .guarded
            .doc
            .leaves_under(&root)
            .map(|(p, l)| (p, crate::codec::ByteBuf(l.to_bytes())))
            .collect();
        crate::codec::to_canonical(&(contracts, rejections, deployed, kv, guards, leaves))
    }

    /// Decodes [`OrderedState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<OrderedState, crate::codec::DecodeError> {
        type Old = (Vec<(Id, Value)>, Vec<(Dot, Rejected)>);
        type Record = (
            Vec<(Id, Value)>,
            Vec<(Dot, Rejected)>,
            Vec<(Id, Dot)>,
            Vec<(Id, Vec<(String, String)>)>,
        );
        type Guards = (
            Vec<(Id, Value)>,
            Vec<(Dot, Rejected)>,
            Vec<(Id, Dot)>,
            Vec<(Id, Vec<(String, String)>)>,
            Vec<(Path, Id)>,
            Vec<(Path, crate::codec::ByteBuf)>,
        );
        let mut guarded = Guarded::default();
        let (contracts, rejections, deployed, kv): Record =
            match crate::codec::from_canonical_stored::<Old>(bytes) {
                Ok((c, r)) => (c, r, Vec::new(), Vec::new()),
                Err(_) => match crate::codec::from_canonical_stored::<Record>(bytes) {
                    Ok(record) => record,
                    Err(_) => {
                        let (c, r, d, kv, guards, leaves): Guards =
                            crate::codec::from_canonical_stored(bytes)?;
                        guarded.paths = guards.into_iter().collect();
                        for (path, leaf) in leaves {
                            guarded
                                .doc
                                .insert_leaf(path, crate::doc::Leaf::from_bytes(&leaf.0)?);
                        }
                        (c, r, d, kv)
                    }
                },
            };
        Ok(OrderedState {
            guarded,
            contracts: contracts.into_iter().collect(),
            rejections: rejections.into_iter().collect(),
            deployed: deployed.into_iter().collect(),
            kv: kv
                .into_iter()
                .map(|(id, kv)| (id, kv.into_iter().collect::<Kv>()))
                .collect(),
        })
    }
}

impl State {
    /// The state root: BLAKE3 of the canonical encoding of the whole folded state, CRDT
    /// metadata included. Equal sets of experiences give equal roots on every node.
    pub fn root(&self) -> Id {
        let mut h = blake3::Hasher::new();
        h.update(ROOT_CONTEXT);
        self.doc.encode_into(&mut h);
        h.update(b"\0contracts");
        for (id, v) in &self.ordered.contracts {
            serde_ipld_dagcbor::to_writer(&mut h, &(id, v)).expect("hash writer cannot fail");
        }
        h.update(b"\0rejections");
        for (dot, r) in &self.ordered.rejections {
            serde_ipld_dagcbor::to_writer(&mut h, &(dot, &r.morphism, &r.reason))
                .expect("hash writer cannot fail");
        }
        // Only when contracts were deployed: roots of histories without them are unchanged.
        if !self.ordered.deployed.is_empty() {
            h.update(b"\0deployed");
            for (id, dot) in &self.ordered.deployed {
                serde_ipld_dagcbor::to_writer(&mut h, &(id, dot)).expect("hash writer cannot fail");
            }
            h.update(b"\0kv");
            for (id, kv) in &self.ordered.kv {
                serde_ipld_dagcbor::to_writer(&mut h, &(id, kv.len() as u64))
                    .expect("hash writer cannot fail");
                for pair in kv {
                    serde_ipld_dagcbor::to_writer(&mut h, &pair).expect("hash writer cannot fail");
                }
            }
            // Only when a contract guards a path.
            if !self.ordered.guarded.is_empty() {
                h.update(b"\0guarded");
                for pair in &self.ordered.guarded.paths {
                    serde_ipld_dagcbor::to_writer(&mut h, &pair).expect("hash writer cannot fail");
                }
                self.ordered.guarded.doc.encode_into(&mut h);
            }
        }
        Id(*h.finalize().as_bytes())
    }

    /// The whole document as a value (`null` if everything was deleted), guarded paths
    /// showing what their contracts wrote.
    pub fn document(&self) -> Value {
        self.get(&Path::root()).unwrap_or(Value::Null)
    }

    /// The document at `path`, if anything is there (guarded paths as their contracts wrote
    /// them, [`Guarded::visible`]).
    pub fn get(&self, path: &Path) -> Option<Value> {
        self.ordered.guarded.visible(&self.doc, path)
    }
}

/// Causality for the document CRDT, answered by the lattice, for the ops of one experience.
pub(crate) struct LatticeObserver<'a> {
    lattice: &'a Lattice,
    /// The experience whose ops are being applied (the usual `by`), and its index.
    current: (Id, Idx),
}

impl Observer for LatticeObserver<'_> {
    fn observed(&self, elem: &Dot, by: &Dot) -> bool {
        if elem.exp == by.exp {
            return elem.op < by.op;
        }
        let by = if by.exp == self.current.0 {
            Some(self.current.1)
        } else {
            self.lattice.idx(&by.exp)
        };
        match (self.lattice.idx(&elem.exp), by) {
            (Some(e), Some(b)) => self.lattice.precedes(e, b),
            _ => false,
        }
    }
}

/// Applies the document ops of experience `idx` to `doc`.
pub(crate) fn apply_doc(doc: &mut Doc, lattice: &Lattice, idx: Idx) {
    let exp = lattice.get(idx);
    let depth = lattice.depth(idx);
    let obs = LatticeObserver {
        lattice,
        current: (exp.id(), idx),
    };
    doc.apply_experience(exp.ops(), depth, exp.id(), exp.author(), &obs);
    if let Some(s) = lattice.settles(idx) {
        doc.settle(s.depth, &|d: &Dot| {
            lattice.in_settled_cut(s, d.depth, &d.exp)
        });
    }
}

/// Whether experience `idx` carries calls to order-sensitive morphisms.
pub(crate) fn has_calls(lattice: &Lattice, idx: Idx) -> bool {
    lattice.get(idx).ops().iter().any(Op::is_ordered)
}

/// The document of an experience's causal past, within the view being folded.
pub(crate) type PastDoc<'a> = &'a dyn Fn(Idx) -> Doc;

/// Applies the calls and deploys of experience `idx` to `state`, recording refusals. A program
/// that reads the document gets `past(idx)`, computed once for the experience.
pub(crate) fn apply_calls(
    state: &mut OrderedState,
    registry: &Registry,
    lattice: &Lattice,
    idx: Idx,
    past: PastDoc<'_>,
) {
    apply_calls_seen(state, registry, lattice, idx, past, &mut |_, _| {});
}

/// `apply_calls`, showing `after` the state after each call or deploy op (applied or refused).
fn apply_calls_seen(
    state: &mut OrderedState,
    registry: &Registry,
    lattice: &Lattice,
    idx: Idx,
    past: PastDoc<'_>,
    after: &mut dyn FnMut(Dot, &OrderedState),
) {
    let seen = std::cell::OnceCell::new();
    let seen_doc = || seen.get_or_init(|| past(idx)).clone();
    let exp = lattice.get(idx);
    let depth = lattice.depth(idx);
    let mut clock: Vec<(NodeId, u64)> = lattice.clock_entries(idx).map(|(n, s)| (*n, s)).collect();
    clock.sort_unstable();
    for (i, op) in exp.ops().iter().enumerate() {
        let dot = Dot {
            depth,
            exp: exp.id(),
            op: i as u32,
        };
        let ctx = CallContext {
            author: exp.author(),
            seq: exp.seq(),
            exp: exp.id(),
            op: i as u32,
            fuel: exp.header().fuel,
            clock: clock.clone(),
            doc: None,
            guarded: state.guarded.clone(),
        };
        let (morphism, outcome) = match op {
            Op::Call { morphism, args } => {
                let outcome = call(state, registry, lattice, morphism, args, ctx, &seen_doc)
                    .and_then(|applied| match applied {
                        Called::Builtin(v) => Ok(Applied::Builtin(v)),
                        Called::Program(effects) => {
                            if !effects.guards.is_empty() {
                                return Err(Rejection(
                                    "a call cannot guard paths (only init can)".into(),
                                ));
                            }
                            state
                                .guarded
                                .write(*morphism, dot, &effects.writes)
                                .map_err(Rejection)?;
                            Ok(Applied::Program(effects.state))
                        }
                    });
                (*morphism, outcome)
            }
            Op::Deploy { rule, code, init } => {
                let id = contract_id(*rule, code, init);
                let outcome = match state.deployed.get(&id) {
                    Some(first) => Err(Rejection(format!(
                        "contract {id} is already deployed (by experience {})",
                        first.exp
                    ))),
                    None => registry.load(id, *rule, code).and_then(|p| {
                        let ctx = CallContext {
                            doc: p.reads_document().then(&seen_doc),
                            ..ctx
                        };
                        p.init(init, &ctx)
                    }),
                };
                let outcome = outcome.and_then(|effects| {
                    let mut guarded = state.guarded.clone();
                    guarded
                        .declare(id, &effects.guards)
                        .and_then(|()| guarded.write(id, dot, &effects.writes))
                        .map_err(|why| Rejection(format!("init: {why}")))?;
                    state.guarded = guarded;
                    state.deployed.insert(id, dot);
                    Ok(Applied::Program(effects.state))
                });
                (id, outcome)
            }
            _ => continue,
        };
        match outcome {
            Ok(Applied::Builtin(next)) => {
                state.contracts.insert(morphism, next);
            }
            Ok(Applied::Program(next)) => {
                state.kv.insert(morphism, next);
            }
            Err(Rejection(reason)) => {
                state.rejections.insert(dot, Rejected { morphism, reason });
            }
        }
        after(dot, state);
    }
}

/// What a call returned.
enum Called {
    /// A built-in morphism's new state.
    Builtin(Value),
    /// A contract's effects.
    Program(Effects),
}

/// The new state of an applied call.
enum Applied {
    /// A built-in morphism's.
    Builtin(Value),
    /// A deployed contract's.
    Program(Kv),
}

/// One call: to a built-in, or to a contract deployed earlier in canonical order.
fn call(
    state: &OrderedState,
    registry: &Registry,
    lattice: &Lattice,
    morphism: &Id,
    args: &Value,
    mut ctx: CallContext,
    seen_doc: &dyn Fn() -> Doc,
) -> Result<Called, Rejection> {
    if let Some(m) = registry.get(morphism) {
        let initial;
        let current = match state.contracts.get(morphism) {
            Some(v) => v,
            None => {
                initial = m.initial();
                &initial
            }
        };
        return m.apply(current, args, &ctx).map(Called::Builtin);
    }
    let Some(dot) = state.deployed.get(morphism) else {
        return Err(Rejection(format!("unknown morphism {morphism}")));
    };
    let program: std::sync::Arc<dyn Program> = match registry.cached(morphism) {
        Some(p) => p,
        None => {
            let deploy = lattice
                .idx(&dot.exp)
                .and_then(|i| lattice.get(i).ops().get(dot.op as usize));
            let Some(Op::Deploy { rule, code, .. }) = deploy else {
                return Err(Rejection(format!(
                    "the code of contract {morphism} is not in this history"
                )));
            };
            registry.load(*morphism, *rule, code)?
        }
    };
    if program.reads_document() {
        ctx.doc = Some(seen_doc());
    }
    let empty = Kv::new();
    let current = state.kv.get(morphism).unwrap_or(&empty);
    program.call(current, args, &ctx).map(Called::Program)
}

/// The order-sensitive fold: calls in canonical order, with checkpoints for rewinds.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrderedFold {
    /// Experiences with calls that the fold includes, by canonical key.
    pub calls: BTreeMap<(u64, Id), Idx>,
    /// The state after every call in `calls`.
    pub state: OrderedState,
    /// State right after the call experience at each key.
    pub checkpoints: BTreeMap<(u64, Id), OrderedState>,
    /// How many times a late, earlier-sorting experience forced a rewind.
    pub rewinds: u64,
    since_checkpoint: usize,
}

impl OrderedFold {
    /// Adds experience `idx` (which has calls) and brings the state up to date, rewinding to
    /// the nearest earlier checkpoint if it sorts before calls already applied.
    pub fn insert(&mut self, registry: &Registry, lattice: &Lattice, idx: Idx, past: PastDoc<'_>) {
        let key = lattice.order_key(idx);
        let last = self.calls.keys().next_back().copied();
        self.calls.insert(key, idx);
        if last.is_none_or(|l| key > l) {
            self.apply(registry, lattice, key, idx, past);
            return;
        }
        self.rewinds += 1;
        let later: Vec<(u64, Id)> = self.checkpoints.range(key..).map(|(k, _)| *k).collect();
        for k in later {
            self.checkpoints.remove(&k);
        }
        let (from, state) = match self.checkpoints.iter().next_back() {
            Some((k, s)) => (Some(*k), s.clone()),
            None => (None, OrderedState::default()),
        };
        self.state = state;
        self.since_checkpoint = 0;
        let replay: Vec<((u64, Id), Idx)> = match from {
            Some(k) => self
                .calls
                .range(k..)
                .filter(|(c, _)| **c > k)
                .map(|(c, i)| (*c, *i))
                .collect(),
            None => self.calls.iter().map(|(c, i)| (*c, *i)).collect(),
        };
        for (k, i) in replay {
            self.apply(registry, lattice, k, i, past);
        }
    }

    fn apply(
        &mut self,
        registry: &Registry,
        lattice: &Lattice,
        key: (u64, Id),
        idx: Idx,
        past: PastDoc<'_>,
    ) {
        apply_calls(&mut self.state, registry, lattice, idx, past);
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CALL_CHECKPOINT_EVERY {
            self.checkpoints.insert(key, self.state.clone());
            self.since_checkpoint = 0;
        }
    }

    /// The ordered state of the sub-fold that includes exactly the call experiences for which
    /// `included` holds, reusing the longest checkpointed prefix that it shares with this fold
    /// when `reuse` (the calls of that prefix then saw the same documents as in this fold: true
    /// of cuts, not of a view that leaves a node out).
    pub fn state_of(
        &self,
        registry: &Registry,
        lattice: &Lattice,
        included: impl Fn(Idx) -> bool,
        past: PastDoc<'_>,
        reuse: bool,
    ) -> OrderedState {
        let base = self.shared(&included, reuse).next_back();
        self.fold_from(registry, lattice, base, &included, past, &mut |_, _| {})
    }

    /// The checkpoints of the prefix this fold shares with the sub-fold of the experiences
    /// `included` holds for (none unless `reuse`), oldest first.
    fn shared(
        &self,
        included: &impl Fn(Idx) -> bool,
        reuse: bool,
    ) -> impl DoubleEndedIterator<Item = (&(u64, Id), &OrderedState)> {
        let shared = self
            .calls
            .iter()
            .take_while(|(_, i)| reuse && included(**i))
            .last()
            .map(|(k, _)| *k);
        match shared {
            Some(s) => self.checkpoints.range(..=s),
            // (The smallest key: an empty range.)
            None => self.checkpoints.range(..(0, Id([0; 32]))),
        }
    }

    /// Folds the included calls after checkpoint `base` (all of them from nothing when
    /// `None`), showing `seen` the state after each op.
    fn fold_from(
        &self,
        registry: &Registry,
        lattice: &Lattice,
        base: Option<(&(u64, Id), &OrderedState)>,
        included: &impl Fn(Idx) -> bool,
        past: PastDoc<'_>,
        seen: &mut dyn FnMut(Dot, &OrderedState),
    ) -> OrderedState {
        let (mut state, from) = match base {
            Some((k, s)) => (s.clone(), Some(*k)),
            None => (OrderedState::default(), None),
        };
        let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
        let rest = self.calls.range((lower, Bound::Unbounded));
        for (_, i) in rest {
            if included(*i) {
                apply_calls_seen(&mut state, registry, lattice, *i, past, seen);
            }
        }
        state
    }

    /// Who set `key` of contract `contract` to the value it has in the sub-fold of the
    /// experiences `included` holds for, and the values it held before, oldest first: each
    /// change with the op that made it, the last one the op that wrote the value it has
    /// now. The calls are folded again from the newest checkpoint at which the key held
    /// another value, so the changes before that one are left out (`KeyWrites::complete`
    /// says whether the list reaches back to the deploy). `None`: the contract is not
    /// deployed in the sub-fold.
    #[allow(clippy::too_many_arguments)]
    pub fn writes(
        &self,
        registry: &Registry,
        lattice: &Lattice,
        included: impl Fn(Idx) -> bool,
        past: PastDoc<'_>,
        reuse: bool,
        contract: &Id,
        key: &str,
    ) -> Option<KeyWrites> {
        let value_in = |s: &OrderedState| s.kv.get(contract).and_then(|kv| kv.get(key)).cloned();
        let state = self.state_of(registry, lattice, &included, past, reuse);
        if !state.deployed.contains_key(contract) {
            return None;
        }
        let now = value_in(&state);
        let base = self
            .shared(&included, reuse)
            .rev()
            .find(|(_, s)| value_in(s) != now);
        let mut held = base.and_then(|(_, s)| value_in(s));
        let mut changes = Vec::new();
        self.fold_from(registry, lattice, base, &included, past, &mut |dot, s| {
            let value = value_in(s);
            if value != held {
                held.clone_from(&value);
                changes.push(KeyWrite { dot, value });
            }
        });
        Some(KeyWrites {
            value: now,
            changes,
            complete: base.is_none(),
        })
    }
}

/// One change of a contract's key: the op that made it, and the value it left (`None`:
/// removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrite {
    /// The call or deploy op.
    pub dot: Dot,
    /// The value after it.
    pub value: Option<String>,
}

/// A contract key's value and the changes that led to it (`OrderedFold::writes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrites {
    /// The value now (`None`: no such key).
    pub value: Option<String>,
    /// Changes, oldest first; the last one wrote `value`.
    pub changes: Vec<KeyWrite>,
    /// Whether `changes` starts at the deploy (else earlier changes are left out).
    pub complete: bool,
}
