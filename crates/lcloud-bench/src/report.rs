//! The suite's report: each workload's results rendered as the table and notes of
//! `docs/BENCHMARKS.md`, against its targets, and the results section rewritten there.

use super::*;

const START: &str = "<!-- lcloud-bench:start -->";
const END: &str = "<!-- lcloud-bench:end -->";

pub(crate) fn write_docs(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("{} not found: results not written", path.display());
        return;
    };
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        eprintln!(
            "no {START} … {END} markers in {}: results not written",
            path.display()
        );
        return;
    };
    let new = format!("{}{START}\n{section}\n{}", &text[..a], &text[b..]);
    match std::fs::write(&path, new) {
        Ok(()) => eprintln!("wrote the results into {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// A target's verdict in the tables.
fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// The line that stands for a table when one of its child runs failed.
fn failed(title: &str, runs: &[J]) -> Option<String> {
    let e = runs.iter().find_map(|r| r.get("error"))?;
    Some(format!("\n{title}: error: {}\n", e.as_str().unwrap_or("?")))
}

/// W13: checking a proof of a long history, against the machine's verification limit.
pub(crate) fn render_w13(r: &J) -> String {
    if let Some(e) = failed("W13 (proofs)", std::slice::from_ref(r)) {
        return e;
    }
    let mut t = format!(
        "\nW13, `verify-proof` of a proof of {} ops (single-op experiences by three members, attesting; checked with no store, as `lcloud verify-proof` does). Verification limit, measured in the same process: ZIP-215 batches of 1 024 on every core at once, {:.0} signatures/s:\n\n| proof from | bytes | experiences checked | seconds | experiences/s | ÷ limit |\n|---|---:|---:|---:|---:|---:|\n",
        r["ops"],
        f(&r["limit"])
    );
    for name in ["full", "checkpoint"] {
        let w = &r[name];
        t.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} |\n",
            match name {
                "full" => "the genesis (`--full`)".to_owned(),
                _ => format!("the final checkpoint at depth {}", w["checkpoint"]),
            },
            w["bytes"],
            w["experiences"],
            f(&w["secs"]),
            f(&w["experiences_per_s"]),
            f(&w["of_limit"]),
        ));
    }
    let ratio = f(&r["full"]["of_limit"]);
    t.push_str(&format!(
        "\nTarget: the full proof checked at ≥ 0.6 of the verification limit: {} ({ratio:.2}).\n",
        verdict(ratio >= 0.6)
    ));
    t
}

/// W12: a store's bytes against its state's, before and after compaction.
pub(crate) fn render_w12(r: &J) -> String {
    if let Some(e) = failed("W12 (store bytes)", std::slice::from_ref(r)) {
        return e;
    }
    let mut t = String::from(
        "\nW12, a store's bytes against its state's (one member writes W1's and W2's sets over 1 000 keys in experiences of so many ops and attests; the store compacted with `--retain checkpoint`):\n\n| experiences of | ops | state bytes | store bytes, full | store bytes, compacted | experiences kept | compacted ÷ state |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut met = true;
    for (name, w) in [
        ("W1 (1 op each)", &r["w1"]),
        ("W2 (1 000 ops each)", &r["w2"]),
    ] {
        let ratio = f(&w["ratio"]);
        met &= ratio <= 1.1;
        t.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {ratio:.1} |\n",
            w["ops"], w["state_bytes"], w["full_bytes"], w["compacted_bytes"], w["kept"],
        ));
    }
    t.push_str(&format!(
        "\nTarget: a compacted store ≤ 1.1 × its state: {}.\n",
        if met {
            "met"
        } else {
            "**missed** (see the notes)"
        }
    ));
    t
}

/// W3 settled: W3's increments in memory, in an open cloud and in a one-member cloud that
/// attests and compacts, against Loro's W3 of the same run.
pub(crate) fn render_w3s(runs: &[J; 2], loro: &J) -> String {
    if let Some(e) = failed("W3 settled", runs) {
        return e;
    }
    let mut t = String::from(
        "\nW3 settled (`--child w3s open|settled`): W3's increments to one counter in one core replica in memory, every experience signed; `settled`: a one-member cloud that attests each checkpoint and compacts by the node's rule, so increments below a settled checkpoint merge into one element:\n\n| cloud | batches of 1: increments/s | elements | experiences held | batches of 1 000: increments/s | peak MiB |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        t.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.1} |\n",
            r["mode"].as_str().unwrap_or("?"),
            f(&r["batch1_per_s"]),
            r["batch1_elements"],
            r["batch1_held"],
            f(&r["batch1000_per_s"]),
            f(&r["peak_mib"]),
        ));
    }
    let (settled, lo_peak, lo_rate) = (&runs[1], f(&loro["peak_mib"]), f(&loro["batch1000_per_s"]));
    t.push_str(&format!(
        "| Loro (W3 above) | {:.0} | — | — | {lo_rate:.0} | {lo_peak:.1} |\n\nSettled against Loro: peak {:.2} × (target ≤ 2 ×: {}); batches of 1 000 {:.2} × (target ≥ 1 ×: {}).\n",
        f(&loro["batch1_per_s"]),
        f(&settled["peak_mib"]) / lo_peak,
        verdict(f(&settled["peak_mib"]) <= 2.0 * lo_peak),
        f(&settled["batch1000_per_s"]) / lo_rate,
        verdict(f(&settled["batch1000_per_s"]) >= lo_rate),
    ));
    t
}

