//! This node's own writes: a batch of writes waiting is checked against the replica, chained
//! as consecutive experiences of this node, signed on the store's signing pool
//! ([`lcloud_store::SignPool`]), inserted into the replica, stored in one commit (one fsync)
//! and recorded in `signed-seq` (a second fsync), then announced, published and answered.
//!
//! The batch is written whole before the node reads its next message, so whatever comes
//! after a write (a read, a peer's experiences, a contract call) sees it stored. Keeping a
//! batch signed ahead while the one before it is stored was measured and dropped: it made
//! each write wait one commit longer, which cost more than the signing it overlapped (see
//! `docs/BENCHMARKS.md`, "HTTP writes").

use lcloud_core::{EXPERIENCE_BYTES_MAX, Experience, Id, Inserted, NodeId, Op, Unsigned, Verified};
use lcloud_net::Command;
use tokio::sync::oneshot;

use super::{Announced, ContractWritten, Node, WriteError, Written, rejected_ops};

/// Where a write's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Written, WriteError>>;

/// Drafts `todo` as one chain of `me`'s on `tip` (else on the replica's heads). Writes that
/// cannot be drafted (no ops, too large, nesting too deep) are refused through `refuse`.
fn chain<T>(
    node: &Node,
    me: NodeId,
    mut tip: Option<(u64, Id)>,
    todo: Vec<(T, Vec<Op>)>,
    fuel: Option<u64>,
    mut refuse: impl FnMut(T, WriteError),
) -> Vec<(T, Unsigned)> {
    let mut drafts = Vec::with_capacity(todo.len());
    for (t, ops) in todo {
        if ops.is_empty() {
            refuse(t, WriteError::Refused("no ops to write".into()));
            continue;
        }
        let draft = match tip {
            None => lcloud_core::Draft {
                fuel,
                ..node.replica.draft(&me, ops)
            },
            // The experience before it is then the only head.
            Some((seq, prev)) => lcloud_core::Draft {
                cloud: node.replica.cloud(),
                seq: seq + 1,
                prev: Some(prev),
                deps: Vec::new(),
                ops,
                root: None,
                fuel,
            },
        };
        let unsigned = draft.seal(me);
        if let Err(e) = unsigned.check_nesting() {
            refuse(t, WriteError::Refused(e.to_string()));
            continue;
        }
        if unsigned.encoded_len() > EXPERIENCE_BYTES_MAX {
            let why = format!(
                "the experience would be {} bytes; at most {EXPERIENCE_BYTES_MAX} are allowed: split it",
                unsigned.encoded_len()
            );
            refuse(t, WriteError::Refused(why));
            continue;
        }
        tip = Some((unsigned.header().seq, unsigned.id()));
        drafts.push((t, unsigned));
    }
    drafts
}

impl Node {
    /// Why nothing can be written now (the store failed and cannot be opened again, or
    /// `signed-seq` is ahead of the chain), if so.
    fn cannot_write(&mut self) -> Option<WriteError> {
        if self.unstored.is_some() && !self.reload() {
            return Some(WriteError::Unavailable(format!(
                "the store cannot be used: {}",
                self.unstored.as_deref().unwrap_or_default()
            )));
        }
        let me = self.identity.id();
        self.store
            .check_can_sign(&me, &self.replica)
            .err()
            .map(|e| WriteError::Refused(e.to_string()))
    }

