//! Architecture invariants enforced as a test: the core does no I/O, reads no clock, draws no
//! randomness and starts no threads, and depends on nothing that does.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn core_has_no_io_clock_randomness_or_threads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found the core's sources");
    let forbidden = [
        "tokio",
        "std::fs",
        "std::net",
        "std::thread",
        "std::process",
        "SystemTime",
        "Instant::now",
        "thread_rng",
        "OsRng",
        "getrandom",
        "std::env",
        "HashSet<", // iteration order must never reach anything hashed, signed or folded
    ];
    let mut hits = Vec::new();
    for (name, text) in &files {
        for word in forbidden {
            if text.contains(word) {
                hits.push(format!("{name} mentions {word}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the core must stay sans-IO:\n{}",
        hits.join("\n")
    );
}

#[test]
fn core_depends_on_no_runtime_or_io_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    for banned in [
        "tokio",
        "async-std",
        "redb",
        "libp2p",
        "rand ",
        "getrandom",
        "std-fs",
    ] {
        assert!(
            !deps.contains(banned),
            "lcloud-core must not depend on {banned}"
        );
    }
}
