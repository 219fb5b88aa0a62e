//! Validation: the stateless checks that alone make a [`Verified`] experience from untrusted
//! bytes (canonical decoding, the cloud, the shape, the ops digest, the signature under
//! ZIP-215), one at a time or in batches whose signatures are checked together; each refusal
//! named after the rule it breaks.

use super::*;

/// Why an experience was refused. Each variant is named after the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The bytes are not a canonical experience encoding.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// The experience belongs to another cloud.
    #[error("wrong cloud: experience names cloud {found}, expected {expected}")]
    WrongCloud {
        /// The cloud being validated for.
        expected: CloudId,
        /// The cloud the header names.
        found: CloudId,
    },
    /// `seq` is 0, or `seq == 1` and `prev` disagree.
    #[error("seq {seq} does not match prev ({})", if *.has_prev { "present" } else { "absent" })]
    SeqPrevMismatch {
        /// The seq.
        seq: u64,
        /// Whether prev is present.
        has_prev: bool,
    },
    /// Deps are not strictly ascending.
    #[error("deps are not sorted ascending without duplicates")]
    DepsNotSorted,
    /// Prev also appears among deps.
    #[error("prev is repeated among deps")]
    DepIsPrev,
    /// A first experience that does not descend from anything (only a genesis may).
    #[error("first experience of a chain names no deps, so it does not descend from genesis")]
    NotRootedInGenesis,
    /// Too many deps.
    #[error("{0} deps, at most {DEPS_MAX} allowed")]
    TooManyDeps(usize),
    /// No ops, or too many.
    #[error("{0} ops: an experience carries 1 to {OPS_MAX}")]
    OpCount(usize),
    /// The ops do not hash to the header's ops digest.
    #[error("ops digest mismatch: ops hash to {found}, header says {expected}")]
    OpsDigestMismatch {
        /// The digest in the header.
        expected: Id,
        /// The digest of the ops carried.
        found: Id,
    },
    /// A genesis op outside a genesis, or a genesis without exactly one.
    #[error("genesis op misplaced: a genesis carries exactly one genesis op and nothing else")]
    GenesisOpMisplaced,
    /// A genesis that links to something.
    #[error("genesis must have seq 1, no prev and no deps")]
    GenesisNotFirst,
    /// A path breaks the size rules.
    #[error("bad path in op {index}: {error}")]
    BadPath {
        /// Op index.
        index: usize,
        /// What is wrong.
        error: PathError,
    },
    /// The author field is not a valid Ed25519 public key encoding.
    #[error("author {0} is not a valid Ed25519 public key")]
    BadAuthorKey(NodeId),
    /// The signature does not verify under ZIP-215.
    #[error("bad signature on experience {0}")]
    BadSignature(Id),
}

impl ValidationError {
    /// A short, stable label for the rule broken (no ids, offsets or counts), for metrics and
    /// logs: one label per variant, and per kind of decoding error for malformed bytes.
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::Malformed(e) => match e {
                DecodeError::Truncated(_) => "malformed: truncated",
                DecodeError::TrailingBytes(_) => "malformed: trailing bytes",
                DecodeError::LengthTooLarge { .. } => "malformed: length exceeds input",
                DecodeError::TooDeep { .. } => "malformed: nesting too deep",
                DecodeError::NotDagCbor { .. } => "malformed: not DAG-CBOR",
                DecodeError::Shape(_) => "malformed: wrong shape",
                DecodeError::NonCanonical => "malformed: non-canonical",
                DecodeError::TooLarge { .. } => "malformed: too large",
            },
            ValidationError::WrongCloud { .. } => "wrong cloud",
            ValidationError::SeqPrevMismatch { .. } => "seq does not match prev",
            ValidationError::DepsNotSorted => "deps not sorted",
            ValidationError::DepIsPrev => "prev repeated among deps",
            ValidationError::NotRootedInGenesis => "not rooted in genesis",
            ValidationError::TooManyDeps(_) => "too many deps",
            ValidationError::OpCount(_) => "op count",
            ValidationError::OpsDigestMismatch { .. } => "ops digest mismatch",
            ValidationError::GenesisOpMisplaced => "genesis op misplaced",
            ValidationError::GenesisNotFirst => "genesis not first",
            ValidationError::BadPath { .. } => "bad path",
            ValidationError::BadAuthorKey(_) => "bad author key",
            ValidationError::BadSignature(_) => "bad signature",
        }
    }
}

/// Decodes and validates one experience for `cloud` (the genesis itself validates against its
/// own id). Checks the canonical encoding, the size bounds, the shape rules and the signature
/// under ZIP-215. Checks that need other experiences (prev's seq, membership, that deps exist)
/// happen when the lattice admits it.
pub fn validate(bytes: &[u8], cloud: &CloudId) -> Result<Verified<Experience>, ValidationError> {
    let raw = decode_and_check(bytes, cloud, false)?;
    let author = raw.exp.header.author;
    let vk =
        VerificationKey::try_from(author.0).map_err(|_| ValidationError::BadAuthorKey(author))?;
    vk.verify(&Signature::from(raw.exp.sig.0), &raw.signing_message())
        .map_err(|_| ValidationError::BadSignature(raw.exp.id))?;
    Ok(Verified(raw.exp))
}

