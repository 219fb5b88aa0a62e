//! The `signed-seq` file: the highest seq this identity has signed, kept beside the store so
//! that a `store.redb` restored from an old backup cannot make the node sign a seq it may
//! already have published (see `docs/store.md`).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::StoreError;

pub(crate) const FILE: &str = "signed-seq";

/// The file and the value last read or written (the store's lock keeps other processes out,
/// so the value read once stays true until this process writes it).
pub(crate) struct SignedSeq {
    dir: PathBuf,
    path: PathBuf,
    known: Mutex<Option<u64>>,
    /// Held while the file is written, so readers of `known` never wait for a sync.
    writing: Mutex<()>,
}

impl SignedSeq {
    pub(crate) fn new(dir: &Path) -> SignedSeq {
        SignedSeq {
            dir: dir.to_owned(),
            path: dir.join(FILE),
            known: Mutex::new(None),
            writing: Mutex::new(()),
        }
    }

    /// The highest seq signed (0 if the file does not exist).
    pub(crate) fn get(&self) -> Result<u64, StoreError> {
        let mut known = self.known.lock().expect("never poisoned: no panics inside");
        if let Some(v) = *known {
            return Ok(v);
        }
        let v = match fs::read_to_string(&self.path) {
            // Created but never written: the first `record` failed (a full disk) or a crash
            // came before its data reached the disk. Either way it returned an error, so
            // nothing was acknowledged or published on its account: nothing is recorded yet.
            // (Once written, the file is only ever overwritten in place, never shortened.)
            Ok(t) if t.is_empty() => 0,
            Ok(t) => t.trim().parse().map_err(|_| StoreError::Corrupt {
                what: format!("{} does not hold a number", self.path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        *known = Some(v);
        Ok(v)
    }

    /// Forgets the value read, so the next [`SignedSeq::get`] reads the file again (after a
    /// key rotation replaced it).
    pub(crate) fn forget(&self) {
        *self.known.lock().expect("never poisoned: no panics inside") = None;
    }

    /// Records (durably: written in place and synced, no rename) that this identity has signed
    /// up to `seq`. Call after the experiences are durably committed and before acknowledging
    /// or publishing them.
    pub(crate) fn record(&self, seq: u64) -> Result<(), StoreError> {
        let _writing = self
            .writing
            .lock()
            .expect("never poisoned: no panics inside");
        if seq <= self.get()? {
            return Ok(());
        }
        let existed = self.path.exists();
        let write = || -> std::io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let f = opts.open(&self.path)?;
            f.write_all_at(format!("{seq:020}\n").as_bytes(), 0)?;
            f.sync_data()?;
            if !existed {
                fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        };
        let result = write();
        let mut known = self.known.lock().expect("never poisoned: no panics inside");
        match result {
            Ok(()) => {
                *known = Some(seq);
                Ok(())
            }
            Err(e) => {
                // What the file holds is now unknown: read it again next time.
                *known = None;
                Err(StoreError::io(&self.path, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_records_nothing_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // What a first record that failed on a full disk leaves: the file, created, empty.
        fs::write(dir.path().join(FILE), b"").unwrap();
        let s = SignedSeq::new(dir.path());
        assert_eq!(s.get().unwrap(), 0);
        s.record(7).unwrap();
        assert_eq!(SignedSeq::new(dir.path()).get().unwrap(), 7);
        // Anything else that is not a number is corruption, named as such.
        fs::write(dir.path().join(FILE), b"12x\n").unwrap();
        let err = SignedSeq::new(dir.path()).get().unwrap_err();
        assert!(err.to_string().contains("does not hold a number"), "{err}");
    }
}
