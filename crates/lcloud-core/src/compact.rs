//! Compaction: a lattice that keeps, of the history below a final checkpoint, only what the
//! history above it still asks about.
//!
//! A final checkpoint never changes (`checkpoint.rs`), so what lies below it is needed only to
//! answer questions about the experiences above it and the state it left. The compacted
//! lattice keeps, of the experiences in the checkpoint's cut:
//!
//! - the genesis (the cloud's rules);
//! - every membership change (rights are read at any cut: the grants and revocations, with
//!   whether each key rotation carried its author's admin right, as the whole history said);
//! - each author's last experience in the cut (what its next one links to);
//! - every parent of an experience above the cut;
//! - every experience the caller names: those whose ops wrote something the state still
//!   holds (an element's dot is compared with later writes by causal order).
//!
//! Each kept experience keeps its depth and clock, computed from the full history; it has no
//! parents here. Nothing else below the cut remains: the lattice's memory is the state's
//! dots, the members' changes and the history since the checkpoint, whatever the history's
//! length. An experience that is, or builds directly on, one of the compacted seqs is refused
//! ([`InsertError::BehindCheckpoint`]): too old to merge.
//!
//! What the rights rule decided for a kept experience stands: a revocation that arrives after
//! compaction re-decides only what is above the checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Idx, InsertError, Lattice, Node};
use crate::clock::VectorClock;
use crate::experience::{Experience, Verified};
use crate::id::Id;

/// Why a lattice or replica could not be compacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// No checkpoint is final, so nothing is safe to drop.
    #[error("no checkpoint is final yet: nothing below one is safe to drop")]
    NoFinalCheckpoint,
    /// The fold has calls to order-sensitive morphisms (contracts, the ledger), whose past
    /// documents compaction does not keep yet.
    #[error(
        "this cloud has calls to contracts or other order-sensitive morphisms; compacting \
         them is not supported yet"
    )]
    Calls,
    /// Rebuilding above the checkpoint refused an experience the full lattice holds: a bug,
    /// reported rather than compacted.
    #[error("compaction refused experience {id}: {why}")]
    Rebuild {
        /// The experience.
        id: Id,
        /// What the rules said.
        why: String,
    },
    /// A base to restore does not fit together.
    #[error("the compacted base does not fit together: {0}")]
    Base(String),
    /// The compacted replica folded to another root: a bug, reported rather than kept.
    #[error("the compacted replica folds to root {compacted}, the full one to {full}")]
    Diverged {
        /// The full replica's root.
        full: Id,
        /// The compacted one's.
        compacted: Id,
    },
}

/// One experience kept below a compaction point, with what the full history said of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// The experience.
    pub exp: Arc<Verified<Experience>>,
    /// Its causal depth.
    pub depth: u64,
    /// Its vector clock.
    pub clock: VectorClock,
    /// The fold leaves it out (the rights rule).
    pub void: bool,
    /// A key rotation: whether it made the new key an admin, read with every admitted grant
    /// and with only those the fold keeps.
    pub admin: Option<[bool; 2]>,
    /// Nothing builds on it.
    pub head: bool,
}

/// What was compacted away.
#[derive(Clone, Debug, Default)]
pub(super) struct Base {
    /// Per author index: its seqs at or below this were compacted (0: none).
    below: Vec<u64>,
    /// The kept experiences below the compaction point, by (author index, seq). The cut of a
    /// final checkpoint holds one experience per seq (a fork there either holds finality
    /// back or has its other branch late).
    kept: BTreeMap<(u32, u64), Idx>,
    /// The checkpoint compacted at: its depth and clock.
    point: Option<(u64, VectorClock)>,
    /// Arrival indexes below this are the genesis and the kept experiences.
    end: Idx,
    /// For each kept key rotation: whether it made the new key an admin, read with only the
    /// grants the fold keeps, and with every admitted one.
    admin: BTreeMap<Idx, [bool; 2]>,
}

impl Base {
    /// The author index's seqs at or below this were compacted.
    pub(super) fn below(&self, a: u32) -> u64 {
        self.below.get(a as usize).copied().unwrap_or(0)
    }

