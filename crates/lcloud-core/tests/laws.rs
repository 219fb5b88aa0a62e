//! Property tests for the laws: merge is commutative, associative and idempotent; any
//! permutation and duplication of delivery gives the same heads and root; the state at a cut
//! equals folding exactly that cut from genesis; any flipped byte is rejected; encodings are
//! canonical.

mod common;

use common::*;
use lcloud_core::{
    Cut, Experience, Id, Ledger, Op, Replica, ValidationError, VectorClock, validate,
    validate_batch,
};
use proptest::prelude::*;
use std::sync::Arc;

const NODES: u8 = 4;

#[derive(Clone, Debug)]
enum Action {
    Write { node: u8, ops: Vec<u8> },
    Sync { from: u8, to: u8 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..NODES, prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(node, ops)| Action::Write { node, ops }),
        1 => (0..NODES, 0..NODES).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

/// A small universe of ops on a few overlapping paths, so that concurrent writes conflict.
fn op_from(byte: u8) -> Op {
    let paths = ["/a", "/b", "/a/x", "/s", "/n"];
    let path = p(paths[(byte as usize / 7) % paths.len()]);
    let value = v(&((byte % 3) as i64).to_string());
    match byte % 7 {
        0 | 1 => Op::Set { path, value },
        2 => Op::Del { path },
        3 => Op::Incr {
            path,
            by: i64::from(byte % 5) - 2,
        },
        4 => Op::Add { path, value },
        5 => Op::Remove { path, value },
        _ => Op::Call {
            morphism: Ledger::id(),
            args: v(&format!(
                r#"{{"op":"{}","account":"acc","amount":{}}}"#,
                if byte.is_multiple_of(2) {
                    "deposit"
                } else {
                    "withdraw"
                },
                1 + byte % 4
            )),
        },
    }
}

/// Runs a script on `NODES` replicas; returns them and every experience written.
fn run(script: &[Action]) -> (Vec<Replica>, Vec<Experience>) {
    let g = genesis();
    let mut replicas: Vec<Replica> = (0..NODES)
        .map(|_| Replica::new(g.clone()).unwrap())
        .collect();
    let mut written = vec![g.into_inner()];
    for a in script {
        match a {
            Action::Write { node, ops } => {
                let ops = ops.iter().map(|b| op_from(*b)).collect();
                let e = replicas[*node as usize].write(&key(*node), ops).unwrap();
                written.push(Arc::unwrap_or_clone(e).into_inner());
            }
            Action::Sync { from, to } => {
                let src = replicas[*from as usize].clone();
                replicas[*to as usize].merge(&src);
            }
        }
    }
    (replicas, written)
}

fn union(a: &Replica, b: &Replica) -> Replica {
    let mut r = a.clone();
    r.merge(b);
    r
}

fn same(a: &Replica, b: &Replica) -> bool {
    a.root() == b.root()
        && a.lattice().heads() == b.lattice().heads()
        && a.document() == b.document()
}

/// A fresh replica fed `exps` in the given order, from bytes, through validation.
fn deliver(genesis_id: Id, genesis: &Experience, exps: &[&Experience]) -> Replica {
    let g = validate(&genesis.to_bytes(), &genesis_id).unwrap();
    let mut r = Replica::new(g).unwrap();
    for e in exps {
        let verified = validate(&e.to_bytes(), &genesis_id).unwrap();
        r.insert(verified).unwrap();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_idempotent(script in prop::collection::vec(action(), 1..40)) {
        let (r, _) = run(&script);
        prop_assert!(same(&union(&r[0], &r[1]), &union(&r[1], &r[0])));
        prop_assert!(same(
            &union(&union(&r[0], &r[1]), &r[2]),
            &union(&r[0], &union(&r[1], &r[2]))
        ));
        prop_assert!(same(&union(&r[0], &r[0]), &r[0]));
    }

    #[test]
    fn any_delivery_order_with_duplicates_gives_the_same_heads_and_root(
        script in prop::collection::vec(action(), 1..40),
        seed in any::<u64>(),
    ) {
        let (replicas, written) = run(&script);
        let all = replicas.iter().skip(1).fold(replicas[0].clone(), |acc, r| union(&acc, r));
        let genesis = &written[0];
        let mut order: Vec<&Experience> = written[1..].iter().collect();
        let mut rng = Rng(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let dups: Vec<&Experience> = order.iter().filter(|_| rng.chance(20)).copied().collect();
        order.extend(dups);
        let r = deliver(genesis.id(), genesis, &order);
        prop_assert_eq!(r.lattice().parked_len(), 0);
        prop_assert!(same(&r, &all));
        prop_assert_eq!(r.state().ordered, all.state().ordered);
    }

    #[test]
    fn state_at_a_cut_equals_folding_exactly_that_cut(
        script in prop::collection::vec(action(), 1..40),
        pick in any::<u64>(),
    ) {
        let (replicas, written) = run(&script);
        let all = replicas.iter().skip(1).fold(replicas[0].clone(), |acc, r| union(&acc, r));
        let lattice = all.lattice();
        let x = (pick % lattice.len() as u64) as u32;
        let head = lattice.get(x).id();
        // By heads: exactly x's causal past, x included.
        let cut: Vec<&Experience> = (1..lattice.len() as u32)
            .filter(|i| *i == x || lattice.precedes(*i, x))
            .map(|i| &**lattice.get(i))
            .collect();
        let fresh = deliver(written[0].id(), &written[0], &cut);
        let travelled = all.state_at(&Cut::Heads(vec![head])).unwrap();
        prop_assert_eq!(travelled.root(), fresh.root());
        // By clock: the same cut named by x's clock.
        let by_clock = all.state_at(&Cut::Clock(lattice.clock(x))).unwrap();
        prop_assert_eq!(by_clock.root(), fresh.root());
        // Perspective of x: its past without x.
        if x != 0 {
            let past: Vec<&Experience> = cut.iter().filter(|e| e.id() != head).copied().collect();
            let fresh = deliver(written[0].id(), &written[0], &past);
            prop_assert_eq!(all.perspective(&head).unwrap().root(), fresh.root());
        }
    }

    #[test]
    fn flipping_any_byte_is_rejected(
        script in prop::collection::vec(action(), 1..10),
        pick in any::<usize>(),
        pos in any::<usize>(),
        mask in 1u8..=255,
    ) {
        let (_, written) = run(&script);
        let cloud = written[0].id();
        let e = &written[pick % written.len()];
        let mut bytes = e.to_bytes();
        let at = pos % bytes.len();
        bytes[at] ^= mask;
        prop_assert!(validate(&bytes, &cloud).is_err(), "flip at {} accepted", at);
    }

    #[test]
    fn encodings_are_canonical(
        script in prop::collection::vec(action(), 1..10),
        pick in any::<usize>(),
    ) {
        let (_, written) = run(&script);
        let cloud = written[0].id();
        let e = &written[pick % written.len()];
        let bytes = e.to_bytes();
        prop_assert_eq!(Experience::decode(&bytes).unwrap().to_bytes(), bytes.clone());
        // [header, sig, ops] with header = [1, ...]: byte 0 is 0x83, byte 1 is 0x89, byte 2
        // is the version 0x01. A non-minimal version (0x18 0x01) must be refused.
        prop_assert_eq!(&bytes[..3], &[0x83, 0x89, 0x01]);
        let mut wide = bytes.clone();
        wide.splice(2..3, [0x18, 0x01]);
        prop_assert!(matches!(validate(&wide, &cloud), Err(ValidationError::Malformed(_))));
        // An indefinite-length outer array is refused.
        let mut indefinite = bytes.clone();
        indefinite[0] = 0x9f;
        indefinite.push(0xff);
        prop_assert!(validate(&indefinite, &cloud).is_err());
        // Trailing bytes are refused.
        let mut trailing = bytes;
        trailing.push(0);
        prop_assert!(validate(&trailing, &cloud).is_err());
    }

    #[test]
    fn batch_and_single_validation_agree(
        script in prop::collection::vec(action(), 1..20),
        corrupt in prop::collection::vec(any::<(usize, u8)>(), 0..4),
    ) {
        let (_, written) = run(&script);
        let cloud = written[0].id();
        let mut inputs: Vec<Vec<u8>> = written.iter().map(|e| e.to_bytes()).collect();
        for (pos, mask) in corrupt {
            let i = pos % inputs.len();
            let at = (pos / 7) % inputs[i].len();
            inputs[i][at] ^= mask | 1;
        }
        let refs: Vec<&[u8]> = inputs.iter().map(|b| b.as_slice()).collect();
        let batch = validate_batch(&refs, &cloud);
        for (bytes, result) in refs.iter().zip(batch) {
            let single = validate(bytes, &cloud);
            prop_assert_eq!(single.map(|v| v.id()), result.map(|v| v.id()));
        }
    }
}

#[test]
fn clock_cut_before_any_write_is_genesis() {
    let (replicas, written) = run(&[Action::Write {
        node: 1,
        ops: vec![0, 1],
    }]);
    let mut clock = VectorClock::default();
    clock.observe(written[0].author(), 1);
    let s = replicas[1].state_at(&Cut::Clock(clock)).unwrap();
    let fresh = deliver(written[0].id(), &written[0], &[]);
    assert_eq!(s.root(), fresh.root());
}
