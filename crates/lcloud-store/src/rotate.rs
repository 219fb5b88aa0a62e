//! Key rotation on disk. A node hands its rights to a new key with a `rotate_key` experience
//! signed by the old one; then the directory must switch to the new key, and `signed-seq` must
//! start again at 0 (the new key has signed nothing). Each step survives a crash:
//!
//! 1. [`prepare`]: the new key is written to `identity.key.next` (0600, synced), or the one a
//!    crashed rotation left there is taken again;
//! 2. the caller writes the rotation, durably, with the old key;
//! 3. [`finish`]: `signed-seq.next` (0) is written, the old key is kept as
//!    `identity.key.retired`, then `identity.key.next` and `signed-seq.next` are renamed over
//!    `identity.key` and `signed-seq`;
//! 4. the node, on its next start, connects to its peers once more under the old key (which
//!    peers that have not seen the rotation still let in) and pushes the rotation, so they let
//!    the new key in; then [`announced`] deletes the retired key.
//!
//! [`finish`] also runs on every start: it completes a rotation the history holds, and drops a
//! prepared key whose rotation was never written.

use std::fs;
use std::path::Path;

use lcloud_core::{Op, Replica};

use crate::error::StoreError;
use crate::identity::{FILE, Identity};

const NEXT: &str = "identity.key.next";
const SIGNED_NEXT: &str = "signed-seq.next";
const RETIRED: &str = "identity.key.retired";

/// The key a rotation hands over to: a new one, or the one a crashed rotation prepared.
pub fn prepare(dir: &Path) -> Result<Identity, StoreError> {
    if let Some(next) = Identity::load_file(&dir.join(NEXT))? {
        return Ok(next);
    }
    let next = Identity::generate();
    crate::tokens::write_private(
        &dir.join(NEXT),
        hex::encode(next.key().as_bytes()).as_bytes(),
    )?;
    sync_dir(dir)?;
    Ok(next)
}

/// Switches `dir` to the prepared key if `replica` holds the rotation to it by `current`;
/// drops a prepared key it does not. Returns the new identity when it switched.
pub fn finish(
    dir: &Path,
    current: &Identity,
    replica: &Replica,
) -> Result<Option<Identity>, StoreError> {
    let next_path = dir.join(NEXT);
    let signed_next = dir.join(SIGNED_NEXT);
    let Some(next) = Identity::load_file(&next_path)? else {
        // The key was switched and the crash came before signed-seq was.
        if signed_next.exists() {
            rename(&signed_next, &dir.join(crate::signed::FILE))?;
            sync_dir(dir)?;
        }
        return Ok(None);
    };
    let rotated = replica.lattice().chain(&current.id()).iter().any(|e| {
        e.ops()
            .iter()
            .any(|op| *op == Op::RotateKey { to: next.id() })
    });
    if !rotated {
        fs::remove_file(&next_path).map_err(|e| StoreError::io(&next_path, e))?;
        let _ = fs::remove_file(&signed_next);
        sync_dir(dir)?;
        return Ok(None);
    }
    crate::tokens::write_private(&signed_next, format!("{:020}\n", 0).as_bytes())?;
    crate::tokens::write_private(
        &dir.join(RETIRED),
        hex::encode(current.key().as_bytes()).as_bytes(),
    )?;
    rename(&next_path, &dir.join(FILE))?;
    rename(&signed_next, &dir.join(crate::signed::FILE))?;
    sync_dir(dir)?;
    Ok(Some(next))
}

/// The key a rotation retired, while peers may not have seen the rotation yet.
pub fn retired(dir: &Path) -> Result<Option<Identity>, StoreError> {
    Identity::load_file(&dir.join(RETIRED))
}

/// A peer holds the rotation: the retired key is deleted.
pub fn announced(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(RETIRED);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|e| StoreError::io(to, e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcloud_core::{Experience, Genesis};

    fn setup() -> (tempfile::TempDir, Identity, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let old = Identity::load_or_create(dir.path()).unwrap();
        fs::write(
            dir.path().join(crate::signed::FILE),
            "00000000000000000001\n",
        )
        .unwrap();
        let genesis = Experience::create_genesis(old.key(), Genesis::open("t"));
        (dir, old, Replica::new(genesis).unwrap())
    }

    /// A prepared key whose rotation was never written is dropped; the identity stays.
    #[test]
    fn a_rotation_never_written_is_forgotten() {
        let (dir, old, replica) = setup();
        let next = prepare(dir.path()).unwrap();
        assert_eq!(
            prepare(dir.path()).unwrap().id(),
            next.id(),
            "a retry takes it again"
        );
        assert!(finish(dir.path(), &old, &replica).unwrap().is_none());
        assert!(!dir.path().join(NEXT).exists());
        assert_eq!(Identity::load(dir.path()).unwrap().unwrap().id(), old.id());
    }

    /// Once the history holds the rotation, the directory switches key and signed-seq starts
    /// again; a crash between the two renames is finished on the next call.
    #[test]
    fn a_written_rotation_switches_the_key_even_after_a_crash() {
        let (dir, old, mut replica) = setup();
        let next = prepare(dir.path()).unwrap();
        replica
            .write(old.key(), vec![Op::RotateKey { to: next.id() }])
            .unwrap();
        let new = finish(dir.path(), &old, &replica).unwrap().unwrap();
        assert_eq!(new.id(), next.id());
        assert_eq!(Identity::load(dir.path()).unwrap().unwrap().id(), next.id());
        let signed = fs::read_to_string(dir.path().join(crate::signed::FILE)).unwrap();
        assert_eq!(signed.trim().parse::<u64>().unwrap(), 0);
        assert_eq!(retired(dir.path()).unwrap().unwrap().id(), old.id());
        announced(dir.path()).unwrap();
        assert!(retired(dir.path()).unwrap().is_none());
        // The crash: the key switched, signed-seq not yet.
        fs::write(dir.path().join(SIGNED_NEXT), "00000000000000000000\n").unwrap();
        fs::write(
            dir.path().join(crate::signed::FILE),
            "00000000000000000009\n",
        )
        .unwrap();
        assert!(finish(dir.path(), &new, &replica).unwrap().is_none());
        let signed = fs::read_to_string(dir.path().join(crate::signed::FILE)).unwrap();
        assert_eq!(signed.trim().parse::<u64>().unwrap(), 0);
        assert!(!dir.path().join(SIGNED_NEXT).exists());
    }
}
