//! Contracts written in WebAssembly text: what the fold does with them, fuel to the
//! instruction, and hostile modules refused or rejected, never a panic.

use ed25519_consensus::SigningKey;
use lcloud_contracts::{Contract, Runtime, registry};
use lcloud_core::{
    CallContext, Experience, Genesis, Id, Kv, NodeId, Op, Program, Rejection, Replica, Value,
    contract_id,
};

/// A counter that holds one letter: `incr` moves it from "a" to "c", and rejects a fourth.
const COUNTER: &str = r#"(module
  (import "lcloud" "state_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "lcloud" "state_set" (func $set (param i32 i32 i32 i32)))
  (import "lcloud" "reject" (func $reject (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "n")
  (data (i32.const 8) "full")
  (func (export "incr") (local $len i32)
    (local.set $len (call $get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1)))
    (if (i32.eq (local.get $len) (i32.const -1))
      (then (i32.store8 (i32.const 16) (i32.const 97)))
      (else
        (if (i32.ge_u (i32.load8_u (i32.const 16)) (i32.const 99))
          (then (call $reject (i32.const 8) (i32.const 4))))
        (i32.store8 (i32.const 16) (i32.add (i32.load8_u (i32.const 16)) (i32.const 1)))))
    (call $set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1))))"#;

/// `spin` counts to the number in its one-byte state key "k" times 1000 (1000 if absent).
fn spinner(iterations: u32) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "spin") (local $i i32)
    (loop $l
      local.get $i
      i32.const 1
      i32.add
      local.tee $i
      i32.const {iterations}
      i32.lt_u
      br_if $l)))"#
    )
}

fn key(n: u8) -> SigningKey {
    SigningKey::from([n; 32])
}

fn ctx(fuel: Option<u64>) -> CallContext {
    CallContext {
        author: NodeId([1; 32]),
        seq: 1,
        exp: Id([0; 32]),
        op: 0,
        fuel,
        clock: vec![(NodeId([1; 32]), 1)],
        doc: None,
        guarded: Default::default(),
    }
}

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("the fixture is valid text")
}

fn deploy(code: &[u8]) -> Result<Contract, String> {
    let id = contract_id(1, code, &Value::Null);
    Contract::deploy(&Runtime::new(), id, code).map_err(|e| e.to_string())
}

fn call(c: &Contract, function: &str, fuel: Option<u64>) -> Result<Kv, Rejection> {
    c.call(&Kv::new(), function, &Value::Null, &ctx(fuel))
        .map(|e| e.state)
}

fn genesis(admin: &SigningKey) -> lcloud_core::Verified<Experience> {
    Experience::create_genesis(
        admin,
        Genesis {
            name: "contracts".into(),
            init: Value::map(),
            members: None,
            fork_policy: Default::default(),
        },
    )
}

fn deploy_op(code: &[u8]) -> Op {
    Op::Deploy {
        rule: 1,
        code: code.to_vec(),
        init: Value::Null,
    }
}

fn call_op(id: Id, function: &str) -> Op {
    let mut m = std::collections::BTreeMap::new();
    m.insert("function".to_owned(), Value::Str(function.into()));
    Op::Call {
        morphism: id,
        args: Value::Map(m),
    }
}

#[test]
fn calls_fold_in_order_and_the_one_that_does_not_fit_is_rejected_with_its_reason() {
    let admin = key(1);
    let mut r = Replica::with_registry(genesis(&admin), registry()).unwrap();
    let code = wasm(COUNTER);
    let id = contract_id(1, &code, &Value::Null);
    r.write(&admin, vec![deploy_op(&code)]).unwrap();
    for _ in 0..4 {
        r.write(&admin, vec![call_op(id, "incr")]).unwrap();
    }
    let state = r.state();
    let mut want = Kv::new();
    want.insert("n".to_owned(), "c".to_owned());
    assert_eq!(state.ordered.kv.get(&id), Some(&want));
    let reasons: Vec<&str> = state
        .ordered
        .rejections
        .values()
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(reasons, ["rejected: full"]);
    // A call before the deploy, to a contract nobody deployed, is rejected too.
    let other = contract_id(1, b"\0asm", &Value::Null);
    r.write(&admin, vec![call_op(other, "incr")]).unwrap();
    assert!(
        r.state()
            .ordered
            .rejections
            .values()
            .any(|x| x.reason == format!("unknown morphism {other}"))
    );
}

