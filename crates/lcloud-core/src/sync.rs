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
//! suffix is sent. Where they disagree (a fork, or an author forked on either side), the whole
//! chain of that author is sent and the receiver keeps what it lacks: forks are rare and the
//! receiver deduplicates by id.

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
    /// The summary of what `lattice` holds (parked experiences are not counted).
    pub fn of(lattice: &Lattice) -> Summary {
        let forked = lattice.forked_authors();
        let mut chains: Vec<ChainTip> = lattice
            .authors()
            .iter()
            .filter_map(|a| {
                let chain = lattice.chain(a);
                let last = chain.last()?;
                let first_at_last = chain
                    .iter()
                    .find(|e| e.seq() == last.seq())
                    .expect("the last seq is in the chain");
                Some(ChainTip {
                    author: *a,
                    seq: last.seq(),
                    tip: first_at_last.id(),
                    forked: forked.contains_key(a),
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

impl Request {
    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_canonical(self)
    }

    /// Decodes a request of at most [`MESSAGE_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Request, DecodeError> {
        let r: Request = codec::from_canonical_capped(bytes, MESSAGE_BYTES_MAX)?;
        if let Request::Sync { summary } = &r {
            check_summary(summary)?;
        }
        Ok(r)
    }
}

impl Response {
    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_canonical(self)
    }

    /// Decodes a response of at most [`MESSAGE_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Response, DecodeError> {
        let r: Response = codec::from_canonical_capped(bytes, MESSAGE_BYTES_MAX)?;
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
    Ok(())
}

/// What a replica whose summary is `theirs` lacks of `lattice`, in arrival order (so every
/// experience comes after what it depends on).
pub fn missing(lattice: &Lattice, theirs: &Summary) -> Vec<Idx> {
    let forked = lattice.forked_authors();
    let mut out: Vec<Idx> = Vec::new();
    for author in lattice.authors() {
        let chain = lattice.chain(author);
        let seen = theirs
            .chains
            .binary_search_by(|c| c.author.cmp(author))
            .ok()
            .map(|i| &theirs.chains[i]);
        let from_seq = match seen {
            None => 0,
            Some(t) if t.forked || forked.contains_key(author) => 0,
            Some(t) => match chain.iter().find(|e| e.seq() == t.seq) {
                Some(e) if e.id() == t.tip => t.seq,
                // Same seq, another experience: a fork they have not seen. Send it all.
                Some(_) => 0,
                // They are ahead on this chain (or we hold less of it): nothing to send.
                None => continue,
            },
        };
        out.extend(
            chain
                .iter()
                .filter(|e| e.seq() > from_seq)
                .filter_map(|e| lattice.idx(&e.id())),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
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
        summary: Summary::of(lattice),
        exps,
        more,
    }
}
