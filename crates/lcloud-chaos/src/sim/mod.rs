//! The simulation backend: N nodes of the real core (replica, validation, the sync protocol
//! with every message encoded and decoded) in one process, with a simulated network and disk,
//! and every fault drawn from one seed. The same seed gives the same trace.
//!
//! Each node keeps a *disk*: every experience it stored, in order; a write is acknowledged
//! once it is on its node's disk. A crash loses the node's memory, not its disk; a restart
//! rebuilds the replica from the disk. One write in a hundred loses its acknowledgement (the
//! node crashes after the write is durable): the history records it as indeterminate. The network delays every message 1–30 ms (so messages
//! overtake each other), drops some, duplicates some, and obeys the current partition.
//!
//! Two seeds in eight also run a scenario (see [`Scenario`]): a node restored from another
//! node's backup forks that node's chain in a cloud that quarantines forks, or a node that is
//! not yet a member is refused by its peers and then granted membership. Nodes refuse
//! non-members' requests and lift the refusal when their membership changes, as `lcloud node`
//! does, and a client's write goes through the same refusals as `lcloud set`
//! ([`Replica::check_writes`]): a write the fold would leave out is failed, never acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_consensus::SigningKey;

use lcloud_core::{
    Experience, ForkPolicy, Genesis, Id, NodeId, Op, Path, Replica, Session, Value, Verified,
};

use crate::check::{self, CounterReport, SetReport};

mod faults;
mod finality;
mod net;
mod scenario;

use crate::history::{Event, F, Kind};
pub use finality::FinalityReport;
use net::Msg;
pub use scenario::Scenario;

const MS: u64 = 1_000_000;
/// Length of the write phase (simulated).
const WRITE_PHASE: u64 = 60_000 * MS;
/// Longest wait for convergence after the final heal (simulated).
const CONVERGE_MAX: u64 = 60_000 * MS;
/// Anti-entropy period of each node.
const SYNC_EVERY: u64 = 200 * MS;

/// One run's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Everything random comes from this.
    pub seed: u64,
    /// Nodes (each with one client).
    pub nodes: usize,
    /// Client writes in all.
    pub writes: usize,
    /// Faults (partitions, heals, crashes, restarts) during the write phase.
    pub faults: usize,
    /// The negative control: increments written as last-writer-wins registers (read, add one,
    /// set), which loses concurrent increments. The checkers must catch it.
    pub broken_counter: bool,
    /// Percent of messages dropped / duplicated.
    pub drop_pct: u64,
    /// Percent of messages duplicated.
    pub dup_pct: u64,
    /// What the seed does besides writes and faults.
    pub scenario: Scenario,
}

impl Config {
    /// Whether the cloud is members-only (so it has finality to watch): the membership
    /// scenarios, and two seeds in eight of the faults-only ones. A node that loses its disk
    /// loses its key, and would need a new grant, so those seeds lose no disk.
    pub fn members_only(&self) -> bool {
        matches!(self.scenario, Scenario::Grant | Scenario::Revoke)
            || (self.scenario == Scenario::Faults && matches!(self.seed % 8, 2 | 4))
    }

    /// The CI tier's shape for one seed.
    pub fn ci(seed: u64) -> Config {
        Config {
            seed,
            nodes: 5,
            writes: 1000,
            faults: 80,
            broken_counter: false,
            drop_pct: 3,
            dup_pct: 2,
            scenario: Scenario::of_seed(seed),
        }
    }
}

