//! What the API and the network hand the core thread, and what it answers: calls, their
//! results, the node's status, and the experiences it announces as they are stored.

use std::collections::BTreeMap;

use lcloud_core::sync::Summary;
use lcloud_core::{Id, NodeId, Op, Path, State};
use lcloud_net::{Event, Peer};
use tokio::sync::oneshot;

use super::{Checked, Rotated};
use crate::inspect::{CutText, Refused};

/// A question about the history the node answers as `lcloud_node::inspect` does.
pub enum Question {
    /// `{"changes": …}` from one cut to another (`now`, a clock, `@IDS`).
    Diff {
        /// The earlier cut.
        from: String,
        /// The later cut.
        to: String,
    },
    /// A page of the log, newest first.
    Log {
        /// Only this node's chain (alias or id prefix).
        only: Option<String>,
        /// After this cursor.
        before: Option<String>,
        /// At most this many rows.
        limit: usize,
    },
    /// The concurrent values of a register, at a cut or view.
    Conflicts(Path, crate::inspect::CutText),
    /// Who set a contract's key to its value, and what it held before.
    Writes {
        /// The contract (local name or id prefix).
        contract: String,
        /// The key in its state.
        key: String,
        /// At this cut or view.
        cut: crate::inspect::CutText,
    },
}

/// What the API asks the node.
pub enum Call {
    /// Write ops as one experience of this node.
    Write(Vec<Op>, oneshot::Sender<Result<Written, WriteError>>),
    /// Write edits (list and text edits by index among them) as one experience of this node:
    /// resolved into ops against the replica once every write before them is in it.
    Edit(
        Vec<lcloud_core::Edit>,
        oneshot::Sender<Result<Written, WriteError>>,
    ),
    /// The document at a path (`None`: nothing there).
    State(Path, oneshot::Sender<Option<serde_json::Value>>),
    /// State root, heads, frontier clock, counts.
    Status(oneshot::Sender<Status>),
    /// The state at a past cut or view (time travel), answered from the store's index when
    /// it can, else from the fold: what `lcloud state` and `lcloud root` answer.
    View(CutText, oneshot::Sender<Result<State, Refused>>),
    /// A diff, a page of the log, or a register's conflicts, as JSON.
    Ask(
        Question,
        oneshot::Sender<Result<serde_json::Value, Refused>>,
    ),
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
    /// A shallow bundle: the state at the deepest final checkpoint and everything since
    /// (`lcloud_store::shallow`), or why there is none.
    Shallow(oneshot::Sender<Result<Vec<u8>, String>>),
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
    /// A contract's state (by name or id prefix), or the value under one key of it, now or
    /// at a cut or view.
    ContractState {
        /// Its name or id prefix.
        name: String,
        /// One key of its state.
        key: Option<String>,
        /// When.
        cut: CutText,
        /// The answer.
        reply: oneshot::Sender<Result<lcloud_core::Value, Refused>>,
    },
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
