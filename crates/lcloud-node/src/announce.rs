//! After a key rotation (`lcloud key rotate` on a stopped node), the node's peers do not know
//! the new key, so they refuse it. The node therefore connects to its peers once more under
//! the retired key (which peers that have not seen the rotation still let in), pushes the end
//! of the old key's chain (the rotation included), and once a peer has stored it, deletes the
//! retired key. Peers that already know the rotation refuse the old key; the node itself
//! retires the key once such a peer's sync summary shows it holds the rotation
//! ([`Retiring`]), which also ends the announcement.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{MESSAGE_BYTES_MAX, Request, Response, Summary};
use lcloud_core::{Id, NodeId, Replica};
use lcloud_net::{Addr as Multiaddr, Command, Event};
use lcloud_store::Identity;

/// Experiences of the old chain pushed at most (its end: the rotation and what came before).
const CHAIN_TAIL: usize = 64;
/// How long the node keeps trying, per start.
const GIVE_UP: Duration = Duration::from_secs(600);

/// What to push: the end of `old`'s chain, within one message.
pub(crate) fn tail(replica: &Replica, old: &Identity) -> Vec<Vec<u8>> {
    let chain = replica.lattice().chain(&old.id());
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in chain.iter().rev().take(CHAIN_TAIL) {
        let b = e.to_bytes();
        bytes += b.len() + 16;
        if bytes > MESSAGE_BYTES_MAX / 2 {
            break;
        }
        out.push(b);
    }
    out.reverse();
    out
}

/// A rotation not yet known to hold at a peer, as the node's core watches for it: the retired
/// key is deleted once a peer's summary holds the old chain up to the rotation (the peer
/// learnt it from the new key's sync, or from the announcement whose answer was lost when the
/// peer cut the old key off).
pub(crate) struct Retiring {
    dir: PathBuf,
    old: NodeId,
    /// The seq of the rotation on the old chain.
    seq: u64,
    done: watch::Sender<bool>,
}

impl Retiring {
    /// Watches for `old`'s chain up to its height in `replica` (its rotation); `run` stops when
    /// the returned receiver says so.
    pub(crate) fn new(
        dir: PathBuf,
        old: &Identity,
        replica: &Replica,
    ) -> (Retiring, watch::Receiver<bool>) {
        let (done, rx) = watch::channel(false);
        let old = old.id();
        let seq = replica.lattice().height(&old);
        (
            Retiring {
                dir,
                old,
                seq,
                done,
            },
            rx,
        )
    }

    /// True (and the key deleted) if `summary`, a peer's, holds the rotation.
    pub(crate) fn seen(&self, summary: &Summary) -> bool {
        let holds = summary
            .chains
            .iter()
            .any(|c| c.author == self.old && c.seq >= self.seq);
        if !holds {
            return false;
        }
        match lcloud_store::rotate::announced(&self.dir) {
            Ok(()) => {
                tracing::info!("a peer holds the key rotation: the old key is retired");
                let _ = self.done.send(true);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the retired key");
                false
            }
        }
    }
}

/// Connects under `old` to `peers` and pushes `exps` until one peer stores them (then deletes
/// the retired key in `dir`), the node's core sees a peer holding them (`done`), or it gives
/// up after [`GIVE_UP`] (the next start tries again).
pub(crate) async fn run(
    dir: PathBuf,
    old: Identity,
    cloud: Id,
    peers: Vec<Multiaddr>,
    exps: Vec<Vec<u8>>,
    mut done: watch::Receiver<bool>,
) {
    if peers.is_empty() || exps.is_empty() {
        tracing::warn!(
            "this node's key was rotated, and no --peer is given to tell: peers learn the rotation \
             only from a bundle (`lcloud export`, then `lcloud import` on a member's node)"
        );
        return;
    }
    let net = lcloud_net::start(lcloud_net::Config {
        secret: old.key().to_bytes(),
        listen: Vec::new(),
        peers,
        cloud: *cloud.as_bytes(),
        redial_every: Duration::from_secs(2),
        mdns: false,
        gate: lcloud_net::Gate::default(),
    });
    let mut net = match net {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not announce the key rotation");
            return;
        }
    };
    let request = Request::Push {
        cloud,
        exps: exps.into_iter().map(ByteBuf).collect(),
    };
    let done = tokio::time::timeout(GIVE_UP, async {
        loop {
            let ev = tokio::select! {
                ev = net.events.recv() => ev,
                _ = done.wait_for(|d| *d) => return false,
            };
            let Some(ev) = ev else { return false };
            match ev {
                Event::Connected(peer) => {
                    let ask = Command::Request {
                        peer,
                        request: request.clone(),
                    };
                    if net.commands.send(ask).await.is_err() {
                        return false;
                    }
                }
                Event::Response {
                    peer,
                    response: Response::Pushed { rejected: 0, .. },
                } => {
                    tracing::info!(%peer, "a peer has the key rotation: the old key is retired");
                    return true;
                }
                _ => {}
            }
        }
    })
    .await;
    if done == Ok(true)
        && let Err(e) = lcloud_store::rotate::announced(&dir)
    {
        tracing::warn!(error = %e, "could not delete the retired key");
    }
}
