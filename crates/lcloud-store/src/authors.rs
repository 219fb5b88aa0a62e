//! The authors table: the authors in first-seen order (the compact names records and index
//! entries use), and a row holding the BLAKE3 digest of the others, checked whenever the
//! table is read (docs/store.md, "Tables": `authors`).

use lcloud_core::{Id, NodeId};
use redb::{ReadableTable, Table};

use crate::error::{StoreError, corrupt, db};
use crate::record::Names;
use crate::schema::AUTHORS;

impl Names {
    /// Reads the authors table through a read transaction.
    pub fn in_txn(txn: &redb::ReadTransaction, cloud: Id) -> Result<Names, StoreError> {
        Names::read(&txn.open_table(AUTHORS).map_err(db)?, cloud)
    }

    /// Reads the authors table (numbered densely from 0), checking it against its digest.
    pub fn read(
        authors: &impl ReadableTable<u32, &'static [u8; 32]>,
        cloud: Id,
    ) -> Result<Names, StoreError> {
        let mut all = Vec::new();
        let mut digest = None;
        for row in authors.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            if k.value() == AUTHORS_DIGEST {
                digest = Some(*v.value());
            } else if k.value() as usize != all.len() {
                return Err(corrupt(format!("author #{} is missing", all.len())));
            } else {
                all.push(NodeId(*v.value()));
            }
        }
        if digest != Some(authors_digest(&all)) {
            return Err(corrupt("the authors table: checksum mismatch"));
        }
        Ok(Names {
            cloud,
            authors: all,
        })
    }
}

/// The authors table's row that holds [`authors_digest`] of the others (from store format 4
/// on: a damaged author id would otherwise rebuild that author's experiences, and read their
/// clocks, as another node's).
pub(crate) const AUTHORS_DIGEST: u32 = u32::MAX;

/// The digest of the authors, in their order.
pub(crate) fn authors_digest(authors: &[NodeId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud authors\0");
    for a in authors {
        h.update(a.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Writes the digest row of the authors table as it stands (store format 3 → 4).
pub(crate) fn seal_authors(
    authors: &mut Table<'_, u32, &'static [u8; 32]>,
) -> Result<(), StoreError> {
    let mut all = Vec::new();
    for row in authors.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        if k.value() != AUTHORS_DIGEST {
            all.push(NodeId(*v.value()));
        }
    }
    authors
        .insert(AUTHORS_DIGEST, &authors_digest(&all))
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authors table is checked against its digest: a changed author id, a missing
    /// digest or a missing author is refused.
    #[test]
    fn a_damaged_authors_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(AUTHORS).unwrap();
            t.insert(0, &[1; 32]).unwrap();
            t.insert(1, &[2; 32]).unwrap();
            assert!(Names::read(&t, Id::default()).is_err(), "no digest");
            seal_authors(&mut t).unwrap();
            let names = Names::read(&t, Id::default()).unwrap();
            assert_eq!(names.authors, [NodeId([1; 32]), NodeId([2; 32])]);
            let mut other = [2; 32];
            other[7] ^= 4;
            t.insert(1, &other).unwrap();
            let err = Names::read(&t, Id::default()).unwrap_err().to_string();
            assert!(
                err.contains("the authors table: checksum mismatch"),
                "{err}"
            );
            t.insert(1, &[2; 32]).unwrap();
            t.insert(3, &[3; 32]).unwrap();
            let err = Names::read(&t, Id::default()).unwrap_err().to_string();
            assert!(err.contains("author #2 is missing"), "{err}");
        }
        txn.commit().unwrap();
    }
}
