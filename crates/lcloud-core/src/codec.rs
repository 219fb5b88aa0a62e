//! Canonical bytes: DAG-CBOR with a bounds pre-check, so that decoding untrusted input never
//! allocates more than the input justifies, never recurses deeper than [`MAX_DEPTH`], and
//! never accepts a second encoding of the same value.
//!
//! Decoding is three steps: [`precheck`] walks the CBOR item headers without allocating
//! (definite lengths only, every claimed length within the bytes that remain, nesting bounded,
//! no tags, exactly one item and no trailing bytes); serde_ipld_dagcbor decodes (it rejects
//! unsorted map keys and non-minimal integers); and the result is re-encoded and compared with
//! the input, so one logical value has exactly one byte string.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Deepest nesting of arrays and maps accepted anywhere in a decoded item from outside: a
/// peer, a bundle, an API client. A writer refuses ops that would nest deeper once wrapped in
/// their experience (`lcloud_core::check_nesting`), so what a node writes, it and its peers
/// can read.
pub const MAX_DEPTH: usize = 48;

/// Deepest nesting accepted in bytes a node reads back from its own store (tag-checked
/// records, leaves, checkpoints). Deeper than [`MAX_DEPTH`] so that a store written before
/// writers applied [`MAX_DEPTH`] (values up to serde_json's 128 levels got in) still opens and
/// serves everything it holds.
pub const STORED_DEPTH_MAX: usize = 160;

/// Why bytes were refused by the canonical decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside an item.
    #[error("truncated: input ends inside an item at byte {0}")]
    Truncated(usize),
    /// Bytes remain after the one top-level item.
    #[error("trailing bytes: {0} bytes after the item")]
    TrailingBytes(usize),
    /// A string, array or map claims more elements than bytes remain.
    #[error("length {claimed} at byte {at} exceeds the {remaining} bytes that remain")]
    LengthTooLarge {
        /// Byte offset of the item header.
        at: usize,
        /// The claimed length.
        claimed: u64,
        /// The bytes left in the input.
        remaining: usize,
    },
    /// Arrays and maps nest deeper than the limit ([`MAX_DEPTH`] for input from outside).
    #[error("nesting deeper than {limit} levels at byte {at}")]
    TooDeep {
        /// Byte offset of the container that went one level too deep.
        at: usize,
        /// The limit in force.
        limit: usize,
    },
    /// An indefinite length, a tag, a reserved header or an undefined simple value.
    #[error("not DAG-CBOR: {what} at byte {at}")]
    NotDagCbor {
        /// Byte offset.
        at: usize,
        /// What was found.
        what: &'static str,
    },
    /// The input is well-formed CBOR but not of the expected shape.
    #[error("wrong shape: {0}")]
    Shape(String),
    /// The input decodes, but is not the canonical encoding of what it decodes to.
    #[error("non-canonical encoding: re-encoding gives different bytes")]
    NonCanonical,
    /// The input is larger than the caller's cap.
    #[error("too large: {len} bytes, at most {max} accepted")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// An owned byte string that encodes as a CBOR byte string (not an array of integers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteBuf(pub Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A borrowed byte string that encodes as [`ByteBuf`] does (a CBOR byte string).
#[derive(Clone, Copy, Debug)]
pub struct ByteRef<'a>(pub &'a [u8]);

impl Serialize for ByteRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Encodes `value` as canonical DAG-CBOR.
///
/// ```
/// let bytes = lcloud_core::codec::to_canonical(&(1u8, "a"));
/// assert_eq!(bytes, [0x82, 0x01, 0x61, b'a']);
/// ```
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Only values this crate defines are encoded here; none of them contain a type that
    // DAG-CBOR cannot express (non-string map keys, non-finite floats are refused at entry).
    serde_ipld_dagcbor::to_vec(value).expect("core values always encode as DAG-CBOR")
}

