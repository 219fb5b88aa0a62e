//! List and text edits as clients write them, by index (Unicode scalar values for text), and
//! how a node turns them into ops that name elements by id ([`resolve`]), so that concurrent
//! edits merge. The node resolves against the document it holds: every element it names is
//! in the causal past of the experience it then writes.

use crate::doc::Doc;
use crate::dot::{Dot, ObservesEverything, local_exp};
use crate::id::NodeId;
use crate::op::{Op, Path};
use crate::seq::{ElemId, Origins};
use crate::seq_op::{Between, ElemRef, Items, SeqKind};
use crate::value::Value;
use crate::write::WriteRefused;

/// One op of a write as a client gives it: an op as it is signed, or a list or text edit by
/// index.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// An op that names no index.
    Op(Op),
    /// Inserts before the element at `index` (`index` = length: at the end). Into a text,
    /// a string's characters; into a list (or an empty path, which becomes one), the values.
    Insert {
        /// Where.
        path: Path,
        /// Before which element.
        index: usize,
        /// What.
        items: Items,
    },
    /// Deletes `count` elements from `index` on.
    Delete {
        /// Where.
        path: Path,
        /// The first element deleted.
        index: usize,
        /// How many.
        count: usize,
    },
    /// Deletes `delete` characters of the text at `path` from `index` on and inserts `text`
    /// there (an empty path becomes a text).
    Splice {
        /// Where.
        path: Path,
        /// From which character.
        index: usize,
        /// How many characters to delete.
        delete: usize,
        /// What to insert.
        text: String,
    },
    /// Moves the list element at `from` so that it ends at index `to`.
    Move {
        /// Where.
        path: Path,
        /// Which element.
        from: usize,
        /// Its index afterwards.
        to: usize,
    },
}

impl Edit {
    /// An edit from its JSON form (the API's and `lcloud batch`'s): any op
    /// [`Op::from_json`] reads, or
    /// `{"op":"insert","path":"/l","index":0,"value":V}` (or `"values":[…]` for many list
    /// elements), `{"op":"delete","path":"/t","index":3,"count":2}` (`count` defaults to 1),
    /// `{"op":"splice","path":"/t","index":0,"delete":1,"text":"Hi"}` and
    /// `{"op":"move","path":"/l","from":2,"to":0}`.
    pub fn from_json(j: &serde_json::Value) -> Result<Edit, String> {
        let kind = j.get("op").and_then(|o| o.as_str());
        let allowed: &[&str] = match kind {
            Some("insert") => &["op", "path", "index", "value", "values"],
            Some("delete") => &["op", "path", "index", "count"],
            Some("splice") => &["op", "path", "index", "delete", "text"],
            Some("move") => &["op", "path", "from", "to"],
            _ => return Op::from_json(j).map(Edit::Op),
        };
        let obj = j.as_object().expect("an op with a kind is an object");
        if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{extra:?} is not a field of this op (it takes {})",
                allowed.join(", ")
            ));
        }
        let field = |k: &str| j.get(k).ok_or_else(|| format!("missing {k:?} in {j}"));
        let index = |k: &str| -> Result<usize, String> {
            let n = field(k)?;
            // JSON's integers include `3.0` (JSON Schema says so too).
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|x| x.fract() == 0.0 && (0.0..1.8e19).contains(x))
                        .map(|x| x as u64)
                })
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{k:?} must be a whole number, 0 or more"))
        };
        let pointer = field("path")?
            .as_str()
            .ok_or_else(|| "\"path\" must be a string".to_owned())?;
        let path = Path::parse(pointer).map_err(|e| {
            format!("bad path {pointer:?} ({e}; paths are JSON Pointers like /doc/title)")
        })?;
        Ok(match kind {
            Some("insert") => {
                let items = match (j.get("value"), j.get("values")) {
                    (Some(v), None) => match Value::from_json(v).map_err(|e| e.to_string())? {
                        Value::Str(s) => Items::Text(s),
                        v => Items::List(vec![v]),
                    },
                    (None, Some(serde_json::Value::Array(vs))) => Items::List(
                        vs.iter()
                            .map(Value::from_json)
                            .collect::<Result<_, _>>()
                            .map_err(|e| e.to_string())?,
                    ),
                    (None, Some(_)) => return Err("\"values\" must be an array".into()),
                    _ => return Err("an insert takes \"value\" or \"values\", not both".into()),
                };
                Edit::Insert {
                    path,
                    index: index("index")?,
                    items,
                }
            }
            Some("delete") => Edit::Delete {
                path,
                index: index("index")?,
                count: if j.get("count").is_some() {
                    index("count")?
                } else {
                    1
                },
            },
            Some("splice") => Edit::Splice {
                path,
                index: index("index")?,
                delete: index("delete")?,
                text: field("text")?
                    .as_str()
                    .ok_or_else(|| "\"text\" must be a string".to_owned())?
                    .to_owned(),
            },
            _ => Edit::Move {
                path,
                from: index("from")?,
                to: index("to")?,
            },
        })
    }

    /// The path it writes, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Edit::Op(op) => op.path(),
            Edit::Insert { path, .. }
            | Edit::Delete { path, .. }
            | Edit::Splice { path, .. }
            | Edit::Move { path, .. } => Some(path),
        }
    }

    /// The op itself when this is one, else `None`.
    pub fn as_op(&self) -> Option<&Op> {
        match self {
            Edit::Op(op) => Some(op),
            _ => None,
        }
    }
}

