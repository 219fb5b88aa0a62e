//! Fuzz targets for the core's decoders (bolero). Under `cargo test` each replays its corpus
//! and crash files (`tests/__fuzz__/<target>/{corpus,crashes}`) and then random inputs; under
//! `cargo bolero test` (nightly) the same targets run with a coverage-guided fuzzer. Every
//! target checks two things: no input panics, and whatever is accepted re-encodes to exactly
//! the input (one value, one byte string).

mod common;

use lcloud_core::sync::{Request, Response};
use lcloud_core::{revalidate_stored, validate};

#[test]
fn fuzz_experience_bytes() {
    let cloud = common::genesis().id();
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok(exp) = validate(bytes, &cloud) {
            assert_eq!(
                exp.to_bytes(),
                bytes,
                "accepted bytes re-encode identically"
            );
        }
        if let Ok(exp) = revalidate_stored(bytes, &cloud) {
            assert_eq!(exp.to_bytes(), bytes);
        }
    });
}

#[test]
fn fuzz_sync_messages() {
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok(r) = Request::from_bytes(bytes) {
            assert_eq!(r.to_bytes(), bytes);
        }
        if let Ok(r) = Response::from_bytes(bytes) {
            assert_eq!(r.to_bytes(), bytes);
        }
    });
}