#[test]
fn the_same_history_gives_the_same_root_cached_fresh_or_after_a_restart() {
    let admin = key(1);
    let code = wasm(COUNTER);
    let id = contract_id(1, &code, &Value::Null);
    let mut a = Replica::with_registry(genesis(&admin), registry()).unwrap();
    let mut exps = vec![a.write(&admin, vec![deploy_op(&code)]).unwrap()];
    for _ in 0..5 {
        exps.push(a.write(&admin, vec![call_op(id, "incr")]).unwrap());
    }
    // A fresh runtime that compiles the module again, fed the same experiences.
    let mut b = Replica::with_registry(genesis(&admin), registry()).unwrap();
    for e in exps.iter().rev() {
        let _ = b.insert(e.clone());
    }
    assert_eq!(a.root(), b.root());
    // A full refold (the path a restart takes) agrees with the incremental fold.
    assert_eq!(a.refold().root(), a.root());
    // A node without the contract runtime refuses the deploy, and so gets another root:
    // every node of a cloud must run the same registry.
    let mut c = Replica::new(genesis(&admin)).unwrap();
    for e in &exps {
        c.insert(e.clone()).unwrap();
    }
    assert_ne!(c.root(), a.root());
}

#[test]
fn fuel_is_one_per_instruction_executed_and_the_same_every_run() {
    // The least fuel with which `spin` finishes, found by bisection.
    let least = |iterations: u32| {
        let c = deploy(&wasm(&spinner(iterations))).unwrap();
        let (mut lo, mut hi) = (0u64, 1 << 24);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match call(&c, "spin", Some(mid)) {
                Ok(_) => hi = mid,
                Err(Rejection(why)) => {
                    assert_eq!(why, format!("out of fuel (limit {mid})"));
                    lo = mid + 1;
                }
            }
        }
        lo
    };
    let (a, b) = (least(1000), least(2000));
    // Seven instructions in the loop's body: 7 000 more fuel for 1 000 more iterations.
    assert_eq!(
        b - a,
        7000,
        "least fuel: {a} for 1000 iterations, {b} for 2000"
    );
    assert_eq!(
        least(1000),
        a,
        "the same contract needs the same fuel every run"
    );
}

#[test]
fn hostile_modules_are_refused_at_deploy_by_name() {
    let cases = [
        (
            r#"(module (memory (export "memory") 1) (func (export "f") (drop (f32.add (f32.const 1) (f32.const 2)))))"#,
            "float",
        ),
        (
            r#"(module (import "env" "now" (func)) (memory (export "memory") 1))"#,
            "import",
        ),
        (
            r#"(module (import "lcloud" "seq" (func (result i32))) (memory (export "memory") 1))"#,
            "lcloud",
        ),
        (r#"(module (memory (export "memory") 65))"#, "pages"),
        (r#"(module (func (export "f")))"#, "memory"),
    ];
    for (text, says) in cases {
        let err = deploy(&wasm(text)).unwrap_err();
        assert!(
            err.to_lowercase().contains(says),
            "{text}: the refusal {err:?} should name {says:?}"
        );
    }
    assert!(deploy(b"not wasm at all").is_err());
    assert!(deploy(&[]).is_err());
    let huge = vec![0u8; 600 * 1024];
    let err = deploy(&huge).unwrap_err();
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn hostile_calls_are_rejected_deterministically() {
    let cases = [
        (
            r#"(module (memory (export "memory") 1) (func (export "f") (loop $l (br $l))))"#,
            "out of fuel (limit 100000)",
        ),
        (
            r#"(module (memory (export "memory") 1) (func $f (export "f") (call $f)))"#,
            "call stack deeper than 256 frames",
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "f") (loop $l (drop (memory.grow (i32.const 1))) (br $l))))"#,
            "out of fuel (limit 100000)",
        ),
        (
            r#"(module (memory (export "memory") 1) (func (export "f") unreachable))"#,
            "trap: unreachable",
        ),
        (
            r#"(module (memory (export "memory") 1) (func (export "f") (drop (i32.load (i32.const 70000)))))"#,
            "trap: memory access out of bounds",
        ),
        (
            r#"(module (import "lcloud" "state_set" (func $s (param i32 i32 i32 i32)))
                 (memory (export "memory") 1)
                 (func (export "f") (call $s (i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 9))))"#,
            "the value at 65535+9 is outside the memory",
        ),
    ];
    for (text, want) in cases {
        let c = deploy(&wasm(text)).unwrap();
        for _ in 0..2 {
            let got = call(&c, "f", Some(100_000)).unwrap_err();
            assert_eq!(got.0, want, "{text}");
        }
    }
}

