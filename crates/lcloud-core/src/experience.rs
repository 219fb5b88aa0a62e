//! The experience: a signed, hash-linked header plus a batch of ops, its canonical bytes, and
//! the stateless half of validation that alone makes a [`Verified`] experience.

use std::fmt;
use std::ops::Deref;

use ed25519_consensus::{Signature, SigningKey, VerificationKey, VerificationKeyBytes};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, DecodeError};
use crate::id::{CloudId, Id, NodeId, Sig};
use crate::op::{Genesis, Op, PathError};

#[path = "validate.rs"]
mod validate;
use validate::check_shape;
pub use validate::{ValidationError, revalidate_stored, validate, validate_batch};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Largest encoded experience accepted, in bytes.
pub const EXPERIENCE_BYTES_MAX: usize = 1 << 20;
/// Most dependencies one experience may name.
pub const DEPS_MAX: usize = 256;
/// Most ops one experience may carry.
pub const OPS_MAX: usize = 65_536;
/// Prefix of every signed message, so an experience signature can never be replayed as a
/// signature over anything else a node signs.
pub const SIGN_CONTEXT: &[u8] = b"lcloud/experience/v1\0";

/// The signed part of an experience. Its canonical bytes are what is signed; their BLAKE3 is
/// the experience id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u8,
    /// The cloud (its genesis id); all zeros in the genesis itself.
    pub cloud: CloudId,
    /// Who wrote it.
    pub author: NodeId,
    /// Position in the author's chain, from 1.
    pub seq: u64,
    /// The author's previous experience; `None` exactly when `seq == 1`.
    pub prev: Option<Id>,
    /// Heads of other chains the author had seen, sorted ascending, no duplicates.
    pub deps: Vec<Id>,
    /// BLAKE3 of the canonical encoding of the ops.
    pub ops: Id,
    /// Optional state root of the author's causal past (the fold of prev and deps).
    pub root: Option<Id>,
    /// Optional fuel limit for the order-sensitive morphisms the ops call.
    pub fuel: Option<u64>,
}

impl Header {
    /// The canonical bytes of this header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + 34 * self.deps.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical bytes of this header to `out`: what serde's encoder gives
    /// (tested against it), written directly.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use codec::{write_bytes, write_head};
        let id_or_null = |out: &mut Vec<u8>, id: &Option<Id>| match id {
            Some(id) => write_bytes(out, id.as_bytes()),
            None => out.push(0xf6),
        };
        out.push(0x89);
        write_head(out, 0, u64::from(self.version));
        write_bytes(out, self.cloud.as_bytes());
        write_bytes(out, self.author.as_bytes());
        write_head(out, 0, self.seq);
        id_or_null(out, &self.prev);
        write_head(out, 4, self.deps.len() as u64);
        for d in &self.deps {
            write_bytes(out, d.as_bytes());
        }
        write_bytes(out, self.ops.as_bytes());
        id_or_null(out, &self.root);
        match self.fuel {
            Some(f) => write_head(out, 0, f),
            None => out.push(0xf6),
        }
    }

    /// The id: BLAKE3 of the canonical header bytes.
    pub fn id(&self) -> Id {
        Id::hash(&self.to_bytes())
    }

    /// The bytes the author's signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut msg = SIGN_CONTEXT.to_vec();
        msg.extend_from_slice(&self.to_bytes());
        msg
    }

    /// Whether this is the header of a genesis experience.
    pub fn is_genesis(&self) -> bool {
        self.cloud == Id::default()
    }
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            self.version,
            &self.cloud,
            &self.author,
            self.seq,
            &self.prev,
            &self.deps,
            &self.ops,
            &self.root,
            &self.fuel,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header: [version, cloud, author, seq, prev, deps, ops, root, fuel]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Header, A::Error> {
                fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
                    seq: &mut A,
                    what: &str,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| de::Error::custom(format!("header is missing {what}")))
                }
                let version: u8 = next(&mut seq, "version")?;
                if version != FORMAT_VERSION {
                    return Err(de::Error::custom(format!(
                        "unknown format version {version}"
                    )));
                }
                let header = Header {
                    version,
                    cloud: next(&mut seq, "cloud")?,
                    author: next(&mut seq, "author")?,
                    seq: next(&mut seq, "seq")?,
                    prev: next(&mut seq, "prev")?,
                    deps: next(&mut seq, "deps")?,
                    ops: next(&mut seq, "ops digest")?,
                    root: next(&mut seq, "root")?,
                    fuel: next(&mut seq, "fuel")?,
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("header has extra fields"));
                }
                Ok(header)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A signed experience: header, signature, and the ops the header's digest names.
