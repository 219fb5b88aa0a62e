//! Guarded paths: parts of the document that belong to a contract.
//!
//! A contract declares the paths it guards when it is deployed. From then on the document under
//! a guarded path is exactly what the contract wrote there, on behalf of the calls it accepted,
//! in canonical order: a guarded subtree is part of the order-sensitive fold, like the
//! contract's own key-value state, and is rewound and replayed with it. Document ops that other
//! experiences carry under a guarded path are still folded into the document CRDT (the
//! commutative fold never depends on the ordered one) but are masked: every read of the
//! document shows the guard's subtree in their place. A node refuses such a write from its own
//! client ([`WriteRefused::Guarded`]), so a masked op comes only from a node that had not yet
//! seen the deploy, or from one that does not follow the rules.

use imbl::OrdMap;

use crate::doc::{Doc, Dot, Observer};
use crate::id::{Id, NodeId};
use crate::op::{Op, Path};
use crate::value::Value;
use crate::write::WriteRefused;

/// Most paths one contract may guard.
pub const GUARDS_PER_CONTRACT_MAX: usize = 16;

/// A write a contract makes to the document on behalf of a call (or of its deploy).
#[derive(Clone, Debug, PartialEq)]
pub enum DocWrite {
    /// The subtree at `path` becomes `value`.
    Set {
        /// Where.
        path: Path,
        /// The new value (a map writes its entries).
        value: Value,
    },
    /// The subtree at `path` is removed.
    Del {
        /// Where.
        path: Path,
    },
}

impl DocWrite {
    /// The path written.
    pub fn path(&self) -> &Path {
        match self {
            DocWrite::Set { path, .. } | DocWrite::Del { path } => path,
        }
    }
}

/// The guarded paths of the deployed contracts, and what the contracts wrote under them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Guarded {
    /// Guarded path → the contract that guards it. No path is a prefix of another.
    pub paths: OrdMap<Path, Id>,
    /// The subtrees under the guarded paths, as the contracts wrote them.
    pub doc: Doc,
}

/// In the ordered fold every write observes everything written before it.
struct Sequential;

impl Observer for Sequential {
    fn observed(&self, _: &Dot, _: &Dot) -> bool {
        true
    }
}

impl Guarded {
    /// True when no contract guards anything.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The guarded path at or above `path`, and its contract.
    pub fn guard_of(&self, path: &Path) -> Option<(&Path, &Id)> {
        if self.paths.is_empty() {
            return None;
        }
        (0..=path.0.len()).find_map(|n| self.paths.get_key_value(&Path(path.0[..n].into())))
    }

    /// The guarded paths strictly below `path`.
    pub fn guards_below<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = (&'a Path, &'a Id)> {
        self.paths
            .range::<_, Path>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .skip_while(move |(p, _)| *p == path)
            .take_while(move |(p, _)| p.starts_with(path))
    }

    /// Declares the guards of contract `by` (its deploy), or says which one cannot be.
    pub fn declare(&mut self, by: Id, paths: &[Path]) -> Result<(), String> {
        if paths.len() > GUARDS_PER_CONTRACT_MAX {
            return Err(format!(
                "guards {} paths, at most {GUARDS_PER_CONTRACT_MAX}",
                paths.len()
            ));
        }
        for (i, path) in paths.iter().enumerate() {
            if path.0.is_empty() {
                return Err("cannot guard the document root".into());
            }
            let taken = self
                .guard_of(path)
                .or_else(|| self.guards_below(path).next());
            if let Some((p, id)) = taken {
                return Err(format!(
                    "cannot guard {path}: {p} is guarded by contract {id}"
                ));
            }
            if paths[..i]
                .iter()
                .any(|q| path.starts_with(q) || q.starts_with(path))
            {
                return Err(format!("guards {path} twice (or a path and one below it)"));
            }
        }
        // All or nothing.
        for path in paths {
            self.paths.insert(path.clone(), by);
        }
        Ok(())
    }

    /// Applies contract `by`'s writes, at `dot` (the op that made them), or says which write
    /// falls outside the paths it guards (then nothing is applied).
    pub fn write(&mut self, by: Id, dot: Dot, writes: &[DocWrite]) -> Result<(), String> {
        for w in writes {
            match self.guard_of(w.path()) {
                Some((_, id)) if *id == by => {}
                Some((g, id)) => {
                    return Err(format!(
                        "writes {}, which contract {id} guards ({g})",
                        w.path()
                    ));
                }
                None => {
                    return Err(format!(
                        "writes {}, which it does not guard (a contract writes only under the paths it guards)",
                        w.path()
                    ));
                }
            }
        }
        for w in writes {
            let op = match w {
                DocWrite::Set { path, value } => Op::Set {
                    path: path.clone(),
                    value: value.clone(),
                },
                DocWrite::Del { path } => Op::Del { path: path.clone() },
            };
            // A contract writes registers only: no author is read.
            self.doc.apply(&op, dot, NodeId([0; 32]), &Sequential);
        }
        Ok(())
    }

    /// The document at `path` as every read shows it: `doc` (the CRDT), with each guarded
    /// subtree replaced by what its contract wrote there.
    pub fn visible(&self, doc: &Doc, path: &Path) -> Option<Value> {
        if self.paths.is_empty() {
            return doc.materialize(path);
        }
        if self.guard_of(path).is_some() {
            return self.doc.materialize(path);
        }
        let mut value = doc.materialize(path);
        for (g, _) in self.guards_below(path) {
            splice(&mut value, &g.0[path.0.len()..], self.doc.materialize(g));
        }
        value
    }

