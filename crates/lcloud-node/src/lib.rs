//! The λCLOUD node daemon (`lcloud node run`): the store, the network and the HTTP/JSON API
//! in one process.
//!
//! One thread (the core, [`node::Node`]) owns the store and the replica. The network
//! ([`lcloud_net`]) and the API ([`api`]) run on a tokio runtime and talk to the core through
//! one queue, so every change is handled in one order and is durable before it is
//! acknowledged or sent on. SIGTERM or Ctrl-C stops the node cleanly: what was acknowledged is
//! already on disk.

#![forbid(unsafe_code)]

mod announce;
pub mod api;
pub mod auth;
pub mod bundles;
pub mod contracts;
pub mod guard;
pub mod inspect;
pub mod node;
pub mod resolve;
pub mod serve;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lcloud_core::sync::{Request, Response};
use lcloud_net::{Addr, Event};
use lcloud_store::{Identity, Store};
use tokio::sync::{broadcast, mpsc};

use crate::node::{Ended, Msg, Node};

/// How to run a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store directory (created by `lcloud init` or `lcloud join`).
    pub dir: PathBuf,
    /// Peer-to-peer listen addresses.
    pub listen: Vec<Addr>,
    /// Peers to connect to (and reconnect to).
    pub peers: Vec<Addr>,
    /// Where the HTTP API listens (port 0: any free port).
    pub api: SocketAddr,
    /// How often to run anti-entropy with every connected peer.
    pub sync_every: Duration,
    /// Find peers on the local network with mDNS (off unless asked for).
    pub mdns: bool,
    /// Host names the API answers to besides IP addresses and `localhost` (see
    /// [`guard::Guard`]).
    pub api_hosts: Vec<String>,
    /// Serve the `/debug` routes (the isolation switch, raw heads, the state hash): for the
    /// demo and the chaos harness, never needed in production.
    pub debug_api: bool,
    /// Web origins (`https://app.example`) whose pages may call the API from a browser, with
    /// a token (CORS). None by default: only the node's own pages.
    pub cors: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain and PEM private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The limits on API connections (see [`serve::Limits`]).
    pub limits: serve::Limits,
    /// Most requests one token may make per second (with as many at once), 0 for no limit.
    pub token_rate: u32,
    /// Compact the store below final checkpoints, keeping this of what is dropped (`None`:
    /// keep the whole history).
    pub retain: Option<lcloud_store::Retain>,
    /// Serve reads only (`lcloud ui`): the node writes no experience, and refuses every write
    /// through its API. Give it no listen addresses and no peers, and nothing reaches it.
    pub read_only: bool,
    /// A token to hand the debugger's page in the address it prints (`lcloud ui`): the
    /// fragment, which the browser never sends to the server.
    pub ui_token: Option<String>,
    /// Sent the debugger page's address (with `ui_token` in its fragment) once the API
    /// listens: `lcloud ui` opens it in a browser.
    pub ui_ready: Option<std::sync::mpsc::Sender<String>>,
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store.
    #[error(transparent)]
    Store(#[from] lcloud_store::StoreError),
    /// No identity in the directory.
    #[error("no identity in {0}: run `lcloud init` or `lcloud join` first")]
    NoIdentity(PathBuf),
    /// The network.
    #[error(transparent)]
    Net(#[from] lcloud_net::NetError),
    /// The API address.
    #[error("cannot listen for the API on {addr}: {error}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: String,
    },
    /// The runtime.
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
    /// A `--cors` value that is not a web origin.
    #[error("--cors {0:?} is not a web origin (scheme://host[:port], e.g. https://app.example)")]
    Cors(String),
    /// The TLS certificate or key.
    #[error("{0}")]
    Tls(String),
    /// The API tokens could not be read or made.
    #[error("the API tokens: {0}")]
    Tokens(String),
    /// The core thread (which owns the store and the replica) failed.
    #[error("the node's core thread failed: {0}")]
    Core(String),
}

