//! A compacted replica's base: the state at its compaction point, from which its fold
//! starts, and how a replica is compacted (`docs/protocol.md`, "Compaction").

use super::{Cut, Replica};
use crate::clock::VectorClock;
use crate::doc::Doc;
use crate::experience::{Experience, Verified};
use crate::lattice::{CompactError, Idx, Kept, Lattice};
use crate::morphism::Registry;

/// The state at the compaction point, when compacted: the fold starts from it.
#[derive(Clone, Debug)]
pub(super) struct Base {
    /// Arrival indexes below this are kept below the compaction point (never folded).
    pub(super) end: Idx,
    /// The compaction point's clock, dense.
    pub(super) clock: Vec<u64>,
    /// The document at the compaction point.
    pub(super) doc: Doc,
}

impl Replica {
    /// This replica compacted at its deepest final checkpoint: the lattice keeps only what
    /// the history above the checkpoint asks about (`Lattice::compacted`), and the fold
    /// starts from the state at the checkpoint. Everything above it folds, reads and syncs
    /// as before; views of cuts that do not include the checkpoint answer
    /// `ViewError::Compacted`. The compacted replica's root is checked against this one's.
    pub fn compacted(&self) -> Result<Replica, CompactError> {
        if !self.ordered.calls.is_empty() || !self.ordered.state.deployed.is_empty() {
            return Err(CompactError::Calls);
        }
        let depth = self
            .lattice
            .fixed_depth()
            .ok_or(CompactError::NoFinalCheckpoint)?;
        let cut = self.lattice.depth_cut(depth);
        let at = self
            .state_at(&Cut::Clock(cut.clone()))
            .map_err(|e| CompactError::Base(format!("the state at the checkpoint: {e}")))?;
        let lattice = self.lattice.compacted(&at.doc.dot_experiences())?;
        let mut r = Replica::on(lattice, self.registry.clone(), at.doc);
        r.self_check = self.self_check;
        let (full, compacted) = (self.root(), r.root());
        if full != compacted {
            return Err(CompactError::Diverged { full, compacted });
        }
        Ok(r)
    }

    /// A replica on a compacted lattice whose base holds `doc`, folded above it.
    fn on(lattice: Lattice, registry: Registry, doc: Doc) -> Replica {
        let end = lattice.kept_below() as Idx;
        let clock = lattice
            .compaction_point()
            .map(|(_, c)| lattice.densify(c))
            .unwrap_or_default();
        let mut r = Replica::unfolded(lattice, registry, Some(Base { end, clock, doc }));
        r.rebuild();
        r
    }

    /// The document at the compaction point, if this replica is compacted.
    pub fn base_document(&self) -> Option<&Doc> {
        self.base.as_ref().map(|b| &b.doc)
    }

    /// A compacted replica restored from its base (`Lattice::restore`: the compaction
    /// point, the kept experiences) and the document at the compaction point, holding nothing
    /// above it yet: insert what lies above, in any order, and it folds as the replica it was
    /// taken from.
    pub fn restore(
        genesis: Verified<Experience>,
        registry: Registry,
        point: (u64, VectorClock),
        kept: Vec<Kept>,
        doc: Doc,
    ) -> Result<Replica, CompactError> {
        let lattice = Lattice::restore(genesis, point.0, point.1, kept)?;
        Ok(Replica::on(lattice, registry, doc))
    }
}

#[cfg(test)]
mod tests {
    use ed25519_consensus::SigningKey;

    use super::*;
    use crate::Genesis;
    use crate::id::NodeId;
    use crate::op::{Op, Path};
    use crate::value::Value;

    /// A compacted replica's views start from its base when no checkpoint is inside the cut,
    /// as after thinning dropped the one the base started as.
    #[test]
    fn a_compacted_replica_travels_from_its_base_without_checkpoints() {
        let keys: Vec<SigningKey> = (1..=2u8).map(|k| SigningKey::from([k; 32])).collect();
        let second = NodeId(keys[1].verification_key().to_bytes());
        let genesis =
            Experience::create_genesis(&keys[0], Genesis::members_only("t", vec![second]));
        let mut r = Replica::new(genesis).unwrap();
        // Kept below the base for `/keep`; its `/gone` was deleted by an experience that is
        // not kept: a replay of the kept experiences alone would bring `/gone` back.
        let set = |k: &str| Op::Set {
            path: Path::from(vec![k.into()]),
            value: Value::Int(1),
        };
        r.write(&keys[0], vec![set("keep"), set("gone")]).unwrap();
        r.write(
            &keys[0],
            vec![Op::Del {
                path: Path::from(vec!["gone".into()]),
            }],
        )
        .unwrap();
        let ids: Vec<NodeId> = keys
            .iter()
            .map(|k| NodeId(k.verification_key().to_bytes()))
            .collect();
        for i in 0..700i64 {
            for key in &keys {
                let op = Op::Set {
                    path: Path::from(vec![format!("k{}", i % 7)]),
                    value: Value::Int(i),
                };
                r.write(key, vec![op]).unwrap();
            }
            for (key, me) in keys.iter().zip(&ids) {
                if let Some(depth) = r.lattice().attestation_due(me, 256) {
                    let cut = Cut::Clock(r.lattice().depth_cut(depth));
                    let root = r.state_at(&cut).unwrap().root();
                    r.write(key, vec![Op::Attest { depth, root }]).unwrap();
                }
            }
        }
        let mut c = r.compacted().unwrap();
        let at = Cut::Clock(r.lattice().clock(r.lattice().len() as Idx - 3));
        let want = r.state_at(&at).unwrap().root();
        assert_eq!(c.state_at(&at).unwrap().root(), want);
        c.checkpoints.clear();
        assert_eq!(c.state_at(&at).unwrap().root(), want);
    }
}
