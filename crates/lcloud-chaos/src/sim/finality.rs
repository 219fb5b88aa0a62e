//! The finality watch: causal stability checked while the faults run.
//!
//! Every so often each node that is up reports its stable frontier
//! ([`lcloud_core::Lattice::stability`]). The watch checks that:
//!
//! - a node's frontier never moves back while its replica lives (a restart rebuilds it from
//!   the disk, so it starts over);
//! - whatever a node called stable is in the past of every experience it did not hold yet
//!   and that the fold keeps, in the history everyone ends with: no experience that comes
//!   later is concurrent with it or sorts before it;
//! - at the end every judged node reports the same stability, as it is a function of the
//!   history.
//!
//! A fork breaks the first two (whoever holds a forked key may sign anything on top of any
//! past), so they are checked only when no author forked.
//!
//! Nodes also attest checkpoints as `lcloud node` does, at every anti-entropy tick (with a
//! smaller spacing, so that a run has several): at the end no checkpoint may be divergent,
//! and every judged node must fold, at every final checkpoint, the root its members attested.
//!
//! Each node that is up also has a *compacted shadow*: a copy of its replica compacted at its
//! deepest final checkpoint ([`lcloud_core::Replica::compacted`]), compacted again at every
//! deeper one, and fed at every observation whatever the node admitted since. The shadow must
//! refuse nothing but what it compacted away (too old to merge) and report the node's root
//! every time: compacted and uncompacted nodes agree under the faults.

use lcloud_core::{Cut, InsertError, NodeId, Op, Replica, Stability, VectorClock};

use super::World;

/// Most observations kept for the check against the final history.
const KEPT_MAX: usize = 400;
/// Depths between checkpoints here.
const EVERY: u64 = 64;

impl World {
    /// Node `n` attests the deepest due checkpoint it has not attested, if it may write.
    pub(super) fn attest(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let Some(r) = node.replica.as_mut() else {
            return;
        };
        let me = NodeId(node.key.verification_key().to_bytes());
        let lattice = r.lattice();
        if lattice.has_forks() {
            return;
        }
        let Some(depth) = lattice.attestation_due(&me, EVERY) else {
            return;
        };
        let cut = Cut::Clock(lattice.depth_cut(depth));
        let Ok(state) = r.state_at(&cut) else {
            return;
        };
        let attest = Op::Attest {
            depth,
            root: state.root(),
        };
        let Ok(exp) = r.write(&node.key, vec![attest]) else {
            return;
        };
        let bytes = exp.to_bytes();
        node.disk.push(bytes.clone());
        node.ids.insert(exp.id());
        self.broadcast(n, bytes);
    }
}

/// What the watch saw and found.
#[derive(Debug, Default)]
pub struct FinalityReport {
    /// The cloud is members-only, so there is finality to watch.
    pub watched: bool,
    /// Frontiers observed.
    pub observations: usize,
    /// Experiences stable on the first node at the end.
    pub stable: u64,
    /// Experiences held by the first node at the end.
    pub held: u64,
    /// Final checkpoints at the end, and the deepest one's depth.
    pub finals: usize,
    /// The deepest final checkpoint's depth.
    pub final_depth: u64,
    /// Compactions of the shadows, and the observations at which a shadow's root was
    /// compared with its node's.
    pub compactions: usize,
    /// Observations of a compacted shadow.
    pub compared: usize,
    /// What went wrong, in words.
    pub violations: Vec<String>,
}

impl FinalityReport {
    /// Nothing went wrong.
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Default)]
pub(super) struct Watch {
    /// Per node: the restart count and the frontier at the last observation.
    last: Vec<Option<(u64, VectorClock)>>,
    /// (node, time, frontier, what the node held then).
    kept: Vec<(usize, u64, VectorClock, VectorClock)>,
    /// Per node: the restart count and its compacted shadow.
    shadows: Vec<Option<(u64, Replica)>>,
    report: FinalityReport,
}

impl Watch {
    pub(super) fn observe(&mut self, w: &World) {
        self.last.resize(w.nodes.len(), None);
        for (n, node) in w.nodes.iter().enumerate() {
            let Some(r) = node.replica.as_ref() else {
                self.last[n] = None;
                continue;
            };
            let lattice = r.lattice();
            let s = lattice.stability();
            if s.open {
                continue;
            }
            self.report.watched = true;
            self.report.observations += 1;
            if lattice.has_forks() {
                continue;
            }
            if let Some((restarts, before)) = &self.last[n]
                && *restarts == node.restarts
                && !before.le(&s.frontier)
            {
                self.report.violations.push(format!(
                    "node {n} at {} ms: stable frontier moved back from {before:?} to {:?}",
                    w.now / 1_000_000,
                    s.frontier
                ));
            }
            self.last[n] = Some((node.restarts, s.frontier.clone()));
            if self.kept.len() < KEPT_MAX && !s.frontier.0.is_empty() {
                self.kept.push((n, w.now, s.frontier, lattice.frontier()));
            }
            self.shadow(n, node.restarts, r, w.now);
        }
    }

