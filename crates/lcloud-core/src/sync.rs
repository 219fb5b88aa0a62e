//! The sync protocol, without I/O: what two replicas say to each other so that each ends with
//! the union of both histories. The network crate only carries these messages.
//!
//! One exchange (written up in `docs/protocol.md`):
//!
//! 1. The initiator sends [`Request::Sync`] with its [`Summary`]: per author, the height of its
//!    chain and the id at that height.
//! 2. The responder answers [`Response::Sync`]: its own summary and the first batch (at most
//!    [`BATCH_BYTES`]) of what the initiator lacks, dependencies first; `more` says whether
//!    more is missing. The responder keeps no state: the rest can be streamed to the initiator
//!    as pushes (what `lcloud node run` does), or the initiator asks again with its new
//!    summary once it has stored the batch.
//! 3. From the responder's summary the initiator knows what the responder lacks and sends it as
//!    [`Request::Push`] batches, each acknowledged by [`Response::Pushed`] before the next.
//!
//! Where both chains of an author agree at the shorter one's tip, only the longer chain's
//! suffix is sent. Where an author forked (on either side) or the two chains disagree, the
//! chains are reconciled by hashes: a summary describes each branch of such a chain by ids
//! along it at exponentially growing distances below its tip ([`Branch`]), and the other side
//! sends only what lies above the highest of those ids it holds (within a factor of two of
//! the fork's depth, never the whole chain). A side that finds a disagreement the other did
//! not describe sends nothing of that chain yet and describes its own branches in its answer;
//! [`follow_up`] tells the initiator to ask again with its branches described. An unseen fork
//! thus costs one more round trip; the common case stays at one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::codec::{self, ByteBuf, DecodeError};
use crate::id::{Id, NodeId};
use crate::lattice::{Idx, Lattice};

/// Most bytes of experiences in one message.
pub const BATCH_BYTES: usize = 1 << 20;

/// Most bytes of one encoded message (a full batch plus its summary and framing).
pub const MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Most chains one summary may describe.
pub const SUMMARY_CHAINS_MAX: usize = 65_536;

/// Most branches one chain tip describes: an author that forked more often is described by
/// its highest 64 branches, and what only the others hold is sent again (deduplicated by id),
/// never lost.
pub const BRANCHES_MAX: usize = 64;

/// Most ids along one branch: its tip, then 1, 2, 4, … 2^63 seqs below it.
pub const BRANCH_IDS_MAX: usize = 65;

/// One author's chain as a replica holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTip {
    /// The author.
    pub author: NodeId,
    /// The highest seq held.
    pub seq: u64,
    /// The id of the experience at that seq (the first one, if the chain forked there).
    pub tip: Id,
    /// The chain forked somewhere.
    pub forked: bool,
    /// Where the chain forked, or disagrees with the peer's: each branch, highest first.
    /// Empty (and absent from the bytes) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<Branch>,
}

/// One branch of an author's chain, for hash-based reconciliation: the ids of the experiences
/// at `seq`, `seq - 1`, `seq - 2`, `seq - 4`, … down to seq 1, along this branch. A replica
/// that holds any of them knows that the holder of the branch has everything below it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The seq of the branch's tip.
    pub seq: u64,
    /// Ids along the branch, from its tip down.
    pub ids: Vec<Id>,
}

/// What a replica holds, in a few bytes per author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The cloud (its genesis id).
    pub cloud: Id,
    /// One entry per author, ordered by author.
    pub chains: Vec<ChainTip>,
}

impl Summary {
    /// The summary of what `lattice` holds (parked experiences are not counted), with the
    /// branches of every author that forked.
    pub fn of(lattice: &Lattice) -> Summary {
        Summary::describing(lattice, &BTreeSet::new())
    }

