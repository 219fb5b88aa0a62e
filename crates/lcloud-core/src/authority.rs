//! Membership that changes: who may write, and who may change that, at any causal cut; and
//! which experiences the fold leaves out because their author lost a right concurrently.
//!
//! Rights are an observed-remove set per node, read at a cut (the causal past of an
//! experience's parents):
//!
//! - A node holds a right at a cut if the cut holds a *grant* of it (the genesis for the
//!   creator and listed members, or everyone in an open cloud; `add_member`, `add_admin`, or a
//!   `rotate_key` naming it) that no *revocation* in the cut has in its past (`remove_member`,
//!   `remove_admin`, or the node's own `rotate_key`). A grant after a removal re-admits; a
//!   grant and a revocation that are concurrent leave the right held (add wins).
//! - **Admission** (the lattice's rule, a function of the experience's past alone): the author
//!   holds the right to write at the cut of its parents, and the right to administer if it
//!   changes membership. Every admitted grant counts.
//! - **The fold** keeps an experience only if, in addition, (a) the rights it was admitted on
//!   rest on grants the fold keeps, and (b) no revocation of its author's right, anywhere in
//!   the lattice, is concurrent with it: what a removed member wrote without having seen its
//!   removal is kept only if the removal has it in its past. Revocations are never left out
//!   (so two admins who remove each other concurrently are both removed, on every node).
//!
//! Both depend only on the set of experiences, never on their arrival order: the fold's
//! choice is recomputed whenever a revocation arrives.

use std::collections::BTreeMap;

use super::{Idx, InsertError, Lattice};
use crate::id::NodeId;
use crate::op::Op;

/// A right a node holds in a cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Right {
    /// May sign experiences that are folded.
    Write = 0,
    /// May change membership.
    Admin = 1,
}

/// The experiences that grant and revoke each node's rights, and the fold's choice.
#[derive(Clone, Debug, Default)]
pub(super) struct Authority {
    /// Per right: node → experiences granting it.
    grants: [BTreeMap<NodeId, Vec<Idx>>; 2],
    /// Per right: node → experiences revoking it.
    revokes: [BTreeMap<NodeId, Vec<Idx>>; 2],
    /// Per arrival index: the fold leaves the experience out.
    void: Vec<bool>,
    /// How many are left out.
    voids: usize,
    /// How many experiences changed membership.
    changes: usize,
}

impl Authority {
    /// Records what the experience at `idx` (by `author`) grants and revokes.
    pub(super) fn record(&mut self, idx: Idx, author: NodeId, ops: &[Op]) {
        self.changes += 1;
        let mut note = |set: usize, right: Right, node: NodeId| {
            let list = [&mut self.grants, &mut self.revokes][set][right as usize]
                .entry(node)
                .or_default();
            if list.last() != Some(&idx) {
                list.push(idx);
            }
        };
        for op in ops {
            match op {
                Op::AddMember { node } => note(0, Right::Write, *node),
                Op::AddAdmin { node } => {
                    note(0, Right::Write, *node);
                    note(0, Right::Admin, *node);
                }
                Op::RemoveMember { node } => {
                    note(1, Right::Write, *node);
                    note(1, Right::Admin, *node);
                }
                Op::RemoveAdmin { node } => note(1, Right::Admin, *node),
                Op::RotateKey { to } => {
                    note(0, Right::Write, *to);
                    note(0, Right::Admin, *to);
                    note(1, Right::Write, author);
                    note(1, Right::Admin, author);
                }
                _ => {}
            }
        }
    }

    /// Whether the fold leaves out the experience at `idx`.
    pub(super) fn is_void(&self, idx: Idx) -> bool {
        self.void.get(idx as usize).copied().unwrap_or(false)
    }

    /// How many experiences the fold leaves out.
    pub(super) fn voids(&self) -> usize {
        self.voids
    }

