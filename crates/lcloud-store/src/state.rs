//! The persisted fold: the document's leaves by path, the order-sensitive state, and a summary
//! of the lattice's frontier (heads, chain tips, writers, forked authors). Reading the current
//! state or writing a local experience uses these alone, so neither replays history.

use lcloud_core::codec::{from_canonical_stored as from_canonical, to_canonical};
use lcloud_core::{Doc, Id, Leaf, NodeId, OrderedState, Path, Replica};
use redb::{ReadableTable, Table};

use crate::error::{StoreError, db};

/// The lattice's frontier, as much as a local write needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Summary {
    /// Heads: (id, depth, author), sorted by id.
    pub heads: Vec<(Id, u64, NodeId)>,
    /// Chain tips: (author, seq, id), sorted by author. A forked author keeps one tip.
    pub tips: Vec<(NodeId, u64, Id)>,
    /// Who may write: `None` for an open cloud; else the members now, sorted.
    pub writers: Option<Vec<NodeId>>,
    /// Who may change membership now, sorted.
    pub admins: Vec<NodeId>,
    /// Authors that forked.
    pub forked: Vec<NodeId>,
    /// In an open cloud, the keys removed (that may no longer write), sorted.
    pub barred: Vec<NodeId>,
    /// The genesis author.
    pub creator: NodeId,
}

impl Summary {
    pub fn of(replica: &Replica) -> Summary {
        let lattice = replica.lattice();
        let heads = lattice
            .heads()
            .iter()
            .map(|h| {
                let i = lattice.idx(h).expect("heads are admitted");
                (*h, lattice.depth(i), lattice.get(i).author())
            })
            .collect();
        let mut tips: Vec<(NodeId, u64, Id)> = lattice
            .authors()
            .iter()
            .filter_map(|a| {
                let i = lattice.tip(a)?;
                Some((*a, lattice.get(i).seq(), lattice.get(i).id()))
            })
            .collect();
        tips.sort();
        let writers = lattice.members();
        let barred = match writers {
            None => lattice.removed(),
            Some(_) => Vec::new(),
        };
        Summary {
            heads,
            tips,
            writers,
            admins: lattice.admins(),
            forked: lattice.forked_authors().into_keys().collect(),
            barred,
            creator: lattice.rules().creator,
        }
    }

