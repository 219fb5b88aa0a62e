//! Proofs (issue 21): a cut's history in one file, which anyone can fold again to the cut's
//! root with no store and no network, from a final checkpoint or from the whole history; every
//! changed byte refused, and deliberate changes that keep the checksums good refused by name.

mod common;

use common::members::{self, grow};
use lcloud_core::{Cut, Experience, NodeId, Replica, VectorClock, Verified};
use lcloud_store::bundle;
use lcloud_store::proof::{self, ProofError};
use lcloud_store::shallow::ShallowError;

fn genesis() -> Verified<Experience> {
    members::genesis("proof")
}

/// The clock of the `n`th experience to arrive: a cut inside the history.
fn cut_at(r: &Replica, n: usize) -> VectorClock {
    r.lattice().clock(n as lcloud_core::Idx)
}

fn root_at(r: &Replica, cut: &VectorClock) -> lcloud_core::Id {
    r.state_at(&Cut::Clock(cut.clone())).unwrap().root()
}

#[test]
fn a_proof_folds_again_to_the_root_at_its_cut() {
    let mut r = Replica::new(genesis()).unwrap();
    let mut seed = 3;
    grow(&mut r, 5, &mut seed);
    assert_eq!(r.lattice().fixed_depth(), None, "nothing final yet");
    for n in [0, 1, 4, 9, r.lattice().len() - 1] {
        let cut = cut_at(&r, n);
        let bytes = proof::export(&r, &cut, false).unwrap();
        let checked = proof::verify(&bytes).unwrap();
        assert_eq!(checked.root, root_at(&r, &cut), "cut {cut}");
        assert_eq!(checked.cut, cut);
        assert_eq!(checked.checkpoint, None);
        assert_eq!(checked.cloud, r.cloud());
        // Exactly the cut's history, the genesis included.
        let within = (0..r.lattice().len() as u32)
            .filter(|&i| r.lattice().clock(i).le(&cut))
            .count();
        assert_eq!(checked.experiences, within.max(1));
    }
    // A clock naming seqs beyond what is held proves what it holds, named exactly.
    let mut beyond = r.lattice().frontier();
    for s in beyond.0.values_mut() {
        *s += 5;
    }
    let checked = proof::verify(&proof::export(&r, &beyond, false).unwrap()).unwrap();
    assert_eq!(checked.cut, r.lattice().frontier());
    assert_eq!(checked.root, r.root());
}

#[test]
fn a_proof_from_a_final_checkpoint_is_smaller_and_proves_the_same_roots() {
    let mut r = Replica::new(genesis()).unwrap();
    let mut seed = 11;
    grow(&mut r, 120, &mut seed);
    let depth = r.lattice().fixed_depth().expect("a final checkpoint");
    let at = r.lattice().depth_cut(depth);
    let now = r.lattice().frontier();
    // The checkpoint's own cut, the whole history, and one in between.
    let mut between = at.clone();
    for (n, s) in now.0.iter() {
        let s = (between.0.get(n).copied().unwrap_or(0) + s) / 2;
        between.0.insert(*n, s.max(1));
    }
    for cut in [at.clone(), between, now.clone()] {
        let shallow = proof::export(&r, &cut, false).unwrap();
        let full = proof::export(&r, &cut, true).unwrap();
        let (a, b) = (
            proof::verify(&shallow).unwrap(),
            proof::verify(&full).unwrap(),
        );
        assert_eq!(a.checkpoint, Some(depth));
        assert_eq!(a.attested_by.len(), 2, "both members attested it");
        assert_eq!(b.checkpoint, None);
        assert_eq!(a.root, root_at(&r, &cut));
        assert_eq!(a.root, b.root);
        assert!(
            shallow.len() * 2 < full.len(),
            "{} against {}",
            shallow.len(),
            full.len()
        );
    }
    // A cut that does not contain the checkpoint is proven from the whole history.
    let early = cut_at(&r, 3);
    let checked = proof::verify(&proof::export(&r, &early, false).unwrap()).unwrap();
    assert_eq!(checked.checkpoint, None);
    assert_eq!(checked.root, root_at(&r, &early));

    // A compacted replica proves from its checkpoint on, and says why not before it.
    let compacted = r.compacted().unwrap();
    let checked = proof::verify(&proof::export(&compacted, &now, false).unwrap()).unwrap();
    assert_eq!(checked.root, r.root());
    for (cut, full) in [(&now, true), (&early, false)] {
        let err = proof::export(&compacted, cut, full).unwrap_err();
        assert!(
            matches!(err, ProofError::Unprovable(_)) && err.to_string().contains("compacted"),
            "{err}"
        );
    }
    // Once a deeper checkpoint is final there, a cut between the two is named as too early
    // for it.
    let mut later = compacted.clone();
    grow(&mut later, 60, &mut seed);
    let deeper = later.lattice().fixed_depth().unwrap();
    assert!(deeper > depth);
    let err = proof::export(&later, &now, false).unwrap_err().to_string();
    assert!(err.contains(&format!("depth {deeper}")), "{err}");
    let checked =
        proof::verify(&proof::export(&later, &later.lattice().frontier(), false).unwrap()).unwrap();
    assert_eq!(
        (checked.checkpoint, checked.root),
        (Some(deeper), later.root())
    );
}

