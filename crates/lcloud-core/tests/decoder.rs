//! Any byte string fed to the decoder gives `Ok` or an error: never a panic, never an
//! allocation the input does not justify.

mod common;

use common::*;
use lcloud_core::{Id, Replica, validate, validate_batch};
use proptest::prelude::*;

fn sample() -> (Id, Vec<u8>) {
    let g = genesis();
    let mut r = Replica::new(g.clone()).unwrap();
    let e = r
        .write(&key(1), vec![set("/a/b", r#"{"x": [1, 2, {"y": "z"}]}"#)])
        .unwrap();
    (g.id(), e.to_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate(&bytes, &Id::default());
    }

    #[test]
    fn mutated_experiences_never_panic_and_never_pass(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let (cloud, mut bytes) = sample();
        let original = bytes.clone();
        for (pos, byte, kind) in edits {
            let at = pos % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.truncate(at),
            }
        }
        let result = validate(&bytes, &cloud);
        if bytes != original {
            prop_assert!(result.is_err());
        }
        let batch = validate_batch(&[&bytes, &original], &cloud);
        prop_assert!(batch[1].is_ok());
    }
}

#[test]
fn hostile_length_prefixes_are_refused_cheaply() {
    let cloud = Id::default();
    for bytes in [
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x83, 0x5a, 0xff, 0xff, 0xff, 0xff],
        vec![0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x81; 100_000],
        vec![0xff; 16],
        Vec::new(),
    ] {
        assert!(validate(&bytes, &cloud).is_err());
    }
    let oversized = vec![0u8; lcloud_core::EXPERIENCE_BYTES_MAX + 1];
    assert!(matches!(
        validate(&oversized, &cloud),
        Err(lcloud_core::ValidationError::Malformed(
            lcloud_core::DecodeError::TooLarge { .. }
        ))
    ));
}