    /// Whether any right was ever revoked.
    pub(super) fn any_revoked(&self) -> bool {
        !self.revokes[Right::Write as usize].is_empty()
            || !self.revokes[Right::Admin as usize].is_empty()
    }

    /// Every node named by a grant.
    pub(super) fn granted(&self) -> impl Iterator<Item = &NodeId> {
        self.grants[Right::Write as usize].keys()
    }
}

/// Why no one may write `ops` as `author`, in a cloud created by `creator`, whatever their
/// rights: removing or demoting the creator, rotating a key to itself, a rotation beside
/// another revocation. `None` when nothing is wrong.
pub fn membership_refusal(creator: &NodeId, author: &NodeId, ops: &[Op]) -> Option<&'static str> {
    for op in ops {
        return Some(match op {
            Op::RemoveMember { node } | Op::RemoveAdmin { node } if node == creator => {
                "the genesis author cannot be removed or demoted (it may rotate its key)"
            }
            Op::RotateKey { to } if to == author => "a key cannot be rotated to itself",
            Op::RotateKey { .. } if ops.iter().filter(|o| o.revokes()).count() > 1 => {
                "a key rotation is the only revocation in its experience"
            }
            _ => continue,
        });
    }
    None
}

impl Lattice {
    /// Whether `who` holds `right` at the cut of `parents` (their causal past, them
    /// included). `exact`: only grants the fold keeps count (the fold's rule); otherwise
    /// every admitted one (the admission rule).
    pub(super) fn holds(&self, who: &NodeId, right: Right, parents: &[Idx], exact: bool) -> bool {
        let in_cut = |i: Idx| parents.iter().any(|p| *p == i || self.precedes(i, *p));
        let revoked: Vec<Idx> = self.authority.revokes[right as usize]
            .get(who)
            .map(|rs| rs.iter().copied().filter(|r| in_cut(*r)).collect())
            .unwrap_or_default();
        // A grant stands unless a revocation in the cut has it in its past (or is it).
        let stands = |g: Idx| !revoked.iter().any(|r| *r == g || self.precedes(g, *r));
        let from_genesis = match right {
            Right::Write => self.writes_from_genesis(who),
            Right::Admin => *who == self.rules.creator,
        };
        if from_genesis && stands(0) {
            return true;
        }
        let Some(grants) = self.authority.grants[right as usize].get(who) else {
            return false;
        };
        grants.iter().any(|&g| {
            in_cut(g)
                && stands(g)
                && !(exact && self.authority.is_void(g))
                && (right == Right::Write || self.grants_admin(g, who, exact))
        })
    }

    /// Whether the genesis lets `who` write: its creator, a member it lists, or anyone in an
    /// open cloud.
    fn writes_from_genesis(&self, who: &NodeId) -> bool {
        *who == self.rules.creator || self.rules.members.as_ref().is_none_or(|m| m.contains(who))
    }

    /// Whether `who` is a member at the cut of `heads` and was one at depth `depth` already:
    /// a grant that stands in the cut is no deeper (or the genesis lists it). The electors
    /// of checkpoint `depth` as that cut shows them.
    pub(super) fn member_since(&self, who: &NodeId, depth: u64, heads: &[Idx]) -> bool {
        if !self.holds(who, Right::Write, heads, true) {
            return false;
        }
        if self.writes_from_genesis(who) {
            return true;
        }
        let in_cut = |i: Idx| heads.iter().any(|p| *p == i || self.precedes(i, *p));
        self.authority.grants[Right::Write as usize]
            .get(who)
            .is_some_and(|gs| gs.iter().any(|g| in_cut(*g) && self.depth(*g) <= depth))
    }

    /// Whether experience `g` makes `who` an admin: it says so (`add_admin`), or it is a key
    /// rotation by an author who was an admin where it wrote it (kept below a compaction
    /// point: as the full history said).
    fn grants_admin(&self, g: Idx, who: &NodeId, exact: bool) -> bool {
        let exp = self.get(g);
        if exp
            .ops()
            .iter()
            .any(|op| matches!(op, Op::AddAdmin { node } if node == who))
        {
            return true;
        }
        if let Some(said) = self.base.admin_grant(g, exact) {
            return said;
        }
        self.holds(&exp.author(), Right::Admin, self.parents(g), exact)
    }

