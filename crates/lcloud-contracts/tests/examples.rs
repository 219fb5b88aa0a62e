//! The example contracts (contracts/, built from source for wasm32-unknown-unknown): deployed
//! and called through replicas, the bank partition story, first-come registration, and the law
//! that any delivery order of the same calls gives the same state root.

mod common;

use common::{call, deploy, deploy_with, json, key, node, replica};
use lcloud_core::{Experience, Id, Op, Replica, Value, Verified, validate};
use proptest::prelude::*;
use std::sync::Arc;

fn genesis() -> Verified<Experience> {
    common::genesis("contracts")
}

/// The contract's state as a map of text values.
fn state(r: &Replica, contract: &Id) -> std::collections::BTreeMap<String, String> {
    match r.ordered().kv.get(contract) {
        Some(kv) => kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => panic!("no state for the contract"),
    }
}

/// Why the op `op` of experience `exp` was rejected, if it was.
fn rejection(r: &Replica, exp: &Experience, op: u32) -> Option<String> {
    r.state()
        .ordered
        .rejections
        .iter()
        .find(|(dot, _)| dot.exp == exp.id() && dot.op == op)
        .map(|(_, rej)| rej.reason.clone())
}

#[test]
fn the_examples_deploy_and_every_function_is_metered() {
    for (name, code) in lcloud_examples::ALL {
        let g = genesis();
        let mut r = replica(&g);
        let init = match *name {
            "schema" => json(PEOPLE),
            _ => Value::map(),
        };
        let (id, op) = deploy_with(code, init);
        let e = r.write(&key(0), vec![op]).unwrap();
        assert_eq!(rejection(&r, &e, 0), None, "{name} was refused");
        assert!(r.state().ordered.deployed.contains_key(&id), "{name}");
    }
}

#[test]
fn partitioned_spends_of_one_balance_keep_exactly_those_that_fit_in_canonical_order() {
    let g = genesis();
    let (bank, op) = deploy(lcloud_examples::BANK);
    let mut a = replica(&g);
    a.write(&key(0), vec![op]).unwrap();
    a.write(
        &key(0),
        vec![call(bank, "mint", r#"{"to":"shared","amount":100}"#)],
    )
    .unwrap();
    let mut b = replica(&g);
    b.merge(&a);
    assert_eq!(state(&b, &bank)["balance/shared"], "100");
    // The partition: each side spends most of the one balance, and sees it accepted.
    let spend_a = a
        .write(
            &key(0),
            vec![call(
                bank,
                "transfer",
                r#"{"from":"shared","to":"alice","amount":70}"#,
            )],
        )
        .unwrap();
    let spend_b = b
        .write(
            &key(1),
            vec![call(
                bank,
                "transfer",
                r#"{"from":"shared","to":"bob","amount":60}"#,
            )],
        )
        .unwrap();
    assert_eq!(rejection(&a, &spend_a, 0), None);
    assert_eq!(rejection(&b, &spend_b, 0), None);
    assert_eq!(state(&a, &bank)["balance/shared"], "30");
    assert_eq!(state(&b, &bank)["balance/shared"], "40");
    // The heal.
    let (a0, b0) = (a.clone(), b.clone());
    a.merge(&b0);
    b.merge(&a0);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.state().ordered, b.state().ordered);
    let order = a.canonical_order();
    let pos = |e: &Experience| {
        order
            .iter()
            .position(|i| a.lattice().get(*i).id() == e.id())
    };
    let (first, second) = if pos(&spend_a) < pos(&spend_b) {
        (&spend_a, &spend_b)
    } else {
        (&spend_b, &spend_a)
    };
    assert_eq!(rejection(&a, first, 0), None, "the first spend fits");
    let why = rejection(&a, second, 0).expect("the second spend does not fit");
    assert!(
        why.starts_with("rejected: insufficient funds: shared holds"),
        "{why}"
    );
    let s = state(&a, &bank);
    let total: i64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("balance/"))
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 100, "{s:?}");
    assert!(s.values().all(|v| !v.starts_with('-')), "{s:?}");
}

