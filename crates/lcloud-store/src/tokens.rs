//! API tokens: who may call a node's HTTP API, and for what.
//!
//! A token is `lct1.ID.SECRET`: `ID` (8 hex digits) names it, `SECRET` (64 hex digits, 32
//! bytes from the OS's randomness) proves it. The node keeps only BLAKE3 of the secret, in
//! `tokens.json` beside the store (mode 0600), with the token's name, scope, creation and
//! expiry times and whether it was revoked; the secret itself is shown once, when the token is
//! made. A presented secret is hashed and compared with the stored hash in constant time
//! (`blake3::Hash`'s equality), so the time a check takes says nothing of the secret.
//!
//! Scopes nest: `read` (state, history, events), `write` (also ops and contract calls),
//! `admin` (also imports, deploys, membership, the isolation switch). `lcloud init` and
//! `lcloud join` make an admin token and leave it in `admin.token` (mode 0600) for the CLI.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::RngCore;

use crate::error::StoreError;

const FILE: &str = "tokens.json";
/// Where `lcloud init` leaves the first admin token, for the CLI on this machine.
pub const ADMIN_FILE: &str = "admin.token";
const PREFIX: &str = "lct1";
/// Most tokens one node keeps (revoked ones included).
pub const TOKENS_MAX: usize = 1024;
/// Longest token name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// What a token may do. Each scope includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the state, the history and the events.
    Read,
    /// Also write ops and call contracts.
    Write,
    /// Also import bundles, deploy contracts, change membership, manage the node.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}: read, write or admin")),
        }
    }
}

/// A token as the node keeps it (everything but the secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    /// 8 hex digits, part of the token.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was made (Unix seconds).
    pub created: u64,
    /// When it stops working (Unix seconds), if ever.
    pub expires: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(flatten)]
    info: TokenInfo,
    /// BLAKE3 of the secret, hex.
    hash: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct File {
    version: u32,
    tokens: Vec<Entry>,
}

/// Why a request's token was refused. The text is what the API answers (one line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    #[error(
        "this API needs a token: send `Authorization: Bearer TOKEN` (`lcloud token create`; the \
         node's first admin token is in its directory's admin.token)"
    )]
    Missing,
    /// Not a token of this format.
    #[error("the token is malformed (tokens look like lct1.ID.SECRET)")]
    Malformed,
    /// No such token, or the secret does not match.
    #[error("the token is not valid for this node")]
    Unknown,
    /// Revoked.
    #[error("the token {0:?} was revoked")]
    Revoked(String),
    /// Past its expiry.
    #[error("the token {name:?} expired at {at} (Unix seconds)")]
    Expired {
        /// The token's name.
        name: String,
        /// When.
        at: u64,
    },
    /// Valid, but its scope is too small.
    #[error("the token {name:?} has scope {has}; this needs {needs}")]
    Scope {
        /// The token's name.
        name: String,
        /// Its scope.
        has: Scope,
        /// The scope needed.
        needs: Scope,
    },
}

/// Why tokens could not be made, revoked or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request was wrong.
    #[error("{0}")]
    Invalid(String),
}

/// The tokens of one node directory.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    file: File,
}

