//! The node's core: one thread owns the store and the replica and handles, one at a time,
//! what the network and the API ask. Nothing else touches them, so there are no locks around
//! the state, and every change is durable before it is acknowledged or sent on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{Request, Response, Summary};
use lcloud_core::{
    Experience, Id, InsertError, Inserted, Limits, NodeId, Op, Path, Replica, Session,
    ValidationError, Verified,
};
use lcloud_net::{Command, Event, MessageId, Peer, node_of};
use lcloud_store::{Identity, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};

#[path = "calls.rs"]
mod calls;
#[path = "finality.rs"]
mod finality;
#[path = "peers.rs"]
mod peers;
#[path = "rotate.rs"]
mod rotate;
#[path = "write.rs"]
mod write;

pub use rotate::{Ended, Restart, Rotated};

/// Misbehaviour points at which a peer is disconnected and refused.
pub const BAN_SCORE: u32 = 100;
/// Points for an invalid experience or an undecodable message.
const INVALID_POINTS: u32 = 25;
/// Peers whose misbehaviour points are remembered at once.
const SCORES_MAX: usize = 65_536;
/// Points for a request beyond the rate limit.
const FLOOD_POINTS: u32 = 5;
/// Requests a peer may make per second before it is refused (and scored).
const REQUESTS_PER_SECOND: u32 = 200;
/// Experiences from a peer, already checked (off the core thread; see [`check`]), each with
/// the bytes it came as (canonical: they are stored as they are).
pub type Checked = Vec<Result<(Verified<Experience>, ByteBuf), ValidationError>>;

/// Most gossiped experiences stored in one commit when several wait.
const GOSSIP_PER_COMMIT: usize = 512;

/// Most pushes stored in one commit when several wait.
const PUSHES_PER_COMMIT: usize = 8;
/// Writes from the API stored in one commit at most: the writes that wait while a commit is
/// syncing are signed together (on every core) and share the next commit's two fsyncs.
const WRITES_PER_COMMIT: usize = 4096;

