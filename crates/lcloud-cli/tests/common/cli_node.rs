//! A node's directory for the CLI tests: the `lcloud` binary run on it.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::lcloud;

/// A store directory in a temporary directory.
pub struct Node {
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn run(&self, args: &[&str]) -> Output {
        lcloud(self.path(), args)
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lcloud {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }
    /// Runs a command that must fail; returns its one-line error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "lcloud {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: "), "one-line error, got {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        err
    }
    pub fn root(&self) -> String {
        self.ok(&["root"])
    }
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "state"])).unwrap()
    }
    pub fn bundle(&self, name: &str) -> PathBuf {
        let file = self.path().join(name);
        self.ok(&["export", file.to_str().unwrap()]);
        file
    }
    pub fn import(&self, file: &Path) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "import", file.to_str().unwrap()])).unwrap()
    }
    /// What `lcloud --json ARGS` prints.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
    /// `n` one-op experiences of the directory's own node (`set /n i`), written straight to
    /// its store (the CLI would take a process each).
    pub fn write_many(&self, n: i64) {
        let me = lcloud_store::Identity::load(self.path()).unwrap().unwrap();
        let mut store = lcloud_store::Store::open(self.path()).unwrap();
        for i in 0..n {
            let op = lcloud_core::Op::Set {
                path: lcloud_core::Path::parse("/n").unwrap(),
                value: lcloud_core::Value::Int(i),
            };
            store.write_local(&me, vec![op]).unwrap().unwrap();
        }
    }
}

/// Alice and Bob, apart, write concurrently (the register /t both set, a counter, a set); they
/// merge by bundles; Alice writes once after the merge: two lanes, a merge and a conflict.
/// Returns Alice's store and Bob's id prefix (8 hex digits).
pub fn partition_story() -> (Node, String) {
    let a = Node::new();
    a.ok(&["init", "--open", "--alias", "alice", "--cloud", "story"]);
    let b = Node::new();
    let file = a.bundle("genesis.bundle");
    b.ok(&["join", file.to_str().unwrap(), "--alias", "bob"]);
    a.ok(&["set", "/v", "1"]); // alice:2
    a.ok(&["set", "/v", "2"]); // alice:3: the last before the partition
    b.import(&a.bundle("a.bundle"));
    b.ok(&["set", "/w", "\"bob\""]); // bob:1, apart
    b.ok(&["set", "/t", "\"from bob\""]); // bob:2, apart
    a.ok(&["set", "/t", "\"from alice\""]); // alice:4, apart
    a.ok(&["incr", "/n", "5"]); // alice:5, apart
    a.import(&b.bundle("b.bundle")); // healed
    a.ok(&["add", "/s", "\"x\""]); // alice:6
    let bob = b.ok(&["id"])[..8].to_owned();
    (a, bob)
}

/// A copy of `from`'s directory (its store, identity and tokens: not its lock), for a node to
/// serve while the original stays readable by the CLI.
pub fn copy_dir(from: &Node) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for f in [
        "store.redb",
        "identity.key",
        "signed-seq",
        "admin.token",
        "tokens.json",
    ] {
        if from.path().join(f).exists() {
            std::fs::copy(from.path().join(f), to.path().join(f)).unwrap();
        }
    }
    to
}
