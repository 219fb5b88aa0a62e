//! Lists and text in the document, through signed experiences and replicas: edits by index
//! turn into ops that merge; any delivery order gives the same root (with moves, deletes of
//! the path and refused ops among them); time travel to a cut equals folding the cut; leaves
//! store and read back; an op naming an element outside its causal past changes nothing on
//! every replica; and the three editing traces replay to their final text, the concurrent
//! one on two replicas that exchange experiences at the trace's merge points.

mod common;

use std::sync::Arc;

use common::traces::{patches, trace};
use common::*;
use lcloud_core::{
    Between, Cut, Edit, ElemRef, Experience, Items, Leaf, Op, Replica, Splice, Value, View,
    WriteRefused, resolve,
};
use proptest::prelude::*;

/// Resolves `edits` against what replica `r` holds and writes them as node `n`.
fn edit(
    r: &mut Replica,
    n: u8,
    edits: Vec<Edit>,
) -> Result<Arc<lcloud_core::Verified<Experience>>, WriteRefused> {
    let ops = resolve(&r.state().doc, node(n), edits)?;
    Ok(r.write(&key(n), ops).unwrap())
}

fn splice(path: &str, index: usize, delete: usize, text: &str) -> Edit {
    Edit::Splice {
        path: p(path),
        index,
        delete,
        text: text.into(),
    }
}

fn insert(path: &str, index: usize, json: &str) -> Edit {
    Edit::Insert {
        path: p(path),
        index,
        items: match v(json) {
            lcloud_core::Value::List(vs) => Items::List(vs),
            one => Items::List(vec![one]),
        },
    }
}

fn delete(path: &str, index: usize, count: usize) -> Edit {
    Edit::Delete {
        path: p(path),
        index,
        count,
    }
}

fn mv(path: &str, from: usize, to: usize) -> Edit {
    Edit::Move {
        path: p(path),
        from,
        to,
    }
}

fn doc(r: &Replica) -> serde_json::Value {
    r.document().to_json()
}

#[test]
fn text_and_lists_edit_by_index_and_read_as_strings_and_arrays() {
    let mut r = Replica::new(genesis()).unwrap();
    edit(&mut r, 1, vec![splice("/t", 0, 0, "hello world")]).unwrap();
    edit(
        &mut r,
        1,
        vec![splice("/t", 0, 5, "héllo"), splice("/t", 11, 0, "!")],
    )
    .unwrap();
    edit(&mut r, 1, vec![delete("/t", 5, 6)]).unwrap();
    edit(
        &mut r,
        1,
        vec![insert("/l", 0, "[1, 2, 3]"), insert("/l", 3, "{\"x\": 4}")],
    )
    .unwrap();
    edit(&mut r, 1, vec![mv("/l", 0, 3), delete("/l", 0, 1)]).unwrap();
    assert_eq!(
        doc(&r),
        serde_json::json!({"t": "héllo!", "l": [3, {"x": 4}, 1]})
    );
    // Moved to the front and back again, within one write.
    edit(
        &mut r,
        1,
        vec![mv("/l", 2, 0), mv("/l", 0, 2), mv("/l", 1, 0)],
    )
    .unwrap();
    assert_eq!(doc(&r)["l"], serde_json::json!([{"x": 4}, 3, 1]));
    // Wrong kinds and places are refused, naming what is wrong; nothing is written.
    let before = r.root();
    let e = edit(&mut r, 1, vec![splice("/l", 0, 0, "x")]).unwrap_err();
    assert!(
        matches!(
            e,
            WriteRefused::WrongType {
                wants: "a text",
                ..
            }
        ),
        "{e}"
    );
    let e = edit(&mut r, 1, vec![delete("/t", 5, 2)]).unwrap_err();
    assert!(e.to_string().contains("it holds 6 characters"), "{e}");
    let e = edit(&mut r, 1, vec![mv("/t", 0, 1)]).unwrap_err();
    assert!(matches!(e, WriteRefused::WrongType { .. }), "{e}");
    let e = edit(&mut r, 1, vec![delete("/t", usize::MAX, 2)]).unwrap_err();
    assert!(matches!(e, WriteRefused::Index { .. }), "{e}");
    let e = edit(&mut r, 1, vec![splice("/t", 2, usize::MAX, "x")]).unwrap_err();
    assert!(matches!(e, WriteRefused::Index { .. }), "{e}");
    let e = edit(&mut r, 1, vec![mv("/l", usize::MAX, usize::MAX)]).unwrap_err();
    assert!(matches!(e, WriteRefused::Index { .. }), "{e}");
    let e = edit(&mut r, 1, vec![insert("/l", usize::MAX, "1")]).unwrap_err();
    assert!(matches!(e, WriteRefused::Index { .. }), "{e}");
    let e = edit(&mut r, 1, vec![delete("/l", 0, 0)]).unwrap_err();
    assert!(matches!(e, WriteRefused::BadEdit(_)), "{e}");
    r.write(
        &key(1),
        vec![Op::Incr {
            path: p("/n"),
            by: 1,
        }],
    )
    .unwrap();
    let e = edit(&mut r, 1, vec![insert("/n", 0, "1")]).unwrap_err();
    assert!(e.to_string().contains("it holds a counter"), "{e}");
    assert_ne!(r.root(), before, "only the counter was written");
    assert_eq!(doc(&r)["t"], "héllo!");
}

