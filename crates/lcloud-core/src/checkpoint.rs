//! Signed checkpoints: cuts every member folds and signs the root of, once they are stable.
//!
//! Checkpoint `d` is the set of experiences of causal depth at most `d`, for `d` a multiple
//! of [`CHECKPOINT_EVERY`]. It is *due* at a node once every experience of depth at most `d`
//! there is stable and some stable experience has depth at least `d`: every experience the
//! fold keeps that arrives later follows that one (see `stability.rs`), so it is deeper than
//! `d`, and the set, and the state folded from it, can no longer change. (An experience the
//! fold leaves out, written by a removed member that had not seen its removal, may still
//! arrive at depth `d` or less: it changes nothing folded.) Every member then writes an
//! [`Op::Attest`] naming `d` and the state root at that cut. A checkpoint that every current
//! member attested with one root is *final*; two roots at one checkpoint are a divergence,
//! reported with both roots and who attested each.
//!
//! Depths are derived from the links, the same on every node, so the rule needs no
//! coordination: every member picks the same cuts.
//!
//! **A final checkpoint is fixed.** Its *cut* is what every attestation that made it final
//! has in its past, of depth at most its depth. An experience of depth at most that which is
//! not in the cut can only be one nobody had seen when they attested (the other branch of a
//! fork that surfaces late; a removed member's concurrent writes are left out already): it
//! is *late*, and so is everything on top of it. The fold leaves late experiences out,
//! stability ignores them (a fork whose other branch is late no longer holds finality or
//! quarantines its author), and a member that attested a checkpoint never writes on top of
//! an experience that checkpoint leaves out ([`Lattice::held_apart`]), so no honest
//! member's write is ever late. Late is a function of the set of experiences (the deepest
//! final checkpoint, the attestations' pasts), so every node decides it alike, whatever the
//! order things arrived in; the state at a final checkpoint never changes again, which is
//! what compaction below it rests on.

use std::collections::{BTreeMap, BTreeSet};

use super::{Idx, Lattice, Stability, clock_at};
use crate::clock::VectorClock;
use crate::id::{Id, NodeId};
use crate::op::Op;

/// Depths between two checkpoints.
pub const CHECKPOINT_EVERY: u64 = 256;

/// The attestations admitted, by checkpoint depth and author.
#[derive(Clone, Debug, Default)]
pub(super) struct Attestations {
    by_depth: BTreeMap<u64, BTreeMap<NodeId, BTreeSet<Id>>>,
    /// The experiences attesting each depth, with their authors, in arrival order.
    experiences: BTreeMap<u64, Vec<(NodeId, Idx)>>,
    /// Each author's deepest attestation: its depth and the experience.
    deepest: BTreeMap<NodeId, (u64, Idx)>,
    /// What each attestation settles (`settle.rs`).
    pub(super) settles: BTreeMap<Idx, super::Settle>,
}

impl Attestations {
    /// The experiences attesting checkpoint `depth`, with their authors.
    pub(super) fn of_depth(&self, depth: u64) -> &[(NodeId, Idx)] {
        self.experiences.get(&depth).map_or(&[], Vec::as_slice)
    }

    /// The experiences attesting checkpoints of depth `from` or deeper.
    pub(super) fn experiences_from(&self, from: u64) -> impl Iterator<Item = Idx> + '_ {
        self.experiences
            .range(from..)
            .flat_map(|(_, at)| at.iter().map(|(_, i)| *i))
    }

    /// Records the attestations of an experience kept below a compaction point: only as
    /// what a later experience may settle with (they decide no checkpoint's finality there).
    pub(super) fn record_kept(&mut self, idx: Idx, author: NodeId, ops: &[Op]) {
        for op in ops {
            if let Op::Attest { depth, .. } = op {
                self.experiences
                    .entry(*depth)
                    .or_default()
                    .push((author, idx));
            }
        }
    }

    /// Records the attestations among the ops of the experience `idx` by `author`.
    pub(super) fn record(&mut self, idx: Idx, author: NodeId, ops: &[Op]) {
        for op in ops {
            if let Op::Attest { depth, root } = op {
                self.by_depth
                    .entry(*depth)
                    .or_default()
                    .entry(author)
                    .or_default()
                    .insert(*root);
                let at = self.experiences.entry(*depth).or_default();
                if !at.contains(&(author, idx)) {
                    at.push((author, idx));
                }
                let deepest = self.deepest.entry(author).or_insert((*depth, idx));
                if *depth > deepest.0 {
                    *deepest = (*depth, idx);
                }
            }
        }
    }
}

