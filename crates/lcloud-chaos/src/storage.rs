//! The storage tier: a real store on disk (redb) under `kill -9` at random moments, truncation
//! at a random byte and single flipped bytes, then reopened; a store restored from an old
//! backup; and, given the `lcloud` binary, single flipped bits under the commands a person
//! runs (`verify`, `set`, `root`). Pass criteria: no acknowledged experience lost, no corrupt
//! record accepted (a damaged store either refuses to open or read, naming what is wrong, or
//! serves exactly what it held), no self-equivocation (a node never signs a seq it may have
//! signed before), and the binary never panics: it works, or exits 1 with one `error:` line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lcloud_core::{Experience, Genesis, Id, Op, Path as DocPath, Value};
use lcloud_store::{Committer, Identity, Store};

/// What the storage tier found.
#[derive(Debug, Default)]
pub struct Report {
    /// Rounds run, by kind (kill -9, truncation, flipped byte, backup, flipped bit under the
    /// binary, compaction killed).
    pub rounds: [usize; 6],
    /// Compactions killed that left the store as it was, and that had finished (compacted).
    pub compactions_killed: [usize; 2],
    /// Commands the binary ran on a damaged store: (served, refused with one error line).
    pub binary_commands: (usize, usize),
    /// Acknowledged experiences missing after a kill.
    pub lost: usize,
    /// Damaged stores that served something other than what they held.
    pub corrupt_accepted: usize,
    /// Damaged stores that refused, with the reason (first of each kind).
    pub refusals: Vec<String>,
    /// Times a store signed a seq it may have signed before.
    pub self_equivocations: usize,
    /// What failed, in words.
    pub failures: Vec<String>,
}