    /// The kept experience of author index `a` at `seq` (at or below the compaction point).
    pub(super) fn kept_at(&self, a: u32, seq: u64) -> &[Idx] {
        self.kept.get(&(a, seq)).map_or(&[], std::slice::from_ref)
    }

    pub(super) fn add_author(&mut self) {
        if self.point.is_some() {
            self.below.push(0);
        }
    }

    /// Whether `idx` is the genesis or a kept experience below the compaction point.
    pub(super) fn is_kept(&self, idx: Idx) -> bool {
        idx < self.end
    }

    /// Whether the key rotation `g` made its new key an admin, if it is kept (`None`: ask
    /// the lattice).
    pub(super) fn admin_grant(&self, g: Idx, exact: bool) -> Option<bool> {
        self.admin.get(&g).map(|r| r[usize::from(exact)])
    }
}

impl Lattice {
    /// This lattice compacted at its deepest final checkpoint (see the module's comment),
    /// keeping also the experiences named in `keep` that lie in the checkpoint's cut.
    pub fn compacted(&self, keep: &BTreeSet<Id>) -> Result<Lattice, CompactError> {
        let depth = self.fixed_depth().ok_or(CompactError::NoFinalCheckpoint)?;
        let cut = self.depth_cut(depth);
        let in_cut = |i: Idx| self.depth(i) <= depth && !self.is_late(i);
        let n = self.nodes.len() as Idx;
        let mut kept: BTreeSet<Idx> = self.authority_changes().filter(|i| in_cut(*i)).collect();
        for i in 0..n {
            if !in_cut(i) && !self.is_late(i) {
                kept.extend(self.parents(i).iter().copied().filter(|p| in_cut(*p)));
            }
        }
        for (a, author) in self.authors.iter().enumerate() {
            kept.extend(self.at_seq_of(a as u32, cut.get(author)).iter().copied());
        }
        kept.extend(
            keep.iter()
                .filter_map(|id| self.idx(id))
                .filter(|i| in_cut(*i)),
        );
        // The attestations an experience above the point may still settle with (`settle.rs`).
        kept.extend(
            self.attestations
                .experiences_from(depth.saturating_sub(super::SETTLE_WITHIN))
                .filter(|i| in_cut(*i)),
        );
        kept.remove(&0);

        let kept: Vec<Kept> = kept.into_iter().map(|i| self.kept_at_idx(i)).collect();
        let genesis = (*self.nodes[0].exp).clone();
        let mut out = Lattice::restore(genesis, depth, cut, kept)?;
        out.set_parked_limits(self.parked_max.0, self.parked_max.1);
        for i in (0..n).filter(|i| !in_cut(*i) && !self.is_late(*i)) {
            let exp = self.nodes[i as usize].exp.clone();
            let id = exp.id();
            if let Err(e) = out.insert_arc(exp) {
                return Err(CompactError::Rebuild {
                    id,
                    why: e.to_string(),
                });
            }
        }
        out.forks = self.forks.clone();
        for exp in self.parked.values() {
            // What waits for links may now be behind the checkpoint: refused, not kept.
            let _ = out.insert_arc(exp.clone());
        }
        Ok(out)
    }

    /// What this lattice says of its experience `idx`, kept below a compaction point.
    fn kept_at_idx(&self, i: Idx) -> Kept {
        let node = &self.nodes[i as usize];
        let admin = node.exp.ops().iter().find_map(|op| match op {
            crate::op::Op::RotateKey { to } => Some([
                self.grants_admin_at(i, to, false),
                self.grants_admin_at(i, to, true),
            ]),
            _ => None,
        });
        Kept {
            exp: node.exp.clone(),
            depth: node.depth,
            clock: self.clock(i),
            void: self.is_void(i),
            admin,
            head: self.heads.contains(&node.exp.id()),
        }
    }

    /// The experiences kept below the compaction point, the genesis excluded, with what the
    /// full history said of each: with the compaction point's depth and clock and the
    /// genesis, what [`Lattice::restore`] rebuilds this lattice's base from.
    pub fn kept(&self) -> Vec<Kept> {
        (1..self.base.end).map(|i| self.kept_at_idx(i)).collect()
    }