/// Cores to validate on (looked up once: the lookup reads cgroup files).
fn cores() -> usize {
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

/// Experiences inserted into the replica and not yet stored.
#[derive(Default)]
struct Intake {
    outcomes: Vec<Inserted>,
    parked: Vec<Verified<Experience>>,
    /// The bytes each arrived as, by id (looked up once per experience stored).
    bytes: std::collections::HashMap<Id, Vec<u8>, foldhash::fast::RandomState>,
}

/// What the API asks the node.
pub enum Call {
    /// Write ops as one experience of this node.
    Write(Vec<Op>, oneshot::Sender<Result<Written, WriteError>>),
    /// The document at a path (`None`: nothing there).
    State(Path, oneshot::Sender<Option<serde_json::Value>>),
    /// State root, heads, frontier clock, counts.
    Status(oneshot::Sender<Status>),
    /// The stable frontier and the checkpoints, as `/api/status` shows them
    /// ([`crate::api::finality_json`]); asked only by that route, as it costs more than the
    /// rest of the status.
    Finality(oneshot::Sender<serde_json::Value>),
    /// Prometheus text.
    Metrics(oneshot::Sender<String>),
    /// Cut every connection (`true`) or heal (`false`).
    Isolate(bool),
    /// How many experiences are admitted, and the generation of that count (it changes when
    /// the history is loaded again from the store, renumbering it).
    BundleHead(oneshot::Sender<(u64, u64)>),
    /// The canonical bytes of admitted experiences from `from` on (arrival order), at least
    /// one and as many as fit in `bytes`, if the generation is still the one given (`None`:
    /// it is not, start again).
    BundleRecords {
        /// From [`Call::BundleHead`].
        generation: u64,
        /// The first.
        from: u64,
        /// About how many bytes to send back.
        bytes: usize,
        /// The answer.
        reply: oneshot::Sender<Option<Vec<Vec<u8>>>>,
    },
    /// The store's local aliases.
    Aliases(oneshot::Sender<BTreeMap<NodeId, String>>),
    /// Import a bundle file (its layout and checksum already checked, each experience
    /// validated like a peer's).
    Import(
        std::path::PathBuf,
        oneshot::Sender<Result<Imported, String>>,
    ),
    /// Deploy a contract, and say what the fold made of it.
    Deploy(Deploy, oneshot::Sender<Result<ContractWritten, WriteError>>),
    /// Call a contract, and say what the fold made of the call.
    Invoke(Invoke, oneshot::Sender<Result<ContractWritten, WriteError>>),
    /// The deployed contracts.
    Contracts(oneshot::Sender<Vec<crate::contracts::Deployed>>),
    /// A contract's state (by name or id prefix), or the value under one key of it.
    ContractState(
        String,
        Option<String>,
        oneshot::Sender<Result<lcloud_core::Value, String>>,
    ),
    /// Rotate this node's key; the core then ends with [`Ended::Rotated`].
    RotateKey(oneshot::Sender<Result<Rotated, WriteError>>),
}

/// A contract to deploy.
#[derive(Clone, Debug)]
pub struct Deploy {
    /// The WebAssembly module.
    pub code: Vec<u8>,
    /// The arguments of its `init` function.
    pub init: lcloud_core::Value,
    /// A local name for it.
    pub name: Option<String>,
    /// The fuel limit, signed into the experience (default: the runtime's).
    pub fuel: Option<u64>,
}

/// A contract call to write.
#[derive(Clone, Debug)]
pub struct Invoke {
    /// The contract: a local name or an id prefix.
    pub contract: String,
    /// The function.
    pub function: String,
    /// Its arguments.
    pub args: lcloud_core::Value,
    /// The fuel limit, signed into the experience (default: the runtime's).
    pub fuel: Option<u64>,
}

/// A written call or deploy and what the fold made of it.
#[derive(Clone, Debug)]
pub struct ContractWritten {
    /// The experience.
    pub written: Written,
    /// Accepted or rejected (as folded now: a concurrent call that sorts before it and
    /// arrives later can still change this, the same way on every node).
    pub outcome: crate::contracts::Outcome,
    /// The state root afterwards.
    pub root: Id,
}

/// What an import through the API did.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// Experiences new to this node (admitted or parked).
    pub new: u32,
    /// Experiences it already held.
    pub known: u32,
    /// Experiences refused, by reason.
    pub rejected: BTreeMap<String, u32>,
    /// The first refusal, in full: which record and why.
    pub first_rejection: Option<String>,
    /// The state root afterwards.
    pub root: Option<Id>,
}

/// Why a write was not acknowledged.
#[derive(Clone, Debug)]
pub enum WriteError {
    /// Refused: nothing was written (bad ops, too large, the rules).
    Refused(String),
    /// The store failed (a full disk, an I/O error): the write is not acknowledged, and it
    /// may or may not be stored. Retry once the cause is fixed.
    Unavailable(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Refused(e) | WriteError::Unavailable(e) => f.write_str(e),
        }
    }
}

/// A written experience.
#[derive(Clone, Debug)]
pub struct Written {
    /// Its id.
    pub id: Id,
    /// Its seq in this node's chain.
    pub seq: u64,
}