/// W11: a new node joining from a full bundle and from a shallow one.
pub(crate) fn render_w11(r: &J) -> String {
    if let Some(e) = failed("W11 (shallow join)", std::slice::from_ref(r)) {
        return e;
    }
    let speedup = f(&r["speedup"]);
    format!(
        "\nW11, joining W10's cloud of {} ops (into a store on disk, every signature checked): from a bundle of the whole history {:.2} s ({} experiences, {:.1} MB); from a shallow bundle {:.3} s ({} experiences, {:.2} MB; exporting it took {:.2} s). Shallow join {:.1} × faster (target ≥ 20 ×: {}).\n",
        r["ops"],
        f(&r["full"]["secs"]),
        r["full"]["experiences"],
        f(&r["full"]["bytes"]) / 1e6,
        f(&r["shallow"]["secs"]),
        r["shallow"]["experiences"],
        f(&r["shallow"]["bytes"]) / 1e6,
        f(&r["shallow"]["export_secs"]),
        speedup,
        verdict(speedup >= 20.0),
    )
}

/// W9's table: contract calls beside the built-in fold, the runtime alone and wasmi.
/// W10: peak memory of the core's replica with and without compaction, at two lengths.
pub(crate) fn render_w10(runs: &[J]) -> String {
    if let Some(e) = failed("W10 (compaction)", runs) {
        return e;
    }
    let mut t = String::from(
        "\nW10, compaction (three members write 100-op experiences over 1 000 keys and attest every 256 depths into one replica: full; compacted at every final checkpoint; stored, as a node with `--retain checkpoint` keeps it):\n\n| ops | mode | peak MiB | experiences held at most | compactions | s |\n|---:|---|---:|---:|---:|---:|\n",
    );
    for r in runs {
        t.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {:.2} |\n",
            r["ops"],
            r["mode"].as_str().unwrap_or("?"),
            f(&r["peak_mib"]),
            r["held_max"],
            r["compactions"],
            f(&r["secs"]),
        ));
    }
    let peak = |i: usize| f(&runs[i]["peak_mib"]);
    let same_root = runs[0]["root"] == runs[1]["root"]
        && runs[2]["root"] == runs[3]["root"]
        && runs[0]["root"] == runs[4]["root"]
        && runs[2]["root"] == runs[5]["root"];
    t.push_str(&format!(
        "\nPeak memory from {} to {} ops: {:.2} × full, {:.2} × compacted (target: compacted does not grow with the history, ≤ 1.25 ×: {}). Compacted and full replicas end on the same root: {}.\n",
        runs[0]["ops"],
        runs[2]["ops"],
        peak(2) / peak(0),
        peak(3) / peak(1),
        verdict(peak(3) <= 1.25 * peak(1)),
        verdict(same_root),
    ));
    t.push_str(&format!(
        "Stored as a node with `--retain checkpoint` keeps it (every experience durably stored, the store compacted and loaded again): peak {:.2} × from {} to {} ops (target ≤ 1.25 ×: {}).\n",
        peak(5) / peak(4),
        runs[4]["ops"],
        runs[5]["ops"],
        verdict(peak(5) <= 1.25 * peak(4)),
    ));
    t
}

