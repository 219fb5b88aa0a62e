//! The simulated network: messages delayed 1–30 ms (so they overtake each other), dropped,
//! duplicated, held by partitions; and each node's side of the sync protocol, driven through
//! the core's [`Session`] exactly as `lcloud node` drives it (answers, push window, batch
//! sizing, follow-up rounds). A request that is lost on the way, or whose answer is, fails at
//! its sender after [`TIMEOUT`], as libp2p reports a request whose connection dropped or
//! timed out: the sender's session ends the exchange and the next one finds what was lost.

use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{Request, Response};
use lcloud_core::{Limits, Session, validate_batch};

use super::{MS, World};

/// How long a lost request takes to fail at its sender.
const TIMEOUT: u64 = 500 * MS;

/// Small batches and window, so that paging, doubling and backpressure are exercised.
pub(super) const LIMITS: Limits = Limits {
    first_bytes: 2 * 1024,
    max_bytes: 16 * 1024,
    window: 4,
};

/// What travels between two nodes.
#[derive(Clone)]
pub(super) enum Wire {
    /// A request (sync or push), answered by a [`Wire::Resp`].
    Req(Vec<u8>),
    /// The answer to a request.
    Resp(Vec<u8>),
    /// A gossiped experience: no answer.
    Gossip(Vec<u8>),
    /// A request of the receiver's to the sender was lost (delivered locally, never dropped).
    Failed,
}

/// A message in flight, with the incarnations of both ends when it was sent: a node that
/// crashed since (its connections closed) never sees it.
#[derive(Clone)]
pub(super) struct Msg {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) wire: Wire,
    lives: (u64, u64),
}

impl World {
    fn life(&self, n: usize) -> u64 {
        self.nodes[n].restarts
    }

