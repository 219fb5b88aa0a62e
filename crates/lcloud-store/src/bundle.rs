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
    let (mut enc, mut out) = Encoder::start(cloud, records.len() as u64);
    for r in records {
        enc.record(&mut out, r);
    }
    enc.finish(&mut out);
    out
}

/// Writes a bundle piece by piece (for answers streamed as they are made): the header from
/// [`Encoder::start`], each record with [`Encoder::record`], then [`Encoder::finish`].
#[derive(Debug)]
pub struct Encoder {
    hasher: blake3::Hasher,
}

impl Encoder {
    /// The encoder of a bundle of `count` records of `cloud`, and the header's bytes.
    pub fn start(cloud: &Id, count: u64) -> (Encoder, Vec<u8>) {
        let mut out = Vec::with_capacity(56);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(cloud.as_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out);
        (Encoder { hasher }, out)
    }

    /// Appends one record to `out`.
    pub fn record(&mut self, out: &mut Vec<u8>, r: &[u8]) {
        assert!(
            !r.is_empty() && r.len() <= EXPERIENCE_BYTES_MAX,
            "records are experiences"
        );
        let from = out.len();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
        self.hasher.update(&out[from..]);
    }

    /// Appends the trailer to `out`.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.hasher.finalize().as_bytes());
    }
}

/// Checks a bundle's layout and checksum as its bytes arrive, keeping none of them (at most
/// one 56-byte header or 4-byte length is buffered): for bundles too large to hold.
#[derive(Debug)]
pub struct Checker {
    hasher: blake3::Hasher,
    /// Bytes of a header, a length or the trailer gathered so far.
    part: Vec<u8>,
    at: Part,
    /// Bytes seen.
    seen: usize,
    cloud: Option<Id>,
    count: u64,
    index: u64,
    trailer: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    Len,
    Record(usize),
    Trailer,
    Done,
}

impl Default for Checker {
    fn default() -> Checker {
        Checker::new()
    }
}

impl Checker {
    /// A checker at the start of a bundle.
    pub fn new() -> Checker {
        Checker {
            hasher: blake3::Hasher::new(),
            part: Vec::with_capacity(56),
            at: Part::Header,
            seen: 0,
            cloud: None,
            count: 0,
            index: 0,
            trailer: None,
        }
    }

    /// The bundle's cloud, once its header has arrived.
    pub fn cloud(&self) -> Option<Id> {
        self.cloud
    }

    /// The next bytes; the first error ends the check.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), BundleError> {
        while !bytes.is_empty() {
            match self.at {
                Part::Header => {
                    let n = (56 - self.part.len()).min(bytes.len());
                    self.gather(&bytes[..n]);
                    bytes = &bytes[n..];
                    let have = self.part.len();
                    if have >= 13 && self.part[..13] != MAGIC[..13]
                        || have < 13 && self.part[..] != MAGIC[..have]
                    {
                        return Err(BundleError::NotABundle);
                    }
                    if have >= 16 && self.part[..16] != MAGIC[..] {
                        return Err(BundleError::UnsupportedVersion(self.part[14] as char));
                    }
                    if have == 56 {
                        self.cloud = Some(Id(self.part[16..48].try_into().expect("32 bytes")));
                        self.count = u64::from_le_bytes(self.part[48..].try_into().expect("8"));
                        self.part.clear();
                        self.at = self.after_record();
                    }
                }
                Part::Len => {
                    let n = (4 - self.part.len()).min(bytes.len());
                    self.gather(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.part.len() == 4 {
                        let len = u32::from_le_bytes(self.part[..].try_into().expect("4"));
                        self.part.clear();
                        if len == 0 || len as usize > EXPERIENCE_BYTES_MAX {
                            return Err(BundleError::RecordLength {
                                index: self.index,
                                len: u64::from(len),
                            });
                        }
                        self.at = Part::Record(len as usize);
                    }
                }
                Part::Record(left) => {
                    let n = left.min(bytes.len());
                    self.hasher.update(&bytes[..n]);
                    self.seen += n;
                    bytes = &bytes[n..];
                    if n == left {
                        self.index += 1;
                        self.at = self.after_record();
                    } else {
                        self.at = Part::Record(left - n);
                    }
                }
                Part::Trailer => {
                    let n = (32 - self.part.len()).min(bytes.len());
                    self.part.extend_from_slice(&bytes[..n]);
                    self.seen += n;
                    bytes = &bytes[n..];
                    if self.part.len() == 32 {
                        self.trailer = Some(self.part[..].try_into().expect("32"));
                        self.at = Part::Done;
                    }
                }
                Part::Done => return Err(BundleError::TrailingBytes(bytes.len())),
            }
        }
        Ok(())
    }

