//! Tests of the document CRDT (`doc.rs`).

use super::*;
use crate::leaf::LeafRecord;

fn dot(depth: u64, op: u32) -> Dot {
    Dot {
        depth,
        exp: Id([depth as u8; 32]),
        op,
    }
}

fn set(doc: &mut Doc, path: &str, value: Value, depth: u64) {
    let op = Op::Set {
        path: Path::parse(path).unwrap(),
        value,
    };
    doc.apply(&op, dot(depth, 0), NodeId([0; 32]), &ObservesEverything);
}

/// The count of leaves below each path follows sets of maps, scalars over maps, deletes
/// and leaves read back, and a scalar set over a map still removes what it observed below
/// (`has_below` checks itself against a scan of the leaves in test builds).
#[test]
fn leaves_below_a_path_are_counted_through_every_change() {
    let mut doc = Doc::default();
    let map = Value::from_json(&serde_json::json!({"b": {"c": 1, "d": 2}, "e": 3})).unwrap();
    set(&mut doc, "/a", map, 1);
    assert!(doc.has_below(&Path::parse("/a").unwrap()));
    assert!(doc.has_below(&Path::parse("/a/b").unwrap()));
    assert!(!doc.has_below(&Path::parse("/a/e").unwrap()));
    assert_eq!(doc.below.get(&Path::parse("/a").unwrap()), Some(&4));
    set(&mut doc, "/a/b", Value::Int(7), 2);
    assert!(!doc.has_below(&Path::parse("/a/b").unwrap()));
    assert_eq!(
        doc.materialize(&Path::parse("/a/b").unwrap()),
        Some(Value::Int(7))
    );
    doc.apply(
        &Op::Del {
            path: Path::parse("/a").unwrap(),
        },
        dot(3, 0),
        NodeId([0; 32]),
        &ObservesEverything,
    );
    assert!(doc.is_empty());
    assert!(doc.below.is_empty(), "{:?}", doc.below);
    let mut read = Doc::default();
    let mut leaf = Leaf::default();
    leaf.insert_reg(dot(4, 0), Value::Int(1));
    read.insert_leaf(Path::parse("/x/y").unwrap(), leaf.clone());
    read.insert_leaf(Path::parse("/x/y").unwrap(), leaf);
    assert_eq!(read.below.get(&Path::parse("/x").unwrap()), Some(&1));
}

#[test]
fn a_leaf_encodes_as_its_record_and_decodes_back() {
    let mut leaf = Leaf::default();
    leaf.insert_reg(dot(1, 0), Value::from("x".repeat(40).as_str()));
    leaf.insert_reg(dot(2, 1), Value::from(7i64));
    leaf.incs.insert(dot(3, 0), -4);
    leaf.incs.insert(dot(4, 2), 9);
    leaf.inc_sum = 5;
    leaf.elems.insert(vec![1, 2, 3], vec![dot(5, 0), dot(6, 1)]);
    leaf.elems.insert(vec![0xff], vec![dot(7, 0)]);
    let record: LeafRecord = (
        leaf.regs.clone(),
        leaf.incs.iter().map(|(d, n)| (*d, *n)).collect(),
        leaf.elems
            .iter()
            .map(|(k, ds)| (crate::codec::ByteBuf(k.clone()), ds.clone()))
            .collect(),
    );
    let bytes = leaf.to_bytes();
    assert_eq!(bytes, crate::codec::to_canonical(&record));
    assert_eq!(Leaf::from_bytes(&bytes).unwrap(), leaf);
    // Every CBOR length boundary of depths, op indexes, amounts and list lengths.
    let edges = [
        0u64,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        u64::MAX,
    ];
    let mut big = Leaf::default();
    for (i, &e) in edges.iter().enumerate() {
        let d = Dot {
            depth: e,
            exp: Id([i as u8; 32]),
            op: e.min(u64::from(u32::MAX)) as u32,
        };
        big.insert_reg(d, Value::Int(e as i64));
        for k in 0..30u64 {
            big.incs.insert(
                Dot { op: k as u32, ..d },
                (e as i64).wrapping_neg() ^ k as i64,
            );
        }
        big.elems.insert(e.to_be_bytes().to_vec(), vec![d; 25]);
    }
    let record: LeafRecord = (
        big.regs.clone(),
        big.incs.iter().map(|(d, n)| (*d, *n)).collect(),
        big.elems
            .iter()
            .map(|(k, ds)| (crate::codec::ByteBuf(k.clone()), ds.clone()))
            .collect(),
    );
    assert_eq!(big.to_bytes(), crate::codec::to_canonical(&record));
}

proptest::proptest! {
    /// An experience applied at once (runs of increments added together) leaves the
    /// document op-by-op application leaves, with sums that overflow an `i64` and earlier
    /// elements of the same experience (a run split by another op) among the cases.
    #[test]
    fn an_experience_applied_at_once_equals_its_ops_one_by_one(
        before in proptest::collection::vec((0usize..3, 0usize..5), 0..6),
        ops in proptest::collection::vec((0usize..4, 0usize..3, 0usize..5), 1..40),
    ) {
        let paths = ["/a", "/b", "/a/b"];
        let bys = [1, -1, i64::MAX, i64::MIN, 7];
        let op = |kind: usize, at: usize, n: usize| {
            let path = Path::parse(paths[at]).unwrap();
            match kind {
                0 | 1 => Op::Incr { path, by: bys[n] },
                2 => Op::Set { path, value: Value::Int(n as i64) },
                _ => Op::Add { path, value: Value::Int(n as i64) },
            }
        };
        let mut base = Doc::default();
        for (i, (at, n)) in before.iter().enumerate() {
            base.apply(&op(0, *at, *n), dot(1, i as u32), NodeId([0; 32]), &ObservesEverything);
        }
        let ops: Vec<Op> = ops.iter().map(|(k, at, n)| op(*k, *at, *n)).collect();
        let mut one_by_one = base.clone();
        for (i, o) in ops.iter().enumerate() {
            one_by_one.apply(o, dot(2, i as u32), NodeId([0; 32]), &ObservesEverything);
        }
        let mut at_once = base;
        at_once.apply_experience(&ops, 2, Id([2; 32]), NodeId([2; 32]), &ObservesEverything);
        proptest::prop_assert_eq!(at_once, one_by_one);
    }
}
