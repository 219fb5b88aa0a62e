//! Ops: the small, compactly encoded instructions an experience carries (document paths are
//! `path.rs`).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{Id, NodeId};
use crate::seq_op::{Between, ElemRef, Items, SeqKind};
use crate::value::Value;

pub use crate::path::{PATH_SEGMENT_BYTES_MAX, PATH_SEGMENTS_MAX, Path, PathError};

/// What the cloud does with an author's experiences once that author has forked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForkPolicy {
    /// Both branches fold as concurrent experiences (the default).
    #[default]
    Concurrent,
    /// The forked author's ops from the fork point on are left out of the fold.
    Quarantine,
}

/// The body of a genesis experience: what a cloud is when it begins.
#[derive(Clone, Debug, PartialEq)]
pub struct Genesis {
    /// A human name for the cloud.
    pub name: String,
    /// The initial document (a map, usually empty).
    pub init: Value,
    /// Who may write besides the creator; `None` means the cloud is open to anyone.
    pub members: Option<Vec<NodeId>>,
    /// What happens when an author forks.
    pub fork_policy: ForkPolicy,
}

impl Genesis {
    /// An open cloud named `name`: anyone holding its genesis may write, the document starts
    /// as an empty map, and forks are kept as concurrent branches.
    pub fn open(name: impl Into<String>) -> Genesis {
        Genesis {
            name: name.into(),
            init: Value::map(),
            members: None,
            fork_policy: ForkPolicy::Concurrent,
        }
    }

    /// A cloud named `name` that only its creator and `members` may write (until an admin
    /// changes that): [`Genesis::open`] otherwise.
    pub fn members_only(name: impl Into<String>, members: Vec<NodeId>) -> Genesis {
        Genesis {
            members: Some(members),
            ..Genesis::open(name)
        }
    }
}

/// One instruction in an experience.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Register write: `path` holds `value` (maps are written key by key).
    Set {
        /// Where.
        path: Path,
        /// What.
        value: Value,
    },
    /// Removes everything at and below `path` that this experience has seen.
    Del {
        /// Where.
        path: Path,
    },
    /// PN-counter increment (negative to decrement).
    Incr {
        /// Where.
        path: Path,
        /// By how much.
        by: i64,
    },
    /// Adds `value` to the add-wins set at `path`.
    Add {
        /// Where.
        path: Path,
        /// The element.
        value: Value,
    },
    /// Removes the adds of `value` this experience has seen from the set at `path`.
    Remove {
        /// Where.
        path: Path,
        /// The element.
        value: Value,
    },
    /// Inserts `items` into the text or list at `path` (a string into text, values into a
    /// list; the first insert makes it), between two elements: see [`crate::seq`].
    Insert {
        /// Where.
        path: Path,
        /// Between which elements.
        at: Between,
        /// What.
        items: Items,
    },
    /// Deletes elements of the text or list at `path`: each range is `len` consecutive
    /// elements of one insert, from the one named.
    Delete {
        /// Where.
        path: Path,
        /// Text or list.
        kind: SeqKind,
        /// Which elements.
        ranges: Vec<(ElemRef, u32)>,
    },
    /// Moves element `elem` of the list at `path` to a new place. Of concurrent moves of one
    /// element, the last in canonical order wins; a delete wins over a move.
    Move {
        /// Where.
        path: Path,
        /// The element moved.
        elem: ElemRef,
        /// Between which elements it goes.
        at: Between,
    },
    /// Calls an order-sensitive morphism, named by its content id.
    Call {
        /// Which morphism.
        morphism: Id,
        /// Its arguments.
        args: Value,
    },
    /// Deploys a WebAssembly contract: its code, metered under fuel rule `rule`, and the
    /// arguments of its `init` function. The contract's id is [`crate::contract_id`] of the
    /// three; calls name it by that id.
    Deploy {
        /// The fuel rule the code is metered under (see docs/contracts.md).
        rule: u32,
        /// The WebAssembly module.
        code: Vec<u8>,
        /// The arguments of the contract's `init` function.
        init: Value,
    },
    /// Only in a genesis experience, as its single op.
    Genesis(Genesis),
    /// Lets `node` write (admins only).
    AddMember {
        /// The new member.
        node: NodeId,
    },
    /// Takes away `node`'s right to write, and its admin right if it had one (admins only;
    /// never the genesis author, which leaves only by rotating its key). Its experiences
    /// concurrent with the removal are left out of the fold (docs/security.md).
    RemoveMember {
        /// The member removed.
        node: NodeId,
    },
    /// Makes `node` an admin, and a member (admins only).
    AddAdmin {
        /// The new admin.
        node: NodeId,
    },
    /// Takes away `node`'s admin right; it stays a member (admins only; never the genesis
    /// author).
    RemoveAdmin {
        /// The admin demoted.
        node: NodeId,
    },
    /// The author hands its rights to a new key and stops writing: signed by the old key,
    /// it grants `to` membership (and admin, if the author was one), and nothing the old key
    /// writes after it, or concurrently with it, is folded.
    RotateKey {
        /// The new key.
        to: NodeId,
    },
    /// The author's attestation of a checkpoint: the state folded from every experience of
    /// causal depth at most `depth` has root `root`. Members write one for each checkpoint
    /// once everything up to it is stable (docs/protocol.md, "Checkpoints"); a checkpoint
    /// every current member attested with one root is final. Changes nothing in the state.
    Attest {
        /// The checkpoint: a multiple of the checkpoint spacing.
        depth: u64,
        /// The state root at the checkpoint, as the author folded it.
        root: Id,
    },
}

