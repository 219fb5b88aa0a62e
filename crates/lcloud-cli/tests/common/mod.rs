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
