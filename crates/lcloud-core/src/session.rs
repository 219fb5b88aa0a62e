//! One peer's sync session, without I/O: the state a node keeps for each peer between the
//! messages of [`crate::sync`] (whether our exchange is in flight, what the peer lacks and is
//! still to be pushed, how many pushes are unanswered, how large the next one is, which
//! authors this exchange has described), as quinn-proto keeps a connection's protocol state
//! apart from the driver that moves its bytes.
//!
//! A driver (the node over libp2p, the chaos simulation, the core's sync tests, the benchmark)
//! feeds the session what arrived through `handle_*` and sends what [`Session::poll_request`]
//! returns until it returns `None`; the experiences a message carries go into the driver's
//! replica by its own path (validation, storage) before the session hears of the message.
//!
//! The rules, the same for every driver:
//!
//! - One [`Request::Sync`] of ours is in flight at a time; [`Session::start`] while one is
//!   waits for it to end. Pushes the window lets go are sent before it.
//! - A peer's `Sync` is answered with the first batch of what it lacks (at most
//!   [`Limits::first_bytes`]); the rest is pushed, and pushes go out once the answer is sent
//!   (sent before it, they would reach the peer ahead of the batch they build on).
//! - At most [`Limits::window`] pushes are unanswered: the answers are the backpressure. Each
//!   push doubles the size of the one before, from `first_bytes` up to [`Limits::max_bytes`],
//!   so the peer starts storing after a few KiB rather than after a whole batch.
//! - An answer that was complete (`more == false`) and left chains that disagree where neither
//!   side said where is followed by one more round describing our branches of them, at most
//!   once per author and exchange ([`sync::follow_up`]).
//! - A failed or refused request ends the exchange: what was lost is found again by the next.

use std::collections::BTreeSet;

use crate::codec::ByteBuf;
use crate::id::NodeId;
use crate::lattice::{Idx, Lattice};
use crate::sync::{self, Request, Response, Summary};

/// How a session sizes and paces what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The first batch of a catch-up (the sync answer and the first push), in bytes.
    pub first_bytes: usize,
    /// The largest push, in bytes (at most [`sync::BATCH_BYTES`]).
    pub max_bytes: usize,
    /// Pushes sent and not yet answered, at most.
    pub window: u32,
}

impl Default for Limits {
    /// What `lcloud node run` uses: a 64 KiB first batch (the first experience is stored
    /// after ~5–10 ms instead of ~100 ms), 1 MiB pushes, eight in flight (so the peer always
    /// validates one batch while it stores the one before; docs/BENCHMARKS.md).
    fn default() -> Limits {
        Limits {
            first_bytes: 64 << 10,
            max_bytes: sync::BATCH_BYTES,
            window: 8,
        }
    }
}

/// One peer's sync session (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Session {
    limits: Limits,
    /// What the peer lacks and is still to be pushed, in arrival order (dependencies first).
    pushing: BTreeSet<Idx>,
    /// Pushes sent and not yet answered.
    in_flight: u32,
    /// The size of the next push (0: the next catch-up starts at `first_bytes`).
    push_bytes: usize,
    /// Our `Sync` is in flight.
    syncing: bool,
    /// A `Sync` to send, describing the branches of these authors.
    to_sync: Option<BTreeSet<NodeId>>,
    /// Authors whose branches this exchange has described (the one in flight included).
    described: BTreeSet<NodeId>,
}

impl Session {
    /// A session with nothing in flight.
    pub fn new(limits: Limits) -> Session {
        Session {
            limits,
            ..Session::default()
        }
    }

    /// Starts an exchange: the next [`Session::poll_request`] sends our summary, unless an
    /// exchange of ours is in flight or about to be sent.
    pub fn start(&mut self) {
        if !self.syncing && self.to_sync.is_none() {
            self.described.clear();
            self.to_sync = Some(BTreeSet::new());
        }
    }

