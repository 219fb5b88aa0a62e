//! Signing on every core: a small pool of long-lived threads, so a commit does not spawn
//! threads (or ask the OS how many cores it has) each time. The [`crate::Committer`] and the
//! node's write path both sign through it, while they store the batch before.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;

use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, Unsigned, Verified};

/// A signed experience, its canonical bytes, and its depth.
pub type Signed = (Verified<Experience>, Vec<u8>, u64);

type Job = (Vec<(Unsigned, u64)>, mpsc::Sender<Vec<Signed>>);

/// Cores to sign on (looked up once: the lookup reads cgroup files).
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    })
}

/// Helper threads that sign with one key: [`SignPool::dispatch`] hands them drafts and returns
/// at once; [`PendingSigs::wait`] collects the signatures.
pub struct SignPool {
    jobs: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// The helper the next small job goes to.
    next: std::cell::Cell<usize>,
}

/// One helper's share of a dispatch: its answer to come, or the drafts it could not take.
type Part = Result<mpsc::Receiver<Vec<Signed>>, Vec<(Unsigned, u64)>>;

/// Signatures being computed by a pool's helpers ([`SignPool::dispatch`]).
pub struct PendingSigs {
    parts: Vec<Part>,
}

impl PendingSigs {
    /// Waits for every signature, in the order of the drafts.
    pub fn wait(self, key: &SigningKey) -> Vec<Signed> {
        let mut out = Vec::new();
        for part in self.parts {
            match part {
                Ok(rx) => match rx.recv() {
                    Ok(signed) => out.extend(signed),
                    // Never expected: a helper answers every job it takes.
                    Err(_) => unreachable!("a signing thread answers every job"),
                },
                Err(drafts) => out.extend(sign_part(key, drafts)),
            }
        }
        out
    }
}

impl SignPool {
    /// A pool of `helpers` threads.
    pub fn with_helpers(key: &SigningKey, helpers: usize) -> SignPool {
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for i in 1..=helpers {
            let (tx, rx) = mpsc::channel::<Job>();
            let key = key.clone();
            let t = std::thread::Builder::new()
                .name(format!("lcloud-sign-{i}"))
                .spawn(move || {
                    while let Ok((part, back)) = rx.recv() {
                        let _ = back.send(sign_part(&key, part));
                    }
                })
                .expect("can start a signing thread");
            jobs.push(tx);
            threads.push(t);
        }
        SignPool {
            jobs,
            threads,
            next: std::cell::Cell::new(0),
        }
    }

    /// Hands every draft to the helpers (split among them, or a small batch to the next one
    /// in turn) and returns at once; [`PendingSigs::wait`] collects the signatures in order.
    pub fn dispatch(&self, drafts: Vec<(Unsigned, u64)>) -> PendingSigs {
        if self.jobs.is_empty() {
            return PendingSigs {
                parts: vec![Err(drafts)],
            };
        }
        let ways = if drafts.len() < 8 { 1 } else { self.jobs.len() };
        let chunk = drafts.len().div_ceil(ways).max(1);
        let mut it = drafts.into_iter();
        let mut parts = Vec::new();
        loop {
            let part: Vec<_> = it.by_ref().take(chunk).collect();
            if part.is_empty() {
                break;
            }
            let i = self.next.get();
            self.next.set((i + 1) % self.jobs.len());
            let (tx, rx) = mpsc::channel();
            match self.jobs[i].send((part, tx)) {
                Ok(()) => parts.push(Ok(rx)),
                // The helper is gone (never expected): the waiter signs its share.
                Err(mpsc::SendError((part, _))) => parts.push(Err(part)),
            }
        }
        PendingSigs { parts }
    }
}

impl Drop for SignPool {
    fn drop(&mut self) {
        self.jobs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn sign_part(key: &SigningKey, part: Vec<(Unsigned, u64)>) -> Vec<Signed> {
    part.into_iter()
        .map(|(u, d)| {
            let (exp, bytes) = u.sign_with_bytes(key);
            (exp, bytes, d)
        })
        .collect()
}

/// Signs `drafts` on every core without a pool (threads for this call only).
pub(crate) fn sign_once(key: &SigningKey, drafts: Vec<(Unsigned, u64)>) -> Vec<Signed> {
    if drafts.len() < 8 || cores() == 1 {
        return sign_part(key, drafts);
    }
    SignPool::with_helpers(key, cores())
        .dispatch(drafts)
        .wait(key)
}
