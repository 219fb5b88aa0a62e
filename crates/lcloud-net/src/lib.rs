//! The network of λCLOUD: carries the core's sync messages ([`lcloud_core::sync`]) between
//! nodes over libp2p (TCP, Noise, Yamux), pushes new experiences with gossipsub, and does
//! nothing else: what to send and what to accept is decided by the node, which owns the replica.
//!
//! Peers are authenticated by Noise with their node keys: a libp2p peer id is the node's
//! Ed25519 key, so [`node_of`] tells the node which λCLOUD node is on the other end.
//!
//! Nothing reaches an address the user did not give: the network dials only the peers it is
//! told to and listens where it is told to. The one exception is opt-in: with
//! [`Config::mdns`] it finds peers on the local network with mDNS and dials them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use lcloud_core::NodeId;
use lcloud_core::sync::{Request, Response};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, connection_limits, gossipsub, identify, identity, mdns,
};
use tokio::sync::mpsc;

pub use libp2p::Multiaddr as Addr;
pub use libp2p::PeerId as Peer;
pub use libp2p::gossipsub::MessageId;

mod codec;

/// The request-response protocol name (version 1 of the sync protocol: plain frames).
pub const SYNC_PROTOCOL: &str = "/lcloud/sync/1";

/// Version 2 of the sync protocol: the same messages, each frame's message zstd-compressed
/// when that pays. Offered first; a peer that knows only version 1 is spoken to in it.
pub const SYNC_PROTOCOL_2: &str = "/lcloud/sync/2";

/// Largest gossip message (one experience, with room for its framing).
pub const GOSSIP_BYTES_MAX: usize = lcloud_core::EXPERIENCE_BYTES_MAX + 1024;

/// The λCLOUD node behind a peer id (peer ids of Ed25519 keys embed the key).
pub fn node_of(peer: &PeerId) -> Option<NodeId> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Some(NodeId(ed.to_bytes()))
}

/// The peer id of a λCLOUD node.
pub fn peer_of(node: &NodeId) -> Option<PeerId> {
    let ed = identity::ed25519::PublicKey::try_from_bytes(&node.0).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(ed)))
}

/// How to run the network.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's Ed25519 secret (its identity key; the same key signs experiences).
    pub secret: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/4001` (port 0: any free port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, and to dial again while they are not connected.
    pub peers: Vec<Multiaddr>,
    /// The cloud (its genesis id). Never sent: it keys the Noise handshake
    /// ([`prologue`]) and names the gossip topic ([`topic`]) through one-way hashes, so only
    /// peers that hold the genesis can connect at all.
    pub cloud: [u8; 32],
    /// How often to dial the given peers that are not connected.
    pub redial_every: Duration,
    /// Find peers on the local network with mDNS and dial them. Off unless asked for: without
    /// it, nothing reaches an address the user did not give.
    pub mdns: bool,
    /// Who may stay connected. Checked the moment a connection is up, before anything (gossip
    /// included) is sent on it; the node updates it with [`Command::Gate`].
    pub gate: Gate,
}

/// The peers a cloud lets in: its members (in an open cloud, everyone not removed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// `None`: an open cloud.
    pub members: Option<std::collections::BTreeSet<NodeId>>,
    /// Keys removed from an open cloud.
    pub barred: std::collections::BTreeSet<NodeId>,
}

impl Gate {
    /// Whether `peer` may stay connected.
    pub fn admits(&self, peer: &PeerId) -> bool {
        let Some(node) = node_of(peer) else {
            return false;
        };
        match &self.members {
            Some(m) => m.contains(&node),
            None => !self.barred.contains(&node),
        }
    }
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// Listening on this address.
    Listening(Multiaddr),
    /// A connection to a peer is up (first connection to it).
    Connected(PeerId),
    /// The last connection to a peer is gone.
    Disconnected(PeerId),
    /// A peer the [`Gate`] does not let in connected, and was cut off at once.
    NotMember(PeerId),
    /// A gossiped experience (bytes as received), from the peer that forwarded it.
    Gossip {
        /// The peer it came through.
        from: PeerId,
        /// Its id in gossipsub, for [`Command::Judge`].
        id: gossipsub::MessageId,
        /// The canonical bytes of one experience (unchecked).
        data: Vec<u8>,
    },
    /// A peer asks something; answer with [`Command::Respond`] and this token.
    Request {
        /// Who asks.
        peer: PeerId,
        /// The request, decoded within the size cap.
        request: Request,
        /// Pass back in [`Command::Respond`].
        token: u64,
    },
    /// The answer to a [`Command::Request`].
    Response {
        /// Who answered.
        peer: PeerId,
        /// The answer, decoded within the size cap.
        response: Response,
    },
    /// A peer sent a request we could not read (oversized, truncated or undecodable frame, or
    /// bytes after it).
    Malformed {
        /// Who sent it.
        peer: PeerId,
        /// A short, stable label: `frame too large`, `frame truncated`, `frame trailing
        /// bytes` or `message undecodable`.
        reason: &'static str,
        /// What was wrong.
        error: String,
    },
    /// A request of ours failed (timeout, connection lost, undecodable answer).
    RequestFailed {
        /// The peer asked.
        peer: PeerId,
        /// What went wrong.
        error: String,
    },
}

