//! The store proper: experiences in arrival order (a topological order), parked experiences,
//! metadata and aliases, in one redb database; every commit durable before it is acknowledged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path as FsPath, PathBuf};

use lcloud_core::{
    Doc, Draft, EXPERIENCE_BYTES_MAX, Experience, ForkPolicy, Id, InsertError, Inserted, NodeId,
    ObservesEverything, Op, Path, PreparedOps, Replica, State, Value, VectorClock, Verified,
    WriteRefused, revalidate_stored,
};

use crate::entry;
use crate::error::{StoreError, bad_record, corrupt, map_db};
use crate::identity::{Identity, create_private_dir};
use crate::records::{self, Names, Recorder, Written};
use crate::schema::{DB_FILE, FORMAT};
use crate::sign::{self, Signed};
use crate::signed::SignedSeq;
use crate::state::{self, LEAVES, Summary, read_doc, sealed, unseal, write_leaves};
use crate::travel::{self, WritersFrom};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::sync::Arc;

/// Bytes of pages redb keeps cached in memory. Its default is 1 GiB, which a long-running node
/// grows into as the file grows; the hot pages (the tops of the trees and the recent leaves) fit
/// in far less.
const CACHE_BYTES: usize = 64 << 20;
/// Experience id → record, for experiences waiting for missing links.
const PARKED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("parked");
/// Metadata: "format", "cloud".
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (author ‖ seq ‖ id a ‖ id b) → sealed fork proof (DAG-CBOR of the two signed headers).
const FORKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("forks");
/// Node id → local alias.
const ALIASES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("aliases");
/// Local names of contracts, by contract id (like node aliases, never replicated).
const CONTRACT_NAMES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("contract_names");

/// Meta key (u64, little-endian): the experiences from this arrival number on are not yet in
/// the leaves table. The committer keeps the whole document in memory and writes the leaves
/// that changed every [`LEAVES_EVERY`] ops rather than at every commit, so a hot key is
/// written once per flush instead of once per commit. Readers apply this tail to what the
/// leaves hold; opening a store writes it into the leaves.
const LEAVES_AT: &str = "leaves_at";
/// Meta key present once the fold leaves out an experience for want of a right: time travel
/// then needs the full history (the index holds every experience).
const HAS_VOID: &str = "has_void";

/// Meta key (u64, little-endian): the experiences from this arrival number on are not yet in
/// the leaves table, and some of them are other nodes' (stored by [`Store::persist_bytes`] with
/// [`Store::defer_leaves`] on, as a running node does). Their ops cannot be applied to the
/// leaves without knowing what each had seen, so this tail is never applied piecemeal: a clean
/// stop ([`Store::flush`]) writes the leaves from the document in memory, and opening a store
/// that still has the mark (the node was killed) replays the history and rewrites the leaves.
const LEAVES_STALE_AT: &str = "leaves_stale_at";

/// The fewest ops the committer lets the leaves table fall behind by (plus one batch); more
/// when the leaves it wrote last time were large (see [`LEAVES_BYTES_PER_OP`]).
const LEAVES_EVERY: u64 = 4096;

/// The committer writes its leaves after at least one op per this many bytes they took the
/// last time: a document rewritten whole every few thousand ops (1 000 hot keys of 200 bytes)
/// cost its committer a fifth of its time in leaf writes at one flush per 4 096 ops. A reader
/// of a store whose committer was killed applies that many ops from the records.
const LEAVES_BYTES_PER_OP: u64 = 16;

/// The fewest ops between two writes of the leaves by a node deferring them (plus one
/// batch), and the fewest per byte they took the last time ([`DEFERRED_BYTES_PER_OP`]). Others'
/// experiences are never applied to the leaves piecemeal, so while a node runs its leaves
/// serve nobody: a clean stop writes them, and a killed node rebuilds them from the replay its
/// next start does anyway. Writing them only bounds what the pending flush keeps (the old
/// version of each leaf changed since, at most the document once more); every 4 096 ops, a
/// node syncing 100 000 experiences over 1 000 keys spent a tenth of its storing on them.
const DEFERRED_LEAVES_EVERY: u64 = 1 << 16;

/// See [`DEFERRED_LEAVES_EVERY`].
const DEFERRED_BYTES_PER_OP: u64 = 8;

/// A set of paths, for lookups only (its order is never used: the leaves are written in path
/// order by `state::write_leaves_diff`). A committer of 1000-op experiences looked every op's
/// path up twice in a B-tree of paths, an eighth of its time.
type PathSet = std::collections::HashSet<Path, foldhash::fast::RandomState>;

/// What the committer has folded in memory but not yet written to the leaves table.
struct PendingLeaves {
    /// The document as the leaves table holds it.
    base: Doc,
    /// Where it changed since.
    touched: PathSet,
    ops: u64,
    /// Marked with [`LEAVES_STALE_AT`] (others' experiences) rather than [`LEAVES_AT`].
    stale: bool,
}

/// The outcome of one write in a batch.
pub type WriteResult = Result<Verified<Experience>, StoreError>;

/// An open store of one cloud.
pub struct Store {
    /// `None` after [`Store::close_after_failure`] until [`Store::reopen`] succeeds.
    db: Option<Database>,
    dir: PathBuf,
    cloud: Id,
    next: u64,
    /// The whole current document, kept in memory by a long-lived writer (the committer) so
    /// local writes neither read leaves back nor scan for them. `None`: read what is touched.
    doc_cache: Option<Doc>,
    cache_document: bool,
    /// Leaves written every [`LEAVES_EVERY`] ops by [`Store::persist_bytes`] too.
    defer_leaves: bool,
    /// Bytes of leaves the last deferred write wrote: the next waits for at least this many
    /// bytes' worth of ops (see [`travel::BYTES_PER_OP`]).
    deferred_bytes: u64,
    pending: Option<PendingLeaves>,
    checkpoint_ops: u64,
    /// (id, author index, seq) of everything this instance stored since the last checkpoint,
    /// when it has seen all of it (from the first checkpoint it wrote on): the next
    /// checkpoint's writers are the last one's plus these, without reading the records back.
    since_checkpoint: Option<Vec<Written>>,
    /// The last checkpoint this instance wrote (its arrival count) and its writers: the next
    /// checkpoint starts from them instead of reading that one's records back.
    checkpoint_writers: Option<(u64, travel::Writers)>,
    /// The last group the last commit wrote, while it has room (see `records::KeptGroup`).
    kept_group: Option<records::KeptGroup>,
    signed: Arc<SignedSeq>,
    /// The id and vector clock of the last experience this instance wrote with
    /// [`Store::write_batch`]: the next batch of a lone writer depends on it alone, and
    /// reading its clock back loaded (and checked) its whole group at every commit.
    last_written: Option<(Id, VectorClock)>,
    /// Bytes of leaves the committer's last flush wrote (see [`LEAVES_BYTES_PER_OP`]).
    flushed_bytes: u64,
    /// Why opening the database again failed, while it is closed.
    closed_because: Option<String>,
}

impl Drop for Store {
    /// Closing a redb database commits its allocator state, reading its system tables; on a
    /// damaged file redb can panic there (a slice index out of range) instead of failing. A
    /// store must never take the process down over a damaged file, so the close runs under
    /// a guard: a panic there leaves the file as a crash at that moment would (redb's commit
    /// is crash-safe), and the next open repairs or refuses it.
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Experiences remembered since the last checkpoint, at most: 12 MiB (past that, the next
/// checkpoint reads their index entries back).
const SINCE_CHECKPOINT_MAX: usize = 1 << 18;

impl Store {
    fn map_db(&self, e: impl Into<redb::Error>) -> StoreError {
        map_db(&self.dir, e)
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Io {
            path: self.dir.join(DB_FILE),
            error: match &self.closed_because {
                Some(why) => {
                    format!("closed after a failed write; opening it again failed: {why}")
                }
                None => "closed after a failed write and not opened again yet".into(),
            },
        })
    }

    /// Closes the database file and opens it again, dropping every cache. After a failed
    /// write (a full disk, an I/O error) redb refuses every operation until the database is
    /// opened again; a long-lived writer (the node) calls this and then loads the store again.
    /// What was committed before the failure is all there; the failed commit left nothing.
    /// If opening fails (the disk is still full and the leaves need writing), the store stays
    /// closed and every operation says so until a later call succeeds.
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        self.reopen_with(Store::open)
    }

