//! The seed story, played on the real core: two nodes build chains from one genesis, merge in
//! both orders to the same state root, travel back to an earlier vector clock, look at one
//! node's chain alone, and keep a fork as a branch with a proof anyone can check.
//!
//! Run it with `cargo run --example seed_story`.

use ed25519_consensus::SigningKey;
use lcloud_core::{
    Cut, Experience, ForkPolicy, Genesis, Lattice, NodeId, Op, Path, Replica, Value, VectorClock,
};

fn value(json: &str) -> Value {
    Value::from_json(&serde_json::from_str(json).expect("example JSON")).expect("example value")
}

fn path(pointer: &str) -> Path {
    Path::parse(pointer).expect("example path")
}

fn name(id: &NodeId, a: &NodeId) -> &'static str {
    if id == a { "A" } else { "B" }
}

fn show_chain(lattice: &Lattice, who: &NodeId, label: &str) {
    println!("  chain of node {label} (filterByNode):");
    for e in lattice.chain(who) {
        let ops: Vec<&str> = e.ops().iter().map(Op::name).collect();
        println!(
            "    seq {:>2}  id {}  prev {}  ops {:?}",
            e.seq(),
            e.id().short(),
            e.header().prev.map_or("⊥".to_owned(), |p| p.short()),
            ops
        );
    }
}

fn main() {
    // Keys come in as arguments: the core has no randomness. Fixed seeds keep the story
    // reproducible, byte for byte.
    let key_a = SigningKey::from([0xA1; 32]);
    let key_b = SigningKey::from([0xB2; 32]);
    let a = NodeId(key_a.verification_key().to_bytes());
    let b = NodeId(key_b.verification_key().to_bytes());
    println!("λCLOUD seed story\n");
    println!("node A = {}\nnode B = {}\n", a.short(), b.short());

    // experience(null, initialValue, "genesis")
    let genesis = Experience::create_genesis(
        &key_a,
        Genesis {
            name: "seed".into(),
            init: value(r#"{"counter": 0, "log": {}}"#),
            members: None,
            fork_policy: ForkPolicy::Concurrent,
        },
    );
    println!(
        "1. genesis {} names the cloud; initial value {{\"counter\":0,\"log\":{{}}}}",
        genesis.id().short()
    );
    let mut node_a = Replica::new(genesis.clone()).expect("genesis");
    let mut node_b = Replica::new(genesis).expect("genesis");

    println!("\n2. A and B each build a chain, without talking to each other");
    for i in 1..=3 {
        node_a
            .write(
                &key_a,
                vec![
                    Op::Incr {
                        path: path("/counter"),
                        by: 1,
                    },
                    Op::Set {
                        path: path(&format!("/log/a{i}")),
                        value: value(&format!("\"A wrote {i}\"")),
                    },
                ],
            )
            .expect("A writes");
    }
    for i in 1..=2 {
        node_b
            .write(
                &key_b,
                vec![
                    Op::Incr {
                        path: path("/counter"),
                        by: 10,
                    },
                    Op::Set {
                        path: path(&format!("/log/b{i}")),
                        value: value(&format!("\"B wrote {i}\"")),
                    },
                ],
            )
            .expect("B writes");
    }
    println!(
        "  A alone: {}   root {}",
        node_a.document(),
        node_a.root().short()
    );
    println!(
        "  B alone: {}   root {}",
        node_b.document(),
        node_b.root().short()
    );

    println!("\n3. merge is set union, in either order");
    let mut a_then_b = node_a.clone();
    a_then_b.merge(&node_b);
    let mut b_then_a = node_b.clone();
    b_then_a.merge(&node_a);
    println!(
        "  A ⊗ B: {}   root {}",
        a_then_b.document(),
        a_then_b.root().short()
    );
    println!(
        "  B ⊗ A: {}   root {}",
        b_then_a.document(),
        b_then_a.root().short()
    );
    assert_eq!(a_then_b.root(), b_then_a.root());
    println!("  same root: the two nodes hold byte-identical state");
    println!("  vector clock now: {}", a_then_b.lattice().frontier());

    println!("\n4. time travel to an earlier vector clock");
    let mut earlier = VectorClock::default();
    earlier.observe(a, 2);
    earlier.observe(b, 1);
    let then = a_then_b
        .state_at(&Cut::Clock(earlier.clone()))
        .expect("known clock");
    println!("  at {{A:2, B:1}} the state was {}", then.document());
    println!("  (A's genesis counts as A:1, so A:2 is A's first write)");

    println!();
    show_chain(a_then_b.lattice(), &b, "B");

    println!("\n5. a fork is kept as a branch, with a proof");
    let mut elsewhere = a_then_b.clone();
    a_then_b
        .write(
            &key_b,
            vec![Op::Set {
                path: path("/motto"),
                value: value("\"left\""),
            }],
        )
        .expect("B writes on one side");
    elsewhere
        .write(
            &key_b,
            vec![Op::Set {
                path: path("/motto"),
                value: value("\"right\""),
            }],
        )
        .expect("B equivocates on the other");
    a_then_b.merge(&elsewhere);
    let proof = &a_then_b.lattice().forks()[0];
    println!(
        "  node {} signed two different experiences at seq {}: {} and {}",
        name(&proof.author(), &a),
        proof.seq(),
        proof.ids().0.short(),
        proof.ids().1.short()
    );
    println!(
        "  proof check by anyone: {:?}",
        proof.check().map(|_| "valid")
    );
    println!(
        "  both branches stay; concurrent values at /motto: {:?}",
        a_then_b
            .state()
            .doc
            .conflicts(&path("/motto"))
            .iter()
            .map(|(_, v)| v.to_string())
            .collect::<Vec<_>>()
    );
    println!(
        "  the canonical order picks one winner on every node: /motto = {}",
        a_then_b.state().get(&path("/motto")).unwrap_or_default()
    );
    show_chain(a_then_b.lattice(), &b, "B (forked)");
    println!(
        "\nfinal state {}\nroot {}",
        a_then_b.document(),
        a_then_b.root()
    );
}
