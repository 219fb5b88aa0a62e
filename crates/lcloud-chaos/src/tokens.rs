//! The API token of each node the harness started, by API address: every request the harness
//! sends carries its node's admin token (made by `lcloud init`/`join` in the node's directory).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

static TOKENS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Remembers the admin token in `dir` for the node whose API is at `addr`.
pub fn register(addr: &str, dir: &Path) {
    if let Some(t) = lcloud_store::tokens::admin_token(dir) {
        TOKENS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.trim_start_matches("http://").to_owned(), t);
    }
}

/// The `Authorization` header line for the node at `addr` (empty if none is known).
pub fn header(addr: &str) -> String {
    TOKENS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(addr.trim_start_matches("http://"))
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}
