//! A store file with a flipped bit or cut short anywhere is either served exactly as it was
//! or refused with an error: never served differently, and never a panic — opening, reading
//! and closing alike (closing a redb database writes its allocator state, reading the system
//! tables a flipped bit may have damaged).

use std::path::Path as FsPath;

use lcloud_core::{Experience, Genesis, Id, Op, Path, Value, VectorClock};
use lcloud_store::{Committer, Identity, Store};

/// What a store serves: its history's root and length, its persisted state's root, the
/// current document as JSON, and the state's root at each of `clocks` (time travel from the
/// index and checkpoints). The store is closed (dropped) before returning.
#[allow(clippy::type_complexity)]
fn read(dir: &FsPath, clocks: &[VectorClock]) -> Result<(Id, usize, Id, String, Vec<Id>), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let replica = store.load(&mut |_| {}).map_err(|e| e.to_string())?;
    let state = store.state().map_err(|e| e.to_string())?;
    let doc = store
        .document(&Path::root())
        .map_err(|e| e.to_string())?
        .map(|v| v.to_json().to_string())
        .unwrap_or_default();
    let mut at = Vec::new();
    for c in clocks {
        let s = store
            .state_at_clock(c)
            .map_err(|e| e.to_string())?
            .ok_or("time travel needs a full load")?;
        at.push(s.root());
    }
    Ok((
        replica.root(),
        replica.lattice().len(),
        state.root(),
        doc,
        at,
    ))
}

#[test]
fn a_damaged_store_file_is_served_unchanged_or_refused_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let me = Identity::load_or_create(&node).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("damage"));
    let store = Store::create(&node, &genesis).unwrap();
    // Values long enough that checkpoints name the op that wrote them instead of copying them.
    let value = |w: usize, i: usize, j: usize| {
        Value::Str(if j.is_multiple_of(3) {
            format!("{w}-{i}-{j}-{}", "v".repeat(50))
        } else {
            format!("{w}-{i}-{j}")
        })
    };
    let write_locally = |store: Store, rounds: std::ops::Range<usize>| -> Store {
        let committer = Committer::start(store, Identity::load_or_create(&node).unwrap());
        std::thread::scope(|s| {
            for w in 0..8 {
                let writer = committer.writer();
                let rounds = rounds.clone();
                s.spawn(move || {
                    for i in rounds {
                        let ops = (0..1 + (i % 7) * 10)
                            .map(|j| Op::Set {
                                path: Path::parse(&format!("/w{w}/{}", (i + j) % 40)).unwrap(),
                                value: value(w, i, j),
                            })
                            .collect();
                        writer.write(ops).unwrap();
                    }
                });
            }
        });
        committer.stop()
    };
    let mut store = write_locally(store, 0..30);
    // A second author, whose chain depends on everything so far, imported in the middle: time
    // travel then crosses two chains.
    {
        let mut local = store.load(&mut |_| {}).unwrap();
        let mut remote = lcloud_core::Replica::new(genesis.clone()).unwrap();
        remote.merge(&local);
        let other = ed25519_consensus::SigningKey::from([7; 32]);
        for i in 0..40 {
            let ops = (0..1 + i % 5)
                .map(|j| Op::Set {
                    path: Path::parse(&format!("/other/{}", (i + j) % 12)).unwrap(),
                    value: value(9, i, j),
                })
                .collect();
            remote.write(&other, ops).unwrap();
        }
        let records: Vec<Vec<u8>> = remote.lattice().iter().map(|e| e.to_bytes()).collect();
        let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        store.import(&mut local, &refs, &mut |_| {}).unwrap();
    }
    drop(write_locally(store, 30..60));
    let clocks: Vec<VectorClock> = {
        let store = Store::open(&node).unwrap();
        let replica = store.load(&mut |_| {}).unwrap();
        let n = replica.lattice().len() as u32;
        [n / 4, n / 2, n - 2]
            .iter()
            .map(|&i| replica.lattice().clock(i))
            .collect()
    };
    let original = read(&node, &clocks).expect("the undamaged store reads");
    let bytes = std::fs::read(node.join("store.redb")).unwrap();
    let copy = dir.path().join("copy");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut served, mut refused) = (0, 0);
    // 300 places by default (under a minute in a debug build); `LCLOUD_DAMAGE_ROUNDS=20000` for more.
    let rounds: u32 = std::env::var("LCLOUD_DAMAGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for round in 0..rounds {
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(&node).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        let mut damaged = bytes.clone();
        let at = (next() % bytes.len() as u64) as usize;
        let what = if round % 4 == 3 {
            damaged.truncate(at);
            format!("cut at byte {at}")
        } else {
            damaged[at] ^= 1 << (next() % 8);
            format!("a bit flipped at byte {at}")
        };
        std::fs::write(copy.join("store.redb"), &damaged).unwrap();
        let got = std::panic::catch_unwind(|| read(&copy, &clocks))
            .unwrap_or_else(|_| panic!("{what}: a panic instead of an error"));
        match got {
            Ok(got) => {
                assert_eq!(got, original, "{what}: served as a different history");
                served += 1;
            }
            Err(_) => refused += 1,
        }
    }
    println!("{served} damaged copies served unchanged, {refused} refused");
    assert!(refused > 0, "some damage must be detected");
}
