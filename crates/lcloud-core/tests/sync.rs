//! The sync protocol, driven without a network: two replicas with divergent histories end
//! with the same history and state root, in one round trip when nothing forked.

mod common;

use common::*;
use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{self, Request, Response, Summary};
use lcloud_core::{ForkPolicy, Replica, validate};

/// Inserts experiences received as bytes (validating each); returns how many were new.
fn receive(r: &mut Replica, exps: &[ByteBuf]) -> usize {
    let cloud = r.cloud();
    let mut new = 0;
    for b in exps {
        let exp = validate(&b.0, &cloud).expect("a peer sends valid experiences here");
        let out = r.insert(exp).unwrap();
        new += usize::from(!out.duplicate);
    }
    new
}

/// One full exchange initiated by `a`, every message through its byte encoding. Returns the
/// number of `Sync` round trips.
fn exchange(a: &mut Replica, b: &mut Replica, max_bytes: usize) -> usize {
    let mut trips = 0;
    loop {
        let req = Request::Sync {
            summary: Summary::of(a.lattice()),
        };
        let req = Request::from_bytes(&req.to_bytes()).unwrap();
        let Request::Sync { summary } = req else {
            unreachable!()
        };
        let resp = sync::answer(b.lattice(), &summary, max_bytes);
        let resp = Response::from_bytes(&resp.to_bytes()).unwrap();
        trips += 1;
        let Response::Sync {
            summary: theirs,
            exps,
            more,
        } = resp
        else {
            panic!("expected a sync answer")
        };
        receive(a, &exps);
        // Push what b lacks, batch by batch.
        let mut lacking = sync::missing(a.lattice(), &theirs);
        while !lacking.is_empty() {
            let (batch, _) = sync::batch(a.lattice(), &lacking, max_bytes);
            let n = batch.len();
            let push = Request::Push {
                cloud: a.cloud(),
                exps: batch,
            };
            let Request::Push { exps, .. } = Request::from_bytes(&push.to_bytes()).unwrap() else {
                unreachable!()
            };
            receive(b, &exps);
            lacking.drain(..n);
        }
        if !more {
            return trips;
        }
    }
}

fn history(r: &mut Replica, rng: &mut Rng, authors: &[u8], writes: usize) {
    for _ in 0..writes {
        let a = authors[rng.below(authors.len() as u64) as usize];
        let k = rng.below(20);
        r.write(
            &key(a),
            vec![set(&format!("/k{k}"), &rng.below(1000).to_string())],
        )
        .unwrap();
    }
}

#[test]
fn divergent_replicas_converge_in_one_round_trip() {
    for seed in 0..20u64 {
        let g = genesis();
        let mut rng = Rng(seed);
        let mut a = Replica::new(g.clone()).unwrap();
        history(&mut a, &mut rng, &[1, 2], 30);
        let mut b = a.clone();
        let (na, nb) = (1 + rng.below(40) as usize, 1 + rng.below(40) as usize);
        history(&mut a, &mut rng, &[1, 2], na);
        history(&mut b, &mut rng, &[3, 4], nb);
        assert_ne!(a.root(), b.root());
        let trips = exchange(&mut a, &mut b, sync::BATCH_BYTES);
        assert_eq!(trips, 1, "seed {seed}: one round trip");
        assert_eq!(a.root(), b.root(), "seed {seed}");
        assert_eq!(a.lattice().len(), b.lattice().len());
        // Nothing more to say afterwards.
        assert!(sync::missing(a.lattice(), &Summary::of(b.lattice())).is_empty());
        assert!(sync::missing(b.lattice(), &Summary::of(a.lattice())).is_empty());
    }
}

#[test]
fn small_batches_page_through_everything_dependencies_first() {
    let g = genesis();
    let mut rng = Rng(7);
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    history(&mut a, &mut rng, &[1, 2, 3], 200);
    history(&mut b, &mut rng, &[4], 50);
    // ~1 KB per message: many round trips, and every experience arrives after what it
    // depends on (nothing is parked on either side).
    let trips = exchange(&mut a, &mut b, 1024);
    assert!(trips > 10, "{trips} round trips");
    assert_eq!(a.root(), b.root());
    assert_eq!(
        a.lattice().parked_len(),
        0,
        "nothing waited for a dependency"
    );
    assert_eq!(b.lattice().parked_len(), 0);
}

#[test]
fn forked_chains_are_sent_whole_and_both_sides_hold_the_proof() {
    let g = genesis_with(None, ForkPolicy::Concurrent);
    let mut a = Replica::new(g.clone()).unwrap();
    let k = key(1);
    a.write(&k, vec![set("/base", "0")]).unwrap();
    let mut b = a.clone();
    a.write(&k, vec![set("/x", "1")]).unwrap();
    b.write(&k, vec![set("/y", "1")]).unwrap();
    exchange(&mut a, &mut b, sync::BATCH_BYTES);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.lattice().forks().len(), 1);
    assert_eq!(a.lattice().forks(), b.lattice().forks());
}

#[test]
fn oversized_or_malformed_messages_are_refused_before_use() {
    assert!(Request::from_bytes(&[0xff; 64]).is_err());
    assert!(Response::from_bytes(b"").is_err());
    let huge = vec![0u8; sync::MESSAGE_BYTES_MAX + 1];
    assert!(Request::from_bytes(&huge).is_err());
    // A summary claiming too many chains is refused.
    let many = Summary {
        cloud: genesis().id(),
        chains: (0..sync::SUMMARY_CHAINS_MAX as u64 + 1)
            .map(|i| sync::ChainTip {
                author: node(1),
                seq: i,
                tip: genesis().id(),
                forked: false,
            })
            .collect(),
    };
    let bytes = Request::Sync { summary: many }.to_bytes();
    assert!(Request::from_bytes(&bytes).is_err());
}
