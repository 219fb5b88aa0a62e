//! Local writes without loading the history: a node's own experiences drafted on the
//! persisted frontier (`summary`), checked against the persisted document, signed and
//! committed with their index entries and leaves (docs/store.md, "Reading and writing
//! without replaying history").

use std::borrow::Cow;

use lcloud_core::{
    Doc, Draft, EXPERIENCE_BYTES_MAX, Experience, Id, InsertError, NodeId, Op, Path, PreparedOps,
    VectorClock, Verified,
};

use crate::error::{StoreError, map_db};
use crate::identity::Identity;
use crate::records::Recorder;
use crate::schema::{LEAVES, META, META_SUMMARY};
use crate::sign::{self, Signed};
use crate::state::{Summary, read_doc, sealed};
use redb::ReadableDatabase;

use super::{
    LEAVES_BYTES_PER_OP, LEAVES_EVERY, PathSet, PendingLeaves, Store, WriteResult, fold_into,
    read_summary,
};

impl Store {
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
        let pending;
        let written_last;
        let flushed;
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
                    fold_into(&mut doc, exp.id(), depth, exp.author(), exp.ops());
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
            let keep = self.cache_document
                && p.ops < LEAVES_EVERY.max(self.flushed_bytes / LEAVES_BYTES_PER_OP);
            (pending, flushed) =
                self.pend_or_write_leaves(&mut meta, &mut leaves, p, fresh, keep, &doc)?;
            written_last = last_id.map(|id| (id, clock));
            meta.insert(META_SUMMARY, sealed(&summary.to_bytes()).as_slice())
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
}

pub(super) fn check_local(
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
