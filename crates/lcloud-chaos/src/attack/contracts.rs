//! A hostile member deploys and calls hostile contracts while honest writes go on: modules
//! that cannot be deterministic or break the limits (refused at deploy, naming the rule), and
//! a module whose functions loop for ever at the most fuel a call may have, recurse without
//! end, grow memory until refused, trap, read out of bounds, hand the host pointers outside
//! their memory, and count their own runs; and, under a path the `schema` example guards, an
//! entry that breaks its rules and direct writes that bypass it. Every node must keep serving,
//! converge, record the same rejection for each, with the reason a fresh fold of the history
//! gives, and show under the guarded path only what the guard accepted.

use std::time::{Duration, Instant};

use ed25519_consensus::SigningKey;
use lcloud_core::{Draft, Id, Op, Replica, Value, contract_id};

use super::{Attacker, Lab, Writer, converged, ensure, node_id, push_all, runtime, wait};

/// Modules refused at deploy, and a word their refusal must name.
const REFUSED: &[(&str, &str)] = &[
    (
        r#"(module (memory (export "memory") 1) (func (export "f") (drop (f32.add (f32.const 1) (f32.const 2)))))"#,
        "float",
    ),
    (
        r#"(module (import "env" "now" (func)) (memory (export "memory") 1))"#,
        "import env.now",
    ),
    (r#"(module (memory (export "memory") 65))"#, "pages"),
    (r#"(module (func (export "f")))"#, "memory"),
];

/// One module with a hostile function of each kind.
const EVIL: &str = r#"(module
  (import "lcloud" "state_set" (func $set (param i32 i32 i32 i32)))
  (import "lcloud" "reject" (func $reject (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "second run")
  (global $runs (mut i32) (i32.const 0))
  (func (export "spin") (loop $l (br $l)))
  (func $deep (export "deep") (call $deep))
  (func (export "bomb") (loop $l (drop (memory.grow (i32.const 1))) (br $l)))
  (func (export "trap") unreachable)
  (func (export "oob") (drop (i32.load (i32.const 70000))))
  (func (export "host_oob") (call $set (i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 9)))
  (func (export "twice")
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    (if (i32.gt_u (global.get $runs) (i32.const 1))
      (then (call $reject (i32.const 0) (i32.const 10))))
    (call $set (i32.const 0) (i32.const 6) (i32.const 0) (i32.const 6))))"#;

/// The calls, their fuel and the rejection each must get (`None`: accepted).
fn calls() -> Vec<(&'static str, u64, Option<String>)> {
    let max = lcloud_contracts::FUEL_MAX;
    vec![
        ("spin", max, Some(format!("out of fuel (limit {max})"))),
        (
            "deep",
            max,
            Some("call stack deeper than 256 frames".into()),
        ),
        (
            "bomb",
            1_000_000,
            Some("out of fuel (limit 1000000)".into()),
        ),
        ("trap", 10_000, Some("trap: unreachable".into())),
        (
            "oob",
            10_000,
            Some("trap: memory access out of bounds".into()),
        ),
        (
            "host_oob",
            10_000,
            Some("the value at 65535+9 is outside the memory".into()),
        ),
        ("twice", 10_000, None),
        ("twice", 10_000, None),
        (
            "missing",
            10_000,
            Some(
                "the contract exports no function \"missing\" taking and returning nothing".into(),
            ),
        ),
    ]
}

/// Signs `ops` as the next experience of `key` in `r`, with `fuel`.
fn write(
    r: &mut Replica,
    key: &SigningKey,
    ops: Vec<Op>,
    fuel: Option<u64>,
) -> Result<Vec<u8>, String> {
    let me = node_id(key);
    let draft = Draft {
        fuel,
        ..r.draft(&me, ops)
    };
    let exp = draft.seal(me).sign(key);
    r.insert(exp.clone()).map_err(|e| e.to_string())?;
    Ok(exp.to_bytes())
}

fn call(contract: Id, function: &str) -> Op {
    let mut m = std::collections::BTreeMap::new();
    m.insert("function".to_owned(), Value::Str(function.to_owned()));
    Op::Call {
        morphism: contract,
        args: Value::Map(m),
    }
}

pub(super) fn hostile_contracts(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(2, &[node_id(&keys[0])])?;
    let cloud = genesis.id();
    let mut a = lab.start(&dirs[0], &[])?;
    let mut b = lab.start(&dirs[1], &[a.p2p.as_str()])?;
    wait(Duration::from_secs(10), "B connects to A", || {
        super::peers_of(&a) == 1
    })?;
    let writers = [Writer::start(&a.api, 0), Writer::start(&b.api, 1_000_000)];
    let mut r = Replica::with_registry(genesis.clone(), lcloud_contracts::registry())
        .map_err(|e| e.to_string())?;
    let key = &keys[0];
    let rule = lcloud_contracts::meter::FUEL_RULE;
    let mut exps = Vec::new();
    // (experience index in `exps`, the rejection it must get)
    let mut expect: Vec<(usize, Option<String>)> = Vec::new();
    for (text, says) in REFUSED {
        let code = wat::parse_str(text).map_err(|e| e.to_string())?;
        let op = Op::Deploy {
            rule,
            code,
            init: Value::map(),
        };
        exps.push(write(&mut r, key, vec![op], None)?);
        expect.push((exps.len() - 1, Some(format!("deploy refused: *{says}*"))));
    }
    let code = wat::parse_str(EVIL).map_err(|e| e.to_string())?;
    let evil = contract_id(rule, &code, &Value::map());
    exps.push(write(
        &mut r,
        key,
        vec![Op::Deploy {
            rule,
            code,
            init: Value::map(),
        }],
        None,
    )?);
    expect.push((exps.len() - 1, None));
    for (function, fuel, want) in calls() {
        exps.push(write(&mut r, key, vec![call(evil, function)], Some(fuel))?);
        expect.push((exps.len() - 1, want));
    }
    // A guarded path: one good entry, one that breaks the rules, and direct writes under it.
    let init = Value::from_json(&serde_json::json!({
        "path": "/guarded",
        "rules": {"type": "object", "required": ["ok"]},
    }))
    .map_err(|e| e.to_string())?;
    let schema = contract_id(rule, lcloud_examples::SCHEMA, &init);
    let deploy = Op::Deploy {
        rule,
        code: lcloud_examples::SCHEMA.to_vec(),
        init,
    };
    exps.push(write(&mut r, key, vec![deploy], None)?);
    expect.push((exps.len() - 1, None));
    let put = |value: serde_json::Value| -> Result<Op, String> {
        let args = serde_json::json!({"function": "put", "args": {"key": "e", "value": value}});
        Ok(Op::Call {
            morphism: schema,
            args: Value::from_json(&args).map_err(|e| e.to_string())?,
        })
    };
    exps.push(write(
        &mut r,
        key,
        vec![put(serde_json::json!({"ok": 1}))?],
        None,
    )?);
    expect.push((exps.len() - 1, None));
    exps.push(write(
        &mut r,
        key,
        vec![put(serde_json::json!({"no": 1}))?],
        None,
    )?);
    expect.push((
        exps.len() - 1,
        Some(r#"rejected: e breaks the rules: /: "ok" is required"#.into()),
    ));
    let direct = |p: &str| Op::Set {
        path: lcloud_core::Path::parse(p).expect("a valid pointer"),
        value: Value::Int(-1),
    };
    exps.push(write(
        &mut r,
        key,
        vec![direct("/guarded/e/ok"), direct("/guarded/evil")],
        None,
    )?);
    let attacker = Attacker::connect(&rt, key, &a)?;
    let t = Instant::now();
    let new = push_all(&attacker, cloud, &exps)?;
    let folded = t.elapsed();
    ensure(new == exps.len() as u64, || {
        format!("{new} of {} hostile experiences were taken", exps.len())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let [wa, wb] = writers;
    let (acked_a, p99_a, failed_a) = wa.stop();
    let (acked_b, p99_b, failed_b) = wb.stop();
    ensure(a.alive() && b.alive(), || "a node stopped".into())?;
    ensure(failed_a + failed_b == 0, || {
        format!(
            "{} honest writes failed during the attack",
            failed_a + failed_b
        )
    })?;
    wait(Duration::from_secs(30), "A and B converge", || {
        converged(&[&a, &b])
    })?;
    // Every rejection, as a fresh fold of A's history gives it, is the expected one, and the
    // node's root is that fold's.
    let bytes = a.bundle()?;
    let decoded = lcloud_store::bundle::decode(&bytes).map_err(|e| e.to_string())?;
    let mut fresh =
        Replica::with_registry(genesis, lcloud_contracts::registry()).map_err(|e| e.to_string())?;
    for rec in &decoded.records[1..] {
        let e = lcloud_core::validate(rec, &decoded.cloud).map_err(|e| e.to_string())?;
        fresh.insert(e).map_err(|e| e.to_string())?;
    }
    let root = a.status()?["root"].as_str().unwrap_or_default().to_owned();
    ensure(fresh.root().to_hex() == root, || {
        format!("A's root {root} is not a fresh fold's {}", fresh.root())
    })?;
    let guarded = a.get("/api/state?path=/guarded")?;
    ensure(guarded == serde_json::json!({"e": {"ok": 1}}), || {
        format!("A shows {guarded} under the guarded path, not only the accepted entry")
    })?;
    for (i, want) in &expect {
        let exp = lcloud_core::validate(&exps[*i], &cloud).map_err(|e| e.to_string())?;
        let got = fresh.rejection(&exp.id(), 0).map(|r| r.reason);
        let ok = match (want, &got) {
            (None, None) => true,
            (Some(w), Some(g)) => match w.split_once('*') {
                Some((prefix, rest)) => {
                    g.starts_with(prefix) && g.contains(rest.trim_end_matches('*'))
                }
                None => g == w,
            },
            _ => false,
        };
        ensure(ok, || {
            format!("hostile op {i}: rejected {got:?}, expected {want:?}")
        })?;
    }
    let rss = a.rss_mib().max(b.rss_mib());
    Ok(format!(
        "{} hostile deploys and calls (loops at {} fuel, recursion, memory bombs, traps, out-of-bounds host pointers, a run counter, an entry breaking a guard's rules; direct writes under the guarded path masked) rejected identically on both nodes in {:.1} s; honest writes {} + {} acknowledged (p99 {:.0} ms / {:.0} ms), 0 failed; largest RSS {rss:.0} MiB",
        exps.len(),
        lcloud_contracts::FUEL_MAX,
        folded.as_secs_f64(),
        acked_a,
        acked_b,
        p99_a.as_secs_f64() * 1e3,
        p99_b.as_secs_f64() * 1e3,
    ))
}
