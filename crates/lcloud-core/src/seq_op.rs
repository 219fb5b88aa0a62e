//! What the list and text ops carry: the elements they name and the items they insert
//! (the ops themselves are [`crate::Op::Insert`], [`crate::Op::Delete`] and
//! [`crate::Op::Move`]; how they fold is `seq_doc.rs`).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dot::Dot;
use crate::id::Id;
use crate::seq::ElemId;
use crate::value::Value;

/// An element an op names: by its id, or (`Here`) as an element an earlier op of the same
/// experience inserted, which the op cannot name by id (the experience's id hashes its ops).
/// Encoded `[depth, experience id, op, offset]`, or `[op, offset]` for `Here`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemRef {
    /// An element of another experience.
    At(ElemId),
    /// Element `offset` of op `op` of this experience (an earlier op).
    Here {
        /// The inserting op's index in this experience.
        op: u32,
        /// Which of its elements.
        offset: u32,
    },
}

impl ElemRef {
    /// The element named, for an op at `dot`: `None` for a `Here` that names this op or a
    /// later one (an element not inserted yet).
    pub fn resolve(self, dot: &Dot) -> Option<ElemId> {
        match self {
            ElemRef::At(id) => Some(id),
            ElemRef::Here { op, offset } => (op < dot.op).then_some(ElemId {
                dot: Dot { op, ..*dot },
                offset,
            }),
        }
    }

    /// How an op at `dot` names element `id`.
    pub fn to(id: ElemId, dot: &Dot) -> ElemRef {
        if id.dot.exp == dot.exp && id.dot.depth == dot.depth {
            ElemRef::Here {
                op: id.dot.op,
                offset: id.offset,
            }
        } else {
            ElemRef::At(id)
        }
    }
}

impl Serialize for ElemRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ElemRef::At(id) => id.serialize(s),
            ElemRef::Here { op, offset } => (op, offset).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ElemRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ElemRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an element: [depth, id, op, offset] or [op, offset]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ElemRef, A::Error> {
                let missing = || de::Error::custom("an element names [depth, id, op, offset]");
                let first: u64 = seq.next_element()?.ok_or_else(missing)?;
                let second: Option<OffsetOrId> = seq.next_element()?;
                let r = match second {
                    Some(OffsetOrId::Offset(offset)) => ElemRef::Here {
                        op: u32::try_from(first).map_err(|_| missing())?,
                        offset,
                    },
                    Some(OffsetOrId::Id(exp)) => {
                        let op: u32 = seq.next_element()?.ok_or_else(missing)?;
                        let offset: u32 = seq.next_element()?.ok_or_else(missing)?;
                        ElemRef::At(ElemId {
                            dot: Dot {
                                depth: first,
                                exp,
                                op,
                            },
                            offset,
                        })
                    }
                    None => return Err(missing()),
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("an element names 2 or 4 fields"));
                }
                Ok(r)
            }
        }
        d.deserialize_seq(V)
    }
}

/// The second field of an [`ElemRef`]: an offset (`Here`) or an experience id.
enum OffsetOrId {
    Offset(u32),
    Id(Id),
}

impl<'de> Deserialize<'de> for OffsetOrId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OffsetOrId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an offset or a 32-byte experience id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OffsetOrId, E> {
                u32::try_from(v)
                    .map(OffsetOrId::Offset)
                    .map_err(|_| E::custom("offset past 2^32"))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OffsetOrId, E> {
                <[u8; 32]>::try_from(v)
                    .map(|b| OffsetOrId::Id(Id(b)))
                    .map_err(|_| E::custom("an experience id is 32 bytes"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where an insert or a move puts its elements: between `left` and `right` as the writer
/// saw them (`None`: the start, the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Between {
    /// The element just left of the place (deleted or not), or the start.
    pub left: Option<ElemRef>,
    /// The element just right of it not deleted, or the end.
    pub right: Option<ElemRef>,
}

/// What an insert puts in: characters of a text or values of a list. Encoded as a CBOR text
/// string or array, which says which.
#[derive(Clone, Debug, PartialEq)]
pub enum Items {
    /// Characters (Unicode scalar values) of the text at the path.
    Text(String),
    /// Elements of the list at the path.
    List(Vec<Value>),
}

impl Items {
    /// How many elements: characters for text.
    pub fn count(&self) -> usize {
        match self {
            Items::Text(s) => s.chars().count(),
            Items::List(v) => v.len(),
        }
    }

    /// Which kind of sequence they go in.
    pub fn kind(&self) -> SeqKind {
        match self {
            Items::Text(_) => SeqKind::Text,
            Items::List(_) => SeqKind::List,
        }
    }
}

impl Serialize for Items {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Items::Text(t) => t.serialize(s),
            Items::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Str(t) => Ok(Items::Text(t)),
            Value::List(v) => Ok(Items::List(v)),
            other => Err(de::Error::custom(format!(
                "an insert holds a text string or a list, not a {}",
                other.kind()
            ))),
        }
    }
}

/// Text or list: which sequence at a path an op changes. Encoded 0 (text) or 1 (list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeqKind {
    /// Text: a sequence of characters, read as a string.
    Text,
    /// A list of values, read as an array.
    List,
}

impl SeqKind {
    /// `"text"` or `"list"`.
    pub fn name(self) -> &'static str {
        match self {
            SeqKind::Text => "text",
            SeqKind::List => "list",
        }
    }
}

impl Serialize for SeqKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self as u8).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeqKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(SeqKind::Text),
            1 => Ok(SeqKind::List),
            other => Err(de::Error::custom(format!(
                "unknown sequence kind {other} (0 text, 1 list)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{from_canonical, to_canonical};

    #[test]
    fn element_refs_round_trip_in_both_forms() {
        let at = ElemRef::At(ElemId {
            dot: Dot {
                depth: 7,
                exp: Id([3; 32]),
                op: 2,
            },
            offset: 9,
        });
        let here = ElemRef::Here { op: 4, offset: 1 };
        for r in [at, here] {
            assert_eq!(from_canonical::<ElemRef>(&to_canonical(&r)).unwrap(), r);
        }
        assert_eq!(to_canonical(&here).len(), 3);
        assert!(from_canonical::<ElemRef>(&to_canonical(&(1u8,))).is_err());
        assert!(from_canonical::<ElemRef>(&to_canonical(&(1u8, 2u8, 3u8))).is_err());
        let dot = Dot {
            depth: 1,
            exp: Id([1; 32]),
            op: 4,
        };
        assert_eq!(
            here.resolve(&dot),
            None,
            "op 4 cannot name its own elements"
        );
        assert!(ElemRef::Here { op: 3, offset: 0 }.resolve(&dot).is_some());
    }

    #[test]
    fn items_say_their_kind_in_their_encoding() {
        let t = Items::Text("héllo".into());
        let l = Items::List(vec![Value::Int(1), Value::Str("x".into())]);
        assert_eq!(t.count(), 5);
        for i in [t, l] {
            assert_eq!(from_canonical::<Items>(&to_canonical(&i)).unwrap(), i);
        }
        assert!(from_canonical::<Items>(&to_canonical(&7u8)).is_err());
        assert!(from_canonical::<SeqKind>(&to_canonical(&2u8)).is_err());
    }
}
