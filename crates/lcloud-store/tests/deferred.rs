//! A long-lived process that holds the whole replica (the node) lets the store write the
//! document leaves every few thousand ops instead of at every commit
//! (`Store::defer_leaves`). Whatever happens — a crash between flushes, a clean stop, others'
//! experiences concurrent with its own — the persisted fold must stay the fold of the history.

mod common;

use common::{new_store, ops};
use ed25519_consensus::SigningKey;
use lcloud_core::{Doc, Experience, ForkPolicy, Replica, Verified, validate};
use lcloud_store::Store;

/// The node's side: its replica, the document as last handed to the store, the store.
struct Node {
    store: Store,
    replica: Replica,
    persisted: Doc,
}

impl Node {
    fn open(dir: &std::path::Path) -> Node {
        // As a node opens its store: leaves a crash left behind are written from the replica.
        let (mut store, replica) = Store::open_loaded(dir, &mut |_| {}).unwrap();
        store.defer_leaves(true).unwrap();
        let persisted = replica.state().doc;
        Node {
            store,
            replica,
            persisted,
        }
    }

    /// Inserts `exps` and persists what they changed, as the node does for a push.
    fn take(&mut self, exps: Vec<Verified<Experience>>) {
        let outs: Vec<_> = exps
            .into_iter()
            .map(|e| self.replica.insert(e).unwrap())
            .collect();
        let refs: Vec<_> = outs.iter().collect();
        self.store
            .persist_bytes(&self.replica, &refs, &[], &|_| None, Some(&self.persisted))
            .unwrap();
        self.persisted = self.replica.state().doc;
    }
}

/// A batch of 150–450 seeded ops: experiences large enough to cross the flush interval often.
fn many_ops(seed: &mut u64) -> Vec<lcloud_core::Op> {
    let mut out = Vec::new();
    while out.len() < 150 + (*seed % 300) as usize {
        out.extend(ops(seed));
    }
    out
}

#[test]
fn deferred_leaves_stay_the_fold_of_the_history_through_crashes_and_stops() {
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let (store, me, genesis) = new_store(dir.path(), ForkPolicy::Concurrent);
        drop(store);
        let mut node = Node::open(dir.path());
        let others: Vec<SigningKey> = (0..2)
            .map(|i| SigningKey::from([round as u8 * 2 + i + 9; 32]))
            .collect();
        let mut remote = Replica::new(genesis.clone()).unwrap();
        let mut seed = round * 7919 + 1;
        let mut ops_written = 0usize;
        let (mut crashes, mut stops) = (0, 0);
        for step in 0..90 {
            let batch = many_ops(&mut seed);
            ops_written += batch.len();
            if step % 3 == 0 {
                // Others write concurrently, then push to the node.
                let before = remote.lattice().len();
                remote.write(&others[step % 2], batch).unwrap();
                remote
                    .write(&others[(step + 1) % 2], many_ops(&mut seed))
                    .unwrap();
                let fresh: Vec<_> = remote
                    .lattice()
                    .iter()
                    .skip(before)
                    .map(|e| validate(&e.to_bytes(), &genesis.id()).unwrap())
                    .collect();
                node.take(fresh);
            } else {
                let draft = node.replica.draft(&me.id(), batch);
                node.take(vec![Experience::sign(draft, me.key())]);
                if step % 5 == 1 {
                    // The others hear from the node now and then.
                    remote.merge(&node.replica);
                }
            }
            assert_eq!(
                node.store.state().unwrap().root(),
                node.replica.root(),
                "round {round} step {step}: the store's current state (leaves plus what is pending) is not the replica's"
            );
            match seed % 9 {
                0 => {
                    // kill -9 between flushes: nothing written on the way out.
                    let root = node.replica.root();
                    crashes += 1;
                    drop(node);
                    node = Node::open(dir.path());
                    assert_eq!(
                        node.replica.root(),
                        root,
                        "round {round} step {step}: lost history"
                    );
                }
                1 => {
                    // A clean stop writes the leaves.
                    node.store.flush().unwrap();
                    stops += 1;
                    drop(node);
                    node = Node::open(dir.path());
                }
                _ => continue,
            }
            // However it stopped, the leaves it opens with are the fold of the history.
            let persisted = node.store.state().unwrap();
            assert_eq!(
                persisted.root(),
                node.replica.refold().root(),
                "round {round} step {step}: persisted leaves after a restart are not the fold of the history"
            );
        }
        assert!(
            ops_written > 3 * 4096 && crashes > 2 && stops > 2,
            "round {round}: the flush interval crossed several times ({ops_written} ops), and several crashes ({crashes}) and stops ({stops})"
        );
        // Last, a crash, and a process that only reads (as `lcloud state` does): opening the
        // store replays the history to write the leaves.
        let root = node.replica.root();
        drop(node);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state().unwrap().root(), root);
        assert_eq!(store.load(&mut |_| {}).unwrap().root(), root);
    }
}
