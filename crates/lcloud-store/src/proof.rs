//! Proofs: what a third party needs to fold one cut of a cloud again and get its root, with
//! nothing but the file — no store, no network, no trust in the node that wrote it
//! (`lcloud export --proof CUT FILE`, `lcloud verify-proof FILE`; docs/format.md, "Proofs").
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic     16 bytes  "LCLOUD-PROOF-01\n" (the digits are the proof format version)
//! head_len   8 bytes  1 ..= HEAD_MAX
//! head    head_len    DAG-CBOR [cut, root, checkpoint]
//! check     32 bytes  BLAKE3 of everything before it
//! body                with a checkpoint: a shallow bundle (shallow.rs) of the cloud at that
//!                     final checkpoint, holding above it only the cut and the attestations
//!                     that make the checkpoint final (with their links); without: a
//!                     format-1 bundle (bundle.rs) of the genesis and every experience in the
//!                     cut, links first
//! ```
//!
//! `cut` is a vector clock, `[node id, seq]` pairs in node id order, each seq one the body
//! holds (the cut is every experience whose clock is within it); `root` the state root the
//! proof claims at that cut; `checkpoint` the depth of the final checkpoint the body starts
//! from, or null when it holds the whole history up to the cut.
//!
//! What [`verify`] checks, in order: the layout and the head's checksum; every experience's
//! signature, hash and shape; every link, in order (nothing may wait for a missing one); with
//! a checkpoint, everything `shallow::restore` checks (the members' attestations make it final
//! with the root of the document the body carries); that the cut names exactly what the body
//! holds; and that the fold of the cut has the claimed root.

use std::collections::BTreeSet;

use lcloud_core::{Cut, Id, Idx, NodeId, Op, Replica, VectorClock, validate};

use crate::bundle::{self, BundleError};
use crate::shallow::{self, ShallowError};

/// The magic prefix, with the proof format version.
pub const MAGIC: &[u8; 16] = b"LCLOUD-PROOF-01\n";

/// The most bytes a head may take: a cut of a million nodes.
const HEAD_MAX: u64 = 64 << 20;

/// Why a file does not prove a root, or why a proof cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not a proof.
    #[error("not a λCLOUD proof (no LCLOUD-PROOF-01 magic at the start)")]
    NotAProof,
    /// The layout or the head's checksum is wrong.
    #[error("proof damaged: {0}")]
    Damaged(String),
    /// The body's bundle is not whole.
    #[error("the proof's history: {0}")]
    Bundle(BundleError),
    /// The body's checkpoint is not proven, or does not fit together.
    #[error("the proof's checkpoint: {0}")]
    Checkpoint(ShallowError),
    /// An experience fails validation (signature, hash, shape).
    #[error("experience #{index} of the proof is invalid: {why}")]
    Invalid {
        /// Its place in the body's bundle.
        index: usize,
        /// Why.
        why: String,
    },
    /// An experience is refused, or comes before what it links to.
    #[error("the proof's history does not fit together: {0}")]
    Links(String),
    /// The cut names what the body does not hold, or the body holds what the cut leaves out.
    #[error("the proof's cut does not match its history: {0}")]
    Cut(String),
    /// The fold of the cut has another root than the one claimed.
    #[error("the proof claims root {claimed} at its cut, but its history folds to {folded}")]
    Root {
        /// The root the head claims.
        claimed: Id,
        /// The root of the fold.
        folded: Id,
    },
    /// This replica cannot prove that cut.
    #[error("cannot make a proof: {0}")]
    Unprovable(String),
}

// Not `#[from]`: that would make them sources, and a report of the chain would name each twice.
impl From<BundleError> for ProofError {
    fn from(e: BundleError) -> ProofError {
        ProofError::Bundle(e)
    }
}

impl From<ShallowError> for ProofError {
    fn from(e: ShallowError) -> ProofError {
        ProofError::Checkpoint(e)
    }
}

/// A proof that [`verify`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The cloud (its genesis id).
    pub cloud: Id,
    /// The cut proven.
    pub cut: VectorClock,
    /// Its root, folded here.
    pub root: Id,
    /// The depth of the final checkpoint the proof starts from, if it does.
    pub checkpoint: Option<u64>,
    /// The members whose attestations make that checkpoint final.
    pub attested_by: Vec<NodeId>,
    /// Experiences checked (signature, hash, links), the genesis included.
    pub experiences: usize,
}

