//! Conversions of older store formats, each in one transaction (a crash leaves either format
//! whole), run by `Store::open` (docs/store.md, the formats after "Tables").

use std::path::Path as FsPath;

use lcloud_core::{Id, Replica, revalidate_stored};
use redb::{Database, ReadableTable, TableDefinition};

use crate::authors;
use crate::error::{StoreError, bad_record, corrupt, map_db};
use crate::records::Recorder;
use crate::schema::{
    AUTHORS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS, CHECKPOINTS, LEAVES, META, META_CHECKPOINT,
    META_FORMAT, META_LEAVES_STALE_AT,
};
use crate::state::{self, unseal};
use crate::travel;

/// Converts a format-1 store in one transaction (so a crash leaves either format whole): its
/// records (one per experience, `experiences`) and index (`index`) become record groups; the
/// authors, chains and checkpoints are rebuilt from a load of the history, so every
/// experience gets an index entry even in a store older than the index.
pub(crate) fn v1(db: &Database, dir: &FsPath, cloud: &Id) -> Result<(), StoreError> {
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
            CHECKPOINTS,
            CHECKPOINT_CLOCKS,
            CHECKPOINT_WRITERS,
        ] {
            txn.delete_table(table).map_err(|e| map(e.into()))?;
        }
        txn.delete_table(AUTHORS).map_err(|e| map(e.into()))?;
        const V1_CHAINS: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("chains");
        txn.delete_table(V1_CHAINS).map_err(|e| map(e.into()))?;
        for table in [CHECKPOINTS, CHECKPOINT_CLOCKS, CHECKPOINT_WRITERS] {
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
        let mut m = travel::checkpoint_meta(0, 0);
        m.extend_from_slice(&0u64.to_le_bytes());
        meta.insert(META_CHECKPOINT, m.as_slice())
            .map_err(|e| map(e.into()))?;
        meta.insert(META_FORMAT, [2u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 2 → 3: every document leaf's tag covers its key too (so a leaf moved to another
/// path by a damaged key is caught). One transaction: a crash leaves format 2 as it was.
pub(crate) fn v2(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    {
        let mut leaves = txn.open_table(LEAVES).map_err(|e| map(e.into()))?;
        state::reseal_leaves(&mut leaves)?;
        let mut meta = txn.open_table(META).map_err(|e| map(e.into()))?;
        meta.insert(META_FORMAT, [3u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 3 → 4: groups written from now on are packed (see `records`); those already
/// written keep their layout and are read as they are. The authors table gets its digest;
/// the format changes (an older lcloud must not open a store holding packed groups).
pub(crate) fn v3(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    authors::seal_authors(&mut txn.open_table(AUTHORS).map_err(|e| map(e.into()))?)?;
    txn.open_table(META)
        .map_err(|e| map(e.into()))?
        .insert(META_FORMAT, [4u8].as_slice())
        .map_err(|e| map(e.into()))?;
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 4 → 5: the fold merges each experience's increments of a counter into one element
/// (`Leaf::add_increment`), so the stored leaves, which hold one per op, are merged the same
/// way (a refold must give the persisted fold byte for byte). Checkpoints are read as they
/// are and merged when read. One transaction; the format changes (an older lcloud would
/// read merged leaves and checkpoints as what they are not).
pub(crate) fn v4(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    {
        let mut leaves = txn.open_table(LEAVES).map_err(|e| map(e.into()))?;
        state::merge_leaf_increments(&mut leaves)?;
        let mut meta = txn.open_table(META).map_err(|e| map(e.into()))?;
        meta.insert(META_FORMAT, [5u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 5 → 6: a format-6 store may hold a compaction base (`META_BASE`); one without is
/// a format-5 store, so only the number changes (an older lcloud would read a compacted
/// store's kept experiences as a history with holes).
pub(crate) fn v5(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    renumber(db, dir, 6)
}

/// Sets the format number alone, for a migration that changes nothing else.
fn renumber(db: &Database, dir: &FsPath, format: u8) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    txn.open_table(META)
        .map_err(|e| map(e.into()))?
        .insert(META_FORMAT, [format].as_slice())
        .map_err(|e| map(e.into()))?;
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 6 → 7: the fold settles counters and sets below settled checkpoints
/// (`lcloud_core::Settle`), so leaves written by format 6 may hold elements a fold now merges.
/// They are marked stale: opening the store, right after this, replays the history once,
/// rewrites them and marks whether time travel needs the full history. A compacted store
/// cannot replay what lies below its base: one whose base holds anything a settle may merge
/// is refused, naming what to do; one whose base holds nothing of the kind is as format 7
/// would have written it (`base_may_settle` says which: `base::base_may_settle`). One
/// transaction: a crash leaves format 6 as it was.
pub(crate) fn v6(db: &Database, dir: &FsPath, base_may_settle: bool) -> Result<(), StoreError> {
    let map = |e: redb::Error| map_db(dir, e);
    if base_may_settle {
        return Err(StoreError::CannotMigrate(
            "it was compacted by an older lcloud (store format 6), and its base holds counters \
             or sets that this version's fold merges below settled checkpoints; start this node \
             again from a shallow bundle of a node that runs this version (`lcloud join --shallow`)"
                .into(),
        ));
    }
    let txn = db.begin_write().map_err(|e| map(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| map(e.into()))?;
        meta.insert(META_LEAVES_STALE_AT, 1u64.to_le_bytes().as_slice())
            .map_err(|e| map(e.into()))?;
        meta.insert(META_FORMAT, [7u8].as_slice())
            .map_err(|e| map(e.into()))?;
    }
    txn.commit().map_err(|e| map(e.into()))
}

/// Format 7 → 8: format 8 records what each experience settles (`SETTLES`), and its time
/// travel settles as the fold does where a format-7 store asked for the full history. A
/// format-7 store that stored a settling experience has `META_HAS_SETTLED`, which keeps its
/// time travel on the full history; one that did not is a format-8 store with no settles.
/// Only the number changes (a format-7 lcloud would travel through a format-8 store without
/// settling).
pub(crate) fn v7(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    renumber(db, dir, 8)
}

/// Format 8 → 9: format 9 stores groups and checkpoints compressed where that pays (a flag
/// in a group's count, a kind byte of a checkpoint); what format 8 wrote reads as it is.
/// Only the number changes (an older lcloud would take a compressed group's count for
/// garbage).
pub(crate) fn v8(db: &Database, dir: &FsPath) -> Result<(), StoreError> {
    renumber(db, dir, 9)
}
