//! Document paths: lists of map keys, written as JSON Pointers (RFC 6901), ordered so that a
//! path's descendants follow it directly; with caps on their depth and segment length.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most segments in one path.
pub const PATH_SEGMENTS_MAX: usize = 32;
/// Longest path segment, in bytes.
pub const PATH_SEGMENT_BYTES_MAX: usize = 256;

/// A path into the document: a list of map keys. Written as a JSON Pointer (RFC 6901), e.g.
/// `/users/alice/visits`; the empty pointer `""` is the document root.
///
/// The segments are shared: a clone is a reference count, not a copy (an op names its path,
/// and W3's thousand increments of one counter in one experience named it a thousand times).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Path(pub Arc<[String]>);

impl From<Vec<String>> for Path {
    fn from(segments: Vec<String>) -> Path {
        Path(segments.into())
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Path, D::Error> {
        Vec::<String>::deserialize(d).map(Path::from)
    }
}

/// The order of the segment lists (segment by segment, each by its bytes, a prefix first),
/// written out: the document's tree compares paths at every lookup, most segments are a few
/// bytes, and there a byte loop costs less than a call to `memcmp` per segment (a tenth of
/// folding a `set`).
impl Ord for Path {
    fn cmp(&self, other: &Path) -> std::cmp::Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            let order = cmp_segment(a.as_bytes(), b.as_bytes());
            if order.is_ne() {
                return order;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for Path {
    fn partial_cmp(&self, other: &Path) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// `a.cmp(b)`, with short segments compared byte by byte.
fn cmp_segment(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() <= 16 && b.len() <= 16 {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A non-empty JSON Pointer must start with `/`.
    #[error("path {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("path {0:?} has a '~' not followed by 0 or 1")]
    BadEscape(String),
    /// Too many segments.
    #[error("path has {0} segments, at most {PATH_SEGMENTS_MAX} allowed")]
    TooDeep(usize),
    /// A segment is too long.
    #[error("path segment of {0} bytes, at most {PATH_SEGMENT_BYTES_MAX} allowed")]
    SegmentTooLong(usize),
}

impl Path {
    /// The document root.
    pub fn root() -> Path {
        Path::from(Vec::new())
    }

    /// Parses an RFC 6901 JSON Pointer.
    ///
    /// ```
    /// use lcloud_core::Path;
    /// let p = Path::parse("/users/a~1b/visits").unwrap();
    /// assert_eq!(*p.0, ["users", "a/b", "visits"]);
    /// assert_eq!(p.to_string(), "/users/a~1b/visits");
    /// ```
    pub fn parse(pointer: &str) -> Result<Path, PathError> {
        if pointer.is_empty() {
            return Ok(Path::root());
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(PathError::NoLeadingSlash(pointer.to_owned()));
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            segments.push(unescape(raw).ok_or_else(|| PathError::BadEscape(pointer.to_owned()))?);
        }
        let path = Path::from(segments);
        path.check()?;
        Ok(path)
    }

    /// Checks the size bounds.
    pub fn check(&self) -> Result<(), PathError> {
        if self.0.len() > PATH_SEGMENTS_MAX {
            return Err(PathError::TooDeep(self.0.len()));
        }
        match self.0.iter().find(|s| s.len() > PATH_SEGMENT_BYTES_MAX) {
            Some(s) => Err(PathError::SegmentTooLong(s.len())),
            None => Ok(()),
        }
    }

    /// Whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &Path) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// This path extended by one key.
    pub fn child(&self, key: &str) -> Path {
        let mut segments = self.0.to_vec();
        segments.push(key.to_owned());
        Path::from(segments)
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in self.0.iter() {
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}