/// What one run found.
#[derive(Debug)]
pub struct Outcome {
    /// The clients' history.
    pub history: Vec<Event>,
    /// The set checker's report.
    pub set: SetReport,
    /// The counter checker's report.
    pub counter: CounterReport,
    /// Same heads and root on every node at the end.
    pub converged: bool,
    /// Simulated nanoseconds from the final heal until converged.
    pub t_conv: u64,
    /// Faults applied (partitions, heals, crashes, restarts).
    pub faults: usize,
    /// Messages sent, dropped and duplicated by the network.
    pub messages: (u64, u64, u64),
    /// BLAKE3 of the history and the final roots: equal seeds give equal traces.
    pub trace: String,
    /// Restarts with a lost disk (amnesia).
    pub amnesia: usize,
    /// Acknowledged writes destroyed with a lost disk before any peer had them, or written on
    /// a chain that forked before the writer knew (set aside by the checkers as
    /// indeterminate; everything else must survive).
    pub destroyed: usize,
    /// Client writes the node refused (a quarantined chain, not a member).
    pub refused_writes: usize,
    /// Times a node refused a peer's request for not being a member, and times a refusal
    /// was lifted because the peer became one.
    pub refused_peers: (usize, usize),
    /// Authors whose chain forked, as the first node sees them at the end.
    pub forked: usize,
    /// Acknowledged writes of a removed member that the fold leaves out (set aside by the
    /// checkers as indeterminate).
    pub revoked: usize,
    /// Causal stability, watched during the run (members-only clouds).
    pub finality: FinalityReport,
}

impl Outcome {
    /// No lost, unexpected or duplicated write, counters in bounds, converged, and finality
    /// never claimed for something a later experience does not follow.
    pub fn valid(&self) -> bool {
        self.set.valid() && self.counter.valid() && self.converged && self.finality.valid()
    }