impl Op {
    /// An op from its JSON form, as the CLI's `batch` and the HTTP API take it:
    /// `{"op":"set","path":"/a","value":1}`, `{"op":"incr","path":"/n","by":2}` (`by`
    /// defaults to 1), `add` and `remove` with a `value`, `del` with a `path`, and
    /// `{"op":"add_member","node":"<64 hex digits>"}`. The error says what is wrong.
    pub fn from_json(j: &serde_json::Value) -> Result<Op, String> {
        let Some(obj) = j.as_object() else {
            return Err(format!(
                "an op is an object like {{\"op\":\"set\",\"path\":\"/a\",\"value\":1}}, not {j}"
            ));
        };
        // Each kind takes exactly its fields: a misspelt or misplaced one is an error, not
        // something silently ignored.
        let allowed: &[&str] = match obj.get("op").and_then(|o| o.as_str()) {
            Some("set" | "add" | "remove") => &["op", "path", "value"],
            Some("del") => &["op", "path"],
            Some("incr") => &["op", "path", "by"],
            Some("add_member" | "remove_member" | "add_admin" | "remove_admin") => &["op", "node"],
            Some("rotate_key") => &["op", "to"],
            _ => &["op", "path", "value", "by", "node", "to"],
        };
        if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{extra:?} is not a field of this op (it takes {})",
                allowed.join(", ")
            ));
        }
        let field = |k: &str| j.get(k).ok_or_else(|| format!("missing {k:?} in {j}"));
        let node = |k: &str| -> Result<NodeId, String> {
            let hex = field(k)?
                .as_str()
                .ok_or_else(|| format!("{k:?} must be a string"))?;
            NodeId::from_hex(hex)
                .ok_or_else(|| format!("bad node id {hex:?}: give all 64 hex digits"))
        };
        match j.get("op").and_then(|o| o.as_str()) {
            Some("add_member") => {
                return Ok(Op::AddMember {
                    node: node("node")?,
                });
            }
            Some("remove_member") => {
                return Ok(Op::RemoveMember {
                    node: node("node")?,
                });
            }
            Some("add_admin") => {
                return Ok(Op::AddAdmin {
                    node: node("node")?,
                });
            }
            Some("remove_admin") => {
                return Ok(Op::RemoveAdmin {
                    node: node("node")?,
                });
            }
            Some("rotate_key") => return Ok(Op::RotateKey { to: node("to")? }),
            _ => {}
        }
        let pointer = field("path")?
            .as_str()
            .ok_or_else(|| "\"path\" must be a string".to_owned())?;
        let path = Path::parse(pointer).map_err(|e| {
            format!("bad path {pointer:?} ({e}; paths are JSON Pointers like /users/alice)")
        })?;
        let value = || -> Result<Value, String> {
            Value::from_json(field("value")?).map_err(|e| e.to_string())
        };
        let op = field("op")?.as_str().unwrap_or_default();
        Ok(match op {
            "set" => Op::Set {
                path,
                value: value()?,
            },
            "add" => Op::Add {
                path,
                value: value()?,
            },
            "remove" => Op::Remove {
                path,
                value: value()?,
            },
            "del" => Op::Del { path },
            "incr" => Op::Incr {
                path,
                by: match j.get("by") {
                    None => 1,
                    // JSON's integers include `3.0` (JSON Schema says so too).
                    Some(b) => b
                        .as_i64()
                        .or_else(|| {
                            b.as_f64()
                                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e18)
                                .map(|x| x as i64)
                        })
                        .ok_or_else(|| "\"by\" must be a 64-bit integer".to_owned())?,
                },
            },
            other => {
                return Err(format!(
                    "unknown op {other:?} (set, incr, add, remove, del, add_member, \
                     remove_member, add_admin, remove_admin, rotate_key)"
                ));
            }
        })
    }

    /// Whether the op folds in canonical order (a call or a deploy), so a write holding it
    /// needs the whole history to apply, never the document alone.
    pub fn is_ordered(&self) -> bool {
        matches!(self, Op::Call { .. } | Op::Deploy { .. })
    }

    /// Whether a write holding this op needs the whole history, not the document alone: a
    /// call or a deploy (they fold in canonical order), a revocation (the fold may then
    /// leave out experiences it holds), or an attestation (what it settles is read off the
    /// lattice: `Lattice::settles`).
    pub fn needs_history(&self) -> bool {
        self.is_ordered() || self.revokes() || matches!(self, Op::Attest { .. })
    }

    /// Whether only an admin may write this op (it changes who may write).
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            Op::AddMember { .. }
                | Op::RemoveMember { .. }
                | Op::AddAdmin { .. }
                | Op::RemoveAdmin { .. }
        )
    }

    /// Whether this op takes a right away (a removal, a demotion or a key rotation): the
    /// fold may then leave out experiences it already holds.
    pub fn revokes(&self) -> bool {
        matches!(
            self,
            Op::RemoveMember { .. } | Op::RemoveAdmin { .. } | Op::RotateKey { .. }
        )
    }

    /// Whether this op changes membership (and touches no document path).
    pub fn is_membership(&self) -> bool {
        self.needs_admin() || matches!(self, Op::RotateKey { .. })
    }

    /// The document path this op touches, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Op::Set { path, .. }
            | Op::Del { path }
            | Op::Incr { path, .. }
            | Op::Add { path, .. }
            | Op::Remove { path, .. }
            | Op::Insert { path, .. }
            | Op::Delete { path, .. }
            | Op::Move { path, .. } => Some(path),
            _ => None,
        }
    }

    /// A short name, as used in the CLI and in `lcloud batch` lines.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "set",
            Op::Del { .. } => "del",
            Op::Incr { .. } => "incr",
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Insert { .. } => "insert",
            Op::Delete { .. } => "delete",
            Op::Move { .. } => "move",
            Op::Call { .. } => "call",
            Op::Deploy { .. } => "deploy",
            Op::Genesis(_) => "genesis",
            Op::AddMember { .. } => "add_member",
            Op::RemoveMember { .. } => "remove_member",
            Op::AddAdmin { .. } => "add_admin",
            Op::RemoveAdmin { .. } => "remove_admin",
            Op::RotateKey { .. } => "rotate_key",
            Op::Attest { .. } => "attest",
        }
    }
}

