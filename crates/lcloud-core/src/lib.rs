//! The sans-IO core of λCLOUD.
//!
//! Every node appends signed, hash-linked [`Experience`]s to its own chain; chains merge by set
//! union into one causal DAG, the [`Lattice`]; every node folds that DAG through the same pure
//! morphisms in the same deterministic order, so equal histories give byte-identical
//! [`State`]s with equal state roots. This crate holds all of that logic and none of the
//! side effects: no clock, no randomness, no threads, no I/O. Keys, bytes and experiences come
//! in as arguments.
//!
//! ```
//! use lcloud_core::{Experience, Genesis, ForkPolicy, Op, Path, Replica, Value};
//! use ed25519_consensus::SigningKey;
//!
//! let a = SigningKey::from([1u8; 32]);
//! let b = SigningKey::from([2u8; 32]);
//! let genesis = Experience::create_genesis(&a, Genesis {
//!     name: "seed".into(), init: Value::map(), members: None,
//!     fork_policy: ForkPolicy::Concurrent,
//! });
//! let mut ra = Replica::new(genesis.clone()).unwrap();
//! let mut rb = Replica::new(genesis).unwrap();
//! ra.write(&a, vec![Op::Incr { path: Path::parse("/visits").unwrap(), by: 1 }]).unwrap();
//! rb.write(&b, vec![Op::Incr { path: Path::parse("/visits").unwrap(), by: 2 }]).unwrap();
//! ra.merge(&rb.clone());
//! rb.merge(&ra.clone());
//! assert_eq!(ra.root(), rb.root());
//! assert_eq!(ra.document().to_json(), serde_json::json!({"visits": 3}));
//! ```

#![forbid(unsafe_code)]

pub mod bisect;
pub mod clock;
pub mod codec;
pub mod doc;
mod dot;
pub mod edit;
pub mod experience;
pub mod fold;
pub mod fork;
pub mod guarded;
pub mod id;
pub mod lattice;
mod leaf;
pub mod morphism;
pub mod op;
pub mod path;
pub mod replica;
pub mod seq;
mod seq_doc;
pub mod seq_op;
pub mod session;
pub mod sync;
pub mod value;
pub mod write;

pub use clock::{ClockParseError, VectorClock};
pub use codec::DecodeError;
pub use doc::{Doc, Dot, Leaf, Observer, ObservesEverything};
pub use edit::{Edit, resolve};
pub use experience::{
    DEPS_MAX, Draft, EXPERIENCE_BYTES_MAX, Experience, FORMAT_VERSION, Header, OPS_MAX,
    PreparedOps, Unsigned, ValidationError, Verified, revalidate_stored, validate, validate_batch,
};
pub use fold::{KeyWrite, KeyWrites, OrderedState, Rejected, State};
pub use fork::{ForkProof, ForkProofError, SignedHeader};
pub use guarded::{DocWrite, GUARDS_PER_CONTRACT_MAX, Guarded};
pub use id::{CloudId, Id, NodeId, Sig};
pub use lattice::{
    CHECKPOINT_EVERY, Checkpoint, CompactError, Idx, InsertError, Inserted, Kept, Lattice, Rules,
    SETTLE_WITHIN, Settle, Stability, Witness, membership_refusal,
};
pub use morphism::{
    CallContext, Effects, Kv, Ledger, Loader, Morphism, Program, Registry, Rejection, contract_id,
};
pub use op::{ForkPolicy, Genesis, Op, Path, PathError};
pub use replica::{Change, Cut, Replica, View, ViewError};
pub use seq::ElemId;
pub use seq_doc::{SEGMENTS_MAX, Seqs, Slot, Splice, splices};
pub use seq_op::{Between, ElemRef, Items, SeqKind};
pub use session::{Limits, Session};
pub use value::{Value, ValueError};
pub use write::{VALUE_DEPTH_MAX, WriteRefused, check_nesting, check_shapes, shape_paths};
