//! Nodes as separate processes on loopback: start, ask, converge, kill by pid.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::lcloud;

/// A running `lcloud node run`; killed (by pid) when dropped.
pub struct NodeProc {
    pub child: Child,
    pub api: String,
    pub p2p: String,
    pub dir: PathBuf,
}

impl NodeProc {
    pub fn start(dir: &Path, peers: &[&str]) -> NodeProc {
        NodeProc::start_with(dir, peers, &[])
    }

    /// [`NodeProc::start`] with more arguments to `node run`.
    pub fn start_with(dir: &Path, peers: &[&str], extra: &[&str]) -> NodeProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lcloud"));
        cmd.arg("--dir")
            .arg(dir)
            .args(["node", "run", "--api", "127.0.0.1:0", "--sync-every", "0.5"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--debug-api"])
            .args(extra)
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.spawn().expect("the node starts");
        let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (mut api, mut p2p) = (None, None);
        let mut lines = out.lines();
        while api.is_none() || p2p.is_none() {
            let line = lines
                .next()
                .expect("the node prints its addresses before anything else")
                .expect("stdout reads");
            if let Some(a) = line.strip_prefix("api ") {
                api = Some(a.to_owned());
            } else if let Some(a) = line.strip_prefix("p2p ") {
                p2p = Some(a.to_owned());
            }
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        super::register_token(api.as_deref().unwrap(), dir);
        NodeProc {
            child,
            api: api.unwrap(),
            p2p: p2p.unwrap(),
            dir: dir.to_owned(),
        }
    }

    /// `lcloud --node API ARGS…`: the command's stdout, or its error.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .args(["--node", &self.api])
            .arg("--token-file")
            .arg(self.dir.join("admin.token"))
            .args(args)
            .env_remove("LCLOUD_DIR")
            .output()
            .expect("lcloud runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    pub fn root(&self) -> String {
        self.cli(&["root"]).expect("the node answers")
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["--json", "state"]).expect("the node answers"))
            .expect("JSON")
    }

    pub fn metrics(&self) -> String {
        let addr = self.api.trim_start_matches("http://");
        http_get(addr, "/metrics")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A GET over a plain socket (the tests need no HTTP client for text endpoints).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("the API listens");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\n\r\n",
        super::auth_line(addr)
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Waits (up to 30 s) until every node reports the same root; returns it.
pub fn converge(nodes: &[&NodeProc]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let roots: Vec<String> = nodes.iter().map(|n| n.root()).collect();
        if roots.iter().all(|r| *r == roots[0]) {
            return roots[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within 30 s: {roots:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A cloud created in `base/a`, joined by the other names (from a bundle of its genesis).
pub fn cloud(base: &Path, names: &[&str], members: Option<&[&str]>) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = names.iter().map(|n| base.join(n)).collect();
    let mut init = vec!["init", "--alias", names[0], "--cloud", "net"];
    let ids: Vec<String> = match members {
        Some(m) => m
            .iter()
            .map(|n| {
                let out = lcloud(&base.join(n), &["--json", "id"]);
                let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                j["node"].as_str().unwrap().to_owned()
            })
            .collect(),
        None => Vec::new(),
    };
    for id in &ids {
        init.extend(["--member", id.as_str()]);
    }
    if members.is_none() {
        init.push("--open");
    }
    assert!(lcloud(&dirs[0], &init).status.success());
    let bundle = base.join("genesis.bundle");
    assert!(
        lcloud(&dirs[0], &["export", bundle.to_str().unwrap()])
            .status
            .success()
    );
    for (d, n) in dirs.iter().zip(names).skip(1) {
        let out = lcloud(d, &["join", bundle.to_str().unwrap(), "--alias", n]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dirs
}