// Wire tags. Never renumber: they are part of format version 1.
const TAG_SET: u8 = 0;
const TAG_DEL: u8 = 1;
const TAG_INCR: u8 = 2;
const TAG_ADD: u8 = 3;
const TAG_REMOVE: u8 = 4;
const TAG_CALL: u8 = 5;
const TAG_GENESIS: u8 = 6;
const TAG_ADD_MEMBER: u8 = 7;
const TAG_DEPLOY: u8 = 8;
const TAG_REMOVE_MEMBER: u8 = 9;
const TAG_ADD_ADMIN: u8 = 10;
const TAG_REMOVE_ADMIN: u8 = 11;
const TAG_ROTATE_KEY: u8 = 12;
const TAG_ATTEST: u8 = 13;
const TAG_INSERT: u8 = 14;
const TAG_DELETE: u8 = 15;
const TAG_MOVE: u8 = 16;

impl Op {
    /// Appends the canonical DAG-CBOR of this op to `out` (what serde's encoder gives, written
    /// directly; see [`Value::encode_into`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use crate::codec::{write_bytes, write_head, write_text};
        let path = |out: &mut Vec<u8>, p: &Path| {
            write_head(out, 4, p.0.len() as u64);
            for seg in p.0.iter() {
                write_text(out, seg);
            }
        };
        match self {
            Op::Set { path: p, value }
            | Op::Add { path: p, value }
            | Op::Remove { path: p, value } => {
                let tag = match self {
                    Op::Set { .. } => TAG_SET,
                    Op::Add { .. } => TAG_ADD,
                    _ => TAG_REMOVE,
                };
                out.extend_from_slice(&[0x83, tag]);
                path(out, p);
                value.encode_into(out);
            }
            Op::Del { path: p } => {
                out.extend_from_slice(&[0x82, TAG_DEL]);
                path(out, p);
            }
            Op::Incr { path: p, by } => {
                out.extend_from_slice(&[0x83, TAG_INCR]);
                path(out, p);
                Value::Int(*by).encode_into(out);
            }
            Op::Call { morphism, args } => {
                out.extend_from_slice(&[0x83, TAG_CALL]);
                write_bytes(out, morphism.as_bytes());
                args.encode_into(out);
            }
            Op::AddMember { node: n }
            | Op::RemoveMember { node: n }
            | Op::AddAdmin { node: n }
            | Op::RemoveAdmin { node: n }
            | Op::RotateKey { to: n } => {
                out.extend_from_slice(&[0x82, self.membership_tag()]);
                write_bytes(out, n.as_bytes());
            }
            Op::Attest { depth, root } => {
                out.extend_from_slice(&[0x83, TAG_ATTEST]);
                write_head(out, 0, *depth);
                write_bytes(out, root.as_bytes());
            }
            Op::Deploy { rule, code, init } => {
                out.extend_from_slice(&[0x84, TAG_DEPLOY]);
                write_head(out, 0, u64::from(*rule));
                write_bytes(out, code);
                init.encode_into(out);
            }
            Op::Insert { .. } | Op::Delete { .. } | Op::Move { .. } => {
                serde_ipld_dagcbor::to_writer(&mut *out, self).expect("a vector cannot fail");
            }
            Op::Genesis(g) => {
                out.extend_from_slice(&[0x85, TAG_GENESIS]);
                write_text(out, &g.name);
                g.init.encode_into(out);
                match &g.members {
                    None => out.push(0xf6),
                    Some(members) => {
                        write_head(out, 4, members.len() as u64);
                        for m in members {
                            write_bytes(out, m.as_bytes());
                        }
                    }
                }
                out.push(match g.fork_policy {
                    ForkPolicy::Concurrent => 0,
                    ForkPolicy::Quarantine => 1,
                });
            }
        }
    }

    /// The wire tag of a membership op (an op whose only field is a node id).
    fn membership_tag(&self) -> u8 {
        match self {
            Op::AddMember { .. } => TAG_ADD_MEMBER,
            Op::RemoveMember { .. } => TAG_REMOVE_MEMBER,
            Op::AddAdmin { .. } => TAG_ADD_ADMIN,
            Op::RemoveAdmin { .. } => TAG_REMOVE_ADMIN,
            Op::RotateKey { .. } => TAG_ROTATE_KEY,
            _ => unreachable!("only membership ops have a node as their one field"),
        }
    }

    /// Appends the canonical DAG-CBOR of a batch of ops (an array) to `out`.
    pub fn encode_all_into(ops: &[Op], out: &mut Vec<u8>) {
        crate::codec::write_head(out, 4, ops.len() as u64);
        for op in ops {
            op.encode_into(out);
        }
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Op::Set { path, value } => (TAG_SET, path, value).serialize(s),
            Op::Del { path } => (TAG_DEL, path).serialize(s),
            Op::Incr { path, by } => (TAG_INCR, path, by).serialize(s),
            Op::Add { path, value } => (TAG_ADD, path, value).serialize(s),
            Op::Remove { path, value } => (TAG_REMOVE, path, value).serialize(s),
            Op::Call { morphism, args } => (TAG_CALL, morphism, args).serialize(s),
            Op::AddMember { node: n }
            | Op::RemoveMember { node: n }
            | Op::AddAdmin { node: n }
            | Op::RemoveAdmin { node: n }
            | Op::RotateKey { to: n } => (self.membership_tag(), n).serialize(s),
            Op::Deploy { rule, code, init } => {
                (TAG_DEPLOY, rule, crate::codec::ByteRef(code), init).serialize(s)
            }
            Op::Attest { depth, root } => (TAG_ATTEST, depth, root).serialize(s),
            Op::Insert { path, at, items } => {
                (TAG_INSERT, path, at.left, at.right, items).serialize(s)
            }
            Op::Delete { path, kind, ranges } => (TAG_DELETE, path, kind, ranges).serialize(s),
            Op::Move { path, elem, at } => (TAG_MOVE, path, elem, at.left, at.right).serialize(s),
            Op::Genesis(g) => {
                let mut t = s.serialize_tuple(5)?;
                t.serialize_element(&TAG_GENESIS)?;
                t.serialize_element(&g.name)?;
                t.serialize_element(&g.init)?;
                t.serialize_element(&g.members)?;
                t.serialize_element(&match g.fork_policy {
                    ForkPolicy::Concurrent => 0u8,
                    ForkPolicy::Quarantine => 1u8,
                })?;
                t.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(OpVisitor)
    }
}

