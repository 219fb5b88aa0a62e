//! Where a store's bytes go: writes N single-op experiences (a 200-byte value each, as the
//! store benchmark's W1 does, 64 writers through the group committer), then prints the file's
//! length, its allocated blocks and, per redb table, the bytes stored and the pages used.
//!
//! `cargo run --release -p lcloud-store --example space [N]` (N = 20480 by default).

use lcloud_core::{Experience, Genesis, Op, Path, Value};
use lcloud_store::{Committer, Identity, Store};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    TableStats,
};
use std::os::unix::fs::MetadataExt;

fn op(i: usize) -> Op {
    let mut s = format!("{i:08}");
    s.push_str(&"x".repeat(200 - s.len()));
    Op::Set {
        path: Path::from(vec!["k".into(), (i % 1000).to_string()]),
        value: Value::Str(s),
    }
}

/// The stats of table `name`, whatever its key and value types among the store's.
fn stats(tx: &redb::ReadTransaction, name: &str) -> Option<TableStats> {
    macro_rules! try_as {
        ($k:ty, $v:ty) => {
            if let Ok(t) = tx.open_table(TableDefinition::<$k, $v>::new(name)) {
                return t.stats().ok();
            }
        };
    }
    try_as!(u64, &[u8]);
    try_as!(&[u8], &[u8]);
    try_as!(&[u8; 32], &[u8]);
    try_as!(&[u8; 32], &str);
    try_as!((u32, u64, u64), ());
    try_as!((u32, u64, u64), u64);
    try_as!(&str, &[u8]);
    try_as!(u32, &[u8; 32]);
    None
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20480, |a| a.parse().expect("N: a number of experiences"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let me = Identity::load_or_create(dir.path()).expect("an identity");
    let genesis = Experience::create_genesis(me.key(), Genesis::open("space"));
    let store = Store::create(dir.path(), &genesis).expect("a store");
    let committer = Committer::start(store, me);
    let writers = 64;
    std::thread::scope(|s| {
        for w in 0..writers {
            let writer = committer.writer();
            s.spawn(move || {
                for i in 0..n / writers {
                    writer
                        .write(vec![op(w * n / writers + i)])
                        .expect("a write");
                }
            });
        }
    });
    committer.stop();
    let n = (n / writers * writers) as f64;
    let file = dir.path().join("store.redb");
    let meta = std::fs::metadata(&file).expect("the store file");
    println!(
        "file length {} B ({:.1} B/experience), allocated {} B ({:.1} B/experience)",
        meta.len(),
        meta.len() as f64 / n,
        meta.blocks() * 512,
        (meta.blocks() * 512) as f64 / n
    );
    let db = redb::Database::open(&file).expect("the database");
    let tx = db.begin_read().expect("a read transaction");
    println!(
        "{:20} {:>12} {:>10} {:>8} {:>12}",
        "table", "stored B", "B/exp", "pages", "frag B"
    );
    for table in tx.list_tables().expect("the tables") {
        let name = table.name().to_owned();
        let Some(s) = stats(&tx, &name) else {
            println!("{name:20} (unknown types)");
            continue;
        };
        println!(
            "{name:20} {:>12} {:>10.1} {:>8} {:>12}",
            s.stored_bytes(),
            s.stored_bytes() as f64 / n,
            s.leaf_pages() + s.branch_pages(),
            s.fragmented_bytes()
        );
    }
    // How full the groups are: their count and sizes (a group should fill its page).
    let groups = tx
        .open_table(TableDefinition::<u64, &[u8]>::new("groups"))
        .expect("the groups");
    let sizes: Vec<usize> = groups
        .iter()
        .expect("the groups")
        .map(|row| row.expect("a group").1.value().len())
        .collect();
    let total: usize = sizes.iter().sum();
    println!(
        "groups: {} of {:.0} B on average ({:.1} experiences each), {} over a page",
        sizes.len(),
        total as f64 / sizes.len() as f64,
        n / sizes.len() as f64,
        sizes.iter().filter(|&&s| s > 4096).count()
    );
}
