//! The lattice: the union of all chains of one cloud, a content-addressed causal DAG.
//!
//! Experiences are admitted only as [`Verified`], only once everything they link to is
//! present (the rest wait, parked), and only if the contextual rules hold: `seq = prev.seq + 1`
//! on the author's own chain, the author may write, only admins change membership (the rules of
//! rights are in `authority.rs`). Clocks, depths and heads are derived here from the links,
//! never read from input. Merge is set union.

#[path = "authority.rs"]
mod authority;
pub use authority::membership_refusal;
#[path = "checkpoint.rs"]
mod checkpoint;
#[path = "compact.rs"]
mod compact;
pub use checkpoint::{CHECKPOINT_EVERY, Checkpoint};
pub use compact::{CompactError, Kept};
#[path = "settle.rs"]
mod settle;
pub use settle::{SETTLE_WITHIN, Settle};
#[path = "stability.rs"]
mod stability;
pub use stability::{Stability, Witness};

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The hasher of the lattice's lookup tables (id → index, author → number). Every fold asks
/// them whether an element's experience precedes the op's; std's SipHash of a 32-byte id was
/// two thirds of that question. foldhash is seeded per process, so ids an attacker grinds
/// cannot be aimed at one bucket; and nothing iterates these tables (lookups only), so no
/// order they give reaches anything hashed, signed or folded.
type FastState = foldhash::fast::RandomState;
use std::sync::Arc;

use crate::clock::VectorClock;
use crate::experience::{Experience, Verified};
use crate::fork::ForkProof;
use crate::id::{CloudId, Id, NodeId};
use crate::op::ForkPolicy;

/// Index of an admitted experience: its position in this lattice's arrival order. Local to one
/// lattice; never hashed, signed or sent.
pub type Idx = u32;

/// Most experiences waiting for missing links before new ones are refused.
pub const PARKED_MAX: usize = 1 << 20;
/// Most bytes (canonical encodings) of experiences waiting for missing links.
pub const PARKED_BYTES_MAX: usize = 256 << 20;

/// Why an experience was refused by the lattice. Each variant is named after its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// `prev` is by another author.
    #[error("prev {prev} of experience {id} is not by the same author")]
    PrevNotOwnChain {
        /// The experience.
        id: Id,
        /// Its prev.
        prev: Id,
    },
    /// `seq` is not one more than prev's.
    #[error("experience {id}: seq {found} is not prev's seq + 1 = {expected}")]
    SeqNotNext {
        /// The experience.
        id: Id,
        /// prev.seq + 1.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// The author may not write in this cloud (in the experience's causal past).
    #[error("experience {id}: author {author} is not a member of this cloud")]
    NotMember {
        /// The experience.
        id: Id,
        /// Its author.
        author: NodeId,
    },
    /// Someone other than an admin tried to change membership.
    #[error("experience {id}: author {author} is not an admin, so cannot change membership")]
    NotAdmin {
        /// The experience.
        id: Id,
        /// Its author.
        author: NodeId,
    },
    /// A membership change no one may make.
    #[error("experience {id}: {why}")]
    BadMembership {
        /// The experience.
        id: Id,
        /// What is wrong.
        why: &'static str,
    },
    /// A second genesis for this cloud cannot exist; a genesis of another cloud does not fit.
    #[error("experience {0} is a genesis, but this lattice already has its genesis")]
    SecondGenesis(Id),
    /// Too many experiences (or bytes) are waiting for their links.
    #[error(
        "the parking for experiences with missing links is full ({PARKED_MAX} experiences or {PARKED_BYTES_MAX} bytes)"
    )]
    ParkedFull,
    /// The lattice must start from a genesis.
    #[error("experience {0} is not a genesis")]
    NotGenesis(Id),
    /// The experience is, or builds on, history this node compacted away: too old to merge.
    #[error(
        "experience {id} ({author}:{seq}) is behind this node's compaction point (the final \
         checkpoint at depth {depth}, {author}:{below} and below are compacted): too old to \
         merge; a node that still needs it must join from that checkpoint"
    )]
    BehindCheckpoint {
        /// The experience.
        id: Id,
        /// Its author.
        author: NodeId,
        /// Its seq.
        seq: u64,
        /// The author's seqs at or below this were compacted.
        below: u64,
        /// The checkpoint compacted at.
        depth: u64,
    },
}

