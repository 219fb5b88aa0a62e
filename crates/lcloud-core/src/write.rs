//! What a node checks on its own write before it signs it. A write the fold would leave out
//! (this node's chain is quarantined), one that would silently reshape what is stored (a path
//! through a list, `incr` of a string), or one too deeply nested for any reader is refused with
//! the reason, instead of being acknowledged and then lost or misread.
//!
//! These checks run only on the writer's side: a peer's experience that breaks them is still
//! valid and folds by the document rules (see [`crate::doc`]), the same on every node.

use std::collections::HashMap;

use crate::codec::{self, MAX_DEPTH};
use crate::doc::Doc;
use crate::dot::{Dot, ObservesEverything};
use crate::id::NodeId;
use crate::op::{Op, Path};

/// Deepest nesting of lists and maps in one op's value: the experience (`[header, sig, ops]`),
/// its ops array and the op itself take 3 of the decoder's [`MAX_DEPTH`] levels.
pub const VALUE_DEPTH_MAX: usize = MAX_DEPTH - 3;

/// Why a node refuses to sign its own write. Nothing was signed or stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteRefused {
    /// This node's chain forked and the cloud quarantines forked authors: the fold leaves out
    /// every op of this identity from the fork on, so a write would be acknowledged and lost.
    #[error(
        "this node's chain forked at seq {seq} (two different experiences signed at one seq, \
         e.g. by a store restored from a backup and written in both copies), and this cloud \
         quarantines forks: every op of this identity from seq {seq} on is left out of the \
         state, so this write would never apply. Write under a new identity: `lcloud export \
         FILE`, then `lcloud --dir NEW join FILE` (in a members-only cloud an admin must \
         `lcloud member add` the new node)"
    )]
    Quarantined {
        /// The lowest forked seq of this node's chain.
        seq: u64,
    },
    /// This node may not write in this cloud (never admitted, removed, or its key rotated).
    #[error(
        "this node may not write in this cloud: it is not a member (never added, removed by an \
         admin, or its key was rotated away). `lcloud member list` says who may write; an \
         admin adds a node with `lcloud member add NODE`"
    )]
    NotMember,
    /// The write changes membership, and this node is not an admin.
    #[error(
        "only an admin may change membership, and this node is not one (`lcloud member list` \
         names the admins)"
    )]
    NotAdmin,
    /// A membership change no one may make.
    #[error("{0}")]
    BadMembership(&'static str),
    /// The op writes under a path a contract guards: the fold would mask it.
    #[error(
        "cannot write {path}: {guard} is guarded by contract {contract}, and only the \
         contract writes there (call it: `lcloud contract list` names it, `lcloud call NAME \
         FUNCTION ARGS` asks it to write)"
    )]
    Guarded {
        /// The op's path.
        path: Path,
        /// The guarded path at or above it.
        guard: Path,
        /// The contract that guards it.
        contract: crate::id::Id,
    },
    /// A path runs through a value that is not a map.
    #[error(
        "cannot {op} {path}: {at} holds a {found}, not a map (lists and other values are \
         written whole: set {at} to a new value instead)"
    )]
    ThroughNonMap {
        /// The op's name.
        op: &'static str,
        /// The op's path.
        path: Path,
        /// The prefix that holds something else.
        at: Path,
        /// What it holds.
        found: &'static str,
    },
    /// The op's target holds a value the op cannot change without reshaping it.
    #[error("cannot {op} {path}: it holds a {found}, not {wants} (set or del it first)")]
    WrongType {
        /// The op's name.
        op: &'static str,
        /// The op's path.
        path: Path,
        /// What it holds.
        found: &'static str,
        /// What the op needs.
        wants: &'static str,
    },
    /// A list or text edit names a place past the end.
    #[error(
        "cannot {op} {path} at index {index}: it holds {len} {unit} (indexes run from 0 to {len})"
    )]
    Index {
        /// The edit's name.
        op: &'static str,
        /// The edit's path.
        path: Path,
        /// The index asked for (the end of the range, for a range past the end).
        index: usize,
        /// How many elements there are.
        len: usize,
        /// `"characters"` or `"elements"`.
        unit: &'static str,
    },
    /// A list or text edit that cannot be made as asked (nothing to do, or the wrong kind of
    /// value for the path).
    #[error("{0}")]
    BadEdit(String),
    /// An op's value nests deeper than any node can read back.
    #[error(
        "op {index} ({op} {path}) has a value nested {depth} levels deep; at most \
         {VALUE_DEPTH_MAX} are allowed (the decoder reads {MAX_DEPTH} levels, and the \
         experience itself takes 3)"
    )]
    TooDeep {
        /// Index of the op in its experience.
        index: usize,
        /// The op's name.
        op: &'static str,
        /// The op's path (the root for ops without one).
        path: Path,
        /// How deep its value nests (more than this if deeper than can be measured).
        depth: usize,
    },
}

