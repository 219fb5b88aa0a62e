//! Group commit: many concurrent writers, one fsync per batch.
//!
//! A [`Committer`] owns the store. Writers send their ops and block until the experience is
//! durable. Three threads form a pipeline, so signing one batch overlaps storing the one before:
//!
//! - the **planner** takes every request waiting, refuses what the fold would misread
//!   ([`lcloud_core::check_shapes`] against the document it keeps), chains the rest as
//!   consecutive experiences of this node on the chain tip it keeps in memory (ids hash headers, not signatures, so the
//!   chain is fixed before signing), and hands the drafts to a pool of signing threads, one
//!   per core;
//! - the **storer** takes every planned batch waiting, waits for their signatures, writes them
//!   in one transaction and commits once (the first fsync);
//! - the **acknowledger** records the highest seq signed in `signed-seq` (the second fsync)
//!   and answers the writers, while the storer goes on with the next batches.
//!
//! A writer is answered only after both syncs. A batch planned on top of one whose commit
//! failed is refused whole ([`StoreError::EarlierWriteFailed`]); the storer then hands the
//! planner the stored chain tip to plan on again.

use std::sync::mpsc;
use std::thread::JoinHandle;

use lcloud_core::{Doc, Edit, Experience, Id, NodeId, Op, PreparedOps, Verified};

use crate::error::StoreError;
use crate::identity::Identity;
use crate::sign::{PendingSigs, SignPool, cores};
use crate::signed::SignedSeq;
use crate::state::Summary;
use crate::store::{Store, fold_into, plan_batch};

type WriteResult = Result<Verified<Experience>, StoreError>;

/// Most requests folded into one commit.
pub const BATCH_MAX: usize = 4096;

/// What a writer is told when its write is durable (or refused).
pub type Reply = Box<dyn FnOnce(Result<Verified<Experience>, StoreError>) + Send>;

struct Request {
    /// Encoded and hashed on the writer's thread, not the committer's.
    ops: PreparedOps,
    /// List and text edits by index, turned into `ops` by the planner against the document
    /// with every write before them (`ops` is empty until then).
    edits: Option<Vec<Edit>>,
    reply: Reply,
}

impl Request {
    /// Whether a write holding it needs the whole history ([`Op::needs_history`]).
    fn needs_history(&self) -> bool {
        match &self.edits {
            Some(edits) => edits.iter().filter_map(Edit::as_op).any(Op::needs_history),
            None => self.ops.ops().iter().any(Op::needs_history),
        }
    }
}

/// A batch on its way from the planner to the storer.
enum Batch {
    /// Chained on `base` (advancing it to `after`) in planner epoch `epoch`; each request's
    /// draft is being signed, or was refused while planning.
    Planned(Box<Planned>),
    /// The planner has no chain tip to plan on (the store could not say, or this node
    /// forked): the storer writes these the slow way and then hands back a tip.
    Unplanned(Vec<Request>),
}

/// Requests chained on `base` (advancing it to `after`) in planner epoch `epoch`.
struct Planned {
    epoch: u64,
    base: Summary,
    after: Summary,
    replies: Vec<Reply>,
    /// Per request: refused while planning, or being signed.
    refused: Vec<Option<StoreError>>,
    sigs: PendingSigs,
    /// The document with the batch's ops applied, when the planner keeps one.
    folded: Option<Doc>,
}

/// What the storer hands the planner after a failure: the epoch from now on, the stored
/// summary to plan on (`None`: write unplanned) and the stored document to fold into (`None`:
/// the storer folds).
type Resync = (u64, Option<Summary>, Option<Doc>);

