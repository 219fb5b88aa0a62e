//! Compaction on disk (format 6): a store that keeps, below the deepest final checkpoint,
//! only what `Replica::compacted` keeps, with the state at that checkpoint as its base, and
//! loads as `Replica::restore` rebuilds it (docs/store.md, "Compaction").
//!
//! A compaction writes a new database beside the old one and renames it over it: a crash
//! leaves either the old store or the new one whole, and the space the dropped history took
//! is given back to the file system.

use super::*;
use crate::schema::{HEADERS, META_BASE};
use lcloud_core::{Kept, SignedHeader};

/// What a compaction keeps of the experiences it drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// Nothing: the base (the state at the checkpoint) stands for them.
    Checkpoint,
    /// Each one's signed header (about 250 bytes, the ops left out): every chain stays
    /// checkable link by link and signature by signature (`lcloud verify`), and a fork below
    /// the checkpoint stays provable.
    Headers,
}

/// What [`Store::compact`] did.
#[derive(Clone, Debug)]
pub struct Compaction {
    /// The depth of the final checkpoint compacted at.
    pub depth: u64,
    /// Its cut's clock: the earliest cut the store still holds.
    pub earliest: VectorClock,
    /// Experiences stored before (the genesis included).
    pub before: u64,
    /// Experiences stored after.
    pub after: u64,
    /// Of those, kept below the checkpoint (the genesis included).
    pub kept_below: u64,
    /// Signed headers of dropped experiences held ([`Retain::Headers`]).
    pub headers: u64,
    /// The store file's size before and after, in bytes.
    pub bytes: (u64, u64),
}

/// A compacted store's base as stored under [`META_BASE`]: the checkpoint's depth and clock,
/// the arrivals below it (the genesis and the kept experiences, stored with their depths and
/// clocks as index entries), and for each kept one (arrivals 1 on) what the full history
/// said of it: `[void, head, admin]`, admin 0 for no key rotation, else 1 + the two rights
/// decisions as bits (`Kept::admin`).
pub(crate) struct BaseMeta {
    pub depth: u64,
    pub clock: VectorClock,
    pub end: u64,
    flags: Vec<(bool, bool, u8)>,
}

type BaseRecord = (u64, Vec<(NodeId, u64)>, u64, Vec<(bool, bool, u8)>);

/// The most kept experiences a base may name: more than any store holds below a checkpoint
/// (a decoder caps what it allocates).
const KEPT_MAX: usize = 1 << 28;

impl BaseMeta {
    fn encode(&self) -> Vec<u8> {
        let clock: Vec<(&NodeId, &u64)> = self.clock.0.iter().collect();
        sealed(&lcloud_core::codec::to_canonical(&(
            self.depth,
            clock,
            self.end,
            &self.flags,
        )))
    }

    fn decode(rec: &[u8]) -> Result<BaseMeta, StoreError> {
        let bytes = unseal(rec, &|| "the compaction base".into())?;
        let bad = |why: String| corrupt(format!("the compaction base: {why}"));
        let (depth, clock, end, flags): BaseRecord =
            lcloud_core::codec::from_canonical_stored(bytes).map_err(|e| bad(e.to_string()))?;
        if flags.len() > KEPT_MAX || flags.len() as u64 + 1 != end {
            return Err(bad(format!(
                "it names {} kept experiences below arrival {end}",
                flags.len()
            )));
        }
        Ok(BaseMeta {
            depth,
            clock: VectorClock(clock.into_iter().collect()),
            end,
            flags,
        })
    }

    fn flags_of(k: &Kept) -> (bool, bool, u8) {
        (k.void, k.head, admin_bits(k.admin))
    }
}

/// A kept key rotation's two rights decisions (`Kept::admin`) as one flag: 0 for none, else
/// 1 + the decisions as bits. The store's base and shallow bundles both write it.
pub(crate) fn admin_bits(admin: Option<[bool; 2]>) -> u8 {
    admin.map_or(0, |[a, b]| 1 + u8::from(a) + 2 * u8::from(b))
}

/// [`admin_bits`] read back, or why not.
pub(crate) fn admin_of(bits: u8) -> Result<Option<[bool; 2]>, String> {
    match bits {
        0 => Ok(None),
        1..=4 => Ok(Some([(bits - 1) & 1 == 1, (bits - 1) & 2 == 2])),
        _ => Err(format!("admin flag {bits} is not 0 to 4")),
    }
}