    /// Whether the database is closed after a failed write (see [`Store::reopen`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.db.is_none()
    }

    /// Closes the database and takes what `open` opens in its place (redb allows one handle
    /// per file: close first).
    fn reopen_with(
        &mut self,
        open: impl FnOnce(&FsPath) -> Result<Store, StoreError>,
    ) -> Result<(), StoreError> {
        self.db = None;
        let fresh = open(&self.dir).inspect_err(|e| self.closed_because = Some(e.to_string()))?;
        self.adopt(fresh);
        Ok(())
    }

    /// Takes the database and what was read at opening from `fresh`, dropping every cache;
    /// keeps this handle's settings.
    fn adopt(&mut self, mut fresh: Store) {
        self.db = fresh.db.take();
        self.closed_because = None;
        self.cloud = fresh.cloud;
        self.next = fresh.next;
        self.doc_cache = None;
        self.pending = None;
        self.since_checkpoint = None;
        self.checkpoint_writers = None;
        self.kept_group = None;
    }

    /// Whether `dir` holds a store.
    pub fn exists(dir: &FsPath) -> bool {
        dir.join(DB_FILE).exists()
    }

    /// Creates a store for the cloud of `genesis` in `dir`: the directory (if new) and the
    /// store file are readable by their owner only.
    pub fn create(dir: &FsPath, genesis: &Verified<Experience>) -> Result<Store, StoreError> {
        if Store::exists(dir) {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        create_private_dir(dir)?;
        // The file first, readable by its owner only; redb initialises the empty file.
        let path = dir.join(DB_FILE);
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&path).map_err(|e| StoreError::io(&path, e))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| map_db(dir, e))?;
        let mut store = Store {
            db: Some(db),
            dir: dir.to_owned(),
            cloud: genesis.id(),
            next: 0,
            doc_cache: None,
            cache_document: false,
            defer_leaves: false,
            deferred_bytes: 0,
            last_written: None,
            flushed_bytes: 0,
            closed_because: None,
            pending: None,
            checkpoint_ops: travel::CHECKPOINT_OPS_MIN,
            since_checkpoint: None,
            checkpoint_writers: None,
            kept_group: None,
            signed: Arc::new(SignedSeq::new(dir)),
        };
        let txn = store.db()?.begin_write().map_err(|e| store.map_db(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| map_db(dir, e))?;
            meta.insert("format", [FORMAT].as_slice())
                .map_err(|e| map_db(dir, e))?;
            meta.insert("cloud", genesis.id().as_bytes().as_slice())
                .map_err(|e| map_db(dir, e))?;
            txn.open_table(PARKED).map_err(|e| map_db(dir, e))?;
            txn.open_table(ALIASES).map_err(|e| map_db(dir, e))?;
            let replica = Replica::with_registry(genesis.clone(), lcloud_contracts::registry())?;
            meta.insert(
                "summary",
                sealed(&Summary::of(&replica).to_bytes()).as_slice(),
            )
            .map_err(|e| map_db(dir, e))?;
            let mut leaves = txn.open_table(LEAVES).map_err(|e| map_db(dir, e))?;
            write_leaves(&mut leaves, &replica.state().doc, &[Path::root()])?;
            let mut recorder = Recorder::open(&txn, genesis.id())?;
            recorder.add(
                0,
                genesis.id(),
                &genesis.author(),
                1,
                0,
                replica.lattice().clock_entries(0),
                &genesis.to_bytes(),
            )?;
            recorder.finish()?;
            txn.open_table(travel::CHECKPOINTS)
                .map_err(|e| map_db(dir, e))?;
            txn.open_table(travel::CHECKPOINT_CLOCKS)
                .map_err(|e| map_db(dir, e))?;
            txn.open_table(travel::CHECKPOINT_WRITERS)
                .map_err(|e| map_db(dir, e))?;
            meta.insert("checkpoint", checkpoint_meta(0, 0).as_slice())
                .map_err(|e| map_db(dir, e))?;
        }
        txn.commit().map_err(|e| map_db(dir, e))?;
        store.next = 1;
        Ok(store)
    }

    /// Opens the store in `dir`.
    pub fn open(dir: &FsPath) -> Result<Store, StoreError> {
        let mut store = Store::open_behind(dir)?;
        // If the committer or a node stopped (crashed) before writing its last leaves.
        store.flush()?;
        Ok(store)
    }

    /// Opens the store in `dir` and loads its replica (the whole history), as a node does.
    /// Leaves a crash left behind are written from that replica, not from a replay of their
    /// own: a node killed with `kill -9` starts after one replay, not two.
    ///
    /// On a full disk those leaves cannot be written; the store opens anyway, with them still
    /// marked behind ([`Store::leaves_behind`]): everything stored is there and the replica
    /// holds the current state, so a node can serve reads and take writes again once space is
    /// freed (its first commit then writes the leaves).
    pub fn open_loaded(
        dir: &FsPath,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Store, Replica), StoreError> {
        let mut store = Store::open_behind(dir)?;
        let replica = store.load(progress)?;
        match store.catch_up_leaves(&replica.state().doc) {
            Ok(()) => {}
            // redb refuses everything after a failed write until opened again.
            Err(StoreError::DiskFull(_)) => store.reopen_with(Store::open_behind)?,
            Err(e) => return Err(e),
        }
        Ok((store, replica))
    }

    /// Whether the document leaves lag the stored history (written by a later flush or
    /// commit; readers that use them apply or replay what they lack).
    pub fn leaves_behind(&self) -> Result<bool, StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
        let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
        Ok(meta.get(LEAVES_AT).map_err(|e| map_db(&dir, e))?.is_some()
            || meta
                .get(LEAVES_STALE_AT)
                .map_err(|e| map_db(&dir, e))?
                .is_some())
    }

    /// [`Store::reopen`] and [`Store::load`] in one, as [`Store::open_loaded`].
    pub fn reopen_loaded(&mut self, progress: &mut dyn FnMut(u64)) -> Result<Replica, StoreError> {
        self.db = None;
        let (fresh, replica) = Store::open_loaded(&self.dir, progress)
            .inspect_err(|e| self.closed_because = Some(e.to_string()))?;
        self.adopt(fresh);
        Ok(replica)
    }

    /// Writes the leaves from `doc`, the fold of everything stored, if they are behind.
    fn catch_up_leaves(&mut self, doc: &Doc) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        {
            let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
            let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            if meta.get(LEAVES_AT).map_err(|e| map_db(&dir, e))?.is_none()
                && meta
                    .get(LEAVES_STALE_AT)
                    .map_err(|e| map_db(&dir, e))?
                    .is_none()
            {
                return Ok(());
            }
        }
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            let mut leaves = txn.open_table(LEAVES).map_err(|e| map_db(&dir, e))?;
            let mut base = Doc::default();
            read_doc(&leaves, &Path::root(), &mut base)?;
            state::write_leaves_diff(&mut leaves, &base, doc, &[Path::root()])?;
            meta.remove(LEAVES_AT).map_err(|e| map_db(&dir, e))?;
            meta.remove(LEAVES_STALE_AT).map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))?;
        self.pending = None;
        Ok(())
    }

    /// Opens the store without bringing its leaves up to date.
    fn open_behind(dir: &FsPath) -> Result<Store, StoreError> {
        guard(dir, || Store::open_unguarded(dir))
    }

    fn open_unguarded(dir: &FsPath) -> Result<Store, StoreError> {
        if !Store::exists(dir) {
            return Err(StoreError::NoStore(dir.to_owned()));
        }
        let db = open_waiting(dir)?;
        let txn = db.begin_read().map_err(|e| map_db(dir, e))?;
        let meta = txn.open_table(META).map_err(|e| map_db(dir, e))?;
        let format = meta
            .get("format")
            .map_err(|e| map_db(dir, e))?
            .map(|v| v.value().first().copied().unwrap_or(0))
            .ok_or_else(|| corrupt("the store has no format version"))?;
        if format > FORMAT {
            return Err(StoreError::NewerFormat(format));
        }
        let cloud = meta
            .get("cloud")
            .map_err(|e| map_db(dir, e))?
            .and_then(|v| v.value().try_into().ok())
            .map(Id)
            .ok_or_else(|| corrupt("the store names no cloud"))?;
        drop((meta, txn));
        if format < 2 {
            migrate_v1(&db, dir, &cloud)?;
        }
        if format < 3 {
            migrate_v2(&db, dir)?;
        }
        if format < 4 {
            migrate_v3(&db, dir)?;
        }
        let txn = db.begin_read().map_err(|e| map_db(dir, e))?;
        let groups = txn
            .open_table(records::GROUPS)
            .map_err(|e| map_db(dir, e))?;
        let next = records::count(&groups)?;
        drop((groups, txn));
        Ok(Store {
            db: Some(db),
            dir: dir.to_owned(),
            cloud,
            next,
            doc_cache: None,
            cache_document: false,
            defer_leaves: false,
            deferred_bytes: 0,
            last_written: None,
            flushed_bytes: 0,
            closed_because: None,
            pending: None,
            checkpoint_ops: travel::CHECKPOINT_OPS_MIN,
            since_checkpoint: None,
            checkpoint_writers: None,
            kept_group: None,
            signed: Arc::new(SignedSeq::new(dir)),
        })
    }

    /// Keep the whole current document in memory between local writes (for a long-lived
    /// writer such as the committer; memory grows with the state, not the history). The leaves
    /// table is then written every few thousand ops, not at every commit (see [`Store::flush`]).
    pub fn cache_document(&mut self, on: bool) -> Result<(), StoreError> {
        self.cache_document = on;
        if !on {
            self.flush()?;
            self.doc_cache = None;
        }
        Ok(())
    }

    /// Lets [`Store::persist_bytes`] (given the document as last stored) write the document
    /// leaves every [`LEAVES_EVERY`] ops instead of at every commit, as the committer does for
    /// local writes. For a long-lived process that keeps the whole replica (the node): a large
    /// leaf (a set of many elements, a much-incremented counter) is then written once per few
    /// thousand ops, not once per experience. Call [`Store::flush`] before stopping; if the
    /// process dies first, the next open replays the history to rewrite the leaves.
    pub fn defer_leaves(&mut self, on: bool) -> Result<(), StoreError> {
        self.defer_leaves = on;
        if !on {
            self.flush()?;
        }
        Ok(())
    }

    /// Brings the leaves table up to date with every committed experience: writes what the
    /// document cache holds and the table not yet, or, without the cache (after a crash or a
    /// failed commit), applies the experiences written since the leaves were — or replays the
    /// whole history when others' experiences are among them ([`LEAVES_STALE_AT`]). Readers do
    /// not need this for a tail of local writes (they apply it themselves); it keeps it short.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let stale = {
            let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
            let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            let stale = meta
                .get(LEAVES_STALE_AT)
                .map_err(|e| map_db(&dir, e))?
                .is_some();
            if !stale && meta.get(LEAVES_AT).map_err(|e| map_db(&dir, e))?.is_none() {
                self.pending = None;
                return Ok(());
            }
            stale
        };
        // Others' experiences since the leaves were written, and nothing in memory that holds
        // the current document: only a replay can say what the leaves must hold.
        if stale && !(self.pending.is_some() && self.doc_cache.is_some()) {
            let doc = self.load_unguarded(&mut |_| {})?.state().doc;
            return self.catch_up_leaves(&doc);
        }
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            let mut leaves = txn.open_table(LEAVES).map_err(|e| map_db(&dir, e))?;
            match (self.pending.take(), &self.doc_cache) {
                (Some(p), Some(doc)) => {
                    let touched: Vec<Path> = p.touched.into_iter().collect();
                    state::write_leaves_diff(&mut leaves, &p.base, doc, &touched)?;
                }
                _ => {
                    let groups = txn
                        .open_table(records::GROUPS)
                        .map_err(|e| map_db(&dir, e))?;
                    let authors = txn
                        .open_table(entry::AUTHORS)
                        .map_err(|e| map_db(&dir, e))?;
                    let names = Names::read(&authors, self.cloud)?;
                    let tail = read_tail(&dir, &meta, &groups, &names, self.next)?;
                    let paths = tail_paths(&tail);
                    let mut base = Doc::default();
                    for p in state::roots(&paths) {
                        read_doc(&leaves, p, &mut base)?;
                    }
                    let mut doc = base.clone();
                    apply_tail(&mut doc, &tail);
                    state::write_leaves_diff(&mut leaves, &base, &doc, &paths)?;
                }
            }
            meta.remove(LEAVES_AT).map_err(|e| map_db(&dir, e))?;
            meta.remove(LEAVES_STALE_AT).map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }

    /// The current document under each of `paths`: the leaves, and the experiences written
    /// since the leaves were (see [`LEAVES_AT`]).
    fn current_doc(&self, txn: &redb::ReadTransaction, paths: &[Path]) -> Result<Doc, StoreError> {
        self.current_doc_with(txn, &[], paths)
    }

    /// [`Store::current_doc`] holding also the leaf at exactly each of `exact` (without what
    /// lies below it).
    fn current_doc_with(
        &self,
        txn: &redb::ReadTransaction,
        exact: &[Path],
        paths: &[Path],
    ) -> Result<Doc, StoreError> {
        let leaves = txn.open_table(LEAVES).map_err(|e| self.map_db(e))?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        if meta
            .get(LEAVES_STALE_AT)
            .map_err(|e| self.map_db(e))?
            .is_some()
        {
            // Only in the process deferring its leaves, which holds the current document
            // (opening a store rewrites stale leaves).
            return self.doc_cache.clone().ok_or_else(|| StoreError::Io {
                path: self.dir.join(DB_FILE),
                error: "the document leaves are behind and not in memory: open the store again"
                    .into(),
            });
        }
        let mut doc = Doc::default();
        let tail = if meta.get(LEAVES_AT).map_err(|e| self.map_db(e))?.is_some() {
            let groups = txn
                .open_table(records::GROUPS)
                .map_err(|e| self.map_db(e))?;
            let names = Names::in_txn(txn, self.cloud)?;
            read_tail(&self.dir, &meta, &groups, &names, self.next)?
        } else {
            Vec::new()
        };
        for p in exact {
            state::read_leaf(&leaves, p, &mut doc)?;
        }
        let mut all = paths.to_vec();
        all.extend(tail_paths(&tail));
        for p in state::roots(&all) {
            read_doc(&leaves, p, &mut doc)?;
        }
        apply_tail(&mut doc, &tail);
        Ok(doc)
    }

    /// The cloud this store holds.
    pub fn cloud(&self) -> Id {
        self.cloud
    }

    /// The directory.
    pub fn dir(&self) -> &FsPath {
        &self.dir
    }

    /// Number of admitted experiences stored.
    pub fn len(&self) -> u64 {
        self.next
    }

    /// True if only... never: a store holds at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }

    /// Reads every stored experience's bytes in arrival order, checking each record's
    /// checksum. `visit` gets the arrival index and the bytes.
    pub fn for_each(
        &self,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let groups = txn
            .open_table(records::GROUPS)
            .map_err(|e| self.map_db(e))?;
        let names = Names::in_txn(&txn, self.cloud)?;
        records::for_each(&groups, &names, 0, |n, _, bytes, _| visit(n, bytes))
    }

    /// [`Store::for_each`], with the author and seq each record is indexed under (`None` if its
    /// index entry cannot be read): what names an experience whose bytes no longer hash to
    /// the id the rest of the history knows it by.
    pub fn for_each_indexed(
        &self,
        mut visit: impl FnMut(u64, Option<(NodeId, u64)>, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let groups = txn
            .open_table(records::GROUPS)
            .map_err(|e| self.map_db(e))?;
        let names = Names::in_txn(&txn, self.cloud)?;
        records::for_each(&groups, &names, 0, |n, entry, bytes, _| {
            let indexed = entry.decode().ok().and_then(|e| {
                let author = names.authors.get(e.author as usize)?;
                Some((*author, e.seq))
            });
            visit(n, indexed, bytes)
        })
    }

    /// Loads the replica: every stored experience in arrival order, then the parked ones.
    /// Records are checked by checksum, canonical decoding, shape and links; signatures were
    /// checked when they were first stored (`lcloud verify` checks them again).
    pub fn load(&self, progress: &mut dyn FnMut(u64)) -> Result<Replica, StoreError> {
        guard(&self.dir, || self.load_unguarded(progress))
    }

    fn load_unguarded(&self, progress: &mut dyn FnMut(u64)) -> Result<Replica, StoreError> {
        let mut replica: Option<Replica> = None;
        let cloud = self.cloud;
        self.for_each(|n, bytes| {
            let exp = revalidate_stored(bytes, &cloud).map_err(|e| bad_record(n, &e))?;
            match replica.as_mut() {
                None => {
                    replica = Some(
                        Replica::with_registry(exp, lcloud_contracts::registry())
                            .map_err(|e| corrupt(format!("genesis: {e}")))?,
                    )
                }
                Some(r) => {
                    let id = exp.id();
                    let out = r
                        .insert(exp)
                        .map_err(|e| corrupt(format!("experience #{n} ({id}): {e}")))?;
                    if out.admitted.first().map(|i| u64::from(*i)) != Some(n) {
                        return Err(corrupt(format!(
                            "experience #{n} ({id}) is stored before what it depends on"
                        )));
                    }
                }
            }
            progress(n);
            Ok(())
        })?;
        let mut replica = replica.ok_or_else(|| corrupt("the store has no genesis"))?;
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let parked = txn.open_table(PARKED).map_err(|e| self.map_db(e))?;
        for row in parked.iter().map_err(|e| self.map_db(e))? {
            let (k, v) = row.map_err(|e| self.map_db(e))?;
            let id = Id(*k.value());
            let bytes = unseal(v.value(), &|| format!("parked experience {id}"))?;
            let exp = revalidate_stored(bytes, &cloud)
                .map_err(|e| corrupt(format!("parked experience {id}: {e}")))?;
            replica
                .insert(exp)
                .map_err(|e| corrupt(format!("parked experience {id}: {e}")))?;
        }
        Ok(replica)
    }

    /// Durably stores what `outcome` (an insert into `replica`) changed: newly admitted
    /// experiences in admission order, a newly parked one, and parked ones now admitted.
    /// Returns only after the commit is on disk.
    pub fn persist(&mut self, replica: &Replica, outcomes: &[&Inserted]) -> Result<(), StoreError> {
        self.persist_with_parked(replica, outcomes, &[])
    }

    /// [`Store::persist`], also storing `parked` experiences (bytes already validated).
    pub fn persist_with_parked(
        &mut self,
        replica: &Replica,
        outcomes: &[&Inserted],
        parked: &[&Experience],
    ) -> Result<(), StoreError> {
        self.persist_bytes(replica, outcomes, parked, &|_| None, None)
    }

    /// [`Store::persist_with_parked`], taking the canonical bytes of experiences from
    /// `bytes_of` where it has them (an import or a peer's message holds them) instead of
    /// encoding them again. With `before` (the document as the store last persisted it: a
    /// caller that keeps the replica between persists holds it for free), only the leaves that
    /// changed are written; without it, every leaf under a touched path is rewritten.
    pub fn persist_bytes<'b>(
        &mut self,
        replica: &Replica,
        outcomes: &[&Inserted],
        parked: &[&Experience],
        bytes_of: &dyn Fn(&Id) -> Option<&'b [u8]>,
        before: Option<&Doc>,
    ) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let defer = self.defer_leaves && before.is_some();
        // A pending of others' experiences goes on; anything else is flushed first (a tail of
        // local writes, or stale leaves whose pending a failed commit dropped: a replay).
        if !(defer && self.pending.as_ref().is_some_and(|p| p.stale)) {
            self.flush()?;
        }
        if !defer {
            self.doc_cache = None;
        }
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        let mut next = self.next;
        let mut pending = None;
        let mut flushed = None;
        let checkpointed;
        let stored;
        let kept_group;
        {
            let mut park = txn.open_table(PARKED).map_err(|e| map_db(&dir, e))?;
            let had_parked = !park.is_empty().map_err(|e| map_db(&dir, e))? || !parked.is_empty();
            let mut recorder = Recorder::open(&txn, self.cloud)?.keeping(self.kept_group.take());
            let mut ops_added = 0u64;
            let mut calls = false;
            // An outcome admits the inserted experience first, then the parked ones it released:
            // only those can be in the parked table.
            for (released, idx) in outcomes
                .iter()
                .flat_map(|o| o.admitted.iter().enumerate().map(|(k, idx)| (k > 0, idx)))
            {
                assert_eq!(
                    u64::from(*idx),
                    next,
                    "admissions are persisted in order, none skipped"
                );
                let exp = replica.lattice().get(*idx);
                let id = exp.id();
                let encoded;
                let bytes = match bytes_of(&id) {
                    Some(bytes) => bytes,
                    None => {
                        encoded = exp.to_bytes();
                        &encoded
                    }
                };
                let lattice = replica.lattice();
                recorder.add(
                    next,
                    id,
                    &exp.author(),
                    exp.seq(),
                    lattice.depth(*idx),
                    lattice.clock_entries(*idx),
                    bytes,
                )?;
                ops_added += exp.ops().len() as u64;
                calls |= exp.ops().iter().any(Op::is_ordered);
                if had_parked && released {
                    park.remove(id.as_bytes()).map_err(|e| map_db(&dir, e))?;
                }
                next += 1;
            }
            for exp in parked {
                if replica.lattice().contains(&exp.id()) {
                    continue;
                }
                park.insert(exp.id().as_bytes(), sealed(&exp.to_bytes()).as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            let mut forks = txn.open_table(FORKS).map_err(|e| map_db(&dir, e))?;
            for proof in outcomes.iter().flat_map(|o| o.forks.iter()) {
                let (a, b) = proof.ids();
                let mut key = proof.author().0.to_vec();
                key.extend_from_slice(&proof.seq().to_be_bytes());
                key.extend_from_slice(a.as_bytes());
                key.extend_from_slice(b.as_bytes());
                let bytes = lcloud_core::codec::to_canonical(proof);
                forks
                    .insert(key.as_slice(), sealed(&bytes).as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            meta.insert(
                "summary",
                sealed(&Summary::of(replica).to_bytes()).as_slice(),
            )
            .map_err(|e| map_db(&dir, e))?;
            let state = replica.state();
            meta.insert("ordered", sealed(&state.ordered.to_bytes()).as_slice())
                .map_err(|e| map_db(&dir, e))?;
            // The guarded paths alone, for the write checks and reads that need only them.
            if state.ordered.guarded.is_empty() {
                meta.remove("guards").map_err(|e| map_db(&dir, e))?;
            } else {
                let guards: Vec<(&Path, &Id)> = state.ordered.guarded.paths.iter().collect();
                let bytes = lcloud_core::codec::to_canonical(&guards);
                meta.insert("guards", sealed(&bytes).as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            let mut leaves = txn.open_table(LEAVES).map_err(|e| map_db(&dir, e))?;
            let touched = if defer {
                Vec::new()
            } else {
                touched(replica, outcomes)
            };
            let owned = || -> Vec<Path> { touched.iter().map(|p| (*p).clone()).collect() };
            match before {
                Some(before) if defer => {
                    // Written every DEFERRED_LEAVES_EVERY ops, or less often when the leaves
                    // are large (at most DEFERRED_BYTES_PER_OP per op, amortized); meanwhile
                    // LEAVES_STALE_AT marks them. No path is tracked per write: the flush
                    // compares the whole document with the leaves as last written, skipping
                    // the leaves both share (one pointer comparison each).
                    let taken = self.pending.take();
                    let fresh = taken.is_none();
                    let mut p = taken.unwrap_or_else(|| PendingLeaves {
                        base: before.clone(),
                        touched: PathSet::from_iter([Path::root()]),
                        ops: 0,
                        stale: true,
                    });
                    p.ops += ops_added;
                    if p.ops
                        < DEFERRED_LEAVES_EVERY.max(self.deferred_bytes / DEFERRED_BYTES_PER_OP)
                    {
                        if fresh {
                            meta.insert(LEAVES_STALE_AT, self.next.to_le_bytes().as_slice())
                                .map_err(|e| map_db(&dir, e))?;
                        }
                        pending = Some(p);
                    } else {
                        let all: Vec<Path> = p.touched.into_iter().collect();
                        flushed = Some(state::write_leaves_diff(
                            &mut leaves,
                            &p.base,
                            &state.doc,
                            &all,
                        )?);
                        if !fresh {
                            meta.remove(LEAVES_STALE_AT).map_err(|e| map_db(&dir, e))?;
                        }
                    }
                }
                Some(before) => {
                    state::write_leaves_diff(&mut leaves, before, &state.doc, &owned())?;
                }
                None => write_leaves(&mut leaves, &state.doc, &owned())?,
            }
            if calls {
                meta.insert("has_calls", [1u8].as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            if outcomes.iter().any(|o| o.revoked) || replica.lattice().void_count() > 0 {
                meta.insert(HAS_VOID, [1u8].as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            let (written, kept) = recorder.finish_keeping()?;
            kept_group = kept;
            checkpointed = self.maybe_checkpoint(
                &txn,
                &mut meta,
                next,
                ops_added,
                &replica.lattice().frontier(),
                &|| Ok(Cow::Borrowed(&state.doc)),
                &written,
                Some(replica.lattice()),
            )?;
            stored = written;
        }
        txn.commit().map_err(|e| map_db(&dir, e))?;
        self.remember_since_checkpoint(checkpointed, stored);
        self.kept_group = kept_group;
        self.next = next;
        if defer {
            self.pending = pending;
            self.doc_cache = Some(replica.state().doc);
            if let Some(bytes) = flushed {
                self.deferred_bytes = bytes;
            }
        }
        Ok(())
    }

    /// Writes `ops` as this node's next experience without loading the history: the draft
    /// comes from the stored heads and tip, and the ops apply to the stored document leaves
    /// they touch. A local write depends on every head, so it has observed every element
    /// already folded. Returns `None` (nothing written) when only a full load can apply the
    /// ops: calls to order-sensitive morphisms, or a forked author.
    pub fn write_local(
        &mut self,
        identity: &Identity,
        ops: Vec<Op>,
    ) -> Result<Option<Verified<Experience>>, StoreError> {
        if ops.iter().any(Op::needs_history) {
            return Ok(None);
        }
        match self.write_batch_local(identity, vec![ops])? {
            None => Ok(None),
            Some(mut results) => results.pop().expect("one result per request").map(Some),
        }
    }

    /// Writes each entry of `batch` as one experience of this node, chained one after the
    /// other, in **one** durable commit (one fsync for all: group commit). Signatures are
    /// computed in parallel on all cores (ids hash headers, not signatures, so the chain is
    /// fixed before signing). Each entry gets its own result: a refused entry (not a member,
    /// too large) does not stop the others. `None` when only a full load can apply them
    /// (this node forked); entries must not contain calls.
    pub fn write_batch_local(
        &mut self,
        identity: &Identity,
        batch: Vec<Vec<Op>>,
    ) -> Result<Option<Vec<WriteResult>>, StoreError> {
        // What the fold would misread is refused before anything is signed.
        let shapes = {
            let refs: Vec<&[Op]> = batch.iter().map(Vec::as_slice).collect();
            self.check_shapes(&refs)?
        };
        let mut refused: Vec<Option<StoreError>> = Vec::with_capacity(batch.len());
        let mut passed = Vec::with_capacity(batch.len());
        for (ops, shape) in batch.into_iter().zip(shapes) {
            let prepared = PreparedOps::new(ops);
            match shape.and_then(|()| prepared.check_nesting()) {
                Ok(()) => {
                    refused.push(None);
                    passed.push(prepared);
                }
                Err(e) => refused.push(Some(e.into())),
            }
        }
        if passed.is_empty() {
            return Ok(Some(refused.into_iter().flatten().map(Err).collect()));
        }
        let Some(written) = self.write_batch(identity, passed)? else {
            return Ok(None);
        };
        let mut written = written.into_iter();
        let results: Vec<WriteResult> = refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => written.next().expect("one result per entry written"),
            })
            .collect();
        let results = Some(results);
        if let Some(last) = results.iter().flatten().flatten().map(|e| e.seq()).max() {
            self.record_signed(last)?;
        }
        Ok(results)
    }

    /// [`Store::write_batch_local`] without recording the highest seq signed: the caller must
    /// record it (the `SignedSeq` of [`Store::signed_seq_file`]) before acknowledging.
    pub(crate) fn write_batch(
        &mut self,
        identity: &Identity,
        batch: Vec<PreparedOps>,
    ) -> Result<Option<Vec<WriteResult>>, StoreError> {
        let me = identity.id();
        let Some(base) = self.plan_base(&me)? else {
            return Ok(None);
        };
        let mut after = base.clone();
        let planned = plan_batch(self.cloud, &mut after, &me, batch);
        let signed = sign_all(identity, planned);
        self.write_signed(&me, &base, &after, signed, None)
    }

    /// The whole current document, kept in memory from now on (the committer's cache): for
    /// a writer that folds what it writes before handing it to [`Store::write_signed`].
    pub(crate) fn cached_document(&mut self) -> Result<Doc, StoreError> {
        if let Some(doc) = &self.doc_cache {
            return Ok(doc.clone());
        }
        // Brings the leaves up to date with everything committed, then reads them all.
        self.flush()?;
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let leaves = txn.open_table(LEAVES).map_err(|e| self.map_db(e))?;
        let mut doc = Doc::default();
        read_doc(&leaves, &Path::root(), &mut doc)?;
        self.cache_document = true;
        self.doc_cache = Some(doc.clone());
        Ok(doc)
    }

    /// What a batch of this node's writes is planned on: the stored summary of heads and
    /// tips, once the highest seq signed is known not to be ahead of the store. `None` when
    /// this node forked (only a full load can write then).
    pub(crate) fn plan_base(&mut self, me: &NodeId) -> Result<Option<Summary>, StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
        let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
        let summary = read_summary(&meta)?;
        if summary.forked.contains(me) {
            return Ok(None);
        }
        self.check_signed_up_to(summary.tip(me).map_or(0, |(s, _)| s))?;
        Ok(Some(summary))
    }

    /// Stores experiences of this node signed from drafts planned on `base` (with
    /// [`plan_batch`], which advanced `base` to `after`), in one durable commit. Refuses them
    /// all, storing nothing, when the store's summary is no longer `base` (an earlier commit
    /// they were planned on top of failed). `folded`: the cached document with these
    /// experiences' ops already applied, by a writer that took it from
    /// [`Store::cached_document`] (or from the `folded` of its last successful call); used
    /// only while the cache is kept, otherwise the ops are applied here.
    pub(crate) fn write_signed(
        &mut self,
        me: &NodeId,
        base: &Summary,
        after: &Summary,
        signed: Vec<Result<Signed, StoreError>>,
        folded: Option<Doc>,
    ) -> Result<Option<Vec<WriteResult>>, StoreError> {
        let me = *me;
        let dir = self.dir.clone();
        if self.doc_cache.is_none() || self.pending.as_ref().is_some_and(|p| p.stale) {
            self.flush()?;
        }
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        let mut cached = None;
        let mut pending = None;
        let written_last;
        let mut flushed = None;
        let checkpointed;
        let stored;
        let kept_group;
        let results = {
            let mut meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            let summary = read_summary(&meta)?;
            if summary.forked.contains(&me) {
                return Ok(None);
            }
            if summary != *base {
                return Err(StoreError::EarlierWriteFailed);
            }
            let summary = after.clone();
            let base_heads = base.heads.clone();
            let base_tips = base.tips.clone();

            // Fold the ops into the document (cached whole, or just the touched leaves).
            let mut leaves = txn.open_table(LEAVES).map_err(|e| map_db(&dir, e))?;
            // The paths the batch touches, each once, leaving out those the pending leaves
            // already list (hot keys are not cloned again at every commit).
            let mut touched = PathSet::default();
            let listed = self.pending.as_ref().map(|p| &p.touched);
            for path in signed
                .iter()
                .flatten()
                .flat_map(|(e, _, _)| e.ops().iter().filter_map(Op::path))
            {
                if !touched.contains(path) && !listed.is_some_and(|l| l.contains(path)) {
                    touched.insert(path.clone());
                }
            }
            let had_cache = self.doc_cache.is_some();
            let mut doc = match self.doc_cache.take() {
                Some(doc) => doc,
                None if self.cache_document => {
                    let mut doc = Doc::default();
                    read_doc(&leaves, &Path::root(), &mut doc)?;
                    doc
                }
                None => {
                    let mut doc = Doc::default();
                    for p in &touched {
                        read_doc(&leaves, p, &mut doc)?;
                    }
                    doc
                }
            };
            // The leaves as last written: needed only when no flush is pending (a pending
            // flush already holds them), so the document is not cloned at every commit.
            let before = self.pending.is_none().then(|| doc.clone());
            let prefolded = match folded {
                Some(f) if had_cache => {
                    doc = f;
                    true
                }
                _ => false,
            };
            let mut next = self.next;
            let mut results = Vec::new();
            let mut recorder = Recorder::open(&txn, self.cloud)?.keeping(self.kept_group.take());
            // The first new experience has seen every head; each later one, the one before.
            // Without forks every head is its author's chain tip. (Once an author forked, the
            // index no longer serves time travel — forks are never forgotten — so a head that
            // is not a tip adds nothing here.)
            let mut clock = VectorClock::default();
            for (head, _, author) in &base_heads {
                if let Some((last, seen)) = &self.last_written
                    && last == head
                {
                    clock.join(seen);
                } else if let Some((_, seq, _)) = base_tips
                    .iter()
                    .find(|(a, _, id)| a == author && id == head)
                    && let Some(seen) = recorder.clock_at(author, *seq)?
                {
                    clock.join(&seen);
                }
            }
            let mut ops_added = 0u64;
            let mut last_id = None;
            for r in signed {
                let (exp, bytes, depth) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                clock.observe(me, exp.seq());
                last_id = Some(exp.id());
                recorder.add(
                    next,
                    exp.id(),
                    &me,
                    exp.seq(),
                    depth,
                    clock.0.iter().map(|(a, s)| (a, *s)),
                    &bytes,
                )?;
                ops_added += exp.ops().len() as u64;
                if !prefolded {
                    fold_into(&mut doc, exp.id(), depth, exp.ops());
                }
                next += 1;
                results.push(Ok(exp));
            }
            // The leaves: with the document cached (and indexed, so a restart can redo the
            // tail), written every LEAVES_EVERY ops; otherwise now.
            let mut p = self.pending.take().unwrap_or_else(|| PendingLeaves {
                base: before.unwrap_or_default(),
                touched: PathSet::default(),
                ops: 0,
                stale: false,
            });
            let fresh = p.ops == 0 && p.touched.is_empty();
            p.touched.extend(touched);
            p.ops += ops_added;
            if self.cache_document
                && p.ops < LEAVES_EVERY.max(self.flushed_bytes / LEAVES_BYTES_PER_OP)
            {
                if fresh {
                    meta.insert(LEAVES_AT, self.next.to_le_bytes().as_slice())
                        .map_err(|e| map_db(&dir, e))?;
                }
                pending = Some(p);
            } else {
                let all: Vec<Path> = p.touched.into_iter().collect();
                flushed = Some(state::write_leaves_diff(&mut leaves, &p.base, &doc, &all)?);
                if !fresh {
                    meta.remove(LEAVES_AT).map_err(|e| map_db(&dir, e))?;
                }
            }
            written_last = last_id.map(|id| (id, clock));
            meta.insert("summary", sealed(&summary.to_bytes()).as_slice())
                .map_err(|e| map_db(&dir, e))?;
            let frontier = VectorClock(summary.tips.iter().map(|(a, s, _)| (*a, *s)).collect());
            let whole = self.cache_document.then_some(&doc);
            let (written, kept) = recorder.finish_keeping()?;
            kept_group = kept;
            checkpointed = self.maybe_checkpoint(
                &txn,
                &mut meta,
                next,
                ops_added,
                &frontier,
                &|| match whole {
                    Some(d) => Ok(Cow::Borrowed(d)),
                    None => {
                        let mut all = Doc::default();
                        read_doc(&leaves, &Path::root(), &mut all)?;
                        Ok(Cow::Owned(all))
                    }
                },
                &written,
                None,
            )?;
            stored = written;
            if self.cache_document {
                // Kept only once the commit succeeds (below); dropped if it fails.
                cached = Some(doc);
            }
            results
        };
        txn.commit().map_err(|e| map_db(&dir, e))?;
        self.remember_since_checkpoint(checkpointed, stored);
        self.kept_group = kept_group;
        self.doc_cache = cached;
        self.pending = pending;
        if let Some(bytes) = flushed {
            self.flushed_bytes = bytes;
        }
        if written_last.is_some() {
            self.last_written = written_last;
        }
        self.next += results.iter().filter(|r| r.is_ok()).count() as u64;
        Ok(Some(results))
    }

    /// After a commit: what it stored joins what is remembered since the last checkpoint, or
    /// starts it afresh (keeping the checkpoint's writers) if the commit wrote a checkpoint.
    fn remember_since_checkpoint(
        &mut self,
        checkpointed: Option<(u64, travel::Writers)>,
        fresh: Vec<Written>,
    ) {
        if let Some(written) = checkpointed {
            self.since_checkpoint = Some(Vec::new());
            self.checkpoint_writers = Some(written);
        } else if let Some(since) = &mut self.since_checkpoint {
            since.extend(fresh);
            if since.len() > SINCE_CHECKPOINT_MAX {
                self.since_checkpoint = None;
            }
        }
    }

    /// Writes a checkpoint of the document if enough ops came since the last one (`fresh`:
    /// what this transaction stored). Returns the checkpoint it wrote, with its writers.
    #[allow(clippy::too_many_arguments)]
    fn maybe_checkpoint<'d>(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
        upto: u64,
        ops_added: u64,
        frontier: &VectorClock,
        doc: &dyn Fn() -> Result<Cow<'d, Doc>, StoreError>,
        fresh: &[Written],
        lattice: Option<&lcloud_core::Lattice>,
    ) -> Result<Option<(u64, travel::Writers)>, StoreError> {
        let (last, since, bytes) = match meta.get("checkpoint").map_err(|e| self.map_db(e))? {
            Some(v) => read_checkpoint_meta(v.value())?,
            None => (0, 0, 0),
        };
        let since = since + ops_added;
        let mut checkpointed = None;
        let (last, since, bytes) = if travel::checkpoint_due(since, bytes, self.checkpoint_ops) {
            let doc = doc()?;
            let from = match (lattice, &self.since_checkpoint) {
                (Some(lattice), _) => WritersFrom::Lattice(lattice),
                (None, Some(since)) => WritersFrom::Recent(since.iter().chain(fresh)),
                (None, None) => WritersFrom::Groups,
            };
            let cached = self
                .checkpoint_writers
                .as_ref()
                .map(|(k, writers)| (*k, writers));
            match travel::write_checkpoint(txn, &self.cloud, upto, frontier, &doc, from, cached)? {
                Some((written, writers)) => {
                    checkpointed = Some((upto, writers));
                    (upto, 0, written)
                }
                None => (last, since, bytes),
            }
        } else {
            (last, since, bytes)
        };
        let mut m = checkpoint_meta(last, since);
        m.extend_from_slice(&bytes.to_le_bytes());
        meta.insert("checkpoint", m.as_slice())
            .map_err(|e| self.map_db(e))?;
        Ok(checkpointed)
    }

    /// Sets the fewest ops between time-travel checkpoints (default 4096).
    pub fn set_checkpoint_ops(&mut self, ops: u64) {
        self.checkpoint_ops = ops.max(1);
    }

    /// The state at `clock`, read from the index and the checkpoints without loading the
    /// history. `None` when only a full load can answer: an author forked, the cloud has calls
    /// to order-sensitive morphisms, the fold leaves out experiences of a removed member (the
    /// index holds every experience), or the store predates the index.
    pub fn state_at_clock(&self, clock: &VectorClock) -> Result<Option<State>, StoreError> {
        guard(&self.dir, || self.state_at_clock_unguarded(clock))
    }

    fn state_at_clock_unguarded(&self, clock: &VectorClock) -> Result<Option<State>, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let summary = read_summary(&meta)?;
        let calls = meta.get("has_calls").map_err(|e| self.map_db(e))?.is_some();
        let void = meta.get(HAS_VOID).map_err(|e| self.map_db(e))?.is_some();
        if !summary.forked.is_empty() || calls || void {
            return Ok(None);
        }
        for (node, asked) in &clock.0 {
            let known = summary.tip(node).map_or(0, |(s, _)| s);
            if *asked > known {
                return Err(StoreError::ClockAhead {
                    node: *node,
                    asked: *asked,
                    known,
                });
            }
        }
        let doc = travel::document_at(&txn, &self.cloud, clock)?;
        Ok(Some(State {
            doc,
            ordered: Default::default(),
        }))
    }

    /// The nodes that wrote in this cloud, as indexed.
    pub fn authors(&self) -> Result<Vec<NodeId>, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            Ok(Names::in_txn(&txn, self.cloud)?.authors)
        })
    }

    /// The current document at `path` (`None`: nothing there), read from the persisted fold
    /// without loading the history.
    pub fn document(&self, path: &Path) -> Result<Option<Value>, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            let doc = self.current_doc(&txn, std::slice::from_ref(path))?;
            let guards = self.guards_in(&txn)?;
            if guards.guard_of(path).is_none() && guards.guards_below(path).next().is_none() {
                return Ok(doc.materialize(path));
            }
            // A guarded subtree is in the ordered state.
            let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
            let ordered = meta.get("ordered").map_err(|e| self.map_db(e))?;
            let ordered = state::ordered_from(ordered.as_ref().map(|v| v.value()))?;
            Ok(ordered.guarded.visible(&doc, path))
        })
    }

    /// [`lcloud_core::check_shapes`] of this node's writes against the stored document,
    /// reading only the leaves the check looks at ([`lcloud_core::shape_paths`]).
    pub fn check_shapes(
        &self,
        batch: &[&[Op]],
    ) -> Result<Vec<Result<(), WriteRefused>>, StoreError> {
        let (exact, subtrees) = lcloud_core::shape_paths(batch.iter().copied().flatten());
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            let doc = self.current_doc_with(&txn, &exact, &subtrees)?;
            let shapes = lcloud_core::check_shapes(&doc, batch);
            Ok(self.guards_in(&txn)?.check_with(batch, shapes))
        })
    }

    /// Whether a contract guards a path of this cloud.
    pub fn has_guards(&self) -> Result<bool, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            Ok(!self.guards_in(&txn)?.is_empty())
        })
    }

    /// The guarded paths, as persisted with the fold (their contents are not read).
    fn guards_in(&self, txn: &redb::ReadTransaction) -> Result<lcloud_core::Guarded, StoreError> {
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let Some(bytes) = meta.get("guards").map_err(|e| self.map_db(e))? else {
            return Ok(lcloud_core::Guarded::default());
        };
        let bytes = unseal(bytes.value(), &|| "the guarded paths".into())?;
        let paths: Vec<(Path, Id)> = lcloud_core::codec::from_canonical_stored(bytes)
            .map_err(|e| corrupt(format!("the guarded paths: {e}")))?;
        Ok(lcloud_core::Guarded {
            paths: paths.into_iter().collect(),
            doc: Doc::default(),
        })
    }

    /// The current state, read from the persisted fold without loading the history.
    pub fn state(&self) -> Result<State, StoreError> {
        guard(&self.dir, || self.state_unguarded())
    }

    fn state_unguarded(&self) -> Result<State, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let doc = self.current_doc(&txn, &[Path::root()])?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let ordered = meta.get("ordered").map_err(|e| self.map_db(e))?;
        let ordered = state::ordered_from(ordered.as_ref().map(|v| v.value()))?;
        Ok(State { doc, ordered })
    }

    /// The fork proofs stored, by author and seq. Each is checked again before it is returned.
    pub fn forks(&self) -> Result<Vec<lcloud_core::ForkProof>, StoreError> {
        self.read_all(FORKS, |_, v: &[u8]| {
            let bytes = unseal(v, &|| "a stored fork proof".into())?;
            let proof: lcloud_core::ForkProof = lcloud_core::codec::from_canonical_stored(bytes)
                .map_err(|e| corrupt(format!("a stored fork proof: {e}")))?;
            proof
                .check()
                .map_err(|e| corrupt(format!("a stored fork proof does not hold: {e}")))?;
            Ok(proof)
        })
    }

    /// Every row of a table through `f`, in key order; nothing if the table was never created.
    fn read_all<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: TableDefinition<K, V>,
        mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let table = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.map_db(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.map_db(e))? {
            let (k, v) = row.map_err(|e| self.map_db(e))?;
            out.push(f(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Refuses to sign if the store is behind what this identity has already signed.
    pub fn check_can_sign(&self, me: &NodeId, replica: &Replica) -> Result<(), StoreError> {
        let lattice = replica.lattice();
        self.check_signed_up_to(lattice.tip(me).map_or(0, |i| lattice.get(i).seq()))
    }

    /// Refuses to sign on top of a chain tip `stored` lower than what `signed-seq` records.
    fn check_signed_up_to(&self, stored: u64) -> Result<(), StoreError> {
        let signed = self.signed_seq()?;
        if signed > stored {
            return Err(StoreError::BehindSignedSeq { signed, stored });
        }
        Ok(())
    }

    /// Records that this identity has signed up to `seq`. Call after the experience is durably
    /// committed and before acknowledging or publishing it. The file holds one fixed-width
    /// number rewritten in place and synced: one fsync, no rename.
    pub fn record_signed(&self, seq: u64) -> Result<(), StoreError> {
        self.signed.record(seq)
    }

    /// Reads `signed-seq` again on next use: a key rotation ([`crate::rotate::finish`])
    /// replaced it.
    pub fn reload_signed(&self) {
        self.signed.forget();
    }

    /// The highest seq this identity has signed, per the `signed-seq` file (0 if none).
    pub fn signed_seq(&self) -> Result<u64, StoreError> {
        self.signed.get()
    }

    /// The `signed-seq` file, for a committer that records it on a thread of its own.
    pub(crate) fn signed_seq_file(&self) -> Arc<SignedSeq> {
        self.signed.clone()
    }

    /// Local aliases of nodes.
    pub fn aliases(&self) -> Result<BTreeMap<NodeId, String>, StoreError> {
        let rows = self.read_all(ALIASES, |k, v| Ok((NodeId(*k), v.to_owned())))?;
        Ok(rows.into_iter().collect())
    }

    /// Local names of contracts, by contract id.
    pub fn contract_names(&self) -> Result<BTreeMap<Id, String>, StoreError> {
        let rows = self.read_all(CONTRACT_NAMES, |k, v| Ok((Id(*k), v.to_owned())))?;
        Ok(rows.into_iter().collect())
    }

    /// Names contract `id` locally (a name names one contract: an older holder loses it).
    pub fn set_contract_name(&mut self, id: &Id, name: &str) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut t = txn
                .open_table(CONTRACT_NAMES)
                .map_err(|e| map_db(&dir, e))?;
            let holders: Vec<[u8; 32]> = t
                .iter()
                .map_err(|e| map_db(&dir, e))?
                .filter_map(|row| row.ok())
                .filter(|(k, v)| v.value() == name && k.value() != id.as_bytes())
                .map(|(k, _)| *k.value())
                .collect();
            for k in holders {
                t.remove(&k).map_err(|e| map_db(&dir, e))?;
            }
            t.insert(id.as_bytes(), name).map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }

    /// Sets a local alias.
    pub fn set_alias(&mut self, node: &NodeId, alias: &str) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut t = txn.open_table(ALIASES).map_err(|e| map_db(&dir, e))?;
            t.insert(node.as_bytes(), alias)
                .map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }
}