/// A handle to submit writes to the committer thread; clone it for each writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Writes `ops` as one experience and returns once it is durable.
    pub fn write(&self, ops: Vec<Op>) -> Result<Verified<Experience>, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            ops,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `ops` as one experience; `reply` is called from the committer thread once it is
    /// durable or refused. For async callers: send the result to a oneshot channel there.
    pub fn submit(&self, ops: Vec<Op>, reply: Reply) -> Result<(), StoreError> {
        let ops = PreparedOps::new(ops);
        // What no reader could decode is never signed.
        ops.check_nesting()?;
        self.tx
            .send(Request {
                ops,
                edits: None,
                reply,
            })
            .map_err(|_| StoreError::Closed)
    }

    /// Writes `edits` (list and text edits by index among them) as one experience and
    /// returns once it is durable.
    pub fn write_edits(&self, edits: Vec<Edit>) -> Result<Verified<Experience>, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit_edits(
            edits,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `edits` as one experience, as [`Writer::submit`] does ops. Their indexes mean
    /// the document with every write queued before them: the committer turns them into ops
    /// ([`lcloud_core::resolve`]) once those are planned, so many may be in flight at once.
    pub fn submit_edits(&self, edits: Vec<Edit>, reply: Reply) -> Result<(), StoreError> {
        self.tx
            .send(Request {
                ops: PreparedOps::new(Vec::new()),
                edits: Some(edits),
                reply,
            })
            .map_err(|_| StoreError::Closed)
    }
}

/// The committer thread and its handle.
pub struct Committer {
    writer: Writer,
    thread: JoinHandle<Store>,
}

impl Committer {
    /// Starts the committer's threads, which own `store` until [`Committer::stop`].
    pub fn start(mut store: Store, identity: Identity) -> Committer {
        store
            .cache_document(true)
            .expect("turning the cache on writes nothing");
        let me = identity.id();
        let cloud = store.cloud();
        let first_base = store.plan_base(&me).ok().flatten();
        let first_doc = first_base
            .as_ref()
            .and_then(|_| store.cached_document().ok());
        let (tx, rx) = mpsc::channel::<Request>();
        let (acks, acked) = mpsc::channel::<Done>();
        let (batches, planned) = mpsc::channel::<Batch>();
        let (resync, resynced) = mpsc::channel::<Resync>();
        let signed = store.signed_seq_file();
        let acker = std::thread::Builder::new()
            .name("lcloud-ack".into())
            .spawn(move || acknowledge(&signed, acked))
            .expect("can start the acknowledging thread");
        let pool = SignPool::with_helpers(identity.key(), cores());
        let storer = std::thread::Builder::new()
            .name("lcloud-store".into())
            .spawn(move || {
                store_batches(&mut store, &identity, planned, &acks, &resync);
                drop(acks);
                let _ = acker.join();
                // Write the leaves the cache holds. If this fails, nothing is lost: readers
                // apply the experiences the leaves lack, and the next open writes them.
                let _ = store.cache_document(false);
                store
            })
            .expect("can start the storing thread");
        let thread = std::thread::Builder::new()
            .name("lcloud-commit".into())
            .spawn(move || {
                plan(
                    cloud,
                    &me,
                    (0, first_base, first_doc),
                    &pool,
                    rx,
                    &batches,
                    &resynced,
                );
                drop(batches);
                storer.join().expect("the storing thread does not panic")
            })
            .expect("can start the committer thread");
        Committer {
            writer: Writer { tx },
            thread,
        }
    }

    /// A handle for writers.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Waits for the writes already sent, stops the thread and returns the store. Writers
    /// still holding a handle get [`StoreError::Closed`] afterwards.
    pub fn stop(self) -> Store {
        drop(self.writer);
        self.thread
            .join()
            .expect("the committer thread does not panic")
    }
}

/// A committed batch on its way to its writers: each writer's reply and result.
struct Done {
    answers: Vec<(Reply, WriteResult)>,
}