    /// Whether `node` may write, as far as this summary knows.
    pub fn may_write(&self, node: &NodeId) -> bool {
        match &self.writers {
            Some(w) => w.binary_search(node).is_ok(),
            None => self.barred.binary_search(node).is_err(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        to_canonical(&(
            &self.heads,
            &self.tips,
            &self.writers,
            &self.admins,
            &self.forked,
            &self.barred,
            &self.creator,
        ))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Summary, StoreError> {
        type Before = (
            Vec<(Id, u64, NodeId)>,
            Vec<(NodeId, u64, Id)>,
            Option<Vec<NodeId>>,
            NodeId,
            Vec<NodeId>,
        );
        type Record = (
            Vec<(Id, u64, NodeId)>,
            Vec<(NodeId, u64, Id)>,
            Option<Vec<NodeId>>,
            Vec<NodeId>,
            Vec<NodeId>,
            Vec<NodeId>,
            NodeId,
        );
        if let Ok((heads, tips, writers, admins, forked, barred, creator)) =
            from_canonical::<Record>(bytes)
        {
            return Ok(Summary {
                heads,
                tips,
                writers,
                admins,
                forked,
                barred,
                creator,
            });
        }
        // Stores written before membership could change: the creator was the one admin.
        let (heads, tips, writers, creator, forked): Before =
            from_canonical(bytes).map_err(|e| StoreError::Corrupt {
                what: format!("the stored summary: {e}"),
            })?;
        Ok(Summary {
            heads,
            tips,
            writers,
            admins: vec![creator],
            forked,
            barred: Vec::new(),
            creator,
        })
    }

    /// This node's experience `u` at `depth` became the only head and its chain's tip.
    pub fn advance(&mut self, me: &NodeId, u: &lcloud_core::Unsigned, depth: u64) {
        self.heads = vec![(u.id(), depth, *me)];
        self.tips.retain(|(a, _, _)| a != me);
        self.tips.push((*me, u.header().seq, u.id()));
        self.tips.sort();
        // The rules of `lcloud_core`'s authority, for an experience that sees everything
        // (the only head): its grants first, then its revocations (which win).
        use lcloud_core::Op;
        let was_admin = self.admins.contains(me);
        let mut grant = |node: &NodeId, admin: bool| {
            if let Some(w) = self.writers.as_mut() {
                w.push(*node);
            }
            self.barred.retain(|b| b != node);
            if admin {
                self.admins.push(*node);
            }
        };
        for op in u.ops() {
            match op {
                Op::AddMember { node } => grant(node, false),
                Op::AddAdmin { node } => grant(node, true),
                Op::RotateKey { to } => grant(to, was_admin),
                _ => {}
            }
        }
        let mut revoke = |node: &NodeId, member: bool| {
            self.admins.retain(|a| a != node);
            if member {
                match self.writers.as_mut() {
                    Some(w) => w.retain(|m| m != node),
                    None => self.barred.push(*node),
                }
            }
        };
        for op in u.ops() {
            match op {
                Op::RemoveMember { node } => revoke(node, true),
                Op::RemoveAdmin { node } => revoke(node, false),
                Op::RotateKey { .. } => revoke(me, true),
                _ => {}
            }
        }
        for list in [&mut self.admins, &mut self.barred]
            .into_iter()
            .chain(self.writers.as_mut())
        {
            list.sort();
            list.dedup();
        }
    }

    pub fn tip(&self, author: &NodeId) -> Option<(u64, Id)> {
        self.tips
            .iter()
            .find(|(a, _, _)| a == author)
            .map(|(_, s, i)| (*s, *i))
    }
}

/// A path as a key whose byte order is the path order and whose descendants share its prefix:
/// each segment with 0x00 escaped as 0x00 0x01, then 0x00 0x00.
pub(crate) fn path_key(path: &Path) -> Vec<u8> {
    let mut key = Vec::new();
    for seg in path.0.iter() {
        for b in seg.as_bytes() {
            key.push(*b);
            if *b == 0 {
                key.push(1);
            }
        }
        key.extend_from_slice(&[0, 0]);
    }
    key
}

fn path_from_key(key: &[u8]) -> Option<Path> {
    let mut segments = Vec::new();
    let mut seg = Vec::new();
    let mut i = 0;
    while i < key.len() {
        if key[i] == 0 {
            match key.get(i + 1)? {
                0 => segments.push(String::from_utf8(std::mem::take(&mut seg)).ok()?),
                1 => seg.push(0),
                _ => return None,
            }
            i += 2;
        } else {
            seg.push(key[i]);
            i += 1;
        }
    }
    seg.is_empty().then_some(Path::from(segments))
}

pub(crate) fn tag(bytes: &[u8]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    t
}

/// Tag ‖ bytes.
pub(crate) fn sealed(bytes: &[u8]) -> Vec<u8> {
    let mut r = tag(bytes).to_vec();
    r.extend_from_slice(bytes);
    r
}

/// The tag of a document leaf: over its key as well as its bytes, so a damaged key (a leaf
/// moved to another path) is caught like damaged bytes (store format 3; format 2 tagged the
/// bytes alone).
fn leaf_tag(key: &[u8], bytes: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud leaf\0");
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(bytes);
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// A document leaf's record: its tag (over key and bytes) ‖ bytes.
pub(crate) fn seal_leaf(key: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut r = leaf_tag(key, bytes).to_vec();
    r.extend_from_slice(bytes);
    r
}

/// The bytes of a document leaf's record stored at `key`, after checking its tag.
pub(crate) fn unseal_leaf<'a>(
    key: &[u8],
    rec: &'a [u8],
    what: &dyn Fn() -> String,
) -> Result<&'a [u8], StoreError> {
    if rec.len() < 16 || rec[..16] != leaf_tag(key, &rec[16..]) {
        return Err(StoreError::Corrupt {
            what: format!("{}: checksum mismatch", what()),
        });
    }
    Ok(&rec[16..])
}

/// Reseals every document leaf with a tag over its key (format 2 → 3), checking each
/// against its old tag first.
pub(crate) fn reseal_leaves(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    for row in table.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let key = k.value().to_vec();
        let bytes = unseal(v.value(), &|| "a document leaf".into())?;
        rows.push((seal_leaf(&key, bytes), key));
    }
    for (rec, key) in rows {
        table.insert(key.as_slice(), rec.as_slice()).map_err(db)?;
    }
    Ok(())
}

/// Merges each experience's increments in every stored leaf, as the fold now does
/// (`Leaf::merge_increments`): leaves written before format 5 hold one increment per op.
/// Returns how many leaves changed.
pub(crate) fn merge_leaf_increments(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
) -> Result<u64, StoreError> {
    let mut rows = Vec::new();
    for row in table.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let key = k.value().to_vec();
        let bytes = unseal_leaf(&key, v.value(), &|| "a document leaf".into())?;
        let mut leaf = Leaf::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            what: format!("a document leaf: {e}"),
        })?;
        if leaf.incs.len() < 2 {
            continue;
        }
        let before = leaf.incs.len();
        leaf.merge_increments();
        if leaf.incs.len() != before {
            rows.push((seal_leaf(&key, &leaf.to_bytes()), key));
        }
    }
    for (rec, key) in &rows {
        table.insert(key.as_slice(), rec.as_slice()).map_err(db)?;
    }
    Ok(rows.len() as u64)
}