/// The rules a local write must pass, checked against the stored frontier.
/// Applies the ops of this node's experience `id` at `depth` to `doc`.
pub(crate) fn fold_into(doc: &mut Doc, id: Id, depth: u64, ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        let dot = lcloud_core::Dot {
            depth,
            exp: id,
            op: i as u32,
        };
        doc.apply(op, dot, &ObservesEverything);
    }
}

/// Chains drafts of this node's writes on `summary` (advancing it past each): each depends
/// on the one before, the first on every head. An entry the cloud's rules refuse (not a
/// member, too large) gets its error and does not advance the chain.
#[allow(clippy::type_complexity)]
pub(crate) fn plan_batch(
    cloud: Id,
    summary: &mut Summary,
    me: &NodeId,
    batch: Vec<PreparedOps>,
) -> Vec<Result<(lcloud_core::Unsigned, u64), StoreError>> {
    let mut planned = Vec::with_capacity(batch.len());
    for ops in batch {
        let tip = summary.tip(me);
        let draft = Draft {
            cloud,
            seq: tip.map_or(1, |(s, _)| s + 1),
            prev: tip.map(|(_, id)| id),
            deps: summary
                .heads
                .iter()
                .filter(|(_, _, a)| a != me)
                .map(|(id, _, _)| *id)
                .collect(),
            ops: Vec::new(),
            root: None,
            fuel: None,
        };
        let unsigned = draft.seal_prepared(*me, ops);
        match check_local(summary, me, &unsigned) {
            Err(e) => planned.push(Err(e)),
            Ok(()) => {
                let depth = 1 + summary.heads.iter().map(|(_, d, _)| *d).max().unwrap_or(0);
                summary.advance(me, &unsigned, depth);
                planned.push(Ok((unsigned, depth)));
            }
        }
    }
    planned
}

