//! Reading a cloud: `state` (now or at a past cut), `root`, `conflicts`, `diff` between two
//! cuts, and `log` (every experience, or one node's chain, as a list or a graph). What each
//! answers is `lcloud_node::inspect`'s JSON, computed here on a local store or by a node for
//! `--node URL` (`crate::remote_run`); both print it with the functions below.

use super::*;
use lcloud_node::inspect::{self, CutText};
use serde_json::Value as J;

pub(crate) fn cut_text(cut: &CutArgs) -> CutText {
    CutText {
        at: cut.at.clone(),
        heads: cut.heads.clone(),
        without: cut.without.clone(),
        seen_by: cut.seen_by.clone(),
    }
}

/// The state at `cut` of the store in `dir`: now from the persisted fold, at a clock from the
/// store's index and checkpoints, and only for other views from the loaded history.
fn state_at(dir: &FsPath, cut: &CutArgs) -> Result<State> {
    let cut = cut_text(cut);
    let store = Store::open(dir)?;
    if cut.is_now() {
        return Ok(store.state()?);
    }
    let names = Names::from_store(store.aliases()?, store.authors()?);
    if let Some(clock) = cut.clock_only(&names)?
        && let Some(state) = store.state_at_clock(&clock)?
    {
        return Ok(state);
    }
    drop(store);
    let node = open(dir)?;
    Ok(node.replica.view(&cut.view(&node.names, &node.replica)?)?)
}

pub(super) fn root(dir: &FsPath, json_out: bool, cut: &CutArgs) -> Result<()> {
    let root = state_at(dir, cut)?.root();
    print(json_out, json!({"root": root.to_hex()}), || root.to_hex());
    Ok(())
}

pub(super) fn state(
    dir: &FsPath,
    json_out: bool,
    path: Option<String>,
    cut: &CutArgs,
) -> Result<()> {
    let p = path.as_deref().map(resolve::path).transpose()?;
    let value = if cut_text(cut).is_now() {
        // The current state comes from the persisted fold: no history is read.
        let store = Store::open(dir)?;
        match (
            store.document(p.as_ref().unwrap_or(&lcloud_core::Path::root()))?,
            &p,
        ) {
            (Some(v), _) => v.to_json(),
            (None, Some(p)) => bail!("nothing at {p}"),
            (None, None) => J::Null,
        }
    } else {
        inspect::value(&state_at(dir, cut)?, p.as_ref())?
    };
    print_value(json_out, &value);
    Ok(())
}

pub(crate) fn print_value(json_out: bool, value: &J) {
    if json_out {
        println!("{value}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values print")
        );
    }
}

pub(super) fn conflicts(dir: &FsPath, json_out: bool, path: &str, cut: &CutArgs) -> Result<()> {
    let node = open(dir)?;
    let view = cut_text(cut).view(&node.names, &node.replica)?;
    let j = inspect::conflicts(&node.replica, &resolve::path(path)?, &view)?;
    print_conflicts(json_out, &node.names, &j);
    Ok(())
}

/// A node named by its hex id in an answer, as its alias or short id.
fn shown(names: &Names, hex: &J) -> String {
    hex.as_str()
        .and_then(NodeId::from_hex)
        .map(|n| names.show(&n))
        .unwrap_or_default()
}

/// The first 8 hex digits of an id in an answer (what `Id::short` shows).
fn short(hex: &J) -> &str {
    let s = hex.as_str().unwrap_or_default();
    &s[..s.len().min(8)]
}