    /// The summary of what `lattice` holds, with the branches of every author that forked and
    /// of the authors in `also` (chains found to disagree with a peer's).
    pub fn describing(lattice: &Lattice, also: &BTreeSet<NodeId>) -> Summary {
        let forked = lattice.forked_authors();
        let mut chains: Vec<ChainTip> = lattice
            .authors()
            .iter()
            .filter_map(|a| {
                let seq = lattice.height(a);
                let tip = *lattice.at_seq(a, seq).first()?;
                let fork = forked.get(a).copied();
                Some(ChainTip {
                    author: *a,
                    seq,
                    tip: lattice.get(tip).id(),
                    forked: fork.is_some(),
                    branches: if fork.is_some() || also.contains(a) {
                        branches(lattice, a, fork)
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect();
        chains.sort_by_key(|c| c.author);
        Summary {
            cloud: lattice.cloud(),
            chains,
        }
    }

    /// Total experiences a replica with this summary holds at least (sum of heights).
    pub fn height(&self) -> u64 {
        self.chains.iter().map(|c| c.seq).sum()
    }
}

/// A message from the initiator of an exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// "This is what I hold; send me what I lack."
    Sync {
        /// The initiator's summary.
        summary: Summary,
    },
    /// Experiences the responder lacks (canonical bytes), dependencies first.
    Push {
        /// The cloud they belong to.
        cloud: Id,
        /// The experiences.
        exps: Vec<ByteBuf>,
    },
}

/// A message from the responder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The responder's summary and a batch of what the initiator lacks.
    Sync {
        /// The responder's summary.
        summary: Summary,
        /// Experiences the initiator lacks, dependencies first.
        exps: Vec<ByteBuf>,
        /// More is missing: ask again after storing these.
        more: bool,
    },
    /// A push was received: how many experiences were new and how many were refused.
    Pushed {
        /// New experiences stored (admitted or parked).
        new: u32,
        /// Experiences refused as invalid.
        rejected: u32,
    },
    /// The responder will not serve this peer (not a member, another cloud, misbehaving).
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// The canonical encoding of a list of experiences (an array of byte strings), appended to
/// `out`.
fn write_exps(out: &mut Vec<u8>, exps: &[ByteBuf]) {
    codec::write_head(out, 4, exps.len() as u64);
    for e in exps {
        codec::write_bytes(out, &e.0);
    }
}

/// Bytes that `exps` take encoded, at most.
fn exps_len(exps: &[ByteBuf]) -> usize {
    9 + exps.iter().map(|e| 9 + e.0.len()).sum::<usize>()
}

// The messages that carry experiences are written straight into one buffer of their size:
// serde's DAG-CBOR encoder writes each field of a struct into a buffer of its own, copies it
// and then copies it into the output (to sort the keys), which for a batch of a megabyte was
// three megabytes of fresh memory on each side, and page faults were a fifth of the CPU time
// of a sync. The bytes are the same (`tests/sync.rs` compares them with serde's); keys are in
// DAG-CBOR order (shorter first, then bytewise).

impl Request {
    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Request::Push { cloud, exps } => {
                let mut out = Vec::with_capacity(64 + exps_len(exps));
                codec::write_head(&mut out, 5, 1);
                codec::write_text(&mut out, "Push");
                codec::write_head(&mut out, 5, 2);
                codec::write_text(&mut out, "exps");
                write_exps(&mut out, exps);
                codec::write_text(&mut out, "cloud");
                codec::write_bytes(&mut out, cloud.as_bytes());
                out
            }
            Request::Sync { .. } => codec::to_canonical(self),
        }
    }

    /// Decodes a request of at most [`MESSAGE_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Request, DecodeError> {
        let r: Request =
            codec::from_canonical_capped_with(bytes, MESSAGE_BYTES_MAX, Request::to_bytes)?;
        if let Request::Sync { summary } = &r {
            check_summary(summary)?;
        }
        Ok(r)
    }
}

impl Response {
    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Response::Sync {
                summary,
                exps,
                more,
            } => {
                let summary = codec::to_canonical(summary);
                let mut out = Vec::with_capacity(64 + exps_len(exps) + summary.len());
                codec::write_head(&mut out, 5, 1);
                codec::write_text(&mut out, "Sync");
                codec::write_head(&mut out, 5, 3);
                codec::write_text(&mut out, "exps");
                write_exps(&mut out, exps);
                codec::write_text(&mut out, "more");
                out.push(if *more { 0xf5 } else { 0xf4 });
                codec::write_text(&mut out, "summary");
                out.extend_from_slice(&summary);
                out
            }
            _ => codec::to_canonical(self),
        }
    }

    /// Decodes a response of at most [`MESSAGE_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Response, DecodeError> {
        let r: Response =
            codec::from_canonical_capped_with(bytes, MESSAGE_BYTES_MAX, Response::to_bytes)?;
        if let Response::Sync { summary, .. } = &r {
            check_summary(summary)?;
        }
        Ok(r)
    }
}

fn check_summary(s: &Summary) -> Result<(), DecodeError> {
    if s.chains.len() > SUMMARY_CHAINS_MAX {
        return Err(DecodeError::Shape(format!(
            "a summary of {} chains (at most {SUMMARY_CHAINS_MAX})",
            s.chains.len()
        )));
    }
    for c in &s.chains {
        if c.branches.len() > BRANCHES_MAX {
            return Err(DecodeError::Shape(format!(
                "a chain of {} branches (at most {BRANCHES_MAX})",
                c.branches.len()
            )));
        }
        if let Some(b) = c.branches.iter().find(|b| b.ids.len() > BRANCH_IDS_MAX) {
            return Err(DecodeError::Shape(format!(
                "a branch of {} ids (at most {BRANCH_IDS_MAX})",
                b.ids.len()
            )));
        }
    }
    Ok(())
}