fn check_local(
    summary: &Summary,
    me: &NodeId,
    unsigned: &lcloud_core::Unsigned,
) -> Result<(), StoreError> {
    let id = unsigned.id();
    if !summary.may_write(me) {
        return Err(InsertError::NotMember { id, author: *me }.into());
    }
    let size = unsigned.encoded_len();
    if size > EXPERIENCE_BYTES_MAX {
        return Err(StoreError::TooLarge(size));
    }
    let administers = unsigned.ops().iter().any(Op::needs_admin);
    if administers && summary.admins.binary_search(me).is_err() {
        return Err(InsertError::NotAdmin { id, author: *me }.into());
    }
    if let Some(why) = lcloud_core::membership_refusal(&summary.creator, me, unsigned.ops()) {
        return Err(InsertError::BadMembership { id, why }.into());
    }
    Ok(())
}

/// Signs every planned experience, spreading the work over the machine's cores.
#[allow(clippy::type_complexity)]
fn sign_all(
    identity: &Identity,
    planned: Vec<Result<(lcloud_core::Unsigned, u64), StoreError>>,
) -> Vec<Result<Signed, StoreError>> {
    let mut drafts = Vec::with_capacity(planned.len());
    let mut slots = Vec::with_capacity(planned.len());
    for r in planned {
        slots.push(r.map(|d| drafts.push(d)));
    }
    let mut signed = sign::sign_once(identity.key(), drafts).into_iter();
    slots
        .into_iter()
        .map(|slot| slot.map(|()| signed.next().expect("one signature per draft")))
        .collect()
}

