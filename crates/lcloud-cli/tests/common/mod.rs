//! Running the real `lcloud` binary from tests.
#![allow(dead_code)]

pub mod browser;
pub mod cli_node;
pub mod procs;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// `lcloud --dir DIR ARGS…`, ignoring any `LCLOUD_DIR` of the environment.
pub fn lcloud(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LCLOUD_DIR")
        .output()
        .expect("lcloud runs")
}

/// `lcloud --dir DIR ARGS…`, which must succeed: its stdout, trailing whitespace trimmed.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lcloud(dir, args);
    assert!(
        out.status.success(),
        "lcloud {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// `lcloud --dir DIR ARGS…` with `stdin` piped in.
pub fn lcloud_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LCLOUD_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lcloud runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("lcloud reads stdin");
    child.wait_with_output().expect("lcloud ends")
}

/// A small tmpfs at a new directory `at`, unmounted when dropped (whatever happens in the
/// test). `None` where it cannot be mounted (not root): the caller skips, saying why.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir(at).expect("a fresh directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_owned()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until its file system is full.
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("the filler file");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

static TOKENS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Remembers the admin token of the node in `dir` for requests to its API at `api`
/// (`127.0.0.1:PORT`, with or without `http://`).
pub fn register_token(api: &str, dir: &Path) {
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("the node's admin token");
    TOKENS.lock().unwrap().insert(
        api.trim_start_matches("http://").to_owned(),
        token.trim().to_owned(),
    );
}

/// The `Authorization` header line (with its CRLF) for the node at `api`, if registered.
pub fn auth_line(api: &str) -> String {
    TOKENS
        .lock()
        .unwrap()
        .get(api.trim_start_matches("http://"))
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// A running node, killed by pid when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn node_cmd(dir: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lcloud"));
    cmd.arg("--dir")
        .arg(dir)
        .args(["node", "run", "--api", "127.0.0.1:0", "--listen", listen])
        .env_remove("LCLOUD_DIR")
        .env_remove("LCLOUD_NODE");
    cmd
}

/// Starts a node; returns it with its API address once it prints it.
pub fn start(dir: &Path, listen: &str) -> (Running, String) {
    start_with(dir, listen, &[])
}

/// [`start`] with more options for `lcloud node run`.
pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> (Running, String) {
    let mut child = node_cmd(dir, listen)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let running = Running(child);
    let api = loop {
        let line = lines.next().expect("the node prints its API").unwrap();
        if let Some(a) = line
            .strip_prefix("api http://")
            .or_else(|| line.strip_prefix("api https://"))
        {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    register_token(&api, dir);
    (running, api)
}

/// One HTTP/1.1 request (`Connection: close`) with `headers` (each ending in CRLF) and a
/// content type of the route's kind: the status code and the body.
pub fn request(api: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let api = api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(api).expect("the API listens");
    let ct = if path == "/api/bundle" {
        "application/octet-stream"
    } else {
        "application/json"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Type: {ct}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server may answer (413, 401) and close before the body is all sent: the write then
    // fails with a broken pipe or a reset, and the answer is still there to read.
    let _ = s.write_all(body.as_bytes());
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                assert!(!raw.is_empty(), "no answer from {api}{path}: {e}");
                break;
            }
        }
    }
    let out = String::from_utf8_lossy(&raw).into_owned();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// `lcloud demo --keep --dir DIR` run to its end, and the debugger's node it left running,
/// stopped by pid when this is dropped.
pub struct KeptDemo {
    /// What the demo printed.
    pub text: String,
    /// The page's address, its token in the fragment.
    pub page: String,
    /// The debugger node's API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The page's read token.
    pub token: String,
    /// The debugger node's process.
    pub pid: u32,
}

impl Drop for KeptDemo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// Runs `lcloud demo --keep` in `dir` and reads the debugger's address and pid it printed.
pub fn kept_demo(dir: &Path) -> KeptDemo {
    let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .args(["demo", "--keep", "--dir"])
        .arg(dir)
        .env_remove("LCLOUD_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = text
        .lines()
        .find_map(|l| l.strip_prefix("debugger: "))
        .unwrap_or_else(|| panic!("no debugger address in:\n{text}"))
        .to_owned();
    let pid: u32 = text
        .split("kill ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid to stop in:\n{text}"));
    let (url, token) = page.split_once("#token=").expect("a token in the address");
    let (api, token) = (url.trim_end_matches("/ui").to_owned(), token.to_owned());
    KeptDemo {
        text,
        page,
        api,
        token,
        pid,
    }
}
