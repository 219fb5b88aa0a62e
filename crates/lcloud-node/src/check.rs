//! Checking what peers send, off the core thread: experiences' bytes validated (ZIP-215
//! batches) on a pool of one thread per core that runs at a lower priority than the core
//! thread, and handed back whole and in order.

use lcloud_core::codec::ByteBuf;
use lcloud_core::{Experience, Id, ValidationError, Verified};

/// Experiences from a peer, already checked (off the core thread; see [`check`]), each with
/// the bytes it came as (canonical: they are stored as they are).
pub type Checked = Vec<Result<(Verified<Experience>, ByteBuf), ValidationError>>;

/// Cores to validate on (looked up once: the lookup reads cgroup files).
pub(super) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    })
}

/// Validates one part of a batch, keeping each experience's bytes beside its result.
fn check_part(exps: Vec<ByteBuf>, cloud: &Id) -> Checked {
    let inputs: Vec<&[u8]> = exps.iter().map(|b| b.0.as_slice()).collect();
    let results = lcloud_core::validate_batch(&inputs, cloud);
    results
        .into_iter()
        .zip(exps)
        .map(|(r, b)| r.map(|e| (e, b)))
        .collect()
}

type Job = Box<dyn FnOnce() + Send>;

/// How much lower than the rest of the node the validation threads run (a nice value): the
/// core thread, which stores what they checked, runs first when both want a core. Checking
/// runs ahead of storing by at most the peers' windows, and storing is what frees them; at
/// equal priority the core thread got two thirds of a core while three threads shared two, and
/// became the pace of a catch-up.
const CHECK_NICE: i32 = 5;

/// Long-lived validation threads, one per core, at lower priority ([`CHECK_NICE`]). Threads
/// spawned for each batch started cold: the batch verifier's tables landed in fresh memory
/// every time, and its page faults cost more than a tenth of a sync's CPU time. `None` if no
/// thread could be started (then everything is validated on the caller's).
fn validators() -> Option<&'static std::sync::Mutex<std::sync::mpsc::Sender<Job>>> {
    static POOL: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut started = 0;
        for i in 1..=cores() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("lcloud-check-{i}"))
                .spawn(move || {
                    // Best effort: a system that refuses leaves it at the node's priority.
                    let _ = rustix::process::setpriority_process(
                        Some(rustix::thread::gettid()),
                        CHECK_NICE,
                    );
                    loop {
                        // A job never panics while the lock is held: it runs after `recv`.
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| std::sync::Mutex::new(tx))
    })
    .as_ref()
}

/// Runs `work` over `items` split in order across the pool's threads (one part per core, so
/// parts of batches checked at once interleave on the pool's queue), and returns the results in
/// order. Fewer than `min` items are done on the caller's thread.
fn on_cores<T: Send + 'static, R: Send + 'static>(
    mut items: Vec<T>,
    min: usize,
    work: impl Fn(Vec<T>) -> Vec<R> + Clone + Send + 'static,
) -> Vec<R> {
    let ways = cores();
    let Some(pool) = validators().filter(|_| items.len() >= min) else {
        return work(items);
    };
    let chunk = items.len().div_ceil(ways);
    // Each part answers on its own channel, collected in order.
    let mut answers = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(chunk.min(items.len()));
        let part = std::mem::replace(&mut items, rest);
        let (tx, rx) = std::sync::mpsc::channel();
        let work = work.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(work(part));
        });
        let sent = pool.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        if let Err(std::sync::mpsc::SendError(job)) = sent {
            // The pool is gone (never expected): do the part here.
            job();
        }
        answers.push(rx);
    }
    let mut done = Vec::new();
    for rx in answers {
        done.extend(rx.recv().expect("pool work does not panic"));
    }
    done
}

/// Validates experiences' bytes on every core (ZIP-215 batches).
pub fn check(exps: Vec<ByteBuf>, cloud: &Id) -> Checked {
    let cloud = *cloud;
    on_cores(exps, 64, move |part| check_part(part, &cloud))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcloud_core::{Genesis, Op, Path, Replica};

    /// A batch split across the validation threads comes back whole and in order, each
    /// experience with its own bytes and verdict, as one thread would give it; again and
    /// again, on the same long-lived threads.
    #[test]
    fn a_batch_checked_in_parts_comes_back_whole_and_in_order() {
        let key = ed25519_consensus::SigningKey::from([4; 32]);
        let genesis = Experience::create_genesis(&key, Genesis::open("t"));
        let mut replica = Replica::new(genesis.clone()).unwrap();
        let mut exps: Vec<ByteBuf> = (0..301)
            .map(|i| {
                let op = Op::Incr {
                    path: Path::from(vec![format!("k{i}")]),
                    by: 1,
                };
                ByteBuf(replica.write(&key, vec![op]).unwrap().to_bytes())
            })
            .collect();
        // Every seventh is tampered with (its signature no longer holds).
        for e in exps.iter_mut().step_by(7) {
            let last = e.0.len() - 1;
            e.0[last] ^= 1;
        }
        let one = check_part(exps.clone(), &genesis.id());
        for _ in 0..3 {
            let parts = check(exps.clone(), &genesis.id());
            assert_eq!(parts.len(), exps.len());
            for ((p, o), bytes) in parts.iter().zip(&one).zip(&exps) {
                match (p, o) {
                    (Ok((pe, pb)), Ok((oe, _))) => {
                        assert_eq!((pe.id(), pb), (oe.id(), bytes));
                    }
                    (Err(pe), Err(oe)) => assert_eq!(pe.to_string(), oe.to_string()),
                    _ => panic!("verdicts differ"),
                }
            }
        }
        assert_eq!(one.iter().filter(|r| r.is_err()).count(), 43);
    }
}
