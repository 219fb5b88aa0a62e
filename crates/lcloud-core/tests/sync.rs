//! The sync protocol, driven without a network: two replicas with divergent histories end
//! with the same history and state root, in one round trip when nothing forked. Both sides
//! run the core's sync `Session`, as the node and the chaos simulation do.

mod common;

use common::*;
use lcloud_core::codec::ByteBuf;
use std::collections::{BTreeSet, VecDeque};

use lcloud_core::sync::{self, Request, Response, Summary};
use lcloud_core::{ForkPolicy, Limits, Replica, Session, validate};

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

/// What one exchange cost.
#[derive(Debug, Default)]
struct Cost {
    /// `Sync` round trips.
    trips: usize,
    /// Messages sent, answers included.
    messages: usize,
    /// Experiences sent to `a` and to `b`.
    to_a: usize,
    to_b: usize,
}

/// One full exchange initiated by `a`, driven through the core's [`Session`] on both sides
/// as the node drives it (the answer, then pushes of the rest within the window, a
/// follow-up round where chains disagree), every message through its byte encoding, in
/// order and none lost. Returns the round trips.
fn exchange(a: &mut Replica, b: &mut Replica, max_bytes: usize) -> usize {
    exchange_cost(a, b, max_bytes).trips
}

fn exchange_cost(a: &mut Replica, b: &mut Replica, max_bytes: usize) -> Cost {
    let limits = Limits {
        first_bytes: max_bytes,
        max_bytes,
        window: 4,
    };
    let mut cost = Cost::default();
    let mut sessions = [Session::new(limits), Session::new(limits)];
    let replicas: [&mut Replica; 2] = [a, b];
    // (to, is a request, bytes), delivered in order.
    let mut wire: VecDeque<(usize, bool, Vec<u8>)> = VecDeque::new();
    let poll = |n: usize,
                sessions: &mut [Session; 2],
                replicas: &[&mut Replica; 2],
                wire: &mut VecDeque<(usize, bool, Vec<u8>)>| {
        while let Some(req) = sessions[n].poll_request(replicas[n].lattice()) {
            wire.push_back((1 - n, true, req.to_bytes()));
        }
    };
    sessions[0].start();
    poll(0, &mut sessions, &replicas, &mut wire);
    while let Some((n, request, bytes)) = wire.pop_front() {
        cost.messages += 1;
        let received = |n: usize, exps: &[ByteBuf], cost: &mut Cost| {
            if n == 0 {
                cost.to_a += exps.len();
            } else {
                cost.to_b += exps.len();
            }
        };
        if request {
            match Request::from_bytes(&bytes).unwrap() {
                Request::Sync { summary } => {
                    let answer = sessions[n].handle_sync(replicas[n].lattice(), &summary);
                    wire.push_back((1 - n, false, answer.to_bytes()));
                    poll(n, &mut sessions, &replicas, &mut wire);
                }
                Request::Push { exps, .. } => {
                    received(n, &exps, &mut cost);
                    receive(replicas[n], &exps);
                    let ack = Response::Pushed {
                        new: 0,
                        rejected: 0,
                    };
                    wire.push_back((1 - n, false, ack.to_bytes()));
                }
            }
            continue;
        }
        match Response::from_bytes(&bytes).unwrap() {
            Response::Sync {
                summary,
                exps,
                more,
            } => {
                cost.trips += 1;
                received(n, &exps, &mut cost);
                receive(replicas[n], &exps);
                sessions[n].handle_sync_answer(replicas[n].lattice(), &summary, more);
            }
            Response::Pushed { .. } => sessions[n].handle_pushed(),
            Response::Refused { reason } => panic!("refused: {reason}"),
        }
        poll(n, &mut sessions, &replicas, &mut wire);
    }
    assert!(sessions.iter().all(Session::idle), "the exchange ended");
    cost
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
    // ~1 KB per message: one round trip and many pushes, and every experience arrives
    // after what it depends on (nothing is parked on either side).
    let cost = exchange_cost(&mut a, &mut b, 1024);
    assert_eq!(cost.trips, 1, "{cost:?}");
    assert!(cost.messages > 20, "{cost:?}");
    assert_eq!(a.root(), b.root());
    assert_eq!(
        a.lattice().parked_len(),
        0,
        "nothing waited for a dependency"
    );
    assert_eq!(b.lattice().parked_len(), 0);
}