/// The node at a glance.
#[derive(Clone, Debug)]
pub struct Status {
    /// This node.
    pub node: NodeId,
    /// The cloud.
    pub cloud: Id,
    /// The current folded state: a persistent copy, cheap to take, so that its root can be
    /// hashed off the node's thread ([`Status::root`]). Hashing a large state takes a while;
    /// the node keeps syncing meanwhile.
    pub state: lcloud_core::State,
    /// The root of `state` if the node had it already.
    pub cached_root: Option<Id>,
    /// Heads of the DAG.
    pub heads: Vec<Id>,
    /// Frontier: per author, the highest seq held.
    pub clock: BTreeMap<NodeId, u64>,
    /// Experiences held.
    pub experiences: usize,
    /// Connected peers and the node each is.
    pub peers: Vec<(String, Option<NodeId>)>,
    /// Experiences held back because something they link to has not arrived (a gap).
    pub parked: usize,
    /// The first [`MISSING_SHOWN`] ids parked experiences wait for (sorted).
    pub missing: Vec<Id>,
    /// Why the store cannot be used right now (a failed write that it has not recovered
    /// from yet), if so.
    pub store_error: Option<String>,
    /// Fork proofs: authors caught signing two experiences at one place of their chain, each
    /// proof as canonical DAG-CBOR bytes (the same on every node that holds both branches).
    pub forks: Vec<(NodeId, u64, Vec<u8>)>,
}

impl Status {
    /// State root of the current state. Hashes the whole state unless the node had it: call
    /// it off the node's thread (the API does, on a blocking thread).
    pub fn root(&self) -> Id {
        self.cached_root.unwrap_or_else(|| self.state.root())
    }
}

/// Missing ids listed in [`Status::missing`] at most.
pub const MISSING_SHOWN: usize = 16;

/// Everything the core thread receives.
pub enum Msg {
    /// From the network.
    Net(Event),
    /// A peer's `Push`, its experiences already checked.
    Push {
        /// Who pushed.
        peer: Peer,
        /// The request's token, to answer.
        token: u64,
        /// The cloud named in the request.
        cloud: Id,
        /// The experiences, checked.
        exps: Checked,
    },
    /// A peer's answer to our `Sync`, its experiences already checked.
    SyncAnswer {
        /// Who answered.
        peer: Peer,
        /// Its summary.
        summary: Summary,
        /// The first batch of what we lack, checked.
        exps: Checked,
        /// The peer streams the rest as pushes.
        more: bool,
    },
    /// From the API.
    Api(Call),
    /// Time for anti-entropy with every connected peer.
    Tick,
    /// Stop.
    Stop,
}

/// One experience as announced to subscribers of the event stream.
#[derive(Clone, Debug)]
pub struct Announced {
    /// Its id.
    pub id: Id,
    /// Its author.
    pub author: NodeId,
    /// Its seq.
    pub seq: u64,
    /// How many ops it carries.
    pub ops: usize,
    /// Written here (`true`) or received.
    pub local: bool,
    /// Its calls and deploys the fold rejected when it was stored: op index and reason.
    pub rejected: Vec<(u32, String)>,
}

/// The calls and deploys of `exp` that `replica` rejects now, by op index.
fn rejected_ops(replica: &Replica, exp: &Experience) -> Vec<(u32, String)> {
    exp.ops()
        .iter()
        .enumerate()
        .filter(|(_, op)| op.is_ordered())
        .filter_map(|(i, _)| {
            replica
                .rejection(&exp.id(), i as u32)
                .map(|r| (i as u32, r.reason))
        })
        .collect()
}

#[derive(Default)]
struct PeerState {
    /// The sync session with this peer (what is in flight, what it lacks).
    session: Session,
    window_start: Option<Instant>,
    window_requests: u32,
}

#[derive(Default)]
struct Metrics {
    exps_in: u64,
    exps_known: u64,
    exps_parked: u64,
    exps_out: u64,
    written: u64,
    gossip_in: u64,
    syncs: u64,
    follow_ups: u64,
    rejected: BTreeMap<String, u64>,
    banned: u64,
}