impl InsertError {
    /// A short, stable label for the rule broken (no ids), for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            InsertError::PrevNotOwnChain { .. } => "prev not own chain",
            InsertError::SeqNotNext { .. } => "seq not next",
            InsertError::NotMember { .. } => "not a member",
            InsertError::NotAdmin { .. } => "not an admin",
            InsertError::BadMembership { .. } => "bad membership change",
            InsertError::SecondGenesis(_) => "second genesis",
            InsertError::ParkedFull => "parking full",
            InsertError::NotGenesis(_) => "not a genesis",
            InsertError::BehindCheckpoint { .. } => "behind checkpoint",
        }
    }

    /// Whether the experience itself breaks a rule (so whoever sent it misbehaved). `false`
    /// for [`InsertError::ParkedFull`], which says nothing about the experience, and for
    /// [`InsertError::BehindCheckpoint`]: a peer that is behind is not misbehaving.
    pub fn is_invalid(&self) -> bool {
        !matches!(
            self,
            InsertError::ParkedFull | InsertError::BehindCheckpoint { .. }
        )
    }
}

/// What happened to an inserted experience.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inserted {
    /// Experiences admitted by this call, in the order they entered (the inserted one and any
    /// parked experiences it released).
    pub admitted: Vec<Idx>,
    /// The experience was already known (admitted or parked).
    pub duplicate: bool,
    /// The experience waits for these missing ids.
    pub parked_on: Vec<Id>,
    /// Parked experiences released by this call but refused by the rules.
    pub rejected: Vec<InsertError>,
    /// Fork proofs discovered by this call.
    pub forks: Vec<ForkProof>,
    /// Experiences admitted before are now left out of the fold, or back in it: a right was
    /// revoked, or a checkpoint became final and left late experiences out. Refold.
    pub revoked: bool,
}

#[derive(Clone, Debug)]
struct Node {
    exp: Arc<Verified<Experience>>,
    author: u32,
    depth: u64,
    parents: Box<[Idx]>,
    /// Dense clock by author index; authors interned later are implicitly 0.
    clock: Box<[u64]>,
}

/// Who may write and what the fork rule is, as fixed by the genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The genesis author: the admin.
    pub creator: NodeId,
    /// Listed members (besides the creator); `None`: open cloud.
    pub members: Option<BTreeSet<NodeId>>,
    /// The fork policy.
    pub fork_policy: ForkPolicy,
}

/// The causal DAG of one cloud.
#[derive(Clone, Debug)]
pub struct Lattice {
    cloud: CloudId,
    rules: Rules,
    nodes: Vec<Node>,
    by_id: HashMap<Id, Idx, FastState>,
    authors: Vec<NodeId>,
    author_index: HashMap<NodeId, u32, FastState>,
    /// Per author index, per seq - 1: the first experience admitted at that seq. (A chain has
    /// no gaps: an experience is admitted only after its prev.)
    chains: Vec<Vec<Idx>>,
    /// (author index, seq) → every experience at that seq, in arrival order, where there are
    /// two or more (a fork). Kept apart so that an unforked seq costs one index, not a list.
    forked_at: BTreeMap<(u32, u64), Vec<Idx>>,
    heads: BTreeSet<Id>,
    parked: BTreeMap<Id, Arc<Verified<Experience>>>,
    /// Encoded size of each parked experience, and their total.
    parked_sizes: BTreeMap<Id, usize>,
    parked_bytes: usize,
    /// Caps on parking: experiences and bytes.
    parked_max: (usize, usize),
    waiting: BTreeMap<Id, Vec<Id>>,
    forks: Vec<ForkProof>,
    /// Author index → lowest forked seq.
    forked: BTreeMap<u32, u64>,
    /// Who may write and administer, and what the fold leaves out for want of a right.
    authority: authority::Authority,
    /// Checkpoint attestations, by depth and author.
    attestations: checkpoint::Attestations,
    /// What the deepest final checkpoint fixes: the late experiences.
    fixed: checkpoint::Fixed,
    /// What was compacted away, if anything (`compact.rs`).
    base: compact::Base,
}