/// Refuses ops whose experience would nest deeper than [`MAX_DEPTH`]: measured on the ops'
/// own canonical bytes with the decoder's walk, so the writer applies exactly the reader's
/// limit. A writer that has the bytes already calls [`crate::PreparedOps::check_nesting`] or
/// [`crate::Unsigned::check_nesting`] instead.
pub fn check_nesting(ops: &[Op]) -> Result<(), WriteRefused> {
    let mut bytes = Vec::new();
    Op::encode_all_into(ops, &mut bytes);
    check_nesting_encoded(ops, &bytes)
}

/// [`check_nesting`] of `ops` whose canonical encoding (an array of ops) is `bytes`.
pub(crate) fn check_nesting_encoded(ops: &[Op], bytes: &[u8]) -> Result<(), WriteRefused> {
    // The experience array holds the ops array: one level more than the ops' own nesting.
    if codec::nesting(bytes).is_some_and(|n| n < MAX_DEPTH) {
        return Ok(());
    }
    // Refused: find the op (only now is each encoded alone, to name it).
    let mut one = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        one.clear();
        op.encode_into(&mut one);
        let op_depth = codec::nesting(&one).unwrap_or(codec::STORED_DEPTH_MAX + 1);
        // Experience and ops array above the op.
        if op_depth + 2 > MAX_DEPTH {
            return Err(WriteRefused::TooDeep {
                index,
                op: op.name(),
                path: op.path().cloned().unwrap_or_else(Path::root),
                depth: op_depth - 1,
            });
        }
    }
    unreachable!("ops nest too deep, so one of them does")
}

/// Checks a node's own writes, one entry per experience in the order they will be written,
/// against the document they fold into: what each path runs through, and what each `incr`,
/// `add` and `remove` finds. Later ops see what earlier accepted ones wrote (applied to a
/// private copy, and only when a later op will look: a lone write costs lookups only); a
/// refused experience changes nothing for the ones after it.
///
/// `doc` must hold at least the leaf at every proper prefix of every path the writes touch,
/// and everything at and below each `incr`/`add`/`remove` target ([`shape_paths`]); the whole
/// current document always does.
pub fn check_shapes(doc: &Doc, batch: &[&[Op]]) -> Vec<Result<(), WriteRefused>> {
    let total: usize = batch.iter().map(|ops| ops.len()).sum();
    let read_later = read_later(batch);
    let mut checked = 0usize;
    // The document with the accepted ops applied, made on the first op that needs applying.
    let mut scratch: Option<Doc> = None;
    let mut results = Vec::with_capacity(batch.len());
    for (k, ops) in batch.iter().enumerate() {
        let start = checked;
        let before = scratch.clone();
        let mut result = Ok(());
        for (i, op) in ops.iter().enumerate() {
            checked += 1;
            if let Err(e) = check_op(scratch.as_ref().unwrap_or(doc), op) {
                result = Err(e);
                break;
            }
            if checked < total
                && read_later[checked - 1]
                && changes_kind(scratch.as_ref().unwrap_or(doc), op)
            {
                // A local write observes everything before it: a dot after every folded one.
                // Each experience of the batch its own id, greater than the one before,
                // so an op names its own experience's elements as it will in the fold.
                let dot = Dot {
                    depth: u64::MAX,
                    exp: crate::dot::local_exp(k),
                    op: i as u32,
                };
                scratch.get_or_insert_with(|| doc.clone()).apply(
                    op,
                    dot,
                    NodeId([0xff; 32]),
                    &ObservesEverything,
                );
            }
        }
        if result.is_err() {
            checked = start + ops.len();
            scratch = before;
        }
        results.push(result);
    }
    results
}

