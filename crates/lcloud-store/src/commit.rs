//! Group commit: many concurrent writers, one fsync per batch.
//!
//! A [`Committer`] owns the store on a thread of its own. Writers send their ops and block
//! until the experience is durable. The thread takes every request waiting, writes them all as
//! consecutive experiences of this node in one transaction (signatures in parallel), commits
//! once, and answers each writer. Under load, one fsync serves hundreds of writers.

use std::sync::mpsc;
use std::thread::JoinHandle;

use lcloud_core::{Experience, Op, PreparedOps, Verified};

use crate::identity::Identity;
use crate::sign::SignPool;
use crate::signed::SignedSeq;
use crate::store::{Store, StoreError};

type WriteResult = Result<Verified<Experience>, StoreError>;

/// Most requests folded into one commit.
pub const BATCH_MAX: usize = 4096;

/// The longest a commit waits for more writers to join it (only while recent commits were
/// shared by many writers; a lone writer is never delayed).
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// What a writer is told when its write is durable (or refused).
pub type Reply = Box<dyn FnOnce(Result<Verified<Experience>, StoreError>) + Send>;

struct Request {
    /// Encoded and hashed on the writer's thread, not the committer's.
    ops: PreparedOps,
    reply: Reply,
}

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
        self.tx
            .send(Request {
                ops: PreparedOps::new(ops),
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
    /// Starts the committer thread, which owns `store` until [`Committer::stop`].
    ///
    /// Two threads share the work: the committer drafts, signs (with a pool of signing threads,
    /// one per core), writes and commits each batch; the acknowledger then records the highest
    /// seq signed in `signed-seq` (the second fsync) and answers the batch's writers, while the
    /// committer goes on with the next batch. A writer is answered only after both syncs.
    pub fn start(mut store: Store, identity: Identity) -> Committer {
        store
            .cache_document(true)
            .expect("turning the cache on writes nothing");
        let (tx, rx) = mpsc::channel::<Request>();
        let (acks, acked) = mpsc::channel::<Done>();
        let signed = store.signed_seq_file();
        let acker = std::thread::Builder::new()
            .name("lcloud-ack".into())
            .spawn(move || acknowledge(&signed, acked))
            .expect("can start the acknowledging thread");
        let thread = std::thread::Builder::new()
            .name("lcloud-commit".into())
            .spawn(move || {
                let pool = SignPool::new(identity.key());
                // How many requests the last commit carried: while writers keep the committer busy,
                // wait briefly for about as many to gather, so an fsync is shared by many.
                let mut last_batch = 1usize;
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    let deadline = std::time::Instant::now() + LINGER;
                    while batch.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(mpsc::TryRecvError::Disconnected) => break,
                            Err(mpsc::TryRecvError::Empty) => {
                                let now = std::time::Instant::now();
                                if batch.len() >= last_batch / 2 || now >= deadline {
                                    break;
                                }
                                match rx.recv_timeout(deadline - now) {
                                    Ok(r) => batch.push(r),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    last_batch = batch.len();
                    let done = commit(&mut store, &identity, &pool, batch);
                    if acks.send(done).is_err() {
                        break;
                    }
                }
                drop(acks);
                let _ = acker.join();
                // Write the leaves the cache holds. If this fails, nothing is lost: readers
                // apply the experiences the leaves lack, and the next open writes them.
                let _ = store.cache_document(false);
                store
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

fn commit(store: &mut Store, identity: &Identity, pool: &SignPool, batch: Vec<Request>) -> Done {
    let (calls, batch): (Vec<Request>, Vec<Request>) = batch
        .into_iter()
        .partition(|r| r.ops.ops().iter().any(|op| matches!(op, Op::Call { .. })));
    let mut answers: Vec<(Reply, WriteResult)> = calls
        .into_iter()
        .map(|r| (r.reply, Err(StoreError::NeedsFullLoad)))
        .collect();
    if batch.is_empty() {
        return Done { answers };
    }
    let (local, replies): (Vec<PreparedOps>, Vec<_>) =
        batch.into_iter().map(|r| (r.ops, r.reply)).unzip();
    match store.write_batch(identity, local, Some(pool)) {
        Ok(Some(results)) => answers.extend(replies.into_iter().zip(results)),
        Ok(None) => answers.extend(
            replies
                .into_iter()
                .map(|reply| (reply, Err(StoreError::NeedsFullLoad))),
        ),
        Err(e) => {
            let msg = e.to_string();
            let mut first = Some(e);
            for reply in replies {
                let err = first.take().unwrap_or_else(|| StoreError::Io {
                    path: store.dir().to_owned(),
                    error: msg.clone(),
                });
                answers.push((reply, Err(err)));
            }
        }
    }
    Done { answers }
}