/// The fewest experiences above a compacted store's base before another compaction.
pub const COMPACT_ABOVE_MIN: usize = lcloud_core::CHECKPOINT_EVERY as usize;

/// Whether a node keeping `replica` with `--retain headers|checkpoint` compacts now: a final
/// checkpoint lies above its last compaction, and the history above the base is at least as
/// long as what it keeps below (and [`COMPACT_ABOVE_MIN`]), so that rewriting the store
/// costs a bounded amount per experience.
pub fn compaction_due(replica: &Replica) -> bool {
    let lattice = replica.lattice();
    let Some(fixed) = lattice.fixed_depth() else {
        return false;
    };
    if lattice.compaction_point().is_some_and(|(d, _)| *d >= fixed) {
        return false;
    }
    let kept = lattice.kept_below();
    lattice.len() - kept >= COMPACT_ABOVE_MIN.max(kept)
}

/// The key of a dropped experience's header: node id ‖ seq (big-endian) ‖ id, so one
/// author's headers are in chain order and a fork's two branches both fit.
fn header_key(author: &NodeId, seq: u64, id: &Id) -> Vec<u8> {
    let mut key = Vec::with_capacity(72);
    key.extend_from_slice(&author.0);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Where a compaction writes the new database before renaming it over the old one.
const COMPACTING_DIR: &str = "compacting";

impl Store {
    /// The compaction base, if this store was compacted.
    pub(crate) fn base_meta(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Option<BaseMeta>, StoreError> {
        match meta.get(META_BASE).map_err(|e| self.map_db(e))? {
            Some(v) => Ok(Some(BaseMeta::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The checkpoint this store was compacted at, if it was: its depth and its cut's clock
    /// (the earliest cut the store still holds).
    pub fn compaction_point(&self) -> Result<Option<(u64, VectorClock)>, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        Ok(self.base_meta(&meta)?.map(|b| (b.depth, b.clock)))
    }

    /// Compacts the store at the deepest final checkpoint of `replica` (this store's history,
    /// loaded): keeps below it only what `Replica::compacted` keeps, and the state at the
    /// checkpoint as the base the fold starts from; with [`Retain::Headers`], also the signed
    /// header of every experience it drops. The new store's root is checked against
    /// `replica`'s before it replaces the old one. Returns what it did; the store is open
    /// again on the compacted file.
    pub fn compact(&mut self, replica: &Replica, retain: Retain) -> Result<Compaction, StoreError> {
        guard(&self.dir.clone(), || {
            self.compact_unguarded(replica, retain)
        })
    }

    fn compact_unguarded(
        &mut self,
        replica: &Replica,
        retain: Retain,
    ) -> Result<Compaction, StoreError> {
        self.flush()?;
        let c = replica.compacted().map_err(StoreError::Compact)?;
        let (depth, earliest) = c
            .lattice()
            .compaction_point()
            .cloned()
            .expect("a compacted replica has a compaction point");
        let file = self.dir.join(DB_FILE);
        let bytes_before = fs::metadata(&file)
            .map_err(|e| StoreError::io(&file, e))?
            .len();
        let tmp = self.dir.join(COMPACTING_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        }
        let genesis = replica.lattice().get(0).clone();
        let mut fresh = Store::create(&tmp, &genesis)?;
        let headers_of = (retain == Retain::Headers).then_some(replica);
        let headers = fresh.write_compacted(&c, headers_of, Some(self))?;
        // A new database grows by regions; giving back its free pages makes the compacted
        // file about a third smaller (W12: 561 kB to 365 kB for W1's history).
        if let Some(db) = fresh.db.as_mut() {
            db.compact().map_err(|e| map_db(&tmp, e))?;
        }
        drop(fresh);
        // The new file is complete and synced (every commit is); the rename replaces the old
        // one at once, and the directory is synced so the rename survives a crash.
        let new_file = tmp.join(DB_FILE);
        self.db = None;
        let renamed = fs::rename(&new_file, &file)
            .map_err(|e| StoreError::io(&file, e))
            .and_then(|()| {
                fs::File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| StoreError::io(&self.dir, e))
            });
        let _ = fs::remove_dir_all(&tmp);
        // Open whichever file is there now: the new one, or the old one if the rename failed.
        self.reopen_with(Store::open_behind)?;
        renamed?;
        let bytes_after = fs::metadata(&file)
            .map_err(|e| StoreError::io(&file, e))?
            .len();
        Ok(Compaction {
            depth,
            earliest,
            before: replica.lattice().len() as u64,
            after: c.lattice().len() as u64,
            kept_below: c.lattice().kept_below() as u64,
            headers,
            bytes: (bytes_before, bytes_after),
        })
    }

    /// A new store in `dir` holding the compacted replica `c` (restored from a shallow
    /// bundle, say): its base, what it keeps below it and everything above.
    pub fn create_compacted(dir: &FsPath, c: &Replica) -> Result<Store, StoreError> {
        if c.lattice().compaction_point().is_none() {
            return Err(StoreError::Compact(lcloud_core::CompactError::Base(
                "the replica is not compacted".into(),
            )));
        }
        let mut store = Store::create(dir, c.lattice().get(0))?;
        store.write_compacted(c, None, None)?;
        Ok(store)
    }

    /// Writes the compacted replica `c` into this fresh store, in one transaction, with the
    /// signed header of every experience of `headers_of` (the full replica it was compacted
    /// from) that `c` dropped, and what `old` (the store compacted) holds beside the history.
    /// Returns how many headers it kept.
    fn write_compacted(
        &mut self,
        c: &Replica,
        headers_of: Option<&Replica>,
        old: Option<&Store>,
    ) -> Result<u64, StoreError> {
        let dir = self.dir.clone();
        let m = |e: redb::Error| map_db(&dir, e);
        let lattice = c.lattice();
        let (depth, clock) = lattice.compaction_point().cloned().expect("compacted");
        let end = lattice.kept_below() as u64;
        let txn = self.db()?.begin_write().map_err(|e| m(e.into()))?;
        let mut headers = 0u64;
        {
            let mut recorder = Recorder::open(&txn, self.cloud)?;
            for i in 1..lattice.len() as lcloud_core::Idx {
                let exp = lattice.get(i);
                recorder.add(
                    u64::from(i),
                    exp.id(),
                    &exp.author(),
                    exp.seq(),
                    lattice.depth(i),
                    lattice.clock_entries(i),
                    &exp.to_bytes(),
                )?;
            }
            recorder.finish()?;
            let base = BaseMeta {
                depth,
                clock: clock.clone(),
                end,
                flags: lattice.kept().iter().map(BaseMeta::flags_of).collect(),
            };
            let mut meta = txn.open_table(META).map_err(|e| m(e.into()))?;
            meta.insert(META_BASE, base.encode().as_slice())
                .map_err(|e| m(e.into()))?;
            // The base is the checkpoint after the kept arrivals: time travel to any cut that
            // includes it starts there.
            let doc = c.base_document().expect("compacted");
            let written = travel::write_checkpoint(
                &txn,
                &self.cloud,
                end,
                &clock,
                doc,
                WritersFrom::<std::iter::Empty<&Written>>::Lattice(lattice),
                None,
            )?
            .ok_or_else(|| corrupt("the base names an experience the compaction did not keep"))?;
            let mut cp = travel::checkpoint_meta(end, 0);
            cp.extend_from_slice(&written.0.to_le_bytes());
            meta.insert(META_CHECKPOINT, cp.as_slice())
                .map_err(|e| m(e.into()))?;
            meta.insert(META_SUMMARY, sealed(&Summary::of(c).to_bytes()).as_slice())
                .map_err(|e| m(e.into()))?;
            let state = c.state();
            meta.insert(META_ORDERED, sealed(&state.ordered.to_bytes()).as_slice())
                .map_err(|e| m(e.into()))?;
            state::mark_full_history(&mut meta, lattice, false)?;
            if lattice.any_settled() {
                // Time travel above a base does not read what kept experiences settle.
                meta.insert(META_HAS_SETTLED, [1u8].as_slice())
                    .map_err(|e| m(e.into()))?;
            }
            let mut leaves = txn.open_table(LEAVES).map_err(|e| m(e.into()))?;
            write_leaves(&mut leaves, &state.doc, &[Path::root()])?;
            let mut parked = txn.open_table(PARKED).map_err(|e| m(e.into()))?;
            for id in lattice.parked_ids() {
                let exp = lattice.parked_experience(id).expect("parked");
                parked
                    .insert(id.as_bytes(), sealed(&exp.to_bytes()).as_slice())
                    .map_err(|e| m(e.into()))?;
            }
            let mut table = txn.open_table(HEADERS).map_err(|e| m(e.into()))?;
            if let Some(full) = headers_of {
                for exp in full.lattice().iter().filter(|e| !lattice.contains(&e.id())) {
                    let signed = SignedHeader::of(exp);
                    let bytes = lcloud_core::codec::to_canonical(&signed);
                    table
                        .insert(
                            header_key(&exp.author(), exp.seq(), &exp.id()).as_slice(),
                            sealed(&bytes).as_slice(),
                        )
                        .map_err(|e| m(e.into()))?;
                    headers += 1;
                }
            }
        }
        if let Some(old) = old {
            headers += old.copy_kept_tables(&txn)?;
        }
        txn.commit().map_err(|e| m(e.into()))?;
        Ok(headers)
    }

    /// Copies into a compacted store what compaction does not change: fork proofs, aliases,
    /// contract names, and headers an earlier compaction kept. Returns how many headers.
    fn copy_kept_tables(&self, txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
        let m = |e: redb::Error| self.map_db(e);
        let read = self.db()?.begin_read().map_err(|e| m(e.into()))?;
        copy_table(&read, txn, FORKS).map_err(m)?;
        copy_table(&read, txn, ALIASES).map_err(m)?;
        copy_table(&read, txn, CONTRACT_NAMES).map_err(m)?;
        copy_table(&read, txn, HEADERS).map_err(m)
    }

    /// Loads a compacted store's replica: the kept experiences below the base (arrivals
    /// `1..end`, with the depths and clocks their index entries hold and the flags of `base`)
    /// restored with the document at the base (`Replica::restore`), then every arrival above
    /// inserted in order.
    pub(super) fn load_compacted(
        &self,
        base: BaseMeta,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Replica, StoreError> {
        let cloud = self.cloud;
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let groups = txn.open_table(GROUPS).map_err(|e| self.map_db(e))?;
        let names = Names::in_txn(&txn, cloud)?;
        let doc = base_document(&txn, &cloud, base.end)?;
        let mut genesis = None;
        let mut kept: Vec<Kept> = Vec::with_capacity(base.flags.len());
        let mut replica: Option<Replica> = None;
        let mut doc = Some(doc);
        let mut restore = |genesis: &mut Option<Verified<Experience>>, kept: &mut Vec<Kept>| {
            let genesis = genesis
                .take()
                .ok_or_else(|| corrupt("the store has no genesis"))?;
            Replica::restore(
                genesis,
                lcloud_contracts::registry(),
                (base.depth, base.clock.clone()),
                std::mem::take(kept),
                doc.take().expect("restored once"),
            )
            .map_err(|e| corrupt(e.to_string()))
        };
        records::for_each(&groups, &names, 0, |n, entry, bytes, _| {
            let exp = revalidate_stored(bytes, &cloud).map_err(|e| bad_record(n, &e))?;
            if n == 0 {
                genesis = Some(exp);
            } else if n < base.end {
                let e = entry.decode()?;
                let (void, head, admin) = base.flags[n as usize - 1];
                let mut clock = VectorClock::default();
                for (a, s) in e.clock {
                    let node = names.authors.get(a as usize).ok_or_else(|| {
                        corrupt(format!("experience #{n}: its clock names author #{a}"))
                    })?;
                    clock.0.insert(*node, s);
                }
                kept.push(Kept {
                    exp: Arc::new(exp),
                    depth: e.depth,
                    clock,
                    void,
                    admin: admin_of(admin)
                        .map_err(|why| corrupt(format!("the compaction base: {why}")))?,
                    head,
                });
            } else {
                if replica.is_none() {
                    replica = Some(restore(&mut genesis, &mut kept)?);
                }
                super::load::admit(replica.as_mut().expect("just restored"), exp, n)?;
            }
            progress(n);
            Ok(())
        })?;
        match replica {
            Some(r) => Ok(r),
            None => restore(&mut genesis, &mut kept),
        }
    }

    /// Checks every header a compaction kept (`Retain::Headers`): its key names it, its
    /// signature is its author's, and wherever the store holds its author's chain one seq
    /// below (a header or an experience), its prev is that; likewise the prev of every
    /// experience of `replica` (this store's) that follows a header. A gap is left only where
    /// an earlier compaction kept no headers. Returns how many headers it checked.
    pub fn verify_headers(&self, replica: &Replica) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let table = match txn.open_table(HEADERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(self.map_db(e)),
        };
        let mut held: BTreeMap<(NodeId, u64), Vec<Id>> = BTreeMap::new();
        let mut links: Vec<(String, NodeId, u64, Id)> = Vec::new();
        let mut count = 0u64;
        for row in table.iter().map_err(|e| self.map_db(e))? {
            let (k, v) = row.map_err(|e| self.map_db(e))?;
            let name = format!("kept header {}", hex::encode(k.value()));
            let bad = |why: &str| corrupt(format!("{name}: {why}"));
            let bytes = unseal(v.value(), &|| name.clone())?;
            let h: SignedHeader = lcloud_core::codec::from_canonical_stored(bytes)
                .map_err(|e| bad(&e.to_string()))?;
            let id = h.header.id();
            if k.value() != header_key(&h.header.author, h.header.seq, &id).as_slice() {
                return Err(bad("its key does not name it"));
            }
            if h.header.cloud.as_bytes() != self.cloud.as_bytes() {
                return Err(bad("it is another cloud's"));
            }
            if !h.verify() {
                return Err(bad("its signature does not verify"));
            }
            held.entry((h.header.author, h.header.seq))
                .or_default()
                .push(id);
            if let Some(prev) = h.header.prev {
                links.push((name, h.header.author, h.header.seq, prev));
            }
            count += 1;
        }
        for exp in replica.lattice().iter() {
            held.entry((exp.author(), exp.seq()))
                .or_default()
                .push(exp.id());
            if let Some(prev) = exp.header().prev {
                let name = format!("experience {}:{}", exp.author(), exp.seq());
                links.push((name, exp.author(), exp.seq(), prev));
            }
        }
        for (name, author, seq, prev) in links {
            if let Some(below) = held.get(&(author, seq - 1))
                && !below.contains(&prev)
            {
                return Err(corrupt(format!(
                    "{name}: its prev {prev} is not the header or experience the store holds \
                     one seq below it"
                )));
            }
        }
        Ok(count)
    }
}

/// Whether a compacted store's base (if it is one) holds what a settle may merge: a counter
/// of more than one element or a set element added more than once. Such a base, written
/// before format 7, lacks the merges of the experiences compacted away (`migrate::v6`).
pub(crate) fn base_may_settle(txn: &redb::ReadTransaction, cloud: &Id) -> Result<bool, StoreError> {
    let meta = txn
        .open_table(META)
        .map_err(|e| corrupt(format!("the meta table: {e}")))?;
    let Some(rec) = meta
        .get(META_BASE)
        .map_err(|e| corrupt(format!("the compaction base: {e}")))?
    else {
        return Ok(false);
    };
    let base = BaseMeta::decode(rec.value())?;
    let doc = base_document(txn, cloud, base.end)?;
    Ok(doc
        .leaves_under(&Path::root())
        .any(|(_, l)| l.incs.len() > 1 || l.elems.values().any(|dots| dots.len() > 1)))
}

/// The document at a compacted store's base: the checkpoint after its first `end` arrivals
/// (the genesis and the experiences kept below the base), which compaction writes and
/// nothing removes.
fn base_document(txn: &redb::ReadTransaction, cloud: &Id, end: u64) -> Result<Doc, StoreError> {
    let m = |e: redb::Error| corrupt(format!("the compaction base's checkpoint: {e}"));
    let authors = txn.open_table(AUTHORS).map_err(|e| m(e.into()))?;
    let groups = txn.open_table(GROUPS).map_err(|e| m(e.into()))?;
    let mut records = crate::records::Records::new(&groups, Names::read(&authors, *cloud)?);
    let runs = txn
        .open_table(crate::schema::RUNS)
        .map_err(|e| m(e.into()))?;
    let checkpoints = txn.open_table(CHECKPOINTS).map_err(|e| m(e.into()))?;
    let writers = txn
        .open_table(CHECKPOINT_WRITERS)
        .map_err(|e| m(e.into()))?;
    let rec = checkpoints
        .get(end)
        .map_err(|e| m(e.into()))?
        .ok_or_else(|| {
            corrupt(format!(
                "the compaction base's checkpoint ({end}) is missing"
            ))
        })?;
    Ok(travel::read_checkpoint(end, rec.value(), &writers, &runs, &mut records, cloud)?.0)
}

/// Copies every row of `def` from `read` into `txn` (none if `read` has no such table);
/// returns how many rows were new there.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    txn: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, redb::Error> {
    let from = match read.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut to = txn.open_table(def)?;
    let mut new = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        if to.insert(k.value(), v.value())?.is_none() {
            new += 1;
        }
    }
    Ok(new)
}
