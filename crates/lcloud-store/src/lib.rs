//! The durable store of λCLOUD: one cloud's experiences on disk (redb), the node's identity,
//! and bundles for offline merge.
//!
//! A store directory holds `store.redb` (experiences, parked experiences, metadata, aliases),
//! `identity.key` (the node's Ed25519 secret, mode 0600) and `signed-seq` (the highest seq this
//! identity has signed, written after each durable commit; see [`Store::check_can_sign`]).

#![forbid(unsafe_code)]

mod authors;
pub mod bundle;
mod commit;
mod entry;
mod error;
mod framed;
mod group;
mod identity;
mod import;
mod migrate;
pub mod proof;
mod record;
mod records;
pub mod rotate;
mod schema;
pub mod shallow;
mod sign;
mod signed;
mod state;
mod store;
pub mod tokens;
mod travel;

pub use commit::{BATCH_MAX, Committer, Reply, Writer};
pub use error::StoreError;
pub use identity::Identity;
pub use import::ImportReport;
pub use sign::{PendingSigs, SignPool, Signed};
pub use store::{
    CLOSE_VACUUM_MAX, COMPACT_ABOVE_MIN, Compaction, Retain, Store, Vacuumed, compaction_due,
};
pub use tokens::{Denied, Scope, TokenError, TokenInfo, Tokens};
