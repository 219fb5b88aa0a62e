//! `--node URL`: the commands that a running node's HTTP API can answer.

use anyhow::{Context, Result, anyhow, bail};
use lcloud_core::{Edit, Items, Op, Value};
use serde_json::{Value as J, json};

/// A running node's API.
pub struct Remote {
    base: String,
    agent: ureq::Agent,
    /// `Bearer TOKEN`, sent with every request.
    authorization: Option<String>,
}

impl Remote {
    /// The node at `url` (`http://` or `https://`), sending `token`; an `https://` node's
    /// certificate is checked against `ca_cert` if given, else against the web's roots.
    pub fn new(
        url: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Remote> {
        use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder().unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ));
        if let Some(file) = ca_cert {
            let pem = std::fs::read(file)
                .with_context(|| format!("cannot read --ca-cert {}", file.display()))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!(
                    "--ca-cert {}: no PEM certificate in the file",
                    file.display()
                );
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Remote {
            base: url.trim_end_matches('/').to_owned(),
            agent,
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// `req` with the token, if there is one.
    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => req.header("authorization", a),
            None => req,
        }
    }

    fn answer(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<J> {
        let mut r = r.with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = r.status();
        let body: J = r.body_mut().read_json().with_context(|| {
            format!(
                "the node at {} sent a malformed answer to {what}",
                self.base
            )
        })?;
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("no reason given");
            bail!("the node refused {what}: {msg} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<J> {
        let mut req = self.auth(self.agent.get(format!("{}{path}", self.base)));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(path, req.call())
    }

    /// Every experience the node holds, as a bundle.
    pub fn bundle(&self) -> Result<Vec<u8>> {
        let mut r = self
            .auth(self.agent.get(format!("{}/api/bundle", self.base)))
            .call()
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        if !r.status().is_success() {
            bail!(
                "the node refused to send its history (HTTP {})",
                r.status().as_u16()
            );
        }
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .with_context(|| format!("cannot read the history from {}", self.base))
    }

    /// A shallow bundle of the node's cloud (`lcloud join --shallow URL`).
    pub fn shallow(&self) -> Result<Vec<u8>> {
        let mut r = self
            .auth(self.agent.get(format!("{}/api/bundle/shallow", self.base)))
            .call()
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = r.status();
        if !status.is_success() {
            let why = r
                .body_mut()
                .read_json::<J>()
                .ok()
                .and_then(|b| b["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no reason given".into());
            bail!(
                "the node at {} cannot send a shallow bundle: {why} (HTTP {})",
                self.base,
                status.as_u16()
            );
        }
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .with_context(|| format!("cannot read the shallow bundle from {}", self.base))
    }

    /// Imports a bundle into the node.
    /// Sends the bundle in `file` to be imported, streamed from the file (never held whole),
    /// with no overall deadline: a large bundle takes as long as it takes (the node's own
    /// deadlines catch a stalled transfer).
    pub fn import(&self, file: &std::path::Path) -> Result<J> {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let r = self
            .auth(self.agent.post(format!("{}/api/bundle", self.base)))
            .header("content-type", "application/octet-stream")
            .config()
            .timeout_global(None)
            .build()
            .send(f);
        self.answer("the import", r)
    }

    /// POSTs a JSON body to `path`.
    pub fn post_json(&self, path: &str, body: &J) -> Result<J> {
        let r = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .send_json(body);
        self.answer(path, r)
    }

    pub fn write(&self, edits: &[Edit]) -> Result<J> {
        let ops: Vec<J> = edits.iter().map(edit_json).collect::<Result<_>>()?;
        let r = self
            .auth(self.agent.post(format!("{}/api/ops", self.base)))
            .send_json(json!({ "ops": ops }));
        self.answer("the write", r)
    }
}

/// The API's JSON form of an edit (what `Edit::from_json` reads).
fn edit_json(edit: &Edit) -> Result<J> {
    Ok(match edit {
        Edit::Op(op) => op_json(op)?,
        Edit::Insert { path, index, items } => match items {
            Items::Text(s) => {
                json!({"op": "insert", "path": path.to_string(), "index": index, "value": s})
            }
            Items::List(vs) => {
                let vs: Vec<J> = vs.iter().map(Value::to_json).collect();
                json!({"op": "insert", "path": path.to_string(), "index": index, "values": vs})
            }
        },
        Edit::Delete { path, index, count } => {
            json!({"op": "delete", "path": path.to_string(), "index": index, "count": count})
        }
        Edit::Splice {
            path,
            index,
            delete,
            text,
        } => {
            json!({"op": "splice", "path": path.to_string(), "index": index, "delete": delete, "text": text})
        }
        Edit::Move { path, from, to } => {
            json!({"op": "move", "path": path.to_string(), "from": from, "to": to})
        }
    })
}

/// The API's JSON form of an op (what `Op::from_json` reads).
fn op_json(op: &Op) -> Result<J> {
    let v = |v: &Value| v.to_json();
    Ok(match op {
        Op::Set { path, value } => {
            json!({"op": "set", "path": path.to_string(), "value": v(value)})
        }
        Op::Add { path, value } => {
            json!({"op": "add", "path": path.to_string(), "value": v(value)})
        }
        Op::Remove { path, value } => {
            json!({"op": "remove", "path": path.to_string(), "value": v(value)})
        }
        Op::Del { path } => json!({"op": "del", "path": path.to_string()}),
        Op::Incr { path, by } => json!({"op": "incr", "path": path.to_string(), "by": by}),
        Op::AddMember { node } => json!({"op": "add_member", "node": node.to_hex()}),
        Op::RemoveMember { node } => json!({"op": "remove_member", "node": node.to_hex()}),
        Op::AddAdmin { node } => json!({"op": "add_admin", "node": node.to_hex()}),
        Op::RemoveAdmin { node } => json!({"op": "remove_admin", "node": node.to_hex()}),
        other => {
            return Err(anyhow!(
                "{other:?} cannot be written through --node yet: stop the node and run the command on its store"
            ));
        }
    })
}

/// A temporary store holding a copy of a node's history (removed when dropped).
pub struct Snapshot {
    dir: std::path::PathBuf,
}

impl Snapshot {
    pub fn fetch(remote: &Remote) -> Result<Snapshot> {
        let bytes = remote.bundle()?;
        let b =
            lcloud_store::bundle::decode(&bytes).context("the node sent a malformed history")?;
        let first = b
            .records
            .first()
            .ok_or_else(|| anyhow!("the node sent an empty history"))?;
        let genesis = lcloud_core::validate(first, &b.cloud)
            .context("the node's history does not start with its cloud's genesis")?;
        let dir = std::env::temp_dir().join(format!(
            "lcloud-snapshot-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let snapshot = Snapshot { dir };
        let mut store = lcloud_store::Store::create(&snapshot.dir, &genesis)?;
        let mut replica = store.load(&mut |_| {})?;
        let report = store.import(&mut replica, &b.records[1..], &mut |_| {})?;
        if report.rejected_total() > 0 {
            bail!(
                "the node's history holds {} invalid experiences: {}",
                report.rejected_total(),
                report.first_rejection.unwrap_or_default()
            );
        }
        let aliases = remote.get("/api/aliases", &[])?;
        for (id, name) in aliases.as_object().into_iter().flatten() {
            if let (Some(id), Some(name)) = (lcloud_core::NodeId::from_hex(id), name.as_str()) {
                store.set_alias(&id, name)?;
            }
        }
        Ok(snapshot)
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