/// Records the highest seq signed of every batch waiting (one fsync for all), then answers
/// their writers.
fn acknowledge(signed: &SignedSeq, done: mpsc::Receiver<Done>) {
    while let Ok(first) = done.recv() {
        let mut batches = vec![first];
        batches.extend(done.try_iter());
        let last = batches
            .iter()
            .flat_map(|b| b.answers.iter())
            .filter_map(|(_, r)| r.as_ref().ok().map(|e| e.seq()))
            .max();
        let recorded = match last {
            Some(seq) => signed.record(seq),
            None => Ok(()),
        };
        for (reply, result) in batches.into_iter().flat_map(|b| b.answers) {
            match (&recorded, result) {
                (Ok(()), result) => reply(result),
                (Err(e), Ok(_)) => reply(Err(StoreError::Io {
                    path: "signed-seq".into(),
                    error: e.to_string(),
                })),
                (Err(_), Err(e)) => reply(Err(e)),
            }
        }
    }
}

/// The planner: chains every request waiting on the tip it keeps, hands their drafts to the
/// signing pool and the batch to the storer.
fn plan(
    cloud: Id,
    me: &NodeId,
    start: Resync,
    pool: &SignPool,
    requests: mpsc::Receiver<Request>,
    batches: &mpsc::Sender<Batch>,
    resynced: &mpsc::Receiver<Resync>,
) {
    let (mut epoch, mut base, mut doc) = start;
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter().take(BATCH_MAX - 1));
        // A failed commit: plan on what is stored from now on.
        for (e, b, d) in resynced.try_iter() {
            epoch = e;
            base = b;
            doc = d;
        }
        let (calls, batch): (Vec<Request>, Vec<Request>) =
            batch.into_iter().partition(Request::needs_history);
        for r in calls {
            (r.reply)(Err(StoreError::NeedsFullLoad));
        }
        if batch.is_empty() {
            continue;
        }
        // Without a tip or a document to check shapes against, the storer writes them.
        let (Some(tip), Some(doc)) = (base.as_mut(), doc.as_mut()) else {
            if batches.send(Batch::Unplanned(batch)).is_err() {
                return;
            }
            // The storer answers with the tip to plan on next.
            match resynced.recv() {
                Ok((e, b, d)) => {
                    epoch = e;
                    base = b;
                    doc = d;
                }
                Err(_) => return,
            }
            continue;
        };
        // Writes of ops are planned together; a write of edits alone, once everything before
        // it is folded, against the document they leave.
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let mut segment = Vec::new();
            while let Some(r) = rest.next_if(|r| r.edits.is_none()) {
                segment.push(r);
            }
            if segment.is_empty() {
                let mut r = rest.next().expect("a write of edits");
                let edits = r.edits.take().expect("edits");
                match lcloud_core::resolve(doc, *me, edits) {
                    Ok(ops) => {
                        r.ops = PreparedOps::new(ops);
                        match r.ops.check_nesting() {
                            Ok(()) => segment.push(r),
                            Err(e) => (r.reply)(Err(e.into())),
                        }
                    }
                    Err(e) => (r.reply)(Err(e.into())),
                }
            }
            if !segment.is_empty()
                && !plan_segment(cloud, me, epoch, tip, doc, pool, batches, segment)
            {
                return;
            }
        }
    }
}

/// Plans `batch` (writes of ops) on `tip`, folding what passes into `doc`, and hands it to
/// the signing pool and the storer; false if the storer is gone.
#[allow(clippy::too_many_arguments)]
fn plan_segment(
    cloud: Id,
    me: &NodeId,
    epoch: u64,
    tip: &mut Summary,
    doc: &mut Doc,
    pool: &SignPool,
    batches: &mpsc::Sender<Batch>,
    batch: Vec<Request>,
) -> bool {
    let before = tip.clone();
    // What the fold would misread is refused before anything is signed.
    let shapes = {
        let refs: Vec<&[Op]> = batch.iter().map(|r| r.ops.ops()).collect();
        lcloud_core::check_shapes(doc, &refs)
    };
    let (ops, replies): (Vec<PreparedOps>, Vec<Reply>) =
        batch.into_iter().map(|r| (r.ops, r.reply)).unzip();
    let (shaped, passed) = split_refused(ops, shapes);
    let mut drafts = plan_batch(cloud, tip, me, passed).into_iter();
    let mut refused = Vec::with_capacity(shaped.len());
    let mut ok = Vec::with_capacity(shaped.len());
    for shape in shaped {
        match shape.map_or_else(|| drafts.next().expect("one draft per passed write"), Err) {
            Ok(d) => {
                ok.push(d);
                refused.push(None);
            }
            Err(e) => refused.push(Some(e)),
        }
    }
    // Folding here, while the storer writes the batch before, takes it off the storer.
    for (u, depth) in &ok {
        fold_into(doc, u.id(), *depth, *me, u.ops());
    }
    let sigs = pool.dispatch(ok);
    batches
        .send(Batch::Planned(Box::new(Planned {
            epoch,
            base: before,
            after: tip.clone(),
            replies,
            refused,
            sigs,
            folded: Some(doc.clone()),
        })))
        .is_ok()
}