impl From<Op> for Edit {
    fn from(op: Op) -> Edit {
        Edit::Op(op)
    }
}

/// Turns the edits of one write by `author` into its ops, against `doc` (what the writer
/// holds): each edit sees the ones before it in the write. Ops pass through unchanged; a
/// splice becomes a delete and an insert. The error names the edit that cannot be made.
pub fn resolve(doc: &Doc, author: NodeId, edits: Vec<Edit>) -> Result<Vec<Op>, WriteRefused> {
    if edits.iter().all(|e| matches!(e, Edit::Op(_))) {
        return Ok(edits
            .into_iter()
            .map(|e| match e {
                Edit::Op(op) => op,
                _ => unreachable!("all are ops"),
            })
            .collect());
    }
    // Each edit sees the ones before it: a copy of the document takes them in, made only
    // once an edit has one after it (a copy's first write to a large text copies the
    // text's chunk list, so a write of one edit, the usual, makes none).
    let mut scratch: Option<Doc> = None;
    let mut ops = Vec::with_capacity(edits.len() + 1);
    let n = edits.len();
    for (k, edit) in edits.into_iter().enumerate() {
        let start = ops.len();
        match edit {
            Edit::Op(op) => ops.push(op),
            edit => resolve_edit(scratch.as_ref().unwrap_or(doc), &edit, &mut ops)?,
        }
        if k + 1 < n {
            let scratch = scratch.get_or_insert_with(|| doc.clone());
            for (i, op) in ops.iter().enumerate().skip(start) {
                scratch.apply(op, here(i), author, &ObservesEverything);
            }
        }
    }
    Ok(ops)
}

/// The dot of op `i` of the write being resolved.
fn here(i: usize) -> Dot {
    Dot {
        depth: u64::MAX,
        exp: local_exp(0),
        op: i as u32,
    }
}

/// How an op at index `i` names element `id`.
fn name(id: ElemId, i: usize) -> ElemRef {
    ElemRef::to(id, &here(i))
}

fn between(o: Origins, i: usize) -> Between {
    Between {
        left: o.left.map(|id| name(id, i)),
        right: o.right.map(|id| name(id, i)),
    }
}

