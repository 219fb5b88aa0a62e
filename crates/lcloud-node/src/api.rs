//! The HTTP/JSON API (axum). Every handler asks the node's core thread and waits for its
//! answer; nothing here touches the store.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use lcloud_core::{Id, Op, Path};
use serde_json::{Value as J, json};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::contracts::Deployed;

#[path = "history.rs"]
mod history;
#[path = "openapi.rs"]
mod openapi;
use crate::node::{Announced, Call, ContractWritten, Deploy, Invoke, Msg, Status, WriteError};
pub use openapi::openapi_document;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    pub(crate) inbox: mpsc::UnboundedSender<Msg>,
    pub(crate) announce: broadcast::Sender<Announced>,
    /// The tokens, and the refusals counted.
    pub(crate) auth: std::sync::Arc<crate::auth::Auth>,
    /// The open event streams, in all and by token.
    pub(crate) streams: std::sync::Arc<Streams>,
    /// The API's connections, counted.
    pub(crate) connections: std::sync::Arc<crate::serve::Counters>,
    /// The cloud.
    pub(crate) cloud: Id,
    /// The node's directory (bundles being received are spooled there).
    pub(crate) dir: std::path::PathBuf,
    /// Places for bundles being received.
    pub(crate) uploads: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Most event streams open at once, in all: each holds a connection and a buffer.
pub const STREAMS_MAX: usize = 256;
/// Most event streams one token may hold open.
pub const STREAMS_PER_TOKEN_MAX: usize = 16;

/// The open event streams, counted by token.
#[derive(Debug, Default)]
pub struct Streams {
    open: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

/// One open stream; closing it (the client going away) gives its place back.
struct StreamSlot {
    streams: std::sync::Arc<Streams>,
    token: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

impl Streams {
    /// A place for one more stream of `token`, or the refusal.
    fn take(self: &std::sync::Arc<Self>, token: &str) -> Result<StreamSlot, (StatusCode, String)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        if total >= STREAMS_MAX {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{STREAMS_MAX} event streams are open, the most this node serves: try again later"
                ),
            ));
        }
        let mine = open.entry(token.to_owned()).or_insert(0);
        if *mine >= STREAMS_PER_TOKEN_MAX {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this token has {STREAMS_PER_TOKEN_MAX} event streams open, the most one token may: close one first"
                ),
            ));
        }
        *mine += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            token: token.to_owned(),
        })
    }
}

/// Largest JSON body any other route accepts (413 past it): room for the JSON of one
/// experience at its cap (1 MiB of canonical bytes) or of a contract at its (512 KiB, hex).
pub const JSON_BYTES_MAX: usize = 4 << 20;

/// Most ops one `POST /api/ops` may carry (the same cap as one experience).
const OPS_MAX: usize = lcloud_core::OPS_MAX;

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

impl Api {
    pub(crate) async fn ask<T>(
        &self,
        call: impl FnOnce(oneshot::Sender<T>) -> Call,
    ) -> Result<T, Response> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Msg::Api(call(tx)))
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"))?;
        rx.await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"))
    }
}

/// The router: every route needs a token but `/api/health` and `/api/openapi.json`
/// ([`crate::auth`]); the `/debug` routes exist only with `debug` (`--debug-api`); pages of
/// the `cors` origins may call it from a browser (their preflights answered before the token
/// check, which their real requests then pass like any other).
pub fn router(api: Api, debug: bool, cors: &[axum::http::HeaderValue]) -> Router {
    let auth = api.auth.clone();
    let mut r = Router::new()
        .route("/api/health", get(health))
        .route(
            "/api/openapi.json",
            get(move || async move { Json(openapi_document(debug)) }),
        )
        .route("/api/state", get(history::state))
        .route("/api/root", get(history::root))
        .route("/api/diff", get(history::diff))
        .route("/api/log", get(history::log))
        .route("/api/conflicts", get(history::conflicts))
        .route("/api/status", get(status))
        .route("/api/heads", get(heads))
        .route("/api/clock", get(clock))
        .route("/api/forks", get(forks))
        .route("/api/ops", post(write))
        .route("/api/events", get(events))
        .route(
            "/api/bundle",
            get(crate::bundles::bundle_out).post(crate::bundles::bundle_in),
        )
        .route("/api/bundle/shallow", get(crate::bundles::shallow_out))
        .route("/api/aliases", get(aliases))
        .route("/api/contracts", get(contracts).post(deploy))
        .route("/api/contracts/{name}/state", get(contract_state))
        .route("/api/contracts/{name}/writes", get(history::writes))
        .route("/api/call", post(call))
        .route("/api/key/rotate", post(rotate_key))
        .route("/metrics", get(metrics))
        .merge(crate::ui::routes());
    if debug {
        r = r
            .route("/debug/heads", get(heads))
            .route("/debug/state-hash", get(state_hash))
            .route("/debug/isolate", post(isolate));
    }
    let r = r
        .with_state(api)
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::auth,
        ));
    if cors.is_empty() {
        return r;
    }
    r.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(cors.to_vec())
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// `GET /api/health`: the node answers (no token needed).
async fn health() -> Response {
    Json(json!({"ok": true})).into_response()
}

