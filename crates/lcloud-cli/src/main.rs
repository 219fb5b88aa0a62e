//! `lcloud`: one λCLOUD node on disk. Writes signed experiences, reads the folded state at any
//! cut, merges offline through bundles, and audits the store.

#![forbid(unsafe_code)]

mod args;
mod bisect;
mod commands;
mod contract;
mod demo;
mod demo_contracts;
mod membership;
mod remote;
use lcloud_node::resolve;
mod status;
mod token;

use std::process::ExitCode;

use args::*;
use clap::Parser;

/// Runs a command against a running node's API.
fn remote_run(
    url: &str,
    token: Option<String>,
    ca_cert: Option<&std::path::Path>,
    json_out: bool,
    command: Command,
) -> anyhow::Result<()> {
    use serde_json::json;
    let remote = remote::Remote::new(url, token, ca_cert)?;
    let show = |value: serde_json::Value, human: String| {
        if json_out {
            println!("{value}");
        } else {
            println!("{human}");
        }
    };
    if let Some(ops) = commands::write_edits_of(&command)? {
        let w = remote.write(&ops)?;
        let id = w["id"].as_str().unwrap_or_default().to_owned();
        let seq = w["seq"].as_u64().unwrap_or_default();
        show(
            json!({"id": id, "seq": seq, "ops": ops.len()}),
            format!(
                "{} seq {seq} ({} op{})",
                &id[..id.len().min(12)],
                ops.len(),
                if ops.len() == 1 { "" } else { "s" }
            ),
        );
        return Ok(());
    }
    if matches!(command, Command::Contract { .. } | Command::Call { .. }) {
        return contract::remote(&remote, json_out, command);
    }
    match command {
        command @ (Command::State { .. }
        | Command::Root { .. }
        | Command::Conflicts { .. }
        | Command::Diff { .. }
        | Command::Log { .. }) => commands::inspect::remote(&remote, json_out, command)?,
        Command::Status => {
            let v = remote.get("/api/status", &[])?;
            show(v.clone(), status::render(&v, &status::short));
        }
        Command::Clock => {
            let v = remote.get("/api/clock", &[])?;
            let human = v
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(n, s)| format!("{}:{s}", &n[..n.len().min(8)]))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            show(json!({"clock": v}), human);
        }
        Command::Heads => {
            let v = remote.get("/api/heads", &[])?;
            let human = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            show(json!({"heads": v}), human);
        }
        Command::Key {
            action: KeyAction::Rotate,
        } => {
            let r = remote.post_json("/api/key/rotate", &json!({}))?;
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            show(
                r.clone(),
                format!(
                    "rotated: the node is now {}\nthe old key {} may no longer write (rotation {})",
                    text("node"),
                    text("old"),
                    &text("rotation")[..text("rotation").len().min(12)]
                ),
            );
        }
        Command::Import { file } => {
            let r = remote.import(&file)?;
            let rejected: u64 = r["rejected"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
                .unwrap_or(0);
            show(
                r.clone(),
                format!(
                    "imported {} into the node: {} new, {} already known, {rejected} rejected\nroot {}",
                    file.display(),
                    r["new"],
                    r["known"],
                    r["root"].as_str().unwrap_or_default()
                ),
            );
            if rejected > 0 {
                return Err(commands::Rejected(format!(
                    "{rejected} records of {} were rejected (the rest is imported); the first: {}",
                    file.display(),
                    r["first_rejection"].as_str().unwrap_or("unknown")
                ))
                .into());
            }
        }
        command @ (Command::Export { .. }
        | Command::Verify
        | Command::Forks
        | Command::Member {
            action: MemberAction::List,
        }) => {
            // Read commands the API does not serve directly run on a snapshot of the node's
            // history, fetched as a bundle into a temporary store.
            let snapshot = remote::Snapshot::fetch(&remote)?;
            let verify = matches!(command, Command::Verify);
            commands::run(Cli {
                dir: Some(snapshot.dir().to_owned()),
                json: json_out,
                node: None,
                token_file: None,
                ca_cert: None,
                command,
            })?;
            if verify && !json_out {
                println!("(checked the history node {url} serves, fetched as a bundle)");
            }
        }
        other => anyhow::bail!(
            "{} works on a node's directory, not through --node: omit --node (and stop the node if it holds the directory)",
            format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("this command")
                .to_lowercase()
        ),
    }
    Ok(())
}

/// Whether a panic is `println!` finding its reader gone (`lcloud log | head`).
fn broken_pipe(info: &std::panic::PanicHookInfo<'_>) -> bool {
    panic_message(info.payload())
        .is_some_and(|m| m.starts_with("failed printing to std") && m.contains("Broken pipe"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// The first panic raised inside the storage engine (redb), with where: redb panics on some
/// damaged pages instead of returning an error. Such a panic, caught or not, means the store
/// is damaged: the command fails with the store-corrupt error instead of a backtrace.
static ENGINE_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

pub(crate) fn engine_panic() -> Option<String> {
    ENGINE_PANIC
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Whether a panic was raised in redb's code (a damaged page), by where it was raised.
fn in_storage_engine(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|l| l.file().replace('\\', "/").contains("/redb-"))
}

fn main() -> ExitCode {
    // When the reader of the output goes away (`lcloud log | head`), stop quietly with the
    // status of a process a broken pipe ends (128 + SIGPIPE), as Unix tools do, instead of a
    // panic and a backtrace. Whatever was written is already durable.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if broken_pipe(info) {
            std::process::exit(141);
        }
        if in_storage_engine(info) {
            let mut first = ENGINE_PANIC.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                let msg = panic_message(info.payload()).unwrap_or("no message");
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()));
                *first = Some(format!("{msg}{}", at.unwrap_or_default()));
            }
            return;
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let corrupt = |why: String| {
        eprintln!(
            "error: store corrupt: the database engine failed on a damaged page ({why}); \
             restore the store from a backup or rebuild it from a peer's bundle"
        );
        ExitCode::FAILURE
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commands::run(cli)));
    match (result, engine_panic()) {
        (Ok(Ok(())), None) => ExitCode::SUCCESS,
        // A damaged page found along the way (even where it was caught, e.g. on closing)
        // fails the command: `verify` must not pass a store the engine could not read.
        (Ok(Ok(())), Some(why)) | (Err(_), Some(why)) => corrupt(why),
        (Ok(Err(e)), _) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            if e.downcast_ref::<commands::Rejected>().is_some() {
                ExitCode::from(commands::Rejected::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
        // Any other panic is a bug: the default hook has printed it.
        (Err(_), None) => ExitCode::from(101),
    }
}
