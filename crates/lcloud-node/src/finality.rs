//! The node's part in finality: attesting checkpoints as they fall due, and reporting a
//! checkpoint whose attested roots disagree (docs/protocol.md, "Finality and checkpoints").

use lcloud_core::{CHECKPOINT_EVERY, Checkpoint, Cut, Id, Op};

use super::Node;

impl Node {
    /// At every tick: if a checkpoint is due that this node has not attested, folds the
    /// state at it and writes the attestation through the ordinary write path; then reports
    /// any divergence not reported yet.
    pub(crate) fn attest_due(&mut self) {
        if self.unstored.is_some() || self.read_only {
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
        self.compact_due();
    }

    /// With `--retain headers|checkpoint`: compacts the store at the deepest final
    /// checkpoint when `lcloud_store::compaction_due` says so, then loads the compacted
    /// store. Memory then holds the state and the history since the last compaction.
    fn compact_due(&mut self) {
        let Some(retain) = self.retain else {
            return;
        };
        if self.unstored.is_some() || !lcloud_store::compaction_due(&self.replica) {
            return;
        }
        match self.store.compact(&self.replica, retain) {
            Ok(done) => {
                tracing::info!(
                    depth = done.depth,
                    dropped = done.before - done.after,
                    kept = done.after,
                    bytes_before = done.bytes.0,
                    bytes_after = done.bytes.1,
                    "compacted the history below a final checkpoint"
                );
                self.reload();
            }
            Err(lcloud_store::StoreError::Compact(why)) => {
                // Nothing was changed; with calls to order-sensitive morphisms this stays so
                // until they can be compacted: said once, at the first try.
                if !std::mem::replace(&mut self.compaction_refused, true) {
                    tracing::warn!(error = %why, "not compacting the history");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "compaction failed; the store is as it was");
                if self.store.is_closed() {
                    self.reload();
                }
            }
        }
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