/// Two replicas that share `common` experiences of author 1, then each add `na` / `nb` of
/// their own at the same seqs: an unseen fork, `depth` = max(na, nb) deep.
fn forked_pair(common: usize, na: usize, nb: usize) -> (Replica, Replica) {
    let g = genesis_with(None, ForkPolicy::Concurrent);
    let mut a = Replica::new(g).unwrap();
    let k = key(1);
    for i in 0..common {
        a.write(&k, vec![set("/base", &i.to_string())]).unwrap();
    }
    let mut b = a.clone();
    for i in 0..na {
        a.write(&k, vec![set("/x", &i.to_string())]).unwrap();
    }
    for i in 0..nb {
        b.write(&k, vec![set("/y", &i.to_string())]).unwrap();
    }
    (a, b)
}

#[test]
fn forked_chains_converge_and_both_sides_hold_the_proof() {
    let (mut a, mut b) = forked_pair(1, 1, 1);
    exchange(&mut a, &mut b, sync::BATCH_BYTES);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.lattice().forks().len(), 1);
    assert_eq!(a.lattice().forks(), b.lattice().forks());
}

#[test]
fn a_fork_deep_in_a_long_chain_costs_its_depth_not_the_chain() {
    // 2 000 shared experiences, then an unseen fork: 7 on one side, 5 on the other. Hash
    // reconciliation sends each side what it lacks plus at most the fork's depth again (the
    // branch ids are 1, 2, 4, … apart), never the 2 000 they share; two round trips.
    for (na, nb) in [(7, 5), (5, 7), (1, 40), (40, 1)] {
        for a_starts in [true, false] {
            let (mut a, mut b) = forked_pair(2000, na, nb);
            let cost = if a_starts {
                exchange_cost(&mut a, &mut b, sync::BATCH_BYTES)
            } else {
                exchange_cost(&mut b, &mut a, sync::BATCH_BYTES)
            };
            assert_eq!(a.root(), b.root(), "{na}/{nb}");
            assert_eq!(a.lattice().len(), 2001 + na + nb);
            assert_eq!(a.lattice().forks(), b.lattice().forks());
            assert!(cost.trips <= 2, "{na}/{nb}: {cost:?}");
            let depth = na.max(nb);
            assert!(
                cost.to_a + cost.to_b <= na + nb + 2 * depth,
                "{na}/{nb}, a starts {a_starts}: {cost:?}"
            );
            // Nothing more to say afterwards.
            assert!(sync::missing(a.lattice(), &Summary::of(b.lattice())).is_empty());
            assert!(sync::missing(b.lattice(), &Summary::of(a.lattice())).is_empty());
            assert!(sync::diverged(a.lattice(), &Summary::of(b.lattice())).is_empty());
        }
    }
}

#[test]
fn a_known_fork_costs_exactly_what_each_side_lacks() {
    // b already holds both branches; a holds one and a later extension of it.
    let (mut a, mut b) = forked_pair(500, 3, 3);
    let mut c = a.clone();
    exchange(&mut c, &mut b, sync::BATCH_BYTES);
    // Each of the three seqs holds two experiences: three proofs.
    assert_eq!(b.lattice().forks().len(), 3);
    a.write(&key(1), vec![set("/x", "99")]).unwrap();
    for a_starts in [true, false] {
        let (mut a, mut b) = (a.clone(), b.clone());
        let cost = if a_starts {
            exchange_cost(&mut a, &mut b, sync::BATCH_BYTES)
        } else {
            exchange_cost(&mut b, &mut a, sync::BATCH_BYTES)
        };
        assert_eq!(a.root(), b.root());
        assert_eq!(a.root(), b.root());
        // Exactly what each lacks: b's other branch (3) to a, a's new experience (1) to b.
        let (to_a, to_b) = if a_starts {
            (cost.to_a, cost.to_b)
        } else {
            (cost.to_b, cost.to_a)
        };
        assert_eq!((to_a, to_b), (3, 1), "a starts {a_starts}: {cost:?}");
        // One round trip when the side that knows of the fork starts (its summary describes
        // the branches); two when the other does and is ahead (b cannot tell which branch
        // a's tip extends, so it describes its branches and a asks again describing its own).
        assert_eq!(cost.trips, if a_starts { 2 } else { 1 }, "{cost:?}");
    }
}

