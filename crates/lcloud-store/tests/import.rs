//! Imports larger than one commit chunk, in any order, end in the same durable state.

use ed25519_consensus::SigningKey;
use lcloud_core::{Experience, Genesis, Op, Path, Replica};
use lcloud_store::Store;

#[test]
fn a_reversed_import_spanning_many_chunks_parks_then_admits_everything() {
    let key = SigningKey::from([3; 32]);
    let genesis = Experience::create_genesis(&key, Genesis::open("t"));
    let mut source = Replica::new(genesis.clone()).unwrap();
    let n = 20_000;
    let mut records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            source
                .write(
                    &key,
                    vec![Op::Incr {
                        path: Path::parse(&format!("/c/{}", i % 7)).unwrap(),
                        by: 1,
                    }],
                )
                .unwrap()
                .to_bytes()
        })
        .collect();
    records.reverse(); // every experience arrives before what it depends on
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path(), &genesis).unwrap();
    let mut replica = store.load(&mut |_| {}).unwrap();
    let report = store.import(&mut replica, &refs, &mut |_| {}).unwrap();
    assert_eq!(
        (report.new, report.parked, report.rejected_total()),
        (n, 0, 0)
    );
    assert_eq!(replica.root(), source.root());
    drop(store);
    {
        // Every parked record was removed when its experience was admitted.
        use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let parked = txn
            .open_table(TableDefinition::<&[u8; 32], &[u8]>::new("parked"))
            .unwrap();
        assert_eq!(parked.len().unwrap(), 0);
    }
    let store = Store::open(dir.path()).unwrap();
    let reloaded = store.load(&mut |_| {}).unwrap();
    assert_eq!(reloaded.root(), source.root());
    assert_eq!(reloaded.lattice().parked_len(), 0);
    assert_eq!(store.state().unwrap().root(), source.root());
}