impl Lattice {
    /// Starts a lattice from its genesis.
    pub fn new(genesis: Verified<Experience>) -> Result<Lattice, InsertError> {
        let Some(g) = genesis.genesis() else {
            return Err(InsertError::NotGenesis(genesis.id()));
        };
        let rules = Rules {
            creator: genesis.author(),
            members: g.members.as_ref().map(|m| m.iter().copied().collect()),
            fork_policy: g.fork_policy,
        };
        let mut lattice = Lattice {
            cloud: genesis.id(),
            rules,
            nodes: Vec::new(),
            by_id: HashMap::default(),
            authors: Vec::new(),
            author_index: HashMap::default(),
            chains: Vec::new(),
            forked_at: BTreeMap::new(),
            heads: BTreeSet::new(),
            parked: BTreeMap::new(),
            parked_sizes: BTreeMap::new(),
            parked_bytes: 0,
            parked_max: (PARKED_MAX, PARKED_BYTES_MAX),
            waiting: BTreeMap::new(),
            forks: Vec::new(),
            forked: BTreeMap::new(),
            authority: Default::default(),
            attestations: Default::default(),
            fixed: Default::default(),
            base: Default::default(),
        };
        lattice.admit(Arc::new(genesis), Vec::new());
        lattice.settle(0);
        Ok(lattice)
    }

    /// The cloud id (= genesis id).
    pub fn cloud(&self) -> CloudId {
        self.cloud
    }
    /// The genesis rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
    /// Number of admitted experiences (the genesis included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Always false: a lattice holds at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Lowers (or raises) the caps on parked experiences: count and total encoded bytes.
    pub fn set_parked_limits(&mut self, count_max: usize, bytes_max: usize) {
        self.parked_max = (count_max, bytes_max);
    }