#[test]
fn random_histories_with_forks_converge_whatever_the_order() {
    // Three replicas, two authors that equivocate at random; exchanges in random order until
    // every pair is quiet: one root and the same fork proofs everywhere.
    for seed in 0..30u64 {
        let mut rng = Rng(seed);
        let g = genesis_with(None, ForkPolicy::Concurrent);
        let mut base = Replica::new(g).unwrap();
        history(&mut base, &mut rng, &[1, 2, 3], 20);
        let mut rs = vec![base.clone(), base.clone(), base];
        for r in rs.iter_mut() {
            // Each replica writes as 1 and 2 on its own: every replica forks them.
            let n = 1 + rng.below(15) as usize;
            history(r, &mut rng, &[1, 2, 3], n);
        }
        for _ in 0..12 {
            let (i, j) = (rng.below(3) as usize, rng.below(3) as usize);
            if i == j {
                continue;
            }
            let (x, y) = pair(&mut rs, i, j);
            exchange(x, y, 1 + rng.below(4096) as usize);
        }
        for (i, j) in [(0, 1), (1, 2), (0, 2)] {
            let (x, y) = pair(&mut rs, i, j);
            exchange(x, y, sync::BATCH_BYTES);
        }
        assert_eq!(rs[0].root(), rs[1].root(), "seed {seed}");
        assert_eq!(rs[1].root(), rs[2].root(), "seed {seed}");
        // Which pairs are proven depends on arrival order where three experiences share a
        // seq; which seqs forked and which experiences are involved does not.
        let forks = |r: &Replica| {
            let mut f: BTreeSet<_> = BTreeSet::new();
            for p in r.lattice().forks() {
                f.insert((p.author(), p.seq(), p.ids().0));
                f.insert((p.author(), p.seq(), p.ids().1));
            }
            f
        };
        assert_eq!(forks(&rs[0]), forks(&rs[2]), "seed {seed}");
        assert!(!rs[0].lattice().forks().is_empty(), "seed {seed}: forked");
    }
}

fn pair(rs: &mut [Replica], i: usize, j: usize) -> (&mut Replica, &mut Replica) {
    if i < j {
        let (l, r) = rs.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = rs.split_at_mut(i);
        (&mut r[0], &mut l[j])
    }
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
                branches: Vec::new(),
            })
            .collect(),
    };
    let bytes = Request::Sync { summary: many }.to_bytes();
    assert!(Request::from_bytes(&bytes).is_err());
    // So is a chain claiming too many branches, or a branch too many ids.
    let branch = |ids: usize| sync::Branch {
        seq: 1,
        ids: vec![genesis().id(); ids],
    };
    for (branches, ids) in [(sync::BRANCHES_MAX + 1, 1), (1, sync::BRANCH_IDS_MAX + 1)] {
        let summary = Summary {
            cloud: genesis().id(),
            chains: vec![sync::ChainTip {
                author: node(1),
                seq: 1,
                tip: genesis().id(),
                forked: true,
                branches: (0..branches).map(|_| branch(ids)).collect(),
            }],
        };
        let bytes = Request::Sync { summary }.to_bytes();
        let err = Request::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}

