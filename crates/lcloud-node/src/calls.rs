//! The API's calls to the node's core: reads, writes, imports, contracts, status and metrics.

use super::*;
use crate::inspect::{self, CutText, Refused};
use crate::resolve::Names;
use lcloud_core::State;

impl Node {
    pub(super) fn contract_names(&self) -> BTreeMap<Id, String> {
        self.store.contract_names().unwrap_or_default()
    }

    /// The names this node resolves what a client types with: its aliases, and every author
    /// and member it knows.
    fn names(&self) -> Names {
        Names::new(self.store.aliases().unwrap_or_default(), &self.replica)
    }

    /// The state at `cut`: at a clock from the store's time-travel index when it can answer
    /// (as `lcloud root --at` does), else from the fold.
    fn view(&self, cut: &CutText) -> Result<State, Refused> {
        let names = self.names();
        if let Some(clock) = cut.clock_only(&names)? {
            match self.store.state_at_clock(&clock) {
                Ok(Some(state)) => return Ok(state),
                Ok(None) => {}
                Err(e @ StoreError::ClockAhead { .. }) => {
                    return Err(Refused::NotHeld(e.to_string()));
                }
                Err(e @ StoreError::Compacted { .. }) => {
                    return Err(Refused::Compacted(e.to_string()));
                }
                Err(e) => return Err(Refused::Failed(e.to_string())),
            }
        }
        Ok(self.replica.view(&cut.view(&names, &self.replica)?)?)
    }

    /// A contract's state (or one key of it) now, or at `cut`; refused when no contract has
    /// that name or it was not deployed at the cut.
    fn contract_state(
        &self,
        name: &str,
        key: Option<&str>,
        cut: &CutText,
    ) -> Result<lcloud_core::Value, Refused> {
        let id = crate::contracts::resolve(&self.replica, &self.contract_names(), name)
            .map_err(Refused::NotHeld)?;
        let at = if cut.is_now() {
            None
        } else {
            Some(self.view(cut)?)
        };
        let ordered = at
            .as_ref()
            .map_or_else(|| self.replica.ordered(), |s| &s.ordered);
        crate::contracts::state(ordered, &id, key).ok_or_else(|| {
            Refused::NotHeld(format!("contract {name:?} was not deployed at that cut"))
        })
    }

    fn answer(&self, q: Question) -> Result<serde_json::Value, Refused> {
        match q {
            Question::Diff { from, to } => inspect::diff(&self.names(), &self.replica, &from, &to),
            Question::Log {
                only,
                before,
                limit,
            } => {
                let only = only.map(|n| self.names().node(&n)).transpose()?;
                inspect::log(&self.replica, only, before.as_deref(), Some(limit))
            }
            Question::Conflicts(path, cut) => {
                let view = cut.view(&self.names(), &self.replica)?;
                inspect::conflicts(&self.replica, &path, &view)
            }
            Question::Writes { contract, key, cut } => {
                let id =
                    crate::contracts::resolve(&self.replica, &self.contract_names(), &contract)
                        .map_err(Refused::NotHeld)?;
                let view = cut.view(&self.names(), &self.replica)?;
                let writes = self
                    .replica
                    .contract_writes(&view, &id, &key)?
                    .ok_or_else(|| {
                        Refused::NotHeld(format!(
                            "contract {contract:?} was not deployed at that cut"
                        ))
                    })?;
                Ok(crate::contracts::writes_json(
                    &self.replica,
                    &id,
                    &key,
                    &writes,
                ))
            }
        }
    }