    /// Feeds node `n`'s compacted shadow what the node admitted since, compares roots, and
    /// compacts the shadow again (or for the first time) at a deeper final checkpoint.
    fn shadow(&mut self, n: usize, restarts: u64, r: &Replica, now: u64) {
        if self.shadows.len() <= n {
            self.shadows.resize_with(n + 1, || None);
        }
        if self.shadows[n]
            .as_ref()
            .is_some_and(|(at, _)| *at != restarts)
        {
            self.shadows[n] = None;
        }
        let ms = now / 1_000_000;
        if let Some((_, shadow)) = self.shadows[n].as_mut() {
            for e in r.lattice().iter() {
                if shadow.lattice().contains(&e.id()) {
                    continue;
                }
                match shadow.insert(e.clone()) {
                    Ok(_) | Err(InsertError::BehindCheckpoint { .. }) => {}
                    Err(e) => self.report.violations.push(format!(
                        "node {n} at {ms} ms: its compacted shadow refused {e}"
                    )),
                }
            }
            self.report.compared += 1;
            if shadow.root() != r.root() {
                self.report.violations.push(format!(
                    "node {n} at {ms} ms: root {}, its compacted shadow's {}",
                    r.root(),
                    shadow.root()
                ));
                self.shadows[n] = None;
                return;
            }
        }
        let point = |x: &Replica| x.lattice().compaction_point().map(|(d, _)| *d);
        let Some(fixed) = r.lattice().fixed_depth() else {
            return;
        };
        let from = match &self.shadows[n] {
            Some((_, shadow)) if point(shadow) < Some(fixed) => shadow,
            Some(_) => return,
            None => r,
        };
        match from.compacted() {
            Ok(c) => {
                self.report.compactions += 1;
                self.shadows[n] = Some((restarts, c));
            }
            // The shadow may not know the checkpoint final yet: the next observation retries.
            Err(lcloud_core::CompactError::NoFinalCheckpoint) => {}
            Err(e) => self.report.violations.push(format!(
                "node {n} at {ms} ms: compaction at checkpoint {fixed} failed: {e}"
            )),
        }
    }

    /// The checks against the history the judged nodes end with.
    pub(super) fn finish(mut self, w: &World) -> FinalityReport {
        let judged: Vec<Stability> = w
            .judged()
            .filter_map(|n| w.nodes[n].replica.as_ref())
            .map(|r| r.lattice().stability())
            .collect();
        if let Some(first) = judged.first() {
            self.report.stable = first.stable;
            self.report.held = first.held;
            if judged.iter().any(|s| s != first) {
                self.report
                    .violations
                    .push("the judged nodes end with different stable frontiers".into());
            }
        }
        // Every judged node folds, at every final checkpoint, the root its members attested;
        // and no checkpoint has two roots.
        for n in w.judged() {
            let Some(r) = w.nodes[n].replica.as_ref() else {
                continue;
            };
            for c in r.lattice().checkpoints() {
                if c.is_divergent() {
                    self.report.violations.push(format!(
                        "node {n}: checkpoint {} is divergent: {:?}",
                        c.depth, c.roots
                    ));
                }
                if c.is_final() {
                    let here = r
                        .state_at(&Cut::Clock(r.lattice().depth_cut(c.depth)))
                        .map(|s| s.root());
                    if here.as_ref().ok() != c.root().as_ref() {
                        self.report.violations.push(format!(
                            "node {n}: final checkpoint {} attested {:?}, folded {here:?}",
                            c.depth,
                            c.root()
                        ));
                    }
                }
            }
        }
        let Some(r) = w.judged().find_map(|n| w.nodes[n].replica.as_ref()) else {
            return self.report;
        };
        let lattice = r.lattice();
        let finals: Vec<u64> = lattice
            .checkpoints()
            .iter()
            .filter(|c| c.is_final())
            .map(|c| c.depth)
            .collect();
        self.report.finals = finals.len();
        self.report.final_depth = finals.last().copied().unwrap_or(0);
        if lattice.has_forks() {
            return self.report;
        }
        for (n, at, frontier, held) in &self.kept {
            for i in 0..lattice.len() as u32 {
                let e = lattice.get(i);
                if e.seq() <= held.get(&e.author()) || lattice.is_void(i) {
                    continue;
                }
                if !frontier.le(&lattice.clock(i)) {
                    self.report.violations.push(format!(
                        "node {n} at {} ms called {frontier:?} stable, but {} came later and does \
                         not follow it",
                        at / 1_000_000,
                        e.id()
                    ));
                    break;
                }
            }
        }
        self.report
    }
}
