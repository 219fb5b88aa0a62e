//! The faults the simulation injects: crashes, lost disks, restarts, and the partitions,
//! delays and drops of [`World::fault`], all drawn from the seed.

use ed25519_consensus::SigningKey;
use lcloud_core::{Replica, revalidate_stored};

use super::World;

impl World {
    pub(super) fn crash(&mut self, n: usize) {
        self.nodes[n].replica = None;
        // Its sessions were in memory; its peers' requests to it fail (see `net`).
        self.sessions.retain(|(a, _), _| *a != n);
        // A node keeps its refusals in memory: a restart forgets them.
        self.refused.retain(|(a, _)| *a != n);
        self.grants_seen[n] = 0;
    }

    /// Amnesia: the node crashes and its disk is lost, its identity key with it (the key lives
    /// in the node's directory). It comes back as a new node that has only the genesis and
    /// recovers the rest from its peers. Acknowledged writes whose only copy was on that disk
    /// are destroyed by the fault: they are set aside (`destroyed`), not counted as lost.
    pub(super) fn amnesia(&mut self, n: usize) {
        self.crash(n);
        self.amnesia += 1;
        // What survives is what the other disks hold and can admit: an experience of this
        // node that a peer holds, but whose predecessor only this disk held, can never be
        // admitted anywhere again, so it is destroyed too.
        let mut union = Replica::new(self.genesis.clone()).expect("genesis");
        let cloud = union.cloud();
        for (m, node) in self.nodes.iter().enumerate() {
            if m == n {
                continue;
            }
            for bytes in &node.disk {
                if let Ok(exp) = revalidate_stored(bytes, &cloud) {
                    let _ = union.insert(exp);
                }
            }
        }
        let gone: Vec<usize> = self.nodes[n]
            .acked
            .iter()
            .filter(|(_, id)| !union.lattice().contains(id))
            .map(|(at, _)| *at)
            .collect();
        self.destroyed.extend(gone);
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next().to_le_bytes());
        }
        let node = &mut self.nodes[n];
        node.key = SigningKey::from(seed);
        node.disk.clear();
        node.ids.clear();
        node.acked.clear();
    }

    pub(super) fn restart(&mut self, n: usize) {
        if self.nodes[n].replica.is_some() {
            return;
        }
        let mut r = Replica::new(self.genesis.clone()).expect("genesis");
        let cloud = r.cloud();
        for bytes in &self.nodes[n].disk {
            let exp = revalidate_stored(bytes, &cloud).expect("own disk");
            r.insert(exp).expect("stored before");
        }
        self.nodes[n].replica = Some(r);
        self.nodes[n].restarts += 1;
    }

    /// A random fault; returns whether one was applied.
    pub(super) fn fault(&mut self) -> bool {
        let n = self.nodes.len();
        let all: Vec<usize> = (0..n).collect();
        let block = |w: &mut World, a: &[usize], b: &[usize], both: bool| {
            for x in a {
                for y in b {
                    if x != y {
                        w.blocked.insert((*x, *y));
                        if both {
                            w.blocked.insert((*y, *x));
                        }
                    }
                }
            }
        };
        match self.rng.below(8) {
            // Isolate one node.
            0 => {
                let i = self.rng.below(n as u64) as usize;
                block(self, &[i], &all, true);
            }
            // Two halves.
            1 => {
                let mut shuffled = all.clone();
                for k in (1..n).rev() {
                    let j = self.rng.below(k as u64 + 1) as usize;
                    shuffled.swap(k, j);
                }
                let (a, b) = shuffled.split_at(n / 2);
                block(self, a, b, true);
            }
            // Majorities ring: each node hears only its neighbours.
            2 => {
                for i in 0..n {
                    for j in 0..n {
                        let d = (i + n - j) % n;
                        if d > 1 && d < n - 1 {
                            self.blocked.insert((i, j));
                        }
                    }
                }
            }
            // One way: a group's messages to the rest are dropped, not the reverse.
            3 => {
                let k = 1 + self.rng.below(n as u64 - 1) as usize;
                let (a, b) = all.split_at(k);
                block(self, a, b, false);
            }
            // Swizzle: cut one more node off (nodes come back one by one through heal-one).
            4 => {
                let i = self.rng.below(n as u64) as usize;
                block(self, &[i], &all, true);
            }
            // Heal one node's links.
            5 => {
                let i = self.rng.below(n as u64) as usize;
                self.blocked.retain(|(a, b)| *a != i && *b != i);
            }
            // Heal everything.
            6 => self.blocked.clear(),
            // Crash a node (at most two down), or restart one.
            _ => {
                let down: Vec<usize> = (0..n)
                    .filter(|i| self.nodes[*i].replica.is_none())
                    .collect();
                if down.len() < 2 && self.rng.chance(60) {
                    let up: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
                    let i = up[self.rng.below(up.len() as u64) as usize];
                    // A node that lost its key in a members-only cloud would need a new grant.
                    if self.rng.chance(15) && !self.cfg.members_only() {
                        self.amnesia(i);
                    } else {
                        self.crash(i);
                    }
                } else if let Some(i) = down.first() {
                    self.restart(*i);
                } else {
                    return false;
                }
            }
        }
        true
    }
}