    pub(super) fn on_call(&mut self, call: Call) {
        match call {
            Call::Write(ops, reply) => {
                let result = self.write(vec![ops]).pop().expect("one answer per write");
                let _ = reply.send(result);
            }
            Call::Edit(edits, reply) => {
                // Every write before this one is in the replica (writes are stored before
                // any other message is handled), so the indexes mean what the client saw,
                // and every element named is in the experience's causal past.
                let me = self.identity.id();
                let result = match lcloud_core::resolve(&self.replica.state().doc, me, edits) {
                    Ok(ops) => self.write(vec![ops]).pop().expect("one answer per write"),
                    Err(e) => Err(WriteError::Refused(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Call::State(path, reply) => {
                let state = self.replica.state();
                let _ = reply.send(state.get(&path).map(|v| v.to_json()));
            }
            Call::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Call::View(cut, reply) => {
                let _ = reply.send(self.view(&cut));
            }
            Call::Ask(q, reply) => {
                let _ = reply.send(self.answer(q));
            }
            Call::Finality(reply) => {
                let _ = reply.send(crate::api::finality_json(self.replica.lattice()));
            }
            // Handled in `run`, which ends after it.
            Call::RotateKey(reply) => {
                let _ = reply.send(Err(WriteError::Unavailable(
                    "a key rotation is handled only by the core's loop".into(),
                )));
            }
            Call::Metrics(reply) => {
                let _ = reply.send(self.metrics_text());
            }
            Call::Isolate(on) => {
                if on {
                    self.peers.clear();
                }
                self.send(Command::Isolate(on));
            }
            Call::BundleHead(reply) => {
                let _ = reply.send((self.replica.lattice().len() as u64, self.generation));
            }
            Call::BundleRecords {
                generation,
                from,
                bytes,
                reply,
            } => {
                let lattice = self.replica.lattice();
                let records = (generation == self.generation).then(|| {
                    let mut out: Vec<Vec<u8>> = Vec::new();
                    let mut size = 0;
                    let mut i = from;
                    while i < lattice.len() as u64 && (out.is_empty() || size < bytes) {
                        let r = lattice.get(i as lcloud_core::lattice::Idx).to_bytes();
                        size += r.len();
                        out.push(r);
                        i += 1;
                    }
                    out
                });
                let _ = reply.send(records);
            }
            Call::Aliases(reply) => {
                let _ = reply.send(self.store.aliases().unwrap_or_default());
            }
            Call::Import(file, reply) => {
                let _ = reply.send(self.import(&file));
            }
            Call::Deploy(d, reply) => {
                let (id, op) = crate::contracts::deploy_op(d.code, d.init);
                let result = self.write_contract(id, op, d.fuel);
                // Named when it is deployed, by this write or an earlier one.
                if let (Ok(_), Some(name)) = (&result, &d.name)
                    && self.replica.ordered().deployed.contains_key(&id)
                    && let Err(e) = self.store.set_contract_name(&id, name)
                {
                    tracing::warn!(error = %e, "the contract is deployed but its name was not stored");
                }
                let _ = reply.send(result);
            }
            Call::Invoke(c, reply) => {
                let names = self.contract_names();
                let result = match crate::contracts::resolve(&self.replica, &names, &c.contract) {
                    Err(e) => Err(WriteError::Refused(e)),
                    Ok(id) => {
                        let op = crate::contracts::call_op(id, &c.function, c.args);
                        self.write_contract(id, op, c.fuel)
                    }
                };
                let _ = reply.send(result);
            }
            Call::Contracts(reply) => {
                let names = self.contract_names();
                let _ = reply.send(crate::contracts::deployed(&self.replica, &names));
            }
            Call::Shallow(reply) => {
                let _ = reply
                    .send(lcloud_store::shallow::export(&self.replica).map_err(|e| e.to_string()));
            }
            Call::ContractState {
                name,
                key,
                cut,
                reply,
            } => {
                let _ = reply.send(self.contract_state(&name, key.as_deref(), &cut));
            }
        }
    }

    pub(super) fn status(&self) -> Status {
        let lattice = self.replica.lattice();
        Status {
            node: self.identity.id(),
            cloud: self.replica.cloud(),
            state: self.replica.state(),
            cached_root: self.replica.cached_root(),
            heads: lattice.heads().iter().copied().collect(),
            clock: lattice.frontier().0.into_iter().collect(),
            experiences: lattice.len(),
            peers: self
                .peers
                .keys()
                .map(|p| (p.to_string(), node_of(p)))
                .collect(),
            parked: lattice.parked_len(),
            store_error: self.unstored.clone(),
            // What parked experiences wait for and no one here holds, parked or not: the gap.
            missing: lattice
                .missing()
                .filter(|id| lattice.parked_experience(id).is_none())
                .take(MISSING_SHOWN)
                .copied()
                .collect(),
            forks: lattice
                .forks()
                .iter()
                .map(|f| (f.author(), f.seq(), lcloud_core::codec::to_canonical(f)))
                .collect(),
        }
    }

    pub(super) fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let lattice = self.replica.lattice();
        let mut out = String::new();
        // Sync lag: experiences peers are known to lack, queued to be pushed.
        let lag: usize = self.peers.values().map(|s| s.session.lag()).sum();
        let stability = lattice.stability();
        let checkpoints = lattice.checkpoints();
        // Name, help, kind, value: one metric each, in this order.
        let rows: [(&str, &str, &str, String); 19] = [
            (
                "peers",
                "Connected peers.",
                "gauge",
                self.peers.len().to_string(),
            ),
            (
                "experiences",
                "Experiences held (admitted).",
                "gauge",
                lattice.len().to_string(),
            ),
            (
                "parked",
                "Experiences waiting for a dependency.",
                "gauge",
                lattice.parked_len().to_string(),
            ),
            (
                "experiences_in_total",
                "Experiences received from peers and stored.",
                "counter",
                m.exps_in.to_string(),
            ),
            (
                "experiences_known_total",
                "Experiences received from peers that this node already held (checked for nothing).",
                "counter",
                m.exps_known.to_string(),
            ),
            (
                "experiences_parked_total",
                "Experiences received before a dependency and parked until it arrived.",
                "counter",
                m.exps_parked.to_string(),
            ),
            (
                "experiences_out_total",
                "Experiences sent to peers by sync.",
                "counter",
                m.exps_out.to_string(),
            ),
            (
                "written_total",
                "Experiences written by this node.",
                "counter",
                m.written.to_string(),
            ),
            (
                "gossip_in_total",
                "Gossip messages received.",
                "counter",
                m.gossip_in.to_string(),
            ),
            (
                "syncs_served_total",
                "Sync requests answered.",
                "counter",
                m.syncs.to_string(),
            ),
            (
                "sync_follow_ups_total",
                "Second sync rounds asked for because chains disagreed (forks), reconciled by hashes.",
                "counter",
                m.follow_ups.to_string(),
            ),
            (
                "peers_banned_total",
                "Peers disconnected for misbehaviour.",
                "counter",
                m.banned.to_string(),
            ),
            (
                "sync_lag",
                "Experiences queued to be pushed to peers.",
                "gauge",
                lag.to_string(),
            ),
            (
                "stable_experiences",
                "Experiences every current member has seen (at or below the stable frontier).",
                "gauge",
                stability.stable.to_string(),
            ),
            (
                "unstable_experiences",
                "Experiences some current member has not seen yet: what finality waits for.",
                "gauge",
                (stability.held - stability.stable).to_string(),
            ),
            (
                "final_checkpoint_depth",
                "Depth of the deepest checkpoint every current member attested with one root (0: none).",
                "gauge",
                checkpoints
                    .iter()
                    .rev()
                    .find(|c| c.is_final())
                    .map_or(0, |c| c.depth)
                    .to_string(),
            ),
            (
                "late_experiences",
                "Experiences below the final checkpoint that no member had seen when attesting it (a fork's other branch surfacing late): left out of the fold.",
                "gauge",
                lattice.late_count().to_string(),
            ),
            (
                "compaction_depth",
                "Depth of the final checkpoint this node compacted its history at (0: it keeps the whole history).",
                "gauge",
                lattice
                    .compaction_point()
                    .map_or(0, |(d, _)| *d)
                    .to_string(),
            ),
            (
                "checkpoint_divergences",
                "Checkpoints at which members attested different state roots.",
                "gauge",
                checkpoints
                    .iter()
                    .filter(|c| c.is_divergent())
                    .count()
                    .to_string(),
            ),
        ];
        for (name, help, kind, value) in rows {
            out.push_str(&format!(
                "# HELP lcloud_{name} {help}\n# TYPE lcloud_{name} {kind}\nlcloud_{name} {value}\n"
            ));
        }
        out.push_str(
            "# HELP lcloud_member_behind_experiences Experiences held here that a member has not acknowledged.\n",
        );
        out.push_str("# TYPE lcloud_member_behind_experiences gauge\n");
        for w in &stability.witnesses {
            out.push_str(&format!(
                "lcloud_member_behind_experiences{{member=\"{}\"}} {}\n",
                w.node.to_hex(),
                w.behind
            ));
        }
        out.push_str("# HELP lcloud_rejected_total Experiences or requests refused, by reason.\n");
        out.push_str("# TYPE lcloud_rejected_total counter\n");
        for (reason, n) in &m.rejected {
            out.push_str(&format!(
                "lcloud_rejected_total{{reason=\"{}\"}} {n}\n",
                reason.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        out
    }
}
