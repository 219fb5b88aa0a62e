//! Who may call a node's API (issue 19): every route but the health check and the OpenAPI
//! document needs a token; scopes nest (read < write < admin); revocation and expiry take
//! effect on the running node; the debug routes exist only with `--debug-api`; `lcloud --node`
//! finds its token in `LCLOUD_TOKEN`, `--token-file` or the node's directory.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ok, start};

/// One request with `token` (or none): status and body.
fn call(api: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    common::request(api, method, path, &auth, body)
}

fn token(dir: &Path, args: &[&str]) -> String {
    let mut full = vec!["--json", "token", "create"];
    full.extend_from_slice(args);
    let j: serde_json::Value = serde_json::from_str(&ok(dir, &full)).unwrap();
    j["token"].as_str().unwrap().to_owned()
}

const SET: &str = r#"{"ops":[{"op":"set","path":"/a","value":1}]}"#;

#[test]
fn a_token_allows_its_scope_on_a_running_node_until_revoked_or_expired() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    let made = ok(&dir, &["init", "--alias", "n"]);
    assert!(made.contains("admin.token"), "{made}");
    let admin = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let admin = admin.trim();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the node's directory");
        for f in [
            "admin.token",
            "tokens.json",
            "store.redb",
            "identity.key",
            "signed-seq",
        ] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    let (_node, api) = start(&dir, "/ip4/127.0.0.1/tcp/0");

    // Open routes, and everything else refused without a valid token.
    assert_eq!(call(&api, "GET", "/api/health", None, "").0, 200);
    assert_eq!(call(&api, "GET", "/api/openapi.json", None, "").0, 200);
    let (code, why) = call(&api, "GET", "/api/state", None, "");
    assert_eq!(code, 401, "{why}");
    assert!(why.contains("needs a token"), "{why}");
    assert_eq!(call(&api, "GET", "/api/state", Some("nonsense"), "").0, 401);
    let forged = format!("lct1.{}.{}", "0".repeat(8), "0".repeat(64));
    assert_eq!(call(&api, "POST", "/api/ops", Some(&forged), SET).0, 401);

    // Scopes nest.
    let read = token(&dir, &["--scope", "read", "--name", "dash"]);
    let write = token(&dir, &["--scope", "write", "--name", "app"]);
    assert_eq!(call(&api, "GET", "/api/state", Some(&read), "").0, 200);
    let (code, why) = call(&api, "POST", "/api/ops", Some(&read), SET);
    assert_eq!(code, 403, "{why}");
    assert!(why.contains("scope read; this needs write"), "{why}");
    assert_eq!(call(&api, "POST", "/api/ops", Some(&write), SET).0, 200);
    assert_eq!(call(&api, "POST", "/api/bundle", Some(&write), "x").0, 403);
    let member = format!(
        r#"{{"ops":[{{"op":"add_member","node":"{}"}}]}}"#,
        "ab".repeat(32)
    );
    let (code, why) = call(&api, "POST", "/api/ops", Some(&write), &member);
    assert_eq!(code, 403, "{why}");
    assert!(why.contains("admin"), "{why}");
    // A body past the route's cap is refused before it is read whole.
    let huge = format!(
        r#"{{"ops":[{{"op":"set","path":"/h","value":"{}"}}]}}"#,
        "x".repeat(5 << 20)
    );
    assert_eq!(call(&api, "POST", "/api/ops", Some(admin), &huge).0, 413);
    // Without --debug-api the debug routes do not exist, even for an admin.
    assert_eq!(
        call(
            &api,
            "POST",
            "/debug/isolate",
            Some(admin),
            r#"{"on":true}"#
        )
        .0,
        404
    );

    // Revoked and expired tokens stop working on the running node.
    ok(&dir, &["token", "revoke", "dash"]);
    let (code, why) = call(&api, "GET", "/api/state", Some(&read), "");
    assert_eq!(code, 401);
    assert!(why.contains("revoked"), "{why}");
    let brief = token(&dir, &["--scope", "read", "--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, why) = call(&api, "GET", "/api/state", Some(&brief), "");
    assert_eq!(code, 401);
    assert!(why.contains("expired"), "{why}");
    let list = ok(&dir, &["token", "list"]);
    assert!(
        list.contains("revoked") && list.contains("expired"),
        "{list}"
    );
    assert!(
        !std::fs::read_to_string(dir.join("tokens.json"))
            .unwrap()
            .contains(read.rsplit('.').next().unwrap())
    );

    // Every refusal is counted by reason.
    let (_, metrics) = call(&api, "GET", "/metrics", Some(admin), "");
    assert!(
        metrics.contains("lcloud_api_refused_total{reason=\"missing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lcloud_api_refused_total{reason=\"scope\"} 3"),
        "{metrics}"
    );

    // `lcloud --node`: the directory's admin token, LCLOUD_TOKEN, or --token-file.
    let url = format!("http://{api}");
    ok(&dir, &["--node", &url, "set", "/b", "2"]);
    let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["--node", &url, "set", "/c", "3"])
        .env("LCLOUD_TOKEN", &read)
        .env_remove("LCLOUD_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("revoked"), "{err}");
    let file = base.path().join("w.token");
    std::fs::write(&file, &write).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["--node", &url, "--token-file"])
        .arg(&file)
        .args(["set", "/c", "3"])
        .env_remove("LCLOUD_DIR")
        .env_remove("LCLOUD_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, state) = call(&api, "GET", "/api/state", Some(&write), "");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&state).unwrap(),
        serde_json::json!({"a": 1, "b": 2, "c": 3})
    );
}

