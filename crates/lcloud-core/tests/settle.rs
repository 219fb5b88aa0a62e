//! Counters and sets collapse below settled checkpoints (issue 20, `settle.rs`): an
//! attestation whose past shows its checkpoint final merges the checkpoint's increments into
//! one element and each set element's dots into one. The merge is a function of the history:
//! any delivery order, any replica, any view of a cut and any compacted replica give the same
//! root, and what the document says never changes.

mod common;

use common::*;
use lcloud_core::{Cut, Experience, Op, Replica, Value, Verified};
use proptest::prelude::*;

/// Checkpoint spacing: small, so that short histories settle often.
const EVERY: u64 = 8;

fn attest(r: &mut Replica, i: u8) {
    if let Some(d) = r.lattice().attestation_due(&node(i), EVERY) {
        let root = r
            .state_at(&Cut::Clock(r.lattice().depth_cut(d)))
            .unwrap()
            .root();
        r.write(&key(i), vec![Op::Attest { depth: d, root }])
            .unwrap();
    }
}

fn incr(by: i64) -> Op {
    Op::Incr { path: p("/c"), by }
}

fn add(x: &str) -> Op {
    Op::Add {
        path: p("/s"),
        value: v(x),
    }
}

fn remove(x: &str) -> Op {
    Op::Remove {
        path: p("/s"),
        value: v(x),
    }
}

/// A cloud of node 0 alone (`closed`) or open to anyone.
fn alone(closed: bool) -> Replica {
    Replica::new(genesis_with(
        closed.then(Vec::new),
        lcloud_core::ForkPolicy::Concurrent,
    ))
    .unwrap()
}

/// A replica of `g` fed `exps` in the order given (parked until their links arrive).
fn fed(g: &Verified<Experience>, exps: &[&Verified<Experience>]) -> Replica {
    let mut r = Replica::new(g.clone()).unwrap();
    for e in exps {
        r.insert((*e).clone()).unwrap();
    }
    r
}

/// Of `exps` (held by `r`), `e` and what precedes it.
fn past_of<'a>(
    r: &Replica,
    exps: &'a [Verified<Experience>],
    e: &Verified<Experience>,
) -> Vec<&'a Verified<Experience>> {
    let idx = r.lattice().idx(&e.id()).unwrap();
    exps.iter()
        .filter(|x| {
            let i = r.lattice().idx(&x.id()).unwrap();
            i == idx || r.lattice().precedes(i, idx)
        })
        .collect()
}

#[test]
fn a_lone_members_counter_and_set_stay_small() {
    for closed in [true, false] {
        let mut r = alone(closed);
        for i in 0..2000 {
            r.write(&key(0), vec![incr(1), add("\"x\"")]).unwrap();
            if i % 7 == 0 {
                r.write(&key(0), vec![add(&format!("{}", i % 3))]).unwrap();
            }
            attest(&mut r, 0);
        }
        let state = r.state();
        let leaf = state.doc.leaf(&p("/c")).unwrap();
        assert_eq!(leaf.inc_sum, 2000);
        assert_eq!(state.get(&p("/c")), Some(Value::Int(2000)));
        let elems = state.doc.leaf(&p("/s")).unwrap();
        let x = Value::from_json(&serde_json::json!("x")).unwrap().to_cbor();
        if closed {
            // Everything up to the last settled checkpoint is one element.
            assert!(leaf.incs.len() <= 2 * EVERY as usize, "{}", leaf.incs.len());
            assert!(elems.elems[&x].len() <= 2 * EVERY as usize);
            assert!(r.lattice().fixed_depth().is_some());
        } else {
            // An open cloud has no members to be final for: nothing settles.
            assert_eq!(leaf.incs.len(), 2000);
            assert_eq!(elems.elems[&x].len(), 2000);
        }
        assert_eq!(elems.elems.len(), 4);
        // A removal after the merge removes every add it observed.
        r.write(&key(0), vec![remove("\"x\""), incr(-5)]).unwrap();
        let state = r.state();
        assert_eq!(state.get(&p("/c")), Some(Value::Int(1995)));
        assert_eq!(state.doc.leaf(&p("/s")).unwrap().elems.len(), 3);
        r.write(&key(0), vec![set("/c", "1")]).unwrap();
        assert_eq!(r.state().get(&p("/c")), Some(Value::Int(1)));
        // Any order of delivery, and the cut at every tenth experience, folds alike.
        let exps: Vec<Verified<Experience>> = r.lattice().iter().skip(1).cloned().collect();
        let g = r.lattice().iter().next().unwrap().clone();
        let back = fed(&g, &shuffled(&exps, 7));
        assert_eq!(back.root(), r.root());
        for e in exps.iter().step_by(97) {
            let cut = Cut::Heads(vec![e.id()]);
            assert_eq!(
                r.state_at(&cut).unwrap().root(),
                fed(&g, &past_of(&r, &exps, e)).root(),
                "the cut at {}",
                e.id()
            );
        }
        if closed {
            let c = r.compacted().unwrap();
            assert_eq!(c.root(), r.root());
            assert!(c.lattice().len() < 100, "{}", c.lattice().len());
        }
    }
}

