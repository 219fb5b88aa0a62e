//! The node and its peers: network events, gossip, sync requests and answers, pushes,
//! admission of members, misbehaviour scores, and storing what peers send.

use super::*;

impl Node {
    pub(super) fn send(&self, cmd: Command) {
        // The network stopping first (shutdown) is not an error here.
        let _ = self.net.blocking_send(cmd);
    }

    /// Whether `peer` may read and write this cloud: a member (anyone not removed, in an
    /// open cloud).
    pub(super) fn allowed(&self, peer: &Peer) -> bool {
        node_of(peer).is_some_and(|node| self.replica.lattice().may_write(&node))
    }

    /// After anything that may have changed who is a member: peers refused as non-members
    /// that are members now are let in at once (their next dial connects), and connected
    /// peers that are no longer members are refused.
    pub(super) fn membership_changed(&mut self) {
        let grants = self.replica.lattice().membership_changes();
        if grants == self.grants_seen {
            return;
        }
        self.grants_seen = grants;
        self.send(Command::Gate(gate(self.replica.lattice())));
        let admitted: Vec<Peer> = self
            .refused
            .iter()
            .filter(|p| self.allowed(p))
            .copied()
            .collect();
        for peer in admitted {
            tracing::info!(%peer, "now a member: accepting its connections");
            self.refused.remove(&peer);
            self.send(Command::Admit(peer));
        }
        let expelled: Vec<Peer> = self
            .peers
            .keys()
            .filter(|p| !self.allowed(p))
            .copied()
            .collect();
        for peer in expelled {
            self.refuse(peer);
        }
    }

    /// Disconnects a non-member and refuses its connections until it becomes a member.
    pub(super) fn refuse(&mut self, peer: Peer) {
        tracing::info!(%peer, "not a member: refusing its connections");
        *self
            .metrics
            .rejected
            .entry("not a member".into())
            .or_default() += 1;
        self.peers.remove(&peer);
        self.refused.insert(peer);
        self.send(Command::Refuse(peer));
    }

    pub(super) fn misbehaved(&mut self, peer: Peer, reason: &str, points: u32) {
        *self.metrics.rejected.entry(reason.to_owned()).or_default() += 1;
        self.score(peer, points);
    }

    /// Adds misbehaviour points; bans the peer at [`BAN_SCORE`].
    pub(super) fn score(&mut self, peer: Peer, points: u32) {
        if self.banned.contains(&peer) {
            return;
        }
        if self.scores.len() >= SCORES_MAX && !self.scores.contains_key(&peer) {
            // Forget the least suspicious peer to make room.
            if let Some(least) = self.scores.iter().min_by_key(|(_, s)| **s).map(|(p, _)| *p) {
                self.scores.remove(&least);
            }
        }
        let score = self.scores.entry(peer).or_default();
        *score += points;
        if *score >= BAN_SCORE {
            self.scores.remove(&peer);
            tracing::warn!(%peer, "banning peer for misbehaviour");
            self.metrics.banned += 1;
            self.peers.remove(&peer);
            self.banned.insert(peer);
            self.send(Command::Ban(peer));
        }
    }

