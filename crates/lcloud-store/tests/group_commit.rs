//! Many concurrent writers share commits, and every acknowledged write is durable and
//! consistent with the persisted fold.

use lcloud_core::{Experience, Genesis, Op, Path, Value};
use lcloud_store::{Committer, Identity, Store};

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("g"));
    let store = Store::create(dir.path(), &genesis).unwrap();
    let committer = Committer::start(store, me.clone());
    let writers = 32;
    let each = 40;
    let acked: Vec<Vec<(u64, lcloud_core::Id)>> = std::thread::scope(|s| {
        (0..writers)
            .map(|w| {
                let writer = committer.writer();
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let e = writer
                                .write(vec![
                                    Op::Incr {
                                        path: Path::parse(&format!("/w{w}")).unwrap(),
                                        by: 1,
                                    },
                                    Op::Set {
                                        path: Path::parse(&format!("/last/{w}")).unwrap(),
                                        value: Value::Int(i),
                                    },
                                ])
                                .unwrap();
                            (e.seq(), e.id())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let store = committer.stop();
    let replica = store.load(&mut |_| {}).unwrap();
    let total = writers * each;
    assert_eq!(replica.lattice().len(), 1 + total as usize);
    let mut seqs: Vec<u64> = acked.iter().flatten().map(|(s, _)| *s).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (2..2 + total as u64).collect::<Vec<_>>(),
        "one chain, no gaps, no reuse"
    );
    for (_, id) in acked.iter().flatten() {
        assert!(replica.lattice().contains(id));
    }
    let doc = replica.document().to_json();
    for w in 0..writers {
        assert_eq!(doc[format!("w{w}")], each);
        assert_eq!(
            doc["last"][format!("w{w}").trim_start_matches('w')],
            each - 1
        );
    }
    assert_eq!(store.state().unwrap().root(), replica.root());
}

/// Set in the child process of the crash test: the store directory to write into.
const CHILD: &str = "LCLOUD_COMMIT_CRASH_CHILD";

/// The committer writes document leaves every few thousand ops, not at every commit. Killed
/// with `kill -9` between two such writes (or just after one), it loses no acknowledged
/// experience, and the reopened store's persisted fold equals a full replay.
#[test]
fn a_committer_killed_between_leaf_writes_loses_nothing() {
    if let Ok(dir) = std::env::var(CHILD) {
        crash_child(std::path::Path::new(&dir));
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("g"));
    drop(Store::create(dir.path(), &genesis).unwrap());
    let mut acked: Vec<lcloud_core::Id> = Vec::new();
    // Killed before the first leaf write (700 ops), then after crossing one (4096 ops).
    for kill_after in [700usize, 5_000] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "a_committer_killed_between_leaf_writes_loses_nothing",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut n = 0;
        for line in out.lines() {
            let line = line.unwrap();
            let Some(hex) = line.strip_prefix("acked ") else {
                continue;
            };
            acked.push(lcloud_core::Id::from_hex(hex).unwrap());
            n += 1;
            if n == kill_after {
                break;
            }
        }
        assert_eq!(n, kill_after, "the child stopped early");
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let replica = store.load(&mut |_| {}).unwrap();
        for id in &acked {
            assert!(replica.lattice().contains(id), "acknowledged {id} is lost");
        }
        assert_eq!(store.state().unwrap().root(), replica.root());
        assert_eq!(
            store.document(&Path::root()).unwrap().unwrap().to_json(),
            replica.document().to_json()
        );
    }
}

/// Writes through the committer from 8 threads until killed, printing each acknowledged id.
fn crash_child(dir: &std::path::Path) -> ! {
    use std::io::Write;
    let me = Identity::load_or_create(dir).unwrap();
    let committer = Committer::start(Store::open(dir).unwrap(), me);
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..8 {
            let writer = committer.writer();
            let out = &out;
            s.spawn(move || {
                for i in 0.. {
                    let e = writer
                        .write(vec![
                            Op::Incr {
                                path: Path::parse(&format!("/n/{t}")).unwrap(),
                                by: 1,
                            },
                            Op::Set {
                                path: Path::parse(&format!("/last/{}", i % 50)).unwrap(),
                                value: Value::Int(i),
                            },
                        ])
                        .unwrap();
                    let mut out = out.lock().unwrap();
                    // The parent stops reading before it kills this process.
                    if writeln!(out, "acked {}", e.id().to_hex()).is_err() || out.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    unreachable!("the writers write until the process is killed")
}

/// A small tmpfs, unmounted on drop (`None` where mounting is not allowed).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The committer signs a batch while the one before is being stored, chained on it. When a
/// commit fails (the disk is full), the batches chained on it are refused too, the writers
/// get clear errors, and once space is freed writing resumes on the stored chain: nothing
/// acknowledged is lost, the chain has no gap, and the persisted fold equals a replay.
#[test]
fn a_failed_commit_refuses_what_was_chained_on_it_and_writing_resumes() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "8m") else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = mnt.join("node");
    std::fs::create_dir(&dir).unwrap();
    let me = Identity::load_or_create(&dir).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("g"));
    let store = Store::create(&dir, &genesis).unwrap();
    let committer = Committer::start(store, me.clone());
    let filler = mnt.join("filler");
    let write_all = |round: u32| -> (Vec<lcloud_core::Id>, Vec<String>) {
        let results: Vec<_> = std::thread::scope(|s| {
            (0..16)
                .map(|w| {
                    let writer = committer.writer();
                    s.spawn(move || {
                        (0..20)
                            .map(|i| {
                                writer.write(vec![Op::Set {
                                    path: Path::parse(&format!("/r{round}/w{w}/{i}")).unwrap(),
                                    value: Value::Str("v".repeat(2000)),
                                }])
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(e) => acked.push(e.id()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (acked, errors)
    };
    let (mut acked, errors) = write_all(0);
    assert!(errors.is_empty(), "{errors:?}");
    // Fill the disk, then write until commits fail.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failed = Vec::new();
    for round in 1..=20 {
        let (a, e) = write_all(round);
        acked.extend(a);
        failed.extend(e);
        if !failed.is_empty() {
            break;
        }
    }
    assert!(!failed.is_empty(), "a full disk must refuse some writes");
    let mut kinds: Vec<&String> = failed.iter().collect();
    kinds.sort();
    kinds.dedup();
    println!("{} writes refused; the reasons: {kinds:#?}", failed.len());
    for e in &failed {
        assert!(
            e.contains("disk full") || e.contains("earlier write") || e.contains("signed-seq"),
            "a clear error, got {e}"
        );
    }
    // Free space: writing resumes, on the chain as stored.
    std::fs::remove_file(&filler).unwrap();
    let (a, errors) = write_all(100);
    assert!(errors.is_empty(), "writing resumes: {errors:?}");
    acked.extend(a);
    let store = committer.stop();
    drop(store);
    let store = Store::open(&dir).unwrap();
    let replica = store.load(&mut |_| {}).unwrap();
    for id in &acked {
        assert!(
            replica.lattice().contains(id),
            "acknowledged {id} is stored"
        );
    }
    assert_eq!(store.state().unwrap().root(), replica.root());
}

/// The committer refuses what the fold would misread (an `incr` of a string, a path through a
/// string) with the writer's refusal, in any batch it shares with good writes, and signs
/// nothing for it: the chain has no gap and holds exactly the accepted writes.
#[test]
fn the_committer_refuses_writes_the_fold_would_misread() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(dir.path()).unwrap();
    let genesis = Experience::create_genesis(me.key(), Genesis::open("g"));
    let store = Store::create(dir.path(), &genesis).unwrap();
    let committer = Committer::start(store, me.clone());
    let text = Path::parse("/text").unwrap();
    committer
        .writer()
        .write(vec![Op::Set {
            path: text.clone(),
            value: Value::Str("a string".into()),
        }])
        .unwrap();
    let (accepted, refused): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        (0..8)
            .map(|w| {
                let writer = committer.writer();
                let text = text.clone();
                s.spawn(move || {
                    (0..30)
                        .map(|i| {
                            let op = match (w + i) % 3 {
                                0 => Op::Incr {
                                    path: text.clone(),
                                    by: 1,
                                },
                                1 => Op::Set {
                                    path: Path::parse("/text/inner").unwrap(),
                                    value: Value::Int(i),
                                },
                                _ => Op::Incr {
                                    path: Path::parse("/n").unwrap(),
                                    by: 1,
                                },
                            };
                            writer.write(vec![op])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .partition(Result::is_ok)
    });
    let store = committer.stop();
    assert_eq!(accepted.len() + refused.len(), 240);
    for r in &refused {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, lcloud_store::StoreError::WriteRefused(_)),
            "refused as the fold would misread it: {e}"
        );
    }
    assert_eq!(
        refused.len(),
        160,
        "every incr of /text and every /text/inner"
    );
    let replica = store.load(&mut |_| {}).unwrap();
    assert_eq!(
        replica.lattice().len(),
        2 + accepted.len(),
        "nothing else signed"
    );
    let doc = replica.document().to_json();
    assert_eq!(doc["text"], "a string");
    assert_eq!(doc["n"], 80);
    assert_eq!(store.state().unwrap().root(), replica.root());
}