/// What the node tells the network.
#[derive(Debug)]
pub enum Command {
    /// Gossip one experience's bytes to every subscribed peer.
    Publish(Vec<u8>),
    /// Send a request to a peer; the answer comes as [`Event::Response`].
    Request {
        /// To whom.
        peer: PeerId,
        /// What.
        request: Request,
    },
    /// Answer a request.
    Respond {
        /// The token of the [`Event::Request`].
        token: u64,
        /// The answer.
        response: Response,
    },
    /// Tell gossipsub whether a gossiped message was valid (it forwards only accepted ones
    /// and lowers the score of peers that send rejected ones).
    Judge {
        /// The message.
        id: gossipsub::MessageId,
        /// Who forwarded it.
        from: PeerId,
        /// Valid or not.
        valid: bool,
    },
    /// Disconnect a peer and refuse it from now on (misbehaviour).
    Ban(PeerId),
    /// Disconnect a peer and refuse it until [`Command::Admit`] (not a member of the cloud:
    /// membership can change, a ban cannot).
    Refuse(PeerId),
    /// Accept connections of a peer refused by [`Command::Refuse`] again (it became a member).
    Admit(PeerId),
    /// Who may stay connected from now on (membership changed); connected peers it does not
    /// let in are cut off.
    Gate(Gate),
    /// Cut every connection and refuse new ones (`true`), or heal (`false`). For the demo and
    /// for partition tests.
    Isolate(bool),
}

/// Peers a ban list remembers at most: identities cost an attacker nothing, so the list must
/// not grow without bound (the oldest ban is forgotten first).
pub const BANS_MAX: usize = 65_536;

/// Banned peers, at most [`BANS_MAX`], oldest forgotten first.
#[derive(Default, Debug)]
pub struct BanList {
    set: BTreeSet<PeerId>,
    order: std::collections::VecDeque<PeerId>,
}

impl BanList {
    /// Bans `peer` (forgetting the oldest ban when full).
    pub fn insert(&mut self, peer: PeerId) {
        if self.set.insert(peer) {
            self.order.push_back(peer);
            if self.order.len() > BANS_MAX
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    /// The banned peers, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &PeerId> {
        self.order.iter()
    }

    /// Lifts the ban of `peer`, if any.
    pub fn remove(&mut self, peer: &PeerId) {
        if self.set.remove(peer) {
            self.order.retain(|p| p != peer);
        }
    }

    /// Whether `peer` is banned.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.set.contains(peer)
    }

