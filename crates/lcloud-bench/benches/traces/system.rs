//! The traces through whole systems, each measurement in a child process of its own (so
//! each peak is its own): the fold of signed experiences (one per edit, and 100 edits each)
//! beside Automerge's `apply_changes`, Loro's `import` and diamond-types' `merge_data_and_ff`
//! of the same history; λCLOUD signed and durable through the store's committer; bytes at
//! rest of the final document with its full history; and its load time and peak memory.

use std::path::Path as FsPath;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use automerge::{AutoCommit, ObjType, ROOT, ReadDoc, TextEncoding, transaction::Transactable};
use ed25519_consensus::SigningKey;
use lcloud_core::{Edit, Experience, Genesis, Path, Replica, Verified};
use lcloud_store::{Committer, Identity, Store};
use serde_json::{Value as J, json};

use super::Edit as TraceEdit;

fn splice(e: &TraceEdit) -> Edit {
    Edit::Splice {
        path: Path::parse("/t").expect("a path"),
        index: e.0,
        delete: e.1,
        text: e.2.clone(),
    }
}

/// Peak resident memory of this process, in MiB (Linux `VmHWM`).
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &FsPath) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// λCLOUD's signed history of `edits`, `per` edits an experience, written by one node.
fn lcloud_history(
    edits: &[TraceEdit],
    per: usize,
) -> (Verified<Experience>, Vec<Arc<Verified<Experience>>>) {
    let key = SigningKey::from([7; 32]);
    let genesis = Experience::create_genesis(&key, Genesis::open("trace"));
    let mut r = Replica::new(genesis.clone()).expect("a genesis");
    let me = lcloud_core::NodeId(key.verification_key().to_bytes());
    let mut out = Vec::with_capacity(edits.len() / per + 1);
    for batch in edits.chunks(per) {
        let ops = lcloud_core::resolve(&r.state().doc, me, batch.iter().map(splice).collect())
            .expect("the trace's edits are in range");
        out.push(r.write(&key, ops).expect("a valid write"));
    }
    (genesis, out)
}

/// Automerge's document after `edits`, one commit each.
fn automerge_doc(edits: &[TraceEdit]) -> AutoCommit {
    let mut doc = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint);
    let text = doc.put_object(ROOT, "text", ObjType::Text).expect("a text");
    doc.commit();
    for (at, del, ins) in edits {
        doc.splice_text(&text, *at, *del as isize, ins)
            .expect("in range");
        doc.commit();
    }
    doc
}

/// Loro's document after `edits`, one commit each.
fn loro_doc(edits: &[TraceEdit]) -> loro::LoroDoc {
    let doc = loro::LoroDoc::new();
    let text = doc.get_text("text");
    for (at, del, ins) in edits {
        if *del > 0 {
            text.delete(*at, *del).expect("in range");
        }
        if !ins.is_empty() {
            text.insert(*at, ins).expect("in range");
        }
        doc.commit();
    }
    doc
}

/// diamond-types' document after `edits` (it has no commits: every edit is its own
/// operation in its log).
pub fn diamond_doc(edits: &[TraceEdit]) -> diamond_types::list::ListCRDT {
    let mut doc = diamond_types::list::ListCRDT::new();
    let agent = doc.get_or_create_agent_id("a");
    for (at, del, ins) in edits {
        if *del > 0 {
            doc.delete_without_content(agent, *at..*at + *del);
        }
        if !ins.is_empty() {
            doc.insert(agent, *at, ins);
        }
    }
    doc
}