    /// The end of the bytes: the bundle's cloud and record count, or why it is not whole.
    pub fn finish(self) -> Result<(Id, u64), BundleError> {
        let (Some(cloud), Some(trailer)) = (self.cloud, self.trailer) else {
            return Err(if self.seen < 13 {
                BundleError::NotABundle
            } else {
                BundleError::Truncated(self.seen)
            });
        };
        if self.hasher.finalize().as_bytes() != &trailer {
            return Err(BundleError::ChecksumMismatch);
        }
        Ok((cloud, self.count))
    }

    fn gather(&mut self, bytes: &[u8]) {
        self.part.extend_from_slice(bytes);
        self.hasher.update(bytes);
        self.seen += bytes.len();
    }

    fn after_record(&self) -> Part {
        if self.index < self.count {
            Part::Len
        } else {
            Part::Trailer
        }
    }
}

/// Reads the records of a bundle [`Checker`] found whole, one at a time (from a file, say),
/// never holding more than one.
#[derive(Debug)]
pub struct Reader<R> {
    r: R,
    left: u64,
    index: u64,
}

impl<R: std::io::Read> Reader<R> {
    /// Reads the header: the cloud, and the reader of the records.
    pub fn open(mut r: R) -> std::io::Result<(Id, Reader<R>)> {
        let mut head = [0u8; 56];
        r.read_exact(&mut head)?;
        if head[..16] != MAGIC[..] {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                BundleError::NotABundle,
            ));
        }
        let cloud = Id(head[16..48].try_into().expect("32 bytes"));
        let left = u64::from_le_bytes(head[48..].try_into().expect("8 bytes"));
        Ok((cloud, Reader { r, left, index: 0 }))
    }

    /// The next record, `None` after the last.
    pub fn next_record(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len == 0 || len as usize > EXPERIENCE_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                BundleError::RecordLength {
                    index: self.index,
                    len: u64::from(len),
                },
            ));
        }
        let mut rec = vec![0u8; len as usize];
        self.r.read_exact(&mut rec)?;
        self.left -= 1;
        self.index += 1;
        Ok(Some(rec))
    }
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

    /// The checker agrees with [`decode`] on every prefix, damage and split of the bytes.
    fn check_in_pieces(bytes: &[u8], piece: usize) -> Result<(Id, u64), BundleError> {
        let mut c = Checker::new();
        for p in bytes.chunks(piece.max(1)) {
            c.feed(p)?;
        }
        c.finish()
    }

    #[test]
    fn the_checker_accepts_what_decode_accepts_however_the_bytes_are_split() {
        let recs: Vec<&[u8]> = vec![b"abc", b"de", b"fghij"];
        let bytes = encode(&Id([3; 32]), recs.clone().into_iter());
        for piece in [1, 2, 3, 5, 7, 56, 1000] {
            assert_eq!(check_in_pieces(&bytes, piece), Ok((Id([3; 32]), 3)));
        }
        for cut in 0..bytes.len() {
            assert!(
                check_in_pieces(&bytes[..cut], 3).is_err(),
                "truncated at {cut}"
            );
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert_eq!(
                check_in_pieces(&flipped, 4).is_ok(),
                decode(&flipped).is_ok(),
                "flipped at {at}"
            );
        }
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(
            check_in_pieces(&more, 9),
            Err(BundleError::TrailingBytes(1))
        );
        assert_eq!(
            check_in_pieces(b"GET / HTTP/1.1", 3),
            Err(BundleError::NotABundle)
        );
        // The reader gives the records back.
        let (cloud, mut r) = Reader::open(&bytes[..]).unwrap();
        assert_eq!(cloud, Id([3; 32]));
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            got.push(rec);
        }
        assert_eq!(got, recs.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
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