/// The messages that carry experiences are encoded by hand (one buffer, no copies); their bytes
/// are exactly serde's canonical DAG-CBOR, for empty, small and large batches and lengths
/// on every side of CBOR's length-encoding boundaries; they decode back, and a non-canonical
/// variant (an overlong length) is refused.
#[test]
fn hand_encoded_messages_are_serdes_canonical_bytes() {
    let summary = Summary {
        cloud: genesis().id(),
        chains: vec![sync::ChainTip {
            author: node(2),
            seq: 7,
            tip: genesis().id(),
            forked: false,
            branches: Vec::new(),
        }],
    };
    let sizes = [0usize, 1, 23, 24, 255, 256, 65_535, 65_536, 70_000];
    for count in [0usize, 1, 23, 24, 300] {
        let exps: Vec<ByteBuf> = (0..count)
            .map(|i| ByteBuf(vec![i as u8; sizes[i % sizes.len()] % 2000]))
            .collect();
        let mut big = exps.clone();
        big.push(ByteBuf(vec![7; sizes[(count + 3) % sizes.len()]]));
        for exps in [exps, big] {
            let push = Request::Push {
                cloud: genesis().id(),
                exps: exps.clone(),
            };
            assert_eq!(push.to_bytes(), lcloud_core::codec::to_canonical(&push));
            assert_eq!(Request::from_bytes(&push.to_bytes()).unwrap(), push);
            for more in [false, true] {
                let sync = Response::Sync {
                    summary: summary.clone(),
                    exps: exps.clone(),
                    more,
                };
                assert_eq!(sync.to_bytes(), lcloud_core::codec::to_canonical(&sync));
                assert_eq!(Response::from_bytes(&sync.to_bytes()).unwrap(), sync);
            }
        }
    }
    // The array of experiences with its length in two bytes instead of one: refused.
    let push = Request::Push {
        cloud: genesis().id(),
        exps: vec![ByteBuf(vec![1, 2, 3])],
    };
    let bytes = push.to_bytes();
    let at = bytes.iter().position(|b| *b == 0x81).unwrap();
    let mut long = bytes[..at].to_vec();
    long.extend_from_slice(&[0x98, 0x01]);
    long.extend_from_slice(&bytes[at + 1..]);
    assert!(Request::from_bytes(&long).is_err());
}

#[test]
fn a_session_keeps_its_window_doubles_its_pushes_and_ends_on_failure() {
    let g = genesis();
    let mut rng = Rng(11);
    let mut a = Replica::new(g.clone()).unwrap();
    let b = Replica::new(g).unwrap();
    history(&mut a, &mut rng, &[1, 2], 400);
    let limits = Limits {
        first_bytes: 1024,
        max_bytes: 8 * 1024,
        window: 3,
    };
    // b asks; a answers with the first KiB and pushes the rest.
    let mut asks = Session::new(limits);
    asks.start();
    asks.start(); // one exchange at a time
    let Some(Request::Sync { summary }) = asks.poll_request(b.lattice()) else {
        panic!("a sync first")
    };
    assert!(
        asks.poll_request(b.lattice()).is_none(),
        "one sync in flight"
    );
    asks.start();
    assert!(asks.poll_request(b.lattice()).is_none(), "still in flight");
    let mut answers = Session::new(limits);
    let Response::Sync { exps, more, .. } = answers.handle_sync(a.lattice(), &summary) else {
        panic!("a sync answer")
    };
    let size = |exps: &[ByteBuf]| exps.iter().map(|b| b.0.len()).sum::<usize>();
    assert!(more && size(&exps) <= 1024, "{}", size(&exps));
    let queued = answers.lag();
    assert_eq!(queued + exps.len(), a.lattice().len() - 1);
    // Three pushes, then nothing until one is answered; each at most twice the one before.
    let mut sizes = Vec::new();
    while let Some(req) = answers.poll_request(a.lattice()) {
        let Request::Push { exps, .. } = req else {
            panic!("pushes only")
        };
        sizes.push(size(&exps));
    }
    assert_eq!(sizes.len(), 3, "the window");
    assert!(
        sizes[0] <= 1024 && sizes[1] <= 2048 && sizes[2] <= 4096,
        "{sizes:?}"
    );
    assert!(sizes[1] > 1024 && sizes[2] > 2048, "{sizes:?}");
    answers.handle_pushed();
    let Some(Request::Push { exps, .. }) = answers.poll_request(a.lattice()) else {
        panic!("a push once one was answered")
    };
    assert!(size(&exps) > 4096 && size(&exps) <= 8192);
    assert!(answers.poll_request(a.lattice()).is_none());
    assert!(!answers.idle());
    // A lost request ends the exchange: nothing more is sent until the next one.
    answers.handle_failure();
    assert!(answers.idle() && answers.lag() == 0);
    assert!(answers.poll_request(a.lattice()).is_none());
    asks.handle_failure();
    asks.start();
    assert!(matches!(
        asks.poll_request(b.lattice()),
        Some(Request::Sync { .. })
    ));
}