/// How long opening waits for another process (another `lcloud` command) to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the database, waiting up to [`LOCK_WAIT`] while another process holds it.
fn open_waiting(dir: &FsPath) -> Result<Database, StoreError> {
    let start = std::time::Instant::now();
    loop {
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(dir.join(DB_FILE))
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(map_db(dir, e)),
        }
    }
}

/// Converts a format-1 store in one transaction (so a crash leaves either format whole): its
/// records (one per experience, `experiences`) and index (`index`) become record groups; the
/// authors, chains and checkpoints are rebuilt from a load of the history, so every
/// experience gets an index entry even in a store older than the index.
fn migrate_v1(db: &Database, dir: &FsPath, cloud: &Id) -> Result<(), StoreError> {
    const V1_RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("experiences");
    const V1_INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("index");
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    {
        let old = txn.open_table(V1_RECORDS).map_err(|e| map(e.into()))?;
        let mut replica: Option<Replica> = None;
        let mut order: Vec<(lcloud_core::Idx, Vec<u8>)> = Vec::new();
        for (expected, row) in (0u64..).zip(old.iter().map_err(|e| map(e.into()))?) {
            let (k, v) = row.map_err(|e| map(e.into()))?;
            let n = k.value();
            if n != expected {
                return Err(corrupt(format!("experience #{expected} is missing")));
            }
            let bytes = unseal(v.value(), &|| format!("experience #{n}"))?;
            let exp = revalidate_stored(bytes, cloud).map_err(|e| bad_record(n, &e))?;
            match replica.as_mut() {
                None => {
                    replica = Some(
                        Replica::with_registry(exp, lcloud_contracts::registry())
                            .map_err(|e| corrupt(format!("genesis: {e}")))?,
                    );
                    order.push((0, bytes.to_vec()));
                }
                Some(r) => {
                    let id = exp.id();
                    let out = r
                        .insert(exp)
                        .map_err(|e| corrupt(format!("experience #{n} ({id}): {e}")))?;
                    match out.admitted.first() {
                        Some(idx) if u64::from(*idx) == n => order.push((*idx, bytes.to_vec())),
                        _ => {
                            return Err(corrupt(format!(
                                "experience #{n} ({id}) is stored before what it depends on"
                            )));
                        }
                    }
                }
            }
        }
        drop(old);
        let replica = replica.ok_or_else(|| corrupt("the store has no genesis"))?;
        for table in [
            V1_RECORDS,
            V1_INDEX,
            travel::CHECKPOINTS,
            travel::CHECKPOINT_CLOCKS,
            travel::CHECKPOINT_WRITERS,
        ] {
            txn.delete_table(table).map_err(|e| map(e.into()))?;
        }
        txn.delete_table(entry::AUTHORS)
            .map_err(|e| map(e.into()))?;
        const V1_CHAINS: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("chains");
        txn.delete_table(V1_CHAINS).map_err(|e| map(e.into()))?;
        for table in [
            travel::CHECKPOINTS,
            travel::CHECKPOINT_CLOCKS,
            travel::CHECKPOINT_WRITERS,
        ] {
            txn.open_table(table).map_err(|e| map(e.into()))?;
        }
        let mut recorder = Recorder::open(&txn, *cloud)?;
        let lattice = replica.lattice();
        for (n, (idx, bytes)) in (0u64..).zip(&order) {
            let exp = lattice.get(*idx);
            recorder.add(
                n,
                exp.id(),
                &exp.author(),
                exp.seq(),
                lattice.depth(*idx),
                lattice.clock_entries(*idx),
                bytes,
            )?;
        }
        recorder.finish()?;
        let mut meta = txn.open_table(META).map_err(|e| map(e.into()))?;
        // Checkpoints start again from here (time travel before the next one replays from the
        // start, which is slower, not wrong).
        let mut m = checkpoint_meta(0, 0);
        m.extend_from_slice(&0u64.to_le_bytes());
        meta.insert("checkpoint", m.as_slice())
            .map_err(|e| map(e.into()))?;
        meta.insert("format", [2u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 2 → 3: every document leaf's tag covers its key too (so a leaf moved to another
/// path by a damaged key is caught). One transaction: a crash leaves format 2 as it was.
fn migrate_v2(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    {
        let mut leaves = txn.open_table(LEAVES).map_err(|e| map(e.into()))?;
        state::reseal_leaves(&mut leaves)?;
        let mut meta = txn.open_table(META).map_err(|e| map(e.into()))?;
        meta.insert("format", [3u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 3 → 4: groups written from now on are packed (see `records`); those already
/// written keep their layout and are read as they are. The authors table gets its digest;
/// the format changes (an older lcloud must not open a store holding packed groups).
fn migrate_v3(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    records::seal_authors(&mut txn.open_table(entry::AUTHORS).map_err(|e| map(e.into()))?)?;
    txn.open_table(META)
        .map_err(|e| map(e.into()))?
        .insert("format", [4u8].as_slice())
        .map_err(|e| map(e.into()))?;
    txn.commit().map_err(|e| map(e.into()))
}

fn checkpoint_meta(last: u64, since: u64) -> Vec<u8> {
    let mut m = last.to_le_bytes().to_vec();
    m.extend_from_slice(&since.to_le_bytes());
    m
}

/// The last checkpoint's arrival, the ops since, and the last checkpoint's size in bytes
/// (stores written before sizes were recorded hold its number of leaves there, or nothing).
fn read_checkpoint_meta(bytes: &[u8]) -> Result<(u64, u64, u64), StoreError> {
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match (word(0), word(1)) {
        (Some(last), Some(since)) => Ok((last, since, word(2).unwrap_or(0))),
        _ => Err(corrupt("the checkpoint record is malformed")),
    }
}

fn read_summary(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Summary, StoreError> {
    let rec = meta
        .get("summary")
        .map_err(|e| StoreError::Io {
            path: DB_FILE.into(),
            error: e.to_string(),
        })?
        .ok_or_else(|| corrupt("the store has no summary of its heads"))?;
    Summary::from_bytes(unseal(rec.value(), &|| "the stored summary".into())?)
}

/// The document root, for borrowing.
static ROOT: Path = Path(Vec::new());

/// The document paths whose leaves `outcomes` may have changed, borrowed from the replica
/// (not deduplicated): the root when the whole document may have (a genesis, a refold).
fn touched<'r>(replica: &'r Replica, outcomes: &[&Inserted]) -> Vec<&'r Path> {
    let quarantine = replica.lattice().rules().fork_policy == ForkPolicy::Quarantine;
    if outcomes.iter().any(|o| o.revoked)
        || (quarantine && outcomes.iter().any(|o| !o.forks.is_empty()))
    {
        return vec![&ROOT];
    }
    let mut paths = Vec::new();
    for idx in outcomes.iter().flat_map(|o| o.admitted.iter()) {
        for op in replica.lattice().get(*idx).ops() {
            match op {
                Op::Genesis(_) => return vec![&ROOT],
                other => paths.extend(other.path()),
            }
        }
    }
    paths
}

/// The experiences stored since the leaves were last written (from [`LEAVES_AT`] to `next`):
/// id, depth and ops of each, in arrival order. All are this node's local writes.
type Tail = Vec<(Id, u64, Vec<Op>)>;

fn read_tail(
    dir: &FsPath,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    groups: &impl ReadableTable<u64, &'static [u8]>,
    names: &Names,
    next: u64,
) -> Result<Tail, StoreError> {
    let Some(from) = meta.get(LEAVES_AT).map_err(|e| map_db(dir, e))? else {
        return Ok(Vec::new());
    };
    let from = <[u8; 8]>::try_from(from.value())
        .map(u64::from_le_bytes)
        .map_err(|_| corrupt("the leaves' arrival mark is malformed"))?;
    if from > next {
        return Err(corrupt(format!(
            "the leaves claim experience #{from}, but the store holds {next}"
        )));
    }
    let mut tail = Vec::new();
    if from == next {
        return Ok(tail);
    }
    records::for_each(groups, names, from, |n, entry, bytes, _| {
        if n >= next {
            return Ok(());
        }
        let exp = revalidate_stored(bytes, &names.cloud).map_err(|e| bad_record(n, &e))?;
        let entry = entry.decode()?;
        tail.push((entry.id, entry.depth, exp.ops().to_vec()));
        Ok(())
    })?;
    Ok(tail)
}

fn tail_paths(tail: &Tail) -> Vec<Path> {
    tail.iter()
        .flat_map(|(_, _, ops)| ops.iter().filter_map(Op::path).cloned())
        .collect()
}

/// Applies local writes: each observed everything folded before it.
fn apply_tail(doc: &mut Doc, tail: &Tail) {
    for (id, depth, ops) in tail {
        for (i, op) in ops.iter().enumerate() {
            let dot = lcloud_core::Dot {
                depth: *depth,
                exp: *id,
                op: i as u32,
            };
            doc.apply(op, dot, &ObservesEverything);
        }
    }
}

/// Runs `f`, turning a panic inside it into [`StoreError::Corrupt`]. redb can panic on some
/// damaged pages (a slice index out of range) instead of returning an error; a damaged file
/// must give an error naming it, never take the process down, so the entry points that read
/// a store through (open, load, state) run under this guard.
fn guard<T>(dir: &FsPath, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(StoreError::Corrupt {
                what: format!(
                    "{}: the database engine failed on a damaged page ({msg})",
                    dir.join(DB_FILE).display()
                ),
            })
        }
    }
}
