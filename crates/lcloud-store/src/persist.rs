//! Storing what arrived: [`Store::persist`] and its variants write the experiences an insert
//! admitted (and those it parked) in one durable commit, with the persisted fold (document
//! leaves now, or pending while they are deferred) and a time-travel checkpoint when one is
//! due (docs/store.md, "Durability" and "Reading and writing without replaying history").

use super::*;

impl Store {
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
                META_SUMMARY,
                sealed(&Summary::of(replica).to_bytes()).as_slice(),
            )
            .map_err(|e| map_db(&dir, e))?;
            let state = replica.state();
            meta.insert(META_ORDERED, sealed(&state.ordered.to_bytes()).as_slice())
                .map_err(|e| map_db(&dir, e))?;
            // The guarded paths alone, for the write checks and reads that need only them.
            if state.ordered.guarded.is_empty() {
                meta.remove(META_GUARDS).map_err(|e| map_db(&dir, e))?;
            } else {
                let guards: Vec<(&Path, &Id)> = state.ordered.guarded.paths.iter().collect();
                let bytes = lcloud_core::codec::to_canonical(&guards);
                meta.insert(META_GUARDS, sealed(&bytes).as_slice())
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
                    // META_LEAVES_STALE_AT marks them. No path is tracked per write: the flush
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
                    let keep = p.ops
                        < DEFERRED_LEAVES_EVERY.max(self.deferred_bytes / DEFERRED_BYTES_PER_OP);
                    (pending, flushed) = self.pend_or_write_leaves(
                        &mut meta,
                        &mut leaves,
                        p,
                        fresh,
                        keep,
                        &state.doc,
                    )?;
                }
                Some(before) => {
                    state::write_leaves_diff(&mut leaves, before, &state.doc, &owned())?;
                }
                None => write_leaves(&mut leaves, &state.doc, &owned())?,
            }
            if calls {
                meta.insert(META_HAS_CALLS, [1u8].as_slice())
                    .map_err(|e| map_db(&dir, e))?;
            }
            state::mark_full_history(
                &mut meta,
                replica.lattice(),
                outcomes.iter().any(|o| o.revoked),
            )?;
            travel::record_settles(
                &txn,
                replica.lattice(),
                outcomes.iter().flat_map(|o| o.admitted.iter().copied()),
            )?;
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

    /// A commit's leaf changes, `p` (`fresh`: the first since the leaves were last written):
    /// kept pending while `keep`, the tail of arrivals since then marked in `meta` (under
    /// [`META_LEAVES_STALE_AT`] when others' experiences are among them, else
    /// [`META_LEAVES_AT`]); otherwise every leaf they touched is written from `doc` and the
    /// mark removed. Returns the leaves still pending and, if written, the bytes written. The
    /// one place both the local writes and `persist_bytes` defer leaf writes.
    pub(super) fn pend_or_write_leaves(
        &self,
        meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
        leaves: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        p: PendingLeaves,
        fresh: bool,
        keep: bool,
        doc: &Doc,
    ) -> Result<(Option<PendingLeaves>, Option<u64>), StoreError> {
        let mark = if p.stale {
            META_LEAVES_STALE_AT
        } else {
            META_LEAVES_AT
        };
        if keep {
            if fresh {
                meta.insert(mark, self.next.to_le_bytes().as_slice())
                    .map_err(|e| self.map_db(e))?;
            }
            return Ok((Some(p), None));
        }
        let all: Vec<Path> = p.touched.into_iter().collect();
        let written = state::write_leaves_diff(leaves, &p.base, doc, &all)?;
        if !fresh {
            meta.remove(mark).map_err(|e| self.map_db(e))?;
        }
        Ok((None, Some(written)))
    }

    /// After a commit: what it stored joins what is remembered since the last checkpoint, or
    /// starts it afresh (keeping the checkpoint's writers) if the commit wrote a checkpoint.
    pub(super) fn remember_since_checkpoint(
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
    pub(super) fn maybe_checkpoint<'d>(
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
        let (last, since, bytes) = match meta.get(META_CHECKPOINT).map_err(|e| self.map_db(e))? {
            Some(v) => travel::read_checkpoint_meta(v.value())?,
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
        let mut m = travel::checkpoint_meta(last, since);
        m.extend_from_slice(&bytes.to_le_bytes());
        meta.insert(META_CHECKPOINT, m.as_slice())
            .map_err(|e| self.map_db(e))?;
        Ok(checkpointed)
    }

    /// Sets the fewest ops between time-travel checkpoints (default 4096).
    pub fn set_checkpoint_ops(&mut self, ops: u64) {
        self.checkpoint_ops = ops.max(1);
    }
}

/// The document paths whose leaves `outcomes` may have changed, borrowed from the replica
/// (not deduplicated): the root when the whole document may have (a genesis, a refold).
fn touched<'r>(replica: &'r Replica, outcomes: &[&Inserted]) -> Vec<&'r Path> {
    let quarantine = replica.lattice().rules().fork_policy == ForkPolicy::Quarantine;
    if outcomes.iter().any(|o| o.revoked)
        || (quarantine && outcomes.iter().any(|o| !o.forks.is_empty()))
    {
        return vec![&*ROOT];
    }
    let mut paths = Vec::new();
    for idx in outcomes.iter().flat_map(|o| o.admitted.iter()) {
        if replica.lattice().settles(*idx).is_some() {
            // Settling merges elements under any path (`lcloud_core::Settle`).
            return vec![&*ROOT];
        }
        for op in replica.lattice().get(*idx).ops() {
            match op {
                Op::Genesis(_) => return vec![&*ROOT],
                other => paths.extend(other.path()),
            }
        }
    }
    paths
}
