//! This node's own writes, pipelined as the store's group commit is
//! ([`lcloud_store::Committer`]): the writes waiting are checked against the replica, chained as
//! consecutive experiences of this node and signed on the store's signing pool
//! ([`lcloud_store::SignPool`]); once signed they are inserted into the replica, stored in one
//! commit (one fsync) and recorded in `signed-seq` (a second fsync), then announced, published
//! and answered.
//!
//! Signing overlaps storing ([`Node::write_stream`]): just before a batch is stored, the writes
//! that arrived meanwhile are planned and handed to the signing pool, and after the commit
//! they join the writes that arrived during it in the next commit. No write waits for more
//! than the commit in progress and its own, and the CPU signs while the disk syncs. (An
//! earlier pipeline stored the batch signed ahead on its own, so each write waited one commit
//! longer: see `docs/BENCHMARKS.md`, "HTTP writes".)
//!
//! Anything else (a read, a peer's experiences, a contract call) is handled only once every
//! write before it is stored, so it sees them, and nothing changes the replica between
//! planning a batch and inserting it.

use crate::node::READ_ONLY;
use lcloud_core::{EXPERIENCE_BYTES_MAX, Experience, Id, Inserted, NodeId, Op, Unsigned, Verified};
use lcloud_net::Command;
use tokio::sync::{mpsc, oneshot};

use super::{
    Announced, Call, ContractWritten, Msg, Node, WRITES_PER_COMMIT, WriteError, Written,
    rejected_ops,
};

/// Where a write's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Written, WriteError>>;

/// Writes planned and handed to the signing pool, not yet inserted.
pub(crate) struct Ahead {
    /// Each write being signed, in chain order: its reply and its ops (for the checks of a
    /// batch planned after it, and to plan it again if one before it is refused).
    writes: Vec<(Reply, Vec<Op>)>,
    sigs: lcloud_store::PendingSigs,
    /// The last experience planned: its seq and id.
    tip: (u64, Id),
}

/// Writes inserted into the replica, to be stored in one commit.
#[derive(Default)]
struct Inserting {
    inserted: Vec<Inserted>,
    written: Vec<(Verified<Experience>, Vec<u8>)>,
    replies: Vec<Reply>,
}

