//! `lcloud contract deploy|list|state|writes` and `lcloud call`: contracts on a node's directory, or
//! through a running node's API (`--node URL`).

use std::path::Path as FsPath;

use anyhow::{Context, Result, anyhow, bail};
use lcloud_core::{Experience, Id, Value};
use lcloud_node::contracts::{self as c, Deployed};
use lcloud_store::Identity;
use serde_json::{Value as J, json};

use crate::ContractAction;
use crate::commands::{self, Rejected, print};

/// Runs `lcloud contract …` on the directory.
pub fn run(dir: &FsPath, json_out: bool, action: ContractAction) -> Result<()> {
    match action {
        ContractAction::Deploy {
            file,
            name,
            init,
            fuel,
        } => {
            check_fuel(fuel)?;
            let code = read_module(&file)?;
            let init = parse_json(init.as_deref(), "--init")?;
            if let Some(n) = &name {
                c::check_name(n).map_err(|e| anyhow!(e))?;
            }
            let (id, op) = c::deploy_op(code, init);
            let mut node = commands::open(dir)?;
            let exp = commands::write_loaded(&mut node, &identity(dir)?, vec![op], fuel)?;
            if let Some(n) = &name
                && node.replica.ordered().deployed.contains_key(&id)
            {
                node.store.set_contract_name(&id, n)?;
            }
            report(json_out, &node, &exp, id, "deployed")
        }
        ContractAction::List => {
            let node = commands::open(dir)?;
            let names = node.store.contract_names()?;
            list(json_out, &c::deployed(&node.replica, &names), &|n| {
                node.names.show(n)
            });
            Ok(())
        }
        ContractAction::State { contract, key } => {
            let node = commands::open(dir)?;
            let names = node.store.contract_names()?;
            let id = c::resolve(&node.replica, &names, &contract).map_err(|e| anyhow!(e))?;
            let v = c::state(node.replica.ordered(), &id, key.as_deref()).unwrap_or(Value::Null);
            let j = v.to_json();
            print(json_out, j.clone(), || {
                serde_json::to_string_pretty(&j).unwrap_or_default()
            });
            Ok(())
        }
        ContractAction::Writes { contract, key, cut } => {
            let node = commands::open(dir)?;
            let names = node.store.contract_names()?;
            let id = c::resolve(&node.replica, &names, &contract).map_err(|e| anyhow!(e))?;
            let view = crate::commands::inspect::cut_text(&cut).view(&node.names, &node.replica)?;
            let writes = node
                .replica
                .contract_writes(&view, &id, &key)?
                .ok_or_else(|| anyhow!("contract {contract:?} was not deployed at that cut"))?;
            let j = c::writes_json(&node.replica, &id, &key, &writes);
            print_writes(json_out, &node.names, &j);
            Ok(())
        }
    }
}

/// Prints who set a contract's key (`lcloud_node::contracts::writes_json`): one line per
/// change, oldest first, the last marked as the value shown.
pub(crate) fn print_writes(json_out: bool, names: &lcloud_node::resolve::Names, j: &J) {
    print(json_out, j.clone(), || {
        let changes = j["changes"].as_array().cloned().unwrap_or_default();
        let mut lines = Vec::new();
        if !j["complete"].as_bool().unwrap_or(true) {
            lines.push("(earlier changes left out)".to_owned());
        }
        for (i, w) in changes.iter().enumerate() {
            let mark = if i + 1 == changes.len() {
                "  <- shown"
            } else {
                ""
            };
            let value = w["value"]
                .as_str()
                .map_or("(removed)".to_owned(), |v| format!("{v:?}"));
            let author = w["author"]
                .as_str()
                .and_then(lcloud_core::NodeId::from_hex)
                .map_or_else(|| "?".to_owned(), |n| names.show(&n));
            let exp = w["experience"].as_str().unwrap_or_default();
            lines.push(format!(
                "{} {} by {author} (seq {}): {value}{mark}",
                &exp[..exp.len().min(12)],
                w["function"].as_str().unwrap_or("?"),
                w["seq"],
            ));
        }
        if changes.is_empty() {
            lines.push(format!(
                "{} was never set",
                j["key"].as_str().unwrap_or_default()
            ));
        }
        lines.join("\n")
    });
}

/// Runs `lcloud call` on the directory.
pub fn call(
    dir: &FsPath,
    json_out: bool,
    contract: &str,
    function: &str,
    args: Option<&str>,
    fuel: Option<u64>,
) -> Result<()> {
    check_fuel(fuel)?;
    let args = parse_json(args, "ARGS")?;
    let mut node = commands::open(dir)?;
    let names = node.store.contract_names()?;
    let id = c::resolve(&node.replica, &names, contract).map_err(|e| anyhow!(e))?;
    let op = c::call_op(id, function, args);
    let exp = commands::write_loaded(&mut node, &identity(dir)?, vec![op], fuel)?;
    report(json_out, &node, &exp, id, "accepted")
}

fn identity(dir: &FsPath) -> Result<Identity> {
    Identity::load(dir)?.ok_or_else(|| {
        anyhow!(
            "no identity in {}: run `lcloud init` or `lcloud join`",
            dir.display()
        )
    })
}

