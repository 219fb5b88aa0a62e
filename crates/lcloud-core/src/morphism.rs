//! Morphisms: pure functions `(state, op, context) -> state | rejection`, named by a stable
//! content id. The document CRDT is the built-in commutative morphism (see [`crate::doc`]);
//! `call` ops go to order-sensitive morphisms such as the built-in [`Ledger`], and WASM
//! contracts plug in behind the same trait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::id::{Id, NodeId};
use crate::value::Value;

/// What a morphism may know about the op it applies: nothing from the outside world.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The experience's author.
    pub author: NodeId,
    /// The experience's seq.
    pub seq: u64,
    /// The experience id.
    pub exp: Id,
    /// The op's index in the experience.
    pub op: u32,
    /// The fuel limit from the signed header, if any.
    pub fuel: Option<u64>,
    /// The experience's vector clock: for each author it has seen, the highest seq seen.
    pub clock: Vec<(NodeId, u64)>,
    /// The document as the experience's author saw it (the fold of its causal past, within
    /// the view being folded), given only to programs that read the document.
    pub doc: Option<crate::doc::Doc>,
    /// The guarded paths and what their contracts wrote there, as the ordered fold has them
    /// just before this op (a contract reading a guarded path reads this).
    pub guarded: crate::guarded::Guarded,
}

/// What an accepted deploy or call of a contract leaves behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// The contract's new key-value state.
    pub state: Kv,
    /// Its writes to the document, all under paths it guards, in order.
    pub writes: Vec<crate::guarded::DocWrite>,
    /// The paths it guards (declared by `init` only).
    pub guards: Vec<crate::op::Path>,
}

impl Effects {
    /// A new state and nothing else.
    pub fn state(state: Kv) -> Effects {
        Effects {
            state,
            ..Effects::default()
        }
    }
}

/// A deterministic refusal: the same op is refused for the same reason on every node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// A pure state transition.
pub trait Morphism: Send + Sync {
    /// The stable content id that names this morphism.
    fn id(&self) -> Id;
    /// A human name.
    fn name(&self) -> &str;
    /// The state before any call.
    fn initial(&self) -> Value {
        Value::map()
    }
    /// Applies `args` to `state`, or refuses. Must be a pure function of its inputs.
    fn apply(&self, state: &Value, args: &Value, ctx: &CallContext) -> Result<Value, Rejection>;
}

/// A deployed contract's state: text keys to text values, in a persistent map (a clone is
/// O(1), and a call's writes copy only the paths to the keys they change).
pub type Kv = imbl::OrdMap<String, String>;

/// Deployed code, as the contract runtime runs it. Both functions must be pure functions of
/// their inputs: every node computes the same state or the same rejection.
pub trait Program: Send + Sync {
    /// Whether calls read the document (then [`CallContext::doc`] is filled in).
    fn reads_document(&self) -> bool {
        false
    }
    /// The state right after the deploy, with the deploy's `args`, the paths the contract
    /// guards and its first writes under them; or why it is refused.
    fn init(&self, args: &Value, ctx: &CallContext) -> Result<Effects, Rejection>;
    /// Applies a call (`args`: `{"function": NAME, "args": …}`) to `state`, or refuses. A
    /// call declares no guards.
    fn call(&self, state: &Kv, args: &Value, ctx: &CallContext) -> Result<Effects, Rejection>;
}

/// Turns deployed code into a [`Program`]: the contract runtime, which the core knows only
/// through this trait. Loading must be a pure function of its inputs: every node refuses the
/// same code for the same reason.
pub trait Loader: Send + Sync {
    /// Checks and compiles `code`, metered under fuel rule `rule`, as contract `id`.
    fn load(&self, id: Id, rule: u32, code: &[u8]) -> Result<Arc<dyn Program>, Rejection>;
}

/// A contract's id: BLAKE3 over a domain tag, the fuel rule, the code and the canonical
/// bytes of the `init` arguments (so one schema contract can be deployed with two rule sets).
pub fn contract_id(rule: u32, code: &[u8], init: &Value) -> Id {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud/contract/v1\0");
    h.update(&rule.to_le_bytes());
    h.update(&(code.len() as u64).to_le_bytes());
    h.update(code);
    let mut args = Vec::new();
    init.encode_into(&mut args);
    h.update(&args);
    Id(*h.finalize().as_bytes())
}

/// The morphisms a replica knows, by id. Every node must hold the same set for the same
/// cloud (built-ins are always present; contracts are named by experiences).
#[derive(Clone, Default)]
pub struct Registry {
    by_id: BTreeMap<Id, Arc<dyn Morphism>>,
    loader: Option<Arc<dyn Loader>>,
    /// Contracts compiled so far, by id: a cache only (loading is pure), shared by clones.
    loaded: Arc<Mutex<BTreeMap<Id, Arc<dyn Program>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_id.values().map(|m| m.name().to_owned()))
            .finish()
    }
}

impl Registry {
    /// The built-in morphisms.
    pub fn builtin() -> Registry {
        let mut r = Registry::default();
        r.register(Arc::new(Ledger));
        r
    }

    /// Adds a morphism.
    pub fn register(&mut self, m: Arc<dyn Morphism>) {
        self.by_id.insert(m.id(), m);
    }

    /// Looks up a built-in.
    pub fn get(&self, id: &Id) -> Option<&Arc<dyn Morphism>> {
        self.by_id.get(id)
    }

    /// The registry with a contract runtime: deploys are loaded by `loader`. Without one,
    /// every deploy is refused, so every node of a cloud must have the same.
    pub fn with_loader(mut self, loader: Arc<dyn Loader>) -> Registry {
        self.loader = Some(loader);
        self
    }