/// Re-admits bytes that this node itself validated and stored earlier, checking everything
/// [`validate`] checks except the signature. Only for a node's own store, whose records carry
/// checksums; never for bytes from a peer or a file (`lcloud verify` re-checks signatures).
pub fn revalidate_stored(
    bytes: &[u8],
    cloud: &CloudId,
) -> Result<Verified<Experience>, ValidationError> {
    decode_and_check(bytes, cloud, true).map(|raw| Verified(raw.exp))
}

/// Validates many experiences with one ZIP-215 batch verification. The outcome for each input
/// is exactly what [`validate`] would say: ZIP-215 makes batch and single verification agree,
/// and on a failed batch every signature is checked alone to name the bad ones. The batch's
/// random coefficients are derived from its contents, so the core needs no randomness source.
pub fn validate_batch(
    inputs: &[&[u8]],
    cloud: &CloudId,
) -> Vec<Result<Verified<Experience>, ValidationError>> {
    let decoded: Vec<Result<(Raw<'_>, Vec<u8>), ValidationError>> = inputs
        .iter()
        .map(|bytes| {
            decode_and_check(bytes, cloud, false).map(|raw| {
                let msg = raw.signing_message();
                (raw, msg)
            })
        })
        .collect();
    let mut verifier = ed25519_consensus::batch::Verifier::new();
    let mut transcript = blake3::Hasher::new();
    for (raw, msg) in decoded.iter().flatten() {
        transcript.update(&raw.exp.sig.0);
        transcript.update(msg);
        verifier.queue((
            VerificationKeyBytes::from(raw.exp.header.author.0),
            Signature::from(raw.exp.sig.0),
            msg,
        ));
    }
    let batch_ok = verifier
        .verify(TranscriptRng(transcript.finalize_xof()))
        .is_ok();
    decoded
        .into_iter()
        .map(|r| {
            let (raw, msg) = r?;
            if !batch_ok {
                let author = raw.exp.header.author;
                let vk = VerificationKey::try_from(author.0)
                    .map_err(|_| ValidationError::BadAuthorKey(author))?;
                vk.verify(&Signature::from(raw.exp.sig.0), &msg)
                    .map_err(|_| ValidationError::BadSignature(raw.exp.id))?;
            }
            Ok(Verified(raw.exp))
        })
        .collect()
}

/// Deterministic coefficients for batch verification: BLAKE3's XOF over the whole batch.
/// An attacker must fix every signature before learning the coefficients, which is what the
/// random-linear-combination argument needs.
struct TranscriptRng(blake3::OutputReader);

impl rand_core::RngCore for TranscriptRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for TranscriptRng {}

fn decode_and_check<'a>(
    bytes: &'a [u8],
    cloud: &CloudId,
    stored: bool,
) -> Result<Raw<'a>, ValidationError> {
    let raw = Raw::decode(bytes, stored)?;
    let exp = &raw.exp;
    if exp.header.is_genesis() {
        if exp.id != *cloud {
            return Err(ValidationError::WrongCloud {
                expected: *cloud,
                found: exp.id,
            });
        }
    } else if exp.header.cloud != *cloud {
        return Err(ValidationError::WrongCloud {
            expected: *cloud,
            found: exp.header.cloud,
        });
    }
    check_shape(exp, raw.ops_digest)?;
    Ok(raw)
}

/// The shape rules every experience obeys, independent of any other experience.
pub(super) fn check_shape(exp: &Experience, ops_digest: Id) -> Result<(), ValidationError> {
    let h = &exp.header;
    if h.seq == 0 || (h.seq == 1) != h.prev.is_none() {
        return Err(ValidationError::SeqPrevMismatch {
            seq: h.seq,
            has_prev: h.prev.is_some(),
        });
    }
    if h.deps.len() > DEPS_MAX {
        return Err(ValidationError::TooManyDeps(h.deps.len()));
    }
    if h.deps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ValidationError::DepsNotSorted);
    }
    if h.prev
        .is_some_and(|prev| h.deps.binary_search(&prev).is_ok())
    {
        return Err(ValidationError::DepIsPrev);
    }
    if exp.ops.is_empty() || exp.ops.len() > OPS_MAX {
        return Err(ValidationError::OpCount(exp.ops.len()));
    }
    let found = ops_digest;
    if found != h.ops {
        return Err(ValidationError::OpsDigestMismatch {
            expected: h.ops,
            found,
        });
    }
    let genesis_ops = exp
        .ops
        .iter()
        .filter(|op| matches!(op, Op::Genesis(_)))
        .count();
    if h.is_genesis() {
        if exp.ops.len() != 1 || genesis_ops != 1 {
            return Err(ValidationError::GenesisOpMisplaced);
        }
        if h.seq != 1 || !h.deps.is_empty() {
            return Err(ValidationError::GenesisNotFirst);
        }
    } else {
        if genesis_ops != 0 {
            return Err(ValidationError::GenesisOpMisplaced);
        }
        if h.seq == 1 && h.deps.is_empty() {
            return Err(ValidationError::NotRootedInGenesis);
        }
    }
    for (index, op) in exp.ops.iter().enumerate() {
        if let Some(path) = op.path() {
            path.check()
                .map_err(|error| ValidationError::BadPath { index, error })?;
        }
    }
    Ok(())
}
