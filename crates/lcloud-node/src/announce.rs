//! After a key rotation (`lcloud key rotate` on a stopped node), the node's peers do not know
//! the new key, so they refuse it. The node therefore connects to its peers once more under
//! the retired key (which peers that have not seen the rotation still let in), pushes the end
//! of the old key's chain (the rotation included), and once a peer has stored it, deletes the
//! retired key. Peers that already know the rotation refuse the old key: they need nothing.

use std::path::PathBuf;
use std::time::Duration;

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{MESSAGE_BYTES_MAX, Request, Response};
use lcloud_core::{Id, Replica};
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

/// Connects under `old` to `peers` and pushes `exps` until one peer stores them (then deletes
/// the retired key in `dir`), or gives up after [`GIVE_UP`] (the next start tries again).
pub(crate) async fn run(
    dir: PathBuf,
    old: Identity,
    cloud: Id,
    peers: Vec<Multiaddr>,
    exps: Vec<Vec<u8>>,
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
        while let Some(ev) = net.events.recv().await {
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
        false
    })
    .await;
    if done == Ok(true)
        && let Err(e) = lcloud_store::rotate::announced(&dir)
    {
        tracing::warn!(error = %e, "could not delete the retired key");
    }
}
