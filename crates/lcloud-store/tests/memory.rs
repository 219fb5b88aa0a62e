//! Reading the current state costs memory for the state, not for the history behind it.

// Counting heap bytes needs a global allocator, which is `unsafe` to implement: allowed here,
// in this test only. The libraries forbid unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lcloud_core::{Experience, Genesis, Op, Path, Value};
use lcloud_store::{Committer, Identity, Store};

/// Counts live and peak heap bytes of this test binary.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A store whose history has `experiences` writes over the same 50 keys.
fn store_with(experiences: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("m"));
    let store = Store::create(dir.path(), &genesis).unwrap();
    let committer = Committer::start(store, me);
    let writer = committer.writer();
    std::thread::scope(|s| {
        for t in 0..8 {
            let writer = writer.clone();
            s.spawn(move || {
                for i in (t..experiences).step_by(8) {
                    let path = Path::parse(&format!("/k/{}", i % 50)).unwrap();
                    writer
                        .write(vec![Op::Set {
                            path,
                            value: Value::Int(i as i64),
                        }])
                        .unwrap();
                }
            });
        }
    });
    drop(writer);
    committer.stop();
    dir
}

/// Peak heap bytes while opening the store and reading its whole current document.
fn peak_reading(dir: &std::path::Path) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let store = Store::open(dir).unwrap();
    let doc = store.document(&Path::root()).unwrap().unwrap();
    assert_eq!(doc.to_json()["k"].as_object().unwrap().len(), 50);
    drop((doc, store));
    PEAK.load(Ordering::Relaxed) - before
}

#[test]
fn reading_the_current_state_does_not_grow_with_history() {
    let short = store_with(500);
    let long = store_with(10_000);
    let (a, b) = (peak_reading(short.path()), peak_reading(long.path()));
    println!("peak heap reading the state: {a} bytes after 500 writes, {b} after 10 000");
    // Twenty times the history, the same state: the memory to read it stays the same
    // (allowing for redb's page cache, which fills with what it reads).
    assert!(b < a * 2, "{b} bytes after 10 000 writes vs {a} after 500");
}
