//! The store's files, tables and meta keys: one place, in the order of docs/store.md's
//! "Tables". Every module of the store may use these; they use nothing of the store.

use redb::TableDefinition;

/// The redb database in a node's directory.
pub(crate) const DB_FILE: &str = "store.redb";
/// Store format version, in `meta["format"]`. Format 1 kept one record per experience and a
/// separate index table; opening such a store converts it (see `migrate::v1`). Format 2
/// tagged document leaves over their bytes alone (see `migrate::v2`). Format 3 wrote groups
/// unpacked (see `migrate::v3`). Format 4 kept one element per increment op (see
/// `migrate::v4`). Format 6 may hold a compaction base ([`META_BASE`]); a format-5 store
/// is a format-6 store without one. Format 7 settles counters and sets below settled
/// checkpoints (`migrate::v6`). Format 8 indexes what each experience settles ([`SETTLES`]),
/// so that time travel settles as the fold does (`migrate::v7`).
pub(crate) const FORMAT: u8 = 9;

/// Arrival index of a group's first experience → sealed group (`records.rs`).
pub(crate) const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// Experience id → record, for experiences waiting for missing links.
pub(crate) const PARKED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("parked");
/// Path key → tagged leaf bytes: the persisted fold of the document (`state.rs`).
pub(crate) const LEAVES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leaves");
/// Metadata, by the `META_*` keys below.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (author ‖ seq ‖ id a ‖ id b) → sealed fork proof (DAG-CBOR of the two signed headers).
pub(crate) const FORKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("forks");
/// Author index (first-seen order in this store) → node id (`entry.rs`).
pub(crate) const AUTHORS: TableDefinition<u32, &[u8; 32]> = TableDefinition::new("authors");
/// (author index, first seq, first arrival) → count: each author's chain as runs of
/// consecutive seqs stored at consecutive arrivals (one entry for a whole import of one chain,
/// or a writer's stream of commits; one per experience where authors interleave).
pub(crate) const RUNS: TableDefinition<(u32, u64, u64), u64> = TableDefinition::new("runs");
/// Arrival count covered → sealed leaves: the document after that many arrivals (`travel.rs`).
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// Arrival count covered → the frontier clock of that checkpoint (kept apart, so finding the
/// checkpoint for a cut reads only small records).
pub(crate) const CHECKPOINT_CLOCKS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("checkpoint_clocks");
/// Arrival count covered → sealed (id, author index, seq) of every experience whose ops are
/// still visible in that checkpoint's document (written before format 4; read only).
pub(crate) const CHECKPOINT_WRITERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("checkpoint_writers");
/// Experience id → sealed (depth, clock): the checkpoint that experience settles and its cut
/// as a clock (`lcloud_core::Lattice::settled_clock`), read by time travel (`travel.rs`).
pub(crate) const SETTLES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("settles");
/// node id ‖ seq (big-endian) ‖ id → sealed signed header of an experience compacted away,
/// kept with `--retain headers` (`base.rs`): its chain stays checkable without its ops.
pub(crate) const HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("headers");
/// Node id → local alias.
pub(crate) const ALIASES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("aliases");
/// Local names of contracts, by contract id (like node aliases, never replicated).
pub(crate) const CONTRACT_NAMES: TableDefinition<&[u8; 32], &str> =
    TableDefinition::new("contract_names");

/// Meta key: the format version, one byte ([`FORMAT`]).
pub(crate) const META_FORMAT: &str = "format";
/// Meta key: the cloud id (the genesis id).
pub(crate) const META_CLOUD: &str = "cloud";
/// Meta key: the sealed frontier summary (heads, chain tips, writers, creator, forks).
pub(crate) const META_SUMMARY: &str = "summary";
/// Meta key: the sealed order-sensitive state (built-ins, contracts, guarded paths).
pub(crate) const META_ORDERED: &str = "ordered";
/// Meta key: the sealed list of guarded paths, only while a contract guards one.
pub(crate) const META_GUARDS: &str = "guards";
/// Meta key present once any call or deploy was stored: time travel then needs the history.
pub(crate) const META_HAS_CALLS: &str = "has_calls";
/// Meta key present once the fold leaves out an experience for want of a right: time travel
/// then needs the full history (the index holds every experience).
pub(crate) const META_HAS_VOID: &str = "has_void";
/// Meta key present when time travel cannot read what experiences settle
/// (`lcloud_core::Settle`) from [`SETTLES`], so it needs the full history: in a format-7
/// store that stored one before format 8 indexed them, and in a compacted store that holds
/// one.
pub(crate) const META_HAS_SETTLED: &str = "has_settled";
/// Meta key: where the last time-travel checkpoint was written, and what it cost.
pub(crate) const META_CHECKPOINT: &str = "checkpoint";
/// Meta key (u64, little-endian): the experiences from this arrival number on are not yet in
/// the leaves table. The committer keeps the whole document in memory and writes the leaves
/// that changed every few thousand ops rather than at every commit, so a hot key is written
/// once per flush instead of once per commit. Readers apply this tail to what the leaves
/// hold; opening a store writes it into the leaves.
pub(crate) const META_LEAVES_AT: &str = "leaves_at";
/// Meta key (u64, little-endian): the experiences from this arrival number on are not yet in
/// the leaves table, and some of them are other nodes' (stored by `Store::persist_bytes` with
/// `Store::defer_leaves` on, as a running node does). Their ops cannot be applied to the
/// leaves without knowing what each had seen, so this tail is never applied piecemeal: a clean
/// stop (`Store::flush`) writes the leaves from the document in memory, and opening a store
/// that still has the mark (the node was killed) replays the history and rewrites the leaves.
pub(crate) const META_LEAVES_STALE_AT: &str = "leaves_stale_at";
/// Meta key: the sealed compaction base, only in a compacted store (`base.rs`): the
/// checkpoint compacted at (depth, clock), how many arrivals lie below it (the genesis and
/// the kept experiences) and what the full history said of each kept one.
pub(crate) const META_BASE: &str = "base";
