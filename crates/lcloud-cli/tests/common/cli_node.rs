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
}
