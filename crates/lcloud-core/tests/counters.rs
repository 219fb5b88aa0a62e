//! Counters keep one element per experience: an experience's increments of one counter are
//! merged as they fold (`Leaf::add_increment`), and the merge changes nothing anyone can
//! observe. Checked against the definition: an increment counts unless a removing op (a `set`
//! or `del` at or above its path) observed it, that is, the remover's experience follows the
//! increment's, or it is the same experience at a later op.

mod common;

use common::*;
use lcloud_core::{Id, Op, Replica};

fn incr(path: &str, by: i64) -> Op {
    Op::Incr { path: p(path), by }
}

fn del(path: &str) -> Op {
    Op::Del { path: p(path) }
}

fn counter(r: &Replica, path: &str) -> i128 {
    r.state().doc.leaf(&p(path)).map_or(0, |l| l.inc_sum)
}

fn elements(r: &Replica, path: &str) -> usize {
    r.state().doc.leaf(&p(path)).map_or(0, |l| l.incs.len())
}

#[test]
fn an_experience_of_many_increments_keeps_one_element() {
    let mut r = Replica::new(genesis()).unwrap();
    r.write(&key(1), (0..1000).map(|_| incr("/c", 1)).collect())
        .unwrap();
    assert_eq!(counter(&r, "/c"), 1000);
    assert_eq!(elements(&r, "/c"), 1);
    // A second experience keeps its own element (another experience may observe one and
    // not the other).
    r.write(&key(1), vec![incr("/c", 2), incr("/c", 3)])
        .unwrap();
    assert_eq!((counter(&r, "/c"), elements(&r, "/c")), (1005, 2));
    // A removal between increments of one experience separates them: the later ones count.
    r.write(
        &key(1),
        vec![
            incr("/c", 1),
            incr("/c", 2),
            del("/c"),
            incr("/c", 4),
            incr("/c", 8),
        ],
    )
    .unwrap();
    assert_eq!((counter(&r, "/c"), elements(&r, "/c")), (12, 1));
    // Sums that leave an i64 are not merged; the counter is still exact.
    r.write(
        &key(1),
        vec![del("/c"), incr("/c", i64::MAX), incr("/c", 2)],
    )
    .unwrap();
    assert_eq!(counter(&r, "/c"), i128::from(i64::MAX) + 2);
    assert_eq!(elements(&r, "/c"), 2);
    let leaf = r.state().doc.leaf(&p("/c")).unwrap().clone();
    let back = lcloud_core::Leaf::from_bytes(&leaf.to_bytes()).unwrap();
    assert_eq!(back, leaf, "a merged leaf encodes and decodes as it is");
}

#[test]
fn merging_an_old_leaf_gives_what_the_fold_gives() {
    // One element per op, as format 4 stored them: merged when read, they must be exactly
    // what the fold now keeps.
    let mut r = Replica::new(genesis()).unwrap();
    let ops = vec![
        incr("/c", 5),
        incr("/c", -2),
        incr("/c", i64::MAX),
        incr("/c", 1),
    ];
    let exp = r.write(&key(1), ops.clone()).unwrap();
    let folded = r.state().doc.leaf(&p("/c")).unwrap().clone();
    let mut old = lcloud_core::Leaf::default();
    for (i, op) in ops.iter().enumerate() {
        let Op::Incr { by, .. } = op else {
            unreachable!()
        };
        let dot = lcloud_core::Dot {
            depth: folded.incs.keys().next().unwrap().depth,
            exp: exp.id(),
            op: i as u32,
        };
        old.incs.insert(dot, *by);
        old.inc_sum += i128::from(*by);
    }
    assert_eq!(old.incs.len(), 4);
    old.merge_increments();
    assert_eq!(old, folded);
}

/// One increment or removal, as written: (experience, op index, path, increment or removal).
struct Written {
    exp: Id,
    op: u32,
    path: &'static str,
    by: Option<i64>,
}

const PATHS: [&str; 3] = ["/c", "/c/x", "/d"];

fn covers(remover: &str, path: &str) -> bool {
    path == remover || path.starts_with(&format!("{remover}/"))
}

#[test]
fn merged_counters_equal_the_definition_in_any_history() {
    for seed in 0..96u64 {
        let mut rng = Rng(seed * 7919 + 1);
        let g = genesis();
        let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::new(g.clone()).unwrap()).collect();
        let mut written: Vec<Written> = Vec::new();
        for _ in 0..40 {
            let n = rng.below(3) as usize;
            let k = 1 + rng.below(6) as usize;
            let mut ops = Vec::new();
            let mut shape = Vec::new();
            for _ in 0..k {
                let path = PATHS[rng.below(3) as usize];
                if rng.chance(20) {
                    ops.push(del(path));
                    shape.push((path, None));
                } else {
                    let by = rng.below(9) as i64 - 3;
                    ops.push(incr(path, by));
                    shape.push((path, Some(by)));
                }
            }
            // A counter under a path that is counted too is a shape the writer refuses;
            // such a draft is skipped.
            let Ok(exp) = replicas[n].write(&key(n as u8 + 1), ops) else {
                continue;
            };
            for (i, (path, by)) in shape.into_iter().enumerate() {
                written.push(Written {
                    exp: exp.id(),
                    op: i as u32,
                    path,
                    by,
                });
            }
            if rng.chance(30) {
                let m = rng.below(3) as usize;
                if m != n {
                    let other = replicas[m].clone();
                    replicas[n].merge(&other);
                }
            }
        }
        let (a, b) = replicas.split_at_mut(1);
        for r in b.iter() {
            a[0].merge(r);
        }
        let all = &a[0];
        let lattice = all.lattice();
        let follows =
            |later: &Id, earlier: &Id| lattice.happened_before(earlier, later) == Some(true);
        for path in PATHS {
            let expected: i128 = written
                .iter()
                .filter(|w| w.path == path)
                .filter_map(|w| w.by.map(|by| (w, by)))
                .filter(|(w, _)| {
                    !written.iter().any(|r| {
                        r.by.is_none()
                            && covers(r.path, w.path)
                            && (follows(&r.exp, &w.exp) || (r.exp == w.exp && r.op > w.op))
                    })
                })
                .map(|(_, by)| i128::from(by))
                .sum();
            assert_eq!(counter(all, path), expected, "seed {seed}: {path}");
            // At most one element per experience.
            if let Some(leaf) = all.state().doc.leaf(&p(path)) {
                let exps: std::collections::BTreeSet<Id> =
                    leaf.incs.keys().map(|d| d.exp).collect();
                assert_eq!(exps.len(), leaf.incs.len(), "seed {seed}: {path}");
            }
        }
        // Every replica that merges everything agrees, byte for byte.
        for r in b.iter_mut() {
            r.merge(all);
            assert_eq!(r.root(), all.root(), "seed {seed}");
        }
    }
}
