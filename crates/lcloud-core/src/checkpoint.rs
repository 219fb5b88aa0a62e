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

use std::collections::{BTreeMap, BTreeSet};

use super::{Idx, Lattice, Stability};
use crate::clock::VectorClock;
use crate::id::{Id, NodeId};
use crate::op::Op;

/// Depths between two checkpoints.
pub const CHECKPOINT_EVERY: u64 = 256;

/// The attestations admitted, by checkpoint depth and author.
#[derive(Clone, Debug, Default)]
pub(super) struct Attestations {
    by_depth: BTreeMap<u64, BTreeMap<NodeId, BTreeSet<Id>>>,
}

impl Attestations {
    /// Records the attestations among the ops of an experience by `author`.
    pub(super) fn record(&mut self, author: NodeId, ops: &[Op]) {
        for op in ops {
            if let Op::Attest { depth, root } = op {
                self.by_depth
                    .entry(*depth)
                    .or_default()
                    .entry(author)
                    .or_default()
                    .insert(*root);
            }
        }
    }
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
            for i in self.at_seq_of(a as u32, f) {
                deepest_stable = deepest_stable.max(self.depth(*i));
            }
            for i in self.at_seq_of(a as u32, f + 1) {
                shallowest_unstable = shallowest_unstable.min(self.depth(*i));
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
                // Depth grows along an unforked chain.
                chain.partition_point(|i| self.depth(*i) <= depth) as u64
            } else {
                (1..=chain.len() as u64)
                    .rev()
                    .find(|s| {
                        self.at_seq_of(a as u32, *s)
                            .iter()
                            .any(|i| self.depth(*i) <= depth)
                    })
                    .unwrap_or(0)
            };
            if seq > 0 {
                clock.observe(self.authors[a], seq);
            }
        }
        clock
    }

    /// Every attested checkpoint, shallowest first, as the current members' attestations
    /// show it (attestations by others are not counted). Empty in an open cloud.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let Some(members) = self.members() else {
            return Vec::new();
        };
        self.attestations
            .by_depth
            .iter()
            .map(|(depth, by)| {
                let mut roots: BTreeMap<Id, Vec<NodeId>> = BTreeMap::new();
                for m in &members {
                    for root in by.get(m).into_iter().flatten() {
                        roots.entry(*root).or_default().push(*m);
                    }
                }
                Checkpoint {
                    depth: *depth,
                    roots,
                    missing: members
                        .iter()
                        .filter(|m| !by.contains_key(m))
                        .copied()
                        .collect(),
                }
            })
            .filter(|c| !c.roots.is_empty())
            .collect()
    }

    /// The deepest final checkpoint, if any.
    pub fn final_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints()
            .into_iter()
            .rev()
            .find(Checkpoint::is_final)
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
            self.attestations.record(exp.author(), exp.ops());
        }
    }
}
