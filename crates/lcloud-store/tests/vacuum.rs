//! Giving a store file's free pages back (`Store::vacuum`, `Store::close`) changes nothing it
//! holds, and gives back pages a burst of commits left free.

mod common;

use common::{new_store, ops, write};
use lcloud_core::{ForkPolicy, Op, Path, Value};
use lcloud_store::Store;

#[test]
fn vacuum_gives_pages_back_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, me, _) = new_store(dir.path(), ForkPolicy::Concurrent);
    let mut seed = 7;
    for i in 0..600u32 {
        // One commit each; a large value now and then, overwritten later, so that commits
        // free whole pages.
        let mut batch = ops(&mut seed);
        if i % 10 == 0 {
            batch.push(Op::Set {
                path: Path::parse(&format!("/big/{}", i % 30)).unwrap(),
                value: Value::Str("x".repeat(3000 + i as usize)),
            });
        }
        write(&mut store, &me, batch);
    }
    let replica = store.load(&mut |_| {}).unwrap();
    let mid = replica.lattice().clock(replica.lattice().len() as u32 / 2);
    let root = store.state().unwrap().root();
    let root_mid = store.state_at_clock(&mid).unwrap().unwrap().root();

    let done = store.vacuum().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (before, after) = done.bytes;
    assert!(
        after < before,
        "a store after 600 commits gave nothing back: {before} → {after} bytes"
    );
    let file = std::fs::metadata(dir.path().join("store.redb"))
        .unwrap()
        .len();
    assert_eq!(after, file, "the size reported is the file's");
    // Still writable: a write, then a clean close.
    assert!(write(
        &mut store,
        &me,
        vec![Op::Set {
            path: Path::parse("/after").unwrap(),
            value: Value::Int(1),
        }]
    ));
    let root_after_write = store.state().unwrap().root();
    let closed = store.close().unwrap();
    assert!(closed.bytes.1 <= closed.bytes.0);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.state().unwrap().root(), root_after_write);
    assert_ne!(root_after_write, root, "the write after vacuuming is kept");
    assert_eq!(
        store.state_at_clock(&mid).unwrap().unwrap().root(),
        root_mid,
        "time travel reads the same checkpoints and records"
    );
    let again = store.load(&mut |_| {}).unwrap();
    assert_eq!(again.lattice().len(), replica.lattice().len() + 1);
    for (a, b) in replica.lattice().iter().zip(again.lattice().iter()) {
        assert_eq!(a.id(), b.id());
    }
}
