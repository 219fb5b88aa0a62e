//! Loading the replica a store holds: the whole history in arrival order, or a compacted
//! store's base and what lies above it (`base.rs`); then what is parked.

use super::*;

impl Store {
    /// Loads the replica: every stored experience in arrival order, then the parked ones.
    /// Records are checked by checksum, canonical decoding, shape and links; signatures were
    /// checked when they were first stored (`lcloud verify` checks them again).
    pub fn load(&self, progress: &mut dyn FnMut(u64)) -> Result<Replica, StoreError> {
        guard(&self.dir, || self.load_unguarded(progress))
    }

    pub(super) fn load_unguarded(
        &self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Replica, StoreError> {
        let based = {
            let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
            let meta = txn.open_table(META).map_err(|e| self.map_db(e))?;
            self.base_meta(&meta)?
        };
        let mut replica = match based {
            Some(b) => self.load_compacted(b, progress)?,
            None => self.load_history(progress)?,
        };
        let txn = self.db()?.begin_read().map_err(|e| self.map_db(e))?;
        let parked = txn.open_table(PARKED).map_err(|e| self.map_db(e))?;
        for row in parked.iter().map_err(|e| self.map_db(e))? {
            let (k, v) = row.map_err(|e| self.map_db(e))?;
            let id = Id(*k.value());
            let bytes = unseal(v.value(), &|| format!("parked experience {id}"))?;
            let exp = revalidate_stored(bytes, &self.cloud)
                .map_err(|e| corrupt(format!("parked experience {id}: {e}")))?;
            replica
                .insert(exp)
                .map_err(|e| corrupt(format!("parked experience {id}: {e}")))?;
        }
        Ok(replica)
    }

    /// Every stored experience inserted in arrival order, from the genesis on.
    fn load_history(&self, progress: &mut dyn FnMut(u64)) -> Result<Replica, StoreError> {
        let mut replica: Option<Replica> = None;
        let cloud = self.cloud;
        self.for_each(|n, bytes| {
            let exp = revalidate_stored(bytes, &cloud).map_err(|e| bad_record(n, &e))?;
            match replica.as_mut() {
                None => {
                    replica = Some(
                        Replica::with_registry(exp, lcloud_contracts::registry())
                            .map_err(|e| corrupt(format!("genesis: {e}")))?,
                    )
                }
                Some(r) => admit(r, exp, n)?,
            }
            progress(n);
            Ok(())
        })?;
        replica.ok_or_else(|| corrupt("the store has no genesis"))
    }
}

/// Inserts the stored experience `exp`, arrival `n`, into `replica`, checking that it is
/// admitted as the `n`-th (the groups are a topological order).
pub(super) fn admit(
    replica: &mut Replica,
    exp: Verified<Experience>,
    n: u64,
) -> Result<(), StoreError> {
    let id = exp.id();
    let out = replica
        .insert(exp)
        .map_err(|e| corrupt(format!("experience #{n} ({id}): {e}")))?;
    if out.admitted.first().map(|i| u64::from(*i)) != Some(n) {
        return Err(corrupt(format!(
            "experience #{n} ({id}) is stored before what it depends on"
        )));
    }
    Ok(())
}
