//! The store proper: experiences in arrival order (a topological order), parked experiences,
//! metadata and aliases, in one redb database; every commit durable before it is acknowledged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path as FsPath, PathBuf};

use lcloud_core::{
    Doc, Experience, ForkPolicy, Id, Inserted, NodeId, ObservesEverything, Op, Path, Replica,
    State, Value, VectorClock, Verified, WriteRefused, revalidate_stored,
};

use crate::error::{StoreError, bad_record, corrupt, map_db};
use crate::identity::create_private_dir;
use crate::migrate;
use crate::record::Names;
use crate::records::{self, Recorder, Written};
use crate::schema::{
    ALIASES, AUTHORS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS, CHECKPOINTS, CONTRACT_NAMES, DB_FILE,
    FORKS, FORMAT, GROUPS, LEAVES, META, META_CHECKPOINT, META_CLOUD, META_FORMAT, META_GUARDS,
    META_HAS_CALLS, META_HAS_SETTLED, META_HAS_VOID, META_LEAVES_AT, META_LEAVES_STALE_AT,
    META_ORDERED, META_SUMMARY, PARKED,
};
use crate::signed::SignedSeq;
use crate::state::{self, Summary, read_doc, sealed, unseal, write_leaves};
use crate::travel::{self, WritersFrom};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

#[path = "base.rs"]
mod base;
#[path = "close.rs"]
mod close;
#[path = "load.rs"]
mod load;
#[path = "local.rs"]
mod local;
#[path = "names.rs"]
mod names;
#[path = "persist.rs"]
mod persist;
#[path = "read.rs"]
mod read;
#[path = "seq_guard.rs"]
mod seq_guard;
pub use base::{COMPACT_ABOVE_MIN, Compaction, Retain, compaction_due};
pub(crate) use base::{admin_bits, admin_of};
pub use close::{CLOSE_VACUUM_MAX, Vacuumed};
pub(crate) use local::plan_batch;
use std::sync::Arc;

