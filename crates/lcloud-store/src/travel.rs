//! Time travel without loading the history: an index of every experience (author, seq,
//! depth, vector clock), each author's chain by seq, and checkpoints of the document at
//! arrival prefixes. The state at a clock is the latest checkpoint inside the cut plus the
//! experiences of the cut that came after it, applied with causality read from the index.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use lcloud_core::codec::{from_canonical, to_canonical};
use lcloud_core::{Doc, Dot, Id, Leaf, NodeId, Observer, Path, VectorClock, revalidate_stored};
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use crate::state::{sealed, unseal};
use crate::store::StoreError;

/// Author index (first-seen order in this store) → node id.
pub(crate) const AUTHORS: TableDefinition<u32, &[u8; 32]> = TableDefinition::new("authors");
/// Arrival index → (id, author index, seq, depth, clock as (author index, seq) pairs).
pub(crate) const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("index");
/// Experience id → arrival index.
pub(crate) const BY_ID: TableDefinition<&[u8; 32], u64> = TableDefinition::new("by_id");
/// (author index, seq, arrival index) → (): each chain by seq.
pub(crate) const CHAINS: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("chains");
/// Arrival count covered → sealed leaves: the document after that many arrivals.
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// Arrival count covered → the frontier clock of that checkpoint (kept apart, so finding the
/// checkpoint for a cut reads only small records).
pub(crate) const CHECKPOINT_CLOCKS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("checkpoint_clocks");

/// Ops between checkpoints, at least; past that, at least as many ops as the state has leaves,
/// so writing checkpoints costs O(1) per op.
pub(crate) const CHECKPOINT_OPS_MIN: u64 = 4096;

/// One experience in the index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub id: Id,
    pub author: u32,
    pub seq: u64,
    pub depth: u64,
    /// Non-zero clock entries by author index.
    pub clock: Vec<(u32, u64)>,
}

type EntryRecord = (Id, u32, u64, u64, Vec<(u32, u64)>);

impl Entry {
    fn to_bytes(&self) -> Vec<u8> {
        to_canonical(&(&self.id, self.author, self.seq, self.depth, &self.clock))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Entry, StoreError> {
        let (id, author, seq, depth, clock): EntryRecord =
            from_canonical(bytes).map_err(|e| corrupt(&format!("an index entry: {e}")))?;
        Ok(Entry {
            id,
            author,
            seq,
            depth,
            clock,
        })
    }

    fn seen(&self, author: u32) -> u64 {
        self.clock
            .iter()
            .find(|(a, _)| *a == author)
            .map_or(0, |(_, s)| *s)
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
    }
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io {
        path: "store.redb".into(),
        error: e.into().to_string(),
    }
}

/// Writes index entries within one write transaction.
pub(crate) struct Indexer<'t> {
    authors: Table<'t, u32, &'static [u8; 32]>,
    by_node: BTreeMap<NodeId, u32>,
    index: Table<'t, u64, &'static [u8]>,
    by_id: Table<'t, &'static [u8; 32], u64>,
    chains: Table<'t, (u32, u64, u64), ()>,
}

impl<'t> Indexer<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Indexer<'t>, StoreError> {
        let authors = txn.open_table(AUTHORS).map_err(db)?;
        let mut by_node = BTreeMap::new();
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            by_node.insert(NodeId(*v.value()), k.value());
        }
        Ok(Indexer {
            authors,
            by_node,
            index: txn.open_table(INDEX).map_err(db)?,
            by_id: txn.open_table(BY_ID).map_err(db)?,
            chains: txn.open_table(CHAINS).map_err(db)?,
        })
    }

    fn author(&mut self, node: &NodeId) -> Result<u32, StoreError> {
        if let Some(a) = self.by_node.get(node) {
            return Ok(*a);
        }
        let a = self.by_node.len() as u32;
        self.authors.insert(a, node.as_bytes()).map_err(db)?;
        self.by_node.insert(*node, a);
        Ok(a)
    }

    /// Indexes the experience at `arrival`.
    pub fn add(
        &mut self,
        arrival: u64,
        id: Id,
        author: &NodeId,
        seq: u64,
        depth: u64,
        clock: &VectorClock,
    ) -> Result<(), StoreError> {
        let a = self.author(author)?;
        let mut dense = Vec::with_capacity(clock.0.len());
        for (node, s) in &clock.0 {
            dense.push((self.author(node)?, *s));
        }
        dense.sort();
        let entry = Entry {
            id,
            author: a,
            seq,
            depth,
            clock: dense,
        };
        self.index
            .insert(arrival, entry.to_bytes().as_slice())
            .map_err(db)?;
        self.by_id.insert(id.as_bytes(), arrival).map_err(db)?;
        self.chains.insert((a, seq, arrival), ()).map_err(db)?;
        Ok(())
    }

    /// The clock of an indexed experience, by node id.
    pub fn clock_of(&self, id: &Id) -> Result<Option<VectorClock>, StoreError> {
        let Some(arrival) = self.by_id.get(id.as_bytes()).map_err(db)? else {
            return Ok(None);
        };
        let arrival = arrival.value();
        let rec = self
            .index
            .get(arrival)
            .map_err(db)?
            .ok_or_else(|| corrupt(&format!("index entry #{arrival} is missing")))?;
        let entry = Entry::from_bytes(rec.value())?;
        let nodes: BTreeMap<u32, NodeId> = self.by_node.iter().map(|(n, a)| (*a, *n)).collect();
        let mut clock = VectorClock::default();
        for (a, s) in entry.clock {
            let node = nodes
                .get(&a)
                .ok_or_else(|| corrupt(&format!("index names unknown author #{a}")))?;
            clock.observe(*node, s);
        }
        Ok(Some(clock))
    }
}