#[test]
fn a_name_belongs_to_the_first_claim_in_canonical_order() {
    let g = genesis();
    let (reg, op) = deploy(lcloud_examples::REGISTRY);
    let mut a = replica(&g);
    a.write(&key(0), vec![op]).unwrap();
    let mut b = replica(&g);
    b.merge(&a);
    let ca = a
        .write(&key(0), vec![call(reg, "claim", r#"{"name":"ada"}"#)])
        .unwrap();
    let cb = b
        .write(&key(1), vec![call(reg, "claim", r#"{"name":"ada"}"#)])
        .unwrap();
    let b0 = b.clone();
    a.merge(&b0);
    b.merge(&a);
    assert_eq!(a.root(), b.root());
    let owner = state(&a, &reg)["owner/ada"].clone();
    let (winner, loser) = if owner == node(0).to_hex() {
        (&ca, &cb)
    } else {
        (&cb, &ca)
    };
    assert_eq!(rejection(&a, winner, 0), None);
    let why = rejection(&a, loser, 0).unwrap();
    assert!(why.starts_with("rejected: ada is taken by"), "{why}");
    // Only the owner may release it.
    let loser_key = if winner.id() == ca.id() {
        key(1)
    } else {
        key(0)
    };
    let e = a
        .write(&loser_key, vec![call(reg, "release", r#"{"name":"ada"}"#)])
        .unwrap();
    assert!(rejection(&a, &e, 0).unwrap().contains("belongs to"));
}

#[test]
fn the_same_history_gives_the_same_root_fresh_cached_or_reloaded() {
    let g = genesis();
    let (bank, op) = deploy(lcloud_examples::BANK);
    let mut a = replica(&g);
    let mut written = vec![a.write(&key(0), vec![op]).unwrap()];
    written.push(
        a.write(
            &key(0),
            vec![call(bank, "mint", r#"{"to":"x","amount":5}"#)],
        )
        .unwrap(),
    );
    for i in 0..20 {
        let amount = 1 + i % 3;
        written.push(
            a.write(
                &key(0),
                vec![call(
                    bank,
                    "transfer",
                    &format!(r#"{{"from":"x","to":"y{i}","amount":{amount}}}"#),
                )],
            )
            .unwrap(),
        );
    }
    // A fresh registry (nothing compiled yet), fed the bytes through validation.
    let mut fresh = replica(&g);
    for e in &written {
        fresh
            .insert(validate(&e.to_bytes(), &g.id()).unwrap())
            .unwrap();
    }
    assert_eq!(fresh.root(), a.root());
    assert_eq!(fresh.state().ordered, a.state().ordered);
    // What the store keeps of the order-sensitive fold reads back the same.
    let ordered = a.state().ordered;
    assert!(!ordered.deployed.is_empty());
    assert_eq!(
        lcloud_core::OrderedState::from_bytes(&ordered.to_bytes()).unwrap(),
        ordered
    );
    // Without a contract runtime the same history folds to another root: the runtime is part
    // of the fold, and every node of a cloud must have it.
    let mut bare = Replica::new(g.clone()).unwrap();
    for e in &written {
        bare.insert(validate(&e.to_bytes(), &g.id()).unwrap())
            .unwrap();
    }
    assert_ne!(bare.root(), a.root());
}

/// The `schema` contract's deploy arguments for the tests: people with a name and an age.
const PEOPLE: &str = r#"{"path": "/people", "rules": {
    "type": "object",
    "required": ["name"],
    "additionalProperties": false,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 32},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["admin", "ops"]}}
    }
}}"#;

fn path(p: &str) -> lcloud_core::Path {
    lcloud_core::Path::parse(p).unwrap()
}

#[test]
fn a_schema_guards_its_path_and_writes_there_only_entries_that_keep_its_rules() {
    let g = genesis();
    let (people, op) = deploy_with(lcloud_examples::SCHEMA, json(PEOPLE));
    let mut a = replica(&g);
    // Written before the guard: masked once the guard is deployed.
    a.write(
        &key(0),
        vec![Op::Set {
            path: path("/people/old"),
            value: json(r#"{"name":"from before"}"#),
        }],
    )
    .unwrap();
    let deployed = a.write(&key(0), vec![op]).unwrap();
    assert_eq!(rejection(&a, &deployed, 0), None);
    assert_eq!(a.state().get(&path("/people")), None);
    let put = |r: &mut Replica, n: u8, k: &str, v: &str| {
        let args = format!(r#"{{"key":"{k}","value":{v}}}"#);
        r.write(&key(n), vec![call(people, "put", &args)]).unwrap()
    };
    let ada = put(
        &mut a,
        0,
        "ada",
        r#"{"name":"Ada","age":36,"tags":["ops"]}"#,
    );
    assert_eq!(rejection(&a, &ada, 0), None);
    for (value, why) in [
        (
            r#"{"name":"Old","age":200}"#,
            "/age: 200 is more than the maximum 150",
        ),
        (
            r#"{"name":"Neg","age":-1}"#,
            "/age: -1 is less than the minimum 0",
        ),
        (r#"{"age":3}"#, r#"/: "name" is required"#),
        (
            r#"{"name":"X","mood":"ok"}"#,
            r#"/: "mood" is not a property"#,
        ),
        (
            r#"{"name":"X","age":"3"}"#,
            "/age: a string, not an integer",
        ),
        (
            r#"{"name":"X","age":3.5}"#,
            "/age: a number, not an integer",
        ),
        (
            r#"{"name":"X","tags":["root"]}"#,
            "/tags/0: not one of the values",
        ),
        (r#"{"name":""}"#, "/name: 0 characters, fewer"),
        (r#""just text""#, "/: a string, not an object"),
    ] {
        let e = put(&mut a, 0, "bad", value);
        let reason = rejection(&a, &e, 0).unwrap_or_else(|| panic!("{value} was accepted"));
        assert!(reason.contains(why), "{value}: {reason}");
    }
    // A node that ignores the guard writes under it directly: the fold masks it everywhere.
    a.write(
        &key(1),
        vec![Op::Set {
            path: path("/people/mallory"),
            value: json(r#"{"name":"M","age":-5}"#),
        }],
    )
    .unwrap();
    assert_eq!(
        a.state().get(&path("/people")),
        Some(json(r#"{"ada":{"age":36,"name":"Ada","tags":["ops"]}}"#))
    );
    assert!(a.document().to_json()["people"].get("mallory").is_none());
    // An honest node refuses such a write before signing it.
    let refused = a.check_writes(
        &node(0),
        &[&[Op::Incr {
            path: path("/people/ada/age"),
            by: 1,
        }]],
    );
    assert!(
        matches!(&refused[0], Err(lcloud_core::WriteRefused::Guarded { contract, .. }) if *contract == people),
        "{refused:?}"
    );
    // Two partitioned puts of one key: the later in canonical order is the entry.
    let mut b = replica(&g);
    b.merge(&a);
    let on_a = put(&mut a, 0, "grace", r#"{"name":"Grace A"}"#);
    let on_b = put(&mut b, 1, "grace", r#"{"name":"Grace B"}"#);
    let (a0, b0) = (a.clone(), b.clone());
    a.merge(&b0);
    b.merge(&a0);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.document(), b.document());
    let last = if a.lattice().order_key(a.lattice().idx(&on_a.id()).unwrap())
        > a.lattice().order_key(a.lattice().idx(&on_b.id()).unwrap())
    {
        "Grace A"
    } else {
        "Grace B"
    };
    assert_eq!(
        a.state().get(&path("/people/grace/name")),
        Some(Value::Str(last.into()))
    );
    // Remove, time travel and views see the guarded subtree as it was.
    let gone = a
        .write(&key(0), vec![call(people, "remove", r#"{"key":"ada"}"#)])
        .unwrap();
    assert_eq!(rejection(&a, &gone, 0), None);
    assert_eq!(a.state().get(&path("/people/ada")), None);
    let before = a.perspective(&gone.id()).unwrap();
    assert_eq!(before.get(&path("/people/ada/age")), Some(Value::Int(36)));
    let without_b = a.without(&node(1)).unwrap();
    assert_eq!(
        without_b.get(&path("/people/grace/name")),
        Some(Value::Str("Grace A".into()))
    );
    // A second guard over the path, or below it, is refused at deploy.
    let (_, below) = deploy_with(
        lcloud_examples::SCHEMA,
        json(r#"{"path": "/people/ada", "rules": {}}"#),
    );
    let e = a.write(&key(0), vec![below]).unwrap();
    assert!(
        rejection(&a, &e, 0)
            .unwrap()
            .contains("/people is guarded by contract")
    );
    let (_, bad_rules) = deploy_with(
        lcloud_examples::SCHEMA,
        json(r#"{"path": "/pets", "rules": {"typo": 1}}"#),
    );
    let e = a.write(&key(0), vec![bad_rules]).unwrap();
    assert!(rejection(&a, &e, 0).unwrap().contains("unknown keyword"));
    // The fold reads back from storage and from scratch the same.
    let ordered = a.state().ordered;
    assert!(!ordered.guarded.is_empty());
    assert_eq!(
        lcloud_core::OrderedState::from_bytes(&ordered.to_bytes()).unwrap(),
        ordered
    );
    assert_eq!(a.refold().root(), a.root());
    assert_eq!(a.refold().document(), a.document());
}

#[derive(Clone, Debug)]
enum Action {
    Transfer {
        node: u8,
        from: u8,
        to: u8,
        amount: u8,
    },
    /// A registry claim: reads the reserved names in the document its author saw.
    Claim {
        node: u8,
        name: u8,
    },
    /// A document write the claims read.
    Reserve {
        node: u8,
        name: u8,
    },
    /// A `schema` put: accepted only with an age within the rules.
    Put {
        node: u8,
        name: u8,
        age: i16,
    },
    /// A direct write under the guarded path (a node that ignores the guard): masked.
    Direct {
        node: u8,
        name: u8,
    },
    Sync {
        from: u8,
        to: u8,
    },
}

const NODES: u8 = 3;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..NODES, 0..4u8, 0..4u8, 1..40u8)
            .prop_map(|(node, from, to, amount)| Action::Transfer { node, from, to, amount }),
        1 => (0..NODES, 0..3u8).prop_map(|(node, name)| Action::Claim { node, name }),
        1 => (0..NODES, 0..3u8).prop_map(|(node, name)| Action::Reserve { node, name }),
        2 => (0..NODES, 0..3u8, -20..170i16)
            .prop_map(|(node, name, age)| Action::Put { node, name, age }),
        1 => (0..NODES, 0..3u8).prop_map(|(node, name)| Action::Direct { node, name }),
        1 => (0..NODES, 0..NODES).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Any delivery order (with duplicates) of the same deploys, calls (transfers, claims
    /// that read the document, schema puts that write a guarded path) and document writes
    /// (some under the guarded path) gives the same root, the same rejections and the same
    /// document; no account ever goes below zero and every entry under the guarded path keeps
    /// the rules; the refold agrees.
    #[test]
    fn any_delivery_order_of_contract_calls_gives_the_same_root(
        script in prop::collection::vec(action(), 1..30),
        seed in any::<u64>(),
    ) {
        let g = genesis();
        let (bank, op) = deploy(lcloud_examples::BANK);
        let (reg, reg_op) = deploy(lcloud_examples::REGISTRY);
        let (people, people_op) = deploy_with(lcloud_examples::SCHEMA, json(PEOPLE));
        let mut replicas: Vec<Replica> = (0..NODES).map(|_| replica(&g)).collect();
        let deploys = vec![op, reg_op, people_op];
        let mut written = vec![Arc::unwrap_or_clone(replicas[0].write(&key(0), deploys).unwrap()).into_inner()];
        let mint = replicas[0].write(&key(0), vec![call(bank, "mint", r#"{"to":"a0","amount":50}"#)]);
        written.push(Arc::unwrap_or_clone(mint.unwrap()).into_inner());
        for a in &script {
            match a {
                Action::Transfer { node, from, to, amount } => {
                    let args = format!(r#"{{"from":"a{from}","to":"a{to}","amount":{amount}}}"#);
                    let e = replicas[*node as usize]
                        .write(&key(*node), vec![call(bank, "transfer", &args)])
                        .unwrap();
                    written.push(Arc::unwrap_or_clone(e).into_inner());
                }
                Action::Claim { node, name } => {
                    let args = format!(r#"{{"name":"n{name}"}}"#);
                    let e = replicas[*node as usize]
                        .write(&key(*node), vec![call(reg, "claim", &args)])
                        .unwrap();
                    written.push(Arc::unwrap_or_clone(e).into_inner());
                }
                Action::Reserve { node, name } => {
                    let op = Op::Add {
                        path: lcloud_core::Path::parse("/registry/reserved").unwrap(),
                        value: Value::Str(format!("n{name}")),
                    };
                    let e = replicas[*node as usize].write(&key(*node), vec![op]).unwrap();
                    written.push(Arc::unwrap_or_clone(e).into_inner());
                }
                Action::Put { node, name, age } => {
                        let args = format!(r#"{{"key":"p{name}","value":{{"name":"n{node}","age":{age}}}}}"#);
                        let e = replicas[*node as usize]
                            .write(&key(*node), vec![call(people, "put", &args)])
                            .unwrap();
                        written.push(Arc::unwrap_or_clone(e).into_inner());
                }
                Action::Direct { node, name } => {
                    let op = Op::Set {
                        path: path(&format!("/people/p{name}/age")),
                        value: Value::Int(-1),
                    };
                    let e = replicas[*node as usize].write(&key(*node), vec![op]).unwrap();
                    written.push(Arc::unwrap_or_clone(e).into_inner());
                }
                Action::Sync { from, to } => {
                    let src = replicas[*from as usize].clone();
                    replicas[*to as usize].merge(&src);
                }
            }
        }
        let mut all = replicas[0].clone();
        for r in &replicas[1..] {
            all.merge(r);
        }
        let mut order: Vec<&Experience> = written.iter().collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let dups: Vec<&Experience> = order.iter().step_by(3).copied().collect();
        order.extend(dups);
        let mut r = replica(&g);
        for e in order {
            r.insert(validate(&e.to_bytes(), &g.id()).unwrap()).unwrap();
        }
        prop_assert_eq!(r.lattice().parked_len(), 0);
        prop_assert_eq!(r.root(), all.root());
        prop_assert_eq!(&r.state().ordered, &all.state().ordered);
        prop_assert_eq!(r.refold().root(), r.root());
        prop_assert_eq!(r.document(), all.document());
        if let Some(Value::Map(entries)) = r.state().get(&path("/people")) {
            for (k, v) in entries {
                let Value::Map(v) = v else { panic!("{k}: {v:?}") };
                let age = v.get("age");
                prop_assert!(matches!(age, Some(Value::Int(0..=150))), "{}: {:?}", k, age);
            }
        }
        let s = state(&r, &bank);
        let total: i64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("balance/"))
            .map(|(_, v)| v.parse::<i64>().unwrap())
            .sum();
        prop_assert_eq!(total, 50);
        prop_assert!(s.values().all(|v| !v.starts_with('-')));
    }
}

#[test]
fn a_claim_respects_the_reserved_names_its_author_saw_in_the_document() {
    let g = genesis();
    let (reg, op) = deploy(lcloud_examples::REGISTRY);
    let mut a = replica(&g);
    a.write(&key(0), vec![op]).unwrap();
    let reserve = |name: &str| Op::Add {
        path: lcloud_core::Path::parse("/registry/reserved").unwrap(),
        value: Value::Str(name.into()),
    };
    a.write(&key(0), vec![reserve("root")]).unwrap();
    let mut b = replica(&g);
    b.merge(&a);
    // A reserves "admin"; B, not having seen it, claims it: accepted, on every node.
    a.write(&key(0), vec![reserve("admin")]).unwrap();
    let admin = b
        .write(&key(1), vec![call(reg, "claim", r#"{"name":"admin"}"#)])
        .unwrap();
    let root = b
        .write(&key(1), vec![call(reg, "claim", r#"{"name":"root"}"#)])
        .unwrap();
    let (a0, b0) = (a.clone(), b.clone());
    a.merge(&b0);
    b.merge(&a0);
    assert_eq!(a.root(), b.root());
    assert_eq!(rejection(&a, &admin, 0), None);
    assert_eq!(
        rejection(&a, &root, 0).as_deref(),
        Some("rejected: root is reserved")
    );
    // Now that A's reservation is in B's past, a new claim of it is rejected.
    let again = b
        .write(&key(2), vec![call(reg, "release", r#"{"name":"admin"}"#)])
        .unwrap();
    assert!(rejection(&b, &again, 0).unwrap().contains("belongs to"));
    let late = b
        .write(&key(2), vec![call(reg, "claim", r#"{"name":"admin"}"#)])
        .unwrap();
    assert_eq!(
        rejection(&b, &late, 0).as_deref(),
        Some("rejected: admin is reserved")
    );
}

/// `bank.transfer` reads its arguments field by field (`arg`): a missing or malformed field
/// rejects the call naming it, and a number sent as text is read as its digits.
#[test]
fn arguments_read_field_by_field_are_checked_by_name() {
    let g = genesis();
    let (bank, op) = deploy(lcloud_examples::BANK);
    let mut a = replica(&g);
    a.write(&key(0), vec![op]).unwrap();
    a.write(
        &key(0),
        vec![call(bank, "mint", r#"{"to":"x","amount":9}"#)],
    )
    .unwrap();
    for (args, why) in [
        (
            r#"{"from":"x","amount":1}"#,
            r#"rejected: the arguments need "to""#,
        ),
        (
            r#"{"from":"x","to":"y","amount":"lots"}"#,
            r#"rejected: "amount" must be an integer"#,
        ),
        (r#"[1,2]"#, r#"rejected: the arguments need "from""#),
    ] {
        let e = a
            .write(&key(0), vec![call(bank, "transfer", args)])
            .unwrap();
        assert_eq!(rejection(&a, &e, 0).as_deref(), Some(why), "{args}");
    }
    let e = a
        .write(
            &key(0),
            vec![call(
                bank,
                "transfer",
                r#"{"from":"x","to":"y","amount":"4"}"#,
            )],
        )
        .unwrap();
    assert_eq!(rejection(&a, &e, 0), None);
    assert_eq!(state(&a, &bank)["balance/y"], "4");
}
