//! Reading without loading the history: the state and the document from the persisted fold,
//! the state at a past clock from the index and the time-travel checkpoints, the guards, the
//! fork proofs and the authors (docs/store.md, "Reading and writing without replaying
//! history").

use super::*;

impl Store {
    /// The state at `clock`, read from the index and the checkpoints without loading the
    /// history. `None` when only a full load can answer: an author forked, the cloud has calls
    /// to order-sensitive morphisms, the fold leaves out experiences of a removed member (the
    /// index holds every experience), or the store cannot say what its experiences settle
    /// (written by format 7, or compacted with settling experiences kept). What experiences
    /// settle is read from the `settles` table, and the replay settles as the fold does.
    pub fn state_at_clock(&self, clock: &VectorClock) -> Result<Option<State>, StoreError> {
        guard(&self.dir, || self.state_at_clock_unguarded(clock))
    }

    fn state_at_clock_unguarded(&self, clock: &VectorClock) -> Result<Option<State>, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let summary = read_summary(&meta)?;
        let calls = meta
            .get(META_HAS_CALLS)
            .map_err(|e| self.map_db(e))?
            .is_some();
        let void = meta
            .get(META_HAS_VOID)
            .map_err(|e| self.map_db(e))?
            .is_some();
        let settled = meta
            .get(META_HAS_SETTLED)
            .map_err(|e| self.map_db(e))?
            .is_some();
        if let Some(base) = self.base_meta(&meta)?
            && !base.clock.le(clock)
        {
            return Err(StoreError::Compacted {
                earliest: base.clock,
            });
        }
        if !summary.forked.is_empty() || calls || void || settled {
            return Ok(None);
        }
        for (node, asked) in &clock.0 {
            let known = summary.tip(node).map_or(0, |(s, _)| s);
            if *asked > known {
                return Err(StoreError::ClockAhead {
                    node: *node,
                    asked: *asked,
                    known,
                });
            }
        }
        #[allow(unused_mut)]
        let mut doc = travel::document_at(&txn, &self.cloud, clock)?;
        #[cfg(feature = "damage")]
        damage(&self.dir, clock, &mut doc);
        Ok(Some(State {
            doc,
            ordered: Default::default(),
        }))
    }

    /// The nodes that wrote in this cloud, as indexed.
    pub fn authors(&self) -> Result<Vec<NodeId>, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            Ok(Names::in_txn(&txn, self.cloud)?.authors)
        })
    }

    /// The current document at `path` (`None`: nothing there), read from the persisted fold
    /// without loading the history.
    pub fn document(&self, path: &Path) -> Result<Option<Value>, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            let doc = self.current_doc(&txn, std::slice::from_ref(path))?;
            let guards = self.guards_in(&txn)?;
            if guards.guard_of(path).is_none() && guards.guards_below(path).next().is_none() {
                return Ok(doc.materialize(path));
            }
            // A guarded subtree is in the ordered state.
            let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
            let ordered = meta.get(META_ORDERED).map_err(|e| self.map_db(e))?;
            let ordered = state::ordered_from(ordered.as_ref().map(|v| v.value()))?;
            Ok(ordered.guarded.visible(&doc, path))
        })
    }

    /// The current document CRDT at and below each of `paths`, with the leaf at each of
    /// their proper prefixes: what [`lcloud_core::resolve`] needs to turn list and text
    /// edits at `paths` into ops.
    pub fn doc_under(&self, paths: &[Path]) -> Result<lcloud_core::Doc, StoreError> {
        let exact: Vec<Path> = paths
            .iter()
            .flat_map(|p| (0..p.0.len()).map(|n| Path(p.0[..n].into())))
            .collect();
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            self.current_doc_with(&txn, &exact, paths)
        })
    }

    /// [`lcloud_core::check_shapes`] of this node's writes against the stored document,
    /// reading only the leaves the check looks at ([`lcloud_core::shape_paths`]).
    pub fn check_shapes(
        &self,
        batch: &[&[Op]],
    ) -> Result<Vec<Result<(), WriteRefused>>, StoreError> {
        let (exact, subtrees) = lcloud_core::shape_paths(batch.iter().copied().flatten());
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            let doc = self.current_doc_with(&txn, &exact, &subtrees)?;
            let shapes = lcloud_core::check_shapes(&doc, batch);
            Ok(self.guards_in(&txn)?.check_with(batch, shapes))
        })
    }

    /// Whether a contract guards a path of this cloud.
    pub fn has_guards(&self) -> Result<bool, StoreError> {
        guard(&self.dir, || {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            Ok(!self.guards_in(&txn)?.is_empty())
        })
    }

    /// The guarded paths, as persisted with the fold (their contents are not read).
    fn guards_in(&self, txn: &redb::ReadTransaction) -> Result<lcloud_core::Guarded, StoreError> {
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let Some(bytes) = meta.get(META_GUARDS).map_err(|e| self.map_db(e))? else {
            return Ok(lcloud_core::Guarded::default());
        };
        let bytes = unseal(bytes.value(), &|| "the guarded paths".into())?;
        let paths: Vec<(Path, Id)> = lcloud_core::codec::from_canonical_stored(bytes)
            .map_err(|e| corrupt(format!("the guarded paths: {e}")))?;
        Ok(lcloud_core::Guarded {
            paths: paths.into_iter().collect(),
            doc: Doc::default(),
        })
    }

    /// The current state, read from the persisted fold without loading the history.
    pub fn state(&self) -> Result<State, StoreError> {
        guard(&self.dir, || self.state_unguarded())
    }

    fn state_unguarded(&self) -> Result<State, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let doc = self.current_doc(&txn, &[Path::root()])?;
        let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
        let ordered = meta.get(META_ORDERED).map_err(|e| self.map_db(e))?;
        let ordered = state::ordered_from(ordered.as_ref().map(|v| v.value()))?;
        Ok(State { doc, ordered })
    }

    /// The fork proofs stored, by author and seq. Each is checked again before it is returned.
    pub fn forks(&self) -> Result<Vec<lcloud_core::ForkProof>, StoreError> {
        self.read_all(FORKS, |_, v: &[u8]| {
            let bytes = unseal(v, &|| "a stored fork proof".into())?;
            let proof: lcloud_core::ForkProof = lcloud_core::codec::from_canonical_stored(bytes)
                .map_err(|e| corrupt(format!("a stored fork proof: {e}")))?;
            proof
                .check()
                .map_err(|e| corrupt(format!("a stored fork proof does not hold: {e}")))?;
            Ok(proof)
        })
    }

    /// Every row of a table through `f`, in key order; nothing if the table was never created.
    pub(super) fn read_all<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: TableDefinition<K, V>,
        mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let table = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.map_db(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.map_db(e))? {
            let (k, v) = row.map_err(|e| self.map_db(e))?;
            out.push(f(k.value(), v.value())?);
        }
        Ok(out)
    }
}

/// A test build's planted damage (feature `damage`): when `dir/damage` names an experience
/// (`NODE:SEQ`) within `clock`, the document at that cut gains a leaf no experience wrote, as
/// a damaged time-travel index would give.
#[cfg(feature = "damage")]
fn damage(dir: &std::path::Path, clock: &VectorClock, doc: &mut lcloud_core::Doc) {
    let Ok(text) = std::fs::read_to_string(dir.join("damage")) else {
        return;
    };
    let Some((node, seq)) = text.trim().split_once(':') else {
        return;
    };
    let (Some(node), Ok(seq)) = (NodeId::from_hex(node), seq.parse::<u64>()) else {
        return;
    };
    if clock.get(&node) >= seq {
        let op = lcloud_core::Op::Set {
            path: Path::parse("/damaged").expect("a path"),
            value: lcloud_core::Value::Bool(true),
        };
        doc.apply_experience(
            std::slice::from_ref(&op),
            u64::MAX,
            lcloud_core::Id([0xda; 32]),
            NodeId([0xda; 32]),
            &lcloud_core::ObservesEverything,
        );
    }
}