/// The child for `(what, system)` on `edits`, in `dir`: its JSON answer.
pub fn child(what: &str, system: &str, edits: &[TraceEdit], end: &str, dir: &FsPath) -> J {
    match (what, system) {
        ("apply", "lcloud") => {
            let mut out = json!({});
            for (per, name) in [(1, "apply_s"), (100, "apply100_s")] {
                let (genesis, exps) = lcloud_history(edits, per);
                let t = Instant::now();
                let mut r = Replica::new(genesis).expect("a genesis");
                for e in exps {
                    r.insert_arc(e).expect("a valid experience");
                }
                let text = r.document().to_json()["t"].clone();
                out[name] = json!(t.elapsed().as_secs_f64());
                assert!(text == end, "λCLOUD's fold did not reach the trace's end");
            }
            out
        }
        ("apply", "automerge") => {
            let changes = automerge_doc(edits).get_changes(&[]);
            let t = Instant::now();
            let mut fresh = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint);
            fresh.apply_changes(changes).expect("its own changes");
            let s = t.elapsed().as_secs_f64();
            let (_, text) = fresh.get(ROOT, "text").expect("read").expect("a text");
            assert!(fresh.text(&text).expect("a text") == end);
            json!({"apply_s": s})
        }
        ("apply", "loro") => {
            let updates = loro_doc(edits)
                .export(loro::ExportMode::all_updates())
                .expect("exports");
            let t = Instant::now();
            let fresh = loro::LoroDoc::new();
            fresh.import(&updates).expect("its own updates");
            let got = fresh.get_text("text").to_string();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"apply_s": s})
        }
        ("durable", "lcloud") => {
            let me = Identity::load_or_create(dir).expect("an identity");
            let genesis = Experience::create_genesis(me.key(), Genesis::open("trace"));
            let store = Store::create(dir, &genesis).expect("a store");
            let t = Instant::now();
            let committer = Committer::start(store, me);
            let writer = committer.writer();
            let (tx, rx) = std::sync::mpsc::channel();
            let mut n = 0;
            for batch in edits.chunks(100) {
                let tx = tx.clone();
                writer
                    .submit_edits(
                        batch.iter().map(splice).collect(),
                        Box::new(move |r| {
                            let _ = tx.send(r.map(|e| e.to_bytes().len()));
                        }),
                    )
                    .expect("the committer runs");
                n += 1;
            }
            let mut records = 0;
            for _ in 0..n {
                records += rx.recv().expect("an answer").expect("durable");
            }
            let s = t.elapsed().as_secs_f64();
            drop(writer);
            let store = committer.stop();
            let got = store
                .document(&Path::parse("/t").expect("a path"))
                .expect("reads");
            assert!(got.map(|v| v.to_json()) == Some(J::from(end)));
            let t_path = Path::parse("/t").expect("a path");
            let doc = store
                .doc_under(std::slice::from_ref(&t_path))
                .expect("reads");
            let leaf = doc.leaf(&t_path).map_or(0, |l| l.to_bytes().len());
            drop(store);
            json!({"durable_s": s, "bytes": dir_bytes(dir), "records_bytes": records, "leaf_bytes": leaf})
        }
        ("apply", "dt") => {
            let bytes = diamond_doc(edits)
                .oplog
                .encode(diamond_types::list::encoding::ENCODE_FULL);
            let t = Instant::now();
            let mut fresh = diamond_types::list::ListCRDT::new();
            fresh.merge_data_and_ff(&bytes).expect("its own log");
            let got = fresh.branch.content().to_string();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"apply_s": s})
        }
        ("save", "dt") => {
            let bytes = diamond_doc(edits)
                .oplog
                .encode(diamond_types::list::encoding::ENCODE_FULL);
            std::fs::write(dir.join("doc.dt"), &bytes).expect("writes");
            json!({"bytes": bytes.len()})
        }
        ("load", "dt") => {
            let bytes = std::fs::read(dir.join("doc.dt")).expect("saved");
            let t = Instant::now();
            let doc = diamond_types::list::ListCRDT::load_from(&bytes).expect("loads");
            let got = doc.branch.content().to_string();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"load_s": s, "peak_mib": peak_mib()})
        }
        ("save", "automerge") => {
            let bytes = automerge_doc(edits).save();
            std::fs::write(dir.join("doc.automerge"), &bytes).expect("writes");
            json!({"bytes": bytes.len()})
        }
        ("save", "loro") => {
            let bytes = loro_doc(edits)
                .export(loro::ExportMode::Snapshot)
                .expect("exports");
            std::fs::write(dir.join("doc.loro"), &bytes).expect("writes");
            json!({"bytes": bytes.len()})
        }
        ("load", "lcloud") => {
            let t = Instant::now();
            let store = Store::open(dir).expect("opens");
            let text = store
                .document(&Path::parse("/t").expect("a path"))
                .expect("reads");
            let leaves_s = t.elapsed().as_secs_f64();
            let leaves_peak = peak_mib();
            assert!(text.map(|v| v.to_json()) == Some(J::from(end)));
            let t = Instant::now();
            let r = store.load(&mut |_| {}).expect("loads");
            let got = r.document().to_json()["t"].clone();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"load_s": s, "peak_mib": peak_mib(), "leaves_s": leaves_s, "leaves_peak_mib": leaves_peak})
        }
        ("load", "automerge") => {
            let bytes = std::fs::read(dir.join("doc.automerge")).expect("saved");
            let t = Instant::now();
            let doc = AutoCommit::load(&bytes).expect("loads");
            let (_, text) = doc.get(ROOT, "text").expect("read").expect("a text");
            let got = doc.text(&text).expect("a text");
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"load_s": s, "peak_mib": peak_mib()})
        }
        ("load", "loro") => {
            let bytes = std::fs::read(dir.join("doc.loro")).expect("saved");
            let t = Instant::now();
            let doc = loro::LoroDoc::from_snapshot(&bytes).expect("loads");
            let got = doc.get_text("text").to_string();
            let s = t.elapsed().as_secs_f64();
            assert!(got == end);
            json!({"load_s": s, "peak_mib": peak_mib()})
        }
        other => panic!("no child {other:?}"),
    }
}

