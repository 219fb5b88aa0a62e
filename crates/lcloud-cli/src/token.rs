//! `lcloud token`: the API tokens of this node's directory (docs/security.md), and which token
//! `--node URL` sends.

use std::path::Path as FsPath;

use anyhow::{Context, Result, anyhow};
use lcloud_store::tokens::{self, Scope, Tokens};
use serde_json::json;

use crate::TokenAction;

pub fn run(dir: &FsPath, json_out: bool, action: TokenAction) -> Result<()> {
    if !lcloud_store::Store::exists(dir) {
        return Err(anyhow!(
            "no λCLOUD store in {}: run `lcloud init` or `lcloud join` first",
            dir.display()
        ));
    }
    let now = tokens::unix_now();
    let mut t = Tokens::load(dir)?;
    match action {
        TokenAction::Create {
            scope,
            name,
            expires,
        } => {
            let scope: Scope = scope.parse().map_err(|e: String| anyhow!(e))?;
            let expires = match expires {
                Some(d) => {
                    let d = humantime::parse_duration(&d)
                        .with_context(|| format!("--expires {d:?} (e.g. 30d, 12h, 90m)"))?;
                    Some(now.saturating_add(d.as_secs().max(1)))
                }
                None => None,
            };
            let name = name.unwrap_or_else(|| format!("{scope}-{now}"));
            let (token, info) = t.create(scope, &name, expires, now)?;
            if json_out {
                println!("{}", json!({"token": token, "info": info}));
            } else {
                println!("{token}");
                eprintln!(
                    "token {} ({}, scope {scope}{}): shown once; the node keeps only its hash",
                    info.id,
                    info.name,
                    expires
                        .map(|e| format!(", expires at {e}"))
                        .unwrap_or_default()
                );
            }
        }
        TokenAction::List => {
            let list = t.list();
            if json_out {
                println!("{}", json!(list));
            } else if list.is_empty() {
                println!("no tokens");
            } else {
                for i in list {
                    let state = if i.revoked {
                        "revoked".to_owned()
                    } else if i.expires.is_some_and(|e| e <= now) {
                        "expired".to_owned()
                    } else {
                        i.expires
                            .map(|e| {
                                format!(
                                    "expires in {}",
                                    humantime::format_duration(std::time::Duration::from_secs(
                                        e - now
                                    ))
                                )
                            })
                            .unwrap_or_else(|| "active".into())
                    };
                    println!("{}  {:<5}  {:<24}  {state}", i.id, i.scope.as_str(), i.name);
                }
            }
        }
        TokenAction::Revoke { which } => {
            let gone = t.revoke(&which)?;
            if json_out {
                println!("{}", json!(gone));
            } else {
                for i in gone {
                    println!("revoked {} ({})", i.id, i.name);
                }
            }
        }
    }
    Ok(())
}

/// The token `--node URL` sends: `LCLOUD_TOKEN`, else the file `--token-file` names, else the
/// admin token `lcloud init` left in this node's directory (when the node is local).
pub fn for_remote(token_file: Option<&FsPath>, dir: &FsPath) -> Result<Option<String>> {
    if let Ok(t) = std::env::var("LCLOUD_TOKEN") {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    if let Some(f) = token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(tokens::admin_token(dir))
}

/// `lcloud ui`: a read token for the page (earlier ones of `lcloud ui` revoked first), a node
/// that serves reads only on loopback with no network, and the token revoked when it stops.
pub fn ui(dir: &FsPath, api: std::net::SocketAddr, open: bool) -> Result<()> {
    if !lcloud_store::Store::exists(dir) {
        return Err(anyhow!(
            "no λCLOUD store in {}: run `lcloud init` or `lcloud join` first",
            dir.display()
        ));
    }
    if !api.ip().is_loopback() {
        return Err(anyhow!(
            "--api {api}: the debugger listens on loopback only (127.0.0.1 or ::1); to serve it \
             to other machines, run `lcloud node run` (its page is at /ui)"
        ));
    }
    const NAME: &str = "ui";
    let now = tokens::unix_now();
    let mut t = Tokens::load(dir)?;
    let _ = t.revoke(NAME);
    let (token, info) = t.create(Scope::Read, NAME, Some(now + 12 * 3600), now)?;
    let (ready, page) = std::sync::mpsc::channel::<String>();
    // Without a display (an SSH session, a server), only a program $BROWSER names can open it.
    let var = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let headless = cfg!(target_os = "linux") && !var("DISPLAY") && !var("WAYLAND_DISPLAY");
    if open && headless && !var("BROWSER") {
        eprintln!(
            "no graphical display here (DISPLAY and WAYLAND_DISPLAY are unset): open the ui \
             address below in a browser on this machine, or forward its port"
        );
    } else if open {
        std::thread::spawn(move || {
            if let Ok(url) = page.recv() {
                match webbrowser::open(&url) {
                    Ok(()) => println!("opened the page in your browser"),
                    Err(e) => eprintln!(
                        "could not open a browser ({e}): open the ui address above yourself \
                         (set BROWSER to choose the program)"
                    ),
                }
            }
        });
    }
    let ran = lcloud_node::run(lcloud_node::Config {
        dir: dir.to_owned(),
        listen: Vec::new(),
        peers: Vec::new(),
        api,
        sync_every: std::time::Duration::from_secs(3600),
        mdns: false,
        api_hosts: Vec::new(),
        debug_api: false,
        cors: Vec::new(),
        tls: None,
        limits: lcloud_node::serve::Limits::default(),
        token_rate: 0,
        retain: None,
        read_only: true,
        ui_token: Some(token),
        ui_ready: Some(ready),
    });
    let mut t = Tokens::load(dir)?;
    let _ = t.revoke(&info.id);
    ran?;
    Ok(())
}
