//! Everything the document holds at one path: registers, counter increments, set elements
//! and sequences, each element tagged with the dot of the op that wrote it (`doc.rs` nests
//! leaves by path and applies ops to them).

use imbl::OrdMap;

use crate::dot::{Dot, Observer};
use crate::seq_doc::{Seqs, SeqsRecord};
use crate::value::Value;

/// The stored form of a leaf: `[regs, incs, elems]`, canonical DAG-CBOR.
pub(crate) type LeafRecord = (
    Vec<(Dot, Value)>,
    Vec<(Dot, i64)>,
    Vec<(crate::codec::ByteBuf, Vec<Dot>)>,
);

/// Everything at one path.
///
/// Registers are a short sorted vector (usually one entry); increments and set elements,
/// which can grow large, are persistent maps so that a checkpoint never copies them whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leaf {
    /// Surviving register writes, sorted by dot; the last (greatest) is the winner.
    pub regs: Vec<(Dot, Value)>,
    /// Surviving increments.
    pub incs: OrdMap<Dot, i64>,
    /// Cached sum of `incs`.
    pub inc_sum: i128,
    /// Set elements by canonical bytes, with the adds (sorted dots) that keep them alive.
    pub elems: OrdMap<Vec<u8>, Vec<Dot>>,
    /// The text and list here, if any was made (`seq_doc.rs`).
    pub seqs: Option<Box<Seqs>>,
}