/// The core: the store, the replica, the peers.
pub struct Node {
    me: Peer,
    store: Store,
    replica: Replica,
    identity: Identity,
    net: mpsc::Sender<Command>,
    announce: broadcast::Sender<Announced>,
    peers: BTreeMap<Peer, PeerState>,
    /// Peers banned for misbehaviour (the network refuses them; nothing more is scored).
    banned: lcloud_net::BanList,
    /// Peers refused because they are not members (the network refuses them until they
    /// become members: see [`Node::membership_changed`]).
    refused: lcloud_net::BanList,
    /// How many nodes the cloud had granted membership when `refused` was last checked.
    grants_seen: usize,
    /// Why the store cannot be used (a failed write, e.g. a full disk, and the store could
    /// not be opened and loaded again yet). Meanwhile the replica may hold what is not
    /// stored, so the node writes nothing, serves nothing to peers and takes nothing from
    /// them; it tries again at every tick and every write.
    unstored: Option<String>,
    /// Misbehaviour points per peer. Kept across reconnections (a peer cannot wipe its score
    /// by dialling again); at most [`SCORES_MAX`] peers.
    scores: BTreeMap<Peer, u32>,
    metrics: Metrics,
    /// The document as the store last persisted it (so a commit writes only changed leaves).
    persisted: lcloud_core::Doc,
    /// Bumped whenever the history is loaded again (its arrival order renumbered), so that a
    /// bundle streamed in pieces starts again instead of mixing two orders.
    generation: u64,
    /// The store's signing pool, for this node's own writes.
    signer: lcloud_store::SignPool,
    /// This node's key rotation, until a peer is seen to hold it.
    pub(crate) retiring: Option<crate::announce::Retiring>,
    /// Checkpoints whose divergence was logged already.
    divergences_reported: std::collections::BTreeSet<u64>,
}

impl Node {
    /// The core over a store and the replica of its whole history (`Store::open_loaded`).
    pub fn open(
        me: Peer,
        store: Store,
        replica: Replica,
        identity: Identity,
        net: mpsc::Sender<Command>,
        announce: broadcast::Sender<Announced>,
    ) -> Result<Node, StoreError> {
        let mut store = store;
        let signer = lcloud_store::SignPool::with_helpers(identity.key(), cores());
        let persisted = replica.state().doc;
        // The node holds the whole document: leaves are written every few thousand ops, not
        // at every commit (a large set or counter would otherwise be rewritten per write).
        store.defer_leaves(true)?;
        let mut node = Node {
            persisted,
            me,
            store,
            replica,
            identity,
            net,
            announce,
            peers: BTreeMap::new(),
            banned: lcloud_net::BanList::default(),
            refused: lcloud_net::BanList::default(),
            grants_seen: 0,
            unstored: None,
            generation: 0,
            signer,
            retiring: None,
            divergences_reported: Default::default(),
            scores: BTreeMap::new(),
            metrics: Metrics::default(),
        };
        if let Err(e) = node.record_own() {
            tracing::error!(error = %e, "cannot record the highest seq this node signed; serving nothing until it can");
            node.unstored = Some(e.to_string());
        }
        Ok(node)
    }

    /// Records in `signed-seq` the highest seq of this node's chain the store holds. An
    /// experience stored but not recorded (the record failed on a full disk, or a crash came
    /// between the two) must reach no peer before it is: a store restored from a backup
    /// could otherwise sign its seq again.
    fn record_own(&self) -> Result<(), StoreError> {
        let height = self.replica.lattice().height(&self.identity.id());
        if height > 0 {
            self.store.record_signed(height)?;
        }
        Ok(())
    }