    /// Loads contract `id` from its code (from the cache if it was loaded before).
    pub fn load(&self, id: Id, rule: u32, code: &[u8]) -> Result<Arc<dyn Program>, Rejection> {
        if let Some(m) = self.cached(&id) {
            return Ok(m);
        }
        let Some(loader) = &self.loader else {
            return Err(Rejection(
                "this node has no contract runtime: contracts cannot be deployed".into(),
            ));
        };
        let m = loader.load(id, rule, code)?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, m.clone());
        Ok(m)
    }

    /// Contract `id`, if it was loaded before.
    pub fn cached(&self, id: &Id) -> Option<Arc<dyn Program>> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// A content id for a built-in morphism: BLAKE3 of its versioned name.
pub fn builtin_id(name: &str) -> Id {
    Id::hash(format!("lcloud/builtin/{name}").as_bytes())
}

/// The content id of the built-in document CRDT (the commutative morphism behind `set`,
/// `del`, `incr`, `add` and `remove`).
pub fn document_morphism_id() -> Id {
    builtin_id("document/v1")
}

/// An order-sensitive built-in: accounts with balances that may not go negative.
///
/// Args: `{"op": "deposit" | "withdraw", "account": A, "amount": N}` or
/// `{"op": "transfer", "from": A, "to": B, "amount": N}`. A withdrawal or transfer beyond
/// the balance is rejected as an overdraft, which is why the order of concurrent calls
/// matters and why this morphism folds in canonical order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ledger;

impl Ledger {
    /// The ledger's content id.
    pub fn id() -> Id {
        builtin_id("ledger/v1")
    }
}

fn field<'a>(args: &'a Value, key: &str) -> Result<&'a Value, Rejection> {
    match args {
        Value::Map(m) => m
            .get(key)
            .ok_or_else(|| Rejection(format!("missing argument {key:?}"))),
        _ => Err(Rejection("arguments must be a map".into())),
    }
}

fn str_field<'a>(args: &'a Value, key: &str) -> Result<&'a str, Rejection> {
    match field(args, key)? {
        Value::Str(s) => Ok(s),
        other => Err(Rejection(format!(
            "{key:?} must be a string, not {}",
            other.kind()
        ))),
    }
}

fn amount(args: &Value) -> Result<i64, Rejection> {
    match field(args, "amount")? {
        Value::Int(n) if *n > 0 => Ok(*n),
        _ => Err(Rejection("\"amount\" must be a positive integer".into())),
    }
}

impl Morphism for Ledger {
    fn id(&self) -> Id {
        Ledger::id()
    }
    fn name(&self) -> &str {
        "ledger/v1"
    }
    fn apply(&self, state: &Value, args: &Value, _: &CallContext) -> Result<Value, Rejection> {
        let Value::Map(accounts) = state else {
            return Err(Rejection("ledger state is not a map".into()));
        };
        let mut accounts = accounts.clone();
        let balance = |accounts: &BTreeMap<String, Value>, a: &str| match accounts.get(a) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        let n = amount(args)?;
        match str_field(args, "op")? {
            "deposit" => {
                let a = str_field(args, "account")?;
                let b = balance(&accounts, a)
                    .checked_add(n)
                    .ok_or_else(|| Rejection("balance overflow".into()))?;
                accounts.insert(a.to_owned(), Value::Int(b));
            }
            "withdraw" => {
                let a = str_field(args, "account")?;
                let b = balance(&accounts, a);
                if b < n {
                    return Err(Rejection(format!("overdraft: {a} has {b}, needs {n}")));
                }
                accounts.insert(a.to_owned(), Value::Int(b - n));
            }
            "transfer" => {
                let (from, to) = (str_field(args, "from")?, str_field(args, "to")?);
                let b = balance(&accounts, from);
                if b < n {
                    return Err(Rejection(format!("overdraft: {from} has {b}, needs {n}")));
                }
                accounts.insert(from.to_owned(), Value::Int(b - n));
                let t = balance(&accounts, to)
                    .checked_add(n)
                    .ok_or_else(|| Rejection("balance overflow".into()))?;
                accounts.insert(to.to_owned(), Value::Int(t));
            }
            other => return Err(Rejection(format!("unknown ledger op {other:?}"))),
        }
        Ok(Value::Map(accounts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext {
        CallContext {
            author: NodeId([0; 32]),
            seq: 1,
            exp: Id([0; 32]),
            op: 0,
            fuel: None,
            clock: Vec::new(),
            doc: None,
            guarded: Default::default(),
        }
    }

    fn args(json: &str) -> Value {
        Value::from_json(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn overdraft_is_rejected() {
        let l = Ledger;
        let s = l
            .apply(
                &l.initial(),
                &args(r#"{"op":"deposit","account":"a","amount":5}"#),
                &ctx(),
            )
            .unwrap();
        let err = l
            .apply(
                &s,
                &args(r#"{"op":"withdraw","account":"a","amount":6}"#),
                &ctx(),
            )
            .unwrap_err();
        assert!(err.0.contains("overdraft"));
        let s = l
            .apply(
                &s,
                &args(r#"{"op":"transfer","from":"a","to":"b","amount":5}"#),
                &ctx(),
            )
            .unwrap();
        assert_eq!(s, args(r#"{"a":0,"b":5}"#));
        assert!(
            l.apply(&s, &args(r#"{"op":"x","amount":1}"#), &ctx())
                .is_err()
        );
        assert!(
            l.apply(
                &s,
                &args(r#"{"op":"deposit","account":"a","amount":0}"#),
                &ctx()
            )
            .is_err()
        );
    }
}