    /// One answer per experience about to be written: refused if it writes at or under a
    /// guarded path (the fold would mask it).
    pub fn check(&self, batch: &[&[Op]]) -> Vec<Result<(), WriteRefused>> {
        batch
            .iter()
            .map(|ops| {
                for op in ops.iter() {
                    let path = match op {
                        Op::Set { path, .. }
                        | Op::Del { path }
                        | Op::Incr { path, .. }
                        | Op::Add { path, .. }
                        | Op::Remove { path, .. } => path,
                        _ => continue,
                    };
                    if let Some((guard, contract)) = self.guard_of(path) {
                        return Err(WriteRefused::Guarded {
                            path: path.clone(),
                            guard: guard.clone(),
                            contract: *contract,
                        });
                    }
                }
                Ok(())
            })
            .collect()
    }
}

impl Guarded {
    /// [`Guarded::check`] joined with the other answers `shapes` for the same batch (a guard's
    /// refusal first): what a node's write checks return.
    pub fn check_with(
        &self,
        batch: &[&[Op]],
        shapes: Vec<Result<(), WriteRefused>>,
    ) -> Vec<Result<(), WriteRefused>> {
        if self.is_empty() {
            return shapes;
        }
        self.check(batch)
            .into_iter()
            .zip(shapes)
            .map(|(g, s)| g.and(s))
            .collect()
    }
}

/// Puts `sub` (or nothing) at `rel` inside `value`, making maps on the way; a map left empty
/// disappears, as the document shows no empty maps.
fn splice(value: &mut Option<Value>, rel: &[String], sub: Option<Value>) {
    let Some((first, rest)) = rel.split_first() else {
        *value = sub;
        return;
    };
    if !matches!(value, Some(Value::Map(_))) {
        if sub.is_none() {
            return;
        }
        *value = Some(Value::map());
    }
    let Some(Value::Map(map)) = value else {
        return;
    };
    let mut child = map.remove(first);
    splice(&mut child, rest, sub);
    if let Some(c) = child {
        map.insert(first.clone(), c);
    }
    if map.is_empty() {
        *value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    fn json(s: &str) -> Value {
        Value::from_json(&serde_json::from_str(s).unwrap()).unwrap()
    }

    fn dot(n: u64) -> Dot {
        Dot {
            depth: n,
            exp: Id([n as u8; 32]),
            op: 0,
        }
    }

    /// Guards cannot overlap, a contract writes only under its own, and reads show the
    /// guarded subtree in place of whatever the CRDT holds there.
    #[test]
    fn a_guarded_subtree_replaces_the_crdt_and_is_written_only_by_its_guard() {
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        let mut g = Guarded::default();
        g.declare(a, &[p("/people")]).unwrap();
        assert!(
            g.declare(b, &[p("/people/ada")])
                .unwrap_err()
                .contains("guarded by contract")
        );
        assert!(g.declare(b, &[p("")]).unwrap_err().contains("root"));
        assert!(
            g.declare(b, &[p("/x"), p("/x/y")])
                .unwrap_err()
                .contains("twice")
        );
        assert_eq!(g.paths.len(), 1, "a refused declaration guards nothing");
        g.declare(b, &[p("/rooms")]).unwrap();

        let mut doc = Doc::default();
        let crdt = Op::Set {
            path: p(""),
            value: json(r#"{"people":{"mallory":{"age":-1}},"title":"t"}"#),
        };
        doc.apply(&crdt, dot(1), NodeId([0; 32]), &Sequential);
        assert_eq!(g.visible(&doc, &p("")), Some(json(r#"{"title":"t"}"#)));

        let ada = DocWrite::Set {
            path: p("/people/ada"),
            value: json(r#"{"age":36}"#),
        };
        assert!(
            g.write(b, dot(2), std::slice::from_ref(&ada))
                .unwrap_err()
                .contains("guards (/people)")
        );
        let stray = DocWrite::Del { path: p("/title") };
        assert!(
            g.write(a, dot(2), &[ada.clone(), stray])
                .unwrap_err()
                .contains("does not guard")
        );
        assert_eq!(g.doc, Doc::default(), "a refused batch writes nothing");
        g.write(a, dot(3), &[ada]).unwrap();
        assert_eq!(
            g.visible(&doc, &p("")),
            Some(json(r#"{"people":{"ada":{"age":36}},"title":"t"}"#))
        );
        assert_eq!(g.visible(&doc, &p("/people/ada/age")), Some(Value::Int(36)));
        assert_eq!(g.visible(&doc, &p("/people/mallory")), None);
        g.write(a, dot(4), &[DocWrite::Del { path: p("/people") }])
            .unwrap();
        assert_eq!(g.visible(&doc, &p("")), Some(json(r#"{"title":"t"}"#)));

        let refused = g.check(&[
            std::slice::from_ref(&crdt),
            &[Op::Incr {
                path: p("/people/n"),
                by: 1,
            }],
        ]);
        assert!(refused[0].is_ok(), "a write above a guard is not refused");
        assert!(
            matches!(&refused[1], Err(WriteRefused::Guarded { contract, .. }) if *contract == a)
        );
    }
}
