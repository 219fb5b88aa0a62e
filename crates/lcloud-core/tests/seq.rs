//! The sequence CRDT (`lcloud_core::seq`): against a plain string for one writer; replicas
//! that edit apart and merge converge, whatever order the ops arrive in; concurrent runs typed
//! at one place never interleave, typed forwards or backwards; and real editing traces replay
//! to exactly their final text: two by one author (`automerge-paper`, 259 778 edits, and
//! `seph-blog1`), and one by two people typing at once (`friendsforever`) on two replicas.

mod common;

use std::collections::BTreeSet;

use common::traces::trace;
use lcloud_core::seq::{ElemId, Origins, Seq};
use lcloud_core::{Dot, Id, NodeId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum SeqOp {
    Insert {
        dot: Dot,
        author: NodeId,
        origins: Box<Origins>,
        text: Vec<char>,
    },
    Delete {
        ranges: Vec<(ElemId, u32)>,
    },
}

/// A replica: its list, every op it applied in the order it applied them, and the ops each
/// of its own ops had seen (its causal past, by position in `log`).
#[derive(Clone, Default)]
struct Replica {
    n: u8,
    seq: Seq<char>,
    log: Vec<(u64, SeqOp)>,
    have: BTreeSet<u64>,
    made: u64,
}

impl Replica {
    fn new(n: u8) -> Replica {
        Replica {
            n,
            ..Replica::default()
        }
    }

    /// A replica whose list splits a chunk every 4 runs and respaces its chunk keys every
    /// few splits: what a long history does, in a short test.
    fn small(n: u8) -> Replica {
        Replica {
            seq: Seq::tuned(4),
            ..Replica::new(n)
        }
    }

    fn next_dot(&mut self) -> (u64, Dot) {
        self.made += 1;
        let mut id = [0u8; 32];
        id[0] = self.n;
        id[1..9].copy_from_slice(&self.made.to_be_bytes());
        let key = u64::from(self.n) << 56 | self.made << 8;
        let dot = Dot {
            depth: self.log.len() as u64,
            exp: Id(id),
            op: 0,
        };
        (key, dot)
    }

    fn apply(&mut self, key: u64, op: SeqOp) {
        if !self.have.insert(key) {
            return;
        }
        match &op {
            SeqOp::Insert {
                dot,
                author,
                origins,
                text,
            } => {
                self.seq
                    .insert(*dot, *author, **origins, text.clone())
                    .unwrap();
            }
            SeqOp::Delete { ranges } => {
                for (id, len) in ranges {
                    self.seq.delete(*id, *len).unwrap();
                }
            }
        }
        self.log.push((key, op));
    }

    fn insert(&mut self, index: usize, text: &str) {
        let origins = self.seq.origins_at(index).unwrap();
        let (key, dot) = self.next_dot();
        let text = text.chars().collect();
        let author = NodeId([self.n; 32]);
        let op = SeqOp::Insert {
            dot,
            author,
            origins: Box::new(origins),
            text,
        };
        self.apply(key, op);
    }

    /// Types `text` at `index` as one experience of one op a character, each after the
    /// one before (what a person typing does; the list keeps such ops in one run).
    fn type_in(&mut self, index: usize, text: &str) {
        let (key, dot) = self.next_dot();
        let author = NodeId([self.n; 32]);
        for (k, c) in text.chars().enumerate() {
            let origins = self.seq.origins_at(index + k).unwrap();
            let op = SeqOp::Insert {
                dot: Dot {
                    op: k as u32,
                    ..dot
                },
                author,
                origins: Box::new(origins),
                text: vec![c],
            };
            self.apply(key | k as u64, op);
        }
    }

    fn delete(&mut self, index: usize, count: usize) {
        let ranges = self.seq.ids_in(index, count).unwrap();
        let (key, _) = self.next_dot();
        self.apply(key, SeqOp::Delete { ranges });
    }

    /// Applies what `other` applied and this replica lacks, in `other`'s order.
    fn merge(&mut self, other: &Replica) {
        for (key, op) in &other.log {
            self.apply(*key, op.clone());
        }
    }

    fn text(&self) -> String {
        self.seq.iter().collect()
    }
}

/// One element of `Naive`: (author, id), left and right origins, the character, deleted.
type Item = ((NodeId, ElemId), Option<ElemId>, Option<ElemId>, char, bool);

/// The YjsMod rule one element at a time over a plain vector (Gentle's reference form): the
/// oracle the run-based `Seq` is checked against.
#[derive(Clone, Default)]
struct Naive {
    items: Vec<Item>,
}

impl Naive {
    fn find(&self, id: Option<ElemId>) -> Option<usize> {
        id.map(|id| {
            let at = self.items.iter().position(|i| i.0.1 == id);
            at.expect("a known element")
        })
    }

    fn apply(&mut self, op: &SeqOp) {
        match op {
            SeqOp::Insert {
                dot,
                author,
                origins,
                text,
            } => {
                for (k, c) in text.iter().enumerate() {
                    let id = ElemId {
                        dot: *dot,
                        offset: k as u32,
                    };
                    let left = if k == 0 {
                        origins.left
                    } else {
                        Some(ElemId {
                            dot: *dot,
                            offset: k as u32 - 1,
                        })
                    };
                    self.integrate((*author, id), left, origins.right, *c);
                }
            }
            SeqOp::Delete { ranges } => {
                for (id, len) in ranges {
                    for k in 0..*len {
                        let at = self
                            .find(Some(ElemId {
                                offset: id.offset + k,
                                ..*id
                            }))
                            .unwrap();
                        self.items[at].4 = true;
                    }
                }
            }
        }
    }

    fn integrate(&mut self, id: (NodeId, ElemId), l: Option<ElemId>, r: Option<ElemId>, c: char) {
        let item = (id, l, r, c, false);
        let pos = |s: &Naive, id: Option<ElemId>| s.find(id).map_or(-1, |i| i as i64);
        let left = pos(self, item.1);
        let right = item
            .2
            .map_or(self.items.len() as i64, |r| pos(self, Some(r)));
        let mut dest = left + 1;
        let mut scanning = false;
        let mut i = dest;
        loop {
            if !scanning {
                dest = i;
            }
            if i == self.items.len() as i64 || i == right {
                break;
            }
            let other = self.items[i as usize];
            let oleft = pos(self, other.1);
            let oright = other
                .2
                .map_or(self.items.len() as i64, |r| pos(self, Some(r)));
            if oleft < left {
                break;
            }
            if oleft == left {
                if oright < right {
                    scanning = true;
                } else if oright == right && item.0 < other.0 {
                    break;
                } else {
                    scanning = false;
                }
            }
            i += 1;
        }
        self.items.insert(dest as usize, item);
    }

    fn text(&self) -> String {
        self.items.iter().filter(|i| !i.4).map(|i| i.3).collect()
    }
}

#[test]
fn origins_and_ranges_name_what_the_index_shows() {
    let mut r = Replica::new(1);
    r.insert(0, "hello");
    r.insert(5, " world");
    r.delete(2, 2); // "he" + "o world"
    assert_eq!(r.text(), "heo world");
    // Inserting after the deleted "ll" names the last tombstone as its left origin and the
    // next visible element as its right one.
    let o = r.seq.origins_at(2).unwrap();
    let first = ElemId {
        dot: match &r.log[0].1 {
            SeqOp::Insert { dot, .. } => *dot,
            SeqOp::Delete { .. } => unreachable!(),
        },
        offset: 0,
    };
    let at = |k: u32| ElemId { offset: k, ..first };
    assert_eq!(o.left, Some(at(3)));
    assert_eq!(o.right, Some(at(4)));
    assert_eq!(r.seq.ids_in(0, 3).unwrap(), vec![(at(0), 2), (at(4), 1)]);
    r.insert(2, "LL");
    assert_eq!(r.text(), "heLLo world");
    assert!(r.seq.origins_at(12).is_err());
    assert!(r.seq.ids_in(10, 2).is_err());
    // Unknown origins and elements are refused, changing nothing.
    let before = r.seq.clone();
    let ghost = ElemId {
        dot: Dot {
            depth: 9,
            exp: Id([9; 32]),
            op: 0,
        },
        offset: 0,
    };
    let dot = Dot {
        depth: 10,
        exp: Id([8; 32]),
        op: 0,
    };
    let bad = Origins {
        left: Some(ghost),
        right: None,
    };
    assert!(r.seq.insert(dot, NodeId([9; 32]), bad, vec!['x']).is_err());
    assert!(r.seq.delete(ghost, 1).is_err());
    let backwards = Origins {
        left: Some(at(4)),
        right: Some(at(1)),
    };
    assert!(
        r.seq
            .insert(dot, NodeId([9; 32]), backwards, vec!['x'])
            .is_err()
    );
    let same = Origins {
        left: Some(at(4)),
        right: Some(at(4)),
    };
    assert!(r.seq.insert(dot, NodeId([9; 32]), same, vec!['x']).is_err());
    assert!(r.seq.delete(at(9), 5).is_err(), "past the run's end");
    assert_eq!(r.seq, before);
}

#[derive(Clone, Debug)]
enum Action {
    Insert { node: u8, at: u16, text: String },
    Type { node: u8, at: u16, text: String },
    Delete { node: u8, at: u16, count: u8 },
    Sync { from: u8, to: u8 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3u8, any::<u16>(), "[a-z]{1,4}").prop_map(|(node, at, text)| Action::Insert { node, at, text }),
        3 => (0..3u8, any::<u16>(), "[a-z]{1,6}").prop_map(|(node, at, text)| Action::Type { node, at, text }),
        2 => (0..3u8, any::<u16>(), 1..4u8).prop_map(|(node, at, count)| Action::Delete { node, at, count }),
        2 => (0..3u8, 0..3u8).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn run(script: &[Action]) -> Vec<Replica> {
    let mut rs: Vec<Replica> = (1..=3).map(Replica::small).collect();
    for a in script {
        match a {
            Action::Insert { node, at, text } => {
                let r = &mut rs[*node as usize];
                let at = usize::from(*at) % (r.seq.len() + 1);
                r.insert(at, text);
            }
            Action::Type { node, at, text } => {
                let r = &mut rs[*node as usize];
                let at = usize::from(*at) % (r.seq.len() + 1);
                r.type_in(at, text);
            }
            Action::Delete { node, at, count } => {
                let r = &mut rs[*node as usize];
                if r.seq.is_empty() {
                    continue;
                }
                let at = usize::from(*at) % r.seq.len();
                let count = usize::from(*count).min(r.seq.len() - at);
                r.delete(at, count);
            }
            Action::Sync { from, to } => {
                let src = rs[*from as usize].clone();
                rs[*to as usize].merge(&src);
            }
        }
    }
    rs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// One writer: the list reads as a plain string edited the same way.
    #[test]
    fn one_writer_edits_as_a_string_does(script in prop::collection::vec(action(), 1..80)) {
        let mut r = Replica::small(1);
        let mut model: Vec<char> = Vec::new();
        for a in &script {
            match a {
                Action::Insert { at, text, .. } => {
                    let at = usize::from(*at) % (model.len() + 1);
                    r.insert(at, text);
                    model.splice(at..at, text.chars());
                }
                Action::Type { at, text, .. } => {
                    let at = usize::from(*at) % (model.len() + 1);
                    r.type_in(at, text);
                    model.splice(at..at, text.chars());
                }
                Action::Delete { at, count, .. } if !model.is_empty() => {
                    let at = usize::from(*at) % model.len();
                    let count = usize::from(*count).min(model.len() - at);
                    r.delete(at, count);
                    model.drain(at..at + count);
                }
                _ => {}
            }
            prop_assert_eq!(r.text(), model.iter().collect::<String>());
            prop_assert_eq!(r.seq.len(), model.len());
        }
    }

    /// Replicas that edit apart and sync now and then reach the same list once they have
    /// the same ops (merge is commutative, associative and idempotent), and so does a fresh
    /// replica given every op in a random order that keeps each op after the ops its writer
    /// had when it wrote it; and it reads as the rule applied one element at a time.
    #[test]
    fn any_delivery_order_gives_the_same_list(
        script in prop::collection::vec(action(), 1..120),
        seed in any::<u64>(),
    ) {
        let rs = run(&script);
        let mut ab = rs[0].clone();
        ab.merge(&rs[1]);
        ab.merge(&rs[2]);
        let mut ba = rs[2].clone();
        ba.merge(&rs[1]);
        ba.merge(&rs[0]);
        ba.merge(&rs[0]);
        prop_assert_eq!(&ab.seq, &ba.seq);
        prop_assert_eq!(ab.text(), ba.text());
        // Each op's causal past: the ops its writer had applied before it.
        let mut past: Vec<(u64, SeqOp, BTreeSet<u64>)> = Vec::new();
        for r in &rs {
            let mut seen = BTreeSet::new();
            for (key, op) in &r.log {
                if key >> 56 == u64::from(r.n) && !past.iter().any(|(k, ..)| k == key) {
                    past.push((*key, op.clone(), seen.clone()));
                }
                seen.insert(*key);
            }
        }
        let mut fresh = Replica::new(9);
        let mut naive = Naive::default();
        let mut x = seed | 1;
        while fresh.have.len() < past.len() {
            let ready: Vec<&(u64, SeqOp, BTreeSet<u64>)> = past
                .iter()
                .filter(|(k, _, deps)| !fresh.have.contains(k) && deps.is_subset(&fresh.have))
                .collect();
            prop_assert!(!ready.is_empty());
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (k, op, _) = ready[(x % ready.len() as u64) as usize].clone();
            naive.apply(&op);
            fresh.apply(k, op);
        }
        prop_assert_eq!(&fresh.seq, &ab.seq);
        // The runs, chunks and index give what the rule gives one element at a time.
        prop_assert_eq!(naive.text(), fresh.text());
    }

    /// Two writers type a run each at the same place while apart (each character its own
    /// op, typed forwards, or backwards: each at the same index, before the last one); once
    /// merged, each run is whole, and the text around them is as it was.
    #[test]
    fn concurrent_runs_at_one_place_never_interleave(
        base in "[A-Z]{0,6}",
        at in any::<u8>(),
        one in "[a-m]{1,8}",
        two in "[n-z]{1,8}",
        backwards in any::<(bool, bool)>(),
    ) {
        let mut a = Replica::small(1);
        if !base.is_empty() {
            a.insert(0, &base);
        }
        let mut b = Replica::small(2);
        b.merge(&a);
        let at = usize::from(at) % (base.chars().count() + 1);
        for (r, run, back) in [(&mut a, &one, backwards.0), (&mut b, &two, backwards.1)] {
            let chars: Vec<char> = run.chars().collect();
            if back {
                for c in chars.iter().rev() {
                    r.insert(at, &c.to_string());
                }
            } else {
                for (i, c) in chars.iter().enumerate() {
                    r.insert(at + i, &c.to_string());
                }
            }
        }
        let b0 = b.clone();
        b.merge(&a);
        a.merge(&b0);
        prop_assert_eq!(a.text(), b.text());
        let text = a.text();
        let (head, tail) = base.split_at(at);
        let either = [format!("{head}{one}{two}{tail}"), format!("{head}{two}{one}{tail}")];
        prop_assert!(either.contains(&text), "{} is neither of {:?}", text, either);
    }
}

/// Applies a transaction's patches in order, each as the CLI would write it: a delete of
/// the range, then one insert. Returns how many patches.
fn patch(r: &mut Replica, txn: &serde_json::Value) -> usize {
    let patches = txn["patches"].as_array().unwrap();
    for p in patches {
        let (at, del) = (
            p[0].as_u64().unwrap() as usize,
            p[1].as_u64().unwrap() as usize,
        );
        if del > 0 {
            r.delete(at, del);
        }
        let ins = p[2].as_str().unwrap();
        if !ins.is_empty() {
            r.insert(at, ins);
        }
    }
    patches.len()
}

/// The sequential traces: `automerge-paper` (one author's 259 778 edits of the paper's LaTeX
/// source) and `seph-blog1`.
#[test]
fn the_sequential_traces_replay_to_their_final_text() {
    for (name, edits) in [("automerge-paper", 259_778), ("seph-blog1", 137_993)] {
        let t = trace(name);
        let mut r = Replica::new(1);
        let done: usize = t["txns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| patch(&mut r, x))
            .sum();
        assert_eq!(done, edits, "{name}");
        assert!(r.text() == t["endContent"].as_str().unwrap(), "{name}");
    }
}

/// The concurrent trace `friendsforever`: two people typing at once. Each transaction is
/// written by its agent's replica once that replica holds exactly the transactions its
/// parents name (the other agent's ops are merged in at the trace's merge points); at the
/// end both replicas merge everything and read the trace's final text.
#[test]
fn the_concurrent_trace_replays_on_two_replicas_to_its_final_text() {
    let t = trace("friendsforever");
    let txns = t["txns"].as_array().unwrap();
    let mut agents = [Replica::new(1), Replica::new(2)];
    let mut have = [[0usize; 2]; 2];
    // Each transaction's ops, and the transactions of each agent (in order) it had seen.
    let mut ops: [Vec<Vec<(u64, SeqOp)>>; 2] = [Vec::new(), Vec::new()];
    let mut seen: Vec<[usize; 2]> = Vec::with_capacity(txns.len());
    for txn in txns {
        let a = txn["agent"].as_u64().unwrap() as usize;
        let mut need = [0usize; 2];
        for p in txn["parents"].as_array().unwrap() {
            let p = p.as_u64().unwrap() as usize;
            for (n, s) in need.iter_mut().zip(seen[p]) {
                *n = (*n).max(s);
            }
        }
        let b = 1 - a;
        assert_eq!(have[a][a], need[a], "agent {a} holds exactly its own past");
        assert!(
            have[a][b] <= need[b],
            "agent {a} holds no more of agent {b}'s than its past"
        );
        for txn_ops in &ops[b][have[a][b]..need[b]] {
            for (key, op) in txn_ops {
                agents[a].apply(*key, op.clone());
            }
        }
        have[a][b] = need[b];
        let before = agents[a].log.len();
        patch(&mut agents[a], txn);
        ops[a].push(agents[a].log[before..].to_vec());
        have[a][a] += 1;
        seen.push(have[a]);
    }
    let a1 = agents[1].clone();
    agents[0].merge(&a1);
    let a0 = agents[0].clone();
    agents[1].merge(&a0);
    assert_eq!(agents[0].seq, agents[1].seq);
    assert!(agents[0].text() == t["endContent"].as_str().unwrap());
}

/// Keystrokes of one experience, each after the one before with the same right origin,
/// share one run (one segment); an op with another right origin, or of another
/// experience, starts its own, whatever it is typed after.
#[test]
fn typing_is_one_run_while_its_origins_follow() {
    let author = NodeId([1; 32]);
    let d = |depth: u64, op: u32| Dot {
        depth,
        exp: Id([depth as u8; 32]),
        op,
    };
    let e = |dot: Dot| ElemId { dot, offset: 0 };
    let mut seq: Seq<char> = Seq::new();
    let (l, w) = (
        e(d(1, 0)),
        ElemId {
            dot: d(1, 0),
            offset: 1,
        },
    );
    let at = |left, right| Origins { left, right };
    seq.insert(d(1, 0), author, at(None, None), vec!['L', 'W'])
        .unwrap();
    for (k, c) in "abc".chars().enumerate() {
        let origins = seq.origins_at(1 + k).unwrap();
        seq.insert(d(2, k as u32), author, origins, vec![c])
            .unwrap();
    }
    assert_eq!(seq.segments().count(), 3, "L, abc, W");
    // The next op names `c` as its left origin but the end as its right: a run of its own.
    seq.insert(d(2, 3), author, at(Some(e(d(2, 2))), None), vec!['d'])
        .unwrap();
    // And an op of another experience after `d`: its own too.
    seq.insert(d(3, 0), author, at(Some(e(d(2, 3))), Some(w)), vec!['e'])
        .unwrap();
    assert_eq!(seq.iter().collect::<String>(), "LabcdeW");
    let segs: Vec<(ElemId, u32, Option<ElemId>)> = seq
        .segments()
        .map(|s| (s.id(), s.count(), s.right()))
        .collect();
    assert_eq!(
        segs,
        [
            (l, 1, None),
            (e(d(2, 0)), 3, Some(w)),
            (e(d(2, 3)), 1, None),
            (e(d(3, 0)), 1, Some(w)),
            (w, 1, None),
        ]
    );
    // A delete inside the run splits it.
    seq.delete(e(d(2, 1)), 1).unwrap();
    assert_eq!(seq.iter().collect::<String>(), "LacdeW");
    assert_eq!(seq.segments().count(), 7);
}
