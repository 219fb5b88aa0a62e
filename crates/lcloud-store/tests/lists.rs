//! Lists and text through the store: writes of edits by index queued many at a time on the
//! committer (each resolved against every write queued before it), stored, read back from
//! the leaves and from a full load alike; and the same edits written one at a time by the
//! local path.

use lcloud_core::{Edit, Experience, Genesis, Items, Path, Value};
use lcloud_store::{Committer, Identity, Store};

fn splice(index: usize, delete: usize, text: &str) -> Edit {
    Edit::Splice {
        path: Path::parse("/t").unwrap(),
        index,
        delete,
        text: text.into(),
    }
}

#[test]
fn edits_queued_many_at_a_time_apply_in_order_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("g"));
    let store = Store::create(dir.path(), &genesis).unwrap();
    let committer = Committer::start(store, me.clone());
    let writer = committer.writer();
    // A plain string edited the same way says what the text must be.
    let mut want: Vec<char> = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut n = 0;
    for i in 0..400usize {
        let at = (i * 7) % (want.len() + 1);
        let del = if i % 5 == 0 {
            2.min(want.len() - at)
        } else {
            0
        };
        let ins = ["a", "bc", "é", "xyz"][i % 4];
        want.splice(at..at + del, ins.chars());
        let mut edits = vec![splice(at, del, ins)];
        if i % 50 == 0 {
            edits.push(Edit::Insert {
                path: Path::parse("/l").unwrap(),
                index: 0,
                items: Items::List(vec![Value::Int(i as i64)]),
            });
        }
        let tx = tx.clone();
        writer
            .submit_edits(
                edits,
                Box::new(move |r| {
                    let _ = tx.send(r.map(|e| e.seq()));
                }),
            )
            .unwrap();
        n += 1;
    }
    // Refused: an index past the end, answered without stopping the others.
    let past = writer
        .write_edits(vec![splice(10_000, 0, "x")])
        .unwrap_err();
    assert!(past.to_string().contains("index 10000"), "{past}");
    let mut seqs: Vec<u64> = (0..n).map(|_| rx.recv().unwrap().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (2..2 + n as u64).collect::<Vec<_>>());
    let want: String = want.into_iter().collect();
    drop(writer);
    let store = committer.stop();
    assert_eq!(
        store.document(&Path::parse("/t").unwrap()).unwrap(),
        Some(Value::Str(want.clone())),
        "from the leaves"
    );
    let loaded = store.load(&mut |_| {}).unwrap();
    assert_eq!(
        loaded.document().to_json()["t"],
        want.as_str(),
        "from a full load"
    );
    assert_eq!(
        loaded.document().to_json()["l"],
        serde_json::json!([350, 300, 250, 200, 150, 100, 50, 0])
    );
    assert_eq!(loaded.root(), store.load(&mut |_| {}).unwrap().root());
    drop(store);
    // Opened again, the local path goes on from what is stored.
    let mut store = Store::open(dir.path()).unwrap();
    let doc = store.doc_under(&[Path::parse("/t").unwrap()]).unwrap();
    let ops = lcloud_core::resolve(&doc, me.id(), vec![splice(0, 0, ">")]).unwrap();
    store.write_local(&me, ops).unwrap().unwrap();
    let t = store.document(&Path::parse("/t").unwrap()).unwrap();
    assert_eq!(t, Some(Value::Str(format!(">{want}"))));
}