/// The writes waiting in `inbox` (up to a commit's worth), and the first other message found.
fn drain_writes(inbox: &mut mpsc::UnboundedReceiver<Msg>) -> (Vec<(Vec<Op>, Reply)>, Option<Msg>) {
    let mut group = Vec::new();
    while group.len() < WRITES_PER_COMMIT {
        match inbox.try_recv() {
            Ok(Msg::Api(Call::Write(ops, reply))) => group.push((ops, reply)),
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

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
        if self.read_only {
            return Some(WriteError::Refused(READ_ONLY.into()));
        }
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
        if group.is_empty() {
            return;
        }
        let (batch, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        for (reply, answer) in replies.into_iter().zip(self.write(batch)) {
            let _ = reply.send(answer);
        }
    }

    /// Writes `group`, and every write that arrives meanwhile, each batch in one commit, the
    /// next batch signed while one is stored. Returns when no write waits, with the first
    /// other message found (handled by the caller once every write before it is stored).
    pub(crate) fn write_stream(
        &mut self,
        mut group: Vec<(Vec<Op>, Reply)>,
        inbox: &mut mpsc::UnboundedReceiver<Msg>,
    ) -> Option<Msg> {
        let mut ahead: Option<Ahead> = None;
        let mut other: Option<Msg> = None;
        loop {
            let batch = self.plan(group, ahead.as_ref(), None);
            let mut ins = Inserting::default();
            let mut again = Vec::new();
            for b in [ahead.take(), batch].into_iter().flatten() {
                if again.is_empty() {
                    again = self.insert_signed(b, &mut ins);
                } else {
                    again.extend(b.writes.into_iter().map(|(reply, ops)| (ops, reply)));
                }
            }
            // The writes waiting now are signed while this batch is stored.
            if other.is_none() && again.is_empty() && self.unstored.is_none() {
                let (waiting, o) = drain_writes(inbox);
                other = o;
                ahead = self.plan(waiting, None, None);
            }
            let stored = self.store_inserting(ins);
            if !stored && let Some(a) = ahead.take() {
                // Chained on experiences that are not stored: plan them again.
                again.extend(a.writes.into_iter().map(|(reply, ops)| (ops, reply)));
            }
            self.write_group(again);
            if other.is_some() {
                if let Some(a) = ahead.take() {
                    let mut ins = Inserting::default();
                    let again = self.insert_signed(a, &mut ins);
                    self.store_inserting(ins);
                    self.write_group(again);
                }
                return other;
            }
            let (waiting, o) = drain_writes(inbox);
            other = o;
            if waiting.is_empty() && ahead.is_none() {
                return other;
            }
            group = waiting;
        }
    }

    /// Plans `group` after `after` (checked against the replica and `after`'s ops, chained on
    /// its tip, else on the replica's heads), each with `fuel`, and hands it to the signing
    /// pool. Refusals are answered at once.
    fn plan(
        &mut self,
        group: Vec<(Vec<Op>, Reply)>,
        after: Option<&Ahead>,
        fuel: Option<u64>,
    ) -> Option<Ahead> {
        if group.is_empty() {
            return None;
        }
        if after.is_none()
            && let Some(e) = self.cannot_write()
        {
            for (_, reply) in group {
                let _ = reply.send(Err(e.clone()));
            }
            return None;
        }
        let me = self.identity.id();
        // What the fold would leave out or misread is refused before anything is signed,
        // the writes planned before counted as written.
        let checked = {
            let pending = after
                .into_iter()
                .flat_map(|a| a.writes.iter().map(|(_, ops)| ops.as_slice()));
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
        let drafts = chain(
            self,
            me,
            after.map(|a| a.tip),
            todo,
            fuel,
            |(reply, _), e| {
                let _ = reply.send(Err(e));
            },
        );
        let (_, last) = drafts.last()?;
        let tip = (last.header().seq, last.id());
        let (writes, unsigned): (Vec<_>, Vec<_>) = drafts.into_iter().unzip();
        let sigs = self
            .signer
            .dispatch(unsigned.into_iter().map(|u| (u, 0)).collect());
        Some(Ahead { writes, sigs, tip })
    }

    /// Waits for `batch`'s signatures and inserts its experiences into the replica, adding
    /// them to `ins`. If the replica refuses one (a rule of the cloud), that write is answered
    /// and the rest, chained on it, is returned to be planned again.
    fn insert_signed(&mut self, batch: Ahead, ins: &mut Inserting) -> Vec<(Vec<Op>, Reply)> {
        let signed = batch.sigs.wait(self.identity.key());
        let mut writes = batch.writes.into_iter();
        for ((exp, bytes, _), (reply, _)) in signed.into_iter().zip(writes.by_ref()) {
            match self.replica.insert(exp.clone()) {
                Ok(out) => {
                    ins.inserted.push(out);
                    ins.written.push((exp, bytes));
                    ins.replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(WriteError::Refused(e.to_string())));
                    break;
                }
            }
        }
        writes.map(|(reply, ops)| (ops, reply)).collect()
    }

    /// Stores and answers what `ins` holds; whether it was stored.
    fn store_inserting(&mut self, ins: Inserting) -> bool {
        let n = ins.inserted.len();
        let stored = self.store_own(&ins.inserted, ins.written);
        let ok = stored.is_ok();
        for (reply, answer) in ins
            .replies
            .into_iter()
            .zip(stored.unwrap_or_else(|e| std::iter::repeat_n(Err(e), n).collect()))
        {
            let _ = reply.send(answer);
        }
        ok
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
        let (mut todo, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|ops| {
                let (tx, rx) = oneshot::channel();
                ((ops, tx), rx)
            })
            .unzip();
        // Sign the batch as one chain, then insert it; if the replica refuses one (a rule of
        // the cloud), the rest is planned and signed again on top of what it accepted. All
        // of it is stored in one commit.
        let mut ins = Inserting::default();
        while let Some(b) = self.plan(std::mem::take(&mut todo), None, fuel) {
            todo = self.insert_signed(b, &mut ins);
        }
        self.store_inserting(ins);
        answers
            .into_iter()
            .map(|mut rx| {
                rx.try_recv().unwrap_or_else(|_| {
                    Err(WriteError::Unavailable("the write was not answered".into()))
                })
            })
            .collect()
    }
}
