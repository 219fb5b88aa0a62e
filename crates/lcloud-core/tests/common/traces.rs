//! The editing traces in `data/editing-traces` (CC BY 4.0, README there).

/// The trace `name`, parsed.
pub fn trace(name: &str) -> serde_json::Value {
    use std::io::Read;
    let path = format!(
        "{}/../../data/editing-traces/{name}.json.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A transaction's patches: `(index, characters deleted, text inserted)`.
pub fn patches(txn: &serde_json::Value) -> impl Iterator<Item = (usize, usize, &str)> {
    txn["patches"].as_array().unwrap().iter().map(|p| {
        (
            p[0].as_u64().unwrap() as usize,
            p[1].as_u64().unwrap() as usize,
            p[2].as_str().unwrap(),
        )
    })
}