/// Writes the head of a CBOR item of major type `major` with argument `n`, in its shortest
/// form (as DAG-CBOR requires).
pub fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..24 => out.push(m | n as u8),
        24..0x100 => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..0x1_0000 => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..0x1_0000_0000 => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Writes a CBOR text string.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_head(out, 3, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Writes a CBOR byte string.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, 2, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Decodes canonical DAG-CBOR of at most `max_len` bytes into `T`.
pub fn from_canonical_capped<T>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Serialize,
{
    from_canonical_capped_with(bytes, max_len, to_canonical)
}

/// [`from_canonical_capped`], checking canonical form with `encode` (which must give exactly
/// what [`to_canonical`] gives, only faster).
pub fn from_canonical_capped_with<T>(
    bytes: &[u8],
    max_len: usize,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
{
    decode_capped(bytes, max_len, precheck, encode)
}

/// Decodes canonical DAG-CBOR that this node stored itself (no size cap beyond the input's own
/// length; nesting up to [`STORED_DEPTH_MAX`]). Never for bytes from outside.
pub fn from_canonical_stored<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Serialize,
{
    from_canonical_stored_capped_with(bytes, usize::MAX, to_canonical)
}

/// [`from_canonical_capped_with`] for bytes this node stored itself: nesting up to
/// [`STORED_DEPTH_MAX`].
pub fn from_canonical_stored_capped_with<T>(
    bytes: &[u8],
    max_len: usize,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
{
    decode_capped(bytes, max_len, precheck_stored, encode)
}

/// The three steps of the module docs: size cap, `precheck` (which sets the nesting limit),
/// decode, then re-encode with `encode` and compare.
fn decode_capped<T>(
    bytes: &[u8],
    max_len: usize,
    precheck: fn(&[u8]) -> Result<(), DecodeError>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
{
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    precheck(bytes)?;
    let value: T =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DecodeError::Shape(e.to_string()))?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes canonical DAG-CBOR into `T`, with no size cap beyond the input's own length
/// (nesting up to [`MAX_DEPTH`]).
pub fn from_canonical<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Serialize,
{
    from_canonical_capped(bytes, usize::MAX)
}

/// Walks the item headers of `bytes` without allocating; see the module docs.
pub fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
    whole(bytes, item_end(bytes, 0)?)
}

/// [`precheck`] for bytes this node stored itself: nesting up to [`STORED_DEPTH_MAX`].
pub fn precheck_stored(bytes: &[u8]) -> Result<(), DecodeError> {
    whole(bytes, item_end_stored(bytes, 0)?)
}

fn whole(bytes: &[u8], end: usize) -> Result<(), DecodeError> {
    if end != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - end));
    }
    Ok(())
}

/// The offset just past the one item that starts at `start`, with the same checks as
/// [`precheck`] (bounded lengths and depth, DAG-CBOR headers only), without allocating.
pub fn item_end(bytes: &[u8], start: usize) -> Result<usize, DecodeError> {
    walk::<{ MAX_DEPTH + 1 }>(bytes, start).map(|(end, _)| end)
}

/// [`item_end`] for bytes this node stored itself: nesting up to [`STORED_DEPTH_MAX`].
pub fn item_end_stored(bytes: &[u8], start: usize) -> Result<usize, DecodeError> {
    walk::<{ STORED_DEPTH_MAX + 1 }>(bytes, start).map(|(end, _)| end)
}

/// How deep the arrays and maps of the one item in `bytes` nest (empty ones do not count, as
/// in [`precheck`]): at most [`MAX_DEPTH`] reads everywhere. `None` if the item nests deeper
/// than [`STORED_DEPTH_MAX`] or is not a well-formed item.
pub fn nesting(bytes: &[u8]) -> Option<usize> {
    walk::<{ STORED_DEPTH_MAX + 1 }>(bytes, 0)
        .ok()
        .filter(|(end, _)| *end == bytes.len())
        .map(|(_, deepest)| deepest)
}

/// Walks the item at `start`: its end and the deepest nesting seen, refusing nesting past
/// `LEVELS - 1`.
fn walk<const LEVELS: usize>(bytes: &[u8], start: usize) -> Result<(usize, usize), DecodeError> {
    // `pending[d]` counts the items still expected at nesting depth d.
    let mut pending: [u64; LEVELS] = [0; LEVELS];
    let mut depth = 0usize;
    let mut deepest = 0usize;
    pending[0] = 1;
    let mut pos = start;
    loop {
        while depth > 0 && pending[depth] == 0 {
            depth -= 1;
        }
        if pending[depth] == 0 {
            break;
        }
        pending[depth] -= 1;
        let at = pos;
        let (major, arg) = read_header(bytes, &mut pos)?;
        let remaining = bytes.len() - pos;
        let too_large = |claimed: u64| DecodeError::LengthTooLarge {
            at,
            claimed,
            remaining,
        };
        match major {
            0 | 1 => {}
            2 | 3 => {
                if arg > remaining as u64 {
                    return Err(too_large(arg));
                }
                pos += arg as usize;
            }
            4 | 5 => {
                let items = if major == 5 {
                    arg.checked_mul(2).ok_or_else(|| too_large(arg))?
                } else {
                    arg
                };
                if items > remaining as u64 {
                    return Err(too_large(arg));
                }
                if items > 0 {
                    if depth == LEVELS - 1 {
                        return Err(DecodeError::TooDeep {
                            at,
                            limit: LEVELS - 1,
                        });
                    }
                    depth += 1;
                    deepest = deepest.max(depth);
                    pending[depth] = items;
                }
            }
            6 => return Err(DecodeError::NotDagCbor { at, what: "a tag" }),
            _ => check_simple(bytes[at] & 0x1f, at)?,
        }
    }
    Ok((pos, deepest))
}

