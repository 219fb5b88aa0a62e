//! Lists and text in the document: the sequences a leaf holds, how the list and text ops
//! change them, and their canonical form (what is hashed and stored).
//!
//! A path may hold a text and a list (two writers made them concurrently); it shows the one
//! whose newest surviving *mark* is greater. Every insert and move leaves a mark (its dot)
//! and takes away the marks it observed; `del` and `set` of the path take away the marks
//! and the elements they observed. A sequence with no mark shows nothing, but its elements
//! stay as tombstones: an insert concurrent with the `del` may name one as its origin, and
//! must land the same on every replica whichever arrived first.
//!
//! Every element an op names must be in the op's causal past (the observer says so) and in
//! the sequence; otherwise the op changes nothing, on every replica alike. A node never
//! writes such an op: it turns indexes into ids against what it holds.
//!
//! A list element moves (Kleppmann, "Moving elements in list CRDTs", 2020) by inserting a
//! new *slot* where it goes; of the slots an element has, the one of its greatest move is
//! where it is, and the others are tombstones. `moves` maps a moved element to that slot.

use imbl::OrdMap;

use crate::dot::{Dot, Observer};
use crate::id::NodeId;
use crate::seq::{ElemId, Origins, Seq, SeqError};
use crate::seq_op::{Between, ElemRef, Items, SeqKind};
use crate::value::Value;

#[path = "seq_record.rs"]
mod record;
pub use record::SEGMENTS_MAX;
pub(crate) use record::SeqsRecord;

/// The sequences at one path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seqs {
    /// The text, if one was ever made here.
    pub text: Option<Text>,
    /// The list, if one was ever made here.
    pub list: Option<List>,
}

/// A text: a sequence of characters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Text {
    /// The characters.
    pub seq: Seq<char>,
    /// The surviving marks, sorted.
    pub marks: Vec<Dot>,
}

/// A list of values that may move.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct List {
    /// The slots.
    pub seq: Seq<Slot>,
    /// The surviving marks, sorted.
    pub marks: Vec<Dot>,
    /// Each moved element → the slot of its greatest move.
    pub moves: OrdMap<ElemId, ElemId>,
}

/// One place in a list: its own element, or an element moved there.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// The element this slot's insert put here.
    Own(Value),
    /// Another element, moved here.
    Moved(Box<(ElemId, Value)>),
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::Own(Value::Null)
    }
}

impl Slot {
    fn into_value(self) -> Value {
        match self {
            Slot::Own(v) => v,
            Slot::Moved(m) => m.1,
        }
    }

    /// The element in the slot whose id is `slot`.
    fn elem(&self, slot: ElemId) -> ElemId {
        match self {
            Slot::Own(_) => slot,
            Slot::Moved(m) => m.0,
        }
    }

    /// Its value.
    pub fn value(&self) -> &Value {
        match self {
            Slot::Own(v) => v,
            Slot::Moved(m) => &m.1,
        }
    }
}

/// Resolves and checks an element an op at `dot` names: it must be in the op's causal past.
fn seen(r: ElemRef, dot: &Dot, obs: &dyn Observer) -> Result<ElemId, SeqError> {
    let id = r.resolve(dot).ok_or(SeqError::Unseen(match r {
        ElemRef::Here { op, offset } => ElemId {
            dot: Dot { op, ..*dot },
            offset,
        },
        ElemRef::At(id) => id,
    }))?;
    if obs.observed(&id.dot, dot) {
        Ok(id)
    } else {
        Err(SeqError::Unseen(id))
    }
}

fn origins(at: &Between, dot: &Dot, obs: &dyn Observer) -> Result<Origins, SeqError> {
    Ok(Origins {
        left: at.left.map(|r| seen(r, dot, obs)).transpose()?,
        right: at.right.map(|r| seen(r, dot, obs)).transpose()?,
    })
}

/// Inserts `items` into `seq` and, if that is not refused, marks `dot`.
fn insert_marked<T: Clone>(
    seq: &mut Seq<T>,
    marks: &mut Vec<Dot>,
    items: Vec<T>,
    dot: Dot,
    author: NodeId,
    origins: Origins,
    obs: &dyn Observer,
) -> Result<(), SeqError> {
    seq.insert(dot, author, origins, items)?;
    mark(marks, dot, obs);
    Ok(())
}

/// Takes away the marks `by` observed and adds `by`'s.
fn mark(marks: &mut Vec<Dot>, by: Dot, obs: &dyn Observer) {
    marks.retain(|m| !obs.observed(m, &by));
    if let Err(i) = marks.binary_search(&by) {
        marks.insert(i, by);
    }
}