impl Report {
    /// Nothing lost, nothing corrupt accepted, no self-equivocation.
    pub fn valid(&self) -> bool {
        self.lost == 0
            && self.corrupt_accepted == 0
            && self.self_equivocations == 0
            && self.failures.is_empty()
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn op(i: u64) -> Op {
    Op::Set {
        path: DocPath::from(vec!["k".into(), (i % 50).to_string()]),
        value: Value::Int(i as i64),
    }
}

/// The child of a kill round: writes through the group committer from 4 threads until it is
/// killed, printing every acknowledged id.
pub fn writer_child(dir: &Path) -> ! {
    let me = Identity::load(dir).expect("identity").expect("identity");
    let store = Store::open(dir).expect("the store opens");
    let committer = Committer::start(store, me);
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let writer = committer.writer();
            let out = &out;
            s.spawn(move || {
                for i in 0.. {
                    let Ok(e) = writer.write(vec![op(t * 1_000_000 + i)]) else {
                        return;
                    };
                    let mut o = out.lock().expect("not poisoned");
                    if writeln!(o, "{}", e.id().to_hex()).is_err() || o.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    std::process::exit(0)
}

/// What a store serves: its history's root and length, and its persisted state's root.
fn read(dir: &Path) -> Result<(Id, usize, Id), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let replica = store.load(&mut |_| {}).map_err(|e| e.to_string())?;
    let state = store.state().map_err(|e| e.to_string())?;
    Ok((replica.root(), replica.lattice().len(), state.root()))
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Runs `rounds` rounds (kinds in turn) from `seed`; with `lcloud`, a fifth of them flip bits
/// under the binary.
pub fn run(rounds: usize, seed: u64, lcloud: Option<&Path>) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(seed);
    let base = std::env::temp_dir().join(format!(
        "lcloud-chaos-storage-{}-{seed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("node");
    let me = Identity::load_or_create(&dir).expect("identity");
    let genesis = Experience::create_genesis(me.key(), Genesis::open("storage"));
    drop(Store::create(&dir, &genesis).expect("a store"));
    let mut acked: Vec<Id> = Vec::new();
    let exe = std::env::current_exe().expect("own path");
    let seeded = base.join("seeded");
    let seeded_root = match crate::storage_compact::seed(&seeded) {
        Ok(root) => Some(root),
        Err(e) => {
            report
                .failures
                .push(format!("cannot make a store to compact: {e}"));
            None
        }
    };
    let mut cli = None;
    if let Some(bin) = lcloud {
        match CliStore::create(bin, &base.join("cli")) {
            Ok(c) => cli = Some(c),
            Err(e) => report.failures.push(format!("the binary's store: {e}")),
        }
    }
    // Kill, truncate, flip, backup; the binary's rounds with it; compaction with its store.
    let mut kinds = vec![0, 1, 2, 3];
    kinds.extend(cli.is_some().then_some(4));
    kinds.extend(seeded_root.is_some().then_some(5));
    for round in 0..rounds {
        if crate::interrupt::interrupted() {
            report
                .failures
                .push(format!("interrupted after {round} of {rounds} rounds"));
            break;
        }
        let kind = kinds[round % kinds.len()];
        report.rounds[kind] += 1;
        match kind {
            0 => kill_round(&exe, &dir, &mut rng, &mut acked, &mut report),
            1 | 2 => damage_round(&base, &dir, kind == 1, &mut rng, &mut report),
            3 => backup_round(&base, &dir, &me, &mut report),
            4 => match &cli {
                Some(c) => c.flip_round(&mut rng, &mut report),
                None => report.rounds[kind] -= 1,
            },
            _ => match seeded_root {
                Some(root) => {
                    let delay = rng.below(80);
                    crate::storage_compact::round(&exe, &base, &seeded, root, delay, &mut report)
                }
                None => report.rounds[kind] -= 1,
            },
        }
        if report.failures.len() > 10 {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    report
}

fn kill_round(exe: &Path, dir: &Path, rng: &mut Rng, acked: &mut Vec<Id>, report: &mut Report) {
    let mut child = Command::new(exe)
        .arg("storage-writer")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the writer starts");
    let want = 1 + rng.below(60) as usize;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut got = 0;
    while got < want {
        match lines.next() {
            Some(Ok(l)) => match Id::from_hex(l.trim()) {
                Some(id) => {
                    acked.push(id);
                    got += 1;
                }
                None => break,
            },
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // Reopen: everything acknowledged is there, the persisted fold equals a replay.
    match Store::open(dir).and_then(|s| s.load(&mut |_| {}).map(|r| (s, r))) {
        Ok((store, replica)) => {
            let missing = acked
                .iter()
                .filter(|id| !replica.lattice().contains(id))
                .count();
            report.lost += missing;
            match store.state() {
                Ok(state) if state.root() == replica.root() => {}
                Ok(_) => report
                    .failures
                    .push("after a kill the persisted fold differs from a replay".into()),
                Err(e) => report.failures.push(format!("after a kill: {e}")),
            }
            // No self-equivocation: signed-seq never runs ahead of the stored chain.
            let me = replica.lattice().authors().first().copied();
            let tip = me
                .and_then(|a| replica.lattice().tip(&a))
                .map_or(0, |i| replica.lattice().get(i).seq());
            if store.signed_seq().unwrap_or(0) > tip {
                report.self_equivocations += 1;
            }
        }
        Err(e) => report
            .failures
            .push(format!("a store killed mid-write does not reopen: {e}")),
    }
}

fn damage_round(base: &Path, dir: &Path, truncate: bool, rng: &mut Rng, report: &mut Report) {
    let Ok(original) = read(dir) else {
        report
            .failures
            .push("the undamaged store does not read".into());
        return;
    };
    let copy: PathBuf = base.join("damaged");
    let _ = std::fs::remove_dir_all(&copy);
    if let Err(e) = copy_dir(dir, &copy) {
        report.failures.push(format!("cannot copy the store: {e}"));
        return;
    }
    let file = copy.join("store.redb");
    let mut bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            report.failures.push(format!("cannot read the copy: {e}"));
            return;
        }
    };
    let at = rng.below(bytes.len() as u64) as usize;
    if truncate {
        bytes.truncate(at);
    } else {
        bytes[at] ^= 1 << rng.below(8);
    }
    if let Err(e) = std::fs::write(&file, &bytes) {
        report
            .failures
            .push(format!("cannot write the damaged copy: {e}"));
        return;
    }
    match read(&copy) {
        // Serving is fine only if it serves exactly what the store held.
        Ok(got) if got == original => {}
        Ok(_) => {
            report.corrupt_accepted += 1;
            report.failures.push(format!(
                "a {} at byte {at} was served as a different history",
                if truncate {
                    "truncation"
                } else {
                    "flipped bit"
                }
            ));
        }
        Err(e) => {
            let kind = if truncate { "truncated" } else { "flipped" };
            if !report.refusals.iter().any(|r| r.starts_with(kind)) {
                report.refusals.push(format!("{kind}: {e}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&copy);
}

fn backup_round(base: &Path, dir: &Path, me: &Identity, report: &mut Report) {
    // Back up the store file only (as an operator restoring store.redb would), write more,
    // then restore the backup: the node must refuse to sign until it has caught up.
    let backup = base.join("backup.redb");
    let mut fail = |what: String| report.failures.push(format!("backup round: {what}"));
    if let Err(e) = std::fs::copy(dir.join("store.redb"), &backup) {
        return fail(format!("cannot back up: {e}"));
    }
    let wrote =
        Store::open(dir).and_then(|mut store| store.write_local(me, vec![op(u64::MAX / 2)]));
    if !matches!(wrote, Ok(Some(_))) {
        return fail(format!("a plain write failed: {wrote:?}"));
    }
    let current = match std::fs::read(dir.join("store.redb")) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot read the store file: {e}")),
    };
    if let Err(e) = std::fs::copy(&backup, dir.join("store.redb")) {
        return fail(format!("cannot restore the backup: {e}"));
    }
    let refused = Store::open(dir).and_then(|mut store| store.write_local(me, vec![op(1)]));
    match refused {
        Err(lcloud_store::StoreError::BehindSignedSeq { .. }) => {}
        Ok(_) => {
            report.self_equivocations += 1;
            report
                .failures
                .push("a store restored from a backup signed a seq it had signed before".into());
        }
        Err(e) => report.failures.push(format!(
            "backup round: refused, but not for being behind: {e}"
        )),
    }
    // Put the current file back (as importing the node's own published chain would).
    if let Err(e) = std::fs::write(dir.join("store.redb"), current) {
        report
            .failures
            .push(format!("backup round: cannot put the store back: {e}"));
    }
}

/// `BIN --dir DIR ARGS…` (ignoring any `LCLOUD_DIR`), with `stdin` piped in if given.
fn lcloud(
    bin: &Path,
    dir: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::io::Result<std::process::Output> {
    let mut child = Command::new(bin)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LCLOUD_DIR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(bytes)) = (child.stdin.take(), stdin) {
        let mut input = input;
        input.write_all(bytes)?;
    }
    child.wait_with_output()
}

/// A store written by the `lcloud` binary, and what it held before any damage.
struct CliStore {
    bin: PathBuf,
    good: PathBuf,
    bad: PathBuf,
    clean: Vec<u8>,
    root: Vec<u8>,
}

impl CliStore {
    /// `lcloud init`, 200 records in one batch and 20 increments (as tests/damage.rs does).
    fn create(bin: &Path, at: &Path) -> Result<CliStore, String> {
        let good = at.join("good");
        let run = |args: &[&str], stdin: Option<&str>| -> Result<Vec<u8>, String> {
            let out = lcloud(bin, &good, args, stdin.map(str::as_bytes))
                .map_err(|e| format!("lcloud {args:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "lcloud {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(out.stdout)
        };
        run(&["init", "--alias", "chaos"], None)?;
        let batch: String = (0..200)
            .map(|i| {
                format!(
                    "{{\"op\":\"set\",\"path\":\"/k{}\",\"value\":{{\"v\":{i},\"s\":\"value {i}\"}}}}\n",
                    i % 40
                )
            })
            .collect();
        run(&["batch"], Some(&batch))?;
        for i in 0..20 {
            run(&["incr", &format!("/n{}", i % 3)], None)?;
        }
        let root = run(&["root"], None)?;
        let clean = std::fs::read(good.join("store.redb")).map_err(|e| e.to_string())?;
        let bad = at.join("bad");
        Ok(CliStore {
            bin: bin.to_owned(),
            good,
            bad,
            clean,
            root,
        })
    }

    /// One bit flipped anywhere in the file, then `verify`, `set` and `root`, each on a fresh
    /// copy of the directory (a `set` that works would otherwise leave `signed-seq` ahead of
    /// the next copy): every one works (and a served root is the true one) or exits 1 with
    /// one line.
    fn flip_round(&self, rng: &mut Rng, report: &mut Report) {
        let at = rng.below(self.clean.len() as u64) as usize;
        let mut bytes = self.clean.clone();
        bytes[at] ^= 1 << rng.below(8);
        for args in [&["verify"][..], &["set", "/after", "1"], &["root"]] {
            let what = format!("a flipped bit at byte {at}, lcloud {}", args.join(" "));
            let copied = copy_dir(&self.good, &self.bad)
                .and_then(|()| std::fs::write(self.bad.join("store.redb"), &bytes));
            if let Err(e) = copied {
                report.failures.push(format!("{what}: cannot write: {e}"));
                return;
            }
            let out = match lcloud(&self.bin, &self.bad, args, None) {
                Ok(o) => o,
                Err(e) => {
                    report.failures.push(format!("{what}: cannot run: {e}"));
                    return;
                }
            };
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) if args == ["root"] && out.stdout != self.root => {
                    report.corrupt_accepted += 1;
                    report
                        .failures
                        .push(format!("{what}: served a different root"));
                }
                Some(0) => report.binary_commands.0 += 1,
                Some(1)
                    if err.starts_with("error: ")
                        && err.trim_end().lines().count() == 1
                        && !err.contains("panicked") =>
                {
                    report.binary_commands.1 += 1;
                    if !report.refusals.iter().any(|r| r.starts_with("binary")) {
                        report
                            .refusals
                            .push(format!("binary: {what}: {}", err.trim_end()));
                    }
                }
                code => report.failures.push(format!(
                    "{what}: exit {code:?} (a panic or an unclear error): {}",
                    err.lines().take(3).collect::<Vec<_>>().join(" | ")
                )),
            }
        }
    }
}