#[test]
fn concurrent_typing_at_one_place_does_not_interleave() {
    let mut a = Replica::new(genesis()).unwrap();
    edit(&mut a, 1, vec![splice("/t", 0, 0, "[]")]).unwrap();
    let mut b = a.clone();
    // Each character its own experience: the worst case for interleaving.
    for (i, c) in "alpha".chars().enumerate() {
        edit(&mut a, 1, vec![splice("/t", 1 + i, 0, &c.to_string())]).unwrap();
    }
    for (i, c) in "beta".chars().enumerate() {
        edit(&mut b, 2, vec![splice("/t", 1 + i, 0, &c.to_string())]).unwrap();
    }
    let b2 = b.clone();
    a.merge(&b2);
    b.merge(&a.clone());
    assert_eq!(a.root(), b.root());
    let t = doc(&a)["t"].as_str().unwrap().to_owned();
    assert!(t == "[alphabeta]" || t == "[betaalpha]", "{t}");
}

#[test]
fn deleting_the_path_keeps_concurrent_inserts_and_moves_lose_to_deletes() {
    let mut a = Replica::new(genesis()).unwrap();
    edit(
        &mut a,
        1,
        vec![splice("/t", 0, 0, "abc"), insert("/l", 0, "[1, 2, 3]")],
    )
    .unwrap();
    let mut b = a.clone();
    a.write(&key(1), vec![Op::Del { path: p("/t") }]).unwrap();
    edit(&mut a, 1, vec![delete("/l", 0, 1)]).unwrap();
    edit(
        &mut b,
        2,
        vec![splice("/t", 1, 0, "X"), mv("/l", 0, 2), mv("/l", 0, 1)],
    )
    .unwrap();
    let mut c = b.clone();
    c.merge(&a);
    a.merge(&b);
    assert_eq!(a.root(), c.root());
    // The text's observed characters are gone; the concurrent insert stays, and with it the
    // text. Element 1 was deleted while b moved it: the delete wins.
    assert_eq!(doc(&a), serde_json::json!({"t": "X", "l": [3, 2]}));
    // The path can be written again after a delete that saw everything.
    a.write(&key(1), vec![Op::Del { path: p("/t") }]).unwrap();
    assert!(doc(&a).get("t").is_none(), "{}", doc(&a));
    edit(&mut a, 1, vec![splice("/t", 0, 0, "new")]).unwrap();
    assert_eq!(doc(&a)["t"], "new");
}

#[test]
fn concurrent_moves_of_one_element_keep_one_copy_the_last_in_canonical_order() {
    let mut a = Replica::new(genesis()).unwrap();
    edit(
        &mut a,
        1,
        vec![insert("/l", 0, "[\"a\", \"b\", \"c\", \"d\"]")],
    )
    .unwrap();
    let mut b = a.clone();
    edit(&mut a, 1, vec![mv("/l", 0, 3)]).unwrap();
    edit(&mut b, 2, vec![mv("/l", 0, 1)]).unwrap();
    let mut c = b.clone();
    c.merge(&a);
    a.merge(&b);
    assert_eq!(a.root(), c.root());
    let l = doc(&a)["l"].as_array().unwrap().clone();
    assert_eq!(l.len(), 4, "{l:?}");
    assert!(
        l == ["b", "c", "d", "a"] || l == ["b", "a", "c", "d"],
        "one of the two moves: {l:?}"
    );
}