/// Appends the ops of one list or text edit.
fn resolve_edit(doc: &Doc, edit: &Edit, ops: &mut Vec<Op>) -> Result<(), WriteRefused> {
    let (path, op) = match edit {
        Edit::Insert { path, .. } => (path, "insert"),
        Edit::Delete { path, .. } => (path, "delete"),
        Edit::Splice { path, .. } => (path, "splice"),
        Edit::Move { path, .. } => (path, "move"),
        Edit::Op(_) => unreachable!("ops are not resolved"),
    };
    let found = doc.kind(path);
    let seqs = doc.leaf(path).and_then(|l| l.seqs.as_deref());
    let text = seqs
        .and_then(|s| s.text.as_ref())
        .filter(|_| found == Some("text"));
    let list = seqs
        .and_then(|s| s.list.as_ref())
        .filter(|_| found == Some("list"));
    let wrong = |wants: &'static str| WriteRefused::WrongType {
        op,
        path: path.clone(),
        found: found.unwrap_or("nothing"),
        wants,
    };
    let past = |index: usize, len: usize, unit| WriteRefused::Index {
        op,
        path: path.clone(),
        index,
        len,
        unit,
    };
    let at = ops.len();
    match edit {
        Edit::Insert { index, items, .. } => {
            let kind = match (found, items) {
                (Some("text"), Items::Text(_)) => SeqKind::Text,
                (Some("text"), Items::List(_)) => {
                    return Err(WriteRefused::BadEdit(format!(
                        "cannot insert into {path}: it holds a text, and a text takes a string"
                    )));
                }
                (None | Some("list"), _) => SeqKind::List,
                _ => return Err(wrong("a list or a text")),
            };
            let items = match (kind, items) {
                (SeqKind::List, Items::Text(s)) => Items::List(vec![Value::Str(s.clone())]),
                (_, items) => items.clone(),
            };
            if items.count() == 0 {
                return Err(WriteRefused::BadEdit(format!(
                    "an insert into {path} must hold at least one element"
                )));
            }
            let origins = match (text, list) {
                (Some(t), _) => t.seq.origins_at(*index),
                (_, Some(l)) => l.seq.origins_at(*index),
                _ if *index == 0 => Ok(Origins {
                    left: None,
                    right: None,
                }),
                _ => return Err(past(*index, 0, "elements")),
            };
            let origins = origins.map_err(|_| {
                let (len, unit) = match (text, list) {
                    (Some(t), _) => (t.seq.len(), "characters"),
                    (_, Some(l)) => (l.seq.len(), "elements"),
                    _ => (0, "elements"),
                };
                past(*index, len, unit)
            })?;
            ops.push(Op::Insert {
                path: path.clone(),
                at: between(origins, at),
                items,
            });
        }
        Edit::Delete { index, count, .. } => {
            if *count == 0 {
                return Err(WriteRefused::BadEdit(format!(
                    "a delete in {path} must delete at least one element (count 0)"
                )));
            }
            let (kind, ranges) = match (text, list) {
                (Some(t), _) => (
                    SeqKind::Text,
                    t.seq.ids_in(*index, *count).map_err(|_| {
                        past(index.saturating_add(*count), t.seq.len(), "characters")
                    })?,
                ),
                (_, Some(l)) => (SeqKind::List, list_ids(l, *index, *count, &past)?),
                _ => return Err(wrong("a list or a text")),
            };
            ops.push(Op::Delete {
                path: path.clone(),
                kind,
                ranges: ranges
                    .into_iter()
                    .map(|(id, n)| (name(id, at), n))
                    .collect(),
            });
        }
        Edit::Splice {
            index,
            delete,
            text: insert,
            ..
        } => {
            if *delete == 0 && insert.is_empty() {
                return Err(WriteRefused::BadEdit(format!(
                    "a splice of {path} must delete or insert something"
                )));
            }
            let seq = match (found, text) {
                (Some("text"), Some(t)) => Some(&t.seq),
                (None, _) => None,
                _ => return Err(wrong("a text")),
            };
            let len = seq.map_or(0, |s| s.len());
            if index.checked_add(*delete).is_none_or(|end| end > len) {
                return Err(past(index.saturating_add(*delete), len, "characters"));
            }
            if *delete > 0
                && let Some(seq) = seq
            {
                let ranges = seq
                    .ids_in(*index, *delete)
                    .map_err(|_| past(index + delete, len, "characters"))?;
                ops.push(Op::Delete {
                    path: path.clone(),
                    kind: SeqKind::Text,
                    ranges: ranges
                        .into_iter()
                        .map(|(id, n)| (name(id, at), n))
                        .collect(),
                });
            }
            if !insert.is_empty() {
                // Where the deleted characters were: after the last of them (a tombstone
                // now), before the character that followed them.
                let origins = match seq {
                    Some(s) => s
                        .origins_at(index + delete)
                        .map_err(|_| past(*index, len, "characters"))?,
                    None => Origins {
                        left: None,
                        right: None,
                    },
                };
                let i = ops.len();
                ops.push(Op::Insert {
                    path: path.clone(),
                    at: between(origins, i),
                    items: Items::Text(insert.clone()),
                });
            }
        }
        Edit::Move { from, to, .. } => {
            let Some(l) = list else {
                return Err(wrong("a list"));
            };
            let len = l.seq.len();
            if *from >= len {
                return Err(past(*from, len, "elements"));
            }
            if *to >= len {
                return Err(past(*to, len, "elements"));
            }
            let (slot, item) = l.seq.get(*from).expect("from is within the list");
            let elem = item_elem(item, slot);
            // Its place in the list without it: before the element now at `to` (or at
            // `to + 1`, past the element itself, when it moves right).
            let dest = if to > from { to + 1 } else { *to };
            let origins = l
                .seq
                .origins_at(dest)
                .map_err(|_| past(*to, len, "elements"))?;
            ops.push(Op::Move {
                path: path.clone(),
                elem: name(elem, at),
                at: between(origins, at),
            });
        }
        Edit::Op(_) => unreachable!("ops are not resolved"),
    }
    Ok(())
}