#[derive(Clone, PartialEq)]
pub struct Experience {
    header: Header,
    sig: Sig,
    ops: Vec<Op>,
    id: Id,
}

impl fmt::Debug for Experience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Experience({} by {} seq {}, {} ops)",
            self.id.short(),
            self.header.author.short(),
            self.header.seq,
            self.ops.len()
        )
    }
}

impl Experience {
    /// The id (BLAKE3 of the canonical header bytes).
    pub fn id(&self) -> Id {
        self.id
    }
    /// The signed header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The signature over [`Header::signing_message`].
    pub fn sig(&self) -> &Sig {
        &self.sig
    }
    /// The ops, in the order they apply.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// Shorthand for `header().author`.
    pub fn author(&self) -> NodeId {
        self.header.author
    }
    /// Shorthand for `header().seq`.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    /// Prev followed by deps: every experience this one links to.
    pub fn parents(&self) -> impl Iterator<Item = &Id> {
        self.header.prev.iter().chain(self.header.deps.iter())
    }
    /// The genesis body, if this is a genesis experience.
    pub fn genesis(&self) -> Option<&Genesis> {
        match (self.header.is_genesis(), self.ops.first()) {
            (true, Some(Op::Genesis(g))) => Some(g),
            _ => None,
        }
    }

    /// The canonical bytes: `[header, signature, ops]` in DAG-CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        encode_parts(&mut out, &self.header, &self.sig, &self.ops);
        out
    }

    /// About the length of [`Experience::to_bytes`] (to allocate once).
    fn encoded_len_hint(&self) -> usize {
        // Header and signature ~270 bytes; ops are usually small.
        300 + 34 * self.header.deps.len() + 64 * self.ops.len()
    }

    /// Decodes canonical bytes without checking anything beyond the encoding. Use
    /// [`validate`] for untrusted input; this is for re-reading one's own verified store.
    pub fn decode(bytes: &[u8]) -> Result<Experience, DecodeError> {
        Raw::decode(bytes, true).map(|raw| raw.exp)
    }

    /// Signs `draft` with `key`. An experience this node signs itself is verified by
    /// construction, so it is returned as [`Verified`] without a signature check.
    pub fn sign(draft: Draft, key: &SigningKey) -> Verified<Experience> {
        draft
            .seal(NodeId(key.verification_key().to_bytes()))
            .sign(key)
    }

    /// Creates and signs the genesis experience of a new cloud; its id is the cloud id.
    ///
    /// ```
    /// use lcloud_core::{Experience, Genesis, Value, ForkPolicy};
    /// let key = ed25519_consensus::SigningKey::from([1u8; 32]);
    /// let g = Experience::create_genesis(&key, Genesis {
    ///     name: "demo".into(), init: Value::map(), members: None,
    ///     fork_policy: ForkPolicy::Concurrent,
    /// });
    /// let again = lcloud_core::validate(&g.to_bytes(), &g.id()).unwrap();
    /// assert_eq!(again.id(), g.id());
    /// ```
    pub fn create_genesis(key: &SigningKey, genesis: Genesis) -> Verified<Experience> {
        Experience::sign(
            Draft {
                cloud: Id::default(),
                seq: 1,
                prev: None,
                deps: Vec::new(),
                ops: vec![Op::Genesis(genesis)],
                root: None,
                fuel: None,
            },
            key,
        )
    }
}

/// A decoded experience with the byte ranges of its header and ops in the input, so that the
/// id, the signed message and the ops digest are hashed from the input bytes instead of being
/// encoded again.
struct Raw<'a> {
    exp: Experience,
    header: &'a [u8],
    ops_digest: Id,
}

