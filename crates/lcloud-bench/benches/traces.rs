//! Lists and text on real editing traces, beside Automerge, Loro and diamond-types, in one run
//! (docs/BENCHMARKS.md, "Lists and text on real editing traces").
//!
//! `cargo bench -p lcloud-bench --bench traces` (`-- --quick`: the first 2 000 edits of each,
//! CI's smoke test, run unoptimised with `cargo test -p lcloud-bench --bench traces -- --quick`)
//!
//! First the sequence type alone (`lcloud_core::seq::Seq`) beside Automerge, Loro,
//! diamond-types and a plain string, each trace replayed edit by edit as its author typed it (a delete of the range, then
//! an insert, one transaction per edit). Then whole systems, each measurement in a child
//! process of its own (`traces/system.rs`): the fold of signed experiences, writes signed and
//! durable through the store, bytes at rest, load time and peak memory. Every system's final
//! text is checked against the trace's.

#[path = "traces/merge.rs"]
mod merge;
#[path = "traces/system.rs"]
mod system;

use std::io::Read;
use std::time::Instant;

use automerge::{AutoCommit, ObjType, ROOT, ReadDoc, TextEncoding, transaction::Transactable};
use lcloud_core::seq::Seq;
use lcloud_core::{Dot, Id, NodeId};

/// One edit: position, characters deleted there, text inserted there.
type Edit = (usize, usize, String);

/// A system: replays the edits, returns the final text.
type Replay = fn(&[Edit]) -> String;

/// The trace `name` as its JSON.
fn trace_json(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../data/editing-traces/{name}.json.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("the editing traces"))
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn trace(name: &str) -> (Vec<Edit>, String) {
    let t = trace_json(name);
    let edits = t["txns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["patches"].as_array().unwrap().iter())
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
                p[2].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (edits, t["endContent"].as_str().unwrap().to_owned())
}

/// The trace's edits and final text; with `quick`, its first 2 000 edits and the text they
/// leave.
fn trace_or_start(name: &str, quick: bool) -> (Vec<Edit>, String) {
    let (mut edits, end) = trace(name);
    if !quick {
        return (edits, end);
    }
    edits.truncate(2_000);
    let end = plain(&edits);
    (edits, end)
}

fn plain(edits: &[Edit]) -> String {
    let mut doc: Vec<char> = Vec::new();
    for (at, del, ins) in edits {
        doc.splice(*at..*at + *del, ins.chars());
    }
    doc.into_iter().collect()
}

fn lcloud(edits: &[Edit]) -> String {
    let mut seq: Seq<char> = Seq::new();
    let author = NodeId([1; 32]);
    for (n, (at, del, ins)) in edits.iter().enumerate() {
        if *del > 0 {
            for (id, len) in seq.ids_in(*at, *del).unwrap() {
                seq.delete(id, len).unwrap();
            }
        }
        if !ins.is_empty() {
            let mut exp = [0u8; 32];
            exp[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let dot = Dot {
                depth: n as u64,
                exp: Id(exp),
                op: 0,
            };
            let origins = seq.origins_at(*at).unwrap();
            seq.insert(dot, author, origins, ins.chars().collect())
                .unwrap();
        }
    }
    seq.iter().collect()
}

fn automerge(edits: &[Edit]) -> String {
    let mut doc = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint);
    let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
    doc.commit();
    for (at, del, ins) in edits {
        doc.splice_text(&text, *at, *del as isize, ins).unwrap();
        doc.commit();
    }
    doc.text(&text).unwrap()
}

fn diamond(edits: &[Edit]) -> String {
    system::diamond_doc(edits).branch.content().to_string()
}

fn loro(edits: &[Edit]) -> String {
    let doc = loro::LoroDoc::new();
    let text = doc.get_text("text");
    for (at, del, ins) in edits {
        if *del > 0 {
            text.delete(*at, *del).unwrap();
        }
        if !ins.is_empty() {
            text.insert(*at, ins).unwrap();
        }
        doc.commit();
    }
    text.to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (what, system, name) = (&args[i + 1], &args[i + 2], &args[i + 3]);
        let dir = std::path::PathBuf::from(&args[i + 4]);
        if what == "merge" {
            println!("{}", merge::child(system, &trace_json(name)));
            return;
        }
        if what == "load" {
            // The trace is not read here: its parse would be this child's peak.
            let end = std::fs::read_to_string(dir.join("end.txt")).expect("the final text");
            println!("{}", system::child(what, system, &[], &end, &dir));
            return;
        }
        let (edits, end) = trace_or_start(name, quick);
        println!("{}", system::child(what, system, &edits, &end, &dir));
        return;
    }
    println!("trace             edits   system         seconds      edits/s   λCLOUD ÷ it");
    for name in ["automerge-paper", "seph-blog1"] {
        let (mut edits, end) = trace(name);
        if quick {
            edits.truncate(2_000);
        }
        let want = if quick { plain(&edits) } else { end };
        let systems: [(&str, Replay); 5] = [
            ("plain string", plain),
            ("λCLOUD seq", lcloud),
            ("Automerge", automerge),
            ("Loro", loro),
            ("diamond-types", diamond),
        ];
        let mut secs = Vec::new();
        for (system, run) in systems {
            let t = Instant::now();
            let got = run(&edits);
            let s = t.elapsed().as_secs_f64();
            assert!(got == want, "{system} did not reach {name}'s final text");
            secs.push((system, s));
        }
        let ours = secs[1].1;
        for (system, s) in secs {
            println!(
                "{name:<16} {:>7}   {system:<13} {s:>8.3} {:>12.0}   {:>6.2}",
                edits.len(),
                edits.len() as f64 / s,
                s / ours,
            );
        }
    }
    for name in ["automerge-paper", "seph-blog1"] {
        let (edits, end) = trace_or_start(name, quick);
        system::report(name, edits.len(), &end, quick);
    }
    // The concurrent trace is short (under 30 000 edits): whole, even with --quick.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let merged: Vec<serde_json::Value> = ["lcloud", "automerge", "loro"]
        .iter()
        .map(|s| system::run("merge", s, "friendsforever", dir.path(), quick))
        .collect();
    let secs = |j: &serde_json::Value| j["merge_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nfriendsforever (two agents typing at once): a fresh document takes in both agents' whole histories"
    );
    println!("system        ms     they ÷ λCLOUD   reaches the trace's final text");
    for (system, j) in ["λCLOUD", "Automerge", "Loro"].iter().zip(&merged) {
        println!(
            "{system:<10} {:>7.1} {:>12.2}       {}",
            secs(j) * 1000.0,
            secs(j) / secs(&merged[0]),
            j["end"]
        );
    }
}
