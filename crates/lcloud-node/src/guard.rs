//! The API answers only requests addressed to this node, and writes only from programs that
//! meant to send them. A web page a person visits can make their browser send requests to
//! `127.0.0.1:7400`: a form or `fetch` with a "simple" content type (`text/plain`, form
//! encodings) is sent without a CORS preflight, and a DNS name an attacker controls can be
//! re-pointed at 127.0.0.1 (DNS rebinding). So:
//!
//! - `Host` must name this node: an IP address, `localhost`, or a name given with `--api-host`,
//!   with the API's port. A rebinding attack needs the attacker's own name here.
//! - `Origin`, when a browser sends one, must be this node's own origin (`http://HOST:PORT`
//!   with a host as above) or one given with `--cors`: pages of other sites are refused (403).
//! - Bodies must carry the content type of their route (`application/json` for JSON routes,
//!   `application/octet-stream` for bundles; 415 otherwise): neither can be sent cross-site
//!   without a preflight, which this API never grants.
//!
//! Programs (the CLI, curl, scripts) send no `Origin` and a `Host` of the address they dialled.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Who the API answers: its bound port and the extra host names it goes by.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The port the API listens on.
    pub port: u16,
    /// Host names besides IP addresses and `localhost` (`--api-host`), lowercase.
    pub names: Vec<String>,
    /// Web origins whose pages may call the API (`--cors`), as `scheme://host[:port]`.
    pub cors: Vec<String>,
}

impl Guard {
    /// Whether `authority` (`host[:port]`, as in `Host` or an origin) names this node.
    fn names_me(&self, authority: &str) -> bool {
        let (host, port) = split_authority(authority);
        if port.unwrap_or(80) != self.port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || self.names.contains(&host)
    }

    /// The refusal for this request, if any: `(status, why)`.
    fn check(&self, req: &Request) -> Option<(StatusCode, String)> {
        let headers = req.headers();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        match host {
            Some(h) if self.names_me(h) => {}
            Some(h) => {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "Host {h:?} does not name this node (an IP address, localhost, or a name \
                         given with --api-host, with port {}): refused against DNS rebinding",
                        self.port
                    ),
                ));
            }
            None => {
                return Some((StatusCode::FORBIDDEN, "no Host header".into()));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let same = origin
                .strip_prefix("http://")
                .is_some_and(|authority| self.names_me(authority));
            if !same && !self.cors.iter().any(|o| o == origin) {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "requests from the web page at {origin:?} are refused: only this node's own \
                         pages may call its API from a browser"
                    ),
                ));
            }
        }
        // Only routes that take a body: a POST elsewhere is the router's 405.
        let takes_body = matches!(
            req.uri().path(),
            "/api/ops" | "/api/call" | "/api/contracts" | "/api/bundle" | "/debug/isolate"
        );
        if req.method() == Method::POST && takes_body {
            let wanted = if req.uri().path() == "/api/bundle" {
                "application/octet-stream"
            } else {
                "application/json"
            };
            let given = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or("");
            let essence = given.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case(wanted) {
                return Some((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "{} takes Content-Type: {wanted}, not {given:?}",
                        req.uri().path()
                    ),
                ));
            }
        }
        None
    }
}

/// `host[:port]` (an IPv6 host in brackets) into its parts; the port is `None` if absent or
/// not a number.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return (authority, None);
        };
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()),
        None => (authority, Some(80)),
    }
}

/// The middleware: refuses what [`Guard`] refuses, with a JSON error naming why.
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    match g.check(&req) {
        None => next.run(req).await,
        Some((status, why)) => crate::api::error(status, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    fn g() -> Guard {
        Guard {
            port: 7400,
            names: vec!["node.lan".into()],
            cors: vec!["https://app.example".into()],
        }
    }

    fn status(method: &str, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
        g().check(&req(method, path, headers))
            .map(|(s, _)| s.as_u16())
    }

    #[test]
    fn programs_on_this_machine_pass() {
        let json = ("content-type", "application/json");
        assert_eq!(
            status("GET", "/api/state", &[("host", "127.0.0.1:7400")]),
            None
        );
        assert_eq!(
            status("GET", "/api/state", &[("host", "localhost:7400")]),
            None
        );
        assert_eq!(status("GET", "/api/state", &[("host", "[::1]:7400")]), None);
        assert_eq!(
            status("GET", "/metrics", &[("host", "NODE.lan:7400")]),
            None
        );
        assert_eq!(
            status("POST", "/api/ops", &[("host", "10.0.0.5:7400"), json]),
            None
        );
        let own = ("origin", "http://127.0.0.1:7400");
        assert_eq!(
            status("POST", "/api/ops", &[("host", "127.0.0.1:7400"), own, json]),
            None
        );
        let octets = ("content-type", "application/octet-stream");
        assert_eq!(
            status("POST", "/api/bundle", &[("host", "127.0.0.1:7400"), octets]),
            None
        );
    }

    #[test]
    fn other_sites_and_other_names_are_refused() {
        let host = ("host", "127.0.0.1:7400");
        let json = ("content-type", "application/json; charset=utf-8");
        // Another site's page.
        for origin in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:7400",
            "http://127.0.0.1:7401",
        ] {
            assert_eq!(
                status("POST", "/api/ops", &[host, ("origin", origin), json]),
                Some(403),
                "{origin}"
            );
        }
        // DNS rebinding: the attacker's name, pointed at 127.0.0.1.
        assert_eq!(
            status("GET", "/api/state", &[("host", "evil.example:7400")]),
            Some(403)
        );
        assert_eq!(
            status("GET", "/api/state", &[("host", "127.0.0.1:80")]),
            Some(403)
        );
        assert_eq!(status("GET", "/api/state", &[]), Some(403));
        // Content types a page can send without a preflight.
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "",
        ] {
            assert_eq!(
                status("POST", "/api/ops", &[host, ("content-type", ct)]),
                Some(415),
                "{ct}"
            );
            assert_eq!(
                status("POST", "/api/bundle", &[host, ("content-type", ct)]),
                Some(415),
                "{ct}"
            );
        }
        assert_eq!(status("POST", "/api/ops", &[host, json]), None);
    }

    #[test]
    fn the_openapi_document_lists_the_guards_answers_on_every_route() {
        let doc = crate::api::openapi_document(true);
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 14);
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["responses"]["403"].is_object(), "{method} {path}");
                let post = method == "post";
                assert_eq!(op["responses"]["415"].is_object(), post, "{method} {path}");
            }
        }
    }
}