    /// Handles messages until [`Msg::Stop`], until every sender is gone, or until its key
    /// rotated.
    pub fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) -> Ended {
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match inbox.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Msg::Net(Event::Gossip { from, id, data }) => {
                    // Gossip that already waits is validated together and stored in one
                    // commit (one fsync), as pushes are.
                    let mut group = vec![(from, id, data)];
                    while group.len() < GOSSIP_PER_COMMIT {
                        match inbox.try_recv() {
                            Ok(Msg::Net(Event::Gossip { from, id, data })) => {
                                group.push((from, id, data));
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.on_gossip(group);
                }
                Msg::Net(ev) => self.on_net(ev),
                Msg::Push {
                    peer,
                    token,
                    cloud,
                    exps,
                } => {
                    // Pushes that already wait are stored in the same commit.
                    let mut group = vec![(peer, token, cloud, exps)];
                    while group.len() < PUSHES_PER_COMMIT {
                        match inbox.try_recv() {
                            Ok(Msg::Push {
                                peer,
                                token,
                                cloud,
                                exps,
                            }) => group.push((peer, token, cloud, exps)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.on_pushes(group);
                }
                Msg::SyncAnswer {
                    peer,
                    summary,
                    exps,
                    more,
                } => self.on_sync_answer(peer, summary, exps, more),
                Msg::Api(Call::Write(ops, reply)) => {
                    // Writes that already wait are signed together and share one commit;
                    // those that come while it is stored share the next.
                    next = self.write_stream(vec![(ops, reply)], &mut inbox);
                }
                Msg::Api(Call::RotateKey(reply)) => match self.rotate_key() {
                    Ok((rotated, identity)) => {
                        let _ = reply.send(Ok(rotated));
                        return Ended::Rotated(Box::new(rotate::Restart {
                            store: self.store,
                            replica: self.replica,
                            identity,
                            inbox,
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Msg::Api(call) => self.on_call(call),
                Msg::Tick => {
                    if self.unstored.is_some() && !self.reload() {
                        continue;
                    }
                    let peers: Vec<Peer> = self.peers.keys().copied().collect();
                    for p in peers {
                        self.start_sync(p);
                    }
                    self.attest_due();
                }
                Msg::Stop => break,
            }
            self.membership_changed();
        }
        // Write the deferred leaves, so the next open need not replay the history.
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "could not write the document leaves on stopping; the next start rewrites them");
        }
        Ended::Stopped(Box::new(self.store))
    }

    /// Imports a bundle: validated on every core, stored in chunks of one commit each.
    fn import(&mut self, file: &std::path::Path) -> Result<Imported, String> {
        let unreadable = |e: std::io::Error| format!("cannot read the received bundle: {e}");
        let f = std::fs::File::open(file).map_err(unreadable)?;
        let (b_cloud, mut records) =
            lcloud_store::bundle::Reader::open(std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(unreadable)?;
        let cloud = self.replica.cloud();
        if b_cloud != cloud {
            return Err(format!(
                "a bundle of cloud {b_cloud}, but this node holds cloud {cloud}"
            ));
        }
        let mut report = Imported::default();
        let reject = |report: &mut Imported, reason: &str, full: String| {
            *report.rejected.entry(reason.into()).or_default() += 1;
            report.first_rejection.get_or_insert(full);
        };
        // A chunk of records at a time: at most CHUNK records or CHUNK_BYTES bytes held.
        const CHUNK: usize = 8192;
        const CHUNK_BYTES: usize = 32 << 20;
        let mut first = 0usize;
        loop {
            let mut exps = Vec::new();
            let mut bytes = 0;
            while exps.len() < CHUNK && bytes < CHUNK_BYTES {
                match records.next_record().map_err(unreadable)? {
                    Some(r) => {
                        bytes += r.len();
                        exps.push(ByteBuf(r));
                    }
                    None => break,
                }
            }
            if exps.is_empty() {
                break;
            }
            let n = exps.len();
            let mut valid = Vec::with_capacity(n);
            for (i, r) in check(exps, &cloud).into_iter().enumerate() {
                match r {
                    Ok((exp, _)) if self.replica.lattice().contains(&exp.id()) => report.known += 1,
                    Ok(x) => valid.push(x),
                    Err(e) => {
                        let full = format!("record #{}: {e}", first + i);
                        reject(&mut report, e.reason(), full);
                    }
                }
            }
            let mut intake = Intake::default();
            let (new, refused) = self.insert(&mut intake, valid);
            for e in refused {
                reject(&mut report, e.reason(), e.to_string());
            }
            if !self.commit(intake) {
                return Err("the node could not store the bundle (see its log); nothing of this chunk was kept".into());
            }
            report.new += new;
            first += n;
        }
        report.root = Some(self.replica.root());
        Ok(report)
    }

    /// After a failed commit the replica may hold what the store does not: open the store
    /// again (redb refuses everything after a failed write until then) and load it. `false`:
    /// the store is still unusable (see [`Node::unstored`]).
    fn reload(&mut self) -> bool {
        let loaded = self.store.reopen_loaded(&mut |_| {});
        match loaded {
            Ok(r) => {
                self.persisted = r.state().doc;
                self.replica = r;
                self.generation += 1;
                // What peers lack is found again by the next exchange.
                for s in self.peers.values_mut() {
                    s.session.forget_pushes();
                }
                if let Err(e) = self.record_own() {
                    self.unstored = Some(e.to_string());
                    return false;
                }
                if self.unstored.take().is_some() {
                    tracing::warn!("the store works again");
                }
                true
            }
            Err(e) => {
                if self.unstored.is_none() {
                    tracing::error!(error = %e, "the store cannot be used until it opens again");
                }
                self.unstored = Some(e.to_string());
                false
            }
        }
    }
}

/// The network's gate for a cloud: who may stay connected, as the lattice says now.
pub(crate) fn gate(lattice: &lcloud_core::Lattice) -> lcloud_net::Gate {
    lcloud_net::Gate {
        members: lattice.members().map(|m| m.into_iter().collect()),
        barred: match lattice.rules().members {
            None => lattice.removed().into_iter().collect(),
            Some(_) => Default::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcloud_core::{Experience, ForkPolicy, Genesis, Op, Path, Replica, Value};

    /// Writes that wait together are signed as one chain and stored together. A write the
    /// cloud's rules refuse (this node is a member, not an admin, so it may not add members),
    /// one without ops and one too large are each refused alone; every other write of the
    /// group, before and after them, is acknowledged with consecutive seqs, is durable, and
    /// is published.
    #[test]
    fn waiting_writes_are_stored_together_and_a_refused_one_holds_up_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::load_or_create(dir.path()).unwrap();
        let my_id = me.id();
        let admin = ed25519_consensus::SigningKey::from([8; 32]);
        let genesis = Experience::create_genesis(
            &admin,
            Genesis {
                name: "t".into(),
                init: Value::map(),
                members: Some(vec![my_id]),
                fork_policy: ForkPolicy::Concurrent,
            },
        );
        let store = Store::create(dir.path(), &genesis).unwrap();
        let replica = store.load(&mut |_| {}).unwrap();
        let (net, mut published) = mpsc::channel(1024);
        let (announce, _) = broadcast::channel(1024);
        let node = Node::open(Peer::random(), store, replica, me, net, announce).unwrap();
        let (inbox, rx) = mpsc::unbounded_channel();
        let refused = [7, 13, 21];
        let mut answers = Vec::new();
        for i in 0..40 {
            let ops = match i {
                7 => vec![],
                13 => vec![Op::AddMember {
                    node: NodeId([9; 32]),
                }],
                21 => vec![Op::Set {
                    path: Path(vec!["big".into()]),
                    value: Value::Str("x".repeat(lcloud_core::EXPERIENCE_BYTES_MAX)),
                }],
                _ => vec![Op::Incr {
                    path: Path(vec![format!("k{i}")]),
                    by: 1,
                }],
            };
            let (tx, answer) = oneshot::channel();
            inbox.send(Msg::Api(Call::Write(ops, tx))).unwrap();
            answers.push(answer);
        }
        inbox.send(Msg::Stop).unwrap();
        let store = node.run(rx).into_store();
        let mut seqs = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer.blocking_recv().unwrap() {
                Err(WriteError::Refused(why)) if refused.contains(&i) => {
                    assert!(!why.is_empty());
                }
                Ok(w) if !refused.contains(&i) => seqs.push(w.seq),
                other => panic!("write {i}: {other:?}"),
            }
        }
        assert_eq!(seqs, (1..=37).collect::<Vec<u64>>());
        let mut gossiped = 0;
        while let Ok(cmd) = published.try_recv() {
            gossiped += usize::from(matches!(cmd, Command::Publish(_)));
        }
        assert_eq!(gossiped, 37);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.signed_seq().unwrap(), 37);
        let replica = store.load(&mut |_| {}).unwrap();
        assert_eq!(replica.lattice().height(&my_id), 37);
        let doc = replica
            .state()
            .doc
            .materialize(&Path::root())
            .unwrap()
            .to_json();
        for i in 0..40 {
            let want = (!refused.contains(&i)).then_some(1);
            assert_eq!(doc[format!("k{i}")].as_i64(), want, "k{i}");
        }
        assert!(doc.get("big").is_none());
    }

    /// Writes that keep coming while batches are stored (signed ahead of the commit in
    /// progress) are acknowledged with consecutive seqs, durable and published; a read sent
    /// after a write sees it; a write refused in the middle holds up no other.
    #[test]
    fn writes_arriving_during_commits_are_stored_in_order_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::load_or_create(dir.path()).unwrap();
        let my_id = me.id();
        let genesis = Experience::create_genesis(me.key(), Genesis::open("t"));
        let store = Store::create(dir.path(), &genesis).unwrap();
        let replica = store.load(&mut |_| {}).unwrap();
        let (net, mut published) = mpsc::channel(4096);
        let (announce, _) = broadcast::channel(1024);
        let node = Node::open(Peer::random(), store, replica, me, net, announce).unwrap();
        let (inbox, rx) = mpsc::unbounded_channel();
        let core = std::thread::spawn(move || node.run(rx).into_store());
        const N: usize = 600;
        const REFUSED: usize = 250;
        let mut answers = Vec::new();
        let mut reads = Vec::new();
        for i in 0..N {
            let ops = if i == REFUSED {
                Vec::new()
            } else {
                vec![Op::Incr {
                    path: Path(vec![format!("k{i}")]),
                    by: 1,
                }]
            };
            let (tx, answer) = oneshot::channel();
            inbox.send(Msg::Api(Call::Write(ops, tx))).unwrap();
            answers.push(answer);
            if i % 50 == 49 {
                let (tx, read) = oneshot::channel();
                inbox
                    .send(Msg::Api(Call::State(Path(vec![format!("k{i}")]), tx)))
                    .unwrap();
                reads.push((i, read));
            }
            // Let some batches be stored while later writes come.
            if i % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        }
        inbox.send(Msg::Stop).unwrap();
        let store = core.join().unwrap();
        let mut seqs = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer.blocking_recv().unwrap() {
                Err(WriteError::Refused(_)) if i == REFUSED => {}
                Ok(w) if i != REFUSED => seqs.push(w.seq),
                other => panic!("write {i}: {other:?}"),
            }
        }
        // The genesis is this node's first experience.
        assert_eq!(seqs, (2..=N as u64).collect::<Vec<u64>>());
        for (i, read) in reads {
            assert_eq!(
                read.blocking_recv().unwrap(),
                Some(serde_json::json!(1)),
                "the read after write {i} sees it"
            );
        }
        let mut gossiped = 0;
        while let Ok(cmd) = published.try_recv() {
            gossiped += usize::from(matches!(cmd, Command::Publish(_)));
        }
        assert_eq!(gossiped, N - 1);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.signed_seq().unwrap(), N as u64);
        let replica = store.load(&mut |_| {}).unwrap();
        assert_eq!(replica.lattice().height(&my_id), N as u64);
    }

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
                    path: Path(vec![format!("k{i}")]),
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
