//! W9, contracts (λCLOUD only: neither Automerge nor Loro runs user code in its merge): the
//! `bank` example contract (contracts/bank, built from source) folded and stored durably,
//! beside the built-in `Ledger` morphism doing the same transfers and beside wasmi's own speed
//! measured in the same run.

use std::sync::Arc;
use std::time::Instant;

use ed25519_consensus::SigningKey;
use lcloud_contracts::{Contract, Runtime};
use lcloud_core::{
    CallContext, Experience, Genesis, Id, Ledger, NodeId, Op, Replica, Value, Verified, contract_id,
};
use lcloud_store::Store;
use serde_json::{Value as J, json};

const ACCOUNTS: usize = 1000;
/// Calls a late call sorts before in the rewind measurement.
const REWIND_CALLS: usize = 10_000;
/// Experiences per durable commit (the node's group commit holds up to 256 writes).
const GROUP: usize = 256;

fn value(j: J) -> Value {
    Value::from_json(&j).expect("a value")
}

fn transfer(bank: Id, i: usize) -> Op {
    Op::Call {
        morphism: bank,
        args: value(json!({"function": "transfer", "args": {
            "from": format!("a{}", i % ACCOUNTS), "to": format!("a{}", (i + 1) % ACCOUNTS), "amount": 1}})),
    }
}

fn ledger_transfer(i: usize) -> Op {
    Op::Call {
        morphism: Ledger::id(),
        args: value(json!({"op": "transfer",
            "from": format!("a{}", i % ACCOUNTS), "to": format!("a{}", (i + 1) % ACCOUNTS), "amount": 1})),
    }
}

/// A cloud with the bank deployed and every account funded, written by `key`: the genesis,
/// then the experiences; and the bank's id.
fn setup(key: &SigningKey) -> (Verified<Experience>, Vec<Arc<Verified<Experience>>>, Id) {
    let g = Experience::create_genesis(key, Genesis::open("w9"));
    let mut r = Replica::with_registry(g.clone(), lcloud_contracts::registry()).unwrap();
    let code = lcloud_examples::BANK.to_vec();
    let init = Value::map();
    let bank = contract_id(lcloud_contracts::meter::FUEL_RULE, &code, &init);
    let mut exps = vec![
        r.write(
            key,
            vec![Op::Deploy {
                rule: lcloud_contracts::meter::FUEL_RULE,
                code,
                init,
            }],
        )
        .unwrap(),
    ];
    let mints: Vec<Op> = (0..ACCOUNTS)
        .map(|a| Op::Call {
            morphism: bank,
            args: value(
                json!({"function": "mint", "args": {"to": format!("a{a}"), "amount": 1_000_000}}),
            ),
        })
        .collect();
    exps.push(r.write(key, mints).unwrap());
    let deposits: Vec<Op> = (0..ACCOUNTS)
        .map(|a| Op::Call {
            morphism: Ledger::id(),
            args: value(json!({"op": "deposit", "account": format!("a{a}"), "amount": 1_000_000})),
        })
        .collect();
    exps.push(r.write(key, deposits).unwrap());
    assert!(r.ordered().rejections.is_empty(), "the setup is accepted");
    (g, exps, bank)
}

fn fresh(g: &Verified<Experience>, setup: &[Arc<Verified<Experience>>]) -> Replica {
    let mut r = Replica::with_registry(g.clone(), lcloud_contracts::registry()).unwrap();
    for e in setup {
        r.insert(e.clone()).unwrap();
    }
    r
}

/// Inserts `exps` into `r` and returns calls per second.
fn fold_rate(r: &mut Replica, exps: &[Arc<Verified<Experience>>]) -> f64 {
    let t = Instant::now();
    for e in exps {
        r.insert(e.clone()).unwrap();
    }
    std::hint::black_box(r.root());
    exps.len() as f64 / t.elapsed().as_secs_f64()
}