/// An op that names an element its experience has not seen (written by hand: a node never
/// writes one) changes nothing, in either delivery order.
#[test]
fn an_op_naming_an_element_outside_its_past_changes_nothing_anywhere() {
    let mut a = Replica::new(genesis()).unwrap();
    let mut b = a.clone();
    let first = edit(&mut a, 1, vec![splice("/t", 0, 0, "x")]).unwrap();
    let id = lcloud_core::ElemId {
        dot: lcloud_core::Dot {
            depth: a.lattice().depth(a.lattice().idx(&first.id()).unwrap()),
            exp: first.id(),
            op: 0,
        },
        offset: 0,
    };
    let bad = b
        .write(
            &key(2),
            vec![Op::Insert {
                path: p("/t"),
                at: Between {
                    left: Some(ElemRef::At(id)),
                    right: None,
                },
                items: Items::Text("y".into()),
            }],
        )
        .unwrap();
    let g = genesis();
    let mut one = Replica::new(g.clone()).unwrap();
    one.insert_arc(first.clone()).unwrap();
    one.insert_arc(bad.clone()).unwrap();
    let mut two = Replica::new(g).unwrap();
    two.insert_arc(bad).unwrap();
    two.insert_arc(first).unwrap();
    assert_eq!(one.root(), two.root());
    assert_eq!(doc(&one)["t"], "x");
}

#[derive(Clone, Debug)]
enum Action {
    Edit { node: u8, ops: Vec<(u8, u8, u8)> },
    Sync { from: u8, to: u8 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..3u8, prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..4))
            .prop_map(|(node, ops)| Action::Edit { node, ops }),
        1 => (0..3u8, 0..3u8).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

/// An edit valid against `r`: splices of the text, inserts, deletes and moves in the list,
/// and now and then a `del` or `set` of either path.
fn pick(r: &lcloud_core::Doc, kind: u8, a: u8, b: u8) -> Vec<Edit> {
    let len = |path: &str| match r.materialize(&p(path)) {
        Some(lcloud_core::Value::Str(s)) => s.chars().count(),
        Some(lcloud_core::Value::List(l)) => l.len(),
        _ => 0,
    };
    let (t, l) = (len("/t"), len("/l"));
    let at = |n: usize| a as usize % (n + 1);
    let text = ["a", "bc", "xyz", "é"][b as usize % 4];
    match kind % 12 {
        0..=3 if r.kind(&p("/t")).is_none_or(|k| k == "text") => {
            let i = at(t);
            vec![splice("/t", i, (b as usize % 3).min(t - i), text)]
        }
        4 | 5 if r.kind(&p("/l")).is_none_or(|k| k == "list") => {
            vec![insert("/l", at(l), &format!("[{a}, {b}]"))]
        }
        6 if l > 0 => vec![delete("/l", a as usize % l, 1)],
        7 | 8 if l > 0 => vec![mv("/l", a as usize % l, b as usize % l)],
        9 if t > 0 => vec![delete("/t", a as usize % t, 1)],
        10 => vec![Edit::Op(Op::Del {
            path: p(["/t", "/l"][a as usize % 2]),
        })],
        11 => vec![Edit::Op(set(["/t", "/l"][a as usize % 2], "0"))],
        _ => vec![Edit::Op(Op::Incr {
            path: p("/n"),
            by: 1,
        })],
    }
}

fn run(script: &[Action]) -> (Vec<Replica>, Vec<Arc<lcloud_core::Verified<Experience>>>) {
    let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(genesis()).unwrap()).collect();
    let mut written = Vec::new();
    for a in script {
        match a {
            Action::Edit { node, ops } => {
                let r = &mut rs[*node as usize];
                let mut edits = Vec::new();
                // Each edit is picked against the document with the ones before it.
                let mut scratch = r.clone();
                for (k, a, b) in ops {
                    let e = pick(&scratch.state().doc, *k, *a, *b);
                    let ops = resolve(&scratch.state().doc, node_(*node), e.clone()).unwrap();
                    scratch.write(&key(*node + 1), ops).unwrap();
                    edits.extend(e);
                }
                written.push(edit(r, *node + 1, edits).unwrap());
            }
            Action::Sync { from, to } => {
                let src = rs[*from as usize].clone();
                rs[*to as usize].merge(&src);
            }
        }
    }
    (rs, written)
}

