//! Group commit: many concurrent writers, one fsync per batch.
//!
//! A [`Committer`] owns the store on a thread of its own. Writers send their ops and block
//! until the experience is durable. The thread takes every request waiting, writes them all as
//! consecutive experiences of this node in one transaction (signatures in parallel), commits
//! once, and answers each writer. Under load, one fsync serves hundreds of writers.

use std::sync::mpsc;
use std::thread::JoinHandle;

use lcloud_core::{Experience, Op, Verified};

use crate::identity::Identity;
use crate::store::{Store, StoreError};

/// Most requests folded into one commit.
pub const BATCH_MAX: usize = 4096;

/// The longest a commit waits for more writers to join it (only while recent commits were
/// shared by many writers; a lone writer is never delayed).
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// What a writer is told when its write is durable (or refused).
pub type Reply = Box<dyn FnOnce(Result<Verified<Experience>, StoreError>) + Send>;

struct Request {
    ops: Vec<Op>,
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
            .send(Request { ops, reply })
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
    pub fn start(mut store: Store, identity: Identity) -> Committer {
        store.cache_document(true);
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("lcloud-commit".into())
            .spawn(move || {
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
                    commit(&mut store, &identity, batch);
                }
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

fn commit(store: &mut Store, identity: &Identity, batch: Vec<Request>) {
    let (calls, batch): (Vec<Request>, Vec<Request>) = batch
        .into_iter()
        .partition(|r| r.ops.iter().any(|op| matches!(op, Op::Call { .. })));
    for r in calls {
        (r.reply)(Err(StoreError::NeedsFullLoad));
    }
    if batch.is_empty() {
        return;
    }
    let (local, replies): (Vec<Vec<Op>>, Vec<_>) =
        batch.into_iter().map(|r| (r.ops, r.reply)).unzip();
    match store.write_batch_local(identity, local) {
        Ok(Some(results)) => {
            for (reply, result) in replies.into_iter().zip(results) {
                reply(result);
            }
        }
        Ok(None) => {
            for reply in replies {
                reply(Err(StoreError::NeedsFullLoad));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let mut first = Some(e);
            for reply in replies {
                let err = first.take().unwrap_or_else(|| StoreError::Io {
                    path: store.dir().to_owned(),
                    error: msg.clone(),
                });
                reply(Err(err));
            }
        }
    }
}