    /// A lattice compacted at the checkpoint of `depth` (whose cut's clock is `clock`),
    /// holding the genesis and the `kept` experiences below it and nothing above: what
    /// [`Lattice::compacted`] builds before it admits what lies above, and what a store or
    /// a shallow join restores. Refuses a kept experience that does not fit the point.
    pub fn restore(
        genesis: Verified<Experience>,
        depth: u64,
        clock: VectorClock,
        mut kept: Vec<Kept>,
    ) -> Result<Lattice, CompactError> {
        let bad = |why: String| CompactError::Base(why);
        let mut out = Lattice::new(genesis).map_err(|e| bad(e.to_string()))?;
        if clock.get(&out.rules.creator) == 0 {
            return Err(bad(
                "the compaction point's clock does not hold the genesis".into(),
            ));
        }
        for author in clock
            .0
            .keys()
            .chain(kept.iter().map(|k| &k.exp.header().author))
        {
            out.intern(*author);
        }
        out.base.below = out.authors.iter().map(|a| clock.get(a)).collect();
        // The genesis (the creator's seq 1, in every cut) is kept below the point, and is no
        // head: a final checkpoint has experiences on top of it.
        out.chains[0].clear();
        out.base.kept.insert((0, 1), 0);
        out.heads.clear();
        out.base.point = Some((depth, clock));
        kept.sort_by_key(|k| (k.depth, k.exp.id()));
        for k in kept {
            let a = out.author_index[&k.exp.author()];
            let (id, seq) = (k.exp.id(), k.exp.seq());
            if k.exp.header().is_genesis() || out.by_id.contains_key(&id) {
                return Err(bad(format!("experience {id} is kept twice")));
            }
            if seq > out.base.below(a) || k.depth > depth || k.clock.get(&k.exp.author()) != seq {
                return Err(bad(format!(
                    "kept experience {id} ({}:{seq}, depth {}) is not below the compaction point",
                    k.exp.author(),
                    k.depth
                )));
            }
            if out.base.kept.contains_key(&(a, seq)) {
                return Err(bad(format!(
                    "two experiences kept at {}:{seq}",
                    k.exp.author()
                )));
            }
            let idx = out.nodes.len() as Idx;
            out.by_id.insert(id, idx);
            if k.head {
                out.heads.insert(id);
            }
            out.base.kept.insert((a, seq), idx);
            if k.exp.ops().iter().any(crate::op::Op::is_membership) {
                out.record_membership(idx, k.exp.author(), k.exp.ops());
            }
            out.attestations
                .record_kept(idx, k.exp.author(), k.exp.ops());
            out.keep_void(k.void);
            if let Some(admin) = k.admin {
                out.base.admin.insert(idx, admin);
            }
            let clock = out.densify(&k.clock).into_boxed_slice();
            out.nodes.push(Node {
                exp: k.exp,
                author: a,
                depth: k.depth,
                parents: Box::new([]),
                clock,
            });
        }
        out.base.end = out.nodes.len() as Idx;
        Ok(out)
    }

    /// The checkpoint this lattice was compacted at: its depth and clock.
    pub fn compaction_point(&self) -> Option<&(u64, VectorClock)> {
        self.base.point.as_ref()
    }

    /// The highest seq of `author`'s chain compacted away (0: none).
    pub fn compacted_seq(&self, author: &crate::id::NodeId) -> u64 {
        self.author_idx(author).map_or(0, |a| self.base.below(a))
    }

    /// How many experiences below the compaction point are kept (the genesis included).
    pub fn kept_below(&self) -> usize {
        self.base.end as usize
    }

    /// Refuses an experience that is, or links as `prev` to, a seq compacted away.
    pub(super) fn check_not_behind(&self, exp: &Verified<Experience>) -> Result<(), InsertError> {
        let Some((depth, _)) = &self.base.point else {
            return Ok(());
        };
        let Some(a) = self.author_idx(&exp.author()) else {
            return Ok(());
        };
        let (seq, below) = (exp.seq(), self.base.below(a));
        let prev_gone = exp
            .header()
            .prev
            .is_some_and(|p| seq - 1 <= below && !self.by_id.contains_key(&p));
        if seq <= below || prev_gone {
            return Err(InsertError::BehindCheckpoint {
                id: exp.id(),
                author: exp.author(),
                seq,
                below,
                depth: *depth,
            });
        }
        Ok(())
    }
}