/// The experience of `author` at `seq` on the branch through `from` (an experience of
/// `author` at or above `seq`). Below `fork` (the lowest seq at which `author` forked) the
/// chain is linear and is read directly; above it, `prev` links are followed.
fn ancestor(lattice: &Lattice, author: &NodeId, from: Idx, seq: u64, fork: u64) -> Option<Idx> {
    if seq < fork {
        return lattice.at_seq(author, seq).first().copied();
    }
    let mut cur = from;
    loop {
        let e = lattice.get(cur);
        if e.seq() <= seq {
            return (e.seq() == seq).then_some(cur);
        }
        cur = lattice.idx(e.header().prev.as_ref()?)?;
    }
}

/// The branches of `author`'s chain (one if it never forked; `fork` is the lowest seq at which
/// it did), highest first, at most [`BRANCHES_MAX`].
fn branches(lattice: &Lattice, author: &NodeId, fork: Option<u64>) -> Vec<Branch> {
    let height = lattice.height(author);
    let fork = fork.unwrap_or(u64::MAX);
    // Tips: experiences no other experience of the author names as `prev`. Below the lowest
    // fork every experience has a successor, so only seqs from there up are looked at.
    let mut tips: Vec<Idx> = Vec::new();
    for seq in (fork.min(height).max(1)..=height).rev() {
        let above: BTreeSet<Id> = lattice
            .at_seq(author, seq + 1)
            .iter()
            .filter_map(|i| lattice.get(*i).header().prev)
            .collect();
        tips.extend(
            lattice
                .at_seq(author, seq)
                .iter()
                .filter(|i| !above.contains(&lattice.get(**i).id())),
        );
        if tips.len() >= BRANCHES_MAX {
            break;
        }
    }
    tips.truncate(BRANCHES_MAX);
    tips.iter()
        .map(|&tip| {
            let seq = lattice.get(tip).seq();
            let mut ids = vec![lattice.get(tip).id()];
            let (mut at, mut step) = (tip, 1u64);
            while let Some(below) = seq.checked_sub(step).filter(|s| *s >= 1) {
                match ancestor(lattice, author, at, below, fork) {
                    Some(i) => {
                        ids.push(lattice.get(i).id());
                        at = i;
                    }
                    None => break,
                }
                step = match step.checked_mul(2) {
                    Some(s) => s,
                    None => break,
                };
            }
            Branch { seq, ids }
        })
        .collect()
}

/// The admitted experience `id`, if it is `author`'s.
fn of_author(lattice: &Lattice, author: &NodeId, id: &Id) -> Option<Idx> {
    lattice
        .idx(id)
        .filter(|i| lattice.get(*i).author() == *author)
}

/// The authors whose chains `theirs` shows to disagree with `lattice`'s in a way the summary
/// cannot settle: they hold a branch tip we lack, or another experience at a seq we hold.
/// Describing our branches of these authors lets the peer send exactly what we lack.
pub fn diverged(lattice: &Lattice, theirs: &Summary) -> BTreeSet<NodeId> {
    let mut out = BTreeSet::new();
    for t in &theirs.chains {
        let held = |id: &Id| of_author(lattice, &t.author, id).is_some();
        let disagrees = if t.branches.is_empty() {
            !held(&t.tip) && !lattice.at_seq(&t.author, t.seq).is_empty()
        } else {
            t.branches
                .iter()
                .any(|b| b.ids.first().is_none_or(|id| !held(id)))
        };
        if disagrees {
            out.insert(t.author);
        }
    }
    out
}

/// After an answer whose summary is `theirs`, to a request that described the branches of
/// `described`: the authors to describe in one more `Sync` request (empty in the common
/// case, and never an author already described, so an exchange takes at most two rounds).
pub fn follow_up(
    lattice: &Lattice,
    theirs: &Summary,
    described: &BTreeSet<NodeId>,
) -> BTreeSet<NodeId> {
    diverged(lattice, theirs)
        .into_iter()
        .filter(|a| !described.contains(a))
        .collect()
}