    pub(super) fn on_net(&mut self, ev: Event) {
        match ev {
            Event::Listening(addr) => tracing::info!(%addr, "listening"),
            Event::Connected(peer) => {
                if !self.allowed(&peer) {
                    // A non-member gets nothing of the cloud, gossip included: no connection.
                    self.refuse(peer);
                    return;
                }
                self.peers.entry(peer).or_default();
                // One side starts the exchange (it serves both directions).
                if self.me < peer {
                    self.start_sync(peer);
                }
            }
            Event::Disconnected(peer) => {
                self.peers.remove(&peer);
            }
            // The network checked an older gate than this thread's membership (a grant or
            // rotation stored since): a peer that is a member now is not refused, and its
            // next dial connects.
            Event::NotMember(peer) if self.allowed(&peer) => {}
            Event::NotMember(peer) => self.refuse(peer),
            Event::Gossip { from, id, data } => self.on_gossip(vec![(from, id, data)]),
            Event::Request {
                peer,
                request,
                token,
            } => {
                let response = self.on_request(peer, request);
                self.send(Command::Respond { token, response });
                // What a sync answer left for pushes goes after the answer: sent before it,
                // the pushes would reach the peer ahead of the first batch they build on
                // (and be parked there until it came).
                self.poll(peer);
            }
            Event::Response { peer, response } => self.on_response(peer, response),
            Event::Malformed {
                peer,
                reason,
                error,
            } => {
                tracing::info!(%peer, %error, "malformed request");
                self.misbehaved(peer, reason, INVALID_POINTS);
            }
            Event::RequestFailed { peer, error } => {
                tracing::debug!(%peer, %error, "request failed");
                // What was lost is found again by the next anti-entropy exchange.
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.session.handle_failure();
                }
            }
        }
    }

    /// Gossiped experiences (each from the peer that forwarded it): validated on every core,
    /// stored in one commit, then judged for gossipsub (forwarded only if accepted).
    pub(super) fn on_gossip(&mut self, group: Vec<(Peer, MessageId, Vec<u8>)>) {
        self.metrics.gossip_in += group.len() as u64;
        if self.unstored.is_some() {
            // Not judged: the forwarders did nothing wrong; anti-entropy brings it later.
            return;
        }
        let mut from_members = Vec::with_capacity(group.len());
        let mut bytes = Vec::with_capacity(group.len());
        for (from, id, data) in group {
            if self.allowed(&from) {
                from_members.push((from, id));
                bytes.push(ByteBuf(data));
            } else {
                self.send(Command::Judge {
                    id,
                    from,
                    valid: false,
                });
            }
        }
        let checked = check(bytes, &self.replica.cloud());
        let mut intake = Intake::default();
        let mut verdicts = Vec::with_capacity(checked.len());
        for ((from, id), r) in from_members.into_iter().zip(checked) {
            match r {
                Ok(x) => {
                    let (_, refused) = self.insert(&mut intake, vec![x]);
                    let invalid = refused.iter().any(InsertError::is_invalid);
                    verdicts.push((from, id, refused.is_empty(), invalid));
                }
                Err(e) => {
                    self.send(Command::Judge {
                        id,
                        from,
                        valid: false,
                    });
                    self.misbehaved(from, e.reason(), INVALID_POINTS);
                }
            }
        }
        let stored = self.commit(intake);
        for (from, id, accepted, invalid) in verdicts {
            self.send(Command::Judge {
                id,
                from,
                valid: stored && accepted,
            });
            if invalid {
                self.score(from, INVALID_POINTS);
            }
        }
    }

    pub(super) fn rate_limited(&mut self, peer: Peer) -> bool {
        let now = Instant::now();
        let s = self.peers.entry(peer).or_default();
        match s.window_start {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                s.window_requests += 1;
            }
            _ => {
                s.window_start = Some(now);
                s.window_requests = 1;
            }
        }
        s.window_requests > REQUESTS_PER_SECOND
    }

    /// A peer's summary: once one holds this node's key rotation, the old key is retired.
    pub(super) fn peer_holds(&mut self, summary: &Summary) {
        if self.retiring.as_ref().is_some_and(|r| r.seen(summary)) {
            self.retiring = None;
        }
    }

    /// Membership and rate checks for any request; `Some` is the refusal to send.
    pub(super) fn admit_request(&mut self, peer: Peer) -> Option<Response> {
        if let Some(e) = &self.unstored {
            return Some(Response::Refused {
                reason: format!("store unavailable: {e}"),
            });
        }
        if !self.allowed(&peer) {
            *self
                .metrics
                .rejected
                .entry("not a member".into())
                .or_default() += 1;
            return Some(Response::Refused {
                reason: "not a member of this cloud".into(),
            });
        }
        if self.rate_limited(peer) {
            self.misbehaved(peer, "flood", FLOOD_POINTS);
            return Some(Response::Refused {
                reason: format!("more than {REQUESTS_PER_SECOND} requests per second"),
            });
        }
        None
    }

    pub(super) fn on_request(&mut self, peer: Peer, request: Request) -> Response {
        if let Some(refused) = self.admit_request(peer) {
            return refused;
        }
        let cloud = self.replica.cloud();
        match request {
            Request::Sync { summary } => {
                if summary.cloud != cloud {
                    return Response::Refused {
                        reason: "another cloud".into(),
                    };
                }
                self.metrics.syncs += 1;
                self.peer_holds(&summary);
                // The first batch goes in the answer; the rest is pushed once the answer is
                // on its way (see `on_net`). A peer without a session (not connected as far
                // as this thread knows) gets the first batch alone.
                let lattice = self.replica.lattice();
                if lcloud_core::sync::behind(lattice, &summary).is_some() {
                    *self
                        .metrics
                        .rejected
                        .entry(lcloud_core::sync::BEHIND.into())
                        .or_default() += 1;
                }
                let response = match self.peers.get_mut(&peer) {
                    Some(s) => s.session.handle_sync(lattice, &summary),
                    None => Session::new(Limits::default()).handle_sync(lattice, &summary),
                };
                if let Response::Sync { exps, .. } = &response {
                    self.metrics.exps_out += exps.len() as u64;
                }
                response
            }
            // Pushes are checked off this thread first and arrive as `Msg::Push`; one that
            // reaches here was not (never expected): check it now.
            Request::Push { cloud: c, exps } => {
                let checked = check(exps, &cloud);
                let mut intake = Intake::default();
                match self.take_push(&mut intake, peer, c, checked) {
                    Ok((new, rejected)) => {
                        let stored = self.commit(intake);
                        Response::Pushed {
                            new: if stored { new } else { 0 },
                            rejected,
                        }
                    }
                    Err(refused) => refused,
                }
            }
        }
    }

    /// Inserts what one push carries (after the membership, rate and cloud checks): (new,
    /// rejected), or the refusal to answer.
    pub(super) fn take_push(
        &mut self,
        intake: &mut Intake,
        peer: Peer,
        cloud: Id,
        exps: Checked,
    ) -> Result<(u32, u32), Response> {
        if let Some(refused) = self.admit_request(peer) {
            return Err(refused);
        }
        if cloud != self.replica.cloud() {
            return Err(Response::Refused {
                reason: "another cloud".into(),
            });
        }
        Ok(self.insert_checked(intake, peer, exps))
    }

    /// Several pushes, stored in one commit, each answered after it.
    pub(super) fn on_pushes(&mut self, group: Vec<(Peer, u64, Id, Checked)>) {
        let mut intake = Intake::default();
        let mut answers = Vec::with_capacity(group.len());
        for (peer, token, cloud, exps) in group {
            answers.push((token, self.take_push(&mut intake, peer, cloud, exps)));
        }
        let stored = self.commit(intake);
        for (token, answer) in answers {
            let response = match answer {
                Ok((new, rejected)) => Response::Pushed {
                    new: if stored { new } else { 0 },
                    rejected,
                },
                Err(refused) => refused,
            };
            self.send(Command::Respond { token, response });
        }
    }

    pub(super) fn on_sync_answer(
        &mut self,
        peer: Peer,
        summary: Summary,
        exps: Checked,
        more: bool,
    ) {
        if self.unstored.is_some() {
            if let Some(s) = self.peers.get_mut(&peer) {
                s.session.handle_failure();
            }
            return;
        }
        if summary.cloud != self.replica.cloud() {
            self.misbehaved(peer, "another cloud", INVALID_POINTS);
            return;
        }
        self.peer_holds(&summary);
        let mut intake = Intake::default();
        self.insert_checked(&mut intake, peer, exps);
        self.commit(intake);
        // What the peer lacks is pushed; chains that disagree where neither summary said
        // where are asked about again, describing our branches of them.
        let lattice = self.replica.lattice();
        if let Some(s) = self.peers.get_mut(&peer) {
            s.behind_refusals = 0;
            if s.session.handle_sync_answer(lattice, &summary, more) {
                self.metrics.follow_ups += 1;
            }
        }
        self.poll(peer);
    }

    pub(super) fn on_response(&mut self, peer: Peer, response: Response) {
        match response {
            // Normally checked off this thread and delivered as `Msg::SyncAnswer`.
            Response::Sync {
                summary,
                exps,
                more,
            } => {
                let checked = check(exps, &self.replica.cloud());
                self.on_sync_answer(peer, summary, checked, more);
            }
            Response::Pushed { .. } => {
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.session.handle_pushed();
                }
                self.poll(peer);
            }
            Response::Refused { reason } => {
                let behind = reason.starts_with(lcloud_core::sync::BEHIND);
                let again = match self.peers.get_mut(&peer) {
                    Some(s) => {
                        s.session.handle_failure();
                        s.behind_refusals = if behind { s.behind_refusals + 1 } else { 0 };
                        s.behind_refusals
                    }
                    None => 1,
                };
                if behind && again >= 2 {
                    tracing::warn!(%peer, %reason, "peer refused: this node is behind its checkpoint");
                } else {
                    tracing::info!(%peer, %reason, "peer refused");
                }
            }
        }
    }

    /// Starts an exchange with `peer` (unless one is in flight) and sends its first request.
    pub(super) fn start_sync(&mut self, peer: Peer) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.session.start();
        }
        self.poll(peer);
    }

    /// Sends what the session with `peer` has to send: our `Sync` when one is due, pushes of
    /// what the peer lacks while the window has room (the answers are the backpressure).
    /// Nothing while the store is unavailable (the replica may hold what it does not).
    pub(super) fn poll(&mut self, peer: Peer) {
        if self.unstored.is_some() {
            return;
        }
        let Some(s) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut requests = Vec::new();
        while let Some(request) = s.session.poll_request(self.replica.lattice()) {
            requests.push(request);
        }
        for request in requests {
            if let Request::Push { exps, .. } = &request {
                self.metrics.exps_out += exps.len() as u64;
            }
            self.send(Command::Request { peer, request });
        }
    }

    /// Inserts checked experiences from a peer into the replica (to be stored by
    /// [`Node::commit`]); scores the invalid ones. Returns (new, rejected).
    pub(super) fn insert_checked(
        &mut self,
        intake: &mut Intake,
        peer: Peer,
        exps: Checked,
    ) -> (u32, u32) {
        let mut rejected = 0u32;
        let mut valid = Vec::with_capacity(exps.len());
        for r in exps {
            match r {
                Ok(x) => valid.push(x),
                Err(e) => {
                    rejected += 1;
                    self.misbehaved(peer, e.reason(), INVALID_POINTS);
                }
            }
        }
        intake.bytes.reserve(valid.len());
        let (new, refused) = self.insert(intake, valid);
        // An honest node never sends what the rules refuse: the sender misbehaved (counted
        // once already, by `insert`).
        for _ in refused.iter().filter(|e| e.is_invalid()) {
            self.score(peer, INVALID_POINTS);
        }
        (new, rejected + refused.len() as u32)
    }

    /// Inserts verified experiences into the replica. Returns how many were new and why the
    /// rules refused the others (each also counted in the metrics), including parked ones
    /// released and then refused.
    pub(super) fn insert(
        &mut self,
        intake: &mut Intake,
        exps: Vec<(Verified<Experience>, ByteBuf)>,
    ) -> (u32, Vec<InsertError>) {
        let mut new = 0u32;
        let mut refused = Vec::new();
        for (exp, bytes) in exps {
            let id = exp.id();
            if self.replica.lattice().contains(&id) {
                self.metrics.exps_known += 1;
                continue;
            }
            let exp = std::sync::Arc::new(exp);
            match self.replica.insert_arc(exp.clone()) {
                Ok(out) if out.duplicate => self.metrics.exps_known += 1,
                Ok(mut out) => {
                    new += 1;
                    for e in std::mem::take(&mut out.rejected) {
                        *self.metrics.rejected.entry(e.reason().into()).or_default() += 1;
                        refused.push(e);
                    }
                    if !out.parked_on.is_empty() {
                        self.metrics.exps_parked += 1;
                        intake.parked.push((*exp).clone());
                    }
                    intake.bytes.insert(id, bytes.0);
                    intake.outcomes.push(out);
                }
                Err(e) => {
                    *self.metrics.rejected.entry(e.reason().into()).or_default() += 1;
                    refused.push(e);
                }
            }
        }
        (new, refused)
    }

    /// Stores what `intake` inserted, in one durable commit, and announces it. `false`: the
    /// commit failed and the replica was loaded again from the store.
    pub(super) fn commit(&mut self, intake: Intake) -> bool {
        if intake.outcomes.is_empty() {
            return true;
        }
        let refs: Vec<&Inserted> = intake.outcomes.iter().collect();
        let parked: Vec<&Experience> = intake
            .parked
            .iter()
            .filter(|e| !self.replica.lattice().contains(&e.id()))
            .map(|e| &**e)
            .collect();
        let bytes = &intake.bytes;
        if let Err(e) = self.store.persist_bytes(
            &self.replica,
            &refs,
            &parked,
            &|id| bytes.get(id).map(Vec::as_slice),
            Some(&self.persisted),
        ) {
            tracing::error!(error = %e, "cannot store received experiences; reloading");
            self.reload();
            return false;
        }
        self.persisted = self.replica.state().doc;
        for idx in intake.outcomes.iter().flat_map(|o| o.admitted.iter()) {
            let exp = self.replica.lattice().get(*idx);
            self.metrics.exps_in += 1;
            let _ = self.announce.send(Announced {
                id: exp.id(),
                author: exp.author(),
                seq: exp.seq(),
                ops: exp.ops().len(),
                local: false,
                rejected: rejected_ops(&self.replica, exp),
            });
        }
        true
    }
}
