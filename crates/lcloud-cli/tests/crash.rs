//! Durability under `kill -9` and a full disk, on real processes and real filesystems.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Tmpfs, fill, lcloud, lcloud_stdin};

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lcloud(dir, args);
    assert!(
        out.status.success(),
        "lcloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Write, kill at a random moment, reopen: every acknowledged write survives, and the store
/// always opens and verifies.
#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(dir, &["init", "--alias", "me"]);
    let mut acknowledged = Vec::new();
    let mut killed = 0;
    let mut seed = 0x5eed_u64;
    for i in 0..40u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay_us = (seed >> 33) % 40_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .arg("--dir")
            .arg(dir)
            .args(["set", &format!("/k/{i}"), &i.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            acknowledged.push(i);
        } else {
            killed += 1;
        }
        // The store opens after every kill, and holds every acknowledged write.
        let state: serde_json::Value =
            serde_json::from_str(&ok(dir, &["--json", "state"])).unwrap();
        for a in &acknowledged {
            assert_eq!(state["k"][a.to_string()], *a, "acknowledged write {a} lost");
        }
    }
    ok(dir, &["verify"]);
    println!(
        "{} acknowledged, {killed} killed mid-way",
        acknowledged.len()
    );
    assert!(killed > 0, "the test killed some writes mid-way");
}

fn batch(dir: &Path, lines: &str) -> Output {
    lcloud_stdin(dir, &["batch"], lines.as_bytes())
}

#[test]
fn a_full_disk_gives_a_clean_error_and_writing_resumes_after_freeing_space() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "8m") else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = mnt.join("node");
    ok(&dir, &["init"]);
    ok(&dir, &["set", "/before", "1"]);
    // Fill the disk.
    let filler = mnt.join("filler");
    fill(&filler);
    let root = ok(&dir, &["root"]);
    let big = format!(
        "{{\"op\":\"set\",\"path\":\"/big\",\"value\":\"{}\"}}\n",
        "x".repeat(300_000)
    );
    let out = batch(&dir, &big);
    assert!(!out.status.success(), "a write on a full disk must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disk full"), "clear error, got {err}");
    assert_eq!(ok(&dir, &["root"]), root, "nothing changed");
    ok(&dir, &["verify"]);
    std::fs::remove_file(&filler).unwrap();
    assert!(batch(&dir, &big).status.success(), "writing resumes");
    ok(&dir, &["verify"]);
}

/// Several `lcloud` commands at once on one store: each waits for the others, none is lost.
#[test]
fn concurrent_commands_on_one_store_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(dir, &["init"]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_lcloud"))
                .arg("--dir")
                .arg(dir)
                .args(["incr", "/n", &(i + 1).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let state: serde_json::Value = serde_json::from_str(&ok(dir, &["--json", "state"])).unwrap();
    assert_eq!(state["n"], 36);
    ok(dir, &["verify"]);
}