/// The tag of a value stored under the u64 `key` of a table (`table` names it): over the
/// table and the key as well as the bytes, so a damaged key, which moves the value, is caught
/// like damaged bytes. Groups, checkpoints and checkpoint clocks are sealed so from store
/// format 4 on.
fn keyed_tag(table: &str, key: u64, bytes: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud ");
    h.update(table.as_bytes());
    h.update(b"\0");
    h.update(&key.to_le_bytes());
    h.update(bytes);
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// Tag over `table`, `key` and bytes ‖ bytes (see [`keyed_tag`]).
pub(crate) fn sealed_at(table: &str, key: u64, bytes: &[u8]) -> Vec<u8> {
    let mut r = keyed_tag(table, key, bytes).to_vec();
    r.extend_from_slice(bytes);
    r
}

/// Puts the tag of [`sealed_at`] in the first 16 bytes of `rec`, over the rest.
pub(crate) fn seal_in_place(table: &str, key: u64, rec: &mut [u8]) {
    let tag = keyed_tag(table, key, &rec[16..]);
    rec[..16].copy_from_slice(&tag);
}

/// The bytes of a value stored under `key` in `table`, after checking its tag: one over the
/// key ([`sealed_at`]), or, for a value written before store format 4, over the bytes alone.
pub(crate) fn unseal_at<'a>(
    table: &str,
    key: u64,
    rec: &'a [u8],
    what: &dyn Fn() -> String,
) -> Result<&'a [u8], StoreError> {
    if rec.len() >= 16 && rec[..16] == keyed_tag(table, key, &rec[16..]) {
        return Ok(&rec[16..]);
    }
    unseal(rec, what)
}

/// The bytes of a sealed value, after checking its tag.
pub(crate) fn unseal<'a>(rec: &'a [u8], what: &dyn Fn() -> String) -> Result<&'a [u8], StoreError> {
    if rec.len() < 16 || rec[..16] != tag(&rec[16..]) {
        return Err(StoreError::Corrupt {
            what: format!("{}: checksum mismatch", what()),
        });
    }
    Ok(&rec[16..])
}

/// The leaves at and below `under`, read into a (partial) document.
pub(crate) fn read_doc(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    under: &Path,
    doc: &mut Doc,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = path_key(under);
    let mut keys = Vec::new();
    for row in table.range(prefix.as_slice()..).map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let key = k.value();
        if !key.starts_with(&prefix) {
            break;
        }
        let path = path_from_key(key).ok_or_else(|| StoreError::Corrupt {
            what: "a stored document path is malformed".into(),
        })?;
        let bytes = unseal_leaf(key, v.value(), &|| format!("document leaf {path}"))?;
        let leaf = Leaf::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            what: format!("document leaf {path}: {e}"),
        })?;
        doc.insert_leaf(path, leaf);
        keys.push(key.to_vec());
    }
    Ok(keys)
}

