//! The node's identity: an Ed25519 key kept in `identity.key` beside the store.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_consensus::SigningKey;
use lcloud_core::NodeId;

use crate::error::StoreError;

pub(crate) const FILE: &str = "identity.key";

/// A node's signing key and the id it implies.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.id().short())
    }
}

impl Identity {
    /// Loads the identity in `dir`, creating one (from the OS's randomness) if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Identity, StoreError> {
        match Identity::load(dir)? {
            Some(id) => Ok(id),
            None => {
                create_private_dir(dir)?;
                let key = SigningKey::new(rand_core::OsRng);
                let path = dir.join(FILE);
                let mut opts = fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&path).map_err(|e| StoreError::io(&path, e))?;
                f.write_all(hex::encode(key.as_bytes()).as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| StoreError::io(&path, e))?;
                Ok(Identity { key })
            }
        }
    }

    /// Loads the identity in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Identity>, StoreError> {
        Identity::load_file(&dir.join(FILE))
    }

    /// A new key, from the OS's randomness.
    pub(crate) fn generate() -> Identity {
        Identity {
            key: SigningKey::new(rand_core::OsRng),
        }
    }

    /// Loads a key file (64 hex digits), if it exists.
    pub(crate) fn load_file(path: &Path) -> Result<Option<Identity>, StoreError> {
        let path = path.to_owned();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| StoreError::Corrupt {
            what: format!("{} is not 64 hex digits", path.display()),
        })?;
        Ok(Some(Identity {
            key: SigningKey::from(bytes),
        }))
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The node id (public key).
    pub fn id(&self) -> NodeId {
        NodeId(self.key.verification_key().to_bytes())
    }
}

/// Creates `dir` (and its parents) if missing; a directory made here is its owner's only
/// (mode 0700), as it will hold the node's key, tokens and history.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| StoreError::io(dir, e))
}
