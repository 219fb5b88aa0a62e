//! Fork proofs: two signed headers by one author at the same place in its chain. Anyone can
//! check one with nothing but the proof itself.

use ed25519_consensus::{Signature, VerificationKey};

use crate::experience::{Experience, Header};
use crate::id::{Id, NodeId, Sig};

/// A header with its signature: enough to prove what an author signed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedHeader {
    /// The header.
    pub header: Header,
    /// The author's signature over it.
    pub sig: Sig,
}

impl SignedHeader {
    /// The signed header of `exp`.
    pub fn of(exp: &Experience) -> SignedHeader {
        SignedHeader {
            header: exp.header().clone(),
            sig: *exp.sig(),
        }
    }

    /// Whether the signature is the author's over the header (ZIP-215).
    pub fn verify(&self) -> bool {
        VerificationKey::try_from(self.header.author.0)
            .and_then(|vk| vk.verify(&Signature::from(self.sig.0), &self.header.signing_message()))
            .is_ok()
    }
}

/// Proof that an author signed two different experiences with the same seq and prev.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForkProof {
    /// The branch with the smaller id.
    pub a: SignedHeader,
    /// The branch with the larger id.
    pub b: SignedHeader,
}

/// Why a fork proof does not prove a fork.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForkProofError {
    /// The two headers are the same experience.
    #[error("both headers are the same experience")]
    SameExperience,
    /// Different authors, clouds, seqs or prevs.
    #[error("headers differ in author, cloud, seq or prev, so they are not a fork")]
    NotSamePlace,
    /// A signature fails.
    #[error("a signature in the proof does not verify")]
    BadSignature,
}

impl ForkProof {
    /// Builds the proof from two experiences, ordered by id so every node builds the same one.
    pub fn new(x: &Experience, y: &Experience) -> ForkProof {
        let (a, b) = if x.id() <= y.id() { (x, y) } else { (y, x) };
        ForkProof {
            a: SignedHeader::of(a),
            b: SignedHeader::of(b),
        }
    }

    /// The equivocating author.
    pub fn author(&self) -> NodeId {
        self.a.header.author
    }

    /// The seq at which the chain forks.
    pub fn seq(&self) -> u64 {
        self.a.header.seq
    }

    /// The two experience ids.
    pub fn ids(&self) -> (Id, Id) {
        (self.a.header.id(), self.b.header.id())
    }

    /// Checks the proof: two distinct experiences, same author, cloud, seq and prev, both
    /// signatures valid.
    pub fn check(&self) -> Result<(), ForkProofError> {
        let (x, y) = (&self.a.header, &self.b.header);
        if x == y {
            return Err(ForkProofError::SameExperience);
        }
        if x.author != y.author || x.cloud != y.cloud || x.seq != y.seq || x.prev != y.prev {
            return Err(ForkProofError::NotSamePlace);
        }
        if !self.a.verify() || !self.b.verify() {
            return Err(ForkProofError::BadSignature);
        }
        Ok(())
    }
}
