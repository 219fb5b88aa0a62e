//! Running the real `lcloud` binary from tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

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