/// Event streams are capped per token (429) and a closed stream gives its place back.
#[test]
fn one_token_may_hold_only_so_many_event_streams() {
    use std::io::{Read, Write};
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    ok(&dir, &["init"]);
    let (_node, api) = start(&dir, "/ip4/127.0.0.1/tcp/0");
    let read = token(&dir, &["--scope", "read"]);
    let open = |t: &str| {
        let mut s = std::net::TcpStream::connect(&api).unwrap();
        write!(
            s,
            "GET /api/events HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {t}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        let code: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
        (code, s)
    };
    let held: Vec<_> = (0..16).map(|_| open(&read)).collect();
    assert!(held.iter().all(|(c, _)| *c == 200));
    assert_eq!(open(&read).0, 429);
    // Another token still gets one.
    let other = token(&dir, &["--scope", "read"]);
    assert_eq!(open(&other).0, 200);
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(open(&read).0, 200, "closed streams gave their places back");
}

/// `--cors ORIGIN`: that origin's pages get their preflights answered and may call the API
/// with a token; other sites' pages are still refused, and no token is still no access.
#[test]
fn a_page_of_an_allowed_origin_may_call_the_api_with_a_token() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("n");
    ok(&dir, &["init"]);
    let (_node, api) = common::start_with(
        &dir,
        "/ip4/127.0.0.1/tcp/0",
        &["--cors", "https://app.example"],
    );
    let read = token(&dir, &["--scope", "read"]);
    let raw = |head: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&api).unwrap();
        write!(s, "{head}Host: {api}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_ascii_lowercase()
    };
    let pre = raw(
        "OPTIONS /api/ops HTTP/1.1\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type\r\n",
    );
    assert!(pre.starts_with("http/1.1 200"), "{pre}");
    assert!(
        pre.contains("access-control-allow-origin: https://app.example"),
        "{pre}"
    );
    assert!(pre.contains("authorization"), "{pre}");
    let get = raw(&format!(
        "GET /api/state HTTP/1.1\r\nOrigin: https://app.example\r\nAuthorization: Bearer {read}\r\n"
    ));
    assert!(get.starts_with("http/1.1 200"), "{get}");
    assert!(
        get.contains("access-control-allow-origin: https://app.example"),
        "{get}"
    );
    let anonymous = raw("GET /api/state HTTP/1.1\r\nOrigin: https://app.example\r\n");
    assert!(anonymous.starts_with("http/1.1 401"), "{anonymous}");
    let evil = raw(&format!(
        "GET /api/state HTTP/1.1\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {read}\r\n"
    ));
    assert!(evil.starts_with("http/1.1 403"), "{evil}");
    // A value that is not an origin stops the node at start, naming it.
    let other = base.path().join("m");
    ok(&other, &["init"]);
    let out = common::node_cmd(&other, "/ip4/127.0.0.1/tcp/0")
        .args(["--cors", "app.example/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a web origin"), "{err}");
}
