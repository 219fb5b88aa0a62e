//! Bundles: a file of experiences for offline merge, like `git bundle`.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic    16 bytes  "LCLOUD-BUNDLE-1\n" (the digit is the bundle format version)
//! cloud    32 bytes  the cloud id (genesis id)
//! count     8 bytes  number of records
//! records  count × { len: u32 (1 ..= EXPERIENCE_BYTES_MAX), bytes: len }  (canonical experiences)
//! trailer  32 bytes  BLAKE3 of everything before it
//! ```
//!
//! The trailer catches truncation and accidental damage; each record is still validated in
//! full (signature included) on import, so a deliberately tampered record is refused by name.

use lcloud_core::{EXPERIENCE_BYTES_MAX, Id};

/// The magic prefix, with the bundle format version.
pub const MAGIC: &[u8; 16] = b"LCLOUD-BUNDLE-1\n";

/// Why a file is not a usable bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file does not start with the bundle magic.
    #[error("not a λCLOUD bundle (no LCLOUD-BUNDLE magic at the start)")]
    NotABundle,
    /// A bundle of another format version.
    #[error("bundle format {0:?} is not supported (this lcloud reads format 1)")]
    UnsupportedVersion(char),
    /// The file ends early.
    #[error("bundle truncated at byte {0}")]
    Truncated(usize),
    /// A record length outside 1 ..= the experience size cap.
    #[error("bundle record {index} claims {len} bytes (1 to {EXPERIENCE_BYTES_MAX} allowed)")]
    RecordLength {
        /// Record number.
        index: u64,
        /// Claimed length.
        len: u64,
    },
    /// The trailer does not match the contents.
    #[error("bundle checksum mismatch: the file is damaged or was altered")]
    ChecksumMismatch,
    /// Bytes after the trailer.
    #[error("bundle has {0} bytes after its trailer")]
    TrailingBytes(usize),
}

/// A decoded bundle: its cloud and the raw experience records, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// The cloud the bundle claims to be of.
    pub cloud: Id,
    /// The experiences' canonical bytes, in file order.
    pub records: Vec<&'a [u8]>,
}

/// Encodes a bundle.
pub fn encode<'a>(cloud: &Id, records: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(cloud.as_bytes());
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        assert!(
            !r.is_empty() && r.len() <= EXPERIENCE_BYTES_MAX,
            "records are experiences"
        );
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let trailer = blake3::hash(&out);
    out.extend_from_slice(trailer.as_bytes());
    out
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], BundleError> {
    let end = pos.checked_add(n).ok_or(BundleError::Truncated(*pos))?;
    let s = bytes.get(*pos..end).ok_or(BundleError::Truncated(*pos))?;
    *pos = end;
    Ok(s)
}

/// Decodes a bundle. Never allocates more than one pointer per record actually present.
pub fn decode(bytes: &[u8]) -> Result<Bundle<'_>, BundleError> {
    if bytes.len() < MAGIC.len() || bytes[..13] != MAGIC[..13] {
        return Err(BundleError::NotABundle);
    }
    if bytes[..16] != MAGIC[..] {
        return Err(BundleError::UnsupportedVersion(bytes[14] as char));
    }
    let mut pos = MAGIC.len();
    let cloud = Id(take(bytes, &mut pos, 32)?.try_into().expect("32 bytes"));
    let count = u64::from_le_bytes(take(bytes, &mut pos, 8)?.try_into().expect("8 bytes"));
    let mut records = Vec::new();
    for index in 0..count {
        let len = u32::from_le_bytes(take(bytes, &mut pos, 4)?.try_into().expect("4 bytes"));
        if len == 0 || len as usize > EXPERIENCE_BYTES_MAX {
            return Err(BundleError::RecordLength {
                index,
                len: u64::from(len),
            });
        }
        records.push(take(bytes, &mut pos, len as usize)?);
    }
    let body_end = pos;
    let trailer = take(bytes, &mut pos, 32)?;
    if blake3::hash(&bytes[..body_end]).as_bytes() != trailer {
        return Err(BundleError::ChecksumMismatch);
    }
    if pos != bytes.len() {
        return Err(BundleError::TrailingBytes(bytes.len() - pos));
    }
    Ok(Bundle { cloud, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let recs: Vec<&[u8]> = vec![b"abc", b"de"];
        let bytes = encode(&Id([3; 32]), recs.clone().into_iter());
        let b = decode(&bytes).unwrap();
        assert_eq!(b.cloud, Id([3; 32]));
        assert_eq!(b.records, recs);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        assert!(decode(&flipped).is_err());
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode(&more), Err(BundleError::TrailingBytes(1)));
        assert_eq!(
            decode(b"hello world, this is not"),
            Err(BundleError::NotABundle)
        );
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let good = encode(&Id([1; 32]), [b"abc".as_slice(), b"defg"].into_iter());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if bytes != good {
                assert!(decode(&bytes).is_err(), "a changed bundle must not decode");
            }
            let random: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
            let _ = decode(&random);
        }
    }

    #[test]
    fn huge_counts_and_lengths_do_not_allocate() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0; 32]);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(BundleError::RecordLength { .. })
        ));
        bytes.truncate(56);
        bytes.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(decode(&bytes), Err(BundleError::Truncated(60)));
    }
}