/// A small proof of each kind.
fn small_proofs() -> Vec<Vec<u8>> {
    let mut r = Replica::new(genesis()).unwrap();
    let mut seed = 5;
    grow(&mut r, 3, &mut seed);
    let full = proof::export(&r, &r.lattice().frontier(), false).unwrap();
    let mut r = Replica::new(genesis()).unwrap();
    grow(&mut r, 14, &mut seed);
    let from = proof::export(&r, &r.lattice().frontier(), false).unwrap();
    assert!(proof::verify(&from).unwrap().checkpoint.is_some());
    vec![full, from]
}

#[test]
fn every_changed_byte_is_refused() {
    for bytes in small_proofs() {
        proof::verify(&bytes).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut changed = bytes.clone();
                changed[i] ^= bit;
                assert!(
                    proof::verify(&changed).is_err(),
                    "byte {i} of {} changed (^{bit:#x}) and still accepted",
                    bytes.len()
                );
            }
        }
        assert!(proof::verify(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(proof::verify(&longer).is_err());
    }
}

/// The proof `bytes` with its head replaced by `head` (checksum made good).
fn with_head(bytes: &[u8], head: &[u8]) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut out = proof::MAGIC.to_vec();
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(head);
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out.extend_from_slice(&bytes[24 + len + 32..]);
    out
}

type Head = (Vec<(NodeId, u64)>, lcloud_core::Id, Option<u64>);

fn head(bytes: &[u8]) -> Head {
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    lcloud_core::codec::from_canonical(&bytes[24..24 + len]).unwrap()
}