    /// Total encoded bytes of parked experiences.
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }

    /// Number of parked experiences.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }
    /// Ids of parked experiences, sorted.
    pub fn parked_ids(&self) -> impl Iterator<Item = &Id> {
        self.parked.keys()
    }
    /// A parked experience, by id.
    pub fn parked_experience(&self, id: &Id) -> Option<&Verified<Experience>> {
        self.parked.get(id).map(|e| &**e)
    }
    /// Missing ids that parked experiences wait for, sorted.
    pub fn missing(&self) -> impl Iterator<Item = &Id> {
        self.waiting.keys()
    }
    /// Whether `id` is admitted.
    pub fn contains(&self, id: &Id) -> bool {
        self.by_id.contains_key(id)
    }
    /// The index of an admitted experience.
    pub fn idx(&self, id: &Id) -> Option<Idx> {
        self.by_id.get(id).copied()
    }
    /// An admitted experience by index.
    pub fn get(&self, idx: Idx) -> &Verified<Experience> {
        &self.nodes[idx as usize].exp
    }
    /// An admitted experience by id.
    pub fn experience(&self, id: &Id) -> Option<&Verified<Experience>> {
        self.idx(id).map(|i| self.get(i))
    }
    /// All admitted experiences in arrival order (a topological order, local to this node).
    pub fn iter(&self) -> impl Iterator<Item = &Verified<Experience>> {
        self.nodes.iter().map(|n| &*n.exp)
    }
    /// Causal depth: 0 for genesis, else 1 + the deepest parent.
    pub fn depth(&self, idx: Idx) -> u64 {
        self.nodes[idx as usize].depth
    }
    /// The canonical sort key: `(depth, id)`.
    pub fn order_key(&self, idx: Idx) -> (u64, Id) {
        (self.depth(idx), self.get(idx).id())
    }
    /// Parents (prev, then deps) of an admitted experience.
    pub fn parents(&self, idx: Idx) -> &[Idx] {
        &self.nodes[idx as usize].parents
    }
    /// The heads: admitted experiences with no admitted successor, sorted by id.
    pub fn heads(&self) -> &BTreeSet<Id> {
        &self.heads
    }
    /// Fork proofs found so far, in discovery order.
    pub fn forks(&self) -> &[ForkProof] {
        &self.forks
    }
    /// Authors that forked, with the lowest seq at which they did.
    pub fn forked_authors(&self) -> BTreeMap<NodeId, u64> {
        self.forked
            .iter()
            .map(|(a, s)| (self.authors[*a as usize], *s))
            .collect()
    }
    /// Whether anyone forked.
    pub fn has_forks(&self) -> bool {
        !self.forked.is_empty()
    }
    /// Nodes granted membership by an admitted op (`add_member`, `add_admin`, `rotate_key`),
    /// sorted; some may have lost it since ([`Lattice::members`]).
    pub fn granted(&self) -> impl Iterator<Item = &NodeId> {
        self.authority.granted()
    }

    /// The authors seen, in arrival order.
    pub fn authors(&self) -> &[NodeId] {
        &self.authors
    }

    /// The vector clock of an admitted experience (its causal past, itself included).
    pub fn clock(&self, idx: Idx) -> VectorClock {
        let node = &self.nodes[idx as usize];
        VectorClock(
            node.clock
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0)
                .map(|(a, s)| (self.authors[a], *s))
                .collect(),
        )
    }

    /// The non-zero entries of the clock of experience `idx`, without building a
    /// [`VectorClock`] (in no particular order: authors by first appearance here).
    pub fn clock_entries(&self, idx: Idx) -> impl Iterator<Item = (&NodeId, u64)> {
        self.nodes[idx as usize]
            .clock
            .iter()
            .zip(&self.authors)
            .filter(|(s, _)| **s > 0)
            .map(|(s, a)| (a, *s))
    }

    /// The clock of the whole lattice: the join of all heads.
    pub fn frontier(&self) -> VectorClock {
        let mut c = VectorClock::default();
        for a in 0..self.authors.len() as u32 {
            let h = self.chain_height(a);
            if h > 0 {
                c.observe(self.authors[a as usize], h);
            }
        }
        c
    }

    /// The experiences of `author`, by seq; a fork shows as two at one seq.
    pub fn chain(&self, author: &NodeId) -> Vec<&Verified<Experience>> {
        let Some(a) = self.author_index.get(author) else {
            return Vec::new();
        };
        let a = *a;
        (1..=self.chain_height(a))
            .flat_map(|seq| self.at_seq_of(a, seq))
            .map(|i| self.get(*i))
            .collect()
    }

    /// The experiences of `author` at `seq` (more than one: a fork), in arrival order.
    pub fn at_seq(&self, author: &NodeId, seq: u64) -> &[Idx] {
        let Some(a) = self.author_index.get(author) else {
            return &[];
        };
        self.at_seq_of(*a, seq)
    }

    /// The experiences of author index `a` at `seq`, in arrival order.
    fn at_seq_of(&self, a: u32, seq: u64) -> &[Idx] {
        if let Some(all) = self.forked_at.get(&(a, seq)) {
            return all;
        }
        let below = self.base.below(a);
        if seq <= below {
            return self.base.kept_at(a, seq);
        }
        self.chains[a as usize]
            .get((seq - below - 1) as usize)
            .map_or(&[], std::slice::from_ref)
    }

    /// The highest seq held of author index `a`'s chain (compacted seqs included).
    pub(crate) fn chain_height(&self, a: u32) -> u64 {
        self.base.below(a) + self.chains[a as usize].len() as u64
    }

    /// The highest seq held of `author`'s chain (0 if none).
    pub fn height(&self, author: &NodeId) -> u64 {
        self.author_index
            .get(author)
            .map_or(0, |a| self.chain_height(*a))
    }

    /// The latest unforked experience of `author` (its chain tip), if any.
    pub fn tip(&self, author: &NodeId) -> Option<Idx> {
        let a = *self.author_index.get(author)?;
        match self.chains[a as usize].last() {
            Some(i) => Some(*i),
            None => self.base.kept_at(a, self.base.below(a)).first().copied(),
        }
    }

    /// `a` happened strictly before `b`: `a` is in `b`'s causal past.
    pub fn precedes(&self, a: Idx, b: Idx) -> bool {
        if a == b {
            return false;
        }
        let na = &self.nodes[a as usize];
        let seq_a = na.exp.seq();
        let seen = |i: Idx| clock_at(&self.nodes[i as usize].clock, na.author);
        if seen(b) < seq_a {
            return false;
        }
        // Below the author's lowest fork its chain is one: every branch passes through `a`.
        if self.forked.get(&na.author).is_none_or(|f| seq_a < *f) {
            return true;
        }
        // The author forked: clocks cannot tell branches apart, so search the DAG, pruned to
        // experiences whose past reaches seq_a of that author.
        let mut stack = vec![b];
        let mut visited = BTreeSet::new();
        while let Some(i) = stack.pop() {
            for p in self.parents(i) {
                if *p == a {
                    return true;
                }
                if seen(*p) >= seq_a && visited.insert(*p) {
                    stack.push(*p);
                }
            }
        }
        false
    }

    /// Neither precedes the other.
    pub fn concurrent(&self, a: Idx, b: Idx) -> bool {
        a != b && !self.precedes(a, b) && !self.precedes(b, a)
    }

    /// `precedes` by id; `None` if either is unknown.
    pub fn happened_before(&self, a: &Id, b: &Id) -> Option<bool> {
        Some(self.precedes(self.idx(a)?, self.idx(b)?))
    }

    /// Inserts a verified experience: admits it (and whatever it releases) if its links are
    /// present and the rules hold, parks it if links are missing.
    pub fn insert(
        &mut self,
        exp: impl Into<Arc<Verified<Experience>>>,
    ) -> Result<Inserted, InsertError> {
        self.insert_arc(exp.into())
    }

    /// [`Lattice::insert`] of an experience the caller shares (it keeps a handle, not a copy).
    pub fn insert_arc(&mut self, exp: Arc<Verified<Experience>>) -> Result<Inserted, InsertError> {
        let mut out = Inserted::default();
        let id = exp.id();
        if self.by_id.contains_key(&id) || self.parked.contains_key(&id) {
            out.duplicate = true;
            return Ok(out);
        }
        if exp.header().is_genesis() {
            return Err(InsertError::SecondGenesis(id));
        }
        self.check_not_behind(&exp)?;
        let missing: Vec<Id> = exp
            .parents()
            .filter(|p| !self.by_id.contains_key(*p))
            .copied()
            .collect();
        if !missing.is_empty() {
            let size = exp.to_bytes().len();
            let (count_max, bytes_max) = self.parked_max;
            if self.parked.len() >= count_max || self.parked_bytes + size > bytes_max {
                return Err(InsertError::ParkedFull);
            }
            self.parked_bytes += size;
            self.parked_sizes.insert(id, size);
            for m in &missing {
                self.waiting.entry(*m).or_default().push(id);
            }
            self.parked.insert(id, exp);
            out.parked_on = missing;
            return Ok(out);
        }
        self.check_rules(&exp)?;
        self.admit_and_release(exp, &mut out);
        Ok(out)
    }

    fn admit_and_release(&mut self, exp: Arc<Verified<Experience>>, out: &mut Inserted) {
        // Usually nothing waits for it: no list of ready experiences is made then.
        let mut next = Some(exp);
        let mut ready = Vec::new();
        while let Some(exp) = next.take().or_else(|| ready.pop()) {
            let id = exp.id();
            let (idx, fork) = self.admit_with_fork(exp);
            out.revoked |= self.settle(idx);
            self.record_attestations(idx);
            out.revoked |= self.settle_finality(idx);
            out.admitted.push(idx);
            out.forks.extend(fork);
            if self.waiting.is_empty() {
                continue;
            }
            let Some(waiters) = self.waiting.remove(&id) else {
                continue;
            };
            for w in waiters {
                let Some(parked) = self.parked.get(&w) else {
                    continue;
                };
                if parked.parents().all(|p| self.by_id.contains_key(p)) {
                    let parked = self.parked.remove(&w).expect("checked above");
                    self.parked_bytes -= self.parked_sizes.remove(&w).unwrap_or(0);
                    match self.check_rules(&parked) {
                        Ok(()) => ready.push(parked),
                        Err(e) => out.rejected.push(e),
                    }
                }
            }
        }
    }

    /// The contextual rules, checked once all links are present.
    fn check_rules(&self, exp: &Verified<Experience>) -> Result<(), InsertError> {
        let h = exp.header();
        let id = exp.id();
        if let Some(prev) = &h.prev {
            let p = self.get(self.by_id[prev]);
            if p.author() != h.author {
                return Err(InsertError::PrevNotOwnChain { id, prev: *prev });
            }
            if h.seq != p.seq() + 1 {
                return Err(InsertError::SeqNotNext {
                    id,
                    expected: p.seq() + 1,
                    found: h.seq,
                });
            }
        }
        let parents: Vec<Idx> = exp.parents().map(|p| self.by_id[p]).collect();
        self.check_authority(id, h.author, exp.ops(), &parents)
    }

    fn intern(&mut self, author: NodeId) -> u32 {
        if let Some(a) = self.author_index.get(&author) {
            return *a;
        }
        let a = self.authors.len() as u32;
        self.authors.push(author);
        self.author_index.insert(author, a);
        self.chains.push(Vec::new());
        self.base.add_author();
        a
    }

    fn admit(&mut self, exp: Arc<Verified<Experience>>, parents: Vec<Idx>) -> Idx {
        let author = self.intern(exp.author());
        let mut clock = vec![0u64; self.authors.len()];
        let mut depth = 0;
        for p in &parents {
            let pn = &self.nodes[*p as usize];
            depth = depth.max(pn.depth + 1);
            for (slot, seq) in clock.iter_mut().zip(pn.clock.iter()) {
                *slot = (*slot).max(*seq);
            }
        }
        let seq = exp.seq();
        clock[author as usize] = clock[author as usize].max(seq);
        let idx = self.nodes.len() as Idx;
        for p in &parents {
            self.heads.remove(&self.nodes[*p as usize].exp.id());
        }
        self.heads.insert(exp.id());
        self.by_id.insert(exp.id(), idx);
        // Seqs count from the compaction point (`check_not_behind` refused anything below).
        let pos = (seq - self.base.below(author)) as usize;
        let chain = &mut self.chains[author as usize];
        debug_assert!(chain.len() + 1 >= pos, "admitted after its prev");
        if chain.len() < pos {
            chain.push(idx);
        } else {
            let first = chain[pos - 1];
            self.forked_at
                .entry((author, seq))
                .or_insert_with(|| vec![first])
                .push(idx);
        }
        self.nodes.push(Node {
            exp,
            author,
            depth,
            parents: parents.into_boxed_slice(),
            clock: clock.into_boxed_slice(),
        });
        idx
    }

    fn admit_with_fork(&mut self, exp: Arc<Verified<Experience>>) -> (Idx, Option<ForkProof>) {
        let mut parents = Vec::with_capacity(exp.header().deps.len() + 1);
        parents.extend(exp.parents().map(|p| self.by_id[p]));
        let idx = self.admit(exp, parents);
        let node = &self.nodes[idx as usize];
        let (author, seq) = (node.author, node.exp.seq());
        let at_seq = self.at_seq_of(author, seq);
        if at_seq.len() < 2 {
            return (idx, None);
        }
        let proof = ForkProof::new(self.get(at_seq[0]), self.get(idx));
        let lowest = self.forked.entry(author).or_insert(seq);
        *lowest = (*lowest).min(seq);
        self.forks.push(proof.clone());
        (idx, Some(proof))
    }

    /// Set union: inserts everything `other` has (admitted and parked) that `self` lacks.
    /// Errors are the rules refusing one of `other`'s experiences; the rest still merge.
    pub fn merge(&mut self, other: &Lattice) -> Inserted {
        let mut total = Inserted::default();
        let parked = other.parked.values();
        for exp in other.nodes.iter().map(|n| &n.exp).chain(parked) {
            if exp.header().is_genesis() {
                continue;
            }
            match self.insert_arc(exp.clone()) {
                Ok(r) => {
                    total.admitted.extend(r.admitted);
                    total.rejected.extend(r.rejected);
                    total.forks.extend(r.forks);
                    total.revoked |= r.revoked;
                }
                Err(e) => total.rejected.push(e),
            }
        }
        total
    }

    /// The dense clock of a node, for the fold's fast cut tests.
    pub(crate) fn dense_clock(&self, idx: Idx) -> &[u64] {
        &self.nodes[idx as usize].clock
    }

    /// Dense form of a clock (authors this lattice has not seen are dropped: nothing of
    /// theirs is here).
    pub(crate) fn densify(&self, clock: &VectorClock) -> Vec<u64> {
        self.authors.iter().map(|a| clock.get(a)).collect()
    }

    /// Author index and seq of an experience.
    pub(crate) fn author_seq(&self, idx: Idx) -> (u32, u64) {
        let n = &self.nodes[idx as usize];
        (n.author, n.exp.seq())
    }

    /// The experiences of author index `a` with seq in `from..=to`.
    pub(crate) fn chain_range(&self, a: u32, from: u64, to: u64) -> impl Iterator<Item = Idx> {
        let hi = to.min(self.chain_height(a));
        (from.max(1)..=hi).flat_map(move |seq| self.at_seq_of(a, seq).iter().copied())
    }

    /// Lowest forked seq of an author index.
    pub(crate) fn fork_seq(&self, a: u32) -> Option<u64> {
        self.forked.get(&a).copied()
    }

    /// Index of an author, if seen.
    pub(crate) fn author_idx(&self, node: &NodeId) -> Option<u32> {
        self.author_index.get(node).copied()
    }

    /// Number of authors seen.
    pub(crate) fn author_count(&self) -> usize {
        self.authors.len()
    }
}

/// `clock[a]`, 0 past the end.
pub(crate) fn clock_at(clock: &[u64], a: u32) -> u64 {
    clock.get(a as usize).copied().unwrap_or(0)
}

/// Pointwise `x ≤ y` of dense clocks.
pub(crate) fn dense_le(x: &[u64], y: &[u64]) -> bool {
    x.iter()
        .enumerate()
        .all(|(a, s)| *s <= y.get(a).copied().unwrap_or(0))
}