    /// Writes each of `group` (see [`Node::write`]) and answers it.
    pub(crate) fn write_group(&mut self, group: Vec<(Vec<Op>, Reply)>) {
        let (batch, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        for (reply, answer) in replies.into_iter().zip(self.write(batch)) {
            let _ = reply.send(answer);
        }
    }

    /// Stores this node's experiences just inserted (`inserted`, and each one's bytes) in one
    /// commit, records the highest seq in `signed-seq`, then announces and publishes them.
    /// One answer per experience; on a failed store, the error for all of them.
    fn store_own(
        &mut self,
        inserted: &[Inserted],
        written: Vec<(Verified<Experience>, Vec<u8>)>,
    ) -> Result<Vec<Result<Written, WriteError>>, WriteError> {
        if written.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes: Vec<&Inserted> = inserted.iter().collect();
        let bytes: std::collections::HashMap<Id, &[u8]> = written
            .iter()
            .map(|(e, b)| (e.id(), b.as_slice()))
            .collect();
        let stored = self.store.persist_bytes(
            &self.replica,
            &outcomes,
            &[],
            &|id| bytes.get(id).copied(),
            Some(&self.persisted),
        );
        drop(bytes);
        if let Err(e) = stored {
            self.reload();
            return Err(WriteError::Unavailable(e.to_string()));
        }
        self.persisted = self.replica.state().doc;
        let last = written.iter().map(|(e, _)| e.seq()).max().unwrap_or(0);
        if let Err(e) = self.store.record_signed(last) {
            // Stored, but not acknowledged: the outcome is unknown to the writers. Nothing
            // reaches a peer until `reload` has recorded it.
            self.unstored = Some(e.to_string());
            return Err(WriteError::Unavailable(e.to_string()));
        }
        let me = self.identity.id();
        let mut answers = Vec::with_capacity(written.len());
        for (exp, bytes) in written {
            self.metrics.written += 1;
            let _ = self.announce.send(Announced {
                id: exp.id(),
                author: me,
                seq: exp.seq(),
                ops: exp.ops().len(),
                local: true,
                rejected: rejected_ops(&self.replica, &exp),
            });
            self.send(Command::Publish(bytes));
            answers.push(Ok(Written {
                id: exp.id(),
                seq: exp.seq(),
            }));
        }
        Ok(answers)
    }

    /// Writes each entry of `batch` as one experience of this node, in order, all stored in
    /// one commit and recorded in `signed-seq` with one more fsync.
    /// Returns one answer per entry: a refused entry (no ops, too large, not allowed) does not
    /// hold up the others.
    pub(crate) fn write(&mut self, batch: Vec<Vec<Op>>) -> Vec<Result<Written, WriteError>> {
        self.write_fueled(batch, None)
    }

    /// Writes one contract op (a deploy or a call) with `fuel`, and reads its outcome.
    pub(crate) fn write_contract(
        &mut self,
        contract: Id,
        op: Op,
        fuel: Option<u64>,
    ) -> Result<ContractWritten, WriteError> {
        if fuel.is_some_and(|f| f == 0 || f > lcloud_contracts::FUEL_MAX) {
            return Err(WriteError::Refused(format!(
                "fuel must be between 1 and {}",
                lcloud_contracts::FUEL_MAX
            )));
        }
        let written = self
            .write_fueled(vec![vec![op]], fuel)
            .pop()
            .expect("one answer per write")?;
        Ok(ContractWritten {
            outcome: crate::contracts::outcome(&self.replica, &written.id, contract),
            root: self.replica.root(),
            written,
        })
    }

    /// Signs `batch` (with `fuel`), inserts and stores it before returning.
    pub(crate) fn write_fueled(
        &mut self,
        batch: Vec<Vec<Op>>,
        fuel: Option<u64>,
    ) -> Vec<Result<Written, WriteError>> {
        if let Some(e) = self.cannot_write() {
            return batch.iter().map(|_| Err(e.clone())).collect();
        }
        let mut answers: Vec<Option<Result<Written, WriteError>>> = Vec::new();
        answers.resize_with(batch.len(), || None);
        let me = self.identity.id();
        // Sign the batch as one chain, then insert it; if the replica refuses one (a rule of
        // the cloud), the rest is drafted and signed again on top of what it accepted.
        // What the fold would leave out or misread is refused before anything is signed.
        let checked = {
            let refs: Vec<&[Op]> = batch.iter().map(Vec::as_slice).collect();
            self.replica.check_writes(&me, &refs)
        };
        let mut todo: Vec<(usize, Vec<Op>)> = Vec::with_capacity(batch.len());
        for ((i, ops), check) in batch.into_iter().enumerate().zip(checked) {
            match check {
                Ok(()) => todo.push((i, ops)),
                Err(e) => answers[i] = Some(Err(WriteError::Refused(e.to_string()))),
            }
        }
        let mut inserted: Vec<Inserted> = Vec::new();
        let mut written: Vec<(usize, Verified<Experience>, Vec<u8>)> = Vec::new();
        while !todo.is_empty() {
            let drafts = chain(self, me, None, std::mem::take(&mut todo), fuel, |i, e| {
                answers[i] = Some(Err(e));
            });
            let (order, unsigned): (Vec<usize>, Vec<_>) = drafts.into_iter().unzip();
            let signed = self
                .signer
                .dispatch(unsigned.into_iter().map(|u| (u, 0)).collect())
                .wait(self.identity.key());
            let mut signed = order.into_iter().zip(signed);
            for (i, (exp, bytes, _)) in signed.by_ref() {
                match self.replica.insert(exp.clone()) {
                    Ok(out) => {
                        inserted.push(out);
                        written.push((i, exp, bytes));
                    }
                    Err(e) => {
                        answers[i] = Some(Err(WriteError::Refused(e.to_string())));
                        break;
                    }
                }
            }
            todo = signed
                .map(|(i, (exp, _, _))| (i, exp.ops().to_vec()))
                .collect();
        }
        let (order, exps): (Vec<usize>, Vec<_>) = written
            .into_iter()
            .map(|(i, exp, bytes)| (i, (exp, bytes)))
            .unzip();
        match self.store_own(&inserted, exps) {
            Ok(done) => {
                for (i, answer) in order.into_iter().zip(done) {
                    answers[i] = Some(answer);
                }
            }
            Err(e) => {
                for i in order {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
        answers.into_iter().map(|a| a.expect("answered")).collect()
    }
}