fn node_(n: u8) -> lcloud_core::NodeId {
    node(n + 1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Three replicas edit a text and a list apart and sync now and then; every order of
    /// delivering all they wrote gives the same root, document and leaves (which store and
    /// read back as they were), and the state at any experience's cut equals folding
    /// exactly that cut.
    #[test]
    fn any_delivery_order_gives_the_same_text_and_list(
        script in prop::collection::vec(action(), 1..30),
        seed in any::<u64>(),
        pick_cut in any::<u64>(),
    ) {
        let (rs, written) = run(&script);
        let mut all = rs[0].clone();
        all.merge(&rs[1]);
        all.merge(&rs[2]);
        let mut fresh = Replica::new(genesis()).unwrap();
        for e in shuffled(&written, seed) {
            let bytes = e.to_bytes();
            let back = lcloud_core::validate(&bytes, &genesis().id()).unwrap();
            let _ = fresh.insert(back);
        }
        prop_assert_eq!(fresh.lattice().parked_len(), 0);
        prop_assert_eq!(fresh.root(), all.root());
        prop_assert_eq!(fresh.document(), all.document());
        let state = all.state();
        for (path, leaf) in state.doc.leaves_under(&p("")) {
            let back = Leaf::from_bytes(&leaf.to_bytes()).unwrap();
            prop_assert_eq!(&back, leaf, "leaf {:?}", path);
            prop_assert_eq!(back.to_bytes(), leaf.to_bytes());
        }
        // Time travel: the cut of one experience.
        let lattice = all.lattice();
        let x = (pick_cut % lattice.len() as u64) as u32;
        let head = lattice.get(x).id();
        let mut cut = Replica::new(genesis()).unwrap();
        for i in 1..lattice.len() as u32 {
            if i == x || lattice.precedes(i, x) {
                cut.insert(lattice.get(i).clone()).unwrap();
            }
        }
        prop_assert_eq!(all.state_at(&Cut::Heads(vec![head])).unwrap().root(), cut.root());
        // The diff from that cut to now: each text or list's splices turn the one into
        // the other.
        let from = View { cut: Some(Cut::Heads(vec![head])), without: None };
        for c in all.diff(&from, &View::default()).unwrap() {
            if let Some(splices) = &c.splices {
                let got = apply_splices(c.before.clone().unwrap(), splices);
                prop_assert_eq!(Some(got), c.after.clone(), "at {:?}", c.path);
            }
        }
    }
}

/// `value` (a string or an array) with `splices` applied in order.
fn apply_splices(value: Value, splices: &[Splice]) -> Value {
    match value {
        Value::Str(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            for sp in splices {
                let Value::Str(ins) = &sp.insert else {
                    panic!("text inserts a string")
                };
                chars.splice(sp.index..sp.index + sp.delete, ins.chars());
            }
            Value::Str(chars.into_iter().collect())
        }
        Value::List(mut items) => {
            for sp in splices {
                let Value::List(ins) = &sp.insert else {
                    panic!("a list inserts an array")
                };
                items.splice(sp.index..sp.index + sp.delete, ins.iter().cloned());
            }
            Value::List(items)
        }
        other => panic!("splices of a {}", other.kind()),
    }
}

#[test]
fn a_diff_of_text_and_lists_is_their_splices_and_conflicts_show_what_a_text_hides() {
    let mut r = Replica::new(genesis()).unwrap();
    edit(
        &mut r,
        1,
        vec![
            splice("/t", 0, 0, "hello world"),
            insert("/l", 0, "[1, 2, 3]"),
        ],
    )
    .unwrap();
    let before = View {
        cut: Some(Cut::Heads(r.lattice().heads().iter().copied().collect())),
        without: None,
    };
    edit(
        &mut r,
        1,
        vec![
            splice("/t", 6, 0, "there "),
            splice("/t", 0, 1, "H"),
            mv("/l", 0, 2),
        ],
    )
    .unwrap();
    let changes = r.diff(&before, &View::default()).unwrap();
    let at = |path: &str| changes.iter().find(|c| c.path == p(path)).unwrap();
    let text = at("/t").splices.clone().unwrap();
    assert_eq!(
        text,
        vec![
            Splice {
                index: 0,
                delete: 1,
                insert: v("\"H\"")
            },
            Splice {
                index: 6,
                delete: 0,
                insert: v("\"there \"")
            },
        ]
    );
    let list = at("/l").splices.clone().unwrap();
    assert_eq!(
        apply_splices(v("[1, 2, 3]"), &list),
        v("[2, 3, 1]"),
        "{list:?}"
    );
    // A register set concurrently with an insert: the text shows, the register is listed.
    let mut b = r.clone();
    r.write(&key(1), vec![set("/t", "7")]).unwrap();
    edit(&mut b, 2, vec![splice("/t", 0, 0, ">")]).unwrap();
    r.merge(&b);
    assert_eq!(doc(&r)["t"], ">");
    let values: Vec<Value> = r
        .state()
        .doc
        .conflicts(&p("/t"))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, vec![v("7"), v("\">\"")]);
}