pub(crate) fn render_w9(w: &J, lim: &J) -> String {
    if let Some(e) = w.get("error") {
        return format!("\nW9 (contracts): error: {}\n", e.as_str().unwrap_or("?"));
    }
    let durable = f(&w["durable_calls_per_s"]);
    let interp_bound = f(&w["wasmi_instructions_per_s"]) / f(&w["fuel_per_transfer"]);
    let rewind_share = f(&w["rewind_s"]) / f(&w["forward_s"]);
    let mut t = format!(
        "\nW9, contracts (λCLOUD only: neither peer runs user code in its merge). The `bank` example (contracts/bank, {} calls, one `transfer` per experience, {} accounts):\n\n| measure | value | ratio | target |\n|---|---:|---|---|\n",
        w["calls"], 1000
    );
    let mut row = |name: &str, v: f64, ratio: String, target: String| {
        let shown = if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.4}")
        };
        t.push_str(&format!("| {name} | {shown} | {ratio} | {target} |\n"));
    };
    row(
        "calls/s folded and stored durably (one core, signatures excluded)",
        durable,
        format!(
            "{:.2} × the built-in Ledger's fold",
            durable / f(&w["ledger_calls_per_s"])
        ),
        format!("≥ 50 000: {}", verdict(durable >= 50_000.0)),
    );
    row(
        "calls/s folded (no store)",
        f(&w["folded_calls_per_s"]),
        "—".into(),
        "—".into(),
    );
    row(
        "calls/s signed and folded (signature included)",
        f(&w["signed_calls_per_s"]),
        format!(
            "{:.2} of 1-core sign/s",
            f(&w["signed_calls_per_s"]) / f(&lim["sign"])
        ),
        "—".into(),
    );
    row(
        "built-in Ledger: transfers/s folded",
        f(&w["ledger_calls_per_s"]),
        "—".into(),
        "—".into(),
    );
    row(
        "the runtime alone: transfers/s (fresh instance per call)",
        f(&w["runtime_calls_per_s"]),
        format!(
            "{:.3} of wasmi's bound ({:.0} instr/s ÷ {} fuel a transfer)",
            f(&w["runtime_calls_per_s"]) / interp_bound,
            f(&w["wasmi_instructions_per_s"]),
            w["fuel_per_transfer"]
        ),
        "—".into(),
    );
    row(
        &format!(
            "rewind: a late call sorting before {} applied calls, s",
            w["rewind_calls"]
        ),
        f(&w["rewind_s"]),
        format!("{rewind_share:.3} of folding them forward"),
        "—".into(),
    );
    row(
        "store bytes per call",
        f(&w["bytes_per_call"]),
        "—".into(),
        "—".into(),
    );
    row(
        "registry claims/s folded, each reading the document its author saw (100 reserved names)",
        f(&w["claims_per_s"]),
        format!(
            "{:.2} × bank transfers folded",
            f(&w["claims_per_s"]) / f(&w["folded_calls_per_s"])
        ),
        "—".into(),
    );
    t
}