/// Writes a checkpoint covering arrivals `0..upto`: its frontier clock and every leaf.
pub(crate) fn write_checkpoint(
    txn: &WriteTransaction,
    upto: u64,
    clock: &VectorClock,
    doc: &Doc,
) -> Result<(), StoreError> {
    let clock: Vec<(&NodeId, &u64)> = clock.0.iter().collect();
    let root = Path::root();
    let leaves: Vec<(&Path, LeafBytes)> = doc
        .leaves_under(&root)
        .map(|(p, l)| (p, LeafBytes(l.to_bytes())))
        .collect();
    txn.open_table(CHECKPOINT_CLOCKS)
        .map_err(db)?
        .insert(upto, sealed(&to_canonical(&clock)).as_slice())
        .map_err(db)?;
    txn.open_table(CHECKPOINTS)
        .map_err(db)?
        .insert(upto, sealed(&to_canonical(&leaves)).as_slice())
        .map_err(db)?;
    Ok(())
}

struct LeafBytes(Vec<u8>);

impl serde::Serialize for LeafBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for LeafBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LeafBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("leaf bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<LeafBytes, E> {
                Ok(LeafBytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

fn decode_checkpoint_clock(rec: &[u8]) -> Result<VectorClock, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint clock".into())?;
    let clock: Vec<(NodeId, u64)> =
        from_canonical(bytes).map_err(|e| corrupt(&format!("a checkpoint clock: {e}")))?;
    Ok(VectorClock(clock.into_iter().collect()))
}

fn decode_checkpoint(rec: &[u8]) -> Result<Doc, StoreError> {
    let bytes = unseal(rec, &|| "a checkpoint".into())?;
    let leaves: Vec<(Path, LeafBytes)> =
        from_canonical(bytes).map_err(|e| corrupt(&format!("a checkpoint: {e}")))?;
    let mut doc = Doc::default();
    for (path, leaf) in leaves {
        let leaf = Leaf::from_bytes(&leaf.0).map_err(|e| corrupt(&format!("a checkpoint: {e}")))?;
        doc.insert_leaf(path, leaf);
    }
    Ok(doc)
}

/// Causality for the experiences applied after a checkpoint, read from the index.
struct IndexObserver<
    'a,
    T: ReadableTable<u64, &'static [u8]>,
    B: ReadableTable<&'static [u8; 32], u64>,
> {
    index: &'a T,
    by_id: &'a B,
    cache: RefCell<HashMap<Id, Option<Entry>>>,
}

impl<T: ReadableTable<u64, &'static [u8]>, B: ReadableTable<&'static [u8; 32], u64>>
    IndexObserver<'_, T, B>
{
    fn entry(&self, id: &Id) -> Option<Entry> {
        if let Some(e) = self.cache.borrow().get(id) {
            return e.clone();
        }
        let found = (|| {
            let arrival = self.by_id.get(id.as_bytes()).ok()??.value();
            let rec = self.index.get(arrival).ok()??;
            Entry::from_bytes(rec.value()).ok()
        })();
        self.cache.borrow_mut().insert(*id, found.clone());
        found
    }
}

impl<T: ReadableTable<u64, &'static [u8]>, B: ReadableTable<&'static [u8; 32], u64>> Observer
    for IndexObserver<'_, T, B>
{
    fn observed(&self, elem: &Dot, by: &Dot) -> bool {
        if elem.exp == by.exp {
            return elem.op < by.op;
        }
        match (self.entry(&elem.exp), self.entry(&by.exp)) {
            // No author forked (time travel through the index requires it), so seeing the
            // author's seq means seeing the element's experience.
            (Some(e), Some(b)) => b.seen(e.author) >= e.seq,
            _ => false,
        }
    }
}

/// The document at `clock`, from the index and checkpoints. The caller has checked that no
/// author forked and that there are no calls to order-sensitive morphisms.
pub(crate) fn document_at(
    txn: &redb::ReadTransaction,
    cloud: &Id,
    clock: &VectorClock,
    experiences: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Doc, StoreError> {
    let authors = txn.open_table(AUTHORS).map_err(db)?;
    let index = txn.open_table(INDEX).map_err(db)?;
    let by_id = txn.open_table(BY_ID).map_err(db)?;
    let chains = txn.open_table(CHAINS).map_err(db)?;
    let checkpoints = txn.open_table(CHECKPOINTS).map_err(db)?;
    let checkpoint_clocks = txn.open_table(CHECKPOINT_CLOCKS).map_err(db)?;
    let mut dense: Vec<(u32, u64)> = Vec::new();
    let mut by_node = BTreeMap::new();
    for row in authors.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        by_node.insert(NodeId(*v.value()), k.value());
    }
    for (node, s) in &clock.0 {
        if let Some(a) = by_node.get(node) {
            dense.push((*a, *s));
        }
    }
    let within = |c: &[(u32, u64)]| {
        c.iter()
            .all(|(a, s)| *s <= dense.iter().find(|(b, _)| b == a).map_or(0, |(_, t)| *t))
    };
    // The latest checkpoint whose frontier lies inside the cut.
    let mut base: Option<(u64, VectorClock, Doc)> = None;
    for row in checkpoint_clocks.iter().map_err(db)?.rev() {
        let (k, v) = row.map_err(db)?;
        let cp_clock = decode_checkpoint_clock(v.value())?;
        if cp_clock.le(clock) {
            let upto = k.value();
            let rec = checkpoints
                .get(upto)
                .map_err(db)?
                .ok_or_else(|| corrupt(&format!("checkpoint {upto} is missing")))?;
            base = Some((upto, cp_clock, decode_checkpoint(rec.value())?));
            break;
        }
    }
    let (upto, cp_clock, mut doc) = base.unwrap_or((0, VectorClock::default(), Doc::default()));
    // The rest of the cut: along each chain, from the checkpoint's seq up to the clock's.
    let mut rest: Vec<(u64, Entry)> = Vec::new();
    for (node, a) in &by_node {
        let from = cp_clock.get(node) + 1;
        let to = clock.get(node);
        if to < from {
            continue;
        }
        for row in chains
            .range((*a, from, 0)..=(*a, to, u64::MAX))
            .map_err(db)?
        {
            let (k, _) = row.map_err(db)?;
            let (_, _, arrival) = k.value();
            let rec = index
                .get(arrival)
                .map_err(db)?
                .ok_or_else(|| corrupt(&format!("index entry #{arrival} is missing")))?;
            let entry = Entry::from_bytes(rec.value())?;
            if !within(&entry.clock) {
                break;
            }
            if arrival >= upto {
                rest.push((arrival, entry));
            }
        }
    }
    rest.sort_by_key(|(arrival, _)| *arrival);
    let observer = IndexObserver {
        index: &index,
        by_id: &by_id,
        cache: RefCell::new(HashMap::new()),
    };
    for (arrival, entry) in rest {
        let rec = experiences
            .get(arrival)
            .map_err(db)?
            .ok_or_else(|| corrupt(&format!("experience #{arrival} is missing")))?;
        let bytes = unseal(rec.value(), &|| format!("experience #{arrival}"))?;
        let exp = revalidate_stored(bytes, cloud)
            .map_err(|e| corrupt(&format!("experience #{arrival}: {e}")))?;
        if exp.id() != entry.id {
            return Err(corrupt(&format!(
                "experience #{arrival} does not match its index entry"
            )));
        }
        for (i, op) in exp.ops().iter().enumerate() {
            let dot = Dot {
                depth: entry.depth,
                exp: entry.id,
                op: i as u32,
            };
            doc.apply(op, dot, &observer);
        }
    }
    Ok(doc)
}

/// Whether a new checkpoint is due: `ops_since` ops since the last, against the threshold.
pub(crate) fn checkpoint_due(ops_since: u64, leaves: usize, min: u64) -> bool {
    ops_since >= min.max(leaves as u64)
}

/// Number of entries in the index (for stores created before it existed: 0).
pub(crate) fn indexed(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    match txn.open_table(INDEX) {
        Ok(t) => t.len().map_err(db),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(db(e)),
    }
}