type Head = (Vec<(NodeId, u64)>, Id, Option<u64>);

/// A proof of `cut` in `replica`: from its deepest final checkpoint when the cut contains it
/// (unless `full`), else from the whole history. The proof is checked with [`verify`] before
/// it is returned, and must fold to this replica's own root at the cut.
pub fn export(replica: &Replica, cut: &VectorClock, full: bool) -> Result<Vec<u8>, ProofError> {
    export_checked(replica, cut, full).map(|(bytes, _)| bytes)
}

/// [`export`], with what [`verify`] found in the proof (so a caller need not check it again).
pub fn export_checked(
    replica: &Replica,
    cut: &VectorClock,
    full: bool,
) -> Result<(Vec<u8>, Checked), ProofError> {
    let lattice = replica.lattice();
    // The cut, named by what it holds: each node's highest seq within it.
    let within: Vec<Idx> = (0..lattice.len() as Idx)
        .filter(|&i| lattice.clock(i).le(cut))
        .collect();
    let mut exact = VectorClock::default();
    for &i in &within {
        exact.join(&lattice.clock(i));
    }
    let root = replica
        .state_at(&Cut::Clock(exact.clone()))
        .map_err(|e| ProofError::Unprovable(e.to_string()))?
        .root();
    // The deepest final checkpoint, compacted at, unless the whole history is asked for.
    let deepest = if full { None } else { replica.compacted().ok() };
    let point = |c: &Replica| c.lattice().compaction_point().cloned().expect("compacted");
    let checkpoint = deepest.as_ref().filter(|c| point(c).1.le(&exact));
    let body = match checkpoint {
        Some(c) => {
            let l = c.lattice();
            let depth = l.compaction_point().expect("compacted").0;
            let attestations = (l.kept_below() as Idx..l.len() as Idx).filter(|&i| {
                l.get(i)
                    .ops()
                    .iter()
                    .any(|op| matches!(op, Op::Attest { depth: d, .. } if *d == depth))
            });
            let mut needed = BTreeSet::new();
            let mut stack: Vec<Idx> = attestations.collect();
            while let Some(i) = stack.pop() {
                if needed.insert(i) {
                    stack.extend_from_slice(l.parents(i));
                }
            }
            shallow::encode(c, &|i| needed.contains(&i) || l.clock(i).le(&exact))
        }
        None => {
            if lattice.compaction_point().is_some() {
                let why = match (&deepest, full) {
                    (Some(c), _) => {
                        let (depth, at) = point(c);
                        format!(
                            "this store was compacted and the history below its checkpoints \
                             is gone: a proof starts from its deepest final checkpoint (depth \
                             {depth}), so its cut must contain that checkpoint's ({at})"
                        )
                    }
                    (None, true) => "this store was compacted and the history below its \
                                     checkpoint is gone: drop --full to start from a final \
                                     checkpoint"
                        .into(),
                    (None, false) => "this store was compacted, and no proof can start from \
                                      its checkpoint (its cloud has calls to contracts)"
                        .into(),
                };
                return Err(ProofError::Unprovable(why));
            }
            let records: Vec<Vec<u8>> = std::iter::once(0)
                .chain(within.iter().copied().filter(|&i| i != 0))
                .map(|i| lattice.get(i).to_bytes())
                .collect();
            bundle::encode(&replica.cloud(), records.iter().map(|r| r.as_slice()))
        }
    };
    let depth = checkpoint.map(|c| point(c).0);
    let head = lcloud_core::codec::to_canonical(&(
        exact.0.iter().map(|(n, s)| (*n, *s)).collect::<Vec<_>>(),
        root,
        depth,
    ));
    let mut out = crate::framed::write(MAGIC, &head, body.len());
    out.extend_from_slice(&body);
    // What a third party will check, checked here first.
    let checked = verify(&out)?;
    if checked.root != root {
        return Err(ProofError::Unprovable(format!(
            "the proof folds to {}, this node's state at the cut has root {root}",
            checked.root
        )));
    }
    Ok((out, checked))
}

