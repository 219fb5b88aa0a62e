//! Divergence bisection's cuts (issue 21): every prefix of the canonical order is a causal
//! cut whose clock holds exactly that prefix, so roots compared at those clocks are the roots
//! of the prefixes.

mod common;

use common::{genesis, key, set};
use lcloud_core::bisect::prefix_clock;
use lcloud_core::{Cut, Replica, VectorClock};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn each_canonical_prefix_is_the_cut_of_its_clock(
        steps in prop::collection::vec((0u8..3, any::<bool>()), 1..60),
    ) {
        // Three writers, each syncing with the others now and then: concurrent branches.
        let mut rs: Vec<Replica> = (0..3).map(|_| Replica::new(genesis()).unwrap()).collect();
        for (n, (by, sync)) in steps.iter().enumerate() {
            let r = &mut rs[*by as usize];
            r.write(&key(*by), vec![set(&format!("/k{}", n % 5), &n.to_string())]).unwrap();
            if *sync {
                let all = rs.clone();
                for o in &all {
                    rs[*by as usize].merge(o);
                }
            }
        }
        let mut r = rs[0].clone();
        for o in &rs[1..] {
            r.merge(o);
        }
        let order = r.canonical_order();
        let l = r.lattice();
        for k in 0..order.len() {
            let clock = prefix_clock(l, &order, k, &VectorClock::default());
            let mut within: Vec<u32> =
                (0..l.len() as u32).filter(|&i| l.clock(i).le(&clock)).collect();
            let mut prefix = order[..=k].to_vec();
            within.sort();
            prefix.sort();
            prop_assert_eq!(&within, &prefix, "prefix {}", k);
        }
        // The last prefix is the whole history: its root is the replica's.
        let all = prefix_clock(l, &order, order.len() - 1, &VectorClock::default());
        prop_assert_eq!(r.state_at(&Cut::Clock(all)).unwrap().root(), r.root());
    }
}
