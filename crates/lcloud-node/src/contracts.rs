//! Contracts as a node shows them: deployed contracts with their local names, a name or id
//! prefix resolved to a contract, and the outcome of a call or deploy just written. Shared by
//! the node's API and the `lcloud` binary working on a directory.

use std::collections::BTreeMap;

use lcloud_core::{Id, NodeId, Op, Replica, Value};

/// A deployed contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    /// Its id.
    pub id: Id,
    /// Its local name, if it has one.
    pub name: Option<String>,
    /// Who deployed it.
    pub by: NodeId,
    /// The experience that deployed it.
    pub experience: Id,
    /// The size of its module, in bytes.
    pub code_bytes: usize,
    /// How many keys its state holds.
    pub keys: usize,
}

impl Deployed {
    /// The JSON the API and `lcloud contract list --json` print.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_hex(),
            "name": self.name,
            "deployed_by": self.by.to_hex(),
            "experience": self.experience.to_hex(),
            "code_bytes": self.code_bytes,
            "keys": self.keys,
        })
    }
}

/// Every contract deployed in the current fold, in id order.
pub fn deployed(replica: &Replica, names: &BTreeMap<Id, String>) -> Vec<Deployed> {
    let lattice = replica.lattice();
    let ordered = replica.ordered();
    ordered
        .deployed
        .iter()
        .map(|(id, dot)| {
            let exp = lattice.experience(&dot.exp);
            let code_bytes =
                exp.and_then(|e| e.ops().get(dot.op as usize))
                    .map_or(0, |op| match op {
                        Op::Deploy { code, .. } => code.len(),
                        _ => 0,
                    });
            let keys = ordered.kv.get(id).map_or(0, |kv| kv.len());
            Deployed {
                id: *id,
                name: names.get(id).cloned(),
                by: exp.map_or(NodeId([0; 32]), |e| e.author()),
                experience: dot.exp,
                code_bytes,
                keys,
            }
        })
        .collect()
}

/// The contract `name` names: a local name, or a hex prefix (4 digits or more) of exactly one
/// deployed contract's id.
pub fn resolve(replica: &Replica, names: &BTreeMap<Id, String>, name: &str) -> Result<Id, String> {
    if let Some((id, _)) = names.iter().find(|(_, n)| n.as_str() == name) {
        return Ok(*id);
    }
    let hex = name.to_ascii_lowercase();
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let found: Vec<Id> = replica
            .ordered()
            .deployed
            .keys()
            .filter(|id| id.to_hex().starts_with(&hex))
            .copied()
            .collect();
        match found.as_slice() {
            [one] => return Ok(*one),
            [] => {}
            _ => {
                return Err(format!(
                    "{name:?} is a prefix of {} contract ids: give more digits",
                    found.len()
                ));
            }
        }
    }
    Err(format!(
        "no contract named {name:?}: `lcloud contract list` shows the deployed contracts and their names"
    ))
}

/// The state of contract `id` (`None`: not deployed), or the value under `key` in it.
pub fn state(
    ordered: &lcloud_core::fold::OrderedState,
    id: &Id,
    key: Option<&str>,
) -> Option<Value> {
    if !ordered.deployed.contains_key(id) {
        return None;
    }
    let kv = ordered.kv.get(id);
    Some(match key {
        None => Value::Map(
            kv.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                .collect(),
        ),
        Some(k) => kv
            .and_then(|kv| kv.get(k))
            .map_or(Value::Null, |v| Value::Str(v.clone())),
    })
}

/// Who set `key` of contract `id` to its value and what it held before (oldest first), as
/// the API and `lcloud contract writes --json` print it.
pub fn writes_json(
    replica: &Replica,
    id: &Id,
    key: &str,
    writes: &lcloud_core::KeyWrites,
) -> serde_json::Value {
    let changes: Vec<serde_json::Value> = writes
        .changes
        .iter()
        .map(|w| {
            let exp = replica.lattice().experience(&w.dot.exp);
            let function = match exp.and_then(|e| e.ops().get(w.dot.op as usize)) {
                Some(Op::Deploy { .. }) => Some("init".to_owned()),
                Some(Op::Call {
                    args: Value::Map(m),
                    ..
                }) => match m.get("function") {
                    Some(Value::Str(f)) => Some(f.clone()),
                    _ => None,
                },
                _ => None,
            };
            serde_json::json!({
                "experience": w.dot.exp.to_hex(),
                "op": w.dot.op,
                "author": exp.map(|e| e.author().to_hex()),
                "seq": exp.map(|e| e.seq()),
                "function": function,
                "value": w.value,
            })
        })
        .collect();
    serde_json::json!({
        "contract": id.to_hex(),
        "key": key,
        "value": writes.value,
        "changes": changes,
        "complete": writes.complete,
    })
}

/// What a contract call or deploy did, as folded now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The contract.
    pub contract: Id,
    /// Why it was rejected, if it was.
    pub rejected: Option<String>,
}

impl Outcome {
    /// The JSON the API and `--json` print.
    pub fn to_json(&self, id: &Id, seq: u64, root: &Id) -> serde_json::Value {
        serde_json::json!({
            "id": id.to_hex(),
            "seq": seq,
            "contract": self.contract.to_hex(),
            "accepted": self.rejected.is_none(),
            "reason": self.rejected,
            "root": root.to_hex(),
        })
    }
}

/// The outcome of op 0 of experience `exp`, a call to or a deploy of `contract`.
pub fn outcome(replica: &Replica, exp: &Id, contract: Id) -> Outcome {
    Outcome {
        contract,
        rejected: replica.rejection(exp, 0).map(|r| r.reason),
    }
}

/// The op a call writes: `{"function": F, "args": ARGS}` to `contract`.
pub fn call_op(contract: Id, function: &str, args: Value) -> Op {
    let mut m = BTreeMap::new();
    m.insert("function".to_owned(), Value::Str(function.to_owned()));
    m.insert("args".to_owned(), args);
    Op::Call {
        morphism: contract,
        args: Value::Map(m),
    }
}

/// The op that deploys `code` with `init`, and the contract id it gives.
pub fn deploy_op(code: Vec<u8>, init: Value) -> (Id, Op) {
    let rule = lcloud_contracts::meter::FUEL_RULE;
    let id = lcloud_core::contract_id(rule, &code, &init);
    (id, Op::Deploy { rule, code, init })
}

/// Checks a local name for a contract.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "bad contract name {name:?}: 1 to 64 ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// A rejection as a line for people: `rejected: REASON` (a contract's own `reject` already
/// reads so; traps and fuel are prefixed).
pub fn rejection_text(reason: &str) -> String {
    if reason.starts_with("rejected: ") {
        reason.to_owned()
    } else {
        format!("rejected: {reason}")
    }
}