/// What the deepest final checkpoint fixes (see the module's comment).
#[derive(Clone, Debug, Default)]
pub(super) struct Fixed {
    /// The deepest final checkpoint's depth.
    depth: Option<u64>,
    /// The late experiences: left out of the fold.
    late: BTreeSet<Idx>,
}

/// One checkpoint as the attestations of the current members show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its depth: it holds every experience of causal depth at most this.
    pub depth: u64,
    /// Each root attested, with the members who attested it (sorted).
    pub roots: BTreeMap<Id, Vec<NodeId>>,
    /// Current members who have not attested it yet (sorted).
    pub missing: Vec<NodeId>,
}

impl Checkpoint {
    /// Every current member attested it, all with one root.
    pub fn is_final(&self) -> bool {
        self.roots.len() == 1 && self.missing.is_empty()
    }

    /// Members attested different roots: their folds disagree.
    pub fn is_divergent(&self) -> bool {
        self.roots.len() > 1
    }

    /// The root, if every attestation so far names the same one.
    pub fn root(&self) -> Option<Id> {
        match self.roots.len() {
            1 => self.roots.keys().next().copied(),
            _ => None,
        }
    }
}

impl Lattice {
    /// The deepest checkpoint (a multiple of `every`) that is due: every experience of depth
    /// at most it is stable, and some stable experience is at least that deep. `None` when
    /// none is (or the cloud is open).
    pub fn checkpoint_due(&self, stability: &Stability, every: u64) -> Option<u64> {
        if stability.open || every == 0 {
            return None;
        }
        let mut deepest_stable = 0u64;
        let mut shallowest_unstable = u64::MAX;
        for (a, author) in self.authors.iter().enumerate() {
            let f = stability.frontier.get(author);
            for i in self.live_at_seq(a as u32, f) {
                deepest_stable = deepest_stable.max(self.depth(i));
            }
            for i in self.live_at_seq(a as u32, f + 1) {
                shallowest_unstable = shallowest_unstable.min(self.depth(i));
            }
        }
        let top = deepest_stable.min(shallowest_unstable.saturating_sub(1));
        let due = top / every * every;
        (due > 0).then_some(due)
    }

    /// The checkpoint `me` should attest now, if any: the deepest due one (spacing `every`),
    /// when `me` may write and has not attested it. The one rule the node and the simulation
    /// both follow.
    pub fn attestation_due(&self, me: &NodeId, every: u64) -> Option<u64> {
        let stability = self.stability();
        if stability.open || !self.may_write(me) {
            return None;
        }
        self.checkpoint_due(&stability, every)
            .filter(|depth| !self.attested(me, *depth))
    }

    /// The clock of checkpoint `depth`: per author, the highest seq of depth at most it.
    pub fn depth_cut(&self, depth: u64) -> VectorClock {
        let mut clock = VectorClock::default();
        for (a, chain) in self.chains.iter().enumerate() {
            let seq = if self.fork_seq(a as u32).is_none() {
                // Depth grows along an unforked chain (above the compaction point, if any:
                // a cut below it is not asked for).
                self.base.below(a as u32)
                    + chain.partition_point(|i| self.depth(*i) <= depth) as u64
            } else {
                (1..=self.chain_height(a as u32))
                    .rev()
                    .find(|s| {
                        self.live_at_seq(a as u32, *s)
                            .any(|i| self.depth(i) <= depth)
                    })
                    .unwrap_or(0)
            };
            if seq > 0 {
                clock.observe(self.authors[a], seq);
            }
        }
        clock
    }

