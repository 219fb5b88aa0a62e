//! The API's time travel: the state and root at any cut or view, the diff between two cuts, a
//! page of the log, a register's conflicts and a contract key's writers, answered by the node from its store and memory
//! as `lcloud` answers them on a local store (`crate::inspect`), so a client need not download
//! the history to ask.

use super::*;
use crate::inspect::{CutText, LOG_PAGE_MAX, Refused};
use crate::node::Question;

type Q<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// Rows of a page of the log when the client names no limit.
pub const LOG_PAGE_DEFAULT: usize = 1000;

/// The answer to a question refused: 422 for what does not resolve, 404 for what is not held,
/// 410 for what was compacted away.
pub(super) fn refused(r: Refused) -> Response {
    let status = match &r {
        // The query string parsed; what it names does not resolve (a malformed clock, an
        // unknown node, two cuts at once): the request's content, not its form.
        Refused::Bad(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Refused::NotHeld(_) => StatusCode::NOT_FOUND,
        Refused::Compacted(_) => StatusCode::GONE,
        Refused::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, r.to_string())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CutQuery {
    path: Option<String>,
    at: Option<String>,
    heads: Option<String>,
    without: Option<String>,
    seen_by: Option<String>,
}

impl CutQuery {
    fn cut(&self) -> CutText {
        CutText {
            at: self.at.clone(),
            heads: self.heads.clone(),
            without: self.without.clone(),
            seen_by: self.seen_by.clone(),
        }
    }
}

/// The state at the cut a query names, or `Err` with the answer to send.
async fn view(api: &Api, cut: CutText) -> Result<lcloud_core::State, Response> {
    match api.ask(|tx| Call::View(cut, tx)).await? {
        Ok(state) => Ok(state),
        Err(r) => Err(refused(r)),
    }
}

fn parse_path(pointer: &str) -> Result<Path, Refused> {
    Ok(crate::resolve::path(pointer)?)
}

/// `GET /api/state`: the value at `path` (the whole document without one), now, or at the cut
/// or view the query names (`at`, `heads`, `without`, `seen_by`, as `lcloud state` takes them).
pub(super) async fn state(State(api): State<Api>, q: Q<CutQuery>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let cut = q.cut();
    let pointer = q.path.unwrap_or_default();
    let path = match parse_path(&pointer) {
        Ok(p) => p,
        Err(r) => return error(StatusCode::BAD_REQUEST, r.to_string()),
    };
    if cut.is_now() {
        return match api.ask(|tx| Call::State(path, tx)).await {
            Ok(Some(v)) => Json(v).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("nothing at {pointer:?}")),
            Err(r) => r,
        };
    }
    let state = match view(&api, cut).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let path = (!pointer.is_empty()).then_some(path);
    match tokio::task::spawn_blocking(move || crate::inspect::value(&state, path.as_ref())).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(r)) => refused(r),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the state failed",
        ),
    }
}

/// `GET /api/root`: the state root now, or at the cut or view the query names (what
/// `lcloud root` and `lcloud bisect` compare), hashed off the node's thread.
pub(super) async fn root(State(api): State<Api>, q: Q<CutQuery>) -> Response {
    let cut = match q {
        Ok(Query(CutQuery { path: Some(_), .. })) => {
            return error(
                StatusCode::BAD_REQUEST,
                "a root is the whole state's: no path",
            );
        }
        Ok(Query(q)) => q.cut(),
        Err(e) => return bad_query(e),
    };
    if cut.is_now() {
        return match status_with_root(&api).await {
            Ok((_, root)) => Json(json!({"root": root.to_hex()})).into_response(),
            Err(r) => r,
        };
    }
    let state = match view(&api, cut).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match tokio::task::spawn_blocking(move || state.root()).await {
        Ok(root) => Json(json!({"root": root.to_hex()})).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "hashing the state failed",
        ),
    }
}

async fn ask(api: &Api, q: Question) -> Response {
    match api.ask(|tx| Call::Ask(q, tx)).await {
        Ok(Ok(j)) => Json(j).into_response(),
        Ok(Err(r)) => refused(r),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /api/diff?from=CUT&to=CUT`: what changed, path by path (`lcloud diff`).
pub(super) async fn diff(State(api): State<Api>, q: Q<DiffQuery>) -> Response {
    match q {
        Ok(Query(DiffQuery { from, to })) => ask(&api, Question::Diff { from, to }).await,
        Err(e) => bad_query(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    only: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/log`: a page of the history, newest first (`lcloud log`), with the cursor of the
/// next page.
pub(super) async fn log(State(api): State<Api>, q: Q<LogQuery>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = q.limit.unwrap_or(LOG_PAGE_DEFAULT);
    if !(1..=LOG_PAGE_MAX).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {LOG_PAGE_MAX}"),
        );
    }
    let q = Question::Log {
        only: q.only,
        before: q.before,
        limit,
    };
    ask(&api, q).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConflictsQuery {
    path: String,
    at: Option<String>,
    heads: Option<String>,
    without: Option<String>,
    seen_by: Option<String>,
}

/// `GET /api/conflicts?path=P`: the concurrent values of the register at `path`, now or at a
/// cut or view (`lcloud conflicts`).
pub(super) async fn conflicts(State(api): State<Api>, q: Q<ConflictsQuery>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    match parse_path(&q.path) {
        Ok(p) => {
            let cut = CutText {
                at: q.at,
                heads: q.heads,
                without: q.without,
                seen_by: q.seen_by,
            };
            ask(&api, Question::Conflicts(p, cut)).await
        }
        Err(r) => error(StatusCode::BAD_REQUEST, r.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WritesQuery {
    key: String,
    at: Option<String>,
    heads: Option<String>,
    without: Option<String>,
    seen_by: Option<String>,
}

/// `GET /api/contracts/{name}/writes?key=K`: who set key `K` of the contract to its value, now
/// or at a cut, and what it held before (`lcloud contract writes`).
pub(super) async fn writes(
    State(api): State<Api>,
    axum::extract::Path(contract): axum::extract::Path<String>,
    q: Q<WritesQuery>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let cut = CutText {
        at: q.at,
        heads: q.heads,
        without: q.without,
        seen_by: q.seen_by,
    };
    let key = q.key;
    ask(&api, Question::Writes { contract, key, cut }).await
}
