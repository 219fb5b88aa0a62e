//! Attribution of contract state (`Replica::contract_writes`): who set a key to the value it
//! holds, and the values it held before, checked against folding the same history one
//! experience at a time in canonical order, now and at cuts, with and without the fold's
//! checkpoints to start from.

mod common;

use common::{call, key, replica};
use lcloud_core::{Cut, Experience, Id, KeyWrites, Op, Replica, Verified, View};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn genesis() -> Verified<Experience> {
    common::genesis("writes")
}

fn bank() -> (Id, Op) {
    common::deploy(lcloud_examples::BANK)
}

fn transfer(from: u8, to: u8, amount: u8) -> String {
    format!(r#"{{"from":"a{from}","to":"a{to}","amount":{amount}}}"#)
}

/// The changes of `key` in `contract`, made by folding `within` (all when `None`) of `r`'s
/// history one experience at a time in canonical order: (experience, value after it).
fn oracle(
    g: &Verified<Experience>,
    r: &Replica,
    within: Option<&BTreeSet<Id>>,
    contract: &Id,
    key: &str,
) -> Vec<(Id, Option<String>)> {
    let mut fresh = replica(g);
    let mut held = None;
    let mut changes = Vec::new();
    for i in r.canonical_order() {
        let e = r.lattice().get(i);
        if e.id() == g.id() || within.is_some_and(|w| !w.contains(&e.id())) {
            continue;
        }
        fresh.insert(e.clone()).unwrap();
        let now = fresh
            .ordered()
            .kv
            .get(contract)
            .and_then(|kv| kv.get(key))
            .cloned();
        if now != held {
            held.clone_from(&now);
            changes.push((e.id(), now));
        }
    }
    changes
}

/// `got` agrees with the oracle's changes: the same value, and its changes are the oracle's
/// last ones (all of them when it says it is complete).
fn agrees(got: &KeyWrites, want: &[(Id, Option<String>)]) -> Result<(), String> {
    let got_changes: Vec<(Id, Option<String>)> = got
        .changes
        .iter()
        .map(|w| (w.dot.exp, w.value.clone()))
        .collect();
    let tail = &want[want.len().saturating_sub(got_changes.len())..];
    if got.value != want.last().and_then(|(_, v)| v.clone()) {
        return Err(format!("value {:?}, the oracle's {want:?}", got.value));
    }
    if got_changes != tail || (got.complete && got_changes.len() != want.len()) {
        return Err(format!("changes {got_changes:?}, the oracle's {want:?}"));
    }
    if want.last().is_some_and(|(_, v)| v.is_some()) && got_changes.is_empty() {
        return Err("a value with no writer".into());
    }
    Ok(())
}

/// The experiences of the cut whose only head is `head`: it and its causal past.
fn past(r: &Replica, head: &Id) -> BTreeSet<Id> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![*head];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(r.lattice().experience(&id).unwrap().parents().copied());
        }
    }
    seen
}

fn now() -> View {
    View {
        cut: None,
        without: None,
    }
}