    /// How many peers are banned.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no peer is banned.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Connections: at most this many in total, per peer, and pending inbound.
pub const CONNECTIONS_MAX: u32 = 256;
/// Connections one peer may hold at once.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// Inbound connections still in their handshake at once.
pub const PENDING_INBOUND_MAX: u32 = 32;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    sync: request_response::Behaviour<codec::SyncCodec>,
    gossip: gossipsub::Behaviour,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// A running network: send [`Command`]s, receive [`Event`]s.
pub struct Net {
    /// Commands to the network.
    pub commands: mpsc::Sender<Command>,
    /// Events from the network.
    pub events: mpsc::Receiver<Event>,
    /// This node's peer id.
    pub peer: PeerId,
    /// The task driving the network. It ends once every sender of `commands` is dropped, and
    /// with it the listeners and connections.
    pub task: tokio::task::JoinHandle<()>,
}

/// Errors starting the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The identity key is not a valid Ed25519 secret.
    #[error("the identity key is not a valid Ed25519 secret: {0}")]
    Key(String),
    /// The transport or a behaviour could not be built.
    #[error("cannot start the network: {0}")]
    Build(String),
    /// Cannot listen on an address.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        error: String,
    },
}

/// Every message of `e` and of the errors beneath it, joined: libp2p's transport errors
/// print nothing themselves and keep the reason (the socket's error) as their source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        "unknown error".into()
    } else {
        parts.join(": ")
    }
}

/// Refuses a fixed TCP port that another socket already listens on. libp2p's TCP transport
/// sets `SO_REUSEPORT` on every listener, so two nodes given one port would both start and the
/// kernel would split incoming connections between them; a plain bind (without
/// `SO_REUSEPORT`) fails while any other listener holds the port. Port 0 (any free port) and
/// addresses other than `/ip4|ip6/…/tcp/PORT` are not probed. The probe closes before libp2p
/// binds, so two nodes started at the same instant could still both bind.
fn check_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => port,
        _ => return Ok(()),
    };
    match std::net::TcpListener::bind((ip, port)) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) => Err(NetError::Listen {
            addr: addr.clone(),
            error: if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("{e}: another process (another lcloud node?) listens on port {port}")
            } else {
                e.to_string()
            },
        }),
    }
}

/// The Noise prologue of a cloud's connections: both ends mix it into the handshake, which
/// fails unless they hold the same one. So a peer must hold the cloud's genesis (its id) to
/// connect at all, and learns nothing of the cloud (not even its id: the prologue is a
/// one-way hash of it, and is never sent) until it proves that. Versioned with the protocol.
pub fn prologue(cloud: &[u8; 32]) -> Vec<u8> {
    blake3::derive_key("lcloud 2026-12 noise prologue v1", cloud).to_vec()
}

/// The gossip topic of a cloud: a one-way hash of its id, so that the topic names nothing a
/// peer could use.
pub fn topic(cloud: &[u8; 32]) -> String {
    hex::encode(blake3::derive_key("lcloud 2026-12 gossip topic v1", cloud))
}

