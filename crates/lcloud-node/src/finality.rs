//! The node's part in finality: attesting checkpoints as they fall due, and reporting a
//! checkpoint whose attested roots disagree (docs/protocol.md, "Finality and checkpoints").

use lcloud_core::{CHECKPOINT_EVERY, Checkpoint, Cut, Id, Op};

use super::Node;

impl Node {
    /// At every tick: if a checkpoint is due that this node has not attested, folds the
    /// state at it and writes the attestation through the ordinary write path; then reports
    /// any divergence not reported yet.
    pub(crate) fn attest_due(&mut self) {
        if self.unstored.is_some() {
            return;
        }
        let me = self.identity.id();
        if let Some(depth) = self
            .replica
            .lattice()
            .attestation_due(&me, CHECKPOINT_EVERY)
        {
            match self.root_at_depth(depth) {
                Ok(root) => match self.write(vec![vec![Op::Attest { depth, root }]]).pop() {
                    Some(Ok(w)) => {
                        tracing::info!(depth, root = %root.to_hex(), id = %w.id.to_hex(), "attested a checkpoint");
                    }
                    Some(Err(e)) => {
                        tracing::warn!(depth, error = %e, "could not write the attestation of a checkpoint; trying again at the next tick");
                    }
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(depth, error = %e, "could not fold the state at a checkpoint; trying again at the next tick");
                }
            }
        }
        self.report_divergences();
    }

    /// The state root at checkpoint `depth`: from the store's time-travel index where it can
    /// answer, else folded from the replica.
    fn root_at_depth(&self, depth: u64) -> Result<Id, String> {
        let clock = self.replica.lattice().depth_cut(depth);
        if let Some(state) = self
            .store
            .state_at_clock(&clock)
            .map_err(|e| e.to_string())?
        {
            return Ok(state.root());
        }
        self.replica
            .state_at(&Cut::Clock(clock))
            .map(|s| s.root())
            .map_err(|e| e.to_string())
    }

    /// Logs, once each, the checkpoints whose attested roots disagree: two members folded one
    /// cut to different states, a divergence never ignored.
    fn report_divergences(&mut self) {
        for c in self.replica.lattice().checkpoints() {
            if c.is_divergent() && self.divergences_reported.insert(c.depth) {
                tracing::error!(depth = c.depth, roots = %describe(&c), "DIVERGENCE: members attested different state roots at one checkpoint");
            }
        }
    }
}

/// `root by node,node; root by node` for a log line.
fn describe(c: &Checkpoint) -> String {
    c.roots
        .iter()
        .map(|(root, by)| {
            let by: Vec<String> = by.iter().map(|n| n.to_hex()).collect();
            format!("{} by {}", root.to_hex(), by.join(","))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