/// Per op of `batch` (flattened): whether an op after it may read what it changes, so that
/// [`check_shapes`] must apply it. An op changes kinds at and below its path (and may turn an
/// absent prefix into a map, which no check tells apart); a check reads the kinds at the
/// proper prefixes of its path and at its path. So only ops on one path, or on paths one of
/// which is a prefix of the other, see each other; ops without a path are always applied.
fn read_later(batch: &[&[Op]]) -> Vec<bool> {
    let ops: Vec<&Op> = batch.iter().flat_map(|ops| ops.iter()).collect();
    // The last op at or below each path, and the last op at each path exactly.
    let mut last_within: HashMap<&[String], usize> = HashMap::new();
    let mut last_at: HashMap<&[String], usize> = HashMap::new();
    for (k, op) in ops.iter().enumerate() {
        let Some(path) = op.path() else { continue };
        for n in 0..=path.0.len() {
            last_within.insert(&path.0[..n], k);
        }
        last_at.insert(&path.0[..], k);
    }
    ops.iter()
        .enumerate()
        .map(|(j, op)| {
            let Some(path) = op.path() else {
                return true;
            };
            let later = |i: Option<&usize>| i.is_some_and(|&i| i > j);
            later(last_within.get(&path.0[..]))
                || (0..path.0.len()).any(|n| later(last_at.get(&path.0[..n])))
        })
        .collect()
}

/// The paths whose leaves [`check_shapes`] of `ops` reads: `(exact, subtrees)`, the proper
/// prefixes of every op path (each leaf alone), and the targets of ops that need a particular
/// type there (with everything below them).
pub fn shape_paths<'a>(ops: impl IntoIterator<Item = &'a Op>) -> (Vec<Path>, Vec<Path>) {
    let mut exact = std::collections::BTreeSet::new();
    let mut subtrees = std::collections::BTreeSet::new();
    for op in ops {
        let Some(path) = op.path() else { continue };
        for n in 0..path.0.len() {
            exact.insert(Path(path.0[..n].into()));
        }
        if wants(op).is_some() {
            subtrees.insert(path.clone());
        }
    }
    (exact.into_iter().collect(), subtrees.into_iter().collect())
}

/// Whether applying `op` to `doc` may change a kind any check reads: a list or text op does
/// not, unless an insert makes its sequence (the path shows nothing, or another kind). A text
/// edited by a hundred splices in one write is then checked without applying them.
fn changes_kind(doc: &Doc, op: &Op) -> bool {
    match op {
        Op::Delete { .. } | Op::Move { .. } => false,
        Op::Insert { path, items, .. } => doc.kind(path) != Some(items.kind().name()),
        _ => true,
    }
}

/// The kinds an op's target may hold, and how to name them, for ops that need one.
fn wants(op: &Op) -> Option<(&'static [&'static str], &'static str)> {
    match op {
        Op::Insert {
            items: crate::seq_op::Items::Text(_),
            ..
        }
        | Op::Delete {
            kind: crate::seq_op::SeqKind::Text,
            ..
        } => Some((&["text"], "a text")),
        Op::Insert { .. } | Op::Delete { .. } | Op::Move { .. } => Some((&["list"], "a list")),
        Op::Incr { .. } => Some((&["counter", "integer"], "a counter")),
        Op::Add { .. } | Op::Remove { .. } => Some((&["set"], "a set")),
        _ => None,
    }
}