impl Seqs {
    /// Applies an insert at `dot` by `author`. A refused insert changes nothing.
    pub(crate) fn insert(
        &mut self,
        at: &Between,
        items: &Items,
        dot: Dot,
        author: NodeId,
        obs: &dyn Observer,
    ) -> Result<(), SeqError> {
        let origins = origins(at, &dot, obs)?;
        match items {
            Items::Text(s) => {
                let text = self.text.get_or_insert_default();
                let made = s.chars().collect();
                let r = insert_marked(
                    &mut text.seq,
                    &mut text.marks,
                    made,
                    dot,
                    author,
                    origins,
                    obs,
                );
                if text.seq.is_bare() {
                    self.text = None;
                }
                r
            }
            Items::List(v) => {
                let list = self.list.get_or_insert_default();
                let made = v.iter().cloned().map(Slot::Own).collect();
                let r = insert_marked(
                    &mut list.seq,
                    &mut list.marks,
                    made,
                    dot,
                    author,
                    origins,
                    obs,
                );
                if list.seq.is_bare() {
                    self.list = None;
                }
                r
            }
        }
    }

    /// Applies a delete at `dot`: every range must be there, or nothing is deleted.
    pub(crate) fn delete(
        &mut self,
        kind: SeqKind,
        ranges: &[(ElemRef, u32)],
        dot: Dot,
        obs: &dyn Observer,
    ) -> Result<(), SeqError> {
        let ranges: Vec<(ElemId, u32)> = ranges
            .iter()
            .map(|(r, n)| Ok((seen(*r, &dot, obs)?, *n)))
            .collect::<Result<_, SeqError>>()?;
        let unknown = || match ranges.first() {
            Some((id, _)) => SeqError::Unknown(*id),
            None => SeqError::Length,
        };
        match kind {
            SeqKind::Text => {
                let Some(text) = &mut self.text else {
                    return Err(unknown());
                };
                text.seq.delete_ranges(&ranges)
            }
            SeqKind::List => {
                let Some(list) = &mut self.list else {
                    return Err(unknown());
                };
                if list.moves.is_empty() {
                    return list.seq.delete_ranges(&ranges);
                }
                for (id, n) in &ranges {
                    list.seq.check_range(*id, *n)?;
                }
                // A moved element is deleted where its greatest move put it.
                for (id, n) in ranges {
                    for k in 0..n {
                        let elem = ElemId {
                            offset: id.offset + k,
                            ..id
                        };
                        let slot = list.moves.get(&elem).copied().unwrap_or(elem);
                        list.seq.delete(slot, 1)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Applies a move of list element `elem` at `dot` by `author`.
    pub(crate) fn moved(
        &mut self,
        elem: ElemRef,
        at: &Between,
        dot: Dot,
        author: NodeId,
        obs: &dyn Observer,
    ) -> Result<(), SeqError> {
        let elem = seen(elem, &dot, obs)?;
        let origins = origins(at, &dot, obs)?;
        let Some(list) = &mut self.list else {
            return Err(SeqError::Unknown(elem));
        };
        if !list.seq.contains(elem) {
            return Err(SeqError::Unknown(elem));
        }
        let was = list.moves.get(&elem).copied().unwrap_or(elem);
        let value = list.seq.item(was).map(|s| s.value().clone());
        let slot = ElemId { dot, offset: 0 };
        let alive = value.is_some();
        let item = match value {
            Some(v) => Slot::Moved(Box::new((elem, v))),
            None => Slot::Own(Value::Null),
        };
        list.seq.insert(dot, author, origins, vec![item])?;
        if slot > was {
            if alive {
                list.seq.delete(was, 1)?;
            } else {
                list.seq.delete(slot, 1)?;
            }
            list.moves.insert(elem, slot);
        } else {
            list.seq.delete(slot, 1)?;
        }
        mark(&mut list.marks, dot, obs);
        Ok(())
    }

    /// Whether a `del` or `set` at `by` would change anything here.
    pub(crate) fn any_observed(&self, by: &Dot, obs: &dyn Observer) -> bool {
        let seen = |d: &Dot| obs.observed(d, by);
        self.text
            .as_ref()
            .is_some_and(|t| t.marks.iter().any(seen) || t.seq.any_visible(seen))
            || self.list.as_ref().is_some_and(|l| {
                l.marks.iter().any(seen) || l.seq.iter_ids().any(|(s, v)| seen(&v.elem(s).dot))
            })
    }

    /// What a `del` or `set` at `by` does here: takes away the marks and the elements it
    /// observed.
    pub(crate) fn remove_observed(&mut self, by: &Dot, obs: &dyn Observer) {
        let seen = |d: &Dot| obs.observed(d, by);
        if let Some(t) = &mut self.text {
            t.marks.retain(|m| !seen(m));
            t.seq.delete_where(seen);
        }
        if let Some(l) = &mut self.list {
            l.marks.retain(|m| !seen(m));
            let doomed: Vec<ElemId> = l
                .seq
                .iter_ids()
                .filter(|(s, v)| seen(&v.elem(*s).dot))
                .map(|(s, _)| s)
                .collect();
            for s in doomed {
                let _ = l.seq.delete(s, 1);
            }
        }
    }

    /// Which sequence shows, if any: the one with the greater newest mark.
    pub fn shown(&self) -> Option<SeqKind> {
        let text = self.text.as_ref().and_then(|t| t.marks.last());
        let list = self.list.as_ref().and_then(|l| l.marks.last());
        match (text, list) {
            (None, None) => None,
            (Some(_), None) => Some(SeqKind::Text),
            (None, Some(_)) => Some(SeqKind::List),
            (Some(t), Some(l)) => Some(if t > l { SeqKind::Text } else { SeqKind::List }),
        }
    }

    /// The value that shows: the text as a string or the list as an array.
    pub fn value(&self) -> Option<Value> {
        Some(match self.shown()? {
            SeqKind::Text => Value::Str(self.text.as_ref()?.seq.iter().collect()),
            SeqKind::List => Value::List(
                self.list
                    .as_ref()?
                    .seq
                    .iter()
                    .map(|s| s.value().clone())
                    .collect(),
            ),
        })
    }

    /// The text and the list, each with its newest mark if it has one, in mark order (the
    /// one shown last).
    pub(crate) fn values_by_mark(&self) -> Vec<(Dot, Value)> {
        let text = self.text.as_ref().and_then(|t| {
            let mark = *t.marks.last()?;
            Some((mark, Value::Str(t.seq.iter().collect())))
        });
        let list = self.list.as_ref().and_then(|l| {
            let mark = *l.marks.last()?;
            Some((
                mark,
                Value::List(l.seq.iter().map(|s| s.value().clone()).collect()),
            ))
        });
        let mut out: Vec<(Dot, Value)> = text.into_iter().chain(list).collect();
        out.sort_by_key(|(d, _)| *d);
        out
    }

    /// Every dot an element, slot or mark here carries (tombstones included: later ops may
    /// name them).
    pub(crate) fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        let text = self.text.iter().flat_map(|t| {
            t.marks
                .iter()
                .copied()
                .chain(t.seq.segments().map(|s| s.id().dot))
        });
        let list = self.list.iter().flat_map(|l| {
            l.marks
                .iter()
                .copied()
                .chain(l.seq.segments().map(|s| s.id().dot))
        });
        text.chain(list)
    }
}

/// One step from a text or list to another: at `index` (in the sequence as the steps
/// before left it), delete `delete` elements and insert `insert` (a string for text, an
/// array for a list).
#[derive(Clone, Debug, PartialEq)]
pub struct Splice {
    /// Where.
    pub index: usize,
    /// How many elements deleted.
    pub delete: usize,
    /// What is inserted.
    pub insert: Value,
}

/// The splices that turn the sequence `a` shows into the one `b` shows, found by element
/// id: an element in both stays, one only in `a` is deleted, one only in `b` inserted (a
/// moved list element is deleted where it was and inserted where it is). `None` unless both
/// show a sequence of one kind.
pub fn splices(a: &Seqs, b: &Seqs) -> Option<Vec<Splice>> {
    let kind = a.shown()?;
    if b.shown()? != kind {
        return None;
    }
    type Elems = Vec<(ElemId, Value)>;
    let (xs, ys): (Elems, Elems) = match kind {
        SeqKind::Text => {
            let items = |s: &Seqs| -> Vec<(ElemId, Value)> {
                let t = s.text.as_ref().expect("shown");
                let mut buf = [0u8; 4];
                t.seq
                    .iter_ids()
                    .map(|(id, c)| (id, Value::Str(c.encode_utf8(&mut buf).to_owned())))
                    .collect()
            };
            (items(a), items(b))
        }
        SeqKind::List => {
            let items = |s: &Seqs| -> Vec<(ElemId, Value)> {
                let l = s.list.as_ref().expect("shown");
                l.seq
                    .iter_ids()
                    .map(|(id, slot)| (id, slot.value().clone()))
                    .collect()
            };
            (items(a), items(b))
        }
    };
    let in_a: std::collections::BTreeSet<ElemId> = xs.iter().map(|(id, _)| *id).collect();
    let in_b: std::collections::BTreeSet<ElemId> = ys.iter().map(|(id, _)| *id).collect();
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut out: Vec<(usize, usize, Vec<Value>)> = Vec::new();
    let step =
        |out: &mut Vec<(usize, usize, Vec<Value>)>, at: usize, del: usize, ins: Option<Value>| {
            match out.last_mut() {
                Some((index, d, items)) if *index + items.len() == at => {
                    *d += del;
                    items.extend(ins);
                }
                _ => out.push((at, del, ins.into_iter().collect())),
            }
        };
    while i < xs.len() || j < ys.len() {
        if i < xs.len() && !in_b.contains(&xs[i].0) {
            step(&mut out, k, 1, None);
            i += 1;
        } else if j < ys.len() && !in_a.contains(&ys[j].0) {
            step(&mut out, k, 0, Some(ys[j].1.clone()));
            k += 1;
            j += 1;
        } else if i < xs.len() && j < ys.len() && xs[i].0 == ys[j].0 {
            i += 1;
            j += 1;
            k += 1;
        } else {
            // Common elements in another order: not two states of one sequence.
            return None;
        }
    }
    Some(
        out.into_iter()
            .map(|(index, delete, items)| Splice {
                index,
                delete,
                insert: match kind {
                    SeqKind::Text => Value::Str(
                        items
                            .iter()
                            .filter_map(|v| match v {
                                Value::Str(s) => Some(s.as_str()),
                                _ => None,
                            })
                            .collect(),
                    ),
                    SeqKind::List => Value::List(items),
                },
            })
            .collect(),
    )
}