/// Starts the network on the current tokio runtime.
pub fn start(config: Config) -> Result<Net, NetError> {
    let mut secret = config.secret;
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| NetError::Key(e.to_string()))?;
    let me = keypair.public().to_peer_id();
    let topic = gossipsub::IdentTopic::new(topic(&config.cloud));
    let prologue = prologue(&config.cloud);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            move |key: &identity::Keypair| {
                libp2p::noise::Config::new(key).map(|c| c.with_prologue(prologue.clone()))
            },
            libp2p::yamux::Config::default,
        )
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|key| {
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                // Unsigned envelopes: every experience gossiped carries its author's signature,
                // which the receiver checks, and the connection's peer is authenticated by
                // Noise. Signing the envelope too cost the publisher an Ed25519 signature per
                // experience (as much CPU as the experience's own) and each receiver a
                // verification. A message carrying an author, seqno or signature is invalid.
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .validate_messages()
                .max_transmit_size(GOSSIP_BYTES_MAX)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            let gossip = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossip_config,
            )?;
            let sync = request_response::Behaviour::with_codec(
                codec::SyncCodec,
                [
                    (StreamProtocol::new(SYNC_PROTOCOL_2), ProtocolSupport::Full),
                    (StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full),
                ],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(16),
            );
            let identify =
                identify::Behaviour::new(identify::Config::new("/lcloud/1".into(), key.public()));
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(CONNECTIONS_MAX))
                    .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
                    .with_max_pending_incoming(Some(PENDING_INBOUND_MAX)),
            );
            let mdns = if config.mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                limits,
                sync,
                gossip,
                identify,
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .behaviour_mut()
        .gossip
        .subscribe(&topic)
        .map_err(|e| NetError::Build(e.to_string()))?;
    for addr in &config.listen {
        check_port_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                error: error_chain(&e),
            })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let task = tokio::spawn(drive(swarm, config, topic, cmd_rx, ev_tx));
    Ok(Net {
        commands: cmd_tx,
        events: ev_rx,
        peer: me,
        task,
    })
}