    /// [`Lattice::grants_admin`], for compaction.
    pub(super) fn grants_admin_at(&self, g: Idx, who: &NodeId, exact: bool) -> bool {
        self.grants_admin(g, who, exact)
    }

    /// Every experience that grants or revokes a right, in no particular order.
    pub(super) fn authority_changes(&self) -> impl Iterator<Item = Idx> + '_ {
        let a = &self.authority;
        a.grants
            .iter()
            .chain(a.revokes.iter())
            .flat_map(|by| by.values().flatten().copied())
    }

    /// Records the rights a kept experience grants and revokes (compaction).
    pub(super) fn record_membership(&mut self, idx: Idx, author: NodeId, ops: &[Op]) {
        self.authority.record(idx, author, ops);
    }

    /// Records the fold's decision for the kept experience admitted next (compaction).
    pub(super) fn keep_void(&mut self, void: bool) {
        self.authority.void.push(void);
        self.authority.voids += usize::from(void);
    }

    /// The admission rule for an experience whose parents are all admitted.
    pub(super) fn check_authority(
        &self,
        id: crate::id::Id,
        author: NodeId,
        ops: &[Op],
        parents: &[Idx],
    ) -> Result<(), InsertError> {
        if !self.holds(&author, Right::Write, parents, false) {
            return Err(InsertError::NotMember { id, author });
        }
        if ops.iter().any(Op::needs_admin) && !self.holds(&author, Right::Admin, parents, false) {
            return Err(InsertError::NotAdmin { id, author });
        }
        match membership_refusal(&self.rules.creator, &author, ops) {
            Some(why) => Err(InsertError::BadMembership { id, why }),
            None => Ok(()),
        }
    }

    /// Experiences that make `who` a writer and that no revocation in the lattice has in its
    /// past (the genesis counts for the creator and listed members): every experience `who`
    /// writes from now on has one of them in its past.
    pub(super) fn standing_grants(&self, who: &NodeId) -> Vec<Idx> {
        let revoked = self.authority.revokes[Right::Write as usize]
            .get(who)
            .map_or(&[][..], Vec::as_slice);
        let stands = |g: Idx| !revoked.iter().any(|r| *r == g || self.precedes(g, *r));
        let from_genesis = self.writes_from_genesis(who);
        let mut out: Vec<Idx> = Vec::new();
        if from_genesis && stands(0) {
            out.push(0);
        }
        if let Some(grants) = self.authority.grants[Right::Write as usize].get(who) {
            out.extend(grants.iter().copied().filter(|g| stands(*g)));
        }
        out
    }

    /// Whether the fold keeps the experience at `idx` (the rule in the module's comment).
    fn live(&self, idx: Idx) -> bool {
        if idx == 0 {
            return true;
        }
        let exp = self.get(idx);
        let author = exp.author();
        let parents = self.parents(idx);
        let admin = exp.ops().iter().any(Op::needs_admin);
        if !self.holds(&author, Right::Write, parents, true)
            || (admin && !self.holds(&author, Right::Admin, parents, true))
        {
            return false;
        }
        let concurrent = |right: Right| {
            self.authority.revokes[right as usize]
                .get(&author)
                .is_some_and(|rs| rs.iter().any(|r| self.concurrent(*r, idx)))
        };
        !(concurrent(Right::Write) || (admin && concurrent(Right::Admin)))
    }

    /// Decides the fold's choice for the experience just admitted at `idx`; if it revokes a
    /// right, decides again for every experience not in its past. Returns whether an
    /// experience admitted before is now left out (the fold must be rebuilt).
    ///
    /// The revocation's past cannot change: an experience there is not concurrent with it,
    /// and neither is any grant it rests on (that grant is in the revocation's past too), so
    /// only what is concurrent with the revocation is decided again.
    pub(super) fn settle(&mut self, idx: Idx) -> bool {
        let exp = self.nodes[idx as usize].exp.clone();
        let revokes = exp.ops().iter().any(Op::revokes);
        if exp.ops().iter().any(Op::is_membership) {
            self.authority.record(idx, exp.author(), exp.ops());
        }
        debug_assert_eq!(self.authority.void.len(), idx as usize);
        let void = !self.live(idx);
        self.authority.void.push(void);
        self.authority.voids += usize::from(void);
        if !revokes {
            return false;
        }
        let mut rebuilt = false;
        for i in 0..idx {
            // What a compaction kept below its final checkpoint stands as decided.
            if self.base.is_kept(i) || self.precedes(i, idx) {
                continue;
            }
            let void = !self.live(i);
            let was = std::mem::replace(&mut self.authority.void[i as usize], void);
            if was != void {
                rebuilt = true;
                if void {
                    self.authority.voids += 1;
                } else {
                    self.authority.voids -= 1;
                }
            }
        }
        rebuilt
    }

    /// Whether the fold leaves out experience `idx`: its author had lost the right to write
    /// it (see the module's comment), or it is late for a final checkpoint
    /// ([`Lattice::is_late`]).
    pub fn is_void(&self, idx: Idx) -> bool {
        self.authority.is_void(idx) || self.is_late(idx)
    }

    /// How many experiences the fold leaves out, for want of a right or late.
    pub fn void_count(&self) -> usize {
        let late_only = self.late().filter(|i| !self.authority.is_void(*i)).count();
        self.authority.voids() + late_only
    }

    /// How many admitted experiences change membership: a cheap way to tell that who may
    /// write could have changed.
    pub fn membership_changes(&self) -> usize {
        self.authority.changes
    }

    /// Whether any right was ever revoked in this lattice (a removal, a demotion or a key
    /// rotation).
    pub fn any_revoked(&self) -> bool {
        self.authority.any_revoked()
    }

    /// Whether `who` may write now: an experience it wrote on the current heads would be
    /// admitted and folded.
    pub fn may_write(&self, who: &NodeId) -> bool {
        let heads = self.head_idxs();
        self.holds(who, Right::Write, &heads, true)
    }

    /// Whether `who` may change membership now.
    pub fn is_admin(&self, who: &NodeId) -> bool {
        let heads = self.head_idxs();
        self.holds(who, Right::Write, &heads, true) && self.holds(who, Right::Admin, &heads, true)
    }

    /// The members now (who [`Lattice::may_write`]), sorted; `None` in an open cloud, where
    /// anyone not removed may write.
    pub fn members(&self) -> Option<Vec<NodeId>> {
        self.rules.members.as_ref()?;
        Some(self.candidates().filter(|n| self.may_write(n)).collect())
    }

    /// The admins now, sorted.
    pub fn admins(&self) -> Vec<NodeId> {
        self.candidates().filter(|n| self.is_admin(n)).collect()
    }

    /// Nodes that held a right once and no longer may write, sorted.
    pub fn removed(&self) -> Vec<NodeId> {
        let mut named: Vec<NodeId> = self.authority.revokes[Right::Write as usize]
            .keys()
            .copied()
            .collect();
        named.retain(|n| !self.may_write(n));
        named
    }

    /// Every node the genesis or a grant names, and every author, sorted and deduplicated.
    pub(super) fn candidates(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut all: Vec<NodeId> = self.authors.clone();
        all.push(self.rules.creator);
        all.extend(self.rules.members.iter().flatten().copied());
        all.extend(self.authority.granted().copied());
        all.sort();
        all.dedup();
        all.into_iter()
    }

    fn head_idxs(&self) -> Vec<Idx> {
        self.heads.iter().map(|h| self.by_id[h]).collect()
    }
}
