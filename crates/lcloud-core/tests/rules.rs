//! Every validation and admission rule refuses what breaks it, with the error named after it.

mod common;

use common::*;
use lcloud_core::{
    Draft, Experience, Id, InsertError, Op, Replica, ValidationError, Verified, validate,
};

fn draft(r: &Replica, author: u8, ops: Vec<Op>) -> Draft {
    r.draft(&node(author), ops)
}

/// Signs a draft and runs it through byte validation.
fn check(d: Draft, author: u8, cloud: Id) -> Result<Verified<Experience>, ValidationError> {
    let e = d.seal(node(author)).sign_unchecked(&key(author));
    validate(&e.to_bytes(), &cloud)
}

#[test]
fn shape_rules_are_checked_on_bytes() {
    let g = genesis();
    let cloud = g.id();
    let mut r = Replica::new(g).unwrap();
    r.write(&key(1), vec![set("/a", "1")]).unwrap();

    let mut d = draft(&r, 1, vec![set("/b", "1")]);
    d.prev = None;
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::SeqPrevMismatch { .. })
    ));

    let mut d = draft(&r, 1, vec![set("/b", "1")]);
    d.seq = 0;
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::SeqPrevMismatch { .. })
    ));

    let mut d = draft(&r, 2, vec![set("/b", "1")]);
    d.deps.clear();
    assert!(matches!(
        check(d, 2, cloud),
        Err(ValidationError::NotRootedInGenesis)
    ));

    let mut d = draft(&r, 2, vec![set("/b", "1")]);
    d.deps = vec![Id([9; 32]), Id([1; 32])];
    assert!(matches!(
        check(d, 2, cloud),
        Err(ValidationError::DepsNotSorted)
    ));

    let mut d = draft(&r, 1, vec![set("/b", "1")]);
    d.deps.push(d.prev.unwrap());
    d.deps.sort();
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::DepIsPrev)
    ));

    let d = draft(&r, 1, vec![]);
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::OpCount(0))
    ));

    let mut d = draft(&r, 1, vec![set("/b", "1")]);
    d.deps = (0..=lcloud_core::DEPS_MAX as u16)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..2].copy_from_slice(&i.to_be_bytes());
            Id(b)
        })
        .collect();
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::TooManyDeps(_))
    ));

    let genesis_op = genesis().ops()[0].clone();
    let d = draft(&r, 1, vec![genesis_op]);
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::GenesisOpMisplaced)
    ));

    let mut d = draft(&r, 1, vec![set("/b", "1")]);
    d.cloud = Id([5; 32]);
    assert!(matches!(
        check(d, 1, cloud),
        Err(ValidationError::WrongCloud { .. })
    ));

    // A signature by someone else than the author.
    let e = Experience::sign(draft(&r, 1, vec![set("/b", "1")]), &key(1));
    let mut bytes = e.to_bytes();
    let other = Experience::sign(draft(&r, 2, vec![set("/b", "1")]), &key(2));
    let sig_at = bytes.windows(64).position(|w| w == e.sig().0).unwrap();
    bytes[sig_at..sig_at + 64].copy_from_slice(&other.sig().0);
    assert!(matches!(
        validate(&bytes, &cloud),
        Err(ValidationError::BadSignature(_))
    ));
}