/// A query string the route cannot read: a JSON error like every other (axum's own is text).
pub(crate) fn bad_query(e: axum::extract::rejection::QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("bad query string: {}", e.body_text()),
    )
}

/// The status with its state root, hashed on a blocking thread: the node's thread is not held
/// while a large state is hashed.
pub(crate) async fn status_with_root(api: &Api) -> Result<(Status, Id), Response> {
    let s = api.ask(Call::Status).await?;
    tokio::task::spawn_blocking(move || {
        let root = s.root();
        (s, root)
    })
    .await
    .map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "hashing the state failed",
        )
    })
}

fn status_json(s: &Status, root: &Id) -> J {
    json!({
        "node": s.node.to_hex(),
        "cloud": s.cloud.to_hex(),
        "root": root.to_hex(),
        "heads": s.heads.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "clock": s.clock.iter().map(|(n, q)| (n.to_hex(), json!(q))).collect::<serde_json::Map<_, _>>(),
        "experiences": s.experiences,
        "peers": s.peers.iter().map(|(p, n)| json!({"peer": p, "node": n.map(|n| n.to_hex())})).collect::<Vec<_>>(),
        "parked": s.parked,
        "store_error": s.store_error,
        "missing": s.missing.iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
        "forks": s.forks.len(),
    })
}