/// The element in a list slot.
fn item_elem(item: &crate::seq_doc::Slot, slot: ElemId) -> ElemId {
    match item {
        crate::seq_doc::Slot::Own(_) => slot,
        crate::seq_doc::Slot::Moved(m) => m.0,
    }
}

/// The ids of the `count` list elements from `index` on, as runs of consecutive ids.
fn list_ids(
    list: &crate::seq_doc::List,
    index: usize,
    count: usize,
    past: &dyn Fn(usize, usize, &'static str) -> WriteRefused,
) -> Result<Vec<(ElemId, u32)>, WriteRefused> {
    let len = list.seq.len();
    let end = index
        .checked_add(count)
        .filter(|e| *e <= len)
        .ok_or_else(|| past(index.saturating_add(count), len, "elements"))?;
    let mut out: Vec<(ElemId, u32)> = Vec::new();
    for k in index..end {
        let (slot, item) = list.seq.get(k).expect("within the list");
        let elem = item_elem(item, slot);
        match out.last_mut() {
            Some((first, n)) if first.dot == elem.dot && first.offset + *n == elem.offset => {
                *n += 1
            }
            _ => out.push((elem, 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_whole_numbers_written_either_way_and_fields_are_exact() {
        let edit = |s: &str| Edit::from_json(&serde_json::from_str(s).unwrap());
        let want = Edit::Delete {
            path: Path::parse("/t").unwrap(),
            index: 3,
            count: 2,
        };
        assert_eq!(
            edit(r#"{"op":"delete","path":"/t","index":3,"count":2}"#),
            Ok(want.clone())
        );
        assert_eq!(
            edit(r#"{"op":"delete","path":"/t","index":3.0,"count":2.0}"#),
            Ok(want)
        );
        for bad in [
            r#"{"op":"delete","path":"/t","index":-1}"#,
            r#"{"op":"delete","path":"/t","index":1.5}"#,
            r#"{"op":"delete","path":"/t","index":1e300}"#,
            r#"{"op":"move","path":"/l","from":0}"#,
            r#"{"op":"insert","path":"/l","index":0}"#,
            r#"{"op":"insert","path":"/l","index":0,"value":1,"values":[1]}"#,
            r#"{"op":"splice","path":"/t","index":0,"delete":0,"text":"x","value":1}"#,
        ] {
            assert!(edit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            edit(r#"{"op":"insert","path":"/l","index":0,"values":[1,"a"]}"#),
            Ok(Edit::Insert {
                path: Path::parse("/l").unwrap(),
                index: 0,
                items: Items::List(vec![Value::Int(1), Value::Str("a".into())]),
            })
        );
    }
}
