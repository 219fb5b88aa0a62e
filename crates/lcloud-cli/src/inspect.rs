//! Reading a cloud: `state` (now or at a past cut), `conflicts`, `diff` between two cuts, and
//! `log` (every experience, or one node's chain, as a list or a graph).

use super::*;

pub(super) fn is_now(cut: &CutArgs) -> bool {
    cut.at.is_none() && cut.heads.is_none() && cut.without.is_none() && cut.seen_by.is_none()
}

/// The state at `--at CLOCK` from the store's index and checkpoints, without loading the
/// history; `None` when the cut asks for more than a clock or the store cannot answer so.
pub(super) fn state_from_index(dir: &FsPath, cut: &CutArgs) -> Result<Option<State>> {
    let Some(at) = &cut.at else { return Ok(None) };
    if cut.heads.is_some() || cut.without.is_some() || cut.seen_by.is_some() {
        return Ok(None);
    }
    let store = Store::open(dir)?;
    let names = Names::from_store(store.aliases()?, store.authors()?);
    let clock = names.clock(at)?;
    Ok(store.state_at_clock(&clock)?)
}

fn view_of(node: &Node, cut: &CutArgs) -> Result<View> {
    let without = cut
        .without
        .as_deref()
        .map(|n| node.names.node(n))
        .transpose()?;
    let cut = if let Some(at) = &cut.at {
        Some(Cut::Clock(node.names.clock(at)?))
    } else if let Some(h) = &cut.heads {
        Some(resolve::heads(&node.replica, h)?)
    } else if let Some(s) = &cut.seen_by {
        let id = resolve::seen_by(&node.names, &node.replica, s)?;
        let exp = node
            .replica
            .lattice()
            .experience(&id)
            .expect("resolved above");
        Some(Cut::Heads(exp.parents().copied().collect()))
    } else {
        None
    };
    Ok(View { cut, without })
}

pub(super) fn view_state(node: &Node, cut: &CutArgs) -> Result<State> {
    let view = view_of(node, cut)?;
    Ok(node.replica.view(&view)?)
}

pub(super) fn state(
    dir: &FsPath,
    json_out: bool,
    path: Option<String>,
    cut: &CutArgs,
) -> Result<()> {
    let p = path.as_deref().map(resolve::path).transpose()?;
    let value = if is_now(cut) {
        // The current state comes from the persisted fold: no history is read.
        let store = Store::open(dir)?;
        store.document(p.as_ref().unwrap_or(&lcloud_core::Path::root()))?
    } else if let Some(state) = state_from_index(dir, cut)? {
        match &p {
            None => Some(state.document()),
            Some(p) => state.get(p),
        }
    } else {
        let node = open(dir)?;
        let state = view_state(&node, cut)?;
        match &p {
            None => Some(state.document()),
            Some(p) => state.get(p),
        }
    };
    let value = match (value, &p) {
        (Some(v), _) => v,
        (None, Some(p)) => bail!("nothing at {p}"),
        (None, None) => Value::Null,
    };
    let j = value.to_json();
    if json_out {
        println!("{j}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&j).expect("JSON values print")
        );
    }
    Ok(())
}

