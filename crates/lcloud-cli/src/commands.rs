//! What each command does: open the store, act through the core, persist durably, print.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path as FsPath, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lcloud_core::{
    Cut, EXPERIENCE_BYTES_MAX, Edit, Experience, ForkPolicy, Genesis, Id, Items, NodeId, OPS_MAX,
    Op, Path, Replica, State, Value, Verified, validate,
};
use lcloud_store::{Identity, Store, bundle};
use serde_json::json;

use crate::resolve::{self, Names};
use crate::{Cli, Command, CutArgs, InitArgs, KeyAction, MemberAction, NodeAction};

#[path = "history.rs"]
mod history;
#[path = "inspect.rs"]
pub(crate) mod inspect;
pub use history::Rejected;
use history::{compact, export, export_proof, forks, import, vacuum, verify, verify_proof};
use inspect::{Page, conflicts, diff, log, root, state};

/// Everything a command needs from the node's directory.
pub(crate) struct Node {
    pub(crate) store: Store,
    pub(crate) replica: Replica,
    pub(crate) names: Names,
}

fn default_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "lcloud")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".lcloud"))
}

fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || len < 1000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn open(dir: &FsPath) -> Result<Node> {
    let store = Store::open(dir)?;
    let bar = progress(store.len(), "loading");
    let replica = store.load(&mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let names = Names::new(store.aliases()?, &replica);
    Ok(Node {
        store,
        replica,
        names,
    })
}

pub fn run(cli: Cli) -> Result<()> {
    let dir = cli.dir.clone().unwrap_or_else(default_dir);
    let json_out = cli.json;
    match &cli.command {
        // Nothing but the file: no node directory, no node.
        Command::VerifyProof { file } => return verify_proof(json_out, file),
        // Two nodes of their own, directories or API URLs.
        Command::Bisect {
            a,
            b,
            token_a,
            token_b,
        } => {
            let remote = |url: &str, file: Option<&FsPath>| {
                let file = file.or(cli.token_file.as_deref());
                let token = crate::token::for_remote(file, &dir)?;
                crate::remote::Remote::new(url, token, cli.ca_cert.as_deref())
            };
            let (ra, rb) = (
                |url: &str| remote(url, token_a.as_deref()),
                |url: &str| remote(url, token_b.as_deref()),
            );
            return crate::bisect::run(json_out, (a, &ra), (b, &rb));
        }
        _ => {}
    }
    match cli.node.as_deref() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            let token = crate::token::for_remote(cli.token_file.as_deref(), &dir)?;
            return crate::remote_run(url, token, cli.ca_cert.as_deref(), json_out, cli.command);
        }
        Some(other) if !matches!(cli.command, Command::Log { .. }) => bail!(
            "--node takes a running node's API URL, like http://127.0.0.1:7400 (got {other:?})"
        ),
        _ => {}
    }
    if Store::exists(&dir) && !matches!(cli.command, Command::Node { .. }) {
        crate::membership::settle_rotation(&dir)?;
    }
    match cli.command {
        Command::Init(args) => init(&dir, json_out, args),
        Command::Token { action } => crate::token::run(&dir, json_out, action),
        Command::Ui { api, no_open } => crate::token::ui(&dir, api, !no_open),
        Command::Join {
            file,
            alias,
            shallow,
        } => {
            let from_url = file
                .to_str()
                .filter(|f| f.starts_with("http://") || f.starts_with("https://"));
            match from_url {
                Some(url) if shallow => {
                    let token = crate::token::for_remote(cli.token_file.as_deref(), &dir)?;
                    let remote = crate::remote::Remote::new(url, token, cli.ca_cert.as_deref())?;
                    let bytes = remote.shallow()?;
                    join_shallow(&dir, json_out, &file, &bytes, alias)
                }
                Some(url) => bail!(
                    "joining from a node ({url}) takes --shallow; to join with the whole history, export a bundle on that node (`lcloud export FILE`) and join from the file"
                ),
                None => join(&dir, json_out, &file, alias, shallow),
            }
        }
        Command::Id => {
            let id = Identity::load_or_create(&dir)?;
            print(json_out, json!({"node": id.id().to_hex()}), || {
                id.id().to_hex()
            });
            Ok(())
        }
        Command::Alias { name, node } => {
            let id = NodeId::from_hex(&node)
                .ok_or_else(|| anyhow!("bad node id {node:?}: give all 64 hex digits"))?;
            if name.is_empty()
                || name.contains([':', ',', '@'])
                || NodeId::from_hex(&name).is_some()
            {
                bail!(
                    "bad alias {name:?}: it may not be empty, contain ':', ',' or '@', or be a node id"
                );
            }
            let mut store = Store::open(&dir)?;
            store.set_alias(&id, &name)?;
            print(
                json_out,
                json!({"alias": name, "node": id.to_hex()}),
                || format!("{name} = {id}"),
            );
            Ok(())
        }
        Command::Set { path, value } => {
            let op = Op::Set {
                path: resolve::path(&path)?,
                value: resolve::json(&value)?,
            };
            write(&dir, json_out, vec![op])
        }
        Command::Incr { path, n } => write(
            &dir,
            json_out,
            vec![Op::Incr {
                path: resolve::path(&path)?,
                by: n,
            }],
        ),
        Command::Add { path, value } => write(
            &dir,
            json_out,
            vec![Op::Add {
                path: resolve::path(&path)?,
                value: resolve::json(&value)?,
            }],
        ),
        Command::Remove { path, value } => write(
            &dir,
            json_out,
            vec![Op::Remove {
                path: resolve::path(&path)?,
                value: resolve::json(&value)?,
            }],
        ),
        Command::Del { path } => write(
            &dir,
            json_out,
            vec![Op::Del {
                path: resolve::path(&path)?,
            }],
        ),
        Command::Batch => write_edits(&dir, json_out, read_batch()?),
        command @ (Command::Insert { .. }
        | Command::Delete { .. }
        | Command::Splice { .. }
        | Command::Move { .. }) => {
            let edits = write_edits_of(&command)?.expect("an edit command");
            write_edits(&dir, json_out, edits)
        }
        Command::Member {
            action: MemberAction::List,
        } => crate::membership::list(&dir, json_out),
        Command::Member { action } => {
            let aliases = Store::open(&dir)?.aliases()?;
            let op = crate::membership::op(&action, |name| {
                aliases
                    .iter()
                    .find(|(_, a)| a.as_str() == name)
                    .map(|(id, _)| *id)
            })?
            .expect("list is handled above");
            write(&dir, json_out, vec![op])
        }
        Command::Key {
            action: KeyAction::Rotate,
        } => crate::membership::rotate_key(&dir, json_out),
        Command::State { path, cut } => state(&dir, json_out, path, &cut),
        Command::Conflicts { path, cut } => conflicts(&dir, json_out, &path, &cut),
        Command::Root { cut } => root(&dir, json_out, &cut),
        Command::Status => crate::status::offline(&dir, json_out),
        Command::Clock => {
            let node = open(&dir)?;
            let clock = node.replica.lattice().frontier();
            print(json_out, json!({"clock": clock_json(&clock)}), || {
                node.names.show_clock(&clock)
            });
            Ok(())
        }
        Command::Heads => {
            let node = open(&dir)?;
            let heads: Vec<String> = node
                .replica
                .lattice()
                .heads()
                .iter()
                .map(Id::to_hex)
                .collect();
            print(json_out, json!({"heads": heads}), || heads.join("\n"));
            Ok(())
        }
        Command::Diff { from, to } => diff(&dir, json_out, &from, &to),
        Command::Log {
            graph,
            limit,
            before,
        } => log(
            &dir,
            json_out,
            graph,
            cli.node.clone(),
            &Page { limit, before },
        ),
        Command::Export {
            file,
            since,
            shallow,
            proof: Some(cut),
            full,
        } => {
            debug_assert!(since.is_none() && !shallow);
            export_proof(&dir, json_out, &file, &cut, full)
        }
        Command::Export {
            file,
            since,
            shallow,
            proof: None,
            ..
        } => export(&dir, json_out, &file, since, shallow),
        Command::VerifyProof { .. } | Command::Bisect { .. } => unreachable!("answered above"),
        Command::Import { file } => {
            let mut node = open(&dir)?;
            import(&mut node, json_out, &file)
        }
        Command::Verify => verify(&dir, json_out),
        Command::Compact { retain } => compact(&dir, json_out, retain),
        Command::Vacuum => vacuum(&dir, json_out),
        Command::Forks => forks(&dir, json_out),
        Command::Demo { story, keep } => crate::demo::run(cli.dir.clone(), story, keep),
        Command::Contract { action } => crate::contract::run(&dir, json_out, action),
        Command::Call {
            contract,
            function,
            args,
            fuel,
        } => crate::contract::call(&dir, json_out, &contract, &function, args.as_deref(), fuel),
        Command::Node {
            action:
                NodeAction::Run {
                    listen,
                    peers,
                    api,
                    sync_every,
                    mdns,
                    api_host,
                    debug_api,
                    retain,
                    cors,
                    tls_cert,
                    tls_key,
                    max_connections,
                    max_connections_per_address,
                    token_rate,
                    header_timeout,
                    body_timeout,
                    write_timeout,
                },
        } => {
            let addr = |a: &String| -> Result<lcloud_net::Addr> {
                a.parse()
                    .with_context(|| format!("bad multiaddr {a:?} (e.g. /ip4/127.0.0.1/tcp/7401)"))
            };
            if !(sync_every > 0.0 && sync_every.is_finite()) {
                bail!("--sync-every must be a positive number of seconds");
            }
            // The node's log goes to stderr: warnings and its own events by default; RUST_LOG
            // (e.g. `RUST_LOG=debug`) says otherwise.
            let filter =
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,libp2p_gossipsub=error,lcloud_node=info,lcloud_net=info",
                    )
                });
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .try_init();
            lcloud_node::run(lcloud_node::Config {
                dir,
                listen: listen.iter().map(addr).collect::<Result<_>>()?,
                peers: peers.iter().map(addr).collect::<Result<_>>()?,
                api,
                sync_every: std::time::Duration::from_secs_f64(sync_every),
                mdns,
                api_hosts: api_host.clone(),
                debug_api,
                cors,
                tls: tls_cert.zip(tls_key),
                limits: lcloud_node::serve::Limits {
                    connections: max_connections.max(1),
                    per_address: max_connections_per_address.max(1),
                    header: header_timeout,
                    body_idle: body_timeout,
                    write_stall: write_timeout,
                },
                token_rate,
                retain: match retain {
                    crate::NodeRetain::Full => None,
                    crate::NodeRetain::Headers => Some(lcloud_store::Retain::Headers),
                    crate::NodeRetain::Checkpoint => Some(lcloud_store::Retain::Checkpoint),
                },
                read_only: false,
                ui_token: None,
                ui_ready: None,
            })?;
            Ok(())
        }
    }
}