impl Leaf {
    /// The canonical bytes of this leaf, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.regs.len() * 64);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Leaf::to_bytes`] to `out`: the canonical DAG-CBOR of `LeafRecord`
    /// (`[regs, incs, elems]`, each dot `[depth, id, op]`), written directly (tested against
    /// serde's encoding), with the sequences' record (`seq_doc.rs`) as a fourth element
    /// when there are any.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use crate::codec::{write_bytes, write_head};
        let dot = |out: &mut Vec<u8>, d: &Dot| {
            out.push(0x83);
            write_head(out, 0, d.depth);
            write_bytes(out, d.exp.as_bytes());
            write_head(out, 0, u64::from(d.op));
        };
        out.push(if self.seqs.is_some() { 0x84 } else { 0x83 });
        write_head(out, 4, self.regs.len() as u64);
        for (d, v) in &self.regs {
            out.push(0x82);
            dot(out, d);
            v.encode_into(out);
        }
        write_head(out, 4, self.incs.len() as u64);
        for (d, n) in self.incs.iter() {
            out.push(0x82);
            dot(out, d);
            Value::Int(*n).encode_into(out);
        }
        write_head(out, 4, self.elems.len() as u64);
        for (k, ds) in self.elems.iter() {
            out.push(0x82);
            write_bytes(out, k);
            write_head(out, 4, ds.len() as u64);
            for d in ds {
                dot(out, d);
            }
        }
        if let Some(seqs) = &self.seqs {
            serde_ipld_dagcbor::to_writer(&mut *out, &seqs.record()).expect("a vector cannot fail");
        }
    }

    /// Decodes [`Leaf::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Leaf, crate::codec::DecodeError> {
        let ((regs, incs, elems), seqs): (LeafRecord, Option<Box<Seqs>>) = match bytes.first() {
            Some(0x84) => {
                let (regs, incs, elems, seqs): (_, _, _, SeqsRecord) =
                    crate::codec::from_canonical_stored(bytes)?;
                let seqs = Seqs::from_record(seqs)
                    .map_err(|e| crate::codec::DecodeError::Shape(format!("a leaf's {e}")))?;
                ((regs, incs, elems), Some(Box::new(seqs)))
            }
            _ => (crate::codec::from_canonical_stored(bytes)?, None),
        };
        let inc_sum = incs.iter().map(|(_, n)| i128::from(*n)).sum();
        Ok(Leaf {
            regs,
            incs: incs.into_iter().collect(),
            inc_sum,
            elems: elems.into_iter().map(|(k, ds)| (k.0, ds)).collect(),
            seqs,
        })
    }

    /// Whether a settle may merge anything here: more than one counter element, or a set
    /// element (one with several dots; any, so that the answer costs nothing to keep).
    pub fn may_merge(&self) -> bool {
        self.incs.len() > 1 || !self.elems.is_empty()
    }

    /// True if nothing is stored here.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty() && self.incs.is_empty() && self.elems.is_empty() && self.seqs.is_none()
    }

    /// The winning register value (greatest dot in canonical order).
    pub fn winner(&self) -> Option<&Value> {
        self.regs.last().map(|(_, v)| v)
    }

    /// Adds the increment `by` written at `dot`, merged into the element of an earlier
    /// increment of the same experience when one is here and the sum fits in an `i64`: the
    /// merged element is named by the later op. The merge changes nothing anyone can observe:
    /// an op of another experience observes every op of this one or none (the observer asks
    /// whether one experience precedes the other), a later op of this one observes both, and
    /// an op of this one between the two that removed what it observed here would have
    /// removed the earlier element (so it is not here). An experience's increments of one
    /// counter thus keep one element, not one per op (W3: a thousand increments in one
    /// experience were a thousand elements, rewritten into the leaf at every commit).
    pub fn add_increment(&mut self, dot: Dot, by: i64) {
        self.add_increments(std::iter::once((dot, by)));
    }

    /// [`Leaf::add_increment`] of a run of one experience's increments in op order, with one
    /// look-up of the leaf's elements for the run, not one per increment (W3's batches of
    /// 1 000 increments of one counter).
    pub fn add_increments(&mut self, incs: impl IntoIterator<Item = (Dot, i64)>) {
        let mut incs = incs.into_iter();
        let Some((first, by)) = incs.next() else {
            return;
        };
        self.inc_sum += i128::from(by);
        let earlier = self
            .incs
            .range(..first)
            .next_back()
            .filter(|(d, _)| d.depth == first.depth && d.exp == first.exp)
            .and_then(|(d, n)| Some((*d, n.checked_add(by)?)));
        let mut open = match earlier {
            Some((d, sum)) => {
                self.incs.remove(&d);
                (first, sum)
            }
            None => (first, by),
        };
        for (dot, by) in incs {
            debug_assert!(dot.depth == first.depth && dot.exp == first.exp && dot > open.0);
            self.inc_sum += i128::from(by);
            open = match open.1.checked_add(by) {
                Some(sum) => (dot, sum),
                None => {
                    // The sum would overflow: the run so far stays an element of its own.
                    self.incs.insert(open.0, open.1);
                    (dot, by)
                }
            };
        }
        self.incs.insert(open.0, open.1);
    }

    /// Merges the increments of each experience as [`Leaf::add_increment`] would have, in op
    /// order: for leaves written before increments were merged (store format 4 and older),
    /// whose elements are one per op. Applied to a leaf whose increments are already merged,
    /// it may merge further (an `i64` overflow that split an experience's increments), so
    /// it is for old leaves only.
    pub fn merge_increments(&mut self) {
        let incs = std::mem::take(&mut self.incs);
        self.inc_sum = 0;
        for (dot, by) in incs {
            self.add_increment(dot, by);
        }
    }

    /// Merges what a settled checkpoint's cut holds here (`in_cut`, see `settle.rs`): its
    /// increments into one element, named by the greatest of their dots, when their sum fits
    /// an `i64`; each set element's dots into the greatest. Returns whether anything changed.
    /// Merging at one cut and then at a larger one, or the other way round, gives the same.
    pub fn settle(&mut self, in_cut: &dyn Fn(&Dot) -> bool) -> bool {
        let mut changed = false;
        if self.incs.len() > 1 {
            let cut: Vec<(Dot, i64)> = self
                .incs
                .iter()
                .filter(|(d, _)| in_cut(d))
                .map(|(d, n)| (*d, *n))
                .collect();
            let total: i128 = cut.iter().map(|(_, n)| i128::from(*n)).sum();
            if let (Some((last, _)), Ok(total)) = (cut.last(), i64::try_from(total))
                && cut.len() > 1
            {
                for (d, _) in &cut {
                    self.incs.remove(d);
                }
                self.incs.insert(*last, total);
                changed = true;
            }
        }
        let many: Vec<Vec<u8>> = self
            .elems
            .iter()
            .filter(|(_, ds)| ds.len() > 1 && ds.iter().filter(|d| in_cut(d)).nth(1).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for k in many {
            let Some(ds) = self.elems.get(&k) else {
                continue;
            };
            let last = ds.iter().rev().find(|d| in_cut(d)).copied();
            let kept: Vec<Dot> = ds
                .iter()
                .filter(|d| !in_cut(d) || Some(**d) == last)
                .copied()
                .collect();
            self.elems.insert(k, kept);
            changed = true;
        }
        changed
    }

    pub(crate) fn insert_reg(&mut self, dot: Dot, value: Value) {
        match self.regs.binary_search_by(|(d, _)| d.cmp(&dot)) {
            Ok(i) => self.regs[i].1 = value,
            Err(i) => self.regs.insert(i, (dot, value)),
        }
    }

    /// Whether anything here was observed by `by` (so `remove_observed` would change it).
    pub(crate) fn any_observed(&self, by: &Dot, obs: &dyn Observer) -> bool {
        self.regs.iter().any(|(d, _)| obs.observed(d, by))
            || self.incs.keys().any(|d| obs.observed(d, by))
            || self.elems.values().flatten().any(|d| obs.observed(d, by))
            || self.seqs.as_ref().is_some_and(|s| s.any_observed(by, obs))
    }

    pub(crate) fn remove_observed(&mut self, by: &Dot, obs: &dyn Observer) {
        self.regs.retain(|(d, _)| !obs.observed(d, by));
        if let Some(seqs) = &mut self.seqs {
            seqs.remove_observed(by, obs);
        }
        if self.incs.is_empty() && self.elems.is_empty() {
            // A register alone (the usual leaf): nothing else to look through.
            return;
        }
        let incs: Vec<Dot> = self
            .incs
            .keys()
            .filter(|d| obs.observed(d, by))
            .copied()
            .collect();
        for d in incs {
            if let Some(n) = self.incs.remove(&d) {
                self.inc_sum -= i128::from(n);
            }
        }
        let keys: Vec<Vec<u8>> = self.elems.keys().cloned().collect();
        for k in keys {
            remove_elem_observed(&mut self.elems, &k, by, obs);
        }
    }
}

pub(crate) fn remove_elem_observed(
    elems: &mut OrdMap<Vec<u8>, Vec<Dot>>,
    key: &[u8],
    by: &Dot,
    obs: &dyn Observer,
) {
    let Some(dots) = elems.get(key) else { return };
    if !dots.iter().any(|d| obs.observed(d, by)) {
        return;
    }
    let keep: Vec<Dot> = dots
        .iter()
        .filter(|d| !obs.observed(d, by))
        .copied()
        .collect();
    if keep.is_empty() {
        elems.remove(key);
    } else {
        elems.insert(key.to_vec(), keep);
    }
}