/// Runs the child `(what, system)` for `trace` in `dir`.
pub fn run(what: &str, system: &str, trace: &str, dir: &FsPath, quick: bool) -> J {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new(exe);
    cmd.args(["--child", what, system, trace])
        .arg(dir)
        .stderr(std::process::Stdio::inherit());
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().expect("the child runs");
    assert!(out.status.success(), "child {what} {system} {trace} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("the child's JSON")
}

/// Every measurement for `trace` (`edits` edits), printed as a table with ratios.
pub fn report(trace: &str, edits: usize, end: &str, quick: bool) {
    let base = tempfile::tempdir().expect("a temporary directory");
    let dir = |s: &str| {
        let d = base.path().join(s);
        std::fs::create_dir_all(&d).expect("a directory");
        d
    };
    let mut r = std::collections::BTreeMap::new();
    for system in ["lcloud", "automerge", "loro", "dt"] {
        let d = dir(system);
        let mut j = run("apply", system, trace, &d, quick);
        let stored = if system == "lcloud" {
            run("durable", system, trace, &d, quick)
        } else {
            run("save", system, trace, &d, quick)
        };
        std::fs::write(d.join("end.txt"), end).expect("writes");
        let loaded = run("load", system, trace, &d, quick);
        for part in [stored, loaded] {
            for (k, v) in part.as_object().expect("an object") {
                j[k] = v.clone();
            }
        }
        r.insert(system, j);
    }
    let rate = |s: &J| edits as f64 / s.as_f64().unwrap_or(f64::NAN);
    let (l, a, o, d) = (&r["lcloud"], &r["automerge"], &r["loro"], &r["dt"]);
    println!("\n{trace}: {edits} edits, each system in child processes of its own");
    println!(
        "measure                           λCLOUD      Automerge         Loro  diamond-types    λ÷A     λ÷L     λ÷D"
    );
    let row = |name: &str, ours: f64, am: f64, lo: f64, dt: f64, higher_is_better: bool| {
        let (ra, rl, rd) = if higher_is_better {
            (ours / am, ours / lo, ours / dt)
        } else {
            (am / ours, lo / ours, dt / ours)
        };
        println!(
            "{name:<30} {ours:>12.0} {am:>14.0} {lo:>12.0} {dt:>14.0} {ra:>7.2} {rl:>7.2} {rd:>7.2}"
        );
    };
    row(
        "apply, 1 exp/edit (edits/s)",
        rate(&l["apply_s"]),
        rate(&a["apply_s"]),
        rate(&o["apply_s"]),
        rate(&d["apply_s"]),
        true,
    );
    row(
        "apply, 100 edits/exp (edits/s)",
        rate(&l["apply100_s"]),
        rate(&a["apply_s"]),
        rate(&o["apply_s"]),
        rate(&d["apply_s"]),
        true,
    );
    println!(
        "signed+durable, 100/exp (edits/s) {:>9.0}   (target ≥ 500 000)",
        rate(&l["durable_s"])
    );
    let bytes = |j: &J| j["bytes"].as_f64().unwrap_or(f64::NAN);
    row(
        "bytes at rest (÷: they ÷ we)",
        bytes(l),
        bytes(a),
        bytes(o),
        bytes(d),
        false,
    );
    let ms = |j: &J, k: &str| j[k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    row(
        "load, full history (ms)",
        ms(l, "load_s"),
        ms(a, "load_s"),
        ms(o, "load_s"),
        ms(d, "load_s"),
        false,
    );
    row(
        "peak MiB, full load",
        l["peak_mib"].as_f64().unwrap_or(f64::NAN),
        a["peak_mib"].as_f64().unwrap_or(f64::NAN),
        o["peak_mib"].as_f64().unwrap_or(f64::NAN),
        d["peak_mib"].as_f64().unwrap_or(f64::NAN),
        false,
    );
    println!(
        "λCLOUD's bytes: {:.0} of signed experiences (uncompressed), {:.0} of the text's leaf",
        l["records_bytes"].as_f64().unwrap_or(f64::NAN),
        l["leaf_bytes"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "λCLOUD's text from its leaves alone (what `lcloud state` reads): {:.1} ms, peak {:.0} MiB",
        ms(l, "leaves_s"),
        l["leaves_peak_mib"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "JSON {}",
        json!({"trace": trace, "edits": edits, "results": r})
    );
}
