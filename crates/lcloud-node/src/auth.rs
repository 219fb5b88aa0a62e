//! Who may call the API: every route but `/api/health` and `/api/openapi.json` needs
//! `Authorization: Bearer TOKEN` with a scope that allows it (docs/security.md).
//!
//! The tokens live in the node's directory (`lcloud_store::tokens`); the node reads the file
//! again whenever it changed, so `lcloud token create` and `lcloud token revoke` take effect
//! on a running node at its next request. A missing, malformed, unknown, revoked or expired
//! token is 401; a valid token without the route's scope is 403. Each refusal is counted by
//! reason (`/metrics`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use lcloud_store::{Denied, Scope, TokenInfo, Tokens};

/// Refusals, by reason, since the node started.
#[derive(Debug, Default)]
pub struct Refusals {
    /// No token.
    pub missing: AtomicU64,
    /// A malformed, unknown, revoked or expired token.
    pub invalid: AtomicU64,
    /// A valid token without the scope.
    pub scope: AtomicU64,
    /// A token past its request rate.
    pub rate: AtomicU64,
}

/// The node's tokens, as the API checks them.
#[derive(Debug)]
pub struct Auth {
    dir: PathBuf,
    /// The tokens as last read, and the file's modification time and length then.
    cache: Mutex<Option<(Option<SystemTime>, u64, Tokens)>>,
    /// Refusals so far.
    pub refused: Refusals,
    /// Requests per second allowed to one token (0: no limit).
    rate: u32,
    /// Each token's bucket: requests it may still make now, and when that was counted.
    buckets: Mutex<BTreeMap<String, (f64, Instant)>>,
}

/// The scope a request needs, `None` for the open routes.
pub fn needs(method: &Method, path: &str) -> Option<Scope> {
    if path == "/api/health" || path == "/api/openapi.json" {
        return None;
    }
    // The debugger's page holds no data: it asks the API with the token it is given.
    if (method == Method::GET || method == Method::HEAD) && crate::ui::is_page(path) {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Scope::Read);
    }
    Some(match path {
        "/api/ops" | "/api/call" => Scope::Write,
        _ => Scope::Admin,
    })
}

impl Auth {
    /// The tokens of the node in `dir`; each may make `rate` requests a second (as many at
    /// once), 0 for no limit.
    pub fn new(dir: PathBuf, rate: u32) -> Auth {
        Auth {
            dir,
            cache: Mutex::new(None),
            refused: Refusals::default(),
            rate,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket (refilled at the rate, holding at most one
    /// second's worth), or how long until it has one.
    fn spend(&self, token: &str, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (left, at) = buckets.entry(token.to_owned()).or_insert((rate, now));
        *left = (*left + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *left >= 1.0 {
            *left -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *left) / rate))
        }
    }

    /// The token `presented` if it allows `needs` now, or why not (a token file that cannot
    /// be read refuses everything).
    pub fn check(&self, presented: Option<&str>, needs: Scope) -> Result<TokenInfo, Denied> {
        let Some(presented) = presented else {
            return Err(Denied::Missing);
        };
        let path = self.dir.join("tokens.json");
        let meta = std::fs::metadata(&path).ok();
        let stamp = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = matches!(&*cache, Some((m, l, _)) if (*m, *l) == stamp);
        if !fresh {
            match Tokens::load(&self.dir) {
                Ok(t) => *cache = Some((stamp.0, stamp.1, t)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the API tokens: every request is refused");
                    *cache = None;
                    return Err(Denied::Unknown);
                }
            }
        }
        let (_, _, tokens) = cache.as_ref().expect("loaded above");
        tokens
            .check(presented, needs, lcloud_store::tokens::unix_now())
            .cloned()
    }

    fn count(&self, d: &Denied) {
        let c = match d {
            Denied::Missing => &self.refused.missing,
            Denied::Scope { .. } => &self.refused.scope,
            _ => &self.refused.invalid,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The middleware: refuses what the token does not allow, and hands the token on to the
/// handlers (as a request extension).
pub async fn auth(State(a): State<std::sync::Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let Some(scope) = needs(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim());
    match a.check(presented, scope) {
        Ok(token) => {
            if let Err(wait) = a.spend(&token.id, Instant::now()) {
                a.refused.rate.fetch_add(1, Ordering::Relaxed);
                let mut r = crate::api::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "token {} made more than {} requests a second: slow down",
                        token.id, a.rate
                    ),
                );
                let secs = wait.as_secs().max(1).to_string();
                if let Ok(v) = header::HeaderValue::from_str(&secs) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            req.extensions_mut().insert(token);
            next.run(req).await
        }
        Err(d) => {
            a.count(&d);
            let status = match d {
                Denied::Scope { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut r = crate::api::error(status, d.to_string());
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_but_health_and_the_document_needs_a_scope() {
        assert_eq!(needs(&Method::GET, "/api/health"), None);
        assert_eq!(needs(&Method::GET, "/api/openapi.json"), None);
        assert_eq!(needs(&Method::GET, "/api/state"), Some(Scope::Read));
        assert_eq!(needs(&Method::GET, "/api/bundle"), Some(Scope::Read));
        assert_eq!(
            needs(&Method::GET, "/api/bundle/shallow"),
            Some(Scope::Read)
        );
        assert_eq!(needs(&Method::POST, "/api/ops"), Some(Scope::Write));
        assert_eq!(needs(&Method::POST, "/api/call"), Some(Scope::Write));
        assert_eq!(needs(&Method::POST, "/api/bundle"), Some(Scope::Admin));
        assert_eq!(needs(&Method::POST, "/api/contracts"), Some(Scope::Admin));
        assert_eq!(needs(&Method::POST, "/debug/isolate"), Some(Scope::Admin));
        assert_eq!(needs(&Method::POST, "/api/key/rotate"), Some(Scope::Admin));
        assert_eq!(needs(&Method::DELETE, "/api/state"), Some(Scope::Admin));
    }

    #[test]
    fn a_token_may_make_its_rate_of_requests_a_second_and_no_more() {
        let a = Auth::new(PathBuf::from("/nonexistent"), 10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(a.spend("a", t0), Ok(()));
        }
        let wait = a.spend("a", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        // Another token has its own bucket.
        assert_eq!(a.spend("b", t0), Ok(()));
        // A tenth of a second refills one request, and no more than a second's worth builds up.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.spend("a", t1), Ok(()));
        assert!(a.spend("a", t1).is_err());
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..11).filter(|_| a.spend("a", t2).is_ok()).count(), 10);
        // No limit at 0.
        let free = Auth::new(PathBuf::from("/nonexistent"), 0);
        assert!((0..100_000).all(|_| free.spend("a", t0).is_ok()));
    }

    #[test]
    fn the_openapi_document_says_which_routes_need_which_token() {
        let doc = crate::api::openapi_document(true);
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let open = path == "/api/health" || path == "/api/openapi.json";
                assert_eq!(op["responses"]["401"].is_object(), !open, "{method} {path}");
                assert_eq!(
                    op["security"] == serde_json::json!([]),
                    open,
                    "{method} {path}"
                );
            }
        }
    }
}
