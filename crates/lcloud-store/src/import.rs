//! Importing experiences from untrusted bytes (a bundle, later a peer): validation in ZIP-215
//! batches spread over every core, admission in order, one durable commit.

use std::collections::BTreeMap;

use std::collections::HashMap;

use lcloud_core::{Experience, Id, Inserted, Replica, ValidationError, Verified, validate_batch};

use crate::error::StoreError;
use crate::store::Store;

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
pub(crate) fn validate_pipelined(
    records: &[&[u8]],
    cloud: &Id,
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
        // Room for validation to run ahead while the caller writes a chunk to disk.
        let (tx, rx) = std::sync::mpsc::sync_channel(threads * 16);
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

/// Admitted experiences are made durable in chunks of this many records, so that writing one
/// chunk overlaps validating the next.
const FLUSH_EVERY: usize = 8192;

/// The state of one import between flushes.
struct Importer<'s, 'r, 'b> {
    store: &'s mut Store,
    replica: &'r mut Replica,
    report: ImportReport,
    outcomes: Vec<Inserted>,
    parked: Vec<Experience>,
    /// The input bytes of every experience admitted since the last flush (they are canonical,
    /// so they are stored as they came).
    input: HashMap<Id, &'b [u8]>,
    since_flush: usize,
    failed: Option<StoreError>,
    /// The document as last persisted (so a flush writes only the leaves that changed).
    before: lcloud_core::Doc,
}

impl<'b> Importer<'_, '_, 'b> {
    /// Admits record number `n` of the input (`bytes`, checked as `result`).
    fn admit(
        &mut self,
        n: usize,
        result: Result<Verified<Experience>, ValidationError>,
        bytes: &'b [u8],
    ) {
        if self.failed.is_some() {
            return;
        }
        let exp = match result {
            Ok(exp) => exp,
            Err(e) => {
                let kind = rule(&e);
                return self.report.reject(&format!("record #{n}: {e}"), kind);
            }
        };
        let id = exp.id();
        match self.replica.insert(exp) {
            Ok(out) if out.duplicate => self.report.known += 1,
            Ok(out) => {
                if !out.parked_on.is_empty() {
                    let parked = self.replica.lattice().parked_experience(&id);
                    self.parked.extend(parked.map(|e| (**e).clone()));
                }
                self.input.insert(id, bytes);
                self.report.new += out.admitted.len();
                for e in &out.rejected {
                    self.report.reject(e, rule(e));
                }
                self.outcomes.push(out);
            }
            Err(e) => {
                let kind = rule(&e);
                self.report.reject(&format!("record #{n}: {e}"), kind);
            }
        }
        self.since_flush += 1;
        if self.since_flush >= FLUSH_EVERY
            && let Err(e) = self.flush()
        {
            self.failed = Some(e);
        }
    }

    /// Durably stores what was admitted since the last flush, and what is still parked.
    fn flush(&mut self) -> Result<(), StoreError> {
        let still_parked: Vec<&Experience> = self
            .parked
            .iter()
            .filter(|e| !self.replica.lattice().contains(&e.id()))
            .collect();
        let refs: Vec<&Inserted> = self.outcomes.iter().collect();
        let input = &self.input;
        self.store.persist_bytes(
            self.replica,
            &refs,
            &still_parked,
            &|id| input.get(id).copied(),
            Some(&self.before),
        )?;
        self.before = self.replica.state().doc;
        self.outcomes.clear();
        self.input.clear();
        self.since_flush = 0;
        Ok(())
    }
}

impl Store {
    /// Validates `records` (untrusted canonical experience bytes), inserts them into
    /// `replica` (which must hold this store's history) and persists the result durably, in
    /// chunks: if the import fails midway, what was stored is a consistent prefix.
    pub fn import(
        &mut self,
        replica: &mut Replica,
        records: &[&[u8]],
        progress: &mut dyn FnMut(u64),
    ) -> Result<ImportReport, StoreError> {
        let cloud = self.cloud();
        let before = replica.state().doc;
        let mut importer = Importer {
            before,
            store: self,
            replica,
            report: ImportReport::default(),
            outcomes: Vec::new(),
            parked: Vec::new(),
            input: HashMap::new(),
            since_flush: 0,
            failed: None,
        };
        let mut n = 0usize;
        validate_pipelined(records, &cloud, |result| {
            progress(n as u64);
            importer.admit(n, result, records[n]);
            n += 1;
        });
        if let Some(e) = importer.failed.take() {
            return Err(e);
        }
        importer.flush()?;
        let mut report = importer.report;
        report.parked = importer
            .parked
            .iter()
            .filter(|e| !importer.replica.lattice().contains(&e.id()))
            .count();
        Ok(report)
    }
}
