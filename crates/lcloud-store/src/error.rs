//! Why the store refused or failed. At the bottom of the store: every module may use it, it
//! uses nothing of the store but the file names ([`crate::schema`]).

use std::path::{Path as FsPath, PathBuf};

use lcloud_core::{
    CompactError, EXPERIENCE_BYTES_MAX, InsertError, NodeId, ValidationError, VectorClock,
    WriteRefused,
};

use crate::schema::{DB_FILE, FORMAT};

/// Why the store refused or failed. Each message names what is wrong and where.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// There is no store in the directory.
    #[error("no λCLOUD store in {0}: run `lcloud init` or `lcloud join FILE` first")]
    NoStore(PathBuf),
    /// A store already exists.
    #[error("a λCLOUD store already exists in {0}")]
    AlreadyExists(PathBuf),
    /// Another process holds the store.
    #[error("the store in {0} is open in another process (a running `lcloud node`?)")]
    Busy(PathBuf),
    /// Something on disk is corrupt; nothing of it was used.
    #[error("store corrupt: {what}")]
    Corrupt {
        /// What and where.
        what: String,
    },
    /// The disk is full; nothing was written.
    #[error("disk full while writing {0}: nothing was written; free space and retry")]
    DiskFull(PathBuf),
    /// Another I/O failure.
    #[error("I/O error on {path}: {error}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        error: String,
    },
    /// The store is behind what this identity has signed: probably restored from a backup.
    #[error(
        "this store has your chain up to seq {stored}, but this identity has signed up to seq {signed}: \
         the store may be restored from a backup. Import a bundle (or sync from a peer) holding your \
         chain up to seq {signed} before writing, so you never sign two different experiences at one seq"
    )]
    BehindSignedSeq {
        /// Highest seq signed.
        signed: u64,
        /// Highest seq of this identity in the store.
        stored: u64,
    },
    /// The cloud's rules refuse the write. (Not a `source`: the message already says why,
    /// and a report of the chain would say it twice.)
    #[error("refused: {0}")]
    Refused(InsertError),
    /// This node refuses to sign the write: the fold would leave it out, mask it or misread it.
    #[error("refused: {0}")]
    WriteRefused(WriteRefused),
    /// The experience would be larger than the cap.
    #[error(
        "the experience would be {0} bytes; at most {EXPERIENCE_BYTES_MAX} are allowed: split it"
    )]
    TooLarge(usize),
    /// A clock beyond what the store holds.
    #[error("clock asks for {node}:{asked}, but this store has only {node}:{known}")]
    ClockAhead {
        /// The node.
        node: NodeId,
        /// Seq asked for.
        asked: u64,
        /// Seq held.
        known: u64,
    },
    /// The committer has stopped.
    #[error("the store's committer has stopped")]
    Closed,
    /// This write needs the whole history loaded (`Op::needs_history`, or this node forked).
    #[error(
        "this write needs the full history loaded (a call, a deploy, a revocation or an attestation, or this node's chain forked)"
    )]
    NeedsFullLoad,
    /// A write was chained on an earlier one of this node that failed to commit; nothing of
    /// it was stored.
    #[error(
        "an earlier write this one was chained on failed to commit; nothing of this one was stored: retry"
    )]
    EarlierWriteFailed,
    /// The store was compacted: the history a cut needs lies below its base.
    #[error(
        "this store was compacted at a final checkpoint; the earliest cut it still holds is \
         {earliest} (a cut must include it)"
    )]
    Compacted {
        /// The compaction point's clock.
        earliest: VectorClock,
    },
    /// The store could not be compacted.
    #[error("cannot compact: {0}")]
    Compact(CompactError),
    /// The store is of an older format that this lcloud cannot bring up to date.
    #[error("the store cannot be opened by this lcloud: {0}")]
    CannotMigrate(String),
    /// The store was written by a newer format.
    #[error("store format {0} is newer than this lcloud understands ({FORMAT})")]
    NewerFormat(u8),
}

impl From<InsertError> for StoreError {
    fn from(e: InsertError) -> StoreError {
        StoreError::Refused(e)
    }
}

impl From<WriteRefused> for StoreError {
    fn from(e: WriteRefused) -> StoreError {
        StoreError::WriteRefused(e)
    }
}

impl StoreError {
    pub(crate) fn io(path: &FsPath, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
            StoreError::DiskFull(path.to_owned())
        } else {
            StoreError::Io {
                path: path.to_owned(),
                error: e.to_string(),
            }
        }
    }
}

/// The store is corrupt: `what`, and where.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

/// A stored experience that does not validate.
pub(crate) fn bad_record(n: u64, e: &ValidationError) -> StoreError {
    corrupt(format!("experience #{n}: {e}"))
}

/// A redb error inside a transaction, named by the database file alone (the directory is
/// not at hand there).
pub(crate) fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io {
        path: DB_FILE.into(),
        error: e.into().to_string(),
    }
}

/// A redb error on the database in `dir`, as the store's own.
pub(crate) fn map_db(dir: &FsPath, e: impl Into<redb::Error>) -> StoreError {
    let path = dir.join(DB_FILE);
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StoreError::Busy(dir.to_owned()),
        redb::Error::Corrupted(what) => StoreError::Corrupt {
            what: format!("{}: {what}", path.display()),
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                what: format!("{}: {io}", path.display()),
            }
        }
        redb::Error::Io(io) => StoreError::io(&path, io),
        other => StoreError::Io {
            path,
            error: other.to_string(),
        },
    }
}
