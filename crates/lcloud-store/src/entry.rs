//! The index entry of one experience (author, seq, depth, vector clock) and the table that
//! names authors by index. Below the record-group format, which stores an entry beside each
//! record, and below time travel, which reads them.

use lcloud_core::Id;
use lcloud_core::codec::from_canonical_stored as from_canonical;

use crate::error::{StoreError, corrupt};

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

type EntryRecord = (u32, u64, u64, Vec<(u32, u64)>);

impl Entry {
    /// The stored form leaves out the id: it is the hash of the record's header, which the
    /// record holds.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 10 * self.clock.len());
        Entry::encode_into(&mut out, self.author, self.seq, self.depth, &self.clock);
        out
    }

    /// Appends the stored form of an entry to `out`: the canonical DAG-CBOR of
    /// `[author, seq, depth, [[author, seq], …]]`, written directly (serde's encoder took a
    /// twentieth of storing a pushed experience).
    pub(crate) fn encode_into(
        out: &mut Vec<u8>,
        author: u32,
        seq: u64,
        depth: u64,
        clock: &[(u32, u64)],
    ) {
        use lcloud_core::codec::write_head;
        const UINT: u8 = 0;
        const ARRAY: u8 = 4;
        write_head(out, ARRAY, 4);
        write_head(out, UINT, u64::from(author));
        write_head(out, UINT, seq);
        write_head(out, UINT, depth);
        write_head(out, ARRAY, clock.len() as u64);
        for (a, s) in clock {
            write_head(out, ARRAY, 2);
            write_head(out, UINT, u64::from(*a));
            write_head(out, UINT, *s);
        }
    }

    /// The entry stored as `bytes` for the experience `id`.
    pub(crate) fn from_bytes(bytes: &[u8], id: Id) -> Result<Entry, StoreError> {
        let (author, seq, depth, clock): EntryRecord =
            from_canonical(bytes).map_err(|e| corrupt(format!("an index entry: {e}")))?;
        Ok(Entry {
            id,
            author,
            seq,
            depth,
            clock,
        })
    }
}
