//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

pub mod history;
pub mod traces;

use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, ForkPolicy, Genesis, NodeId, Op, Path, Value, Verified};

/// A deterministic key for test node `n`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from([n.wrapping_add(1); 32])
}

/// The node id of `key(n)`.
pub fn node(n: u8) -> NodeId {
    NodeId(key(n).verification_key().to_bytes())
}

/// A genesis by node 0.
pub fn genesis_with(members: Option<Vec<NodeId>>, fork_policy: ForkPolicy) -> Verified<Experience> {
    Experience::create_genesis(
        &key(0),
        Genesis {
            name: "test".into(),
            init: Value::map(),
            members,
            fork_policy,
        },
    )
}

/// An open genesis with the default fork policy.
pub fn genesis() -> Verified<Experience> {
    genesis_with(None, ForkPolicy::Concurrent)
}

/// Parses a JSON Pointer.
pub fn p(s: &str) -> Path {
    Path::parse(s).unwrap()
}

/// A JSON literal as a value.
pub fn v(json: &str) -> Value {
    Value::from_json(&serde_json::from_str(json).unwrap()).unwrap()
}

/// `set path json`.
pub fn set(path: &str, json: &str) -> Op {
    Op::Set {
        path: p(path),
        value: v(json),
    }
}

/// SplitMix64: a tiny seeded generator for simulations.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `items` in the order of a Fisher-Yates shuffle drawn from `seed`: a random delivery order
/// that a seed replays.
pub fn shuffled<T>(items: &[T], seed: u64) -> Vec<&T> {
    let mut order: Vec<&T> = items.iter().collect();
    let mut rng = Rng(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}