/// Reads the leaf at exactly `path` (if any) into `doc`.
pub(crate) fn read_leaf(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &Path,
    doc: &mut Doc,
) -> Result<(), StoreError> {
    let key = path_key(path);
    if let Some(v) = table.get(key.as_slice()).map_err(db)? {
        let bytes = unseal_leaf(&key, v.value(), &|| format!("document leaf {path}"))?;
        let leaf = Leaf::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            what: format!("document leaf {path}: {e}"),
        })?;
        doc.insert_leaf(path.clone(), leaf);
    }
    Ok(())
}

/// Replaces the stored leaves at and below each of `touched` by `doc`'s.
pub(crate) fn write_leaves(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    doc: &Doc,
    touched: &[Path],
) -> Result<(), StoreError> {
    for p in roots(touched) {
        let prefix = path_key(p);
        let mut old = Vec::new();
        for row in table.range(prefix.as_slice()..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            old.push(k.value().to_vec());
        }
        for k in old {
            table.remove(k.as_slice()).map_err(db)?;
        }
        for (path, leaf) in doc.leaves_under(p) {
            let key = path_key(path);
            table
                .insert(key.as_slice(), seal_leaf(&key, &leaf.to_bytes()).as_slice())
                .map_err(db)?;
        }
    }
    Ok(())
}

/// Writes the difference between `before` and `after` under each of `touched`: leaves that
/// disappeared are removed, leaves that changed (a different pointer) are rewritten. Needs no
/// scan of the table: `before` holds every stored leaf under the touched paths.
pub(crate) fn write_leaves_diff(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    before: &Doc,
    after: &Doc,
    touched: &[Path],
) -> Result<u64, StoreError> {
    let mut written = 0u64;
    for p in roots(touched) {
        if !before.has_below(p) && !after.has_below(p) {
            // Just a leaf (the usual case): compare it alone, by pointer.
            match (before.shared_leaf(p), after.shared_leaf(p)) {
                (Some(o), Some(n)) if std::sync::Arc::ptr_eq(o, n) => {}
                (_, Some(n)) => {
                    let key = path_key(p);
                    let rec = seal_leaf(&key, &n.to_bytes());
                    written += rec.len() as u64;
                    table.insert(key.as_slice(), rec.as_slice()).map_err(db)?;
                }
                (Some(_), None) => {
                    table.remove(path_key(p).as_slice()).map_err(db)?;
                }
                (None, None) => {}
            }
            continue;
        }
        let old: std::collections::BTreeMap<&Path, &std::sync::Arc<Leaf>> =
            before.shared_leaves_under(p).collect();
        let mut kept = 0;
        for (path, leaf) in after.shared_leaves_under(p) {
            match old.get(path) {
                Some(o) if std::sync::Arc::ptr_eq(o, leaf) => kept += 1,
                Some(_) => {
                    kept += 1;
                    let key = path_key(path);
                    let rec = seal_leaf(&key, &leaf.to_bytes());
                    written += rec.len() as u64;
                    table.insert(key.as_slice(), rec.as_slice()).map_err(db)?;
                }
                None => {
                    let key = path_key(path);
                    let rec = seal_leaf(&key, &leaf.to_bytes());
                    written += rec.len() as u64;
                    table.insert(key.as_slice(), rec.as_slice()).map_err(db)?;
                }
            }
        }
        if kept < old.len() {
            for path in old.keys() {
                if after.leaf(path).is_none() {
                    table.remove(path_key(path).as_slice()).map_err(db)?;
                }
            }
        }
    }
    Ok(written)
}