    /// Answers the peer's `Sync`: our summary (describing the chains that disagree) and the
    /// first batch of what it lacks; the rest is queued as pushes, to poll once the answer
    /// is sent.
    pub fn handle_sync(&mut self, lattice: &Lattice, theirs: &Summary) -> Response {
        if let Some(b) = sync::behind_by(lattice, theirs) {
            return Response::Refused {
                reason: sync::behind_reason(&b),
            };
        }
        let missing = sync::missing(lattice, theirs);
        let (exps, more) = sync::batch(lattice, &missing, self.limits.first_bytes);
        if more {
            self.pushing.extend(missing[exps.len()..].iter().copied());
        }
        Response::Sync {
            summary: sync::answering(lattice, theirs),
            exps,
            more,
        }
    }

    /// The answer to our `Sync`, once the experiences it carried are in `lattice`: what the
    /// peer lacks is queued as pushes, and a complete answer that left chains disagreeing
    /// where neither side said where is followed by one more round describing them. True
    /// when such a round is queued.
    pub fn handle_sync_answer(&mut self, lattice: &Lattice, theirs: &Summary, more: bool) -> bool {
        self.syncing = false;
        if sync::behind(lattice, theirs).is_some() {
            // What it lacks is too old to merge from here (it is told when it asks).
            return false;
        }
        self.pushing.extend(sync::missing(lattice, theirs));
        if more {
            // The rest comes as pushes; the next exchange finds any disagreement left.
            return false;
        }
        let again = sync::follow_up(lattice, theirs, &self.described);
        if again.is_empty() {
            return false;
        }
        self.to_sync = Some(again);
        true
    }

    /// The peer answered one of our pushes.
    pub fn handle_pushed(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A request of ours failed (lost, timed out) or was refused: the exchange ends, and
    /// what was lost is found again by the next one.
    pub fn handle_failure(&mut self) {
        self.syncing = false;
        self.to_sync = None;
        self.in_flight = 0;
        self.push_bytes = 0;
        self.pushing.clear();
    }

    /// The lattice was rebuilt (its indices name other experiences now): forget what was to
    /// be pushed. The next exchange finds it again.
    pub fn forget_pushes(&mut self) {
        self.pushing.clear();
        self.push_bytes = 0;
    }

    /// The next request to send, if any: a push of what the peer lacks while fewer than
    /// [`Limits::window`] are unanswered, else our `Sync` when one is due (after the pushes
    /// the window lets go, so that its summary's answer counts them as held). Call until
    /// `None`.
    pub fn poll_request(&mut self, lattice: &Lattice) -> Option<Request> {
        if self.pushing.is_empty() {
            // The next catch-up starts small again.
            self.push_bytes = 0;
        }
        if self.pushing.is_empty() || self.in_flight >= self.limits.window {
            let describe = self.to_sync.take()?;
            self.syncing = true;
            let summary = Summary::describing(lattice, &describe);
            self.described.extend(describe);
            return Some(Request::Sync { summary });
        }
        let limit = self
            .push_bytes
            .clamp(self.limits.first_bytes, self.limits.max_bytes);
        self.push_bytes = (limit * 2).min(self.limits.max_bytes);
        let mut exps = Vec::new();
        let mut bytes = 0;
        while let Some(&idx) = self.pushing.first() {
            let b = lattice.get(idx).to_bytes();
            if !exps.is_empty() && bytes + b.len() > limit {
                break;
            }
            self.pushing.remove(&idx);
            bytes += b.len();
            exps.push(ByteBuf(b));
        }
        self.in_flight += 1;
        Some(Request::Push {
            cloud: lattice.cloud(),
            exps,
        })
    }

    /// Experiences still to push.
    pub fn lag(&self) -> usize {
        self.pushing.len()
    }

    /// True while nothing is in flight or waiting to be sent: the exchange is over.
    pub fn idle(&self) -> bool {
        !self.syncing && self.to_sync.is_none() && self.in_flight == 0 && self.pushing.is_empty()
    }
}
