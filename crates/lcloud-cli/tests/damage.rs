//! Single bits flipped in a store's file, then the commands a person runs: each either works
//! or fails with one line naming the damage. Never a panic, never exit 101, and `verify` never
//! passes a store the engine could not read (issue 17, item 8).

mod common;

use common::lcloud;

/// Flips written by default; `LCLOUD_FLIP_ROUNDS` asks for more (a release run: 1 300).
fn rounds() -> usize {
    std::env::var("LCLOUD_FLIP_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(120)
}

fn splitmix(i: u64) -> u64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn flipped_bits_give_an_error_or_the_truth_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    assert!(
        lcloud(&good, &["init", "--alias", "alice"])
            .status
            .success()
    );
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!(
            "{{\"op\":\"set\",\"path\":\"/k{}\",\"value\":{{\"v\":{i},\"s\":\"value {i}\"}}}}\n",
            i % 40
        ));
    }
    let out = common::lcloud_stdin(&good, &["batch"], batch.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..20 {
        assert!(
            lcloud(&good, &["incr", &format!("/n{}", i % 3)])
                .status
                .success()
        );
    }
    let clean = std::fs::read(good.join("store.redb")).unwrap();
    let root = lcloud(&good, &["root"]).stdout;
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let (mut refused, mut served) = (0, 0);
    let n = rounds();
    for i in 0..n {
        // Anywhere in the file (splitmix64 of the round), one bit each.
        let r = splitmix(i as u64);
        let at = (r % clean.len() as u64) as usize;
        let mut bytes = clean.clone();
        bytes[at] ^= 1 << ((r >> 32) % 8);
        for args in [&["verify"][..], &["set", "/after", "1"], &["root"]] {
            // A fresh copy each time: a `set` that works leaves `signed-seq` ahead of the
            // clean store, and the next `set` would be refused for that instead.
            for f in std::fs::read_dir(&good).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), bad.join(f.file_name())).unwrap();
            }
            std::fs::write(bad.join("store.redb"), &bytes).unwrap();
            let out = lcloud(&bad, args);
            let err = String::from_utf8_lossy(&out.stderr);
            let what = format!("flip {i} (byte {at}), lcloud {args:?}: {err}");
            assert!(!err.contains("panicked"), "{what}");
            match out.status.code() {
                Some(0) => {
                    served += 1;
                    if args == ["root"] {
                        // A root that is served must be the true one.
                        assert_eq!(out.stdout, root, "{what}");
                    }
                }
                Some(1) => {
                    refused += 1;
                    assert!(err.starts_with("error: "), "{what}");
                    assert_eq!(err.trim_end().lines().count(), 1, "{what}");
                }
                other => panic!("exit {other:?}: {what}"),
            }
        }
    }
    eprintln!("{n} flips: {served} commands served, {refused} refused");
    assert!(refused > 0, "some flips must be caught");
}

/// The tag docs/store.md gives a group: BLAKE3 over `"lcloud groups\0"`, the key (u64 LE) and
/// the bytes, its first 16 bytes.
fn group_tag(key: u64, bytes: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"lcloud groups\0");
    h.update(&key.to_le_bytes());
    h.update(bytes);
    let mut t = [0u8; 16];
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// A record changed on purpose and sealed again with a valid tag (what someone who knows the
/// format, not the key, can do): every read still passes the tag, so only the signature can
/// catch it. `verify` names the experience as the store indexes it and the check it failed.
#[test]
fn a_resealed_tampered_record_fails_verify_by_name_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    assert!(lcloud(&dir, &["init", "--alias", "alice"]).status.success());
    assert!(lcloud(&dir, &["set", "/y", "2"]).status.success());
    assert!(
        lcloud(&dir, &["set", "/x", "\"precious value\""])
            .status
            .success()
    );
    let file = dir.join("store.redb");
    let groups: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("groups");
    {
        let db = redb::Database::open(&file).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(groups).unwrap();
            let rows: Vec<(u64, Vec<u8>)> = redb::ReadableTable::iter(&table)
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            let mut changed = 0;
            for (key, mut rec) in rows {
                assert_eq!(&rec[..16], group_tag(key, &rec[16..]), "the documented tag");
                let Some(at) = rec.windows(8).position(|w| w == b"precious") else {
                    continue;
                };
                rec[at] = b'P';
                let tag = group_tag(key, &rec[16..]);
                rec[..16].copy_from_slice(&tag);
                table.insert(key, rec.as_slice()).unwrap();
                changed += 1;
            }
            assert_eq!(changed, 1, "the value is in one group");
        }
        tx.commit().unwrap();
    }
    let out = lcloud(&dir, &["verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: store corrupt: experience alice:3 (stored as arrival #2, author "),
        "{err}"
    );
    assert!(
        err.contains(") fails verification (bad signature): bad signature on experience "),
        "{err}"
    );
}