/// The touched paths with every path that lies below another one dropped.
pub(crate) fn roots(touched: &[Path]) -> Vec<&Path> {
    let mut all: Vec<&Path> = touched.iter().collect();
    all.sort();
    all.dedup();
    // Sorted, a path's descendants follow it directly: compare with the last kept root only.
    let mut kept: Vec<&Path> = Vec::new();
    for p in all {
        if !kept.last().is_some_and(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    kept
}

/// Decodes the stored order-sensitive state.
/// Marks in `meta` what makes time travel need the full history, as `lattice` (with
/// `revoked`: an insert just revoked a right) shows it: experiences the fold leaves out
/// ([`META_HAS_VOID`](crate::schema::META_HAS_VOID)). Marks are never removed. (What
/// experiences settle, time travel reads from the `settles` table: `travel::record_settles`.)
pub(crate) fn mark_full_history(
    meta: &mut Table<&str, &[u8]>,
    lattice: &lcloud_core::Lattice,
    revoked: bool,
) -> Result<(), StoreError> {
    if revoked || lattice.void_count() > 0 {
        meta.insert(crate::schema::META_HAS_VOID, [1u8].as_slice())
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) fn ordered_from(bytes: Option<&[u8]>) -> Result<OrderedState, StoreError> {
    match bytes {
        None => Ok(OrderedState::default()),
        Some(rec) => {
            let bytes = unseal(rec, &|| "the order-sensitive state".into())?;
            OrderedState::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
                what: format!("the order-sensitive state: {e}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf's record is bound to its key: the same record under another key (a damaged
    /// key) is refused, as is a damaged byte; a format-2 record (tag over the bytes alone) is
    /// refused too until resealed.
    #[test]
    fn a_leaf_record_is_refused_under_another_key() {
        let key = path_key(&Path::parse("/a/b").unwrap());
        let other = path_key(&Path::parse("/a/c").unwrap());
        let rec = seal_leaf(&key, b"leaf bytes");
        assert_eq!(
            unseal_leaf(&key, &rec, &|| "x".into()).unwrap(),
            b"leaf bytes"
        );
        assert!(unseal_leaf(&other, &rec, &|| "x".into()).is_err());
        let mut flipped = rec.clone();
        flipped[20] ^= 1;
        assert!(unseal_leaf(&key, &flipped, &|| "x".into()).is_err());
        assert!(unseal_leaf(&key, &sealed(b"leaf bytes"), &|| "x".into()).is_err());
    }

    /// Groups, checkpoints and their clocks (format 4) are refused under another key or
    /// table; a value written before format 4 (tagged over its bytes alone) is still read.
    #[test]
    fn a_keyed_record_is_refused_under_another_key() {
        let what = || "x".to_string();
        let mut rec = sealed_at("groups", 7, b"group bytes");
        assert_eq!(unseal_at("groups", 7, &rec, &what).unwrap(), b"group bytes");
        assert!(unseal_at("groups", 8, &rec, &what).is_err());
        assert!(unseal_at("checkpoints", 7, &rec, &what).is_err());
        assert!(unseal(&rec, &what).is_err());
        rec[20] ^= 1;
        assert!(unseal_at("groups", 7, &rec, &what).is_err());
        let mut in_place = [vec![0; 16], b"group bytes".to_vec()].concat();
        seal_in_place("groups", 7, &mut in_place);
        assert_eq!(in_place, sealed_at("groups", 7, b"group bytes"));
        let old = sealed(b"group bytes");
        assert_eq!(unseal_at("groups", 9, &old, &what).unwrap(), b"group bytes");
    }

    #[test]
    fn path_keys_sort_like_paths_and_nest_as_prefixes() {
        let paths: Vec<Path> = [
            vec![],
            vec!["a"],
            vec!["a", ""],
            vec!["a", "b"],
            vec!["a", "z"],
            vec!["a\0"],
            vec!["aa"],
            vec!["b"],
        ]
        .into_iter()
        .map(|v| Path(v.into_iter().map(String::from).collect()))
        .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        let mut by_key = paths.clone();
        by_key.sort_by_key(path_key);
        assert_eq!(sorted, by_key);
        for p in &paths {
            assert_eq!(path_from_key(&path_key(p)).as_ref(), Some(p));
            for q in &paths {
                assert_eq!(
                    q.starts_with(p),
                    path_key(q).starts_with(&path_key(p)),
                    "{p} {q}"
                );
            }
        }
    }
}