fn check_op(doc: &Doc, op: &Op) -> Result<(), WriteRefused> {
    let Some(path) = op.path() else {
        return Ok(());
    };
    for n in 0..path.0.len() {
        let at = Path(path.0[..n].into());
        match doc.kind(&at) {
            None | Some("map") => {}
            Some(found) => {
                return Err(WriteRefused::ThroughNonMap {
                    op: op.name(),
                    path: path.clone(),
                    at,
                    found,
                });
            }
        }
    }
    if let Some((kinds, name)) = wants(op)
        && let Some(found) = doc.kind(path)
        && !kinds.contains(&found)
    {
        return Err(WriteRefused::WrongType {
            op: op.name(),
            path: path.clone(),
            found,
            wants: name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::value::Value;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    fn set(path: &str, json: &str) -> Op {
        Op::Set {
            path: p(path),
            value: Value::from_json(&serde_json::from_str(json).unwrap()).unwrap(),
        }
    }

    /// Writes checked one experience at a time, as one growing batch.
    #[derive(Default)]
    struct Writes(Vec<Vec<Op>>);

    impl Writes {
        fn check(&mut self, ops: &[Op]) -> Result<(), WriteRefused> {
            self.0.push(ops.to_vec());
            let batch: Vec<&[Op]> = self.0.iter().map(Vec::as_slice).collect();
            let result = check_shapes(&Doc::default(), &batch).pop().unwrap();
            if result.is_err() {
                self.0.pop();
            }
            result
        }
    }

    fn nested(depth: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..depth {
            v = Value::List(vec![v]);
        }
        v
    }

    #[test]
    fn a_path_through_a_list_or_a_scalar_is_refused() {
        let mut check = Writes::default();
        check.check(&[set("/list", "[1,2,3]")]).unwrap();
        let err = check.check(&[set("/list/1", "9")]).unwrap_err();
        assert_eq!(
            err,
            WriteRefused::ThroughNonMap {
                op: "set",
                path: p("/list/1"),
                at: p("/list"),
                found: "list",
            }
        );
        assert!(err.to_string().contains("/list holds a list"), "{err}");
        check.check(&[set("/s", "\"x\"")]).unwrap();
        assert!(check.check(&[Op::Del { path: p("/s/a/b") }]).is_err());
        // A map, or nothing yet, can be written through.
        check.check(&[set("/m", "{}"), set("/m/a/b", "1")]).unwrap();
        check.check(&[set("/new/deep/path", "1")]).unwrap();
    }

    #[test]
    fn incr_and_add_need_a_counter_and_a_set() {
        let mut check = Writes::default();
        check
            .check(&[set("/list", "[1]"), set("/n", "5"), set("/m/k", "1")])
            .unwrap();
        let incr = |path: &str| Op::Incr {
            path: p(path),
            by: 1,
        };
        let add = |path: &str| Op::Add {
            path: p(path),
            value: Value::Int(1),
        };
        for (op, found) in [
            (incr("/list"), "list"),
            (incr("/m"), "map"),
            (add("/n"), "integer"),
            (add("/list"), "list"),
        ] {
            match check.check(std::slice::from_ref(&op)) {
                Err(WriteRefused::WrongType { found: f, .. }) => assert_eq!(f, found),
                other => panic!("{op:?}: {other:?}"),
            }
        }
        check
            .check(&[incr("/n"), incr("/c"), add("/tags")])
            .unwrap();
        assert!(check.check(&[incr("/tags")]).is_err());
        assert!(check.check(&[add("/c")]).is_err());
    }

    #[test]
    fn later_ops_of_a_batch_see_earlier_ones() {
        let mut check = Writes::default();
        // Within one experience, and across experiences of one batch.
        assert!(check.check(&[set("/a", "5"), set("/a/b", "1")]).is_err());
        check.check(&[set("/a", "5")]).unwrap();
        assert!(check.check(&[set("/a/b", "1")]).is_err());
        check
            .check(&[Op::Del { path: p("/a") }, set("/a/b", "1")])
            .unwrap();
        // A refused experience changes nothing.
        assert!(
            check
                .check(&[set("/a", "{}"), set("/x", "[1]"), set("/x/0", "2")])
                .is_err()
        );
        assert!(check.check(&[set("/a", "3")]).is_ok());
    }

    /// [`check_shapes`] as it was before it skipped ops no later op reads: every op but the
    /// last applied.
    fn check_shapes_applying_all(doc: &Doc, batch: &[&[Op]]) -> Vec<Result<(), WriteRefused>> {
        let mut scratch = doc.clone();
        let mut applied = 0u32;
        batch
            .iter()
            .map(|ops| {
                let before = scratch.clone();
                for op in ops.iter() {
                    if let Err(e) = check_op(&scratch, op) {
                        scratch = before;
                        return Err(e);
                    }
                    let dot = Dot {
                        depth: u64::MAX,
                        exp: Id([0xff; 32]),
                        op: applied,
                    };
                    applied += 1;
                    scratch.apply(op, dot, NodeId([0; 32]), &ObservesEverything);
                }
                Ok(())
            })
            .collect()
    }

    fn any_op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let paths = ["/a", "/a/b", "/a/b/c", "/a/c", "/b", "/b/a", "/c"];
        (0usize..7, 0usize..7).prop_map(move |(kind, at)| {
            let path = p(paths[at]);
            match kind {
                0 => set(paths[at], "1"),
                1 => set(paths[at], "{\"b\": {\"c\": 2}}"),
                2 => set(paths[at], "[1, 2]"),
                3 => Op::Incr { path, by: 1 },
                4 => Op::Add {
                    path,
                    value: Value::Int(1),
                },
                5 => Op::Del { path },
                _ => set(paths[at], "{}"),
            }
        })
    }

    proptest::proptest! {
        /// Skipping the ops no later op reads gives exactly the answers of applying them all.
        #[test]
        fn skipping_unread_ops_changes_no_answer(
            setup in proptest::collection::vec(any_op(), 0..6),
            batch in proptest::collection::vec(proptest::collection::vec(any_op(), 1..4), 1..8),
        ) {
            let mut doc = Doc::default();
            for (i, op) in setup.iter().enumerate() {
                if check_op(&doc, op).is_ok() {
                    let dot = Dot { depth: 1, exp: Id([1; 32]), op: i as u32 };
                    doc.apply(op, dot, NodeId([0; 32]), &ObservesEverything);
                }
            }
            let refs: Vec<&[Op]> = batch.iter().map(Vec::as_slice).collect();
            let fast = check_shapes(&doc, &refs);
            let all = check_shapes_applying_all(&doc, &refs);
            proptest::prop_assert_eq!(fast, all);
        }
    }

    #[test]
    fn nesting_is_refused_exactly_where_the_decoder_stops() {
        for depth in VALUE_DEPTH_MAX - 2..=VALUE_DEPTH_MAX + 2 {
            let ops = vec![Op::Set {
                path: p("/deep"),
                value: nested(depth),
            }];
            let mut bytes = Vec::new();
            Op::encode_all_into(&ops, &mut bytes);
            // The experience wraps the ops array in one more array.
            let mut exp = vec![0x81];
            exp.extend_from_slice(&bytes);
            let readable = codec::precheck(&exp).is_ok();
            match check_nesting(&ops) {
                Ok(()) => assert!(readable && depth <= VALUE_DEPTH_MAX, "depth {depth}"),
                Err(WriteRefused::TooDeep { depth: d, .. }) => {
                    assert!(!readable && depth > VALUE_DEPTH_MAX, "depth {depth}");
                    assert_eq!(d, depth);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