/// The edits a write command carries (parsed and checked locally), or `None` for others.
pub fn write_edits_of(command: &Command) -> Result<Option<Vec<Edit>>> {
    let edit = match command {
        Command::Insert { path, index, value } => Some(Edit::Insert {
            path: resolve::path(path)?,
            index: *index,
            items: match resolve::json(value)? {
                Value::Str(s) => Items::Text(s),
                v => Items::List(vec![v]),
            },
        }),
        Command::Delete { path, index, count } => Some(Edit::Delete {
            path: resolve::path(path)?,
            index: *index,
            count: *count,
        }),
        Command::Splice {
            path,
            index,
            delete,
            text,
        } => Some(Edit::Splice {
            path: resolve::path(path)?,
            index: *index,
            delete: *delete,
            text: text.clone(),
        }),
        Command::Move { path, from, to } => Some(Edit::Move {
            path: resolve::path(path)?,
            from: *from,
            to: *to,
        }),
        Command::Batch => return Ok(Some(read_batch()?)),
        _ => None,
    };
    if let Some(edit) = edit {
        return Ok(Some(vec![edit]));
    }
    Ok(write_ops(command)?.map(|ops| ops.into_iter().map(Edit::Op).collect()))
}

/// The ops a write command carries (parsed and checked locally), or `None` for others.
fn write_ops(command: &Command) -> Result<Option<Vec<Op>>> {
    Ok(Some(match command {
        Command::Set { path, value } => vec![Op::Set {
            path: resolve::path(path)?,
            value: resolve::json(value)?,
        }],
        Command::Incr { path, n } => vec![Op::Incr {
            path: resolve::path(path)?,
            by: *n,
        }],
        Command::Add { path, value } => vec![Op::Add {
            path: resolve::path(path)?,
            value: resolve::json(value)?,
        }],
        Command::Remove { path, value } => vec![Op::Remove {
            path: resolve::path(path)?,
            value: resolve::json(value)?,
        }],
        Command::Del { path } => vec![Op::Del {
            path: resolve::path(path)?,
        }],
        Command::Member { action } => match crate::membership::op(action, |_| None)? {
            Some(op) => vec![op],
            None => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

/// A clock as JSON: node id (hex) → seq, in node id order.
pub(crate) fn clock_json(c: &lcloud_core::VectorClock) -> serde_json::Value {
    c.0.iter()
        .map(|(n, s)| (n.to_hex(), json!(s)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(crate) fn print(json_out: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

fn init(dir: &FsPath, json_out: bool, args: InitArgs) -> Result<()> {
    let InitArgs {
        alias,
        cloud,
        members,
        open,
        quarantine_forks: quarantine,
        initial,
    } = args;
    if Store::exists(dir) {
        bail!("a λCLOUD store already exists in {}", dir.display());
    }
    let members = if open {
        None
    } else {
        let mut ids = members
            .iter()
            .map(|m| {
                NodeId::from_hex(m)
                    .ok_or_else(|| anyhow!("bad --member {m:?}: give all 64 hex digits"))
            })
            .collect::<Result<Vec<_>>>()?;
        ids.sort();
        ids.dedup();
        Some(ids)
    };
    let init = match initial {
        Some(text) => resolve::json(&text)?,
        None => Value::map(),
    };
    let genesis = Genesis {
        name: cloud.clone(),
        init,
        members,
        fork_policy: if quarantine {
            ForkPolicy::Quarantine
        } else {
            ForkPolicy::Concurrent
        },
    };
    lcloud_core::check_nesting(std::slice::from_ref(&Op::Genesis(genesis.clone())))
        .context("--initial")?;
    let identity = Identity::load_or_create(dir)?;
    let genesis = Experience::create_genesis(identity.key(), genesis);
    let mut store = Store::create(dir, &genesis)?;
    store.record_signed(1)?;
    if let Some(a) = &alias {
        store.set_alias(&identity.id(), a)?;
    }
    let token = first_token(dir)?;
    print(
        json_out,
        json!({"cloud": genesis.id().to_hex(), "node": identity.id().to_hex(), "dir": dir, "token_file": token}),
        || {
            format!(
                "created cloud {cloud:?} {}\nnode {}{}\nstore {}\napi token (admin) {}",
                genesis.id(),
                identity.id(),
                alias.map(|a| format!(" ({a})")).unwrap_or_default(),
                dir.display(),
                token.display()
            )
        },
    );
    Ok(())
}

/// The directory's first API token (admin), made beside the new store: where it is.
fn first_token(dir: &FsPath) -> Result<std::path::PathBuf> {
    lcloud_store::tokens::ensure_admin_token(dir, lcloud_store::tokens::unix_now())?;
    Ok(dir.join(lcloud_store::tokens::ADMIN_FILE))
}

fn join(
    dir: &FsPath,
    json_out: bool,
    file: &FsPath,
    alias: Option<String>,
    shallow: bool,
) -> Result<()> {
    if Store::exists(dir) {
        bail!("a λCLOUD store already exists in {}", dir.display());
    }
    let bytes = read_file(file)?;
    if lcloud_store::shallow::is_shallow(&bytes) {
        return join_shallow(dir, json_out, file, &bytes, alias);
    }
    if shallow {
        bail!(
            "{} is a bundle of the whole history, not a shallow one: make one with `lcloud export --shallow FILE`, or join without --shallow",
            file.display()
        );
    }
    let b =
        bundle::decode(&bytes).with_context(|| format!("cannot join from {}", file.display()))?;
    let first = b
        .records
        .first()
        .ok_or_else(|| anyhow!("{} holds no experiences", file.display()))?;
    let genesis = validate(first, &b.cloud).with_context(|| {
        format!(
            "the first experience in {} is not this cloud's genesis",
            file.display()
        )
    })?;
    if genesis.genesis().is_none() {
        bail!(
            "the first experience in {} is not a genesis",
            file.display()
        );
    }
    let identity = Identity::load_or_create(dir)?;
    let store = Store::create(dir, &genesis)?;
    let replica =
        Replica::with_registry(genesis, lcloud_contracts::registry()).map_err(|e| anyhow!(e))?;
    let mut node = Node {
        names: Names::new(store.aliases()?, &replica),
        store,
        replica,
    };
    if let Some(a) = &alias {
        node.store.set_alias(&identity.id(), a)?;
    }
    import(&mut node, json_out, file)?;
    let token = first_token(dir)?;
    if !json_out {
        println!(
            "joined cloud {} as node {}\napi token (admin) {}",
            node.store.cloud(),
            identity.id(),
            token.display()
        );
    }
    Ok(())
}

/// Joins from a shallow bundle (read from `file`, a path or a node's URL): restored and
/// checked whole before anything is stored.
fn join_shallow(
    dir: &FsPath,
    json_out: bool,
    file: &FsPath,
    bytes: &[u8],
    alias: Option<String>,
) -> Result<()> {
    if Store::exists(dir) {
        bail!("a λCLOUD store already exists in {}", dir.display());
    }
    let restored = lcloud_store::shallow::restore(bytes)
        .with_context(|| format!("cannot join from {}", file.display()))?;
    let identity = Identity::load_or_create(dir)?;
    let mut store = Store::create_compacted(dir, &restored.replica)?;
    if let Some(a) = &alias {
        store.set_alias(&identity.id(), a)?;
    }
    let token = first_token(dir)?;
    let lattice = restored.replica.lattice();
    let root = restored.replica.root();
    print(
        json_out,
        json!({
            "cloud": store.cloud().to_hex(),
            "node": identity.id().to_hex(),
            "checkpoint": {"depth": restored.depth, "root": restored.root.to_hex()},
            "experiences": lattice.len(),
            "root": root.to_hex(),
        }),
        || {
            format!(
                "joined cloud {} as node {} from the final checkpoint of depth {} (root {}, \
                 attested by every member)\n{} experiences held; root {}\napi token (admin) {}",
                store.cloud(),
                identity.id(),
                restored.depth,
                restored.root,
                lattice.len(),
                root,
                token.display()
            )
        },
    );
    Ok(())
}

fn read_file(file: &FsPath) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn read_batch() -> Result<Vec<Edit>> {
    let mut ops = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        if ops.len() == OPS_MAX {
            bail!("more than {OPS_MAX} ops: split the batch");
        }
        ops.push(batch_op(&line).with_context(|| format!("line {}", n + 1))?);
    }
    if ops.is_empty() {
        bail!(
            "no ops on stdin (one JSON object per line, e.g. {{\"op\":\"set\",\"path\":\"/a\",\"value\":1}})"
        );
    }
    Ok(ops)
}

fn batch_op(line: &str) -> Result<Edit> {
    let j: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("malformed JSON {line:?}"))?;
    Edit::from_json(&j).map_err(|e| anyhow!(e))
}

/// Writes `edits` as this node's next experience: list and text edits are turned into ops
/// against the stored document first ([`lcloud_core::resolve`]).
fn write_edits(dir: &FsPath, json_out: bool, edits: Vec<Edit>) -> Result<()> {
    if edits.iter().all(|e| e.as_op().is_some()) {
        let ops = edits
            .into_iter()
            .filter_map(|e| e.as_op().cloned())
            .collect();
        return write(dir, json_out, ops);
    }
    let ops = {
        let store = Store::open(dir)?;
        let identity = Identity::load(dir)?.ok_or_else(|| {
            anyhow!(
                "no identity in {}: run `lcloud init` or `lcloud join`",
                dir.display()
            )
        })?;
        let paths: Vec<Path> = edits.iter().filter_map(Edit::path).cloned().collect();
        let doc = store.doc_under(&paths)?;
        lcloud_core::resolve(&doc, identity.id(), edits)?
    };
    write(dir, json_out, ops)
}

/// Refuses ops that would do nothing because their target does not exist.
fn check_targets(store: &Store, ops: &[Op]) -> Result<()> {
    for op in ops {
        match op {
            Op::Del { path } if store.document(path)?.is_none() => {
                bail!("nothing at {path} to delete")
            }
            Op::Remove { path, value } => {
                let present = match store.document(path)? {
                    Some(Value::List(items)) => items.contains(value),
                    _ => false,
                };
                if !present {
                    bail!("{value} is not in the set at {path}");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn write(dir: &FsPath, json_out: bool, ops: Vec<Op>) -> Result<()> {
    let mut store = Store::open(dir)?;
    let identity = Identity::load(dir)?.ok_or_else(|| {
        anyhow!(
            "no identity in {}: run `lcloud init` or `lcloud join`",
            dir.display()
        )
    })?;
    check_targets(&store, &ops)?;
    // The fast path applies the ops to the persisted state; calls need the whole history.
    let exp = match store.write_local(&identity, ops.clone())? {
        Some(exp) => exp,
        None => {
            drop(store);
            write_loaded(&mut open(dir)?, &identity, ops, None)?
        }
    };
    print(
        json_out,
        json!({"id": exp.id().to_hex(), "seq": exp.seq(), "ops": exp.ops().len()}),
        || {
            format!(
                "{} seq {} ({} op{})",
                exp.id().short(),
                exp.seq(),
                exp.ops().len(),
                if exp.ops().len() == 1 { "" } else { "s" }
            )
        },
    );
    Ok(())
}

/// Writes `ops` (with a fuel limit for their calls) as this node's next experience through the
/// loaded history, durably.
pub(crate) fn write_loaded(
    node: &mut Node,
    identity: &Identity,
    ops: Vec<Op>,
    fuel: Option<u64>,
) -> Result<Verified<Experience>> {
    let me = identity.id();
    node.store.check_can_sign(&me, &node.replica)?;
    if let Some(Err(e)) = node.replica.check_writes(&me, &[&ops]).pop() {
        return Err(e.into());
    }
    let draft = lcloud_core::Draft {
        fuel,
        ..node.replica.draft(&me, ops)
    };
    let unsigned = draft.seal(me);
    unsigned.check_nesting()?;
    let size = unsigned.encoded_len();
    if size > EXPERIENCE_BYTES_MAX {
        bail!(
            "the experience would be {size} bytes; at most {EXPERIENCE_BYTES_MAX} are allowed: split it"
        );
    }
    let exp = unsigned.sign(identity.key());
    let out = node.replica.insert(exp.clone())?;
    node.store.persist(&node.replica, &[&out])?;
    node.store.record_signed(exp.seq())?;
    Ok(exp)
}
