//! Divergence bisection: where two replicas of one history first fold to different roots.
//!
//! The cuts compared are the prefixes of the canonical order (the fold's order: by depth, then
//! id). A prefix holds the links of everything in it (a link is shallower), so it is a causal
//! cut, named by its clock; with no fork, the experiences within that clock are exactly the
//! prefix. Two replicas that fold alike agree at every prefix; one whose fold went wrong at an
//! experience disagrees from the prefix that first holds it on, so a binary search over the
//! prefixes finds that experience in about log₂ n root comparisons (the caller compares: each
//! replica answers for its own cut, from its own store or fold).

use crate::clock::VectorClock;
use crate::lattice::{Idx, Lattice};

/// The clock of the prefix of `order` that ends at position `k` (inclusive): the join of its
/// experiences' clocks, joined with `floor` (a compacted lattice's compaction point, which
/// every cut must hold).
pub fn prefix_clock(
    lattice: &Lattice,
    order: &[Idx],
    k: usize,
    floor: &VectorClock,
) -> VectorClock {
    let mut clock = floor.clone();
    for &i in &order[..=k] {
        clock.join(&lattice.clock(i));
    }
    clock
}

/// The first position `k` in `0..n` at which `differs(k)` holds, for a `differs` that, once
/// it holds, holds at every later position; `None` when it does not hold at `n - 1` (or `n`
/// is 0). Calls `differs` at most `1 + ⌈log₂ n⌉` times, and stops at its first error.
pub fn first_difference<E>(
    n: usize,
    mut differs: impl FnMut(usize) -> Result<bool, E>,
) -> Result<Option<usize>, E> {
    if n == 0 || !differs(n - 1)? {
        return Ok(None);
    }
    // `lo` agrees (or is before the first position), `hi` differs.
    let (mut lo, mut hi): (Option<usize>, usize) = (None, n - 1);
    loop {
        let from = lo.map_or(0, |l| l + 1);
        if from == hi {
            return Ok(Some(hi));
        }
        let mid = from + (hi - from) / 2;
        if differs(mid)? {
            hi = mid;
        } else {
            lo = Some(mid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn finds_the_planted_position_in_logarithmic_comparisons(
            n in 1usize..200_000,
            at in 0usize..200_000,
            planted in any::<bool>(),
        ) {
            let at = at % n;
            let mut calls = 0u32;
            let found = first_difference::<()>(n, |k| {
                calls += 1;
                Ok(planted && k >= at)
            })
            .unwrap();
            prop_assert_eq!(found, planted.then_some(at));
            let log = usize::BITS - (n - 1).leading_zeros();
            prop_assert!(calls <= 1 + log, "{} calls for {} positions", calls, n);
        }
    }

    #[test]
    fn an_error_stops_the_search() {
        let mut calls = 0;
        let out = first_difference(100, |k| {
            calls += 1;
            if k < 50 { Err("unreachable") } else { Ok(true) }
        });
        assert_eq!(out, Err("unreachable"));
        assert!(calls <= 3);
    }
}