fn check_simple(info: u8, at: usize) -> Result<(), DecodeError> {
    match info {
        20..=22 | 27 => Ok(()),
        25 | 26 => Err(DecodeError::NotDagCbor {
            at,
            what: "a float narrower than 64 bits",
        }),
        _ => Err(DecodeError::NotDagCbor {
            at,
            what: "a simple value other than false, true or null",
        }),
    }
}

fn read_header(bytes: &[u8], pos: &mut usize) -> Result<(u8, u64), DecodeError> {
    let at = *pos;
    let first = *bytes.get(at).ok_or(DecodeError::Truncated(at))?;
    let major = first >> 5;
    let info = first & 0x1f;
    *pos += 1;
    let width = match info {
        0..=23 => return Ok((major, u64::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => {
            return Err(DecodeError::NotDagCbor {
                at,
                what: "an indefinite length",
            });
        }
        _ => {
            return Err(DecodeError::NotDagCbor {
                at,
                what: "a reserved header",
            });
        }
    };
    let end = *pos + width;
    let slice = bytes.get(*pos..end).ok_or(DecodeError::Truncated(at))?;
    *pos = end;
    if major == 7 {
        // A float's payload is its bits, not a length.
        return Ok((major, 0));
    }
    Ok((
        major,
        slice.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn rejects_trailing_and_truncated() {
        let mut bytes = to_canonical(&(1u8, 2u8));
        assert!(precheck(&bytes).is_ok());
        bytes.push(0);
        assert_eq!(precheck(&bytes), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            precheck(&[0x82, 0x01, 0x18]),
            Err(DecodeError::Truncated(2))
        );
        assert!(matches!(
            precheck(&[0x82, 0x01]),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_huge_claimed_lengths_without_allocating() {
        // A byte string claiming 0xFFFFFFFF bytes.
        let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(matches!(
            precheck(&bytes),
            Err(DecodeError::LengthTooLarge { .. })
        ));
        // An array claiming 2^64-1 elements.
        let bytes = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            precheck(&bytes),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_deep_nesting() {
        let bytes = vec![0x81; 10_000];
        assert!(matches!(precheck(&bytes), Err(DecodeError::TooDeep { .. })));
        assert!(matches!(
            from_canonical::<Value>(&bytes),
            Err(DecodeError::TooDeep { .. })
        ));
    }

    #[test]
    fn rejects_non_minimal_integer() {
        // 1 encoded with a one-byte argument.
        assert!(from_canonical::<Value>(&[0x18, 0x01]).is_err());
        assert!(from_canonical::<Value>(&[0x01]).is_ok());
    }

    #[test]
    fn rejects_unsorted_map_keys() {
        // {"b": 1, "a": 2}
        let bytes = [0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02];
        assert!(from_canonical::<Value>(&bytes).is_err());
        let sorted = [0xa2, 0x61, b'a', 0x02, 0x61, b'b', 0x01];
        assert!(from_canonical::<Value>(&sorted).is_ok());
    }

    #[test]
    fn rejects_indefinite_and_tags() {
        assert!(matches!(
            precheck(&[0x9f, 0xff]),
            Err(DecodeError::NotDagCbor { .. })
        ));
        assert!(matches!(
            precheck(&[0xc1, 0x01]),
            Err(DecodeError::NotDagCbor { .. })
        ));
    }

    #[test]
    fn rejects_over_cap() {
        assert!(matches!(
            from_canonical_capped::<Value>(&[0x01], 0),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
