//! Dots, which name ops, and observers, which say which ops an op had seen: what every
//! element of the document is tagged with and removed by.

use serde::Serialize;

use crate::id::Id;

/// Names one op: the experience's canonical sort key `(depth, id)` and the op's index. Dots
/// order exactly as the canonical order of the ops they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Causal depth of the experience.
    pub depth: u64,
    /// The experience id.
    pub exp: Id,
    /// Index of the op within the experience.
    pub op: u32,
}

impl Serialize for Dot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.depth, &self.exp, self.op).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Dot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (depth, exp, op) = <(u64, Id, u32)>::deserialize(d)?;
        Ok(Dot { depth, exp, op })
    }
}

/// Every element was observed by every op of another experience: true for an experience
/// whose causal past is everything folded so far (a local write that depends on all heads).
#[derive(Clone, Copy, Debug, Default)]
pub struct ObservesEverything;

impl Observer for ObservesEverything {
    fn observed(&self, elem: &Dot, by: &Dot) -> bool {
        elem.exp != by.exp || elem.op < by.op
    }
}

/// Answers "had the op at `by` observed the element written at `elem`?".
pub trait Observer {
    /// True if `elem`'s experience precedes `by`'s, or is the same experience at a lower op.
    fn observed(&self, elem: &Dot, by: &Dot) -> bool;
}

/// The experience id the writer's own checks give the `k`th experience of a batch of local
/// writes (at the greatest depth, which no real experience has): greater than the batch's
/// earlier ones, so an op names its own experience's elements as it will in the fold.
pub(crate) fn local_exp(k: usize) -> Id {
    let mut b = [0xff; 32];
    b[..8].copy_from_slice(&(k as u64).to_be_bytes());
    b[0] |= 0x80;
    Id(b)
}