#[test]
fn a_module_that_counts_its_runs_behaves_the_same_every_run() {
    // A mutable global survives only within one instance; every call gets a fresh one.
    let text = r#"(module
      (import "lcloud" "reject" (func $reject (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "second run")
      (global $runs (mut i32) (i32.const 0))
      (func (export "f")
        (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
        (if (i32.gt_u (global.get $runs) (i32.const 1))
          (then (call $reject (i32.const 0) (i32.const 10))))))"#;
    let c = deploy(&wasm(text)).unwrap();
    for _ in 0..3 {
        assert!(call(&c, "f", None).is_ok());
    }
    assert_eq!(
        call(&c, "nope", None).unwrap_err().0,
        "the contract exports no function \"nope\" taking and returning nothing"
    );
    assert!(call(&c, "__lcloud_fuel", None).is_err());
}

#[test]
fn a_contract_sees_its_caller_and_clock() {
    // `f` rejects with the author's first byte and the clock's length as its reason.
    let text = r#"(module
      (import "lcloud" "author" (func $author (param i32)))
      (import "lcloud" "clock_len" (func $clock_len (result i32)))
      (import "lcloud" "reject" (func $reject (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "f")
        (call $author (i32.const 0))
        (i32.store8 (i32.const 0) (i32.add (i32.const 65) (i32.load8_u (i32.const 0))))
        (i32.store8 (i32.const 1) (i32.add (i32.const 48) (call $clock_len)))
        (call $reject (i32.const 0) (i32.const 2))))"#;
    let c = deploy(&wasm(text)).unwrap();
    let got = Program::call(&c, &Kv::new(), &Value::Null, &ctx(None)).unwrap_err();
    assert!(got.0.contains("function"), "{got}");
    let got = call(&c, "f", None).unwrap_err();
    // Author [1; 32]: 'A' + 1 = 'B'; one clock entry of 40 bytes: '0' + 40 = 'X'.
    assert_eq!(got.0, "rejected: BX");
}

/// `seen` stores, under key "x", the document at /x as the caller saw it ("none" if empty).
const SEEN: &str = r#"(module
  (import "lcloud" "doc_get" (func $doc (param i32 i32 i32 i32) (result i32)))
  (import "lcloud" "state_set" (func $set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/x")
  (data (i32.const 8) "x")
  (data (i32.const 16) "none")
  (func (export "seen") (local $n i32)
    (local.set $n (call $doc (i32.const 0) (i32.const 2) (i32.const 100) (i32.const 100)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (call $set (i32.const 8) (i32.const 1) (i32.const 16) (i32.const 4)))
      (else (call $set (i32.const 8) (i32.const 1) (i32.const 100) (local.get $n))))))"#;

fn seen_x(r: &Replica, id: &Id) -> Option<String> {
    r.ordered().kv.get(id).and_then(|kv| kv.get("x").cloned())
}

fn set_x(v: i64) -> Op {
    Op::Set {
        path: lcloud_core::Path::parse("/x").unwrap(),
        value: Value::Int(v),
    }
}

#[test]
fn a_call_reads_the_document_its_author_saw_in_every_order_and_view() {
    let (a, b) = (key(1), key(2));
    let g = genesis(&a);
    let code = wasm(SEEN);
    let id = contract_id(1, &code, &Value::Null);
    let mut ra = Replica::with_registry(g.clone(), registry()).unwrap();
    let mut exps = vec![ra.write(&a, vec![deploy_op(&code)]).unwrap()];
    exps.push(ra.write(&a, vec![set_x(1)]).unwrap());
    exps.push(ra.write(&a, vec![call_op(id, "seen")]).unwrap());
    assert_eq!(seen_x(&ra, &id).as_deref(), Some("1"));
    // B saw /x = 1; A then sets 2 concurrently, and B's call, folded after A's set in every
    // order, still reads what B saw.
    let mut rb = Replica::with_registry(g.clone(), registry()).unwrap();
    rb.merge(&ra);
    exps.push(ra.write(&a, vec![set_x(2)]).unwrap());
    exps.push(rb.write(&b, vec![call_op(id, "seen")]).unwrap());
    let (a0, b0) = (ra.clone(), rb.clone());
    ra.merge(&b0);
    rb.merge(&a0);
    assert_eq!(ra.root(), rb.root());
    assert_eq!(ra.document().to_json()["x"], 2);
    assert_eq!(seen_x(&ra, &id).as_deref(), Some("1"));
    // A fresh fold, in reverse arrival order as far as links allow, and the refold agree.
    let mut fresh = Replica::with_registry(g.clone(), registry()).unwrap();
    for e in exps.iter().rev() {
        fresh.insert(e.clone()).unwrap();
    }
    assert_eq!(fresh.root(), ra.root());
    assert_eq!(ra.refold().root(), ra.root());
    // A call that saw nothing at /x, and the view without A (whose set B's call saw): both
    // read "none", as a fold of exactly what they hold.
    let mut rc = Replica::with_registry(g.clone(), registry()).unwrap();
    rc.insert(exps[0].clone()).unwrap();
    rc.write(&b, vec![call_op(id, "seen")]).unwrap();
    assert_eq!(seen_x(&rc, &id).as_deref(), Some("none"));
    let without_a = ra.without(&lcloud_core::NodeId(a.verification_key().to_bytes()));
    // Without A there is no deploy either: B's call is to an unknown contract.
    assert!(without_a.unwrap().ordered.kv.get(&id).is_none());
    // C sets /x = 5, B sees it and calls: B's call reads 5; the view without C reads what B
    // saw of everyone else (A's 1), however much of the fold it could otherwise reuse.
    let c = key(3);
    let mut rc2 = ra.clone();
    rc2.write(&c, vec![set_x(5)]).unwrap();
    let mut rb2 = rb.clone();
    rb2.merge(&rc2);
    rb2.write(&b, vec![call_op(id, "seen")]).unwrap();
    assert_eq!(seen_x(&rb2, &id).as_deref(), Some("5"));
    let without_c = rb2
        .without(&lcloud_core::NodeId(c.verification_key().to_bytes()))
        .unwrap();
    let x = without_c
        .ordered
        .kv
        .get(&id)
        .and_then(|kv| kv.get("x").cloned());
    assert_eq!(
        x.as_deref(),
        Some("2"),
        "without C, B saw A's latest set (2)"
    );
    // At the cut before A's second set, the state is what it was then.
    let before = ra
        .state_at(&lcloud_core::Cut::Heads(vec![exps[2].id()]))
        .unwrap();
    assert_eq!(
        before
            .ordered
            .kv
            .get(&id)
            .and_then(|kv| kv.get("x").cloned())
            .as_deref(),
        Some("1")
    );
}

/// Guards `/g` in init; `inside` writes `/g/x`, `outside` writes `/h`, `late` guards in a
/// call, `junk` writes text that is not JSON, `flood` writes more than a call may.
const GUARD: &str = r#"(module
  (import "lcloud" "guard" (func $guard (param i32 i32)))
  (import "lcloud" "doc_set" (func $set (param i32 i32 i32 i32)))
  (import "lcloud" "doc_del" (func $del (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/g/x")
  (data (i32.const 8) "/h")
  (data (i32.const 16) "{\"n\":1}")
  (data (i32.const 32) "{nope")
  (func (export "init") (call $guard (i32.const 0) (i32.const 2)))
  (func (export "inside") (call $set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 7)))
  (func (export "remove") (call $del (i32.const 0) (i32.const 4)))
  (func (export "outside") (call $set (i32.const 8) (i32.const 2) (i32.const 16) (i32.const 7)))
  (func (export "late") (call $guard (i32.const 8) (i32.const 2)))
  (func (export "junk") (call $set (i32.const 0) (i32.const 4) (i32.const 32) (i32.const 5)))
  (func (export "flood") (local $i i32)
    (loop $l
      (call $del (i32.const 0) (i32.const 4))
      (local.tee $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (i32.const 2000))))))"#;

#[test]
fn a_contract_writes_only_under_the_paths_its_init_guards() {
    let admin = key(1);
    let mut r = Replica::with_registry(genesis(&admin), registry()).unwrap();
    let code = wasm(GUARD);
    let id = contract_id(1, &code, &Value::Null);
    r.write(&admin, vec![deploy_op(&code)]).unwrap();
    let path = |p: &str| lcloud_core::Path::parse(p).unwrap();
    assert_eq!(r.ordered().guarded.paths.get(&path("/g")), Some(&id));
    let outcome = |r: &mut Replica, f: &str| {
        let e = r.write(&admin, vec![call_op(id, f)]).unwrap();
        r.rejection(&e.id(), 0).map(|x| x.reason.clone())
    };
    assert_eq!(outcome(&mut r, "inside"), None);
    let json = |s: &str| Value::from_json(&serde_json::from_str(s).unwrap()).unwrap();
    assert_eq!(r.state().get(&path("/g")), Some(json(r#"{"x":{"n":1}}"#)));
    let refused = [
        ("outside", "writes /h, which it does not guard"),
        (
            "late",
            "guard /h: a contract declares its guarded paths in init only",
        ),
        ("junk", "doc_set /g/x: the value is not JSON"),
        ("flood", "more than 1024 document writes in one call"),
    ];
    for (f, why) in refused {
        let got = outcome(&mut r, f).unwrap_or_else(|| panic!("{f} was accepted"));
        assert!(got.contains(why), "{f}: {got}");
    }
    assert_eq!(r.state().get(&path("/g/x/n")), Some(Value::Int(1)));
    assert_eq!(outcome(&mut r, "remove"), None);
    assert_eq!(r.state().get(&path("/g")), None);
    // The same module deployed again with other init arguments would guard /g again: refused.
    let twice = Op::Deploy {
        rule: 1,
        code: code.clone(),
        init: Value::map(),
    };
    let e = r.write(&admin, vec![twice]).unwrap();
    let why = r.rejection(&e.id(), 0).unwrap().reason.clone();
    assert!(
        why.contains("cannot guard /g: /g is guarded by contract"),
        "{why}"
    );
}
