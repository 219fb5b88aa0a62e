//! The node's core: one thread owns the store and the replica and handles, one at a time,
//! what the network and the API ask. Nothing else touches them, so there are no locks around
//! the state, and every change is durable before it is acknowledged or sent on.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{self, Request, Response, Summary};
use lcloud_core::{
    EXPERIENCE_BYTES_MAX, Experience, Id, Idx, Inserted, NodeId, Op, Path, Replica, Verified,
    validate, validate_batch,
};
use lcloud_net::{Command, Event, Peer, node_of};
use lcloud_store::{Identity, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Misbehaviour points at which a peer is disconnected and refused.
pub const BAN_SCORE: u32 = 100;
/// Points for an invalid experience or an undecodable message.
const INVALID_POINTS: u32 = 25;
/// Points for a request beyond the rate limit.
const FLOOD_POINTS: u32 = 5;
/// Requests a peer may make per second before it is refused (and scored).
const REQUESTS_PER_SECOND: u32 = 50;

/// What the API asks the node.
pub enum Call {
    /// Write ops as one experience of this node.
    Write(Vec<Op>, oneshot::Sender<Result<Written, String>>),
    /// The document at a path (`None`: nothing there).
    State(Path, oneshot::Sender<Option<serde_json::Value>>),
    /// State root, heads, frontier clock, counts.
    Status(oneshot::Sender<Status>),
    /// Prometheus text.
    Metrics(oneshot::Sender<String>),
    /// Cut every connection (`true`) or heal (`false`).
    Isolate(bool),
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
    /// State root of the current state.
    pub root: Id,
    /// Heads of the DAG.
    pub heads: Vec<Id>,
    /// Frontier: per author, the highest seq held.
    pub clock: BTreeMap<NodeId, u64>,
    /// Experiences held.
    pub experiences: usize,
    /// Connected peers and the node each is.
    pub peers: Vec<(String, Option<NodeId>)>,
}

/// Everything the core thread receives.
pub enum Msg {
    /// From the network.
    Net(Event),
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
}

#[derive(Default)]
struct PeerState {
    score: u32,
    /// What this peer lacks and we still have to push, in batches.
    pushing: VecDeque<Idx>,
    push_in_flight: bool,
    sync_in_flight: bool,
    window_start: Option<Instant>,
    window_requests: u32,
}

#[derive(Default)]
struct Metrics {
    exps_in: u64,
    exps_out: u64,
    written: u64,
    gossip_in: u64,
    syncs: u64,
    rejected: BTreeMap<String, u64>,
    banned: u64,
}

/// The core: the store, the replica, the peers.
pub struct Node {
    store: Store,
    replica: Replica,
    identity: Identity,
    net: mpsc::Sender<Command>,
    announce: broadcast::Sender<Announced>,
    peers: BTreeMap<Peer, PeerState>,
    metrics: Metrics,
}

impl Node {
    /// Loads the store's history into a replica.
    pub fn open(
        store: Store,
        identity: Identity,
        net: mpsc::Sender<Command>,
        announce: broadcast::Sender<Announced>,
    ) -> Result<Node, StoreError> {
        let replica = store.load(&mut |_| {})?;
        Ok(Node {
            store,
            replica,
            identity,
            net,
            announce,
            peers: BTreeMap::new(),
            metrics: Metrics::default(),
        })
    }

    /// Handles messages until [`Msg::Stop`] or until every sender is gone.
    pub fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) -> Store {
        while let Some(msg) = inbox.blocking_recv() {
            match msg {
                Msg::Net(ev) => self.on_net(ev),
                Msg::Api(call) => self.on_call(call),
                Msg::Tick => {
                    let peers: Vec<Peer> = self.peers.keys().copied().collect();
                    for p in peers {
                        self.start_sync(p);
                    }
                }
                Msg::Stop => break,
            }
        }
        self.store
    }

    fn send(&self, cmd: Command) {
        // The network stopping first (shutdown) is not an error here.
        let _ = self.net.blocking_send(cmd);
    }

    /// Whether `peer` may read and write this cloud: anyone in an open cloud, else members.
    fn allowed(&self, peer: &Peer) -> bool {
        let Some(node) = node_of(peer) else {
            return false;
        };
        let rules = self.replica.lattice().rules();
        match &rules.members {
            None => true,
            Some(members) => {
                node == rules.creator
                    || members.contains(&node)
                    || self.replica.lattice().granted().any(|g| *g == node)
            }
        }
    }

    fn misbehaved(&mut self, peer: Peer, reason: &str, points: u32) {
        *self.metrics.rejected.entry(reason.to_owned()).or_default() += 1;
        let state = self.peers.entry(peer).or_default();
        state.score += points;
        if state.score >= BAN_SCORE {
            tracing::warn!(%peer, reason, "banning peer");
            self.metrics.banned += 1;
            self.peers.remove(&peer);
            self.send(Command::Ban(peer));
        }
    }

    fn on_net(&mut self, ev: Event) {
        match ev {
            Event::Listening(addr) => tracing::info!(%addr, "listening"),
            Event::Connected(peer) => {
                if !self.allowed(&peer) {
                    // A non-member gets nothing of the cloud, gossip included: no connection.
                    *self
                        .metrics
                        .rejected
                        .entry("not a member".into())
                        .or_default() += 1;
                    self.send(Command::Ban(peer));
                    return;
                }
                self.peers.entry(peer).or_default();
                self.start_sync(peer);
            }
            Event::Disconnected(peer) => {
                self.peers.remove(&peer);
            }
            Event::Gossip { from, id, data } => {
                self.metrics.gossip_in += 1;
                if !self.allowed(&from) {
                    self.send(Command::Judge {
                        id,
                        from,
                        valid: false,
                    });
                    return;
                }
                match validate(&data, &self.replica.cloud()) {
                    Ok(exp) => {
                        let stored = self.receive(vec![exp]);
                        self.send(Command::Judge {
                            id,
                            from,
                            valid: stored.is_ok(),
                        });
                    }
                    Err(e) => {
                        self.send(Command::Judge {
                            id,
                            from,
                            valid: false,
                        });
                        self.misbehaved(from, &reason_of(&e.to_string()), INVALID_POINTS);
                    }
                }
            }
            Event::Request {
                peer,
                request,
                token,
            } => {
                let response = self.on_request(peer, request);
                self.send(Command::Respond { token, response });
            }
            Event::Response { peer, response } => self.on_response(peer, response),
            Event::RequestFailed { peer, error } => {
                tracing::debug!(%peer, %error, "request failed");
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.sync_in_flight = false;
                    s.push_in_flight = false;
                    s.pushing.clear();
                }
            }
        }
    }

    fn rate_limited(&mut self, peer: Peer) -> bool {
        let now = Instant::now();
        let s = self.peers.entry(peer).or_default();
        match s.window_start {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                s.window_requests += 1;
            }
            _ => {
                s.window_start = Some(now);
                s.window_requests = 1;
            }
        }
        s.window_requests > REQUESTS_PER_SECOND
    }

    fn on_request(&mut self, peer: Peer, request: Request) -> Response {
        if !self.allowed(&peer) {
            *self
                .metrics
                .rejected
                .entry("not a member".into())
                .or_default() += 1;
            return Response::Refused {
                reason: "not a member of this cloud".into(),
            };
        }
        if self.rate_limited(peer) {
            self.misbehaved(peer, "flood", FLOOD_POINTS);
            return Response::Refused {
                reason: format!("more than {REQUESTS_PER_SECOND} requests per second"),
            };
        }
        let cloud = self.replica.cloud();
        match request {
            Request::Sync { summary } => {
                if summary.cloud != cloud {
                    return Response::Refused {
                        reason: "another cloud".into(),
                    };
                }
                self.metrics.syncs += 1;
                let answer = sync::answer(self.replica.lattice(), &summary, sync::BATCH_BYTES);
                if let Response::Sync { exps, .. } = &answer {
                    self.metrics.exps_out += exps.len() as u64;
                }
                answer
            }
            Request::Push { cloud: c, exps } => {
                if c != cloud {
                    return Response::Refused {
                        reason: "another cloud".into(),
                    };
                }
                let (new, rejected) = self.receive_bytes(peer, &exps);
                Response::Pushed { new, rejected }
            }
        }
    }

    fn on_response(&mut self, peer: Peer, response: Response) {
        match response {
            Response::Sync {
                summary,
                exps,
                more,
            } => {
                if summary.cloud != self.replica.cloud() {
                    self.misbehaved(peer, "another cloud", INVALID_POINTS);
                    return;
                }
                self.receive_bytes(peer, &exps);
                let lacking = sync::missing(self.replica.lattice(), &summary);
                let Some(s) = self.peers.get_mut(&peer) else {
                    return;
                };
                s.sync_in_flight = false;
                if s.pushing.is_empty() && !s.push_in_flight {
                    s.pushing = lacking.into();
                    self.push_next(peer);
                }
                if more {
                    self.start_sync(peer);
                }
            }
            Response::Pushed { .. } => {
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.push_in_flight = false;
                }
                self.push_next(peer);
            }
            Response::Refused { reason } => {
                tracing::info!(%peer, %reason, "peer refused");
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.sync_in_flight = false;
                    s.push_in_flight = false;
                    s.pushing.clear();
                }
            }
        }
    }

    fn start_sync(&mut self, peer: Peer) {
        let Some(s) = self.peers.get_mut(&peer) else {
            return;
        };
        if s.sync_in_flight {
            return;
        }
        s.sync_in_flight = true;
        let summary = Summary::of(self.replica.lattice());
        self.send(Command::Request {
            peer,
            request: Request::Sync { summary },
        });
    }

    /// Sends the next batch of what `peer` lacks (one at a time: the answer is the
    /// backpressure).
    fn push_next(&mut self, peer: Peer) {
        let Some(s) = self.peers.get_mut(&peer) else {
            return;
        };
        if s.push_in_flight || s.pushing.is_empty() {
            return;
        }
        let lacking: Vec<Idx> = s.pushing.iter().copied().collect();
        let (exps, _) = sync::batch(self.replica.lattice(), &lacking, sync::BATCH_BYTES);
        s.pushing.drain(..exps.len());
        s.push_in_flight = true;
        self.metrics.exps_out += exps.len() as u64;
        let cloud = self.replica.cloud();
        self.send(Command::Request {
            peer,
            request: Request::Push { cloud, exps },
        });
    }

    /// Validates (in batch) and stores experiences a peer sent; scores invalid ones.
    fn receive_bytes(&mut self, peer: Peer, exps: &[ByteBuf]) -> (u32, u32) {
        let cloud = self.replica.cloud();
        let inputs: Vec<&[u8]> = exps.iter().map(|b| b.0.as_slice()).collect();
        let mut valid = Vec::new();
        let mut rejected = 0u32;
        for r in validate_batch(&inputs, &cloud) {
            match r {
                Ok(exp) => valid.push(exp),
                Err(e) => {
                    rejected += 1;
                    self.misbehaved(peer, &reason_of(&e.to_string()), INVALID_POINTS);
                }
            }
        }
        match self.receive(valid) {
            Ok(new) => (new, rejected),
            Err(n) => (0, rejected + n),
        }
    }

    /// Inserts verified experiences and stores what changed in one durable commit. Returns
    /// how many were new, or how many were refused by the rules.
    fn receive(&mut self, exps: Vec<Verified<Experience>>) -> Result<u32, u32> {
        let mut outcomes: Vec<Inserted> = Vec::new();
        let mut parked: Vec<Verified<Experience>> = Vec::new();
        let mut refused = 0u32;
        for exp in exps {
            if self.replica.lattice().contains(&exp.id()) {
                continue;
            }
            match self.replica.insert(exp.clone()) {
                Ok(out) => {
                    if out.duplicate {
                        continue;
                    }
                    if !out.parked_on.is_empty() {
                        parked.push(exp);
                    }
                    outcomes.push(out);
                }
                Err(e) => {
                    refused += 1;
                    *self
                        .metrics
                        .rejected
                        .entry(reason_of(&e.to_string()))
                        .or_default() += 1;
                }
            }
        }
        if outcomes.is_empty() {
            return if refused > 0 { Err(refused) } else { Ok(0) };
        }
        let refs: Vec<&Inserted> = outcomes.iter().collect();
        let parked_refs: Vec<&Experience> = parked.iter().map(|e| &**e).collect();
        if let Err(e) = self
            .store
            .persist_with_parked(&self.replica, &refs, &parked_refs)
        {
            tracing::error!(error = %e, "cannot store received experiences; reloading");
            self.reload();
            return Err(refused);
        }
        let mut new = 0;
        for idx in outcomes.iter().flat_map(|o| o.admitted.iter()) {
            let exp = self.replica.lattice().get(*idx);
            new += 1;
            self.metrics.exps_in += 1;
            let _ = self.announce.send(Announced {
                id: exp.id(),
                author: exp.author(),
                seq: exp.seq(),
                ops: exp.ops().len(),
                local: false,
            });
        }
        new += parked.len() as u32;
        Ok(new)
    }

    /// After a failed commit the replica may hold what the store does not: load it again.
    fn reload(&mut self) {
        match self.store.load(&mut |_| {}) {
            Ok(r) => self.replica = r,
            Err(e) => tracing::error!(error = %e, "cannot reload the store"),
        }
    }

    fn write(&mut self, ops: Vec<Op>) -> Result<Written, String> {
        if ops.is_empty() {
            return Err("no ops to write".into());
        }
        let me = self.identity.id();
        self.store
            .check_can_sign(&me, &self.replica)
            .map_err(|e| e.to_string())?;
        let exp = Experience::sign(self.replica.draft(&me, ops), self.identity.key());
        let bytes = exp.to_bytes();
        if bytes.len() > EXPERIENCE_BYTES_MAX {
            return Err(format!(
                "the experience would be {} bytes; at most {EXPERIENCE_BYTES_MAX} are allowed: split it",
                bytes.len()
            ));
        }
        let out = self
            .replica
            .insert(exp.clone())
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.store.persist(&self.replica, &[&out]) {
            self.reload();
            return Err(e.to_string());
        }
        if let Err(e) = self.store.record_signed(exp.seq()) {
            return Err(e.to_string());
        }
        self.metrics.written += 1;
        let _ = self.announce.send(Announced {
            id: exp.id(),
            author: me,
            seq: exp.seq(),
            ops: exp.ops().len(),
            local: true,
        });
        self.send(Command::Publish(bytes));
        Ok(Written {
            id: exp.id(),
            seq: exp.seq(),
        })
    }

    fn on_call(&mut self, call: Call) {
        match call {
            Call::Write(ops, reply) => {
                let _ = reply.send(self.write(ops));
            }
            Call::State(path, reply) => {
                let doc = self.replica.state().doc;
                let _ = reply.send(doc.materialize(&path).map(|v| v.to_json()));
            }
            Call::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Call::Metrics(reply) => {
                let _ = reply.send(self.metrics_text());
            }
            Call::Isolate(on) => {
                if on {
                    self.peers.clear();
                }
                self.send(Command::Isolate(on));
            }
        }
    }

    fn status(&self) -> Status {
        let lattice = self.replica.lattice();
        Status {
            node: self.identity.id(),
            cloud: self.replica.cloud(),
            root: self.replica.root(),
            heads: lattice.heads().iter().copied().collect(),
            clock: lattice.frontier().0.into_iter().collect(),
            experiences: lattice.len(),
            peers: self
                .peers
                .keys()
                .map(|p| (p.to_string(), node_of(p)))
                .collect(),
        }
    }

    fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let lattice = self.replica.lattice();
        let mut out = String::new();
        let mut line = |name: &str, help: &str, kind: &str, value: String| {
            out.push_str(&format!(
                "# HELP lcloud_{name} {help}\n# TYPE lcloud_{name} {kind}\nlcloud_{name} {value}\n"
            ));
        };
        line(
            "peers",
            "Connected peers.",
            "gauge",
            self.peers.len().to_string(),
        );
        line(
            "experiences",
            "Experiences held (admitted).",
            "gauge",
            lattice.len().to_string(),
        );
        line(
            "parked",
            "Experiences waiting for a dependency.",
            "gauge",
            lattice.parked_len().to_string(),
        );
        line(
            "experiences_in_total",
            "Experiences received from peers and stored.",
            "counter",
            m.exps_in.to_string(),
        );
        line(
            "experiences_out_total",
            "Experiences sent to peers by sync.",
            "counter",
            m.exps_out.to_string(),
        );
        line(
            "written_total",
            "Experiences written by this node.",
            "counter",
            m.written.to_string(),
        );
        line(
            "gossip_in_total",
            "Gossip messages received.",
            "counter",
            m.gossip_in.to_string(),
        );
        line(
            "syncs_served_total",
            "Sync requests answered.",
            "counter",
            m.syncs.to_string(),
        );
        line(
            "peers_banned_total",
            "Peers disconnected for misbehaviour.",
            "counter",
            m.banned.to_string(),
        );
        // Sync lag: experiences peers are known to lack, queued to be pushed.
        let lag: usize = self.peers.values().map(|s| s.pushing.len()).sum();
        line(
            "sync_lag",
            "Experiences queued to be pushed to peers.",
            "gauge",
            lag.to_string(),
        );
        out.push_str("# HELP lcloud_rejected_total Experiences or requests refused, by reason.\n");
        out.push_str("# TYPE lcloud_rejected_total counter\n");
        for (reason, n) in &m.rejected {
            out.push_str(&format!(
                "lcloud_rejected_total{{reason=\"{}\"}} {n}\n",
                reason.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        out
    }
}

/// A short, stable label for a rejection reason (the error's first clause).
fn reason_of(error: &str) -> String {
    let first = error.split([':', '(']).next().unwrap_or(error).trim();
    first.chars().take(60).collect()
}
