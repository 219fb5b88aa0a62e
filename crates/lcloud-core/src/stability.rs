//! Causal stability: which experiences every current member has seen.
//!
//! An experience is *stable* when every current member has an experience that causally
//! follows it. Nothing admitted later can then be concurrent with it or sort before it in the
//! canonical order: every member writes on top of what it has seen, a new member writes on
//! top of the grant that admitted it, and a removed member's concurrent writes are left out
//! of the fold. The stable experiences are the ones at or below the *stable frontier*, a
//! vector clock: the meet, over the current members, of what each has acknowledged.
//!
//! What a member has acknowledged is read off its own chain and its grants, never off its
//! word:
//!
//! - the causal past of its latest experience, that experience excluded (its own next one
//!   follows it, but nothing follows it yet);
//! - if it forked at seq `f`, the meet of the pasts of its experiences at `f`, each
//!   excluded: every branch follows that, and a forked member holds finality there until it
//!   is removed;
//! - the past of every grant that made it a member, the grant included (it may only write
//!   on top of one), which is what a member that has not written yet has acknowledged.
//!
//! An author that forked and is still a member is never stable from its lowest forked seq
//! on: a member that saw one branch has not seen the other, and the forker may sign anything
//! on top of either. Once it is removed it writes nothing more the fold keeps, and each of
//! its experiences from the fork on is stable once every member has acknowledged that very
//! experience (checked branch by branch, not by clock).
//!
//! The cost is one pass over each member's clock (members × authors) and the membership
//! rule at the heads; it does not grow with the history. In an open cloud anyone may join
//! and write on top of the genesis alone, so nothing is ever stable there.

use super::{Idx, Lattice, clock_at};
use crate::clock::VectorClock;
use crate::id::NodeId;

/// How far the history is stable, as this lattice shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stability {
    /// The cloud is open: anyone may write, so nothing is ever stable.
    pub open: bool,
    /// Every experience at or below this clock is stable (authors at 0 are left out).
    pub frontier: VectorClock,
    /// How many experiences are stable.
    pub stable: u64,
    /// How many seqs the lattice holds over all chains (a fork counts once per seq).
    pub held: u64,
    /// Each current member and what it has acknowledged, sorted by node.
    pub witnesses: Vec<Witness>,
}

/// One member's part in the stable frontier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// The member.
    pub node: NodeId,
    /// What it has acknowledged: its experiences follow everything at or below this clock.
    pub seen: VectorClock,
    /// How many experiences held here it has not acknowledged.
    pub behind: u64,
    /// It forked: it holds finality at its lowest forked seq until it is removed.
    pub forked: bool,
}

impl Stability {
    /// Whether `author`'s experience at `seq` is stable.
    pub fn is_stable(&self, author: &NodeId, seq: u64) -> bool {
        seq <= self.frontier.get(author)
    }

    /// The member furthest behind, when the history is not all stable: the one that holds
    /// finality back (the smallest node id among equals). `None` when everything is stable
    /// or the cloud is open.
    pub fn held_back_by(&self) -> Option<&Witness> {
        if self.stable >= self.held {
            return None;
        }
        self.witnesses
            .iter()
            .filter(|w| w.behind > 0)
            .max_by(|a, b| a.behind.cmp(&b.behind).then(b.node.cmp(&a.node)))
    }
}

