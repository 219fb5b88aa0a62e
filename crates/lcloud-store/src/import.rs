//! Importing experiences from untrusted bytes (a bundle, later a peer): validation in ZIP-215
//! batches spread over every core, admission in order, one durable commit.

use std::collections::BTreeMap;

use lcloud_core::{Experience, Inserted, Replica, ValidationError, Verified, validate_batch};

use crate::store::{Store, StoreError};

/// Signatures checked per batch.
const BATCH: usize = 1024;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Experiences admitted (including parked ones this import released).
    pub new: usize,
    /// Experiences already held.
    pub known: usize,
    /// Experiences still waiting for missing links.
    pub parked: usize,
    /// Refusals by rule name (`BadSignature`, `Malformed/Truncated`, `NotMember`, …).
    pub rejected: BTreeMap<String, usize>,
    /// The first refusal, in full.
    pub first_rejection: Option<String>,
}

impl ImportReport {
    fn reject(&mut self, e: &dyn std::fmt::Display, kind: String) {
        *self.rejected.entry(kind).or_default() += 1;
        self.first_rejection.get_or_insert_with(|| e.to_string());
    }

    /// Total refused.
    pub fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }
}

/// The variant name of an error: `Malformed(Truncated(3))` → `Malformed/Truncated`.
fn rule(e: &dyn std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    let mut parts = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|p| !p.is_empty());
    let outer = parts.next().unwrap_or("Unknown").to_owned();
    if outer == "Malformed" {
        return format!("{outer}/{}", parts.next().unwrap_or(""));
    }
    outer
}

/// Validates `records` in batches on every core while `admit` consumes the results, in input
/// order, on the calling thread: signature checking and admission overlap.
fn validate_pipelined(
    records: &[&[u8]],
    cloud: &lcloud_core::Id,
    mut admit: impl FnMut(Result<Verified<Experience>, ValidationError>),
) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunks: Vec<&[&[u8]]> = records.chunks(BATCH).collect();
    if threads == 1 || chunks.len() < 2 {
        for c in &chunks {
            validate_batch(c, cloud).into_iter().for_each(&mut admit);
        }
        return;
    }
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(threads * 2);
        for t in 0..threads {
            let tx = tx.clone();
            let chunks = &chunks;
            s.spawn(move || {
                for (i, c) in chunks.iter().enumerate().skip(t).step_by(threads) {
                    if tx.send((i, validate_batch(c, cloud))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut next = 0;
        for (i, results) in rx {
            pending.insert(i, results);
            while let Some(results) = pending.remove(&next) {
                results.into_iter().for_each(&mut admit);
                next += 1;
            }
        }
    });
}

impl Store {
    /// Validates `records` (untrusted canonical experience bytes), inserts them into
    /// `replica` (which must hold this store's history) and persists the result durably.
    pub fn import(
        &mut self,
        replica: &mut Replica,
        records: &[&[u8]],
        progress: &mut dyn FnMut(u64),
    ) -> Result<ImportReport, StoreError> {
        let cloud = self.cloud();
        let mut report = ImportReport::default();
        let mut outcomes: Vec<Inserted> = Vec::new();
        let mut parked: Vec<Experience> = Vec::new();
        let mut n = 0u64;
        // The input bytes of every admitted experience, stored as they came (they are canonical).
        let mut input: std::collections::HashMap<lcloud_core::Id, &[u8]> = Default::default();
        validate_pipelined(records, &cloud, |result| {
            let bytes = records[n as usize];
            progress(n);
            n += 1;
            let exp = match result {
                Ok(exp) => exp,
                Err(e) => {
                    report.reject(&e, rule(&e));
                    return;
                }
            };
            let id = exp.id();
            input.insert(id, bytes);
            match replica.insert(exp) {
                Ok(out) if out.duplicate => report.known += 1,
                Ok(out) => {
                    if !out.parked_on.is_empty() {
                        parked.extend(
                            replica
                                .lattice()
                                .parked_experience(&id)
                                .map(|e| (**e).clone()),
                        );
                    }
                    report.new += out.admitted.len();
                    for e in &out.rejected {
                        report.reject(e, rule(e));
                    }
                    outcomes.push(out);
                }
                Err(e) => report.reject(&e, rule(&e)),
            }
        });
        // Parked experiences released later in the same import are admitted, not parked.
        let still_parked: Vec<&Experience> = parked
            .iter()
            .filter(|e| !replica.lattice().contains(&e.id()))
            .collect();
        report.parked = still_parked.len();
        let refs: Vec<&Inserted> = outcomes.iter().collect();
        self.persist_bytes(replica, &refs, &still_parked, &|id| input.get(id).copied())?;
        Ok(report)
    }
}