#[test]
fn changes_that_keep_the_checksums_good_are_refused_by_name() {
    let proofs = small_proofs();
    let full = &proofs[0];

    // Another root claimed.
    let (cut, root, depth) = head(full);
    let mut other = *root.as_bytes();
    other[0] ^= 1;
    let forged = with_head(
        full,
        &lcloud_core::codec::to_canonical(&(cut.clone(), lcloud_core::Id(other), depth)),
    );
    let err = proof::verify(&forged).unwrap_err();
    assert!(
        matches!(err, ProofError::Root { claimed, folded } if claimed.0 == other && folded == root),
        "{err}"
    );

    // A cut that names a seq the proof does not hold, or leaves out what it holds.
    for delta in [1i64, -1] {
        let mut bent = cut.clone();
        bent[0].1 = (bent[0].1 as i64 + delta) as u64;
        let forged = with_head(
            full,
            &lcloud_core::codec::to_canonical(&(bent, root, depth)),
        );
        let err = proof::verify(&forged).unwrap_err();
        assert!(matches!(err, ProofError::Cut(_)), "{err}");
    }

    // A history from a checkpoint that the head does not name.
    let forged = with_head(
        full,
        &lcloud_core::codec::to_canonical(&(cut.clone(), root, Some(16u64))),
    );
    let err = proof::verify(&forged).unwrap_err();
    assert!(err.to_string().contains("not a shallow bundle"), "{err}");

    // One byte of one experience's ops changed, the bundle's trailer made good: its
    // signature no longer holds.
    let len = u64::from_le_bytes(full[16..24].try_into().unwrap()) as usize;
    let body_at = 24 + len + 32;
    let b = bundle::decode(&full[body_at..]).unwrap();
    let mut records: Vec<Vec<u8>> = b.records.iter().map(|r| r.to_vec()).collect();
    let victim = records.len() - 1;
    let at = records[victim].len() - 3;
    records[victim][at] ^= 1;
    let mut forged = full[..body_at].to_vec();
    forged.extend_from_slice(&bundle::encode(
        &b.cloud,
        records.iter().map(|r| r.as_slice()),
    ));
    let err = proof::verify(&forged).unwrap_err();
    assert!(
        matches!(err, ProofError::Invalid { index, .. } if index == victim),
        "{err}"
    );

    // An experience left out: what builds on it waits for it.
    let mut records: Vec<Vec<u8>> = b.records.iter().map(|r| r.to_vec()).collect();
    records.remove(1);
    let mut forged = full[..body_at].to_vec();
    forged.extend_from_slice(&bundle::encode(
        &b.cloud,
        records.iter().map(|r| r.as_slice()),
    ));
    let err = proof::verify(&forged).unwrap_err();
    assert!(
        matches!(err, ProofError::Links(_) | ProofError::Cut(_)),
        "{err}"
    );

    // From a checkpoint: a document the members did not attest (one leaf left out, the
    // shallow base's checksum made good).
    let from = &proofs[1];
    let len = u64::from_le_bytes(from[16..24].try_into().unwrap()) as usize;
    let body = &from[24 + len + 32..];
    type Base = (
        u64,
        Vec<(NodeId, u64)>,
        Vec<(u64, Vec<(NodeId, u64)>, bool, bool, u8)>,
        Vec<(lcloud_core::Path, lcloud_core::codec::ByteBuf)>,
    );
    let base_len = u64::from_le_bytes(body[16..24].try_into().unwrap()) as usize;
    let mut base: Base = lcloud_core::codec::from_canonical(&body[24..24 + base_len]).unwrap();
    assert!(!base.3.is_empty());
    base.3.pop();
    let base = lcloud_core::codec::to_canonical(&base);
    let mut shallow = lcloud_store::shallow::MAGIC.to_vec();
    shallow.extend_from_slice(&(base.len() as u64).to_le_bytes());
    shallow.extend_from_slice(&base);
    let check = blake3::hash(&shallow);
    shallow.extend_from_slice(check.as_bytes());
    shallow.extend_from_slice(&body[24 + base_len + 32..]);
    let mut forged = from[..24 + len + 32].to_vec();
    forged.extend_from_slice(&shallow);
    let err = proof::verify(&forged).unwrap_err();
    assert!(
        matches!(err, ProofError::Checkpoint(ShallowError::Unproven { .. })),
        "{err}"
    );
}

#[test]
fn what_is_not_a_proof_says_so() {
    assert_eq!(proof::verify(b""), Err(ProofError::NotAProof));
    let bundle = bundle::encode(&lcloud_core::Id([0; 32]), std::iter::empty());
    assert_eq!(proof::verify(&bundle), Err(ProofError::NotAProof));
    let mut huge = proof::MAGIC.to_vec();
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    let err = proof::verify(&huge).unwrap_err();
    assert!(err.to_string().contains("claims"), "{err}");
}