    /// Every attested checkpoint, shallowest first, as its electors' attestations show it:
    /// the current members who were members at its depth already (a grant they stand on is
    /// no deeper), so a member added later never makes a final checkpoint unfinal, and a
    /// removed one no longer counts. Empty in an open cloud.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.checkpoints_from_deepest()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// The deepest final checkpoint, if any. Walks from the deepest attested one down, so it
    /// usually looks at one or two, however many the history has.
    pub fn final_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints_from_deepest().find(Checkpoint::is_final)
    }

    /// [`Lattice::checkpoints`], deepest first, made as they are asked for.
    fn checkpoints_from_deepest(&self) -> impl Iterator<Item = Checkpoint> + '_ {
        let since: Vec<(NodeId, u64)> = self
            .members()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let first = self.standing_grants(m).iter().map(|g| self.depth(*g)).min();
                (*m, first.unwrap_or(0))
            })
            .collect();
        let open = self.rules.members.is_none();
        self.attestations
            .by_depth
            .iter()
            .rev()
            .filter(move |_| !open)
            .map(move |(depth, by)| {
                let electors: Vec<NodeId> = since
                    .iter()
                    .filter(|(_, from)| from <= depth)
                    .map(|(m, _)| *m)
                    .collect();
                let mut roots: BTreeMap<Id, Vec<NodeId>> = BTreeMap::new();
                for m in &electors {
                    for root in by.get(m).into_iter().flatten() {
                        roots.entry(*root).or_default().push(*m);
                    }
                }
                Checkpoint {
                    depth: *depth,
                    roots,
                    missing: electors
                        .iter()
                        .filter(|m| !by.contains_key(m))
                        .copied()
                        .collect(),
                }
            })
            .filter(|c| !c.roots.is_empty())
    }

    /// Whether `author` attested checkpoint `depth` (whatever the root).
    pub fn attested(&self, author: &NodeId, depth: u64) -> bool {
        self.attestations
            .by_depth
            .get(&depth)
            .is_some_and(|by| by.contains_key(author))
    }

    pub(super) fn record_attestations(&mut self, idx: Idx) {
        let exp = self.nodes[idx as usize].exp.clone();
        if exp.ops().iter().any(|o| matches!(o, Op::Attest { .. })) {
            self.attestations.record(idx, exp.author(), exp.ops());
            self.decide_settle(idx);
        }
    }

    /// Decides whether the experience just admitted at `idx` is late, and, if it attests or
    /// changes membership, what the deepest final checkpoint now fixes. Returns whether an
    /// experience admitted before it changed sides (the fold must be rebuilt).
    pub(super) fn settle_finality(&mut self, idx: Idx) -> bool {
        // Nothing admitted earlier has a new experience in its past: of depth at most the
        // fixed checkpoint's, it is outside that checkpoint's cut.
        let late = self.fixed.depth.is_some_and(|d| self.depth(idx) <= d)
            || self
                .parents(idx)
                .iter()
                .any(|p| self.fixed.late.contains(p));
        if late {
            self.fixed.late.insert(idx);
        }
        let decides = self
            .get(idx)
            .ops()
            .iter()
            .any(|o| matches!(o, Op::Attest { .. }) || o.is_membership());
        if !decides {
            return false;
        }
        let fixed = self.final_checkpoint();
        let late = fixed
            .as_ref()
            .map(|c| self.late_below(c))
            .unwrap_or_default();
        self.fixed.depth = fixed.map(|c| c.depth);
        let before = std::mem::replace(&mut self.fixed.late, late);
        !before.range(..idx).eq(self.fixed.late.range(..idx))
    }

    /// The late experiences for final checkpoint `c`: of depth at most it and outside the
    /// past of one of the attestations that made it final, and everything on top of one.
    fn late_below(&self, c: &Checkpoint) -> BTreeSet<Idx> {
        let d = c.depth;
        let electors: BTreeSet<&NodeId> = c.roots.values().flatten().collect();
        let attesting: Vec<Idx> = self
            .attestations
            .experiences
            .get(&d)
            .into_iter()
            .flatten()
            .filter(|(author, _)| electors.contains(author))
            .map(|(_, i)| *i)
            .collect();
        let mut late = BTreeSet::new();
        if attesting.is_empty() {
            return late;
        }
        for a in 0..self.authors.len() as u32 {
            let seen = attesting
                .iter()
                .map(|i| clock_at(&self.nodes[*i as usize].clock, a))
                .min()
                .unwrap_or(0);
            // Above what every attestation saw: late while no deeper than the checkpoint
            // (depth grows along each branch, so the walk stops at the first seq past it).
            for seq in seen + 1.. {
                let at = self.at_seq_of(a, seq);
                let shallow: Vec<Idx> =
                    at.iter().copied().filter(|i| self.depth(*i) <= d).collect();
                if shallow.is_empty() {
                    break;
                }
                late.extend(shallow);
            }
            // At or below it, on a branch some attestation does not have.
            if self.forked.contains_key(&a) {
                for (_, at) in self.forked_at.range((a, 1)..=(a, seen)) {
                    for i in at {
                        if self.depth(*i) <= d && attesting.iter().any(|t| !self.precedes(*i, *t)) {
                            late.insert(*i);
                        }
                    }
                }
            }
        }
        if let Some(first) = late.first().copied() {
            for i in first + 1..self.nodes.len() as Idx {
                if self.parents(i).iter().any(|p| late.contains(p)) {
                    late.insert(i);
                }
            }
        }
        late
    }

    /// Whether experience `idx` is late: below the deepest final checkpoint and outside its
    /// cut, or on top of one that is (see the module's comment). The fold leaves it out.
    pub fn is_late(&self, idx: Idx) -> bool {
        self.fixed.late.contains(&idx)
    }

    /// The late experiences, by index.
    pub(super) fn late(&self) -> impl Iterator<Item = Idx> + '_ {
        self.fixed.late.iter().copied()
    }

    /// How many experiences are late.
    pub fn late_count(&self) -> usize {
        self.fixed.late.len()
    }

    /// The depth of the deepest final checkpoint, which the lattice holds fixed.
    pub fn fixed_depth(&self) -> Option<u64> {
        self.fixed.depth
    }

    /// Whether `me` must not write on top of `head`: it is late, or it has in its past an
    /// experience that the deepest checkpoint `me` attested leaves out (of depth at most
    /// that checkpoint's, outside the attestation's past), which is late the moment that
    /// checkpoint is final. Drafts leave such heads out of their deps.
    pub fn held_apart(&self, me: &NodeId, head: Idx) -> bool {
        if self.is_late(head) {
            return true;
        }
        let Some(&(d, att)) = self.attestations.deepest.get(me) else {
            return false;
        };
        let (hc, ac) = (
            &self.nodes[head as usize].clock,
            &self.nodes[att as usize].clock,
        );
        for a in 0..self.authors.len() as u32 {
            let (top, seen) = (clock_at(hc, a), clock_at(ac, a));
            let Some(f) = self.fork_seq(a) else {
                // Depth grows along the chain: the first seq past what the attestation saw
                // is the shallowest candidate.
                if top > seen
                    && self
                        .at_seq_of(a, seen + 1)
                        .iter()
                        .any(|i| self.depth(*i) <= d)
                {
                    return true;
                }
                continue;
            };
            for seq in f.min(seen + 1)..=top {
                for i in self.at_seq_of(a, seq) {
                    if self.depth(*i) <= d
                        && (*i == head || self.precedes(*i, head))
                        && !self.precedes(*i, att)
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// The experiences of author index `a` at `seq` that are not late.
    pub(super) fn live_at_seq(&self, a: u32, seq: u64) -> impl Iterator<Item = Idx> + '_ {
        self.at_seq_of(a, seq)
            .iter()
            .copied()
            .filter(|i| !self.is_late(*i))
    }

    /// The lowest seq at which two experiences of author index `a` that are not late fork.
    pub(crate) fn live_fork_seq(&self, a: u32) -> Option<u64> {
        let f = self.fork_seq(a)?;
        if self.fixed.late.is_empty() {
            return Some(f);
        }
        self.forked_at
            .range((a, f)..=(a, u64::MAX))
            .find(|(_, at)| at.iter().filter(|i| !self.is_late(**i)).count() > 1)
            .map(|((_, s), _)| *s)
    }

    /// The highest seq of author index `a` held by an experience that is not late.
    pub(super) fn live_height(&self, a: u32) -> u64 {
        let mut h = self.chain_height(a);
        while h > 0 && self.live_at_seq(a, h).next().is_none() {
            h -= 1;
        }
        h
    }
}
