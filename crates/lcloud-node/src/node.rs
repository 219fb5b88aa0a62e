//! The node's core: one thread owns the store and the replica and handles, one at a time,
//! what the network and the API ask. Nothing else touches them, so there are no locks around
//! the state, and every change is durable before it is acknowledged or sent on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{Request, Response, Summary};
use lcloud_core::{Experience, Id, InsertError, Inserted, Limits, Replica, Session, Verified};
use lcloud_net::{Command, Event, MessageId, Peer, node_of};
use lcloud_store::{Identity, Store, StoreError};
use tokio::sync::{broadcast, mpsc};

#[path = "calls.rs"]
mod calls;
#[path = "check.rs"]
mod check;
#[path = "finality.rs"]
mod finality;
#[path = "msg.rs"]
mod msg;
#[path = "peers.rs"]
mod peers;
#[path = "rotate.rs"]
mod rotate;
#[path = "write.rs"]
mod write;

use check::cores;
pub use check::{Checked, check};
pub use msg::*;
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
/// Most gossiped experiences stored in one commit when several wait.
const GOSSIP_PER_COMMIT: usize = 512;

/// Most pushes stored in one commit when several wait.
const PUSHES_PER_COMMIT: usize = 8;
/// Writes from the API stored in one commit at most: the writes that wait while a commit is
/// syncing are signed together (on every core) and share the next commit's two fsyncs.
const WRITES_PER_COMMIT: usize = 4096;

/// Experiences inserted into the replica and not yet stored.
#[derive(Default)]
struct Intake {
    outcomes: Vec<Inserted>,
    parked: Vec<Verified<Experience>>,
    /// The bytes each arrived as, by id (looked up once per experience stored).
    bytes: std::collections::HashMap<Id, Vec<u8>, foldhash::fast::RandomState>,
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
    /// Exchanges in a row the peer refused as behind its checkpoint (a refusal can answer a
    /// summary that arrived late, out of date: only a second one in a row is warned of).
    behind_refusals: u32,
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
    /// Compact below final checkpoints, keeping this of what is dropped (`None`: never).
    pub(crate) retain: Option<lcloud_store::Retain>,
    /// Compaction was refused (calls to order-sensitive morphisms): said once.
    compaction_refused: bool,
    /// Serve reads only (`lcloud ui`): write no experience (no attestation, no write, deploy,
    /// call, import or key rotation through the API) and compact nothing.
    pub(crate) read_only: bool,
}

/// What a read-only node answers to anything that would write.
pub(crate) const READ_ONLY: &str = "this node serves reads only (`lcloud ui`) and writes nothing: \
     stop it, then write with the CLI or run `lcloud node run`";

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
            retain: None,
            compaction_refused: false,
            read_only: false,
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
        if self.read_only {
            return Err(READ_ONLY.into());
        }
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
    use lcloud_core::{Experience, Genesis, NodeId, Op, Path, Value};
    use tokio::sync::oneshot;

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
        let genesis = Experience::create_genesis(&admin, Genesis::members_only("t", vec![my_id]));
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
                    path: Path::from(vec!["big".into()]),
                    value: Value::Str("x".repeat(lcloud_core::EXPERIENCE_BYTES_MAX)),
                }],
                _ => vec![Op::Incr {
                    path: Path::from(vec![format!("k{i}")]),
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
                    path: Path::from(vec![format!("k{i}")]),
                    by: 1,
                }]
            };
            let (tx, answer) = oneshot::channel();
            inbox.send(Msg::Api(Call::Write(ops, tx))).unwrap();
            answers.push(answer);
            if i % 50 == 49 {
                let (tx, read) = oneshot::channel();
                inbox
                    .send(Msg::Api(Call::State(Path::from(vec![format!("k{i}")]), tx)))
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
}