fn hash_hex(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

impl Tokens {
    /// The tokens in `dir` (none if the file does not exist yet).
    pub fn load(dir: &Path) -> Result<Tokens, StoreError> {
        let path = dir.join(FILE);
        let file = match fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() > TOKENS_MAX * 1024 {
                    return Err(StoreError::Corrupt {
                        what: format!("{} is larger than any token file", path.display()),
                    });
                }
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    what: format!("{}: {e}", path.display()),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File {
                version: 1,
                tokens: Vec::new(),
            },
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        Ok(Tokens { path, file })
    }

    /// Whether `dir` has a token file.
    pub fn exist(dir: &Path) -> bool {
        dir.join(FILE).exists()
    }

    /// The file the tokens are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token, revoked ones included, oldest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.file.tokens.iter().map(|e| e.info.clone()).collect()
    }

    /// Makes a token, saves the file, and returns the token (the only time its secret is
    /// seen) and what the node keeps of it.
    pub fn create(
        &mut self,
        scope: Scope,
        name: &str,
        expires: Option<u64>,
        now: u64,
    ) -> Result<(String, TokenInfo), TokenError> {
        if name.is_empty() || name.len() > NAME_BYTES_MAX || name.chars().any(char::is_control) {
            return Err(TokenError::Invalid(format!(
                "a token name is 1 to {NAME_BYTES_MAX} bytes without control characters"
            )));
        }
        if self.file.tokens.len() >= TOKENS_MAX {
            return Err(TokenError::Invalid(format!(
                "this node keeps at most {TOKENS_MAX} tokens: revoke and remove some first"
            )));
        }
        let mut bytes = [0u8; 36];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(&bytes[..4]);
        if self.file.tokens.iter().any(|e| e.info.id == id) {
            // 1 in 4 billion: try again with fresh randomness.
            return self.create(scope, name, expires, now);
        }
        let secret = hex::encode(&bytes[4..]);
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_owned(),
            scope,
            created: now,
            expires,
            revoked: false,
        };
        self.file.tokens.push(Entry {
            info: info.clone(),
            hash: hash_hex(&secret),
        });
        self.save()?;
        Ok((format!("{PREFIX}.{id}.{secret}"), info))
    }

    /// Revokes the token with this id or name (every token of that name), and saves.
    pub fn revoke(&mut self, which: &str) -> Result<Vec<TokenInfo>, TokenError> {
        let mut revoked = Vec::new();
        for e in &mut self.file.tokens {
            if (e.info.id == which || e.info.name == which) && !e.info.revoked {
                e.info.revoked = true;
                revoked.push(e.info.clone());
            }
        }
        if revoked.is_empty() {
            return Err(TokenError::Invalid(format!(
                "no token with id or name {which:?} that is not revoked already (`lcloud token list`)"
            )));
        }
        self.save()?;
        Ok(revoked)
    }

    /// The token `presented` if it is valid at `now` and allows `needs`.
    pub fn check(&self, presented: &str, needs: Scope, now: u64) -> Result<&TokenInfo, Denied> {
        let mut parts = presented.split('.');
        let (Some(PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Denied::Malformed);
        };
        if id.len() != 8 || secret.len() != 64 {
            return Err(Denied::Malformed);
        }
        let Some(entry) = self.file.tokens.iter().find(|e| e.info.id == id) else {
            return Err(Denied::Unknown);
        };
        let Ok(stored) = blake3::Hash::from_hex(&entry.hash) else {
            return Err(Denied::Unknown);
        };
        // Constant time: blake3::Hash compares all 32 bytes whatever differs.
        if blake3::hash(secret.as_bytes()) != stored {
            return Err(Denied::Unknown);
        }
        let info = &entry.info;
        if info.revoked {
            return Err(Denied::Revoked(info.name.clone()));
        }
        if let Some(at) = info.expires.filter(|at| *at <= now) {
            return Err(Denied::Expired {
                name: info.name.clone(),
                at,
            });
        }
        if info.scope < needs {
            return Err(Denied::Scope {
                name: info.name.clone(),
                has: info.scope,
                needs,
            });
        }
        Ok(info)
    }

    /// Writes the file: a temporary file (mode 0600), synced, renamed over the old one.
    fn save(&self) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.file).expect("tokens serialize");
        write_private(&tmp, &bytes)?;
        fs::rename(&tmp, &self.path).map_err(|e| StoreError::io(&self.path, e))
    }
}

/// Writes `bytes` to a new file at `path` readable by its owner only, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| StoreError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

/// Gives `dir` its first admin token if it has no token file yet (a directory made by
/// `lcloud init`/`join`, or by a version without tokens): the token goes to `admin.token`
/// (mode 0600). Returns that file's path when it made one.
pub fn ensure_admin_token(dir: &Path, now: u64) -> Result<Option<PathBuf>, TokenError> {
    if Tokens::exist(dir) {
        return Ok(None);
    }
    let mut tokens = Tokens::load(dir)?;
    let (token, _) = tokens.create(Scope::Admin, "admin", None, now)?;
    let path = dir.join(ADMIN_FILE);
    write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(Some(path))
}

/// The admin token `lcloud init` left in `dir`, if it is there.
pub fn admin_token(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(ADMIN_FILE)).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Seconds since the Unix epoch, by this machine's clock (token creation and expiry only:
/// nothing folded or signed reads it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are checked by secret, scope, revocation and expiry; the file keeps no secret
    /// and survives a reload; only the owner may read it.
    #[test]
    fn a_token_allows_its_scope_until_it_is_revoked_or_expires() {
        let dir = tempfile::tempdir().unwrap();
        let admin = ensure_admin_token(dir.path(), 100).unwrap().unwrap();
        assert!(ensure_admin_token(dir.path(), 100).unwrap().is_none());
        let admin = fs::read_to_string(admin).unwrap().trim().to_owned();
        let mut t = Tokens::load(dir.path()).unwrap();
        assert_eq!(t.check(&admin, Scope::Admin, 100).unwrap().name, "admin");
        let (reader, _) = t.create(Scope::Read, "dash", Some(200), 100).unwrap();
        assert!(t.check(&reader, Scope::Read, 150).is_ok());
        assert!(matches!(
            t.check(&reader, Scope::Write, 150),
            Err(Denied::Scope {
                has: Scope::Read,
                needs: Scope::Write,
                ..
            })
        ));
        assert!(matches!(
            t.check(&reader, Scope::Read, 200),
            Err(Denied::Expired { at: 200, .. })
        ));
        // One wrong digit of the secret, or of the id.
        let mut wrong = reader.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(t.check(&wrong, Scope::Read, 150), Err(Denied::Unknown));
        assert_eq!(
            t.check("lct1.x.y", Scope::Read, 150),
            Err(Denied::Malformed)
        );
        assert_eq!(t.check("", Scope::Read, 150), Err(Denied::Malformed));
        t.revoke("dash").unwrap();
        let t = Tokens::load(dir.path()).unwrap();
        assert_eq!(
            t.check(&reader, Scope::Read, 150),
            Err(Denied::Revoked("dash".into()))
        );
        let file = fs::read_to_string(t.path()).unwrap();
        assert!(
            !file.contains(reader.rsplit('.').next().unwrap()),
            "a secret was stored"
        );
        #[cfg(unix)]
        for f in [FILE, ADMIN_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}
