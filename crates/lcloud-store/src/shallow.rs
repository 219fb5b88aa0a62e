//! Shallow bundles: a cloud from its deepest final checkpoint on, for `lcloud join --shallow`
//! (docs/store.md, "Shallow bundles").
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic    16 bytes  "LCLOUD-SHALLOW1\n" (the digit is the format version)
//! base_len  8 bytes  1 ..= the rest of the file
//! base     base_len  DAG-CBOR [depth, clock, kept, leaves] (below)
//! check    32 bytes  BLAKE3 of everything before it
//! bundle             a format-1 bundle (bundle.rs) of the genesis, the kept experiences in
//!                    the order of `kept`, and everything above the checkpoint, links first
//! ```
//!
//! `depth` and `clock` (`[node id, seq]` pairs) name the checkpoint; `kept` holds, for each
//! experience kept below it, `[depth, clock, void, head, admin]` as the full history said
//! (`Kept`; admin as in the store's base); `leaves` are the document at the checkpoint,
//! `[path, leaf bytes]` in path order.
//!
//! What a joiner checks before it stores anything: the layout and both checksums, every
//! experience's signature and shape, that the base fits the checkpoint (`Lattice::restore`),
//! that everything above is admitted in order, and that the members' attestations make that
//! checkpoint final with the root of the document the base carries. What no signature binds
//! (the kept experiences' clocks and flags, which only later folds read) is checked for
//! consistency only: see docs/security.md.

use std::sync::Arc;

use lcloud_core::codec::ByteBuf;
use lcloud_core::{
    Cut, Doc, Experience, Id, Idx, Kept, Leaf, NodeId, Path, Replica, VectorClock, Verified,
    validate,
};

use crate::bundle;

/// The magic prefix, with the format version.
pub const MAGIC: &[u8; 16] = b"LCLOUD-SHALLOW1\n";

/// Why a file is not a usable shallow bundle, or its base not what the members attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShallowError {
    /// Not a shallow bundle.
    #[error("not a shallow bundle (no LCLOUD-SHALLOW1 magic at the start)")]
    NotShallow,
    /// The layout or a checksum is wrong.
    #[error("shallow bundle damaged: {0}")]
    Damaged(String),
    /// The records' bundle is not whole.
    #[error("shallow bundle: {0}")]
    Bundle(#[from] bundle::BundleError),
    /// An experience fails validation.
    #[error("experience #{index} of the shallow bundle is invalid: {why}")]
    Invalid {
        /// Its place in the bundle.
        index: usize,
        /// Why.
        why: String,
    },
    /// The base does not fit together, or what lies above does not build on it.
    #[error("the shallow bundle does not fit together: {0}")]
    Base(String),
    /// The checkpoint is not final, or final with another root.
    #[error("the shallow bundle's checkpoint (depth {depth}) is not proven: {why}")]
    Unproven {
        /// The checkpoint's depth.
        depth: u64,
        /// What is missing or wrong.
        why: String,
    },
}

type KeptRecord = (u64, Vec<(NodeId, u64)>, bool, bool, u8);
type BaseRecord = (
    u64,
    Vec<(NodeId, u64)>,
    Vec<KeptRecord>,
    Vec<(Path, ByteBuf)>,
);

/// A shallow bundle of `replica`, compacted at its deepest final checkpoint (as it is, if it
/// is compacted there already).
pub fn export(replica: &Replica) -> Result<Vec<u8>, lcloud_core::CompactError> {
    Ok(encode(&replica.compacted()?, &|_| true))
}

/// The shallow bundle of the compacted replica `c`: its base, the genesis, the kept
/// experiences, and of what lies above the checkpoint those (in arrival order) that `above`
/// keeps, which must include the links of each one it keeps.
pub(crate) fn encode(c: &Replica, above: &dyn Fn(Idx) -> bool) -> Vec<u8> {
    let lattice = c.lattice();
    let (depth, clock) = lattice.compaction_point().cloned().expect("compacted");
    let kept: Vec<KeptRecord> = lattice
        .kept()
        .into_iter()
        .map(|k| {
            let admin = crate::store::admin_bits(k.admin);
            (
                k.depth,
                k.clock.0.into_iter().collect(),
                k.void,
                k.head,
                admin,
            )
        })
        .collect();
    let doc = c.base_document().expect("compacted");
    let leaves: Vec<(Path, ByteBuf)> = doc
        .leaves_under(&Path::root())
        .map(|(p, l)| (p.clone(), ByteBuf(l.to_bytes())))
        .collect();
    let below = lattice.kept_below();
    let base = lcloud_core::codec::to_canonical(&(
        depth,
        clock.0.into_iter().collect::<Vec<_>>(),
        kept,
        leaves,
    ));
    let mut out = crate::framed::write(MAGIC, &base, 0);
    let records: Vec<Vec<u8>> = lattice
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < below || above(*i as Idx))
        .map(|(_, e)| e.to_bytes())
        .collect();
    out.extend_from_slice(&bundle::encode(
        &lattice.get(0).id(),
        records.iter().map(|r| r.as_slice()),
    ));
    out
}

