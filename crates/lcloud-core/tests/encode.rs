//! The direct canonical encoders (values, ops, headers, experiences) give exactly the bytes of
//! serde's DAG-CBOR encoder, for every kind of value and op. Those bytes are hashed and
//! signed: a single differing byte would change an id or break a signature.

use ed25519_consensus::SigningKey;
use lcloud_core::codec::{from_canonical, to_canonical};
use lcloud_core::experience::ops_digest;
use lcloud_core::{Draft, Experience, ForkPolicy, Genesis, Header, Id, NodeId, Op, Path, Value};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,3}",
        "[a-zA-Z0-9_\\-]{0,30}",
        "\\PC{0,12}",
        // Around the one-byte length boundary (23/24 bytes).
        "[a-z]{22,26}",
        // Around 255/256 bytes.
        "[a-z]{254,258}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(23),
            Just(24),
            Just(-24),
            Just(-25),
            Just(255),
            Just(256),
            Just(-256),
            Just(-257),
            Just(65_535),
            Just(65_536),
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) + 1),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
        .prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        text().prop_map(Value::Str),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::btree_map(text(), inner, 0..6).prop_map(Value::Map),
        ]
    })
}

fn path() -> impl Strategy<Value = Path> {
    proptest::collection::vec(text(), 0..4).prop_map(Path::from)
}

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), value()).prop_map(|(path, value)| Op::Set { path, value }),
        path().prop_map(|path| Op::Del { path }),
        (path(), any::<i64>()).prop_map(|(path, by)| Op::Incr { path, by }),
        (path(), value()).prop_map(|(path, value)| Op::Add { path, value }),
        (path(), value()).prop_map(|(path, value)| Op::Remove { path, value }),
        (bytes32(), value()).prop_map(|(m, args)| Op::Call {
            morphism: Id(m),
            args
        }),
        bytes32().prop_map(|n| Op::AddMember { node: NodeId(n) }),
        bytes32().prop_map(|n| Op::RemoveMember { node: NodeId(n) }),
        bytes32().prop_map(|n| Op::AddAdmin { node: NodeId(n) }),
        bytes32().prop_map(|n| Op::RemoveAdmin { node: NodeId(n) }),
        bytes32().prop_map(|n| Op::RotateKey { to: NodeId(n) }),
        (
            text(),
            value(),
            proptest::option::of(proptest::collection::vec(bytes32(), 0..3)),
            any::<bool>()
        )
            .prop_map(|(name, init, members, q)| Op::Genesis(Genesis {
                name,
                init,
                members: members.map(|m| m.into_iter().map(NodeId).collect()),
                fork_policy: if q {
                    ForkPolicy::Quarantine
                } else {
                    ForkPolicy::Concurrent
                },
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn values_encode_as_serde_does(v in value()) {
        let bytes = v.to_cbor();
        prop_assert_eq!(&bytes, &to_canonical(&v));
        prop_assert_eq!(from_canonical::<Value>(&bytes).unwrap(), v);
    }

    #[test]
    fn ops_encode_as_serde_does(ops in proptest::collection::vec(op(), 0..5)) {
        for op in &ops {
            let mut one = Vec::new();
            op.encode_into(&mut one);
            prop_assert_eq!(&one, &to_canonical(op));
        }
        let mut all = Vec::new();
        Op::encode_all_into(&ops, &mut all);
        prop_assert_eq!(&all, &to_canonical(&ops));
        prop_assert_eq!(ops_digest(&ops), Id::hash(&to_canonical(&ops)));
    }

    #[test]
    fn headers_encode_as_serde_does(
        cloud in bytes32(),
        author in bytes32(),
        seq in prop_oneof![1u64..30, any::<u64>()],
        prev in proptest::option::of(bytes32()),
        deps in proptest::collection::btree_set(bytes32(), 0..4),
        ops in bytes32(),
        root in proptest::option::of(bytes32()),
        fuel in proptest::option::of(any::<u64>()),
    ) {
        let header = Header {
            version: 1,
            cloud: Id(cloud),
            author: NodeId(author),
            seq,
            prev: prev.map(Id),
            deps: deps.into_iter().map(Id).collect(),
            ops: Id(ops),
            root: root.map(Id),
            fuel,
        };
        prop_assert_eq!(header.to_bytes(), to_canonical(&header));
    }

    /// A signed experience of random ops encodes as serde would, decodes back to itself, and
    /// keeps its id.
    #[test]
    fn experiences_encode_as_serde_does(
        ops in proptest::collection::vec(
            op().prop_filter("lawful in an experience", |o| {
                !matches!(o, Op::Genesis(_)) && o.path().is_none_or(|p| p.check().is_ok())
            }),
            1..4,
        ),
        seq in 2u64..1000,
        fuel in proptest::option::of(any::<u64>()),
    ) {
        let key = SigningKey::from([3; 32]);
        let draft = Draft {
            cloud: Id([1; 32]),
            seq,
            prev: Some(Id([2; 32])),
            deps: vec![Id([4; 32])],
            ops,
            root: None,
            fuel,
        };
        let exp = Experience::sign(draft, &key);
        let bytes = exp.to_bytes();
        prop_assert_eq!(&bytes, &to_canonical(&(exp.header(), exp.sig(), exp.ops())));
        let back = Experience::decode(&bytes).unwrap();
        prop_assert_eq!(back.id(), exp.id());
        prop_assert_eq!(back.to_bytes(), bytes);
    }
}