    /// The scenario happened: the chain forked (and writes were refused after), or the
    /// non-member was refused and then let in.
    pub fn scenario_happened(&self, scenario: Scenario) -> bool {
        match scenario {
            Scenario::Faults => true,
            Scenario::Fork => self.forked == 1 && self.refused_writes > 0,
            Scenario::Grant => self.refused_peers.0 > 0 && self.refused_peers.1 > 0,
            Scenario::Revoke => self.revoked > 0 && self.refused_peers.0 > 0,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

struct Node {
    key: SigningKey,
    /// `None` while crashed.
    replica: Option<Replica>,
    disk: Vec<Vec<u8>>,
    /// The ids of what the disk holds.
    ids: BTreeSet<Id>,
    /// Writes this node acknowledged: the history index of the `ok` and the experience.
    acked: Vec<(usize, Id)>,
    /// Times the replica was rebuilt from the disk.
    restarts: u64,
}

struct World {
    cfg: Config,
    rng: Rng,
    now: u64,
    genesis: Verified<Experience>,
    nodes: Vec<Node>,
    queue: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    blocked: BTreeSet<(usize, usize)>,
    history: Vec<Event>,
    messages: (u64, u64, u64),
    /// Acknowledged writes whose only copy was on a disk that was lost (history indices).
    destroyed: BTreeSet<usize>,
    /// Disks lost.
    amnesia: usize,
    /// Per (node, peer): the node's sync session with that peer.
    sessions: BTreeMap<(usize, usize), Session>,
    /// (n, m): node n refuses node m (not a member); no message passes either way.
    refused: BTreeSet<(usize, usize)>,
    /// Per node: grants its replica held when it last looked at its refusals.
    grants_seen: Vec<usize>,
    /// Every acknowledged write: history index, author, seq, and whether the writer's replica
    /// knew then that the author's chain was quarantined.
    acks: Vec<(usize, NodeId, u64, bool)>,
    refused_writes: usize,
    refused_peers: (usize, usize),
    /// The node the creator removed ([`Scenario::Revoke`]): left out of convergence.
    removed: Option<usize>,
}

fn set_path() -> Path {
    Path::from(vec!["s".into()])
}

fn counter_path() -> Path {
    Path::from(vec!["c".into()])
}

impl World {
    /// Appends one event of node `n`'s client to the history.
    fn record(&mut self, kind: Kind, n: usize, f: F, value: i64, time: u64) {
        self.history.push(Event {
            kind,
            process: n as u32,
            f,
            value,
            time,
        });
    }

    fn client_write(&mut self, n: usize, f: F, value: i64) {
        let time = self.now;
        self.record(Kind::Invoke, n, f, value, time);
        let broken = self.cfg.broken_counter;
        let node = &mut self.nodes[n];
        let Some(replica) = node.replica.as_mut() else {
            self.record(Kind::Fail, n, f, value, time);
            return;
        };
        let op = match f {
            F::Add => Op::Add {
                path: set_path(),
                value: Value::Int(value),
            },
            F::Incr if broken => {
                let current = match replica.state().doc.materialize(&counter_path()) {
                    Some(Value::Int(v)) => v,
                    _ => 0,
                };
                Op::Set {
                    path: counter_path(),
                    value: Value::Int(current + value),
                }
            }
            F::Incr => Op::Incr {
                path: counter_path(),
                by: value,
            },
        };
        // What `lcloud set` does: refuse a write the fold would leave out, and a non-member's.
        let author = NodeId(node.key.verification_key().to_bytes());
        let refused = replica.check_writes(&author, &[std::slice::from_ref(&op)])[0].is_err();
        let knew = replica.quarantined(&author).is_some();
        let written = if refused {
            None
        } else {
            replica.write(&node.key, vec![op]).ok()
        };
        let Some(exp) = written else {
            self.refused_writes += 1;
            self.record(Kind::Fail, n, f, value, time);
            return;
        };
        let bytes = exp.to_bytes();
        node.disk.push(bytes.clone());
        node.ids.insert(exp.id());
        // Now and then the node dies after the write is durable and before the client hears
        // back: the client cannot know, so the outcome is indeterminate (Jepsen's `info`).
        let lost_ack = self.rng.chance(1);
        let kind = if lost_ack { Kind::Info } else { Kind::Ok };
        self.record(kind, n, f, value, time);
        if lost_ack {
            self.crash(n);
            return;
        }
        let at = self.history.len() - 1;
        self.nodes[n].acked.push((at, exp.id()));
        self.acks.push((at, author, exp.seq(), knew));
        self.broadcast(n, bytes);
    }

    fn set_of(&self, n: usize) -> Option<Vec<i64>> {
        let replica = self.nodes[n].replica.as_ref()?;
        Some(match replica.state().doc.materialize(&set_path()) {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    fn counter_of(&self, n: usize) -> i64 {
        match self.nodes[n]
            .replica
            .as_ref()
            .and_then(|r| r.state().doc.materialize(&counter_path()))
        {
            Some(Value::Int(v)) => v,
            _ => 0,
        }
    }

    /// The nodes judged: all but a removed member, which is shut out and never converges.
    fn judged(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|n| self.removed != Some(*n))
    }

    fn roots_and_heads(&self) -> (Vec<Option<Id>>, Vec<Option<Vec<Id>>>) {
        self.judged()
            .map(|n| &self.nodes[n])
            .map(|n| {
                let r = n.replica.as_ref();
                (
                    r.map(|r| r.root()),
                    r.map(|r| r.lattice().heads().iter().copied().collect()),
                )
            })
            .unzip()
    }

    /// Runs the queue up to `until`, with anti-entropy ticks.
    fn run_until(&mut self, until: u64, next_sync: &mut u64) {
        loop {
            let next_msg = self.queue.keys().next().map(|(at, _)| *at);
            let next = match next_msg {
                Some(t) if t < *next_sync => t,
                _ => *next_sync,
            };
            if next >= until {
                self.now = until;
                return;
            }
            self.now = next;
            if next == *next_sync {
                *next_sync += SYNC_EVERY;
                let n = self.nodes.len();
                for i in 0..n {
                    if self.nodes[i].replica.is_some() {
                        let j = (i + 1 + self.rng.below(n as u64 - 1) as usize) % n;
                        self.start_sync(i, j);
                        self.attest(i);
                    }
                }
            } else {
                let (key, _) = self.queue.first_key_value().expect("a message");
                let key = *key;
                let msg = self.queue.remove(&key).expect("present");
                self.deliver(msg);
            }
        }
    }
}

/// Runs one seed.
pub fn run(cfg: Config) -> Outcome {
    let mut rng = Rng(cfg.seed);
    let keys: Vec<SigningKey> = (0..cfg.nodes)
        .map(|_| {
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            SigningKey::from(seed)
        })
        .collect();
    let mut rules = Genesis::open(format!("chaos-{}", cfg.seed));
    match cfg.scenario {
        Scenario::Faults if cfg.members_only() => {
            rules.members = Some(
                keys[1..]
                    .iter()
                    .map(|k| NodeId(k.verification_key().to_bytes()))
                    .collect(),
            );
        }
        Scenario::Faults => {}
        Scenario::Fork => rules.fork_policy = ForkPolicy::Quarantine,
        Scenario::Revoke => {
            rules.members = Some(
                keys[1..]
                    .iter()
                    .map(|k| NodeId(k.verification_key().to_bytes()))
                    .collect(),
            );
        }
        Scenario::Grant => {
            rules.members = Some(
                keys[1..cfg.nodes - 1]
                    .iter()
                    .map(|k| NodeId(k.verification_key().to_bytes()))
                    .collect(),
            );
        }
    }
    let genesis = Experience::create_genesis(&keys[0], rules);
    let nodes = keys
        .into_iter()
        .map(|key| Node {
            key,
            replica: Some(Replica::new(genesis.clone()).expect("genesis")),
            disk: Vec::new(),
            ids: BTreeSet::new(),
            acked: Vec::new(),
            restarts: 0,
        })
        .collect();
    let mut w = World {
        cfg,
        rng,
        now: 0,
        genesis,
        nodes,
        queue: BTreeMap::new(),
        sessions: BTreeMap::new(),
        seq: 0,
        blocked: BTreeSet::new(),
        history: Vec::new(),
        messages: (0, 0, 0),
        destroyed: BTreeSet::new(),
        amnesia: 0,
        refused: BTreeSet::new(),
        grants_seen: vec![0; cfg.nodes],
        acks: Vec::new(),
        refused_writes: 0,
        refused_peers: (0, 0),
        removed: None,
    };
    let (mut event_at, last) = match cfg.scenario {
        Scenario::Faults => (None, cfg.nodes - 1),
        Scenario::Fork => (Some(WRITE_PHASE / 3), cfg.nodes - 1),
        Scenario::Grant => (Some(WRITE_PHASE / 4), cfg.nodes - 1),
        Scenario::Revoke => (Some(WRITE_PHASE / 3), cfg.nodes - 1),
    };
    // The plan: writes and faults at random times of the write phase.
    let mut plan: Vec<(u64, Option<usize>)> = Vec::with_capacity(cfg.writes + cfg.faults);
    for i in 0..cfg.writes {
        plan.push((w.rng.below(WRITE_PHASE), Some(i)));
    }
    for _ in 0..cfg.faults {
        plan.push((w.rng.below(WRITE_PHASE), None));
    }
    plan.sort();
    let mut next_sync = SYNC_EVERY;
    let mut faults = 0;
    let mut visible: BTreeMap<i64, u64> = BTreeMap::new();
    let mut pending: BTreeSet<i64> = BTreeSet::new();
    let mut next_check = 50 * MS;
    let mut watch = finality::Watch::default();
    let check_visibility =
        |w: &World, pending: &mut BTreeSet<i64>, visible: &mut BTreeMap<i64, u64>| {
            let sets: Option<Vec<BTreeSet<i64>>> = w
                .judged()
                .map(|n| w.set_of(n).map(|s| s.into_iter().collect()))
                .collect();
            let Some(sets) = sets else { return };
            pending.retain(|v| {
                if sets.iter().all(|s| s.contains(v)) {
                    visible.insert(*v, w.now);
                    false
                } else {
                    true
                }
            });
        };
    for (at, what) in plan {
        while next_check < at {
            w.run_until(next_check, &mut next_sync);
            check_visibility(&w, &mut pending, &mut visible);
            if next_check.is_multiple_of(500 * MS) {
                watch.observe(&w);
            }
            next_check += 50 * MS;
        }
        w.run_until(at, &mut next_sync);
        if event_at.is_some_and(|t| t <= at) {
            event_at = None;
            match cfg.scenario {
                Scenario::Faults => {}
                Scenario::Fork => w.restore_backup(0, last),
                Scenario::Grant => w.grant(last),
                Scenario::Revoke => w.revoke(last),
            }
        }
        match what {
            Some(i) => {
                let n = i % cfg.nodes;
                if i % 2 == 0 {
                    let element = i as i64;
                    w.client_write(n, F::Add, element);
                    if w.history.last().map(|e| e.kind) == Some(Kind::Ok) {
                        pending.insert(element);
                    }
                } else {
                    w.client_write(n, F::Incr, 1);
                }
            }
            None => faults += usize::from(w.fault()),
        }
    }
    // The final heal: every link back, every node up; then wait for convergence.
    w.run_until(WRITE_PHASE, &mut next_sync);
    w.blocked.clear();
    for n in 0..cfg.nodes {
        w.restart(n);
    }
    let healed = w.now;
    let mut converged = false;
    let mut t_conv = CONVERGE_MAX;
    let mut t = healed;
    while t < healed + CONVERGE_MAX {
        t += 10 * MS;
        w.run_until(t, &mut next_sync);
        if t >= next_check {
            check_visibility(&w, &mut pending, &mut visible);
            next_check = t + 50 * MS;
        }
        let (roots, heads) = w.roots_and_heads();
        if check::converged(&heads, &roots) {
            converged = true;
            t_conv = t - healed;
            break;
        }
    }
    check_visibility(&w, &mut pending, &mut visible);
    watch.observe(&w);
    let finality = watch.finish(&w);
    // Writes acknowledged on a chain the fold now leaves out, before the writer could know it
    // forked, were destroyed by the restored backup; one acknowledged after it knew is lost.
    // Two copies of one node that write the same op on the same state sign the same
    // experience (Ed25519 signatures are deterministic): two acknowledgements, one write. The
    // second is the restored backup's doing too.
    let forked = w.nodes[0]
        .replica
        .as_ref()
        .map_or(0, |r| r.lattice().forked_authors().len());
    if let Some(replica) = w.nodes[0].replica.as_ref() {
        let mut signed = BTreeSet::new();
        for (at, author, seq, knew) in &w.acks {
            let quarantined = replica.quarantined(author).is_some_and(|s| *seq >= s);
            if (!knew && quarantined) || !signed.insert((*author, *seq)) {
                w.destroyed.insert(*at);
            }
        }
    }
    // A removed member's acknowledged writes that the fold leaves out (concurrent with its
    // removal), or that never left it (its peers shut it out), are the removal's doing.
    let mut revoked = 0;
    if let (Some(gone), Some(replica)) = (w.removed, w.nodes[0].replica.as_ref()) {
        for (at, id) in &w.nodes[gone].acked {
            if replica
                .lattice()
                .idx(id)
                .is_none_or(|i| replica.lattice().is_void(i))
            {
                w.destroyed.insert(*at);
                revoked += 1;
            }
        }
    }
    let finals: Vec<Vec<i64>> = w
        .judged()
        .map(|n| w.set_of(n).unwrap_or_default())
        .collect();
    let counters: Vec<i64> = w.judged().map(|n| w.counter_of(n)).collect();
    // Writes destroyed with a lost disk are judged as indeterminate: they may or may not
    // have reached a peer before.
    let judged: Vec<Event> = w
        .history
        .iter()
        .enumerate()
        .map(|(at, e)| {
            let mut e = e.clone();
            if w.destroyed.contains(&at) {
                e.kind = Kind::Info;
            }
            e
        })
        .collect();
    let set = check::set_full(&judged, &finals, &visible);
    let counter = check::counter(&judged, &counters);
    let mut hasher = blake3::Hasher::new();
    hasher.update(crate::history::to_json_lines(&w.history).as_bytes());
    for root in w.roots_and_heads().0.into_iter().flatten() {
        hasher.update(root.as_bytes());
    }
    hasher.update(&t_conv.to_le_bytes());
    Outcome {
        history: w.history,
        set,
        counter,
        converged,
        t_conv,
        faults,
        messages: w.messages,
        trace: hasher.finalize().to_hex().to_string(),
        amnesia: w.amnesia,
        destroyed: w.destroyed.len(),
        refused_writes: w.refused_writes,
        refused_peers: w.refused_peers,
        forked,
        revoked,
        finality,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_lose_nothing_converge_and_replay_identically() {
        for seed in [11, 12] {
            let o = run(Config::ci(seed));
            assert!(o.valid(), "seed {seed}: {:?} {:?}", o.set, o.counter);
            // Half the writes are adds; a node is down (its client's writes fail) for a
            // fifth to a half of the run, depending on the seed's schedule.
            assert!(
                o.set.acknowledged > 250,
                "seed {seed}: at least half the adds are acknowledged"
            );
            assert!(o.faults > 40, "seed {seed}: faults happened");
            assert!(o.t_conv <= 5_000 * MS, "seed {seed}: T_conv {}", o.t_conv);
            assert_eq!(
                run(Config::ci(seed)).trace,
                o.trace,
                "seed {seed} replays exactly"
            );
        }
    }

    /// Nodes that lose their disk (and key) come back as new nodes, recover everything from
    /// their peers, and every acknowledged write some peer held survives.
    #[test]
    fn a_node_that_lost_its_disk_recovers_from_its_peers() {
        // The first seeds whose faults include a lost disk (about one in six).
        let lost: Vec<Outcome> = (1..=40)
            .map(|seed| run(Config::ci(seed)))
            .filter(|o| o.amnesia >= 1)
            .take(2)
            .collect();
        assert_eq!(lost.len(), 2, "two of the first 40 seeds lose a disk");
        for o in lost {
            assert!(o.valid(), "{:?} {:?}", o.set, o.counter);
        }
    }

    /// In a members-only cloud under partitions and crashes, the stable frontier is watched
    /// all along: it grows, never moves back, never claims what a later write does not
    /// follow, and every node ends with the same one; checkpoints are attested, become
    /// final, and every node folds their attested roots.
    #[test]
    fn finality_is_watched_under_faults_and_holds() {
        let o = run(Config::ci(2));
        assert!(o.finality.watched, "seed 2 is members-only");
        assert!(o.finality.observations > 100);
        assert!(o.finality.stable > o.finality.held / 4, "{:?}", o.finality);
        assert!(
            o.finality.finals >= 1,
            "checkpoints attested and final: {:?}",
            o.finality
        );
        assert!(o.valid(), "{:?}", o.finality.violations);
    }

    /// The negative control: increments as last-writer-wins registers lose concurrent
    /// increments, and the counter checker reports them (while the nodes still converge).
    #[test]
    fn a_last_writer_wins_counter_is_caught() {
        let o = run(Config {
            broken_counter: true,
            ..Config::ci(5)
        });
        assert!(o.converged);
        assert!(!o.counter.valid(), "{:?}", o.counter);
        assert!(
            o.counter
                .out_of_bounds
                .iter()
                .all(|(_, v)| *v < o.counter.lower)
        );
    }
}
