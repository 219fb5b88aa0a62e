//! `--node URL`: the commands that a running node's HTTP API can answer.

use anyhow::{Context, Result, anyhow, bail};
use lcloud_core::{Op, Value};
use serde_json::{Value as J, json};

/// A running node's API.
pub struct Remote {
    base: String,
    agent: ureq::Agent,
}

impl Remote {
    pub fn new(url: &str) -> Remote {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Remote {
            base: url.trim_end_matches('/').to_owned(),
            agent,
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
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(path, req.call())
    }

    pub fn write(&self, ops: &[Op]) -> Result<J> {
        let ops: Vec<J> = ops.iter().map(op_json).collect::<Result<_>>()?;
        let r = self
            .agent
            .post(format!("{}/api/ops", self.base))
            .send_json(json!({ "ops": ops }));
        self.answer("the write", r)
    }
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
        other => {
            return Err(anyhow!(
                "{other:?} cannot be written through --node yet: stop the node and run the command on its store"
            ));
        }
    })
}
