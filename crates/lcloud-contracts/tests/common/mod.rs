//! What the example-contract tests share: keys, replicas with the contract runtime, and the
//! deploy and call ops they write.
#![allow(dead_code)]

use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, Genesis, Id, NodeId, Op, Replica, Value, Verified, contract_id};

pub fn key(n: u8) -> SigningKey {
    SigningKey::from([n + 1; 32])
}

pub fn node(n: u8) -> NodeId {
    NodeId(key(n).verification_key().to_bytes())
}

pub fn json(s: &str) -> Value {
    Value::from_json(&serde_json::from_str(s).unwrap()).unwrap()
}

/// An open cloud named `name`, made by `key(0)`.
pub fn genesis(name: &str) -> Verified<Experience> {
    Experience::create_genesis(&key(0), Genesis::open(name))
}

pub fn replica(g: &Verified<Experience>) -> Replica {
    Replica::with_registry(g.clone(), lcloud_contracts::registry()).unwrap()
}

pub fn deploy(code: &[u8]) -> (Id, Op) {
    deploy_with(code, Value::map())
}

pub fn deploy_with(code: &[u8], init: Value) -> (Id, Op) {
    let id = contract_id(lcloud_contracts::meter::FUEL_RULE, code, &init);
    let op = Op::Deploy {
        rule: lcloud_contracts::meter::FUEL_RULE,
        code: code.to_vec(),
        init,
    };
    (id, op)
}

pub fn call(contract: Id, function: &str, args: &str) -> Op {
    Op::Call {
        morphism: contract,
        args: json(&format!(r#"{{"function":"{function}","args":{args}}}"#)),
    }
}
