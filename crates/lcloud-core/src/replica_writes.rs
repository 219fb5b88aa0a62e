//! Attribution of contract state: who set a contract's key to the value it holds in a view.

use super::{Replica, View, ViewError};
use crate::fold::KeyWrites;
use crate::id::Id;
use crate::lattice::Idx;

impl Replica {
    /// The value of `key` in contract `contract`'s state in `view`, and the changes that led
    /// to it, each with the call (or deploy) op that made it: the last one wrote the value.
    /// `None` when the contract is not deployed in the view.
    pub fn contract_writes(
        &self,
        view: &View,
        contract: &Id,
        key: &str,
    ) -> Result<Option<KeyWrites>, ViewError> {
        let scope = self.scope(view)?;
        let included = |i: Idx| self.includes(&scope, i);
        let leaves_out = scope.without.is_some();
        let past = |i| self.doc_before(i, &included, leaves_out);
        Ok(self.ordered.writes(
            &self.registry,
            &self.lattice,
            included,
            &past,
            !leaves_out,
            contract,
            key,
        ))
    }
}