pub(crate) fn render(
    r: &BTreeMap<(String, String), J>,
    lim: &J,
    size: Size,
    cores: usize,
) -> String {
    let get = |w: &str, s: &str| {
        r.get(&(w.to_owned(), s.to_owned()))
            .cloned()
            .unwrap_or(J::Null)
    };
    let num = |x: f64| {
        if x.is_nan() {
            "—".to_owned()
        } else if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.3}")
        }
    };
    let mut t = String::new();
    t.push_str(&format!(
        "Limits measured in this run (one core): Ed25519 sign {:.0}/s, verify {:.0}/s, ZIP-215 batch-64 {:.0}/s, batch-1024 {:.0}/s; BLAKE3 of 200 B {:.0}/s; fsync of 512 B {:.0}/s.\n\n",
        f(&lim["sign"]), f(&lim["verify"]), f(&lim["batch64"]), f(&lim["batch1024"]), f(&lim["blake3_200"]), f(&lim["fsync"])
    ));
    t.push_str(
        "| workload | λCLOUD | Automerge | Loro | ratio | target |\n|---|---:|---:|---:|---|---|\n",
    );
    let mut row = |name: &str, key: &str, w: &str, ratio: String, target: String| {
        let v = |s: &str| {
            let j = get(w, s);
            if let Some(e) = j.get("error") {
                format!("error: {}", e.as_str().unwrap_or("?"))
            } else {
                num(f(&j[key]))
            }
        };
        t.push_str(&format!(
            "| {name} | {} | {} | {} | {ratio} | {target} |\n",
            v("lcloud"),
            v("automerge"),
            v("loro")
        ));
    };
    let us = |w: &str, k: &str| f(&get(w, "lcloud")[k]);
    let am = |w: &str, k: &str| f(&get(w, "automerge")[k]);
    let lo = |w: &str, k: &str| f(&get(w, "loro")[k]);
    let w1 = us("w1", "ops_per_s");
    row(
        "W1 ops/s, 1 op per experience/transaction (λCLOUD: 64 concurrent durable writers)",
        "ops_per_s",
        "w1",
        format!("{:.2} of 1-core sign", w1 / f(&lim["sign"])),
        format!("≥ 50 000: {}", verdict(w1 >= 50_000.0)),
    );
    row(
        "W1 ops/s, one sequential writer (λCLOUD: fsync per write)",
        "sequential_ops_per_s",
        "w1",
        format!(
            "{:.2} of fsync/s",
            us("w1", "sequential_ops_per_s") / f(&lim["fsync"])
        ),
        "—".into(),
    );
    let w2 = us("w2", "ops_per_s");
    row(
        "W2 ops/s, 1000 ops per experience/transaction",
        "ops_per_s",
        "w2",
        format!("{:.2} × Loro", w2 / lo("w2", "ops_per_s")),
        format!(
            "≥ 1 000 000 and ≥ 2 × Loro: {}",
            verdict(w2 >= 1e6 && w2 >= 2.0 * lo("w2", "ops_per_s"))
        ),
    );
    row(
        "W3 counter increments/s, batches of 1",
        "batch1_per_s",
        "w3",
        "—".into(),
        "—".into(),
    );
    let w3 = us("w3", "batch1000_per_s");
    row(
        "W3 counter increments/s, batches of 1000",
        "batch1000_per_s",
        "w3",
        format!("{:.2} × Loro", w3 / lo("w3", "batch1000_per_s")),
        format!("≥ Loro: {}", verdict(w3 >= lo("w3", "batch1000_per_s"))),
    );
    let w4 = us("w4", "secs");
    row(
        &format!("W4 sync of {} concurrent ops per replica: wall s", size.n),
        "secs",
        "w4",
        "—".into(),
        format!(
            "faster than both: {}",
            verdict(w4 < am("w4", "secs") && w4 < lo("w4", "secs"))
        ),
    );
    let bytes = us("w4", "bytes_ratio");
    row(
        "W4 bytes exchanged ÷ bytes of what was missing",
        "bytes_ratio",
        "w4",
        "—".into(),
        format!("≤ 1.02: {}", verdict(bytes <= 1.02)),
    );
    let trips = us("w4", "round_trips");
    row(
        "W4 round trips",
        "round_trips",
        "w4",
        "—".into(),
        format!("1: {}", verdict(trips == 1.0)),
    );
    row(
        "W4 converged (1 = same root / same document)",
        "converged",
        "w4",
        "—".into(),
        "1".into(),
    );
    let b1 = us("w1", "bytes_per_op");
    row(
        "W5 bytes at rest per op after W1",
        "bytes_per_op",
        "w1",
        "—".into(),
        "—".into(),
    );
    let b2 = us("w2", "bytes_per_op");
    row(
        "W5 bytes at rest per op after W2",
        "bytes_per_op",
        "w2",
        format!("{:.2} × Automerge", b2 / am("w2", "bytes_per_op")),
        format!("≤ Automerge: {}", verdict(b2 <= am("w2", "bytes_per_op"))),
    );
    let _ = b1;
    let w6 = us("w6", "secs");
    row(
        "W6 reopen the W2 history and read the state: s",
        "secs",
        "w6",
        format!("{:.3} × Automerge", w6 / am("w6", "secs")),
        format!(
            "≤ 0.1 × Automerge: {}",
            verdict(w6 <= 0.1 * am("w6", "secs"))
        ),
    );
    let w7 = us("w7", "p50") / us("w7", "replay");
    row(
        &format!("W7 state at a random cut of {} ops: median s", size.history),
        "p50",
        "w7",
        format!("{w7:.4} of a full replay"),
        format!("≤ 0.01: {}", verdict(w7 <= 0.01)),
    );
    row("W7 p99 s", "p99", "w7", "—".into(), "—".into());
    row(
        "W7 one full replay: s",
        "replay",
        "w7",
        "—".into(),
        "—".into(),
    );
    let peak = |s: &str| {
        WORKLOADS
            .iter()
            .filter(|w| **w != "w5")
            .map(|w| f(&get(w, s)["peak_mib"]))
            .fold(0.0f64, f64::max)
    };
    t.push_str(&format!(
        "| W8 peak MiB, the largest over W1–W7 (each in its own process) | {:.0} | {:.0} | {:.0} | {:.2} × Automerge | ≤ 0.5 × Automerge: {} |\n",
        peak("lcloud"),
        peak("automerge"),
        peak("loro"),
        peak("lcloud") / peak("automerge"),
        verdict(peak("lcloud") <= 0.5 * peak("automerge"))
    ));
    t.push_str("\nPeak MiB per workload (λCLOUD / Automerge / Loro): ");
    let per: Vec<String> = WORKLOADS
        .iter()
        .filter(|w| **w != "w5")
        .map(|w| {
            format!(
                "{} {:.0}/{:.0}/{:.0}",
                w.to_uppercase(),
                f(&get(w, "lcloud")["peak_mib"]),
                f(&get(w, "automerge")["peak_mib"]),
                f(&get(w, "loro")["peak_mib"])
            )
        })
        .collect();
    t.push_str(&per.join(", "));
    t.push_str(&format!(
        ".\n\n{cores} cores. λCLOUD's W1–W3 writes are signed and durable; Automerge's and Loro's are in memory.\n"
    ));
    t
}