impl<'a> Raw<'a> {
    /// Decodes `bytes`; `stored`: bytes this node stored itself, read with nesting up to
    /// [`codec::STORED_DEPTH_MAX`] instead of [`codec::MAX_DEPTH`].
    fn decode(bytes: &'a [u8], stored: bool) -> Result<Raw<'a>, DecodeError> {
        let encode = |(h, s, o): &(Header, Sig, Vec<Op>)| {
            let mut out = Vec::with_capacity(bytes.len());
            encode_parts(&mut out, h, s, o);
            out
        };
        let decode = if stored {
            codec::from_canonical_stored_capped_with
        } else {
            codec::from_canonical_capped_with
        };
        let (header, sig, ops): (Header, Sig, Vec<Op>) =
            decode(bytes, EXPERIENCE_BYTES_MAX, encode)?;
        // Canonical `[header, sig, ops]`: one byte of array header, then the three items
        // (header and signature never nest deeply).
        let header_end = codec::item_end(bytes, 1)?;
        let ops_start = codec::item_end(bytes, header_end)?;
        let header_bytes = &bytes[1..header_end];
        debug_assert_eq!(header_bytes, header.to_bytes().as_slice());
        Ok(Raw {
            exp: Experience {
                id: Id::hash(header_bytes),
                header,
                sig,
                ops,
            },
            header: header_bytes,
            ops_digest: Id::hash(&bytes[ops_start..]),
        })
    }

    fn signing_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGN_CONTEXT.len() + self.header.len());
        msg.extend_from_slice(SIGN_CONTEXT);
        msg.extend_from_slice(self.header);
        msg
    }
}

/// Everything an author chooses about a new experience; [`Experience::sign`] fills in the rest.
#[derive(Clone, Debug)]
pub struct Draft {
    /// The cloud.
    pub cloud: CloudId,
    /// Next seq in the author's chain.
    pub seq: u64,
    /// The author's previous experience.
    pub prev: Option<Id>,
    /// Other chains' heads seen, sorted.
    pub deps: Vec<Id>,
    /// The batch of ops.
    pub ops: Vec<Op>,
    /// Optional state root of the causal past.
    pub root: Option<Id>,
    /// Optional fuel limit.
    pub fuel: Option<u64>,
}

impl Draft {
    /// Fixes the header for `author`. The id is known before signing (it hashes the header,
    /// not the signature), so a writer can chain many drafts and sign them in parallel.
    pub fn seal(mut self, author: NodeId) -> Unsigned {
        let prepared = PreparedOps::new(std::mem::take(&mut self.ops));
        self.seal_prepared(author, prepared)
    }

    /// [`Draft::seal`] with the ops given already encoded (this draft's own `ops` must be
    /// empty): a writer's thread prepares its ops, the one thread that chains the drafts only
    /// fixes headers.
    pub fn seal_prepared(self, author: NodeId, prepared: PreparedOps) -> Unsigned {
        debug_assert!(self.ops.is_empty(), "the ops come prepared");
        let header = Header {
            version: FORMAT_VERSION,
            cloud: self.cloud,
            author,
            seq: self.seq,
            prev: self.prev,
            deps: self.deps,
            ops: prepared.digest,
            root: self.root,
            fuel: self.fuel,
        };
        let header_bytes = header.to_bytes();
        Unsigned {
            id: Id::hash(&header_bytes),
            header,
            header_bytes,
            ops_bytes: prepared.bytes,
            ops: prepared.ops,
        }
    }
}

/// A batch of ops with its canonical encoding and digest, computed once and off the thread
/// that chains drafts ([`Draft::seal_prepared`]): encoding and hashing 1 000 ops took a
/// tenth of a committer's time per experience.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedOps {
    ops: Vec<Op>,
    bytes: Vec<u8>,
    digest: Id,
}

