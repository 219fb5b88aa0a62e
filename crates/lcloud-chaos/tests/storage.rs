//! The storage tier through the real binary: kill -9 at random moments (the writer is the
//! binary itself, killed), truncations, flipped bits and backup restores; nothing acknowledged
//! lost, nothing corrupt served, no seq signed twice.

#[test]
fn the_storage_tier_passes_and_says_what_it_refused() {
    // The rounds under the `lcloud` binary are left out here (another package builds it):
    // the CI tier runs them (`ci --lcloud target/release/lcloud`).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lcloud-chaos"))
        .args(["storage", "--rounds", "40", "--seed", "3"])
        .args(["--lcloud", "/nonexistent/lcloud"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("8 kill -9, 8 truncations, 8 flipped bits, 8 backup restores"),
        "{text}"
    );
    assert!(
        text.contains("8 compactions killed") && text.contains("each reopened with its root"),
        "{text}"
    );
    assert!(
        text.contains("acknowledged lost=0 corrupt accepted=0 self-equivocations=0"),
        "{text}"
    );
    // Damage is refused by name, not served.
    assert!(text.contains("store corrupt"), "{text}");
    assert!(
        text.contains("no lcloud binary at /nonexistent/lcloud"),
        "{text}"
    );
}

#[test]
fn bad_arguments_are_refused_with_the_usage() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lcloud-chaos"))
        .args(["sim"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage") && err.contains("--seed"), "{err}");
    // A misspelt option is an error, not a silent default.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lcloud-chaos"))
        .args(["soak", "--minuts", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--minuts"), "{err}");
}
