//! Random histories of writes, syncs and membership changes (removals, re-adds, admins,
//! rotations) by a few keys on 3 replicas, for the property tests of membership and
//! stability. Any key may write at any replica: a stolen key is one used at two places, so
//! forks happen too.

use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, ForkPolicy, Ledger, Op, Replica, Verified, validate};
use proptest::prelude::*;
use std::sync::Arc;

use super::*;

/// A members-only cloud of node 0 (the creator) with nodes 1 and 2 listed.
pub fn cloud() -> Verified<Experience> {
    genesis_with(Some(vec![node(1), node(2)]), ForkPolicy::Concurrent)
}

pub const KEYS: u8 = 6;

#[derive(Clone, Debug)]
pub enum Step {
    Write { by: u8, at: u8, byte: u8 },
    Change { by: u8, at: u8, what: u8, who: u8 },
    Sync { from: u8, to: u8 },
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..KEYS, 0..3u8, any::<u8>()).prop_map(|(by, at, byte)| Step::Write { by, at, byte }),
        2 => (0..KEYS, 0..3u8, 0..5u8, 0..KEYS)
            .prop_map(|(by, at, what, who)| Step::Change { by, at, what, who }),
        2 => (0..3u8, 0..3u8).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Runs the steps on 3 replicas (any key may write at any replica: a stolen key is one used
/// at two places); returns every experience admitted anywhere.
pub fn run(steps: &[Step]) -> (Verified<Experience>, Vec<Experience>) {
    let g = cloud();
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let mut written = Vec::new();
    for s in steps {
        let (by, at, ops) = match *s {
            Step::Sync { from, to } => {
                let src = rs[from as usize].clone();
                rs[to as usize].merge(&src);
                continue;
            }
            Step::Write { by, at, byte } => {
                let op = match byte % 3 {
                    // A call to an order-sensitive morphism: the ledger, which refuses
                    // overdrafts, so what is left out changes what later calls do.
                    0 => Op::Call {
                        morphism: Ledger::id(),
                        args: v(&format!(
                            r#"{{"op":"{}","account":"acc","amount":{}}}"#,
                            if byte % 2 == 0 { "deposit" } else { "withdraw" },
                            1 + byte % 4
                        )),
                    },
                    1 => set("/a", &byte.to_string()),
                    _ => Op::Incr {
                        path: p("/n"),
                        by: i64::from(byte),
                    },
                };
                (by, at, vec![op])
            }
            Step::Change { by, at, what, who } => {
                let node = node(who);
                let op = match what {
                    0 => Op::AddMember { node },
                    1 => Op::RemoveMember { node },
                    2 => Op::AddAdmin { node },
                    3 => Op::RemoveAdmin { node },
                    _ => Op::RotateKey { to: node },
                };
                (by, at, vec![op])
            }
        };
        let key: &SigningKey = &key(by);
        if let Ok(e) = rs[at as usize].write(key, ops) {
            written.push(Arc::unwrap_or_clone(e).into_inner());
        }
    }
    (g, written)
}

pub fn deliver(g: &Verified<Experience>, order: &[&Experience]) -> Replica {
    let mut r = Replica::new(g.clone()).unwrap();
    r.set_self_check(true);
    for e in order {
        let v = validate(&e.to_bytes(), &g.id()).unwrap();
        r.insert(v).unwrap();
    }
    r
}
