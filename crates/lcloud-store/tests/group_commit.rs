//! Many concurrent writers share commits, and every acknowledged write is durable and
//! consistent with the persisted fold.

use lcloud_core::{Experience, ForkPolicy, Genesis, Op, Path, Value};
use lcloud_store::{Committer, Identity, Store};

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(
        me.key(),
        Genesis {
            name: "g".into(),
            init: Value::map(),
            members: None,
            fork_policy: ForkPolicy::Concurrent,
        },
    );
    let store = Store::create(dir.path(), &genesis).unwrap();
    let committer = Committer::start(store, me.clone());
    let writers = 32;
    let each = 40;
    let acked: Vec<Vec<(u64, lcloud_core::Id)>> = std::thread::scope(|s| {
        (0..writers)
            .map(|w| {
                let writer = committer.writer();
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let e = writer
                                .write(vec![
                                    Op::Incr {
                                        path: Path::parse(&format!("/w{w}")).unwrap(),
                                        by: 1,
                                    },
                                    Op::Set {
                                        path: Path::parse(&format!("/last/{w}")).unwrap(),
                                        value: Value::Int(i),
                                    },
                                ])
                                .unwrap();
                            (e.seq(), e.id())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let store = committer.stop();
    let replica = store.load(&mut |_| {}).unwrap();
    let total = writers * each;
    assert_eq!(replica.lattice().len(), 1 + total as usize);
    let mut seqs: Vec<u64> = acked.iter().flatten().map(|(s, _)| *s).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (2..2 + total as u64).collect::<Vec<_>>(),
        "one chain, no gaps, no reuse"
    );
    for (_, id) in acked.iter().flatten() {
        assert!(replica.lattice().contains(id));
    }
    let doc = replica.document().to_json();
    for w in 0..writers {
        assert_eq!(doc[format!("w{w}")], each);
        assert_eq!(
            doc["last"][format!("w{w}").trim_start_matches('w')],
            each - 1
        );
    }
    assert_eq!(store.state().unwrap().root(), replica.root());
}