async fn drive(
    mut swarm: libp2p::Swarm<Behaviour>,
    config: Config,
    topic: gossipsub::IdentTopic,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut channels: HashMap<u64, request_response::ResponseChannel<Response>> = HashMap::new();
    let mut next_token = 0u64;
    let mut banned = BanList::default();
    let mut refused = BanList::default();
    let mut gate = config.gate.clone();
    let mut isolated = false;
    let mut redial = tokio::time::interval(config.redial_every);
    let mut connected: BTreeSet<PeerId> = BTreeSet::new();
    // Dialed addresses and the peer each turned out to be.
    let mut dialed: HashMap<Multiaddr, PeerId> = HashMap::new();
    // Peers mDNS announced and has not yet expired: redialed like `--peer`s, since mDNS
    // reports a peer once per record lifetime (minutes) and one failed dial must not strand it.
    let mut announced: BTreeMap<PeerId, BTreeSet<Multiaddr>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = redial.tick() => {
                if isolated {
                    continue;
                }
                for addr in &config.peers {
                    let up = dialed.get(addr).is_some_and(|p| connected.contains(p));
                    if !up {
                        let _ = swarm.dial(addr.clone());
                    }
                }
                for (peer, addrs) in &announced {
                    if !connected.contains(peer) && !banned.contains(peer) {
                        for addr in addrs {
                            let _ = swarm.dial(addr.clone());
                        }
                    }
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Publish(data) => {
                        // No subscribed peer yet is not an error: anti-entropy delivers later.
                        let _ = swarm.behaviour_mut().gossip.publish(topic.clone(), data);
                    }
                    Command::Request { peer, request } => {
                        swarm.behaviour_mut().sync.send_request(&peer, Ok(request));
                    }
                    Command::Respond { token, response } => {
                        if let Some(ch) = channels.remove(&token) {
                            let _ = swarm.behaviour_mut().sync.send_response(ch, response);
                        }
                    }
                    Command::Judge { id, from, valid } => {
                        let verdict = if valid {
                            gossipsub::MessageAcceptance::Accept
                        } else {
                            gossipsub::MessageAcceptance::Reject
                        };
                        swarm
                            .behaviour_mut()
                            .gossip
                            .report_message_validation_result(&id, &from, verdict);
                    }
                    Command::Ban(peer) => {
                        banned.insert(peer);
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                    Command::Refuse(peer) => {
                        refused.insert(peer);
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                    Command::Admit(peer) => refused.remove(&peer),
                    Command::Gate(g) => {
                        gate = g;
                        for p in connected.iter().filter(|p| !gate.admits(p)) {
                            let _ = swarm.disconnect_peer_id(*p);
                        }
                    }
                    Command::Isolate(on) => {
                        isolated = on;
                        if on {
                            for p in connected.clone() {
                                let _ = swarm.disconnect_peer_id(p);
                            }
                        } else {
                            redial.reset_immediately();
                        }
                    }
                }
            }
            ev = swarm.select_next_some() => {
                let out = match ev {
                    SwarmEvent::NewListenAddr { address, .. } => Some(Event::Listening(address)),
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                        if isolated || banned.contains(&peer_id) || refused.contains(&peer_id) {
                            let _ = swarm.disconnect_peer_id(peer_id);
                            None
                        } else if !gate.admits(&peer_id) {
                            // Cut off before any gossip or answer can go out on it.
                            let _ = swarm.disconnect_peer_id(peer_id);
                            Some(Event::NotMember(peer_id))
                        } else {
                            if endpoint.is_dialer() {
                                dialed.insert(endpoint.get_remote_address().clone(), peer_id);
                            }
                            if num_established.get() == 1 && connected.insert(peer_id) {
                                Some(Event::Connected(peer_id))
                            } else {
                                None
                            }
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                        // Only with `--mdns`: dial what the local network announces.
                        for (peer, addr) in found {
                            let addr = addr.with_p2p(peer).unwrap_or_else(|a| a);
                            announced.entry(peer).or_default().insert(addr.clone());
                            if !isolated && !banned.contains(&peer) && !connected.contains(&peer) {
                                tracing::info!(%peer, %addr, "found by mDNS");
                                let _ = swarm.dial(addr);
                            }
                        }
                        None
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                        for (peer, addr) in gone {
                            let addr = addr.with_p2p(peer).unwrap_or_else(|a| a);
                            if let Some(addrs) = announced.get_mut(&peer) {
                                addrs.remove(&addr);
                                if addrs.is_empty() {
                                    announced.remove(&peer);
                                }
                            }
                        }
                        None
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                        if num_established == 0 && connected.remove(&peer_id) {
                            Some(Event::Disconnected(peer_id))
                        } else {
                            None
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        message,
                    })) => Some(Event::Gossip {
                        from: propagation_source,
                        id: message_id,
                        data: message.data,
                    }),
                    SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                        peer,
                        message,
                        ..
                    })) => match message {
                        request_response::Message::Request { request: Ok(request), channel, .. } => {
                            next_token += 1;
                            channels.insert(next_token, channel);
                            Some(Event::Request { peer, request, token: next_token })
                        }
                        request_response::Message::Request { request: Err(e), channel, .. } => {
                            let _ = swarm.behaviour_mut().sync.send_response(
                                channel,
                                Response::Refused { reason: e.to_string() },
                            );
                            Some(Event::Malformed { peer, reason: e.reason(), error: e.to_string() })
                        }
                        request_response::Message::Response { response, .. } => {
                            Some(Event::Response { peer, response })
                        }
                    },
                    SwarmEvent::Behaviour(BehaviourEvent::Sync(
                        request_response::Event::OutboundFailure { peer, error, .. },
                    )) => Some(Event::RequestFailed { peer, error: error.to_string() }),
                    _ => None,
                };
                // Responses never sent (the node dropped them) must not pile up.
                channels.retain(|_, ch| ch.is_open());
                if let Some(out) = out
                    && events.send(out).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ban_list_forgets_the_oldest_ban_when_full() {
        let mut bans = BanList::default();
        let peers: Vec<PeerId> = (0..BANS_MAX + 2).map(|_| PeerId::random()).collect();
        for p in &peers {
            bans.insert(*p);
            bans.insert(*p);
        }
        assert_eq!(bans.len(), BANS_MAX);
        assert!(!bans.contains(&peers[0]) && !bans.contains(&peers[1]));
        assert!(bans.contains(&peers[2]) && bans.contains(&peers[BANS_MAX + 1]));
    }
}