fn check_fuel(fuel: Option<u64>) -> Result<()> {
    if fuel.is_some_and(|f| f == 0 || f > lcloud_contracts::FUEL_MAX) {
        bail!(
            "--fuel must be between 1 and {}",
            lcloud_contracts::FUEL_MAX
        );
    }
    Ok(())
}

fn read_module(file: &FsPath) -> Result<Vec<u8>> {
    let code = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let max = lcloud_contracts::validate::CODE_BYTES_MAX;
    if code.len() > max {
        bail!(
            "{} is {} bytes; a contract is at most {max}",
            file.display(),
            code.len()
        );
    }
    if !code.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly module (build one with `cargo build --target wasm32-unknown-unknown`)",
            file.display()
        );
    }
    Ok(code)
}

fn parse_json(text: Option<&str>, what: &str) -> Result<Value> {
    let Some(text) = text else {
        return Ok(Value::map());
    };
    let j: J = serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))?;
    Value::from_json(&j).map_err(|e| anyhow!("{what}: {e}"))
}

/// Prints what the fold made of `exp` (a call to or deploy of `contract`); a rejection is an
/// error with the rejection's exit code.
fn report(
    json_out: bool,
    node: &commands::Node,
    exp: &Experience,
    contract: Id,
    accepted: &str,
) -> Result<()> {
    let (id, seq) = (exp.id(), exp.seq());
    let outcome = c::outcome(&node.replica, &id, contract);
    let j = outcome.to_json(&id, seq, &node.replica.root());
    print(json_out, j, || match &outcome.rejected {
        None => format!(
            "{accepted}: contract {} (experience {} seq {seq})",
            contract.short(),
            id.short()
        ),
        Some(_) => format!("written as experience {} seq {seq}", id.short()),
    });
    match &outcome.rejected {
        None => Ok(()),
        Some(why) => Err(Rejected(c::rejection_text(why)).into()),
    }
}

fn list(json_out: bool, list: &[Deployed], show: &dyn Fn(&lcloud_core::NodeId) -> String) {
    let j: Vec<J> = list.iter().map(Deployed::to_json).collect();
    print(json_out, json!(j), || {
        if list.is_empty() {
            return "no contracts deployed (deploy one with `lcloud contract deploy FILE.wasm --name NAME`)".into();
        }
        list.iter()
            .map(|d| {
                format!(
                    "{:<12} {}  by {}  {} bytes, {} keys",
                    d.name.as_deref().unwrap_or("-"),
                    d.id.short(),
                    show(&d.by),
                    d.code_bytes,
                    d.keys
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
}

/// `lcloud contract …` and `lcloud call` through a running node's API.
pub fn remote(
    remote: &crate::remote::Remote,
    json_out: bool,
    command: crate::Command,
) -> Result<()> {
    let outcome = |w: J| -> Result<()> {
        let accepted = w["accepted"].as_bool().unwrap_or(false);
        let id = w["id"].as_str().unwrap_or_default();
        let human = if accepted {
            format!(
                "accepted (experience {} seq {})",
                &id[..id.len().min(12)],
                w["seq"]
            )
        } else {
            format!(
                "written as experience {} seq {}",
                &id[..id.len().min(12)],
                w["seq"]
            )
        };
        print(json_out, w.clone(), || human);
        if accepted {
            Ok(())
        } else {
            Err(Rejected(c::rejection_text(
                w["reason"].as_str().unwrap_or("no reason given"),
            ))
            .into())
        }
    };
    match command {
        crate::Command::Call {
            contract,
            function,
            args,
            fuel,
        } => {
            check_fuel(fuel)?;
            let args: J = match args {
                None => json!({}),
                Some(a) => serde_json::from_str(&a).context("ARGS is not JSON")?,
            };
            outcome(remote.post_json(
                "/api/call",
                &json!({"contract": contract, "function": function, "args": args, "fuel": fuel}),
            )?)
        }
        crate::Command::Contract { action } => match action {
            ContractAction::Deploy {
                file,
                name,
                init,
                fuel,
            } => {
                check_fuel(fuel)?;
                let code = read_module(&file)?;
                let init: J = match init {
                    None => json!({}),
                    Some(a) => serde_json::from_str(&a).context("--init is not JSON")?,
                };
                outcome(remote.post_json(
                    "/api/contracts",
                    &json!({"code": hex::encode(code), "name": name, "init": init, "fuel": fuel}),
                )?)
            }
            ContractAction::List => {
                let v = remote.get("/api/contracts", &[])?;
                print(json_out, v.clone(), || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                });
                Ok(())
            }
            ContractAction::State { contract, key } => {
                let mut q = Vec::new();
                if let Some(k) = &key {
                    q.push(("key", k.as_str()));
                }
                let path = format!("/api/contracts/{contract}/state");
                let v = remote.get(&path, &q)?;
                print(json_out, v.clone(), || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                });
                Ok(())
            }
            ContractAction::Writes { contract, key, cut } => {
                let mut q = crate::commands::inspect::cut_query(&cut);
                q.push(("key", key));
                let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let v = remote.get(&format!("/api/contracts/{contract}/writes"), &q)?;
                let names = crate::commands::inspect::remote_names(remote)?;
                print_writes(json_out, &names, &v);
                Ok(())
            }
        },
        _ => unreachable!("only contract commands come here"),
    }
}
