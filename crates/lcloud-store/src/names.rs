//! Local names: aliases for nodes and names for contracts, in this store only (never
//! replicated; docs/store.md, "Tables": `aliases`, `contract_names`).

use super::*;

impl Store {
    /// Local aliases of nodes.
    pub fn aliases(&self) -> Result<BTreeMap<NodeId, String>, StoreError> {
        let rows = self.read_all(ALIASES, |k, v| Ok((NodeId(*k), v.to_owned())))?;
        Ok(rows.into_iter().collect())
    }

    /// Local names of contracts, by contract id.
    pub fn contract_names(&self) -> Result<BTreeMap<Id, String>, StoreError> {
        let rows = self.read_all(CONTRACT_NAMES, |k, v| Ok((Id(*k), v.to_owned())))?;
        Ok(rows.into_iter().collect())
    }

    /// Names contract `id` locally (a name names one contract: an older holder loses it).
    pub fn set_contract_name(&mut self, id: &Id, name: &str) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut t = txn
                .open_table(CONTRACT_NAMES)
                .map_err(|e| map_db(&dir, e))?;
            let holders: Vec<[u8; 32]> = t
                .iter()
                .map_err(|e| map_db(&dir, e))?
                .filter_map(|row| row.ok())
                .filter(|(k, v)| v.value() == name && k.value() != id.as_bytes())
                .map(|(k, _)| *k.value())
                .collect();
            for k in holders {
                t.remove(&k).map_err(|e| map_db(&dir, e))?;
            }
            t.insert(id.as_bytes(), name).map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }

    /// Sets a local alias.
    pub fn set_alias(&mut self, node: &NodeId, alias: &str) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let txn = self.db()?.begin_write().map_err(|e| map_db(&dir, e))?;
        {
            let mut t = txn.open_table(ALIASES).map_err(|e| map_db(&dir, e))?;
            t.insert(node.as_bytes(), alias)
                .map_err(|e| map_db(&dir, e))?;
        }
        txn.commit().map_err(|e| map_db(&dir, e))
    }
}