    fn enqueue(&mut self, at: u64, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), msg);
    }

    /// The requester of a lost request or answer hears of it after [`TIMEOUT`].
    fn fail(&mut self, requester: usize, responder: usize) {
        let lives = (self.life(responder), self.life(requester));
        let at = self.now + TIMEOUT;
        self.enqueue(
            at,
            Msg {
                from: responder,
                to: requester,
                wire: Wire::Failed,
                lives,
            },
        );
    }

    pub(super) fn send(&mut self, from: usize, to: usize, wire: Wire) {
        self.messages.0 += 1;
        let refused = self.refused.contains(&(from, to)) || self.refused.contains(&(to, from));
        if refused || self.blocked.contains(&(from, to)) || self.rng.chance(self.cfg.drop_pct) {
            self.messages.1 += 1;
            match wire {
                Wire::Req(_) => self.fail(from, to),
                Wire::Resp(_) => self.fail(to, from),
                Wire::Gossip(_) | Wire::Failed => {}
            }
            return;
        }
        let copies = if self.rng.chance(self.cfg.dup_pct) {
            self.messages.2 += 1;
            2
        } else {
            1
        };
        let lives = (self.life(from), self.life(to));
        for _ in 0..copies {
            let at = self.now + (1 + self.rng.below(30)) * MS;
            let msg = Msg {
                from,
                to,
                wire: wire.clone(),
                lives,
            };
            self.enqueue(at, msg);
        }
    }

    /// Node `n`'s session with peer `m`, started when first needed (a crash forgets them).
    fn session(&mut self, n: usize, m: usize) -> &mut Session {
        self.sessions
            .entry((n, m))
            .or_insert_with(|| Session::new(LIMITS))
    }

    /// Sends what node `n`'s session with `m` has to send.
    fn poll(&mut self, n: usize, m: usize) {
        let Some(replica) = self.nodes[n].replica.as_ref() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&(n, m)) else {
            return;
        };
        let mut requests = Vec::new();
        while let Some(request) = session.poll_request(replica.lattice()) {
            requests.push(request.to_bytes());
        }
        for bytes in requests {
            self.send(n, m, Wire::Req(bytes));
        }
    }

    /// Node `from` starts an exchange with `to` (unless one is in flight).
    pub(super) fn start_sync(&mut self, from: usize, to: usize) {
        if self.nodes[from].replica.is_none() {
            return;
        }
        self.session(from, to).start();
        self.poll(from, to);
    }

    /// Gossips a new experience of node `n` to every other node.
    pub(super) fn broadcast(&mut self, n: usize, bytes: Vec<u8>) {
        for to in 0..self.nodes.len() {
            if to != n {
                self.send(n, to, Wire::Gossip(bytes.clone()));
            }
        }
    }

    /// Validates and stores what a peer sent (on the node's disk first: durable).
    fn receive(&mut self, n: usize, exps: &[ByteBuf]) {
        let node = &mut self.nodes[n];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let cloud = replica.cloud();
        let inputs: Vec<&[u8]> = exps.iter().map(|b| b.0.as_slice()).collect();
        for (r, bytes) in validate_batch(&inputs, &cloud).into_iter().zip(inputs) {
            let Ok(exp) = r else { continue };
            if replica.lattice().contains(&exp.id()) {
                continue;
            }
            let id = exp.id();
            if let Ok(out) = replica.insert(exp)
                && !out.duplicate
            {
                node.disk.push(bytes.to_vec());
                node.ids.insert(id);
            }
        }
        self.membership_changed(n);
    }

    pub(super) fn deliver(&mut self, msg: Msg) {
        let Msg {
            from,
            to,
            wire,
            lives,
        } = msg;
        let up = |w: &World, n: usize, life: u64| w.nodes[n].replica.is_some() && w.life(n) == life;
        if !up(self, to, lives.1) {
            // Crashed, or restarted since: the connection is gone, and so is the message.
            if matches!(wire, Wire::Req(_)) && up(self, from, lives.0) {
                self.fail(from, to);
            }
            return;
        }
        if matches!(wire, Wire::Failed) {
            if let Some(session) = self.sessions.get_mut(&(to, from)) {
                session.handle_failure();
            }
            return;
        }
        if !matches!(wire, Wire::Resp(_)) && !self.allowed(to, from) {
            // The node's `refuse`: a non-member is disconnected until it becomes one.
            self.refused.insert((to, from));
            self.refused_peers.0 += 1;
            if matches!(wire, Wire::Req(_)) {
                self.fail(from, to);
            }
            return;
        }
        match wire {
            Wire::Req(bytes) => match Request::from_bytes(&bytes).expect("own encoding") {
                Request::Sync { summary } => {
                    let replica = self.nodes[to].replica.as_ref().expect("up");
                    let lattice = replica.lattice();
                    let answer = self
                        .sessions
                        .entry((to, from))
                        .or_insert_with(|| Session::new(LIMITS))
                        .handle_sync(lattice, &summary);
                    self.send(to, from, Wire::Resp(answer.to_bytes()));
                    // What the answer left is pushed after it.
                    self.poll(to, from);
                }
                Request::Push { exps, .. } => {
                    self.receive(to, &exps);
                    let ack = Response::Pushed {
                        new: 0,
                        rejected: 0,
                    };
                    self.send(to, from, Wire::Resp(ack.to_bytes()));
                }
            },
            Wire::Resp(bytes) => match Response::from_bytes(&bytes).expect("own encoding") {
                Response::Sync {
                    summary,
                    exps,
                    more,
                } => {
                    self.receive(to, &exps);
                    let replica = self.nodes[to].replica.as_ref().expect("up");
                    let lattice = replica.lattice();
                    if let Some(session) = self.sessions.get_mut(&(to, from)) {
                        session.handle_sync_answer(lattice, &summary, more);
                    }
                    self.poll(to, from);
                }
                Response::Pushed { .. } => {
                    if let Some(session) = self.sessions.get_mut(&(to, from)) {
                        session.handle_pushed();
                    }
                    self.poll(to, from);
                }
                Response::Refused { .. } => {
                    if let Some(session) = self.sessions.get_mut(&(to, from)) {
                        session.handle_failure();
                    }
                }
            },
            Wire::Gossip(bytes) => self.receive(to, &[ByteBuf(bytes)]),
            Wire::Failed => {}
        }
    }
}
