//! The example contracts of λCLOUD, built from `contracts/` (the guest SDK `lcloud-guest` and
//! one crate per contract) for `wasm32-unknown-unknown` by this crate's build script: what the
//! demo, the tests, the benchmarks and the chaos harness deploy.

/// `bank`: accounts whose transfers never overdraw (contracts/bank/src/lib.rs).
pub const BANK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bank.wasm"));

/// `registry`: first-come name registration (contracts/registry/src/lib.rs).
pub const REGISTRY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/registry.wasm"));

/// `schema`: guards a document path; entries written there keep a rule set given at deploy
/// (contracts/schema/src/lib.rs).
pub const SCHEMA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/schema.wasm"));

/// Every example, by name.
pub const ALL: &[(&str, &[u8])] = &[("bank", BANK), ("registry", REGISTRY), ("schema", SCHEMA)];
