//! Settling: which attestations let the fold collapse counters and sets below a checkpoint.
//!
//! A counter keeps one element per experience that incremented it, and a set element one dot
//! per add, so that a reset or remove concurrent with some of them removes exactly what it
//! observed. Below a final checkpoint no such op can come any more: every experience the fold
//! keeps that is not in the checkpoint's cut follows all of it (`checkpoint.rs`). So the
//! elements there can be merged, one increment per counter and one dot per set element,
//! without changing anything any op will ever observe.
//!
//! The merge must be a function of the history, not of when a node learned the checkpoint
//! was final, or equal histories would give different bytes. So it is tied to an experience:
//! an attestation of checkpoint `d` *settles* `d` when its own causal past (itself included)
//! holds an attestation of `d` by every member that was one at depth `d` (as that past shows
//! the membership), all naming one root, and it is at most [`SETTLE_WITHIN`] deeper than `d`.
//! The fold applies the merge when it folds that experience ([`crate::doc::Doc::settle`]),
//! to the elements of the checkpoint's cut (in the past of every one of those attestations,
//! of depth at most `d`). Whether an experience settles is decided once, at admission, from
//! its past alone, so every node and every view that folds it decides alike.
//!
//! The merge commutes with every other experience the fold keeps: one in the settling
//! experience's past folds before it; one after it, or concurrent with it, follows the whole
//! cut, so a removal in it observes all the merged elements or none of them, and its own
//! elements are deeper than `d`. Merging at `d` and at a deeper `d'` gives the same in either
//! order. A cloud whose members attest one after another settles each checkpoint with the
//! last attestation; when they attest concurrently, no attestation of `d` may see the others,
//! and the next checkpoint's merge takes in `d`'s elements too.
//!
//! The depth bound keeps compaction exact: a compacted replica keeps the attestations less
//! than [`SETTLE_WITHIN`] below its compaction point (`compact.rs`), so whatever an
//! experience above the point settles, its attestations are there to check.

use std::collections::BTreeMap;

use super::{Idx, Lattice};
use crate::clock::VectorClock;
use crate::id::{Id, NodeId};
use crate::op::Op;

/// How much deeper than the checkpoint it settles an attestation may be.
pub const SETTLE_WITHIN: u64 = super::CHECKPOINT_EVERY;

/// What one experience settles: checkpoint `depth`, proven by `attestations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    /// The checkpoint's depth.
    pub depth: u64,
    /// One attestation of it per member at that depth, each in the settling experience's
    /// past or the experience itself.
    pub attestations: Vec<Idx>,
}

impl Lattice {
    /// What the experience at `idx` settles, if anything (see the module's comment).
    pub fn settles(&self, idx: Idx) -> Option<&Settle> {
        self.attestations.settles.get(&idx)
    }

    /// Whether any experience held here settles a checkpoint.
    pub fn any_settled(&self) -> bool {
        !self.attestations.settles.is_empty()
    }

    /// Every experience held here that settles a checkpoint, with what it settles.
    pub fn settled(&self) -> impl Iterator<Item = (Idx, &Settle)> {
        self.attestations.settles.iter().map(|(i, s)| (*i, s))
    }

    /// The cut `s` settles as a clock: per author, the least seq every one of its attestations
    /// has seen (each sees itself). Where no author forked, the element written by an
    /// experience of depth at most `s.depth` is in the cut ([`Lattice::in_settled_cut`])
    /// exactly when its seq is within this clock: how the store's time travel, which reads
    /// clocks from its index, settles without the lattice.
    pub fn settled_clock(&self, s: &Settle) -> VectorClock {
        let mut meet: Option<BTreeMap<NodeId, u64>> = None;
        for a in &s.attestations {
            let seen: BTreeMap<NodeId, u64> =
                self.clock_entries(*a).map(|(n, q)| (*n, q)).collect();
            meet = Some(match meet {
                None => seen,
                Some(m) => m
                    .into_iter()
                    .filter_map(|(n, q)| seen.get(&n).map(|r| (n, q.min(*r))))
                    .collect(),
            });
        }
        let mut clock = VectorClock::default();
        for (n, q) in meet.unwrap_or_default() {
            clock.observe(n, q);
        }
        clock
    }

    /// Whether the element written by experience `exp` at depth `depth` is in the cut `s`
    /// settles: no deeper than its checkpoint and in the past of every attestation. An
    /// experience this lattice does not hold lies below its compaction point, in the cut.
    pub fn in_settled_cut(&self, s: &Settle, depth: u64, exp: &Id) -> bool {
        if depth > s.depth {
            return false;
        }
        let Some(e) = self.idx(exp) else {
            return true;
        };
        s.attestations
            .iter()
            .all(|a| *a == e || self.precedes(e, *a))
    }

    /// Decides what the experience just admitted at `idx` settles: the deepest checkpoint
    /// it attests that its past shows final.
    pub(super) fn decide_settle(&mut self, idx: Idx) {
        if self.rules.members.is_none() {
            // An open cloud has no members to be final for.
            return;
        }
        let mut attested: Vec<u64> = self
            .get(idx)
            .ops()
            .iter()
            .filter_map(|op| match op {
                Op::Attest { depth, .. } => Some(*depth),
                _ => None,
            })
            .collect();
        attested.sort_unstable();
        let own = self.depth(idx);
        for d in attested.into_iter().rev() {
            if own > d.saturating_add(SETTLE_WITHIN) {
                continue;
            }
            if let Some(attestations) = self.final_in_past(idx, d) {
                self.attestations.settles.insert(
                    idx,
                    Settle {
                        depth: d,
                        attestations,
                    },
                );
                return;
            }
        }
    }

    /// The attestations of checkpoint `d` that make it final in the past of `idx` (itself
    /// included): one or more by every member at depth `d` as that past shows it, all with
    /// one root. `None` if some member's is missing or two roots differ.
    fn final_in_past(&self, idx: Idx, d: u64) -> Option<Vec<Idx>> {
        let by = self.attestations.of_depth(d);
        let heads = self.parents(idx).to_vec();
        let in_past = |i: Idx| i == idx || self.precedes(i, idx);
        let mut root: Option<Id> = None;
        let mut out = Vec::new();
        let electors: Vec<_> = self
            .candidates()
            .filter(|m| self.member_since(m, d, &heads))
            .collect();
        for m in &electors {
            let mine: Vec<Idx> = by
                .iter()
                .filter(|(author, i)| author == m && in_past(*i))
                .map(|(_, i)| *i)
                .collect();
            if mine.is_empty() {
                return None;
            }
            for i in &mine {
                for op in self.get(*i).ops() {
                    if let Op::Attest { depth, root: r } = op
                        && *depth == d
                        && *root.get_or_insert(*r) != *r
                    {
                        return None;
                    }
                }
            }
            out.extend(mine);
        }
        (!out.is_empty()).then_some(out)
    }
}