/// Whether `bytes` start as a proof.
pub fn is_proof(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Checks the proof `bytes` (see the module's comment) and returns what it proves.
pub fn verify(bytes: &[u8]) -> Result<Checked, ProofError> {
    if !is_proof(bytes) {
        return Err(ProofError::NotAProof);
    }
    let (head, body) = crate::framed::read(bytes, "head", HEAD_MAX).map_err(ProofError::Damaged)?;
    let damaged = |why: &str| ProofError::Damaged(why.into());
    let (cut, claimed, depth): Head = lcloud_core::codec::from_canonical_capped(head, head.len())
        .map_err(|e| damaged(&format!("its head: {e}")))?;
    if !cut.windows(2).all(|w| w[0].0 < w[1].0) || cut.iter().any(|(_, s)| *s == 0) {
        return Err(damaged(
            "its cut is not in node id order with one seq of at least 1 per node",
        ));
    }
    let cut = VectorClock(cut.into_iter().collect());
    let (replica, experiences) = match depth {
        Some(depth) => {
            if !shallow::is_shallow(body) {
                return Err(damaged(&format!(
                    "its head names the checkpoint at depth {depth}, but its body is not a \
                     shallow bundle"
                )));
            }
            let restored = shallow::restore(body)?;
            if restored.depth != depth {
                return Err(damaged(&format!(
                    "its head names the checkpoint at depth {depth}, its body starts from \
                     depth {}",
                    restored.depth
                )));
            }
            let n = restored.replica.lattice().len();
            (restored.replica, n)
        }
        None => full_history(body)?,
    };
    let lattice = replica.lattice();
    let start = lattice.kept_below() as Idx;
    let mut held = VectorClock::default();
    for i in start..lattice.len() as Idx {
        let clock = lattice.clock(i);
        if clock.le(&cut) {
            held.join(&clock);
        } else if depth.is_none() && i > 0 {
            return Err(ProofError::Cut(format!(
                "experience {} lies outside the cut",
                lattice.get(i).id()
            )));
        }
    }
    if let Some((_, at)) = lattice.compaction_point() {
        if !at.le(&cut) {
            return Err(ProofError::Cut(format!(
                "the cut {cut} does not contain the checkpoint's ({at})"
            )));
        }
        held.join(at);
    }
    if held != cut {
        return Err(ProofError::Cut(format!(
            "the cut is {cut}, but what the proof holds within it reaches {held}"
        )));
    }
    let folded = replica
        .state_at(&Cut::Clock(cut.clone()))
        .map_err(|e| ProofError::Cut(e.to_string()))?
        .root();
    if folded != claimed {
        return Err(ProofError::Root { claimed, folded });
    }
    let attested_by = match depth {
        Some(d) => lattice
            .checkpoints()
            .into_iter()
            .find(|c| c.depth == d)
            .map(|c| c.roots.into_values().flatten().collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Checked {
        cloud: replica.cloud(),
        cut,
        root: folded,
        checkpoint: depth,
        attested_by,
        experiences,
    })
}

/// The replica of a whole history up to a cut, every experience checked and admitted in order.
fn full_history(body: &[u8]) -> Result<(Replica, usize), ProofError> {
    let b = bundle::decode(body)?;
    let Some(first) = b.records.first() else {
        return Err(ProofError::Links(
            "its history is empty (no genesis)".into(),
        ));
    };
    let genesis = validate(first, &b.cloud).map_err(|e| ProofError::Invalid {
        index: 0,
        why: e.to_string(),
    })?;
    if genesis.genesis().is_none() || genesis.id() != b.cloud {
        return Err(ProofError::Links(
            "its first experience is not the cloud's genesis".into(),
        ));
    }
    let mut replica = Replica::with_registry(genesis, lcloud_contracts::registry())
        .map_err(|e| ProofError::Links(format!("the genesis: {e}")))?;
    let mut failed = None;
    let mut index = 0;
    crate::import::validate_pipelined(&b.records[1..], &b.cloud, |result| {
        index += 1;
        if failed.is_some() {
            return;
        }
        let exp = match result {
            Ok(exp) => exp,
            Err(e) => {
                failed = Some(ProofError::Invalid {
                    index,
                    why: e.to_string(),
                });
                return;
            }
        };
        let id = exp.id();
        failed = match replica.insert(exp) {
            Ok(out) if out.duplicate => Some(ProofError::Links(format!(
                "experience #{index} ({id}) is given twice"
            ))),
            Ok(out) if out.admitted.is_empty() => Some(ProofError::Links(format!(
                "experience #{index} ({id}) comes before what it links to"
            ))),
            Ok(_) => None,
            Err(e) => Some(ProofError::Links(format!(
                "experience #{index} ({id}) is refused: {e}"
            ))),
        };
    });
    match failed {
        Some(e) => Err(e),
        None => Ok((replica, b.records.len())),
    }
}