struct OpVisitor;

fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    what: &str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom(format!("op is missing its {what}")))
}

impl<'de> Visitor<'de> for OpVisitor {
    type Value = Op;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an op: [tag, fields…]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Op, A::Error> {
        let tag: u8 = next(&mut seq, "tag")?;
        let op = match tag {
            TAG_SET => Op::Set {
                path: next(&mut seq, "path")?,
                value: next(&mut seq, "value")?,
            },
            TAG_DEL => Op::Del {
                path: next(&mut seq, "path")?,
            },
            TAG_INCR => Op::Incr {
                path: next(&mut seq, "path")?,
                by: next(&mut seq, "amount")?,
            },
            TAG_ADD => Op::Add {
                path: next(&mut seq, "path")?,
                value: next(&mut seq, "value")?,
            },
            TAG_REMOVE => Op::Remove {
                path: next(&mut seq, "path")?,
                value: next(&mut seq, "value")?,
            },
            TAG_CALL => Op::Call {
                morphism: next(&mut seq, "morphism")?,
                args: next(&mut seq, "args")?,
            },
            TAG_ADD_MEMBER => Op::AddMember {
                node: next(&mut seq, "node")?,
            },
            TAG_REMOVE_MEMBER => Op::RemoveMember {
                node: next(&mut seq, "node")?,
            },
            TAG_ADD_ADMIN => Op::AddAdmin {
                node: next(&mut seq, "node")?,
            },
            TAG_REMOVE_ADMIN => Op::RemoveAdmin {
                node: next(&mut seq, "node")?,
            },
            TAG_ROTATE_KEY => Op::RotateKey {
                to: next(&mut seq, "new key")?,
            },
            TAG_ATTEST => Op::Attest {
                depth: next(&mut seq, "depth")?,
                root: next(&mut seq, "root")?,
            },
            TAG_INSERT => Op::Insert {
                path: next(&mut seq, "path")?,
                at: Between {
                    left: next(&mut seq, "left origin")?,
                    right: next(&mut seq, "right origin")?,
                },
                items: next(&mut seq, "items")?,
            },
            TAG_DELETE => Op::Delete {
                path: next(&mut seq, "path")?,
                kind: next(&mut seq, "kind")?,
                ranges: next(&mut seq, "ranges")?,
            },
            TAG_MOVE => Op::Move {
                path: next(&mut seq, "path")?,
                elem: next(&mut seq, "element")?,
                at: Between {
                    left: next(&mut seq, "left origin")?,
                    right: next(&mut seq, "right origin")?,
                },
            },
            TAG_DEPLOY => Op::Deploy {
                rule: next(&mut seq, "fuel rule")?,
                code: next::<A, crate::codec::ByteBuf>(&mut seq, "code")?.0,
                init: next(&mut seq, "init arguments")?,
            },
            TAG_GENESIS => Op::Genesis(Genesis {
                name: next(&mut seq, "name")?,
                init: next(&mut seq, "initial value")?,
                members: next(&mut seq, "members")?,
                fork_policy: match next::<A, u8>(&mut seq, "fork policy")? {
                    0 => ForkPolicy::Concurrent,
                    1 => ForkPolicy::Quarantine,
                    other => {
                        return Err(de::Error::custom(format!("unknown fork policy {other}")));
                    }
                },
            }),
            other => return Err(de::Error::custom(format!("unknown op tag {other}"))),
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("op has extra fields"));
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{from_canonical, to_canonical};
    use proptest::prelude::*;

    /// Each op kind reads exactly its own fields from JSON.
    #[test]
    fn an_op_from_json_takes_exactly_its_fields() {
        let op = |s: &str| Op::from_json(&serde_json::from_str(s).unwrap());
        assert!(op(r#"{"op":"set","path":"/a","value":1}"#).is_ok());
        assert!(op(r#"{"op":"incr","path":"/n"}"#).is_ok());
        let err = op(r#"{"op":"set","path":"/a","value":1,"by":{}}"#).unwrap_err();
        assert!(err.contains("\"by\" is not a field of this op"), "{err}");
        assert!(op(r#"{"op":"del","path":"/a","value":1}"#).is_err());
        assert!(op(r#"{"op":"add_member","node":"00","path":"/a"}"#).is_err());
        let key = "ab".repeat(32);
        let rotate = op(&format!(r#"{{"op":"rotate_key","to":"{key}"}}"#)).unwrap();
        assert_eq!(
            rotate,
            Op::RotateKey {
                to: NodeId([0xab; 32])
            }
        );
        assert!(op(&format!(r#"{{"op":"rotate_key","node":"{key}"}}"#)).is_err());
        let remove = op(&format!(r#"{{"op":"remove_member","node":"{key}"}}"#)).unwrap();
        assert!(remove.needs_admin() && remove.revokes());
        assert!(op(r#"[1]"#).unwrap_err().contains("an op is an object"));
        assert!(
            op(r#"{"op":"set","path":"/a"}"#)
                .unwrap_err()
                .contains("missing")
        );
    }

    proptest! {
        /// The written-out order of paths is exactly the order of their segment lists, for
        /// segments short and long (the two ways a segment is compared), prefixes included.
        #[test]
        fn paths_order_as_their_segment_lists(
            a in proptest::collection::vec("[a-c]{0,3}|[a-c\u{e9}]{15,18}", 0..4),
            b in proptest::collection::vec("[a-c]{0,3}|[a-c\u{e9}]{15,18}", 0..4),
            cut in 0usize..4,
        ) {
            // Often one is a prefix of the other, or they share one.
            let b = if cut % 2 == 0 { a.iter().take(cut).cloned().chain(b).collect() } else { b };
            let (pa, pb) = (Path::from(a.clone()), Path::from(b.clone()));
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            prop_assert_eq!(pb.cmp(&pa), b.cmp(&a));
            prop_assert_eq!(pa.partial_cmp(&pb), Some(a.cmp(&b)));
        }
    }

    #[test]
    fn ops_round_trip_compactly() {
        let ops = vec![
            Op::Set {
                path: Path::parse("/a/b").unwrap(),
                value: Value::Int(1),
            },
            Op::Del { path: Path::root() },
            Op::Incr {
                path: Path::parse("/n").unwrap(),
                by: -3,
            },
            Op::Genesis(Genesis {
                name: "c".into(),
                init: Value::map(),
                members: Some(vec![NodeId([1; 32])]),
                fork_policy: ForkPolicy::Quarantine,
            }),
            Op::Attest {
                depth: 1024,
                root: Id([7; 32]),
            },
        ];
        let bytes = to_canonical(&ops);
        let mut direct = Vec::new();
        Op::encode_all_into(&ops, &mut direct);
        assert_eq!(direct, bytes, "the direct encoder writes what serde's does");
        let back: Vec<Op> = from_canonical(&bytes).unwrap();
        assert_eq!(back, ops);
        // [0, ["a","b"], 1] is 8 bytes: the per-op overhead is a few bytes.
        assert_eq!(to_canonical(&ops[0]).len(), 8);
    }

    #[test]
    fn unknown_tag_and_extra_fields_are_refused() {
        assert!(from_canonical::<Op>(&to_canonical(&(99u8, 1u8))).is_err());
        assert!(from_canonical::<Op>(&to_canonical(&(TAG_DEL, Path::root(), 1u8))).is_err());
    }

    #[test]
    fn path_parsing() {
        assert_eq!(Path::parse("").unwrap(), Path::root());
        assert!(matches!(
            Path::parse("a"),
            Err(PathError::NoLeadingSlash(_))
        ));
        assert!(matches!(Path::parse("/a~2"), Err(PathError::BadEscape(_))));
        assert_eq!(*Path::parse("/").unwrap().0, [""]);
        let deep = "/x".repeat(40);
        assert!(matches!(Path::parse(&deep), Err(PathError::TooDeep(40))));
    }
}
