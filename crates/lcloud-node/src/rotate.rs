//! A key rotation on a running node (`POST /api/key/rotate`, `lcloud --node URL key rotate`).
//!
//! The rotation is written like any other write of this node, signed by the old key. The
//! directory then switches to the new key, each step crash-safe ([`lcloud_store::rotate`]).
//! The core answers, then ends with [`Ended::Rotated`]: the node starts its network again under
//! the new key, with the same store, replica and API. Under the old key it tells its peers of
//! the rotation, as after a restart ([`crate::announce`]).

use lcloud_core::{Id, NodeId, Op, Replica};
use lcloud_store::{Identity, Store};
use tokio::sync::mpsc;

use super::{Msg, Node, READ_ONLY, WriteError};

/// A key rotation done.
#[derive(Clone, Debug)]
pub struct Rotated {
    /// The key that wrote the rotation and may write no more.
    pub old: NodeId,
    /// The key this node writes with now.
    pub node: NodeId,
    /// The experience that hands the old key's rights to the new one.
    pub rotation: Id,
}

/// How the core ended.
pub enum Ended {
    /// Asked to stop: the store, with everything acknowledged durable.
    Stopped(Box<Store>),
    /// Its key rotated: the node goes on under `identity` with the same store, replica and
    /// inbox, once its network has started again under the new key.
    Rotated(Box<Restart>),
}

impl Ended {
    /// The store, however the core ended.
    pub fn into_store(self) -> Store {
        match self {
            Ended::Stopped(store) => *store,
            Ended::Rotated(restart) => restart.store,
        }
    }
}

/// What the core goes on with after a key rotation.
pub struct Restart {
    /// The store.
    pub store: Store,
    /// The replica.
    pub replica: Replica,
    /// The new key.
    pub identity: Identity,
    /// The messages not yet handled.
    pub inbox: mpsc::UnboundedReceiver<Msg>,
}

impl Node {
    /// Writes the rotation of this node's key to a new one, then switches the directory to it.
    /// Returns what was done and the new identity.
    pub(crate) fn rotate_key(&mut self) -> Result<(Rotated, Identity), WriteError> {
        if self.read_only {
            return Err(WriteError::Refused(READ_ONLY.into()));
        }
        let dir = self.store.dir().to_owned();
        let unavailable = |e: lcloud_store::StoreError| WriteError::Unavailable(e.to_string());
        if lcloud_store::rotate::retired(&dir)
            .map_err(unavailable)?
            .is_some()
        {
            return Err(WriteError::Refused(
                "the previous key rotation has not reached any peer yet (its old key waits in \
                 identity.key.retired): connect this node to a peer, or hand the peers a bundle \
                 (`lcloud export`) and delete that file, before rotating again"
                    .into(),
            ));
        }
        let old = self.identity.id();
        if !self.replica.lattice().may_write(&old) {
            return Err(WriteError::Refused(
                "this node may not write in this cloud (not a member, removed, or its key \
                 already rotated), so it cannot hand its rights to a new key"
                    .into(),
            ));
        }
        let next = lcloud_store::rotate::prepare(&dir).map_err(unavailable)?;
        let written = self
            .write(vec![vec![Op::RotateKey { to: next.id() }]])
            .pop()
            .expect("one answer per write")?;
        let new = lcloud_store::rotate::finish(&dir, &self.identity, &self.replica)
            .map_err(unavailable)?
            .ok_or_else(|| {
                WriteError::Unavailable(
                    "the rotation was written, but the new key was not found to switch to; \
                     the node finishes the rotation when it starts again"
                        .into(),
                )
            })?;
        self.store.reload_signed();
        tracing::warn!(old = %old.to_hex(), node = %new.id().to_hex(), "key rotated: starting the network again under the new key");
        Ok((
            Rotated {
                old,
                node: new.id(),
                rotation: written.id,
            },
            new,
        ))
    }
}