pub(super) fn conflicts(dir: &FsPath, json_out: bool, path: &str) -> Result<()> {
    let node = open(dir)?;
    let p = resolve::path(path)?;
    let values = node.replica.state().doc.conflicts(&p);
    if values.is_empty() {
        bail!("no register value at {p}");
    }
    let rows: Vec<serde_json::Value> = values
        .iter()
        .map(|(dot, v)| {
            let author = node
                .replica
                .lattice()
                .experience(&dot.exp)
                .map(|e| e.author());
            json!({
                "experience": dot.exp.to_hex(),
                "author": author.map(|a| a.to_hex()),
                "value": v.to_json(),
            })
        })
        .collect();
    print(
        json_out,
        json!({"path": p.to_string(), "values": rows}),
        || {
            values
                .iter()
                .enumerate()
                .map(|(i, (dot, v))| {
                    let author = node
                        .replica
                        .lattice()
                        .experience(&dot.exp)
                        .map(|e| node.names.show(&e.author()));
                    let mark = if i + 1 == values.len() {
                        "  <- shown"
                    } else {
                        ""
                    };
                    format!(
                        "{} by {}: {v}{mark}",
                        dot.exp.short(),
                        author.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    Ok(())
}

pub(super) fn diff(dir: &FsPath, json_out: bool, from: &str, to: &str) -> Result<()> {
    let node = open(dir)?;
    let a = View {
        cut: resolve::cut(&node.names, &node.replica, from)?,
        without: None,
    };
    let b = View {
        cut: resolve::cut(&node.names, &node.replica, to)?,
        without: None,
    };
    let changes = node.replica.diff(&a, &b)?;
    let show = |v: &Option<Value>| v.as_ref().map_or(serde_json::Value::Null, Value::to_json);
    if json_out {
        let rows: Vec<_> = changes
            .iter()
            .map(|c| json!({"path": c.path.to_string(), "before": show(&c.before), "after": show(&c.after)}))
            .collect();
        println!("{}", json!({"changes": rows}));
        return Ok(());
    }
    if changes.is_empty() {
        println!("no changes");
    }
    for c in changes {
        match (&c.before, &c.after) {
            (None, Some(v)) => println!("+ {} = {v}", c.path),
            (Some(v), None) => println!("- {} (was {v})", c.path),
            (Some(x), Some(y)) => println!("~ {}: {x} -> {y}", c.path),
            (None, None) => {}
        }
    }
    Ok(())
}

/// The names of `ops`, runs of one kind counted: `set×4100,incr`.
fn op_names(ops: &[Op]) -> String {
    let mut out: Vec<(&str, usize)> = Vec::new();
    for op in ops {
        match out.last_mut() {
            Some((name, n)) if *name == op.name() => *n += 1,
            _ => out.push((op.name(), 1)),
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

/// The calls and deploys of `e` the fold rejected, by op index.
fn rejected_ops(replica: &Replica, e: &Experience) -> Vec<(u32, String)> {
    (0..e.ops().len() as u32)
        .filter(|i| e.ops()[*i as usize].is_ordered())
        .filter_map(|i| replica.rejection(&e.id(), i).map(|r| (i, r.reason)))
        .collect()
}

pub(super) fn log(dir: &FsPath, json_out: bool, graph: bool, only: Option<String>) -> Result<()> {
    let node = open(dir)?;
    let lattice = node.replica.lattice();
    let only = only.as_deref().map(|n| node.names.node(n)).transpose()?;
    let forked = lattice.forked_authors();
    let mut order = node.replica.canonical_order();
    order.reverse();
    order.retain(|i| only.is_none_or(|n| lattice.get(*i).author() == n));
    let lanes: Vec<NodeId> = {
        let mut seen = Vec::new();
        for i in order.iter().rev() {
            let a = lattice.get(*i).author();
            if !seen.contains(&a) {
                seen.push(a);
            }
        }
        seen
    };
    if json_out {
        let rows: Vec<_> = order
            .iter()
            .map(|i| {
                let e = lattice.get(*i);
                json!({
                    "id": e.id().to_hex(),
                    "author": e.author().to_hex(),
                    "seq": e.seq(),
                    "deps": e.header().deps.iter().map(Id::to_hex).collect::<Vec<_>>(),
                    "ops": e.ops().iter().map(Op::name).collect::<Vec<_>>(),
                    "fork": forked.get(&e.author()).is_some_and(|s| e.seq() >= *s),
                    "rejected": rejected_ops(&node.replica, e)
                        .into_iter()
                        .map(|(op, reason)| json!({"op": op, "reason": reason}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({"log": rows}));
        return Ok(());
    }
    // A lane is drawn from a node's first row to its last (later inserts win in `collect`).
    let last_row: BTreeMap<NodeId, usize> = order
        .iter()
        .enumerate()
        .map(|(row, i)| (lattice.get(*i).author(), row))
        .collect();
    let first_row: BTreeMap<NodeId, usize> = order
        .iter()
        .enumerate()
        .rev()
        .map(|(row, i)| (lattice.get(*i).author(), row))
        .collect();
    for (row, i) in order.iter().enumerate() {
        let e = lattice.get(*i);
        let is_fork = lattice
            .chain(&e.author())
            .iter()
            .filter(|x| x.seq() == e.seq())
            .count()
            > 1;
        let mut line = String::new();
        if graph {
            for lane in &lanes {
                let active = first_row[lane] <= row && row <= last_row[lane];
                line.push_str(match (*lane == e.author(), is_fork, active) {
                    (true, true, _) => "⑂ ",
                    (true, false, _) => "● ",
                    (false, _, true) => "│ ",
                    _ => "  ",
                });
            }
        }
        line.push_str(&format!(
            "{} {} seq {}  {}",
            e.id().short(),
            node.names.show(&e.author()),
            e.seq(),
            op_names(e.ops())
        ));
        if !e.header().deps.is_empty() {
            let deps: Vec<String> = e.header().deps.iter().map(|d| d.short()).collect();
            line.push_str(&format!("  <- {}", deps.join(",")));
        }
        if is_fork {
            line.push_str("  FORK");
        }
        for (op, reason) in rejected_ops(&node.replica, e) {
            let shown = lcloud_node::contracts::rejection_text(&reason);
            line.push_str(&format!("  REJECTED op {op} ({shown})"));
        }
        println!("{line}");
    }
    Ok(())
}