/// wasmi's own speed here: WebAssembly instructions per second of a plain loop (7
/// instructions an iteration), no metering, no host calls.
fn wasmi_instructions_per_s() -> f64 {
    let wat = r#"(module (func (export "spin") (param $n i32) (local $i i32)
        (loop $l local.get $i i32.const 1 i32.add local.tee $i local.get $n i32.lt_u br_if $l)))"#;
    let engine = wasmi::Engine::default();
    let module = wasmi::Module::new(&engine, &wat::parse_str(wat).unwrap()[..]).unwrap();
    let mut store = wasmi::Store::new(&engine, ());
    let instance = wasmi::Linker::<()>::new(&engine)
        .instantiate_and_start(&mut store, &module)
        .unwrap();
    let spin = instance.get_typed_func::<i32, ()>(&store, "spin").unwrap();
    let n = 20_000_000;
    let t = Instant::now();
    spin.call(&mut store, n).unwrap();
    7.0 * f64::from(n) / t.elapsed().as_secs_f64()
}

/// The fuel one transfer uses: the least limit it passes with (by bisection).
fn fuel_of_transfer(contract: &Contract, state: &lcloud_core::Kv, bank: Id) -> u64 {
    let Op::Call { args, .. } = transfer(bank, 0) else {
        unreachable!()
    };
    let ctx = |fuel| CallContext {
        author: NodeId([1; 32]),
        seq: 1,
        exp: Id([0; 32]),
        op: 0,
        fuel: Some(fuel),
        clock: vec![(NodeId([1; 32]), 1)],
        doc: None,
        guarded: Default::default(),
    };
    use lcloud_core::Program;
    let (mut lo, mut hi) = (1u64, 10_000_000u64);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if Program::call(contract, state, &args, &ctx(mid)).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

pub fn run(calls: usize) -> J {
    let key = SigningKey::from([9u8; 32]);
    let (g, setup_exps, bank) = setup(&key);

    // Signed: each call is one experience, signed and folded as it is written.
    let mut signer = fresh(&g, &setup_exps);
    let t = Instant::now();
    let mut exps = Vec::with_capacity(calls);
    for i in 0..calls {
        exps.push(signer.write(&key, vec![transfer(bank, i)]).unwrap());
    }
    let signed_rate = calls as f64 / t.elapsed().as_secs_f64();
    assert!(signer.ordered().rejections.is_empty());

    // Folded only, from the signed experiences.
    let folded_rate = fold_rate(&mut fresh(&g, &setup_exps), &exps);

    // Folded and stored durably, GROUP experiences per commit.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path(), &g).unwrap();
    let mut r = Replica::with_registry(g.clone(), lcloud_contracts::registry()).unwrap();
    let outs: Vec<_> = setup_exps
        .iter()
        .map(|e| r.insert(e.clone()).unwrap())
        .collect();
    store.persist(&r, &outs.iter().collect::<Vec<_>>()).unwrap();
    let before = std::fs::metadata(dir.path().join("store.redb")).map_or(0, |m| m.len());
    let t = Instant::now();
    for chunk in exps.chunks(GROUP) {
        let outs: Vec<_> = chunk.iter().map(|e| r.insert(e.clone()).unwrap()).collect();
        store.persist(&r, &outs.iter().collect::<Vec<_>>()).unwrap();
    }
    let durable_rate = calls as f64 / t.elapsed().as_secs_f64();
    drop(store);
    let after = std::fs::metadata(dir.path().join("store.redb")).map_or(0, |m| m.len());
    let bytes_per_call = after.saturating_sub(before) as f64 / calls as f64;

    // The built-in ledger, the same transfers.
    let mut lsigner = fresh(&g, &setup_exps);
    let lexps: Vec<_> = (0..calls)
        .map(|i| lsigner.write(&key, vec![ledger_transfer(i)]).unwrap())
        .collect();
    let ledger_rate = fold_rate(&mut fresh(&g, &setup_exps), &lexps);

    // The runtime alone: the contract's transfer on the funded state, no fold, no store.
    let runtime = Runtime::new();
    let contract = Contract::deploy(&runtime, bank, lcloud_examples::BANK).unwrap();
    let state = signer.ordered().kv.get(&bank).cloned().unwrap();
    let fuel = fuel_of_transfer(&contract, &state, bank);
    let ctx = CallContext {
        author: NodeId([1; 32]),
        seq: 1,
        exp: Id([0; 32]),
        op: 0,
        fuel: None,
        clock: vec![(NodeId([1; 32]), 1)],
        doc: None,
        guarded: Default::default(),
    };
    let runs = calls.min(20_000);
    let t = Instant::now();
    for i in 0..runs {
        let Op::Call { args, .. } = transfer(bank, i) else {
            unreachable!()
        };
        use lcloud_core::Program;
        std::hint::black_box(Program::call(&contract, &state, &args, &ctx).unwrap());
    }
    let runtime_rate = runs as f64 / t.elapsed().as_secs_f64();
    let wasmi_ips = wasmi_instructions_per_s();

    // Rewind: a call by another node, concurrent with REWIND_CALLS applied calls, that sorts
    // before all but the first of them.
    let other = SigningKey::from([10u8; 32]);
    let mut late_writer = fresh(&g, &setup_exps);
    let late = late_writer.write(&other, vec![transfer(bank, 7)]).unwrap();
    let mut r = fresh(&g, &setup_exps);
    let n = REWIND_CALLS.min(exps.len());
    let t = Instant::now();
    for e in &exps[..n] {
        r.insert(e.clone()).unwrap();
    }
    let forward = t.elapsed().as_secs_f64();
    let t = Instant::now();
    r.insert(late).unwrap();
    std::hint::black_box(r.root());
    let rewind = t.elapsed().as_secs_f64();

    // Claims that read the document: the registry, with 100 reserved names in the document;
    // each claim reads the document as its author saw it.
    let (reg_code, reg_init) = (lcloud_examples::REGISTRY.to_vec(), Value::map());
    let reg = contract_id(lcloud_contracts::meter::FUEL_RULE, &reg_code, &reg_init);
    let mut w = fresh(&g, &setup_exps);
    let mut reg_setup = vec![
        w.write(
            &key,
            vec![Op::Deploy {
                rule: lcloud_contracts::meter::FUEL_RULE,
                code: reg_code,
                init: reg_init,
            }],
        )
        .unwrap(),
    ];
    let reserved: Vec<Op> = (0..100)
        .map(|i| Op::Add {
            path: lcloud_core::Path::parse("/registry/reserved").unwrap(),
            value: Value::Str(format!("r{i}")),
        })
        .collect();
    reg_setup.push(w.write(&key, reserved).unwrap());
    let claims: Vec<_> = (0..calls / 4)
        .map(|i| {
            let op = Op::Call {
                morphism: reg,
                args: value(json!({"function": "claim", "args": {"name": format!("c{i}")}})),
            };
            w.write(&key, vec![op]).unwrap()
        })
        .collect();
    assert!(w.ordered().rejections.is_empty(), "every claim is accepted");
    let mut r = fresh(&g, &setup_exps);
    for e in &reg_setup {
        r.insert(e.clone()).unwrap();
    }
    let claims_rate = fold_rate(&mut r, &claims);

    json!({
        "claims_per_s": claims_rate,
        "calls": calls,
        "signed_calls_per_s": signed_rate,
        "folded_calls_per_s": folded_rate,
        "durable_calls_per_s": durable_rate,
        "ledger_calls_per_s": ledger_rate,
        "runtime_calls_per_s": runtime_rate,
        "fuel_per_transfer": fuel,
        "wasmi_instructions_per_s": wasmi_ips,
        "rewind_calls": n,
        "rewind_s": rewind,
        "forward_s": forward,
        "bytes_per_call": bytes_per_call,
    })
}
