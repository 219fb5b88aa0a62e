//! This node's own writes, pipelined as in the store's group commit ([`lcloud_store::Committer`]):
//! while one batch is stored (one commit, then `signed-seq`), the next is signed by the
//! store's signing pool ([`lcloud_store::SignPool`]).
//!
//! A batch of writes is *planned* on the node's thread: checked against the replica and the
//! ops of the batch still in flight, chained on the last experience planned, and handed to the
//! signing pool. It is *completed* later, on the same thread and in order: its signatures
//! collected, inserted into the replica, stored in one commit, recorded in `signed-seq`, then
//! announced, published and answered. The node keeps a batch in flight only while the next
//! message waiting is another write ([`Node::run`]): a peer's experiences, a read or a
//! contract call is handled only once every write before it is complete, so nothing changes
//! the replica between planning a batch and storing it.
//!
//! Contract writes (which need their fuel and their outcome at once) and a node whose store
//! failed take the one-batch path, [`Node::write_fueled`], which completes what is in flight
//! first.

use std::collections::VecDeque;

use lcloud_core::{EXPERIENCE_BYTES_MAX, Experience, Id, Inserted, NodeId, Op, Unsigned, Verified};
use lcloud_net::Command;
use tokio::sync::oneshot;

use super::{Announced, ContractWritten, Node, WriteError, Written, rejected_ops};

/// Where a write's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Written, WriteError>>;

/// A batch being signed.
pub(crate) struct InFlight {
    /// Each write being signed, in chain order: its reply and its ops (for the next batch's
    /// checks, and to plan it again if one before it is refused).
    writes: Vec<(Reply, Vec<Op>)>,
    sigs: lcloud_store::PendingSigs,
    /// The last experience planned: its seq and id.
    tip: (u64, Id),
}

/// The batches in flight, oldest first.
pub(crate) type Pipeline = VecDeque<InFlight>;

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

    /// Plans `group` on what is in flight and hands it to the signing pool; refusals are
    /// answered at once. [`Node::complete_write`] stores it.
    pub(crate) fn plan_writes(&mut self, group: Vec<(Vec<Op>, Reply)>) {
        if self.in_flight.is_empty()
            && let Some(e) = self.cannot_write()
        {
            for (_, reply) in group {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let me = self.identity.id();
        // What the fold would leave out or misread is refused before anything is signed,
        // the batches in flight counted as written.
        let checked = {
            let pending = self
                .in_flight
                .iter()
                .flat_map(|b| b.writes.iter().map(|(_, ops)| ops.as_slice()));
            let refs: Vec<&[Op]> = pending
                .clone()
                .chain(group.iter().map(|(ops, _)| ops.as_slice()))
                .collect();
            let skip = pending.count();
            self.replica.check_writes(&me, &refs).split_off(skip)
        };
        let mut todo = Vec::with_capacity(group.len());
        for ((ops, reply), check) in group.into_iter().zip(checked) {
            match check {
                Ok(()) => todo.push(((reply, ops.clone()), ops)),
                Err(e) => {
                    let _ = reply.send(Err(WriteError::Refused(e.to_string())));
                }
            }
        }
        let tip = self.in_flight.back().map(|b| b.tip);
        let drafts = chain(self, me, tip, todo, None, |(reply, _), e| {
            let _ = reply.send(Err(e));
        });
        let Some((_, last)) = drafts.last() else {
            return;
        };
        let tip = (last.header().seq, last.id());
        let (writes, unsigned): (Vec<_>, Vec<_>) = drafts.into_iter().unzip();
        let sigs = self
            .signer
            .dispatch(unsigned.into_iter().map(|u| (u, 0)).collect());
        self.in_flight.push_back(InFlight { writes, sigs, tip });
    }

    /// Completes the oldest batch in flight: inserts, stores, records and answers it. If the
    /// replica refuses one of its experiences, or the store fails, what was chained on it
    /// (the rest of the batch and every batch after it) is written again on what is stored.
    pub(crate) fn complete_write(&mut self) {
        let Some(batch) = self.in_flight.pop_front() else {
            return;
        };
        let signed = batch.sigs.wait(self.identity.key());
        let mut writes = batch.writes.into_iter();
        let mut inserted = Vec::with_capacity(signed.len());
        let mut written = Vec::with_capacity(signed.len());
        let mut broken = false;
        for ((exp, bytes, _), (reply, _)) in signed.into_iter().zip(writes.by_ref()) {
            match self.replica.insert(exp.clone()) {
                Ok(out) => {
                    inserted.push(out);
                    written.push((reply, exp, bytes));
                }
                Err(e) => {
                    let _ = reply.send(Err(WriteError::Refused(e.to_string())));
                    broken = true;
                    break;
                }
            }
        }
        let mut again: Vec<(Vec<Op>, Reply)> = writes.map(|(reply, ops)| (ops, reply)).collect();
        let (exps, replies): (Vec<_>, Vec<_>) = written
            .into_iter()
            .map(|(reply, exp, bytes)| ((exp, bytes), reply))
            .unzip();
        let stored = self.store_own(&inserted, exps);
        broken |= stored.is_err();
        for (reply, answer) in replies
            .into_iter()
            .zip(stored.unwrap_or_else(|e| std::iter::repeat_n(Err(e), inserted.len()).collect()))
        {
            let _ = reply.send(answer);
        }
        if broken {
            // Chained on an experience that is not stored: plan it all again.
            for later in self.in_flight.drain(..) {
                again.extend(later.writes.into_iter().map(|(reply, ops)| (ops, reply)));
            }
        }
        if !again.is_empty() {
            let (ops, replies): (Vec<_>, Vec<_>) = again.into_iter().unzip();
            for (reply, answer) in replies.into_iter().zip(self.write(ops)) {
                let _ = reply.send(answer);
            }
        }
    }

    /// Completes every batch in flight.
    pub(crate) fn complete_writes(&mut self) {
        while !self.in_flight.is_empty() {
            self.complete_write();
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
    /// one commit and recorded in `signed-seq` with one more fsync (after what is in flight).
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

    /// The one-batch path: completes what is in flight, then signs `batch` (with `fuel`),
    /// inserts and stores it before returning.
    pub(crate) fn write_fueled(
        &mut self,
        batch: Vec<Vec<Op>>,
        fuel: Option<u64>,
    ) -> Vec<Result<Written, WriteError>> {
        self.complete_writes();
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
