//! The signed-seq guard: this identity never signs two experiences at one seq, even after
//! its store was restored from an older backup. The `signed-seq` file (`signed.rs`) records
//! the highest seq signed, fsynced before a write is acknowledged; a store behind it refuses
//! to sign (docs/store.md, docs/security.md).

use super::*;

impl Store {
    /// Refuses to sign if the store is behind what this identity has already signed.
    pub fn check_can_sign(&self, me: &NodeId, replica: &Replica) -> Result<(), StoreError> {
        let lattice = replica.lattice();
        self.check_signed_up_to(lattice.tip(me).map_or(0, |i| lattice.get(i).seq()))
    }

    /// Refuses to sign on top of a chain tip `stored` lower than what `signed-seq` records.
    pub(super) fn check_signed_up_to(&self, stored: u64) -> Result<(), StoreError> {
        let signed = self.signed_seq()?;
        if signed > stored {
            return Err(StoreError::BehindSignedSeq { signed, stored });
        }
        Ok(())
    }

    /// Records that this identity has signed up to `seq`. Call after the experience is durably
    /// committed and before acknowledging or publishing it. The file holds one fixed-width
    /// number rewritten in place and synced: one fsync, no rename.
    pub fn record_signed(&self, seq: u64) -> Result<(), StoreError> {
        self.signed.record(seq)
    }

    /// Reads `signed-seq` again on next use: a key rotation ([`crate::rotate::finish`])
    /// replaced it.
    pub fn reload_signed(&self) {
        self.signed.forget();
    }

    /// The highest seq this identity has signed, per the `signed-seq` file (0 if none).
    pub fn signed_seq(&self) -> Result<u64, StoreError> {
        self.signed.get()
    }

    /// The `signed-seq` file, for a committer that records it on a thread of its own.
    pub(crate) fn signed_seq_file(&self) -> Arc<SignedSeq> {
        self.signed.clone()
    }
}