/// What a replica whose summary is `theirs` lacks of `lattice`, in arrival order (so every
/// experience comes after what it depends on).
pub fn missing(lattice: &Lattice, theirs: &Summary) -> Vec<Idx> {
    let forked = lattice.forked_authors();
    let mut out: Vec<Idx> = Vec::new();
    for author in lattice.authors() {
        let height = lattice.height(author);
        let seen = theirs
            .chains
            .binary_search_by(|c| c.author.cmp(author))
            .ok()
            .map(|i| &theirs.chains[i]);
        let ours = |id: &Id| of_author(lattice, author, id);
        // The experiences of ours they are known to hold: everything below each point.
        let points: Vec<Idx> = match seen {
            None => Vec::new(),
            Some(t) if !t.branches.is_empty() => t
                .branches
                .iter()
                .filter_map(|b| b.ids.iter().find_map(ours))
                .collect(),
            Some(t) => match ours(&t.tip) {
                Some(i) => vec![i],
                // Another experience at a seq we hold: the chains disagree and their summary
                // does not say where. Nothing yet: our answer describes our branches, and
                // they ask again describing theirs (`follow_up`).
                // Or they are ahead on this chain: nothing to send either way.
                None => continue,
            },
        };
        let fork = forked.get(author).copied().unwrap_or(u64::MAX);
        // Below the lowest fork the chain is linear: seqs up to `low` are all known to them.
        let low = points
            .iter()
            .map(|p| lattice.get(*p).seq().min(fork.saturating_sub(1)))
            .max()
            .unwrap_or(0);
        // Above it, what lies on the branches through the points.
        let mut known: BTreeSet<Idx> = BTreeSet::new();
        for p in &points {
            let mut cur = Some(*p);
            while let Some(i) = cur {
                let e = lattice.get(i);
                if e.seq() < fork || !known.insert(i) {
                    break;
                }
                cur = e.header().prev.as_ref().and_then(|p| lattice.idx(p));
            }
        }
        // Nothing at or below the compaction point: what is kept there would only wait at
        // the peer for links it cannot get (`behind` tells a peer that lacks them).
        let low = low.max(lattice.compacted_seq(author));
        for seq in low + 1..=height {
            out.extend(
                lattice
                    .at_seq(author, seq)
                    .iter()
                    .filter(|i| !known.contains(i)),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Where a peer is behind a compaction point: the first author (in id order) whose chain it
/// holds only up to a seq this replica compacted away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    /// The depth of the checkpoint compacted at.
    pub depth: u64,
    /// The author.
    pub author: NodeId,
    /// Where the peer's chain of that author ends.
    pub theirs: u64,
    /// The author's seq at the compaction point: this replica holds its chain above it only.
    pub below: u64,
}

/// Whether a replica whose summary is `theirs` lacks history that `lattice` compacted away
/// (some author's chain ends below the compaction point there): the depth of the checkpoint
/// compacted at, if so. [`missing`] never sends what lies at or below it; such a peer can
/// only catch up from the checkpoint.
pub fn behind(lattice: &Lattice, theirs: &Summary) -> Option<u64> {
    behind_by(lattice, theirs).map(|b| b.depth)
}

/// [`behind`], saying where.
pub fn behind_by(lattice: &Lattice, theirs: &Summary) -> Option<Behind> {
    let (depth, clock) = lattice.compaction_point()?;
    clock.0.iter().find_map(|(author, below)| {
        let seq = theirs
            .chains
            .binary_search_by(|c| c.author.cmp(author))
            .map_or(0, |i| theirs.chains[i].seq);
        (seq < *below).then_some(Behind {
            depth: *depth,
            author: *author,
            theirs: seq,
            below: *below,
        })
    })
}

/// How a refusal to a peer that is [`behind`] starts (`Response::Refused`).
pub const BEHIND: &str = "behind checkpoint";

/// The refusal to a peer that is [`behind`]: what it lacks is too old to merge from here.
pub fn behind_reason(b: &Behind) -> String {
    format!(
        "{BEHIND}: this node compacted its history below the final checkpoint of depth {} and \
         your chains end below it (yours of {} at seq {}, compacted here up to seq {}), so \
         what you lack is too old to merge from here; sync from a node that keeps its whole \
         history (`lcloud node run --retain full`)",
        b.depth,
        b.author.short(),
        b.theirs,
        b.below
    )
}

/// The first batch of `missing` (at most [`BATCH_BYTES`], at least one experience) as
/// canonical bytes, and whether more remain.
pub fn batch(lattice: &Lattice, missing: &[Idx], max_bytes: usize) -> (Vec<ByteBuf>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (n, idx) in missing.iter().enumerate() {
        let b = lattice.get(*idx).to_bytes();
        if n > 0 && bytes + b.len() > max_bytes {
            return (out, true);
        }
        bytes += b.len();
        out.push(ByteBuf(b));
    }
    (out, false)
}

/// The responder's answer to `Request::Sync` (the cloud is checked by the caller).
pub fn answer(lattice: &Lattice, theirs: &Summary, max_bytes: usize) -> Response {
    let (exps, more) = batch(lattice, &missing(lattice, theirs), max_bytes);
    Response::Sync {
        summary: answering(lattice, theirs),
        exps,
        more,
    }
}

/// The responder's summary in its answer to `theirs`: the branches of every author that
/// forked and of every chain that disagrees with theirs ([`diverged`]) are described, so the
/// initiator pushes exactly what the responder lacks.
pub fn answering(lattice: &Lattice, theirs: &Summary) -> Summary {
    Summary::describing(lattice, &diverged(lattice, theirs))
}
