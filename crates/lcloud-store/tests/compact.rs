//! Compaction on disk (issue 20): a store compacted at its deepest final checkpoint reopens
//! to the same root, keeps only what the history above the checkpoint asks about, answers
//! time travel from its base on and refuses cuts before it by name, refuses what is behind
//! the checkpoint as too old to merge, and goes on storing and compacting as before.

mod common;

use common::members::{self, grow, keys};
use lcloud_core::{CompactError, Cut, Experience, NodeId, Op, Replica, Value, Verified};
use lcloud_store::{Retain, Store, StoreError};

fn genesis() -> Verified<Experience> {
    members::genesis("compact")
}

/// Imports everything `source` holds into the store in `dir` (what is behind a compaction
/// is refused, by reason); returns the refusals by reason.
fn import(dir: &std::path::Path, source: &Replica) -> std::collections::BTreeMap<String, usize> {
    let mut store = Store::open(dir).unwrap();
    common::import_reporting(&mut store, source).1.rejected
}

#[test]
fn a_compacted_store_reopens_to_the_same_root_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = Replica::new(genesis()).unwrap();
    let mut seed = 7;
    grow(&mut full, 120, &mut seed);
    Store::create(dir.path(), &genesis()).unwrap();
    assert!(import(dir.path(), &full).is_empty());

    let mut store = Store::open(dir.path()).unwrap();
    let loaded = store.load(&mut |_| {}).unwrap();
    assert_eq!(store.compaction_point().unwrap(), None);
    let done = store.compact(&loaded, Retain::Checkpoint).unwrap();
    assert_eq!(done.before, full.lattice().len() as u64);
    assert!(
        done.after < done.before / 2 && done.kept_below < done.after,
        "{done:?}"
    );
    assert!(done.bytes.1 < done.bytes.0, "{done:?}");
    assert_eq!(done.headers, 0);
    drop(store);

    let (store, compacted) = Store::open_loaded(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(compacted.root(), full.root());
    assert_eq!(compacted.refold().root(), full.root());
    assert_eq!(store.state().unwrap().root(), full.root());
    assert_eq!(
        compacted.lattice().compaction_point(),
        Some(&(done.depth, done.earliest.clone()))
    );
    assert_eq!(
        store.compaction_point().unwrap(),
        Some((done.depth, done.earliest.clone()))
    );
    assert_eq!(compacted.lattice().len() as u64, done.after);
    // Reloaded from its base, it describes every chain to its peers as the replica compacted
    // in memory does, and a peer compacted at the same checkpoint finds it not behind.
    let in_memory = full.compacted().unwrap();
    let described = lcloud_core::sync::Summary::of(compacted.lattice());
    assert_eq!(
        described,
        lcloud_core::sync::Summary::of(in_memory.lattice())
    );
    assert_eq!(described.chains.len(), full.lattice().authors().len());
    assert_eq!(
        lcloud_core::sync::behind(in_memory.lattice(), &described),
        None
    );

    // Time travel: every cut that includes the base answers as the full history does; every
    // cut that does not is refused, naming the earliest cut held.
    let (mut answered, mut refused) = (0, 0);
    for i in 0..full.lattice().len() as u32 {
        let clock = full.lattice().clock(i);
        match store.state_at_clock(&clock) {
            Ok(state) => {
                let want = full.state_at(&Cut::Clock(clock.clone())).unwrap().root();
                let got = match state {
                    Some(s) => s.root(),
                    None => compacted.state_at(&Cut::Clock(clock)).unwrap().root(),
                };
                assert_eq!(got, want, "experience #{i}");
                answered += 1;
            }
            Err(StoreError::Compacted { earliest }) => {
                assert_eq!(earliest, done.earliest);
                assert!(!done.earliest.le(&clock));
                refused += 1;
            }
            Err(e) => panic!("experience #{i}: {e}"),
        }
    }
    assert!(answered > 10 && refused > 10, "{answered} {refused}");
    drop(store);

    // It goes on: new writes merge; what lies behind the checkpoint is refused as too old.
    grow(&mut full, 60, &mut seed);
    let rejected = import(dir.path(), &full);
    assert!(
        rejected.keys().all(|k| k == "BehindCheckpoint") && !rejected.is_empty(),
        "{rejected:?}"
    );
    let (mut store, again) = Store::open_loaded(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(again.root(), full.root());
    assert_eq!(store.state().unwrap().root(), full.root());

    // And compacts again, further up, keeping the dropped experiences' headers.
    let second = store.compact(&again, Retain::Headers).unwrap();
    assert!(second.depth > done.depth, "{second:?}");
    drop(store);
    let (store, thrice) = Store::open_loaded(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(thrice.root(), full.root());
    assert_eq!(store.verify_headers(&thrice).unwrap(), second.headers);
    assert!(second.headers > 0);
}

#[test]
fn nothing_is_compacted_without_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = Replica::new(genesis()).unwrap();
    let k = &keys()[0];
    for i in 0..40 {
        full.write(k, vec![common_set(i)]).unwrap();
    }
    Store::create(dir.path(), &genesis()).unwrap();
    import(dir.path(), &full);
    let mut store = Store::open(dir.path()).unwrap();
    let loaded = store.load(&mut |_| {}).unwrap();
    let before = store.len();
    let err = store.compact(&loaded, Retain::Checkpoint).unwrap_err();
    assert!(
        matches!(err, StoreError::Compact(CompactError::NoFinalCheckpoint)),
        "{err}"
    );
    drop(store);
    let (store, reopened) = Store::open_loaded(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(reopened.root(), full.root());
    assert_eq!(
        (store.len(), store.compaction_point().unwrap()),
        (before, None)
    );
}

#[test]
fn a_damaged_kept_header_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = Replica::new(genesis()).unwrap();
    let mut seed = 3;
    grow(&mut full, 80, &mut seed);
    Store::create(dir.path(), &genesis()).unwrap();
    import(dir.path(), &full);
    let mut store = Store::open(dir.path()).unwrap();
    let loaded = store.load(&mut |_| {}).unwrap();
    let done = store.compact(&loaded, Retain::Headers).unwrap();
    assert_eq!(done.headers, done.before - done.after);
    assert_eq!(store.verify_headers(&loaded).unwrap(), done.headers);
    drop(store);

    // Swap two headers' values: each is well sealed, but under another's key.
    use redb::{ReadableTable, TableDefinition};
    const HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("headers");
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(HEADERS).unwrap();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()
                .unwrap()
                .take(2)
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            t.insert(rows[0].0.as_slice(), rows[1].1.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let (store, replica) = Store::open_loaded(dir.path(), &mut |_| {}).unwrap();
    let err = store.verify_headers(&replica).unwrap_err();
    assert!(
        err.to_string().contains("its key does not name it"),
        "{err}"
    );
}

fn common_set(i: i64) -> Op {
    Op::Set {
        path: lcloud_core::Path::parse("/x").unwrap(),
        value: Value::Int(i),
    }
}

#[test]
fn a_shallow_bundle_restores_the_cloud_from_its_checkpoint_and_proves_it() {
    use lcloud_store::shallow::{self, ShallowError};
    let mut full = Replica::new(genesis()).unwrap();
    let mut seed = 11;
    grow(&mut full, 120, &mut seed);
    let bytes = shallow::export(&full).unwrap();
    let restored = shallow::restore(&bytes).unwrap();
    assert_eq!(restored.replica.root(), full.root());
    assert_eq!(Some(restored.depth), full.lattice().fixed_depth());
    assert!(restored.replica.lattice().len() * 2 < full.lattice().len());

    // A store made from it loads to the same root and goes on merging.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_compacted(&dir.path().join("s"), &restored.replica).unwrap();
    drop(store);
    grow(&mut full, 30, &mut seed);
    import(&dir.path().join("s"), &full);
    let (_, loaded) = Store::open_loaded(&dir.path().join("s"), &mut |_| {}).unwrap();
    assert_eq!(loaded.root(), full.root());

    // Damage anywhere is caught by a checksum, the magic, or the proof.
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(matches!(
        shallow::restore(&flipped),
        Err(ShallowError::Damaged(_))
    ));
    assert!(matches!(
        shallow::restore(&bytes[1..]),
        Err(ShallowError::NotShallow)
    ));
    assert!(shallow::restore(&bytes[..bytes.len() - 1]).is_err());
    // A base whose document is not what the members attested (one leaf left out), with
    // its checksum made good: refused as unproven.
    type Base = (
        u64,
        Vec<(NodeId, u64)>,
        Vec<(u64, Vec<(NodeId, u64)>, bool, bool, u8)>,
        Vec<(lcloud_core::Path, lcloud_core::codec::ByteBuf)>,
    );
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut base: Base = lcloud_core::codec::from_canonical(&bytes[24..24 + len]).unwrap();
    assert!(base.3.len() > 1);
    base.3.pop();
    let forged = lcloud_core::codec::to_canonical(&base);
    let mut out = shallow::MAGIC.to_vec();
    out.extend_from_slice(&(forged.len() as u64).to_le_bytes());
    out.extend_from_slice(&forged);
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out.extend_from_slice(&bytes[24 + len + 32..]);
    let err = shallow::restore(&out).unwrap_err();
    assert!(
        matches!(err, ShallowError::Unproven { .. }) && err.to_string().contains("attested root"),
        "{err}"
    );
}

#[test]
fn no_shallow_bundle_without_a_final_checkpoint() {
    let mut full = Replica::new(genesis()).unwrap();
    full.write(&keys()[0], vec![common_set(1)]).unwrap();
    assert_eq!(
        lcloud_store::shallow::export(&full).unwrap_err(),
        CompactError::NoFinalCheckpoint
    );
}