pub(crate) fn print_conflicts(json_out: bool, names: &Names, j: &J) {
    print(json_out, j.clone(), || {
        let values = j["values"].as_array().cloned().unwrap_or_default();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mark = if i + 1 == values.len() {
                    "  <- shown"
                } else {
                    ""
                };
                let value = Value::from_json(&v["value"])
                    .map_or_else(|_| v["value"].to_string(), |v| v.to_string());
                format!(
                    "{} by {}: {value}{mark}",
                    short(&v["experience"]),
                    shown(names, &v["author"]),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
}

pub(super) fn diff(dir: &FsPath, json_out: bool, from: &str, to: &str) -> Result<()> {
    let node = open(dir)?;
    print_diff(
        json_out,
        &inspect::diff(&node.names, &node.replica, from, to)?,
    );
    Ok(())
}

pub(crate) fn print_diff(json_out: bool, j: &J) {
    if json_out {
        println!("{j}");
        return;
    }
    let changes = j["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("no changes");
    }
    let show = |v: &J| Value::from_json(v).map_or_else(|_| v.to_string(), |v| v.to_string());
    for c in changes {
        let path = c["path"].as_str().unwrap_or_default();
        if let Some(splices) = c["splices"].as_array() {
            println!(
                "~ {path}: {} splice{}",
                splices.len(),
                if splices.len() == 1 { "" } else { "s" }
            );
            for s in splices {
                let del = s["delete"].as_u64().unwrap_or_default();
                let ins = &s["insert"];
                let ins = match ins {
                    J::String(t) if t.is_empty() => String::new(),
                    J::Array(a) if a.is_empty() => String::new(),
                    v => format!(" +{}", show(v)),
                };
                let del = if del > 0 {
                    format!(" -{del}")
                } else {
                    String::new()
                };
                println!("    @{}{del}{ins}", s["index"]);
            }
            continue;
        }
        match (&c["before"], &c["after"]) {
            (J::Null, J::Null) => {}
            (J::Null, v) => println!("+ {path} = {}", show(v)),
            (v, J::Null) => println!("- {path} (was {})", show(v)),
            (x, y) => println!("~ {path}: {} -> {}", show(x), show(y)),
        }
    }
}

/// `lcloud log`'s page: at most `limit` rows (all without one), before `before`.
pub(crate) struct Page {
    pub(crate) limit: Option<u64>,
    pub(crate) before: Option<String>,
}

pub(super) fn log(
    dir: &FsPath,
    json_out: bool,
    graph: bool,
    only: Option<String>,
    page: &Page,
) -> Result<()> {
    let node = open(dir)?;
    let only = only.as_deref().map(|n| node.names.node(n)).transpose()?;
    let j = inspect::log(
        &node.replica,
        only,
        page.before.as_deref(),
        page.limit.map(|l| l as usize),
    )?;
    print_log(json_out, graph, &node.names, &j);
    Ok(())
}

/// The names of ops, runs of one kind counted: `set×4100,incr`.
fn op_names(ops: &[J]) -> String {
    let mut out: Vec<(&str, usize)> = Vec::new();
    for op in ops {
        let name = op.as_str().unwrap_or("?");
        match out.last_mut() {
            Some((n, k)) if *n == name => *k += 1,
            _ => out.push((name, 1)),
        }
    }
    let shown: Vec<String> = out
        .into_iter()
        .map(|(name, n)| {
            if n == 1 {
                name.to_owned()
            } else {
                format!("{name}×{n}")
            }
        })
        .collect();
    shown.join(",")
}

pub(crate) fn print_log(json_out: bool, graph: bool, names: &Names, j: &J) {
    if json_out {
        println!("{j}");
        return;
    }
    let rows = j["log"].as_array().cloned().unwrap_or_default();
    let author = |r: &J| r["author"].as_str().unwrap_or_default().to_owned();
    // Lanes in the order nodes first appear, oldest first; a lane is drawn from a node's
    // first row to its last.
    let mut lanes: Vec<String> = Vec::new();
    for r in rows.iter().rev() {
        if !lanes.contains(&author(r)) {
            lanes.push(author(r));
        }
    }
    let mut first_row = BTreeMap::new();
    let mut last_row = BTreeMap::new();
    for (row, r) in rows.iter().enumerate() {
        first_row.entry(author(r)).or_insert(row);
        last_row.insert(author(r), row);
    }
    for (row, r) in rows.iter().enumerate() {
        let me = author(r);
        let fork = r["fork"].as_bool().unwrap_or(false);
        let mut line = String::new();
        if graph {
            for lane in &lanes {
                let active = first_row[lane] <= row && row <= last_row[lane];
                line.push_str(match (*lane == me, fork, active) {
                    (true, true, _) => "⑂ ",
                    (true, false, _) => "● ",
                    (false, _, true) => "│ ",
                    _ => "  ",
                });
            }
        }
        line.push_str(&format!(
            "{} {} seq {}  {}",
            short(&r["id"]),
            shown(names, &r["author"]),
            r["seq"],
            op_names(r["ops"].as_array().map_or(&[][..], |v| v.as_slice()))
        ));
        let deps: Vec<&str> = r["deps"]
            .as_array()
            .map_or(&[][..], |v| v.as_slice())
            .iter()
            .map(short)
            .collect();
        if !deps.is_empty() {
            line.push_str(&format!("  <- {}", deps.join(",")));
        }
        if fork {
            line.push_str("  FORK");
        }
        for rej in r["rejected"].as_array().map_or(&[][..], |v| v.as_slice()) {
            line.push_str(&format!(
                "  REJECTED op {} ({})",
                rej["op"],
                rej["text"].as_str().unwrap_or_default()
            ));
        }
        println!("{line}");
    }
    if let Some(next) = j["next"].as_str() {
        println!("(more: lcloud log --before {next})");
    }
}

/// The cut's query parameters, for a node's `/api/state` and `/api/root`.
pub(crate) fn cut_query(cut: &CutArgs) -> Vec<(&'static str, String)> {
    [
        ("at", &cut.at),
        ("heads", &cut.heads),
        ("without", &cut.without),
        ("seen_by", &cut.seen_by),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

/// The node's names for nodes (its aliases), to print what it answers.
pub(crate) fn remote_names(remote: &crate::remote::Remote) -> Result<Names> {
    let aliases = remote.get("/api/aliases", &[])?;
    let aliases = aliases
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, name)| Some((NodeId::from_hex(id)?, name.as_str()?.to_owned())))
        .collect();
    Ok(Names::from_store(aliases, Vec::new()))
}

/// `state`, `root`, `conflicts`, `diff` and `log` against a running node: it answers from its
/// store and memory (`/api/state`, `/api/root`, `/api/conflicts`, `/api/diff`, `/api/log`),
/// and they print as on a local store. `log` without `--limit` reads every page.
pub(crate) fn remote(
    remote: &crate::remote::Remote,
    json_out: bool,
    command: Command,
) -> Result<()> {
    let get = |path: &str, q: Vec<(&'static str, String)>| {
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        remote.get(path, &q)
    };
    match command {
        Command::State { path, cut } => {
            let mut q = cut_query(&cut);
            q.push(("path", path.unwrap_or_default()));
            print_value(json_out, &get("/api/state", q)?);
        }
        Command::Root { cut } => {
            let v = get("/api/root", cut_query(&cut))?;
            print(json_out, v.clone(), || {
                v["root"].as_str().unwrap_or_default().to_owned()
            });
        }
        Command::Conflicts { path, cut } => {
            let mut q = cut_query(&cut);
            q.push(("path", path));
            let v = get("/api/conflicts", q)?;
            print_conflicts(json_out, &remote_names(remote)?, &v);
        }
        Command::Diff { from, to } => {
            print_diff(
                json_out,
                &get("/api/diff", vec![("from", from), ("to", to)])?,
            );
        }
        Command::Log {
            graph,
            limit,
            before,
        } => {
            let page = |before: Option<String>, limit: u64| {
                let mut q = vec![("limit", limit.to_string())];
                q.extend(before.map(|b| ("before", b)));
                get("/api/log", q)
            };
            let j = match limit {
                Some(l) => page(before, l)?,
                None => {
                    // Every page, oldest rows last, as one answer.
                    let mut rows = Vec::new();
                    let mut next = before;
                    loop {
                        let mut p = page(next, inspect::LOG_PAGE_MAX as u64)?;
                        rows.extend(
                            p["log"]
                                .as_array_mut()
                                .map(std::mem::take)
                                .unwrap_or_default(),
                        );
                        match p["next"].as_str() {
                            Some(n) => next = Some(n.to_owned()),
                            None => break,
                        }
                    }
                    json!({"log": rows, "next": null})
                }
            };
            print_log(json_out, graph, &remote_names(remote)?, &j);
        }
        _ => unreachable!("only reads of the history are sent here"),
    }
    Ok(())
}