/// The storer: writes every planned batch waiting in one commit, then hands it to the
/// acknowledger.
fn store_batches(
    store: &mut Store,
    identity: &Identity,
    planned: mpsc::Receiver<Batch>,
    acks: &mpsc::Sender<Done>,
    resync: &mpsc::Sender<Resync>,
) {
    let me = identity.id();
    let key = identity.key().clone();
    let mut epoch = 0u64;
    let mut carried: Option<Batch> = None;
    loop {
        let first = match carried.take() {
            Some(b) => b,
            None => match planned.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        if store.is_closed() {
            // Closed after a failed commit, and opening again failed then (a disk still
            // full): try again; if it fails, the writes below say why.
            let _ = store.reopen();
        }
        let done = match first {
            Batch::Unplanned(requests) => {
                let (done, failed) = commit_unplanned(store, identity, requests);
                if failed {
                    // redb refuses everything after a failed commit until opened again.
                    let _ = store.reopen();
                }
                epoch += 1;
                let _ = resync.send(tip_to_plan_on(store, &me, epoch));
                done
            }
            Batch::Planned(first) => {
                let Planned {
                    epoch: e,
                    base,
                    mut after,
                    mut replies,
                    mut refused,
                    sigs,
                    mut folded,
                } = *first;
                let mut waiting = vec![sigs];
                // Every batch planned after this one in the same epoch joins its commit.
                while replies.len() < BATCH_MAX {
                    match planned.try_recv() {
                        Ok(Batch::Planned(next)) if next.epoch == e => {
                            let Planned {
                                after: a2,
                                replies: r2,
                                refused: f2,
                                sigs: s2,
                                folded: d2,
                                ..
                            } = *next;
                            after = a2;
                            folded = folded.and(d2);
                            replies.extend(r2);
                            refused.extend(f2);
                            waiting.push(s2);
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let mut signed = waiting.into_iter().flat_map(|s| s.wait(&key));
                let signed: Vec<_> = refused
                    .into_iter()
                    .map(|r| match r {
                        Some(e) => Err(e),
                        None => Ok(signed.next().expect("one signature per draft")),
                    })
                    .collect();
                if e < epoch {
                    // Planned on a commit that failed: chained on experiences never stored.
                    Done {
                        answers: replies
                            .into_iter()
                            .map(|r| (r, Err(StoreError::EarlierWriteFailed)))
                            .collect(),
                    }
                } else {
                    let result = store.write_signed(&me, &base, &after, signed, folded);
                    if !matches!(result, Ok(Some(_))) {
                        if result.is_err() {
                            // redb refuses everything after a failed commit until opened
                            // again (what was committed before is all there).
                            let _ = store.reopen();
                        }
                        epoch += 1;
                        let _ = resync.send(tip_to_plan_on(store, &me, epoch));
                    }
                    answer(replies, result)
                }
            }
        };
        if acks.send(done).is_err() {
            return;
        }
    }
}

/// Writes requests the planner could not plan (signing with threads for this batch only).
/// The resync the storer hands the planner: the new epoch, the stored chain tip and the
/// stored document (each `None` when the store cannot say now).
fn tip_to_plan_on(store: &mut Store, me: &NodeId, epoch: u64) -> Resync {
    let base = store.plan_base(me).ok().flatten();
    // Writes under guarded paths are refused by the storer's check, which knows the guards.
    let guarded = store.has_guards().unwrap_or(true);
    let doc = base
        .as_ref()
        .filter(|_| !guarded)
        .and_then(|_| store.cached_document().ok());
    (epoch, base, doc)
}

/// Whether the commit failed comes back beside the answers.
fn commit_unplanned(store: &mut Store, identity: &Identity, batch: Vec<Request>) -> (Done, bool) {
    if batch.iter().any(|r| r.edits.is_some()) {
        // One write at a time: each write of edits turned into ops against the store once
        // the writes before it are in.
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = false;
        for mut r in batch {
            if let Some(edits) = r.edits.take() {
                let paths: Vec<lcloud_core::Path> =
                    edits.iter().filter_map(Edit::path).cloned().collect();
                let ops = store.doc_under(&paths).and_then(|doc| {
                    lcloud_core::resolve(&doc, identity.id(), edits).map_err(StoreError::from)
                });
                match ops.map(PreparedOps::new) {
                    Ok(ops) => r.ops = ops,
                    Err(e) => {
                        answers.push((r.reply, Err(e)));
                        continue;
                    }
                }
            }
            let (done, f) = commit_unplanned(store, identity, vec![r]);
            answers.extend(done.answers);
            failed |= f;
        }
        return (Done { answers }, failed);
    }
    let (local, replies): (Vec<PreparedOps>, Vec<_>) =
        batch.into_iter().map(|r| (r.ops, r.reply)).unzip();
    // What the fold would misread is refused before anything is signed.
    let shapes = {
        let refs: Vec<&[Op]> = local.iter().map(PreparedOps::ops).collect();
        store.check_shapes(&refs)
    };
    let shapes = match shapes {
        Ok(s) => s,
        Err(e) => return (answer(replies, Err(e)), false),
    };
    let (shaped, passed) = split_refused(local, shapes);
    let result = if passed.is_empty() {
        Ok(Some(Vec::new()))
    } else {
        store.write_batch(identity, passed)
    };
    let failed = result.is_err();
    // A write the shape check refused keeps its refusal, whatever became of the others
    // (`None`: only a full load can apply them).
    let result = result.map(|written| {
        let mut written = written.map(Vec::into_iter);
        let next = |written: &mut Option<std::vec::IntoIter<WriteResult>>| match written {
            Some(w) => w.next().unwrap_or(Err(StoreError::NeedsFullLoad)),
            None => Err(StoreError::NeedsFullLoad),
        };
        Some(
            shaped
                .into_iter()
                .map(|s| s.map_or_else(|| next(&mut written), Err))
                .collect(),
        )
    });
    (answer(replies, result), failed)
}

/// Per write, its refusal by the shape check (`None`: it passed), and the writes that passed.
fn split_refused(
    ops: Vec<PreparedOps>,
    shapes: Vec<Result<(), lcloud_core::WriteRefused>>,
) -> (Vec<Option<StoreError>>, Vec<PreparedOps>) {
    let mut refused = Vec::with_capacity(ops.len());
    let mut passed = Vec::with_capacity(ops.len());
    for (ops, shape) in ops.into_iter().zip(shapes) {
        match shape {
            Ok(()) => {
                refused.push(None);
                passed.push(ops);
            }
            Err(e) => refused.push(Some(e.into())),
        }
    }
    (refused, passed)
}

/// Pairs each writer's reply with its result.
fn answer(replies: Vec<Reply>, result: Result<Option<Vec<WriteResult>>, StoreError>) -> Done {
    let mut answers = Vec::with_capacity(replies.len());
    match result {
        Ok(Some(results)) => answers.extend(replies.into_iter().zip(results)),
        Ok(None) => answers.extend(
            replies
                .into_iter()
                .map(|reply| (reply, Err(StoreError::NeedsFullLoad))),
        ),
        Err(e) => answers.extend(replies.into_iter().map(|reply| (reply, Err(e.clone())))),
    }
    Done { answers }
}