/// Bytes of pages redb keeps cached in memory. Its default is 1 GiB, which a long-running node
/// grows into as the file grows; the hot pages (the tops of the trees and the recent leaves) fit
/// in far less.
const CACHE_BYTES: usize = 64 << 20;

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
    /// Marked with [`META_LEAVES_STALE_AT`] (others' experiences) rather than [`META_LEAVES_AT`].
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
    /// bytes' worth of ops (see `BYTES_PER_OP` in checkpoint.rs).
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
    pub fn is_closed(&self) -> bool {
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
            meta.insert(META_FORMAT, [FORMAT].as_slice())
                .map_err(|e| map_db(dir, e))?;
            meta.insert(META_CLOUD, genesis.id().as_bytes().as_slice())
                .map_err(|e| map_db(dir, e))?;
            txn.open_table(PARKED).map_err(|e| map_db(dir, e))?;
            txn.open_table(ALIASES).map_err(|e| map_db(dir, e))?;
            let replica = Replica::with_registry(genesis.clone(), lcloud_contracts::registry())?;
            meta.insert(
                META_SUMMARY,
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
            txn.open_table(CHECKPOINTS).map_err(|e| map_db(dir, e))?;
            txn.open_table(CHECKPOINT_CLOCKS)
                .map_err(|e| map_db(dir, e))?;
            txn.open_table(CHECKPOINT_WRITERS)
                .map_err(|e| map_db(dir, e))?;
            meta.insert(META_CHECKPOINT, travel::checkpoint_meta(0, 0).as_slice())
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
        match store.catch_up_leaves(&replica) {
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
        Ok(meta
            .get(META_LEAVES_AT)
            .map_err(|e| map_db(&dir, e))?
            .is_some()
            || meta
                .get(META_LEAVES_STALE_AT)
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

    /// Writes the leaves from `replica`, loaded from everything stored, if they are behind,
    /// with what its fold makes time travel need (`state::mark_full_history`).
    fn catch_up_leaves(&mut self, replica: &Replica) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        {
            let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
            let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            if meta
                .get(META_LEAVES_AT)
                .map_err(|e| map_db(&dir, e))?
                .is_none()
                && meta
                    .get(META_LEAVES_STALE_AT)
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
            state::write_leaves_diff(&mut leaves, &base, &replica.state().doc, &[Path::root()])?;
            state::mark_full_history(&mut meta, replica.lattice(), false)?;
            meta.remove(META_LEAVES_AT).map_err(|e| map_db(&dir, e))?;
            meta.remove(META_LEAVES_STALE_AT)
                .map_err(|e| map_db(&dir, e))?;
        }
        let settled: Vec<lcloud_core::Idx> = replica.lattice().settled().map(|(i, _)| i).collect();
        travel::record_settles(&txn, replica.lattice(), settled)?;
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
            .get(META_FORMAT)
            .map_err(|e| map_db(dir, e))?
            .map(|v| v.value().first().copied().unwrap_or(0))
            .ok_or_else(|| corrupt("the store has no format version"))?;
        if format > FORMAT {
            return Err(StoreError::NewerFormat(format));
        }
        let cloud = meta
            .get(META_CLOUD)
            .map_err(|e| map_db(dir, e))?
            .and_then(|v| v.value().try_into().ok())
            .map(Id)
            .ok_or_else(|| corrupt("the store names no cloud"))?;
        drop((meta, txn));
        if format < 2 {
            migrate::v1(&db, dir, &cloud)?;
        }
        if format < 3 {
            migrate::v2(&db, dir)?;
        }
        if format < 4 {
            migrate::v3(&db, dir)?;
        }
        if format < 5 {
            migrate::v4(&db, dir)?;
        }
        if format < 6 {
            migrate::v5(&db, dir)?;
        }
        if format < 7 {
            let txn = db.begin_read().map_err(|e| map_db(dir, e))?;
            let base_may_settle = base::base_may_settle(&txn, &cloud)?;
            drop(txn);
            migrate::v6(&db, dir, base_may_settle)?;
        }
        if format < 8 {
            migrate::v7(&db, dir)?;
        }
        if format < 9 {
            migrate::v8(&db, dir)?;
        }
        let txn = db.begin_read().map_err(|e| map_db(dir, e))?;
        let groups = txn.open_table(GROUPS).map_err(|e| map_db(dir, e))?;
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
    /// whole history when others' experiences are among them ([`META_LEAVES_STALE_AT`]). Readers do
    /// not need this for a tail of local writes (they apply it themselves); it keeps it short.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let stale = {
            let txn = self.db()?.begin_read().map_err(|e| map_db(&dir, e))?;
            let meta = txn.open_table(META).map_err(|e| map_db(&dir, e))?;
            let stale = meta
                .get(META_LEAVES_STALE_AT)
                .map_err(|e| map_db(&dir, e))?
                .is_some();
            if !stale
                && meta
                    .get(META_LEAVES_AT)
                    .map_err(|e| map_db(&dir, e))?
                    .is_none()
            {
                self.pending = None;
                return Ok(());
            }
            stale
        };
        // Others' experiences since the leaves were written, and nothing in memory that holds
        // the current document: only a replay can say what the leaves must hold.
        if stale && !(self.pending.is_some() && self.doc_cache.is_some()) {
            let replica = self.load_unguarded(&mut |_| {})?;
            return self.catch_up_leaves(&replica);
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
                    let groups = txn.open_table(GROUPS).map_err(|e| map_db(&dir, e))?;
                    let authors = txn.open_table(AUTHORS).map_err(|e| map_db(&dir, e))?;
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
            meta.remove(META_LEAVES_AT).map_err(|e| map_db(&dir, e))?;
            meta.remove(META_LEAVES_STALE_AT)
                .map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }

    /// The current document under each of `paths`: the leaves, and the experiences written
    /// since the leaves were (see [`META_LEAVES_AT`]).
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
            .get(META_LEAVES_STALE_AT)
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
        let tail = if meta
            .get(META_LEAVES_AT)
            .map_err(|e| self.map_db(e))?
            .is_some()
        {
            let groups = txn.open_table(GROUPS).map_err(|e| self.map_db(e))?;
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
        let groups = txn.open_table(GROUPS).map_err(|e| self.map_db(e))?;
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
        let groups = txn.open_table(GROUPS).map_err(|e| self.map_db(e))?;
        let names = Names::in_txn(&txn, self.cloud)?;
        records::for_each(&groups, &names, 0, |n, entry, bytes, _| {
            let indexed = entry.decode().ok().and_then(|e| {
                let author = names.authors.get(e.author as usize)?;
                Some((*author, e.seq))
            });
            visit(n, indexed, bytes)
        })
    }
}

/// Applies the ops of this node's experience `id` at `depth`, written by `author` (this
/// node), to `doc`.
pub(crate) fn fold_into(doc: &mut Doc, id: Id, depth: u64, author: NodeId, ops: &[Op]) {
    doc.apply_experience(ops, depth, id, author, &ObservesEverything);
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

fn read_summary(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Summary, StoreError> {
    let rec = meta
        .get(META_SUMMARY)
        .map_err(|e| StoreError::Io {
            path: DB_FILE.into(),
            error: e.to_string(),
        })?
        .ok_or_else(|| corrupt("the store has no summary of its heads"))?;
    Summary::from_bytes(unseal(rec.value(), &|| "the stored summary".into())?)
}

/// The document root, for borrowing.
pub(crate) static ROOT: std::sync::LazyLock<Path> = std::sync::LazyLock::new(Path::root);

/// The experiences stored since the leaves were last written (from [`META_LEAVES_AT`] to `next`):
/// id, depth and ops of each, in arrival order. All are this node's local writes.
type Tail = Vec<(Id, u64, NodeId, Vec<Op>)>;

fn read_tail(
    dir: &FsPath,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    groups: &impl ReadableTable<u64, &'static [u8]>,
    names: &Names,
    next: u64,
) -> Result<Tail, StoreError> {
    let Some(from) = meta.get(META_LEAVES_AT).map_err(|e| map_db(dir, e))? else {
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
        tail.push((entry.id, entry.depth, exp.author(), exp.ops().to_vec()));
        Ok(())
    })?;
    Ok(tail)
}

fn tail_paths(tail: &Tail) -> Vec<Path> {
    tail.iter()
        .flat_map(|(_, _, _, ops)| ops.iter().filter_map(Op::path).cloned())
        .collect()
}

/// Applies local writes: each observed everything folded before it.
fn apply_tail(doc: &mut Doc, tail: &Tail) {
    for (id, depth, author, ops) in tail {
        fold_into(doc, *id, *depth, *author, ops);
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
