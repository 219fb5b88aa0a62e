//! Builds the guest workspace `contracts/` for `wasm32-unknown-unknown` (release, locked) into
//! this crate's OUT_DIR, so the modules are always built from the source beside them.

use std::path::PathBuf;
use std::process::Command;

const CONTRACTS: &[&str] = &["bank", "registry", "schema"];

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let guest = here.join("../../contracts");
    for watched in ["Cargo.toml", "Cargo.lock", ".cargo", "lcloud-guest"]
        .iter()
        .chain(CONTRACTS)
    {
        println!("cargo::rerun-if-changed={}", guest.join(watched).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let target_dir = out.join("guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // From the guest workspace, so its .cargo/config.toml (the stack size) applies.
    cmd.current_dir(&guest);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-unknown-unknown",
    ])
    .arg("--manifest-path")
    .arg(guest.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The host build's flags and target are not the guest's.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the example contracts");
    if !status.success() {
        panic!(
            "building the example contracts (contracts/) for wasm32-unknown-unknown failed; \
             if the target is missing, run `rustup target add wasm32-unknown-unknown`"
        );
    }
    let built = target_dir.join("wasm32-unknown-unknown/release");
    for name in CONTRACTS {
        let from = built.join(format!("{name}.wasm"));
        std::fs::copy(&from, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}