impl Lattice {
    /// The stable frontier for the current members, with what each has acknowledged (see the
    /// module's comment).
    pub fn stability(&self) -> Stability {
        let heights: Vec<u64> = (0..self.authors.len() as u32)
            .map(|a| self.live_height(a))
            .collect();
        let held: u64 = heights.iter().sum();
        let Some(members) = self.members() else {
            return Stability {
                open: true,
                held,
                ..Stability::default()
            };
        };
        let seen: Vec<(NodeId, Vec<u64>)> =
            members.iter().map(|m| (*m, self.acknowledged(m))).collect();
        let n = self.authors.len();
        // A forked author that is still a member may sign anything on top of either branch:
        // nothing of its from its fork on is stable. One that was removed writes nothing
        // more the fold keeps; its branches are stable as far as every member has seen
        // every one of them (`removed_forker_frontier`).
        let removed_forkers: Vec<u32> = (0..n as u32)
            .filter(|a| {
                self.live_fork_seq(*a).is_some()
                    && members.binary_search(&self.authors[*a as usize]).is_err()
            })
            .collect();
        let mut frontier: Vec<u64> = (0..n)
            .map(|a| match self.live_fork_seq(a as u32) {
                Some(f) if removed_forkers.binary_search(&(a as u32)).is_err() => {
                    heights[a].min(f - 1)
                }
                _ => heights[a],
            })
            .collect();
        for (_, s) in &seen {
            for (a, f) in frontier.iter_mut().enumerate() {
                *f = (*f).min(s[a]);
            }
        }
        for a in removed_forkers {
            let f = &mut frontier[a as usize];
            *f = (*f).min(self.removed_forker_frontier(a, &members, *f));
        }
        let witnesses = seen
            .into_iter()
            .map(|(node, s)| {
                let acknowledged: u64 = s.iter().zip(&heights).map(|(q, h)| (*q).min(*h)).sum();
                Witness {
                    node,
                    seen: self.sparse(&s),
                    behind: held - acknowledged,
                    forked: self
                        .author_idx(&node)
                        .is_some_and(|a| self.live_fork_seq(a).is_some()),
                }
            })
            .collect();
        Stability {
            open: false,
            stable: frontier.iter().sum(),
            frontier: self.sparse(&frontier),
            held,
            witnesses,
        }
    }

    /// The highest seq `s` (at most `upto`) such that every experience of the removed,
    /// forked author `a` at seq `s` or below that the fold may keep (not void, not late) is
    /// acknowledged by every member: clocks cannot tell its branches apart, so each
    /// experience from its fork on is checked against each member's own.
    fn removed_forker_frontier(&self, a: u32, members: &[NodeId], upto: u64) -> u64 {
        let f = self.fork_seq(a).unwrap_or(1);
        for seq in f..=upto {
            for e in self.live_at_seq(a, seq) {
                if !self.is_void(e) && !members.iter().all(|m| self.acknowledges(m, e)) {
                    return seq - 1;
                }
            }
        }
        upto
    }

    /// Whether `member` has acknowledged experience `e` (see the module's comment): it is in
    /// the past of every standing grant of the member's, or of each of its latest
    /// experiences (them excluded).
    fn acknowledges(&self, member: &NodeId, e: Idx) -> bool {
        let follows = |t: Idx| t == e || self.precedes(e, t);
        let grants = self.standing_grants(member);
        if !grants.is_empty() && grants.iter().all(|g| follows(*g)) {
            return true;
        }
        let Some(m) = self.author_idx(member) else {
            return false;
        };
        let top = self.live_fork_seq(m).unwrap_or_else(|| self.live_height(m));
        let mut latest = self.live_at_seq(m, top).peekable();
        latest.peek().is_some() && latest.all(|t| t != e && self.precedes(e, t))
    }

    /// What `member` has acknowledged, as a dense clock over all authors.
    fn acknowledged(&self, member: &NodeId) -> Vec<u64> {
        let n = self.authors.len();
        let mut seen = vec![0u64; n];
        let dense = |i: Idx| -> Vec<u64> {
            (0..n as u32)
                .map(|a| clock_at(&self.nodes[i as usize].clock, a))
                .collect()
        };
        // The pasts of its standing grants, the grants included: it writes on top of one.
        let grants = self.standing_grants(member);
        if let Some((first, rest)) = grants.split_first() {
            let mut meet = dense(*first);
            for g in rest {
                for (m, q) in meet.iter_mut().zip(dense(*g)) {
                    *m = (*m).min(q);
                }
            }
            seen = meet;
        }
        // The past of its latest experience(s), them excluded.
        if let Some(a) = self.author_idx(member) {
            let height = self.live_height(a);
            let top = self.live_fork_seq(a).unwrap_or(height);
            let mut own: Option<Vec<u64>> = None;
            for i in self.live_at_seq(a, top) {
                let mut c = dense(i);
                c[a as usize] = top - 1;
                own = Some(match own {
                    None => c,
                    Some(o) => o.iter().zip(&c).map(|(x, y)| (*x).min(*y)).collect(),
                });
            }
            for (s, o) in seen.iter_mut().zip(own.unwrap_or_default()) {
                *s = (*s).max(o);
            }
        }
        seen
    }

    fn sparse(&self, dense: &[u64]) -> VectorClock {
        VectorClock(
            dense
                .iter()
                .zip(&self.authors)
                .filter(|(s, _)| **s > 0)
                .map(|(s, a)| (*a, *s))
                .collect(),
        )
    }
}
