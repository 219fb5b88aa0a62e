//! Closing a store as a clean stop does, and giving the file's free pages back.

use super::*;

/// A clean close gives free pages back only from files up to this size (256 MiB): giving back
/// walks the index pages of every table (0.08–0.15 s on an 11 MB file, mostly two durable
/// commits), and a stop should stay short on files far larger; `lcloud vacuum` does it for a
/// store of any size.
pub const CLOSE_VACUUM_MAX: u64 = 256 << 20;

/// What [`Store::vacuum`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vacuumed {
    /// The store file's size before and after, in bytes.
    pub bytes: (u64, u64),
}

impl Store {
    /// Writes the deferred leaves, gives the file's free pages back to the file system and
    /// closes the store. redb keeps the pages that earlier versions of its B-trees used, for
    /// later commits, and grows its file by regions: W2's store (docs/BENCHMARKS.md, W5)
    /// holds 450 kB of pages in a 614 kB file when its writers stop. Pages are moved down
    /// with durable commits, like any write: a crash during it leaves the store as its last
    /// commit. redb moves a page only into a free run of its size lower in the file, so some
    /// free pages can stay (W2's file ends at 426–594 kB).
    pub fn vacuum(mut self) -> Result<Vacuumed, StoreError> {
        self.flush()?;
        let file = self.dir.join(DB_FILE);
        let before = file_size(&file)?;
        let dir = self.dir.clone();
        self.db
            .as_mut()
            .ok_or_else(|| StoreError::Io {
                path: file.clone(),
                error: "closed after a failed write".into(),
            })?
            .compact()
            .map_err(|e| map_db(&dir, e))?;
        // Closing commits redb's allocator state: the size is the file's once closed.
        drop(self);
        Ok(Vacuumed {
            bytes: (before, file_size(&file)?),
        })
    }

    /// Closes the store as a clean stop does: writes the deferred leaves (so the next open
    /// need not replay history) and, for a file up to [`CLOSE_VACUUM_MAX`], gives its free
    /// pages back ([`Store::vacuum`]). Dropping a store without closing is safe too; it only
    /// keeps the pages.
    pub fn close(mut self) -> Result<Vacuumed, StoreError> {
        let file = self.dir.join(DB_FILE);
        let size = file_size(&file)?;
        if self.db.is_none() || size > CLOSE_VACUUM_MAX {
            self.flush()?;
            drop(self);
            let after = file_size(&file)?;
            return Ok(Vacuumed {
                bytes: (size, after),
            });
        }
        self.vacuum()
    }
}

fn file_size(file: &FsPath) -> Result<u64, StoreError> {
    fs::metadata(file)
        .map(|m| m.len())
        .map_err(|e| StoreError::io(file, e))
}