/// The stable frontier, who holds it back, and the checkpoints, as `/api/status` shows them:
/// the deepest final one, those attested deeper, and every divergent one.
pub fn finality_json(lattice: &lcloud_core::Lattice) -> J {
    let s = lattice.stability();
    let checkpoints = lattice.checkpoints();
    let last_final = checkpoints.iter().rev().find(|c| c.is_final());
    let final_depth = last_final.map_or(0, |c| c.depth);
    let checkpoint = |c: &lcloud_core::Checkpoint| {
        json!({
            "depth": c.depth,
            "roots": c.roots.iter().map(|(r, by)| (r.to_hex(), json!(by.iter().map(|n| n.to_hex()).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
            "missing": c.missing.iter().map(|n| n.to_hex()).collect::<Vec<_>>(),
        })
    };
    let clock = |c: &lcloud_core::VectorClock| {
        c.0.iter()
            .map(|(n, q)| (n.to_hex(), json!(q)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "open": s.open,
        "frontier": clock(&s.frontier),
        "stable": s.stable,
        "unstable": s.held - s.stable,
        "held_back_by": s.held_back_by().map(|w| json!({"node": w.node.to_hex(), "behind": w.behind})),
        "members": s.witnesses.iter().map(|w| json!({
            "node": w.node.to_hex(),
            "behind": w.behind,
            "forked": w.forked,
            "seen": clock(&w.seen),
        })).collect::<Vec<_>>(),
        "final_checkpoint": last_final.map(|c| json!({
            "depth": c.depth,
            "root": c.root().map(|r| r.to_hex()),
            "clock": clock(&lattice.depth_cut(c.depth)),
        })),
        "late": lattice.late_count(),
        "compacted": lattice.compaction_point().map(|(depth, earliest)| json!({
            "depth": depth,
            "earliest": clock(earliest),
            "kept_below": lattice.kept_below(),
        })),
        "pending_checkpoints": checkpoints.iter().filter(|c| c.depth > final_depth && !c.is_divergent()).map(checkpoint).collect::<Vec<_>>(),
        "divergent_checkpoints": checkpoints.iter().filter(|c| c.is_divergent()).map(checkpoint).collect::<Vec<_>>(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn forks(State(api): State<Api>) -> Response {
    match api.ask(Call::Status).await {
        Ok(s) => Json(json!(
            s.forks
                .iter()
                .map(|(author, seq, proof)| json!({
                    "author": author.to_hex(),
                    "seq": seq,
                    "proof": hex(proof),
                }))
                .collect::<Vec<_>>()
        ))
        .into_response(),
        Err(r) => r,
    }
}

async fn status(State(api): State<Api>) -> Response {
    let (s, root) = match status_with_root(&api).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let finality = match api.ask(Call::Finality).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut body = status_json(&s, &root);
    body["finality"] = finality;
    Json(body).into_response()
}

async fn heads(State(api): State<Api>) -> Response {
    match api.ask(Call::Status).await {
        Ok(s) => Json(json!(
            s.heads.iter().map(|h| h.to_hex()).collect::<Vec<_>>()
        ))
        .into_response(),
        Err(r) => r,
    }
}

async fn clock(State(api): State<Api>) -> Response {
    match api.ask(Call::Status).await {
        Ok(s) => Json(
            s.clock
                .iter()
                .map(|(n, q)| (n.to_hex(), json!(q)))
                .collect::<serde_json::Map<_, _>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

async fn state_hash(State(api): State<Api>) -> Response {
    match status_with_root(&api).await {
        Ok((_, root)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", root.to_hex()),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    match api.ask(Call::Metrics).await {
        Ok(mut text) => {
            let r = &api.auth.refused;
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            text.push_str(&format!(
                "# HELP lcloud_api_refused_total API requests refused for their token, by reason.\n\
                 # TYPE lcloud_api_refused_total counter\n\
                 lcloud_api_refused_total{{reason=\"missing\"}} {}\n\
                 lcloud_api_refused_total{{reason=\"invalid\"}} {}\n\
                 lcloud_api_refused_total{{reason=\"scope\"}} {}\n\
                 lcloud_api_refused_total{{reason=\"rate\"}} {}\n",
                load(&r.missing),
                load(&r.invalid),
                load(&r.scope),
                load(&r.rate)
            ));
            let c = &api.connections;
            text.push_str(&format!(
                "# HELP lcloud_api_connections_total API connections, by what became of them.\n\
                 # TYPE lcloud_api_connections_total counter\n\
                 lcloud_api_connections_total{{outcome=\"served\"}} {}\n\
                 lcloud_api_connections_total{{outcome=\"refused_cap\"}} {}\n\
                 lcloud_api_connections_total{{outcome=\"refused_address_cap\"}} {}\n\
                 lcloud_api_connections_total{{outcome=\"tls_failed\"}} {}\n\
                 lcloud_api_connections_total{{outcome=\"write_stalled\"}} {}\n",
                load(&c.accepted),
                load(&c.refused),
                load(&c.refused_address),
                load(&c.tls_failed),
                load(&c.write_stalled)
            ));
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Err(r) => r,
    }
}

async fn write(
    State(api): State<Api>,
    token: Option<axum::Extension<lcloud_store::TokenInfo>>,
    body: axum::body::Bytes,
) -> Response {
    let j: J = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    if let Some(extra) = j.as_object().and_then(|o| o.keys().find(|k| *k != "ops")) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{extra:?} is not a field of a write (it takes \"ops\" only)"),
        );
    }
    let Some(list) = j.get("ops").and_then(|o| o.as_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"ops\": [{\"op\":\"set\",\"path\":\"/a\",\"value\":1}, …]}",
        );
    };
    if list.is_empty() || list.len() > OPS_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            format!("between 1 and {OPS_MAX} ops per write, got {}", list.len()),
        );
    }
    let mut edits = Vec::with_capacity(list.len());
    for (n, o) in list.iter().enumerate() {
        match lcloud_core::Edit::from_json(o) {
            Ok(e) => edits.push(e),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("op {n}: {e}")),
        }
    }
    let ops: Vec<&Op> = edits.iter().filter_map(lcloud_core::Edit::as_op).collect();
    if ops.iter().any(|o| matches!(o, Op::RotateKey { .. })) {
        return error(
            StatusCode::BAD_REQUEST,
            "a key rotation switches the node's own key: POST /api/key/rotate (`lcloud --node URL key rotate`) makes one",
        );
    }
    let admin = token.is_some_and(|t| t.scope >= lcloud_store::Scope::Admin);
    if !admin && ops.iter().any(|o| o.needs_admin()) {
        api.auth
            .refused
            .scope
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return error(
            StatusCode::FORBIDDEN,
            "changing membership needs a token with scope admin",
        );
    }
    let only_ops = ops.len() == edits.len();
    let answer = if only_ops {
        let ops = edits
            .into_iter()
            .filter_map(|e| match e {
                lcloud_core::Edit::Op(op) => Some(op),
                _ => None,
            })
            .collect();
        api.ask(|tx| Call::Write(ops, tx)).await
    } else {
        api.ask(|tx| Call::Edit(edits, tx)).await
    };
    match answer {
        Ok(Ok(w)) => Json(json!({"id": w.id.to_hex(), "seq": w.seq})).into_response(),
        Ok(Err(WriteError::Refused(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(WriteError::Unavailable(e))) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

async fn aliases(State(api): State<Api>) -> Response {
    match api.ask(Call::Aliases).await {
        Ok(a) => Json(
            a.iter()
                .map(|(n, name)| (n.to_hex(), json!(name)))
                .collect::<serde_json::Map<_, _>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// The answer to a deploy or a call.
fn contract_answer(r: Result<Result<ContractWritten, WriteError>, Response>) -> Response {
    match r {
        Ok(Ok(w)) => Json(w.outcome.to_json(&w.written.id, w.written.seq, &w.root)).into_response(),
        Ok(Err(WriteError::Refused(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(WriteError::Unavailable(e))) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

async fn contracts(State(api): State<Api>) -> Response {
    match api.ask(Call::Contracts).await {
        Ok(list) => Json(list.iter().map(Deployed::to_json).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

/// Most bytes of a deploy request: the largest module, as hex, and room for the rest.
const DEPLOY_BYTES_MAX: usize = 2 * lcloud_contracts::validate::CODE_BYTES_MAX + 64 * 1024;

fn json_value(j: Option<&J>, what: &str) -> Result<lcloud_core::Value, String> {
    match j {
        None => Ok(lcloud_core::Value::map()),
        Some(j) => lcloud_core::Value::from_json(j).map_err(|e| format!("{what}: {e}")),
    }
}

fn fuel_of(j: &J) -> Result<Option<u64>, String> {
    match j.get("fuel") {
        None | Some(J::Null) => Ok(None),
        // JSON Schema's integers include `3.0`.
        Some(f) => f
            .as_u64()
            .or_else(|| {
                f.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 1.0 && *x < 1.8e19)
                    .map(|x| x as u64)
            })
            .filter(|f| *f > 0)
            .map(Some)
            .ok_or_else(|| "\"fuel\" must be a positive integer".to_owned()),
    }
}

/// The first field of `j` not among `known`, as an error naming it.
fn only_fields(j: &J, known: &[&str], what: &str) -> Result<(), String> {
    match j
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        Some(k) => Err(format!(
            "{k:?} is not a field of {what} (it takes {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn parse_deploy(body: &[u8]) -> Result<Deploy, String> {
    let j: J = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    only_fields(&j, &["code", "name", "init", "fuel"], "a deploy")?;
    let code = j.get("code").and_then(J::as_str).ok_or(
        "expected {\"code\": \"<the module, hex>\", \"name\": …, \"init\": …, \"fuel\": …}",
    )?;
    let code = hex::decode(code).map_err(|_| "\"code\" must be the module's bytes in hex")?;
    let name = match j.get("name") {
        None | Some(J::Null) => None,
        Some(J::String(n)) => {
            crate::contracts::check_name(n)?;
            Some(n.clone())
        }
        Some(_) => return Err("\"name\" must be a string".into()),
    };
    Ok(Deploy {
        code,
        init: json_value(j.get("init"), "init")?,
        name,
        fuel: fuel_of(&j)?,
    })
}

fn parse_call(body: &[u8]) -> Result<Invoke, String> {
    let j: J = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    only_fields(&j, &["contract", "function", "args", "fuel"], "a call")?;
    let (Some(contract), Some(function)) = (
        j.get("contract").and_then(J::as_str),
        j.get("function").and_then(J::as_str),
    ) else {
        return Err(
            "expected {\"contract\": NAME_OR_ID, \"function\": NAME, \"args\": …, \"fuel\": …}"
                .into(),
        );
    };
    Ok(Invoke {
        contract: contract.to_owned(),
        function: function.to_owned(),
        args: json_value(j.get("args"), "args")?,
        fuel: fuel_of(&j)?,
    })
}

async fn deploy(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    if body.len() > DEPLOY_BYTES_MAX {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a deploy request is at most {DEPLOY_BYTES_MAX} bytes"),
        );
    }
    match parse_deploy(&body) {
        Ok(d) => contract_answer(api.ask(|tx| Call::Deploy(d, tx)).await),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn call(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    match parse_call(&body) {
        Ok(c) => contract_answer(api.ask(|tx| Call::Invoke(c, tx)).await),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: Option<String>,
    at: Option<String>,
    heads: Option<String>,
    without: Option<String>,
    seen_by: Option<String>,
}

async fn contract_state(
    State(api): State<Api>,
    axum::extract::Path(name): axum::extract::Path<String>,
    q: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let cut = crate::inspect::CutText {
        at: q.at,
        heads: q.heads,
        without: q.without,
        seen_by: q.seen_by,
    };
    let call = |reply| Call::ContractState {
        name,
        key: q.key,
        cut,
        reply,
    };
    match api.ask(call).await {
        Ok(Ok(v)) => Json(v.to_json()).into_response(),
        Ok(Err(r)) => history::refused(r),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {}

/// Rotates this node's key: the rotation is written and durable, and the node's network has
/// started again under the new key by the time the next request is handled.
async fn rotate_key(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    if !body.is_empty()
        && let Err(e) = serde_json::from_slice::<RotateBody>(&body)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("expected an empty body or {{}}: {e}"),
        );
    }
    match api.ask(Call::RotateKey).await {
        Ok(Ok(r)) => Json(json!({
            "old": r.old.to_hex(),
            "node": r.node.to_hex(),
            "rotation": r.rotation.to_hex(),
        }))
        .into_response(),
        Ok(Err(WriteError::Refused(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(WriteError::Unavailable(e))) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IsolateBody {
    on: bool,
}

async fn isolate(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let b: IsolateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"on\": true|false}}: {e}"),
            );
        }
    };
    match api.inbox.send(Msg::Api(Call::Isolate(b.on))) {
        Ok(()) => Json(json!({"isolated": b.on})).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

async fn events(
    State(api): State<Api>,
    token: Option<axum::Extension<lcloud_store::TokenInfo>>,
) -> Response {
    let id = token.map_or_else(String::new, |t| t.id.clone());
    match api.streams.take(&id) {
        Ok(slot) => event_stream(api.announce.subscribe(), slot).into_response(),
        Err((status, why)) => error(status, why),
    }
}

/// The stream of one `/api/events` client, holding its slot until the client goes away.
fn event_stream(
    rx: broadcast::Receiver<Announced>,
    slot: StreamSlot,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let event = match rx.recv().await {
            Ok(a) => {
                let data = json!({
                    "id": a.id.to_hex(),
                    "author": a.author.to_hex(),
                    "seq": a.seq,
                    "ops": a.ops,
                    "local": a.local,
                    "rejected": a.rejected.iter()
                        .map(|(op, reason)| json!({"op": op, "reason": reason}))
                        .collect::<Vec<_>>(),
                });
                SseEvent::default()
                    .event("experience")
                    .data(data.to_string())
            }
            // A slow subscriber misses some: say how many and go on.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, slot)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