impl PreparedOps {
    /// Encodes `ops` canonically and hashes them.
    pub fn new(ops: Vec<Op>) -> PreparedOps {
        let mut bytes = Vec::with_capacity(64 * ops.len());
        Op::encode_all_into(&ops, &mut bytes);
        let digest = Id::hash(&bytes);
        PreparedOps { ops, bytes, digest }
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Refuses ops nested deeper than any reader accepts ([`crate::check_nesting`]), on the
    /// bytes already encoded.
    pub fn check_nesting(&self) -> Result<(), crate::WriteRefused> {
        crate::write::check_nesting_encoded(&self.ops, &self.bytes)
    }
}

/// An experience whose header is fixed but not yet signed.
#[derive(Clone, Debug)]
pub struct Unsigned {
    header: Header,
    header_bytes: Vec<u8>,
    ops_bytes: Vec<u8>,
    ops: Vec<Op>,
    id: Id,
}

impl Unsigned {
    /// The id the signed experience will have.
    pub fn id(&self) -> Id {
        self.id
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Refuses ops nested deeper than any reader accepts ([`crate::check_nesting`]), on the
    /// bytes already encoded.
    pub fn check_nesting(&self) -> Result<(), crate::WriteRefused> {
        crate::write::check_nesting_encoded(&self.ops, &self.ops_bytes)
    }

    /// The length of the signed experience's canonical bytes.
    pub fn encoded_len(&self) -> usize {
        // [header, sig, ops]: one byte of array header and 2 bytes of byte-string header.
        1 + self.header_bytes.len() + 2 + 64 + self.ops_bytes.len()
    }

    /// Signs it and returns the canonical bytes too, assembled from the parts already encoded.
    pub fn sign_with_bytes(mut self, key: &SigningKey) -> (Verified<Experience>, Vec<u8>) {
        let mut bytes = Vec::with_capacity(self.encoded_len());
        bytes.push(0x83);
        bytes.extend_from_slice(&self.header_bytes);
        let ops_bytes = std::mem::take(&mut self.ops_bytes);
        let exp = self.sign(key);
        bytes.extend_from_slice(&[0x58, 0x40]);
        bytes.extend_from_slice(&exp.sig.0);
        bytes.extend_from_slice(&ops_bytes);
        debug_assert_eq!(bytes, exp.to_bytes(), "assembled bytes are canonical");
        (exp, bytes)
    }

    /// Signs it. `key` must be the author's.
    pub fn sign(self, key: &SigningKey) -> Verified<Experience> {
        let exp = self.sign_unchecked(key);
        debug_assert!(
            check_shape(&exp, ops_digest(&exp.ops)).is_ok(),
            "signed a malformed experience"
        );
        Verified(exp)
    }

    /// Signs it without checking its shape, and without the [`Verified`] mark: for tests and
    /// tools that must produce invalid experiences (they can enter a lattice only through
    /// [`validate`], which refuses them).
    pub fn sign_unchecked(self, key: &SigningKey) -> Experience {
        assert_eq!(
            key.verification_key().to_bytes(),
            self.header.author.0,
            "an experience is signed by its author"
        );
        let mut msg = SIGN_CONTEXT.to_vec();
        msg.extend_from_slice(&self.header_bytes);
        Experience {
            id: self.id,
            header: self.header,
            sig: Sig(key.sign(&msg).to_bytes()),
            ops: self.ops,
        }
    }
}

/// BLAKE3 of the canonical encoding of a batch of ops.
pub fn ops_digest(ops: &[Op]) -> Id {
    let mut bytes = Vec::with_capacity(64 * ops.len());
    Op::encode_all_into(ops, &mut bytes);
    Id::hash(&bytes)
}

/// Appends the canonical `[header, sig, ops]` of an experience to `out`.
fn encode_parts(out: &mut Vec<u8>, header: &Header, sig: &Sig, ops: &[Op]) {
    out.push(0x83);
    header.encode_into(out);
    codec::write_bytes(out, &sig.0);
    Op::encode_all_into(ops, out);
}

/// A value that passed validation. Only [`validate`], [`validate_batch`] and
/// [`Experience::sign`] make one, so anything holding a `Verified<Experience>` knows its bytes
/// are canonical, its signature verifies and its shape is lawful.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified<T>(T);

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Verified<T> {
    /// Gives up the guarantee and returns the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}