/// Runs a node until SIGTERM or Ctrl-C. Prints `p2p ADDR` for every listen address and `api
/// http://ADDR` once the API listens (one line each on stdout), then `stopped` when done.
pub fn run(config: Config) -> Result<(), NodeError> {
    // The whole history, loaded once (leaves a crash left behind are written from it).
    let (store, replica) = Store::open_loaded(&config.dir, &mut |_| {})?;
    if store.leaves_behind().unwrap_or(false) {
        tracing::warn!(
            dir = %config.dir.display(),
            "disk full: started without writing the document leaves a crash left behind; \
             writes are refused until space is freed, then the first commit writes them"
        );
    }
    // Bundles a stopped node was receiving are of no use now.
    if let Ok(entries) = std::fs::read_dir(&config.dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("incoming-") && name.ends_with(".bundle") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut identity =
        Identity::load(&config.dir)?.ok_or_else(|| NodeError::NoIdentity(config.dir.clone()))?;
    // A key rotation a crash interrupted is finished (or a key prepared for one never written
    // is dropped) before the node signs anything.
    if let Some(new) = lcloud_store::rotate::finish(&config.dir, &identity, &replica)? {
        tracing::warn!(node = %new.id().to_hex(), "finished an interrupted key rotation");
        store.reload_signed();
        identity = new;
    }
    // A directory from before API tokens gets its first admin token now.
    match lcloud_store::tokens::ensure_admin_token(&config.dir, lcloud_store::tokens::unix_now()) {
        Ok(Some(path)) => tracing::warn!(
            file = %path.display(),
            "the API needs a token now: an admin token was made for this node"
        ),
        Ok(None) => {}
        Err(e) => return Err(NodeError::Tokens(e.to_string())),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| NodeError::Runtime(e.to_string()))?;
    rt.block_on(serve(config, store, replica, identity))
}

async fn serve(
    config: Config,
    store: Store,
    replica: lcloud_core::Replica,
    identity: Identity,
) -> Result<(), NodeError> {
    let cloud = store.cloud();
    let (inbox, rx) = mpsc::unbounded_channel::<Msg>();
    let (announce, _) = broadcast::channel(4096);
    let first = start_core(&config, store, replica, identity, rx, &inbox, &announce)?;
    // Anti-entropy.
    let ticks = inbox.clone();
    let every = config.sync_every;
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.tick().await;
        loop {
            t.tick().await;
            if ticks.send(Msg::Tick).is_err() {
                return;
            }
        }
    });
    let cors = config
        .cors
        .iter()
        .map(|o| {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && !o.ends_with('/')
                && o.matches('/').count() == 2;
            match axum::http::HeaderValue::from_str(o) {
                Ok(v) if ok => Ok(v),
                _ => Err(NodeError::Cors(o.clone())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(serve::tls_config(cert, key).map_err(NodeError::Tls)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(|e| NodeError::Api {
            addr: config.api,
            error: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| NodeError::Api {
        addr: config.api,
        error: e.to_string(),
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("api {scheme}://{bound}");
    let page = match &config.ui_token {
        Some(t) => format!("{scheme}://{bound}/ui#token={t}"),
        None => format!("{scheme}://{bound}/ui"),
    };
    println!("ui {page}");
    if let Some(ready) = &config.ui_ready {
        let _ = ready.send(page);
    }
    if !bound.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            api = %bound,
            "the API listens beyond this machine over plain HTTP: tokens and data cross the \
             network unencrypted; keep it on 127.0.0.1 or serve HTTPS with --tls-cert and \
             --tls-key (docs/security.md)"
        );
    }
    let connections = std::sync::Arc::new(serve::Counters::default());
    let limits = serve::Limits {
        connections: serve::connection_cap(config.limits.connections),
        ..config.limits
    };
    let app = api::router(
        api::Api {
            inbox: inbox.clone(),
            announce: announce.clone(),
            auth: std::sync::Arc::new(auth::Auth::new(config.dir.clone(), config.token_rate)),
            streams: Default::default(),
            connections: connections.clone(),
            cloud,
            dir: config.dir.clone(),
            uploads: std::sync::Arc::new(tokio::sync::Semaphore::new(bundles::UPLOADS_MAX)),
        },
        config.debug_api,
        &cors,
    )
    .layer(axum::middleware::from_fn_with_state(
        guard::Guard {
            port: bound.port(),
            names: config
                .api_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            cors: config.cors.clone(),
        },
        guard::guard,
    ));
    // The core thread ending on its own means it failed (a panic: a damaged store page, a
    // bug): the node then exits non-zero, so a supervisor restarts it, instead of answering
    // 503 for ever.
    // A key rotation ends the core too: it starts again under the new key, with the same
    // store, replica and inbox, once the old network has stopped (and freed its port).
    let ended = std::sync::Arc::new(tokio::sync::Notify::new());
    let ended_tx = ended.clone();
    let restart = (config.clone(), inbox.clone(), announce.clone());
    let handle = tokio::runtime::Handle::current();
    let core = tokio::task::spawn_blocking(move || {
        let (config, inbox, announce) = restart;
        let (mut thread, mut net_task) = first;
        loop {
            let joined = thread.join();
            let Ok(Ended::Rotated(restart)) = joined else {
                ended_tx.notify_one();
                return joined.map_err(|panic| {
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "no message".into())
                });
            };
            let _ = handle.block_on(net_task);
            let node::Restart {
                store,
                replica,
                identity,
                inbox: rx,
            } = *restart;
            match start_core(&config, store, replica, identity, rx, &inbox, &announce) {
                Ok((t, n)) => (thread, net_task) = (t, n),
                Err(e) => {
                    ended_tx.notify_one();
                    return Err(format!("could not start again under the new key: {e}"));
                }
            }
        }
    });
    let server = serve::serve(listener, app, tls, limits, connections, shutdown_signal());
    tokio::select! {
        () = server => {}
        () = ended.notified() => {
            let why = match core.await {
                Ok(Err(why)) => why,
                _ => "it stopped unasked".into(),
            };
            tracing::error!(%why, "the node's core thread failed; stopping");
            return Err(NodeError::Core(why));
        }
    };
    // Stop the core after the API: it finishes what it is doing; everything acknowledged is
    // already durable.
    let _ = inbox.send(Msg::Stop);
    if let Ok(Ok(node::Ended::Stopped(store))) = core.await {
        match store.close() {
            Ok(closed) if closed.bytes.1 < closed.bytes.0 => tracing::info!(
                before = closed.bytes.0,
                after = closed.bytes.1,
                "gave the store file's free pages back"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not close the store cleanly; the next start checks it")
            }
        }
    }
    println!("stopped");
    Ok(())
}

/// The core thread and the network task that feeds it.
type Core = (std::thread::JoinHandle<Ended>, tokio::task::JoinHandle<()>);

/// Starts the network under `identity`, tells peers of a key rotation they may not know yet
/// (under the old key), and starts the core thread on `rx`. Called again after a key rotation.
fn start_core(
    config: &Config,
    store: Store,
    replica: lcloud_core::Replica,
    identity: Identity,
    rx: mpsc::UnboundedReceiver<Msg>,
    inbox: &mpsc::UnboundedSender<Msg>,
    announce: &broadcast::Sender<node::Announced>,
) -> Result<Core, NodeError> {
    let cloud = store.cloud();
    let lcloud_net::Net {
        commands,
        mut events,
        peer: me,
        task,
    } = lcloud_net::start(lcloud_net::Config {
        secret: identity.key().to_bytes(),
        listen: config.listen.clone(),
        peers: config.peers.clone(),
        cloud: *cloud.as_bytes(),
        redial_every: Duration::from_secs(1),
        mdns: config.mdns,
        gate: node::gate(replica.lattice()),
    })?;
    // A key rotation peers may not know yet: tell them under the old key.
    let retiring = match lcloud_store::rotate::retired(&config.dir) {
        Ok(Some(old)) => {
            let exps = announce::tail(&replica, &old);
            let (retiring, done) = announce::Retiring::new(config.dir.clone(), &old, &replica);
            tokio::spawn(announce::run(
                config.dir.clone(),
                old,
                cloud,
                config.peers.clone(),
                exps,
                done,
            ));
            Some(retiring)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the retired key");
            None
        }
    };
    // The core holds the only sender of network commands: the network stops when it ends.
    let mut node = Node::open(me, store, replica, identity, commands, announce.clone())?;
    node.retiring = retiring;
    node.retain = config.retain;
    node.read_only = config.read_only;
    let core = std::thread::Builder::new()
        .name("lcloud-node".into())
        .spawn(move || node.run(rx))
        .map_err(|e| NodeError::Runtime(e.to_string()))?;

    // Network events into the core's queue (and listen addresses to stdout). Experiences in
    // pushes and sync answers are checked here, on every core, while the core thread stores
    // the previous batch. Up to CHECKS_IN_FLIGHT batches are checked at once and handed over
    // in the order they arrived: one batch split over the cores leaves a core idle whenever
    // its part ends first, and the next batch's parts fill that gap.
    let to_core = inbox.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut checking = futures::stream::FuturesOrdered::new();
        let mut events_open = true;
        loop {
            tokio::select! {
                ev = events.recv(), if events_open && checking.len() < CHECKS_IN_FLIGHT => {
                    match ev {
                        Some(ev) => checking.push_back(to_msg(ev, cloud, me)),
                        None => events_open = false,
                    }
                }
                Some(msg) = checking.next() => {
                    if to_core.send(msg).is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    Ok((core, task))
}

/// Batches of experiences checked at once by the network task (see `serve`).
const CHECKS_IN_FLIGHT: usize = 2;

/// A network event as the core's message, its experiences checked first (if it carries any).
async fn to_msg(ev: Event, cloud: lcloud_core::Id, me: lcloud_net::Peer) -> Msg {
    match ev {
        Event::Listening(addr) => {
            println!("p2p {addr}/p2p/{me}");
            Msg::Net(Event::Listening(addr))
        }
        Event::Request {
            peer,
            request: Request::Push { cloud: c, exps },
            token,
        } => Msg::Push {
            peer,
            token,
            cloud: c,
            exps: checked(exps, cloud).await,
        },
        Event::Response {
            peer,
            response:
                Response::Sync {
                    summary,
                    exps,
                    more,
                },
        } => Msg::SyncAnswer {
            peer,
            summary,
            exps: checked(exps, cloud).await,
            more,
        },
        other => Msg::Net(other),
    }
}

async fn checked(exps: Vec<lcloud_core::codec::ByteBuf>, cloud: lcloud_core::Id) -> node::Checked {
    tokio::task::spawn_blocking(move || node::check(exps, &cloud))
        .await
        .unwrap_or_default()
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