/// Replays a transaction as one write of its patches (a splice each).
fn replay(
    r: &mut Replica,
    n: u8,
    txn: &serde_json::Value,
) -> Arc<lcloud_core::Verified<Experience>> {
    let edits = patches(txn)
        .map(|(at, del, ins)| splice("/t", at, del, ins))
        .collect();
    edit(r, n, edits).unwrap()
}

/// The sequential traces through signed experiences, 100 patches a write.
#[test]
fn the_sequential_traces_replay_through_signed_experiences() {
    for name in ["seph-blog1", "automerge-paper"] {
        let t = trace(name);
        let mut r = Replica::new(genesis()).unwrap();
        let edits: Vec<Edit> = t["txns"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(patches)
            .map(|(at, del, ins)| splice("/t", at, del, ins))
            .collect();
        for batch in edits.chunks(100) {
            edit(&mut r, 1, batch.to_vec()).unwrap();
        }
        assert!(
            doc(&r)["t"] == t["endContent"],
            "{name} does not end as the trace does"
        );
    }
}

/// `friendsforever`: two people typing at once, each transaction one experience written by
/// its agent's replica once it holds exactly the transactions the trace says it had seen
/// (the other agent's experiences delivered at the merge points).
#[test]
fn the_concurrent_trace_replays_on_two_replicas_exchanging_experiences() {
    let t = trace("friendsforever");
    let txns = t["txns"].as_array().unwrap();
    // Of two inserts at one place, the smaller author's goes first, as the trace's editor
    // ordered its agents: agent 0 writes as the node with the smaller id.
    let (n0, n1) = if node(1) < node(2) { (1, 2) } else { (2, 1) };
    let nodes = [n0, n1];
    let mut agents = [
        Replica::new(genesis()).unwrap(),
        Replica::new(genesis()).unwrap(),
    ];
    let mut have = [[0usize; 2]; 2];
    let mut exps: [Vec<Arc<lcloud_core::Verified<Experience>>>; 2] = [Vec::new(), Vec::new()];
    let mut seen: Vec<[usize; 2]> = Vec::with_capacity(txns.len());
    for txn in txns {
        let a = txn["agent"].as_u64().unwrap() as usize;
        let b = 1 - a;
        let mut need = [0usize; 2];
        for parent in txn["parents"].as_array().unwrap() {
            for (n, s) in need.iter_mut().zip(seen[parent.as_u64().unwrap() as usize]) {
                *n = (*n).max(s);
            }
        }
        assert_eq!(have[a][a], need[a]);
        for e in &exps[b][have[a][b]..need[b]] {
            agents[a].insert_arc(e.clone()).unwrap();
        }
        have[a][b] = need[b];
        let e = replay(&mut agents[a], nodes[a], txn);
        exps[a].push(e);
        have[a][a] += 1;
        seen.push(have[a]);
    }
    let a1 = agents[1].clone();
    agents[0].merge(&a1);
    let a0 = agents[0].clone();
    agents[1].merge(&a0);
    assert_eq!(agents[0].root(), agents[1].root());
    assert!(doc(&agents[0])["t"] == t["endContent"]);
}