#[test]
fn the_writer_of_a_balance_is_the_spend_that_fit_and_the_refused_one_is_not_among_them() {
    let g = genesis();
    let (bank, deploy) = bank();
    let mut a = replica(&g);
    a.write(&key(0), vec![deploy]).unwrap();
    let mint = a
        .write(
            &key(0),
            vec![call(bank, "mint", r#"{"to":"a0","amount":100}"#)],
        )
        .unwrap();
    let mut b = replica(&g);
    b.merge(&a);
    let spend_a = a.write(&key(0), vec![call(bank, "transfer", &transfer(0, 1, 70))]);
    let spend_b = b.write(&key(1), vec![call(bank, "transfer", &transfer(0, 2, 60))]);
    let (spend_a, spend_b) = (spend_a.unwrap(), spend_b.unwrap());
    a.merge(&b);
    let w = a
        .contract_writes(&now(), &bank, "balance/a0")
        .unwrap()
        .unwrap();
    let fit = if a.rejection(&spend_a.id(), 0).is_none() {
        &spend_a
    } else {
        &spend_b
    };
    let kept = if fit.id() == spend_a.id() { "30" } else { "40" };
    assert_eq!(w.value.as_deref(), Some(kept));
    let writers: Vec<(Id, Option<&str>)> = w
        .changes
        .iter()
        .map(|c| (c.dot.exp, c.value.as_deref()))
        .collect();
    assert_eq!(
        writers,
        vec![(mint.id(), Some("100")), (fit.id(), Some(kept))]
    );
    assert!(w.complete);
    agrees(&w, &oracle(&g, &a, None, &bank, "balance/a0")).unwrap();
    // At the cut before the spends, the mint wrote it; a key never written has no writer;
    // before the deploy there is no contract to ask.
    let before = View {
        cut: Some(Cut::Heads(vec![mint.id()])),
        without: None,
    };
    let w = a
        .contract_writes(&before, &bank, "balance/a0")
        .unwrap()
        .unwrap();
    assert_eq!(w.value.as_deref(), Some("100"));
    assert_eq!(w.changes.last().unwrap().dot.exp, mint.id());
    let none = a
        .contract_writes(&now(), &bank, "balance/nobody")
        .unwrap()
        .unwrap();
    assert_eq!((none.value, none.changes.len()), (None, 0));
    let genesis_only = View {
        cut: Some(Cut::Heads(vec![g.id()])),
        without: None,
    };
    assert_eq!(a.contract_writes(&genesis_only, &bank, "minter"), Ok(None));
}

#[test]
fn a_value_set_long_ago_and_one_set_back_after_many_calls_are_both_attributed() {
    let g = genesis();
    let (bank, deploy) = bank();
    let mut r = replica(&g);
    r.write(&key(0), vec![deploy]).unwrap();
    r.write(
        &key(0),
        vec![call(bank, "mint", r#"{"to":"a0","amount":200}"#)],
    )
    .unwrap();
    // a9 gets 5 early and keeps it; a1 goes 0 → 10 → 0 → 10 … past several of the fold's
    // checkpoints (one every 64 calls), ending where it was before the last round.
    r.write(&key(0), vec![call(bank, "transfer", &transfer(0, 9, 5))])
        .unwrap();
    for round in 0..150u32 {
        let args = if round % 2 == 0 {
            transfer(0, 1, 10)
        } else {
            transfer(1, 0, 10)
        };
        r.write(&key((round % 3) as u8), vec![call(bank, "transfer", &args)])
            .unwrap();
    }
    for account in ["balance/a9", "balance/a1", "balance/a0"] {
        let w = r.contract_writes(&now(), &bank, account).unwrap().unwrap();
        agrees(&w, &oracle(&g, &r, None, &bank, account)).unwrap();
    }
    let a9 = r
        .contract_writes(&now(), &bank, "balance/a9")
        .unwrap()
        .unwrap();
    assert!(a9.complete, "a9 never held another value at a checkpoint");
    let a1 = r
        .contract_writes(&now(), &bank, "balance/a1")
        .unwrap()
        .unwrap();
    assert!(
        !a1.complete && a1.changes.len() <= 64,
        "a1 is folded again from the last checkpoint (64 calls apart): {} changes",
        a1.changes.len()
    );
}

#[derive(Debug, Clone)]
enum Action {
    Transfer {
        node: u8,
        from: u8,
        to: u8,
        amount: u8,
    },
    Sync {
        from: u8,
        to: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3u8, 0..4u8, 0..4u8, 1..30u8)
            .prop_map(|(node, from, to, amount)| Action::Transfer { node, from, to, amount }),
        1 => (0..3u8, 0..3u8).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// For every account, now and at the cut below a random experience, the writers agree
    /// with the oracle, across partitions (concurrent transfers, some refused) and merges.
    #[test]
    fn the_writers_agree_with_folding_in_canonical_order(
        script in prop::collection::vec(action(), 1..160),
        pick in any::<prop::sample::Index>(),
    ) {
        let g = genesis();
        let (bank, deploy) = bank();
        let mut rs: Vec<Replica> = (0..3).map(|_| replica(&g)).collect();
        rs[0].write(&key(0), vec![deploy]).unwrap();
        rs[0].write(&key(0), vec![call(bank, "mint", r#"{"to":"a0","amount":60}"#)]).unwrap();
        for a in &script {
            match *a {
                Action::Transfer { node, from, to, amount } => {
                    let op = call(bank, "transfer", &transfer(from, to, amount));
                    rs[node as usize].write(&key(node), vec![op]).unwrap();
                }
                Action::Sync { from, to } => {
                    let src = rs[from as usize].clone();
                    rs[to as usize].merge(&src);
                }
            }
        }
        let mut all = rs[0].clone();
        for r in &rs[1..] {
            all.merge(r);
        }
        let head = all.lattice().get(pick.index(all.lattice().len()) as u32).id();
        let within = past(&all, &head);
        let at = View { cut: Some(Cut::Heads(vec![head])), without: None };
        for n in 0..4 {
            let account = format!("balance/a{n}");
            let w = all.contract_writes(&now(), &bank, &account).unwrap().unwrap();
            let want = oracle(&g, &all, None, &bank, &account);
            prop_assert!(agrees(&w, &want).is_ok(), "{}: {:?}", account, agrees(&w, &want));
            match all.contract_writes(&at, &bank, &account).unwrap() {
                Some(w) => {
                    let want = oracle(&g, &all, Some(&within), &bank, &account);
                    prop_assert!(agrees(&w, &want).is_ok(), "{} at a cut: {:?}", account, agrees(&w, &want));
                }
                None => {
                    let deploys = |id: &Id| {
                        let ops = all.lattice().experience(id).unwrap().ops();
                        ops.iter().any(|o| matches!(o, Op::Deploy { .. }))
                    };
                    prop_assert!(!within.iter().any(deploys), "no writers, yet the deploy is in the cut");
                }
            }
        }
    }
}