/// Whether `bytes` start as a shallow bundle.
pub fn is_shallow(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// A replica restored from a shallow bundle, checked (see the module's comment).
#[derive(Debug)]
pub struct Restored {
    /// The compacted replica: the checkpoint's base and everything above it.
    pub replica: Replica,
    /// The checkpoint's depth.
    pub depth: u64,
    /// The root the members attested there, which the base's document has.
    pub root: Id,
}

/// Restores and checks the shallow bundle `bytes`.
pub fn restore(bytes: &[u8]) -> Result<Restored, ShallowError> {
    if !is_shallow(bytes) {
        return Err(ShallowError::NotShallow);
    }
    let (base, rest) =
        crate::framed::read(bytes, "base", u64::MAX).map_err(ShallowError::Damaged)?;
    let (depth, clock, kept, leaves): BaseRecord =
        lcloud_core::codec::from_canonical_capped(base, base.len())
            .map_err(|e| ShallowError::Damaged(format!("its base: {e}")))?;
    let b = bundle::decode(rest)?;
    let bad = |why: String| ShallowError::Base(why);
    if kept.len() >= b.records.len() {
        return Err(bad(format!(
            "{} kept experiences named, {} records held",
            kept.len(),
            b.records.len()
        )));
    }
    let mut exps: Vec<Verified<Experience>> = Vec::with_capacity(b.records.len());
    for (index, r) in b.records.iter().enumerate() {
        let exp = validate(r, &b.cloud).map_err(|e| ShallowError::Invalid {
            index,
            why: e.to_string(),
        })?;
        exps.push(exp);
    }
    let mut exps = exps.into_iter();
    let genesis = exps.next().expect("more records than kept");
    if genesis.genesis().is_none() || genesis.id() != b.cloud {
        return Err(bad("its first experience is not the cloud's genesis".into()));
    }
    let mut restored_kept = Vec::with_capacity(kept.len());
    for (k, exp) in kept.into_iter().zip(exps.by_ref()) {
        let (d, c, void, head, admin) = k;
        let admin = crate::store::admin_of(admin).map_err(bad)?;
        restored_kept.push(Kept {
            exp: Arc::new(exp),
            depth: d,
            clock: VectorClock(c.into_iter().collect()),
            void,
            admin,
            head,
        });
    }
    let mut doc = Doc::default();
    let mut seen = std::collections::BTreeSet::new();
    for (path, leaf) in leaves {
        let leaf =
            Leaf::from_bytes(&leaf.0).map_err(|e| bad(format!("the leaf at {path}: {e}")))?;
        if leaf.is_empty() || !seen.insert(path.clone()) {
            return Err(bad(format!("the leaf at {path} is empty or given twice")));
        }
        doc.insert_leaf(path, leaf);
    }
    let point = VectorClock(clock.into_iter().collect());
    let mut replica = Replica::restore(
        genesis,
        lcloud_contracts::registry(),
        (depth, point.clone()),
        restored_kept,
        doc,
    )
    .map_err(|e| bad(e.to_string()))?;
    for exp in exps {
        let id = exp.id();
        let out = replica
            .insert(exp)
            .map_err(|e| bad(format!("experience {id} above the checkpoint: {e}")))?;
        if out.admitted.is_empty() {
            return Err(bad(format!(
                "experience {id} above the checkpoint comes before what it links to"
            )));
        }
    }
    let unproven = |why: String| ShallowError::Unproven { depth, why };
    let root = replica
        .state_at(&Cut::Clock(point))
        .map_err(|e| unproven(e.to_string()))?
        .root();
    let checkpoint = replica
        .lattice()
        .checkpoints()
        .into_iter()
        .find(|c| c.depth == depth)
        .ok_or_else(|| unproven("no member's attestation of it is in the bundle".into()))?;
    if !checkpoint.is_final() {
        return Err(unproven(format!(
            "not every member attested it (missing: {})",
            checkpoint
                .missing
                .iter()
                .map(|n| n.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if checkpoint.root() != Some(root) {
        return Err(unproven(format!(
            "the members attested root {}, the bundle's document has root {root}",
            checkpoint
                .root()
                .map_or_else(|| "(several)".into(), |r| r.to_hex())
        )));
    }
    if replica.lattice().fixed_depth() != Some(depth) {
        return Err(unproven(
            "it is not the deepest final checkpoint the bundle holds".into(),
        ));
    }
    Ok(Restored {
        replica,
        depth,
        root,
    })
}
