//! Fuzz target for the bundle decoder (bolero): no input panics or allocates beyond what it
//! holds, and an accepted bundle re-encodes to exactly its input.

use lcloud_store::bundle;

#[test]
fn fuzz_bundles() {
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok(b) = bundle::decode(bytes) {
            let again = bundle::encode(&b.cloud, b.records.iter().copied());
            assert_eq!(again, bytes);
        }
    });
}
