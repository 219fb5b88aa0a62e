//! What the store's files are called and which format they are in. Every module of the
//! store may use these; they use nothing of the store.

/// The redb database in a node's directory.
pub(crate) const DB_FILE: &str = "store.redb";
/// Store format version, in `meta["format"]`. Format 1 kept one record per experience and a
/// separate index table; opening such a store converts it (see `store::migrate_v1`). Format 2
/// tagged document leaves over their bytes alone (see `store::migrate_v2`). Format 3 wrote groups
/// unpacked (see `store::migrate_v3`).
pub(crate) const FORMAT: u8 = 4;