#[test]
fn a_concurrent_reset_removes_what_it_saw_and_no_more() {
    // Three members increment and add; the checkpoint settles; then node 1 resets the counter
    // and removes "x" while node 2 increments and adds "x" concurrently: node 2's survive.
    let g = genesis_with(
        Some(vec![node(1), node(2)]),
        lcloud_core::ForkPolicy::Concurrent,
    );
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
    let sync = |rs: &mut Vec<Replica>| {
        let all = rs.clone();
        for r in rs.iter_mut() {
            for o in &all {
                r.merge(o);
            }
        }
    };
    for round in 0..40 {
        for i in 0..3u8 {
            rs[i as usize]
                .write(&key(i), vec![incr(i64::from(i) + 1), add("\"x\"")])
                .unwrap();
        }
        sync(&mut rs);
        for i in 0..3u8 {
            attest(&mut rs[i as usize], i);
            // One after another: each attestation sees the ones before it.
            sync(&mut rs);
        }
        let _ = round;
    }
    let before = rs[0].state();
    assert_eq!(before.get(&p("/c")), Some(Value::Int(240)));
    let leaf = before.doc.leaf(&p("/c")).unwrap();
    assert!(leaf.incs.len() < 40, "{} elements", leaf.incs.len());
    rs[1]
        .write(&key(1), vec![Op::Del { path: p("/c") }, remove("\"x\"")])
        .unwrap();
    rs[2].write(&key(2), vec![incr(7), add("\"x\"")]).unwrap();
    sync(&mut rs);
    for r in &rs {
        assert_eq!(r.root(), rs[0].root());
        assert_eq!(r.state().get(&p("/c")), Some(Value::Int(7)));
        let x = Value::from_json(&serde_json::json!("x")).unwrap().to_cbor();
        assert_eq!(r.state().doc.leaf(&p("/s")).unwrap().elems[&x].len(), 1);
    }
}

#[derive(Clone, Debug)]
enum Step {
    Write { by: u8, op: u8 },
    Sync { from: u8, to: u8 },
    Attest { by: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3u8, 0..6u8).prop_map(|(by, op)| Step::Write { by, op }),
        3 => (0..3u8, 0..3u8).prop_map(|(from, to)| Step::Sync { from, to }),
        2 => (0..3u8).prop_map(|by| Step::Attest { by }),
    ]
}

fn op(n: u8) -> Vec<Op> {
    match n {
        0 | 1 => vec![incr(i64::from(n) + 1)],
        2 => vec![add("\"x\""), add("\"y\"")],
        3 => vec![remove("\"x\"")],
        4 => vec![Op::Del { path: p("/c") }],
        _ => vec![incr(-1), add("\"x\"")],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the members write, sync and attest, in whatever order their experiences
    /// arrive: one root, the same at every cut as a replica of just that cut, and compacted
    /// replicas agree.
    #[test]
    fn settling_is_a_function_of_the_history(
        steps in prop::collection::vec(step(), 20..160),
        seed in any::<u64>(),
    ) {
        let g = genesis_with(
            Some(vec![node(1), node(2)]),
            lcloud_core::ForkPolicy::Concurrent,
        );
        let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
        for s in steps {
            match s {
                Step::Write { by, op: n } => {
                    rs[by as usize].write(&key(by), op(n)).unwrap();
                }
                Step::Sync { from, to } if from != to => {
                    let other = rs[from as usize].clone();
                    rs[to as usize].merge(&other);
                }
                Step::Sync { .. } => {}
                Step::Attest { by } => attest(&mut rs[by as usize], by),
            }
        }
        let all = rs.clone();
        for r in rs.iter_mut() {
            for o in &all {
                r.merge(o);
            }
        }
        let r = &rs[0];
        for o in &rs {
            prop_assert_eq!(o.root(), r.root());
        }
        let exps: Vec<Verified<Experience>> = r.lattice().iter().skip(1).cloned().collect();
        let back = fed(&g, &shuffled(&exps, seed));
        prop_assert_eq!(back.root(), r.root());
        prop_assert_eq!(back.refold().root(), r.root());
        // The cut after each settling experience, as its own history.
        for e in &exps {
            let idx = r.lattice().idx(&e.id()).unwrap();
            let Some(s) = r.lattice().settles(idx) else {
                continue;
            };
            // The cut as a clock (what the store's time travel reads) says what the lattice says.
            let clock = r.lattice().settled_clock(s);
            for x in &exps {
                let d = r.lattice().depth(r.lattice().idx(&x.id()).unwrap());
                if d <= s.depth {
                    prop_assert_eq!(
                        r.lattice().in_settled_cut(s, d, &x.id()),
                        x.seq() <= clock.get(&x.author())
                    );
                }
            }
            let cut = Cut::Heads(vec![e.id()]);
            prop_assert_eq!(
                r.state_at(&cut).unwrap().root(),
                fed(&g, &past_of(r, &exps, e)).root()
            );
        }
        if r.lattice().fixed_depth().is_some() {
            let c = r.compacted().unwrap();
            prop_assert_eq!(c.root(), r.root());
            // What arrives after compaction folds alike on both.
            let (mut c, mut full) = (c, r.clone());
            for i in 0..3u8 {
                if full.lattice().may_write(&node(i)) {
                    let e = full.write(&key(i), op(i)).unwrap();
                    c.insert(e).unwrap();
                    attest(&mut full, i);
                    let last = full.lattice().iter().last().unwrap().clone();
                    if c.lattice().idx(&last.id()).is_none() {
                        c.insert(last).unwrap();
                    }
                }
            }
            prop_assert_eq!(c.root(), full.root());
        }
    }
}
