//! A store that holds a value nested deeper than any node now writes (written before writers
//! applied the decoder's limit) still opens and serves everything: its own bytes are read
//! with a deeper limit than bytes from outside (issue 17, item 7).

mod common;

use common::new_store;
use lcloud_core::{Experience, ForkPolicy, Op, Path, VALUE_DEPTH_MAX, Value, validate};
use lcloud_store::Store;

fn nested(depth: usize) -> Value {
    let mut v = Value::Int(1);
    for _ in 0..depth {
        v = Value::List(vec![v]);
    }
    v
}

fn set_int(store: &mut Store, me: &lcloud_store::Identity, path: &str, n: i64) {
    let ops = vec![Op::Set {
        path: Path::parse(path).unwrap(),
        value: Value::Int(n),
    }];
    store.write_local(me, ops).unwrap().expect("fast path");
}

#[test]
fn a_store_holding_a_too_deep_value_opens_and_serves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, me, _genesis) = new_store(dir.path(), ForkPolicy::Concurrent);
    set_int(&mut store, &me, "/before", 1);
    // Refused by the writer's check...
    let deep = nested(VALUE_DEPTH_MAX + 20);
    let too_deep = vec![Op::Set {
        path: Path::parse("/deep").unwrap(),
        value: deep.clone(),
    }];
    assert!(store.write_local(&me, too_deep.clone()).is_err());
    // ...but signed and stored as an older writer did.
    let mut replica = store.load(&mut |_| {}).unwrap();
    let exp = Experience::sign(replica.draft(&me.id(), too_deep), me.key());
    let bytes = exp.to_bytes();
    assert!(
        validate(&bytes, &replica.cloud()).is_err(),
        "no peer accepts it"
    );
    let out = replica.insert(exp).unwrap();
    store.persist(&replica, &[&out]).unwrap();
    store.record_signed(3).unwrap();
    set_int(&mut store, &me, "/after", 2);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load(&mut |_| {}).unwrap();
    assert_eq!(loaded.lattice().len(), 4);
    let doc = store.document(&Path::root()).unwrap().unwrap();
    assert_eq!(doc, loaded.document());
    let Value::Map(m) = doc else { panic!("a map") };
    assert_eq!(m["deep"], deep);
    assert_eq!(m["before"], Value::Int(1));
    assert_eq!(m["after"], Value::Int(2));
    assert_eq!(store.state().unwrap().root(), loaded.root());
    let clock = loaded.lattice().frontier();
    assert_eq!(
        store.state_at_clock(&clock).unwrap().unwrap().root(),
        loaded.root()
    );
}
