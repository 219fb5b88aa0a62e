//! Vector clocks: NodeId → highest seq seen. The lattice derives them from the DAG; a clock is
//! never taken from a peer's word.

use std::collections::BTreeMap;
use std::fmt;

use crate::id::NodeId;

/// A vector clock. Authors absent from the map are at ⊥ = 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VectorClock(pub BTreeMap<NodeId, u64>);

/// Why a clock string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockParseError {
    /// An entry is not `NODE:SEQ`.
    #[error("clock entry {0:?} is not NODE:SEQ")]
    NotAnEntry(String),
    /// The seq is not a number.
    #[error("clock entry {0:?} has a seq that is not a whole number")]
    BadSeq(String),
    /// The node name did not resolve.
    #[error("unknown node {0:?} in clock (use an alias or a hex id prefix)")]
    UnknownNode(String),
    /// A node appears twice.
    #[error("node {0:?} appears twice in clock")]
    Duplicate(String),
}

impl VectorClock {
    /// The seq of `node` (0 if absent).
    pub fn get(&self, node: &NodeId) -> u64 {
        self.0.get(node).copied().unwrap_or(0)
    }

    /// Raises `node` to at least `seq`.
    pub fn observe(&mut self, node: NodeId, seq: u64) {
        let entry = self.0.entry(node).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VectorClock) {
        for (node, seq) in &other.0 {
            self.observe(*node, *seq);
        }
    }

    /// Pointwise `self ≤ other`.
    ///
    /// ```
    /// use lcloud_core::{VectorClock, NodeId};
    /// let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
    /// let mut x = VectorClock::default(); x.observe(a, 2);
    /// let mut y = x.clone(); y.observe(b, 1);
    /// assert!(x.le(&y) && !y.le(&x));
    /// ```
    pub fn le(&self, other: &VectorClock) -> bool {
        self.0.iter().all(|(node, seq)| *seq <= other.get(node))
    }

    /// Neither `self ≤ other` nor `other ≤ self`.
    pub fn concurrent(&self, other: &VectorClock) -> bool {
        !self.le(other) && !other.le(self)
    }

    /// Total number of experiences the clock covers on unforked chains.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Parses `NODE:SEQ,NODE:SEQ`, resolving each NODE (an alias or id prefix) with `resolve`.
    /// The empty string is the empty clock.
    pub fn parse(
        text: &str,
        mut resolve: impl FnMut(&str) -> Option<NodeId>,
    ) -> Result<VectorClock, ClockParseError> {
        let mut clock = VectorClock::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, seq) = entry
                .rsplit_once(':')
                .ok_or_else(|| ClockParseError::NotAnEntry(entry.to_owned()))?;
            let seq: u64 = seq
                .trim()
                .parse()
                .map_err(|_| ClockParseError::BadSeq(entry.to_owned()))?;
            let node = resolve(name.trim())
                .ok_or_else(|| ClockParseError::UnknownNode(name.to_owned()))?;
            if clock.0.insert(node, seq).is_some() {
                return Err(ClockParseError::Duplicate(name.to_owned()));
            }
        }
        Ok(clock)
    }
}

impl fmt::Display for VectorClock {
    /// `abcd1234:3,ef567890:5` with 8-hex-digit node prefixes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (node, seq) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}:{}", node.short(), seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let a = NodeId([0xaa; 32]);
        let b = NodeId([0xbb; 32]);
        let resolve = |s: &str| match s {
            "A" => Some(a),
            "B" => Some(b),
            _ => None,
        };
        let c = VectorClock::parse("A:3, B:5", resolve).unwrap();
        assert_eq!(c.get(&a), 3);
        assert_eq!(c.get(&b), 5);
        assert_eq!(c.to_string(), "aaaaaaaa:3,bbbbbbbb:5");
        assert!(matches!(
            VectorClock::parse("A3", resolve),
            Err(ClockParseError::NotAnEntry(_))
        ));
        assert!(matches!(
            VectorClock::parse("A:x", resolve),
            Err(ClockParseError::BadSeq(_))
        ));
        assert!(matches!(
            VectorClock::parse("C:1", resolve),
            Err(ClockParseError::UnknownNode(_))
        ));
        assert!(matches!(
            VectorClock::parse("A:1,A:2", resolve),
            Err(ClockParseError::Duplicate(_))
        ));
        assert_eq!(
            VectorClock::parse("", resolve).unwrap(),
            VectorClock::default()
        );
    }

    #[test]
    fn order() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let mut x = VectorClock::default();
        x.observe(a, 1);
        let mut y = VectorClock::default();
        y.observe(b, 1);
        assert!(x.concurrent(&y));
        let mut z = x.clone();
        z.join(&y);
        assert!(x.le(&z) && y.le(&z) && !z.le(&x));
    }
}