#[test]
fn admission_rules_are_checked_against_the_lattice() {
    let g = genesis();
    let mut r = Replica::new(g).unwrap();
    let first = r.write(&key(1), vec![set("/a", "1")]).unwrap();
    r.write(&key(2), vec![set("/b", "1")]).unwrap();

    // seq must be prev's + 1.
    let mut d = draft(&r, 1, vec![set("/c", "1")]);
    d.seq = 3;
    let e = Experience::sign(d, &key(1));
    assert!(matches!(
        r.insert(e),
        Err(InsertError::SeqNotNext {
            expected: 2,
            found: 3,
            ..
        })
    ));

    // prev must be the author's own.
    let mut d = draft(&r, 1, vec![set("/c", "1")]);
    let bobs = r.lattice().chain(&node(2))[0].id();
    d.prev = Some(bobs);
    d.deps = vec![first.id()];
    let e = Experience::sign(d, &key(1));
    assert!(matches!(
        r.insert(e),
        Err(InsertError::PrevNotOwnChain { .. })
    ));

    // Missing links park; the experience enters when they arrive.
    let mut elsewhere = r.clone();
    let x = elsewhere.write(&key(3), vec![set("/x", "1")]).unwrap();
    let y = elsewhere.write(&key(3), vec![set("/y", "1")]).unwrap();
    let out = r.insert(y.clone()).unwrap();
    assert_eq!(out.parked_on, vec![x.id()]);
    assert!(r.lattice().parked_experience(&y.id()).is_some());
    let out = r.insert(x.clone()).unwrap();
    assert_eq!(out.admitted.len(), 2, "x and the parked y enter together");
    assert_eq!(r.lattice().parked_len(), 0);
    assert!(r.insert(x).unwrap().duplicate);

    // A second genesis cannot enter.
    let other_genesis = genesis_with(None, lcloud_core::ForkPolicy::Quarantine);
    assert!(matches!(
        r.insert(other_genesis),
        Err(InsertError::SecondGenesis(_))
    ));
}

#[test]
fn happens_before_and_concurrency_queries() {
    let g = genesis();
    let mut a = Replica::new(g.clone()).unwrap();
    let mut b = Replica::new(g).unwrap();
    let x = a.write(&key(1), vec![set("/a", "1")]).unwrap();
    let y = b.write(&key(2), vec![set("/b", "1")]).unwrap();
    a.merge(&b);
    let z = a.write(&key(1), vec![set("/c", "1")]).unwrap();
    let l = a.lattice();
    let (ix, iy, iz) = (
        l.idx(&x.id()).unwrap(),
        l.idx(&y.id()).unwrap(),
        l.idx(&z.id()).unwrap(),
    );
    assert!(l.concurrent(ix, iy));
    assert!(l.precedes(ix, iz) && l.precedes(iy, iz));
    assert!(!l.precedes(iz, ix) && !l.concurrent(ix, iz));
    assert_eq!(l.happened_before(&y.id(), &z.id()), Some(true));
    assert_eq!(l.happened_before(&y.id(), &Id([0; 32])), None);
    let (cx, cz) = (l.clock(ix), l.clock(iz));
    assert!(cx.le(&cz) && !cz.le(&cx));
    assert!(l.clock(ix).concurrent(&l.clock(iy)));
    assert_eq!(l.heads().len(), 1);
}

#[test]
fn parking_is_bounded_in_count_and_bytes() {
    let g = genesis();
    let mut source = Replica::new(g.clone()).unwrap();
    let first = source.write(&key(1), vec![set("/a", "1")]).unwrap();
    let later: Vec<_> = (0..5)
        .map(|i| {
            source
                .write(&key(1), vec![set("/a", &i.to_string())])
                .unwrap()
        })
        .collect();
    let mut lattice = lcloud_core::Lattice::new(g).unwrap();
    let one = later[0].to_bytes().len();
    lattice.set_parked_limits(100, one * 2);
    // Without `first`, every later experience must park: two fit in the byte budget.
    assert!(lattice.insert(later[0].clone()).is_ok());
    assert!(lattice.insert(later[1].clone()).is_ok());
    assert!(matches!(
        lattice.insert(later[2].clone()),
        Err(InsertError::ParkedFull)
    ));
    assert_eq!(lattice.parked_len(), 2);
    assert_eq!(
        lattice.parked_bytes(),
        later[0].to_bytes().len() + later[1].to_bytes().len()
    );
    // Releasing them frees the budget.
    lattice.insert(first).unwrap();
    assert_eq!((lattice.parked_len(), lattice.parked_bytes()), (0, 0));
    lattice.set_parked_limits(1, usize::MAX);
    assert!(lattice.insert(later[3].clone()).is_ok());
    assert!(matches!(
        lattice.insert(later[4].clone()),
        Err(InsertError::ParkedFull)
    ));
}
