//! The storage tier's compaction rounds: a store with a final checkpoint is compacted by a
//! child process that is killed with `kill -9` at a random moment (loading, writing the new
//! file, renaming it, after). Pass criteria: the store reopens every time, with the root it
//! had, compacted or not (never half of each), and compacting it again then works.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_consensus::SigningKey;
use lcloud_core::{
    CHECKPOINT_EVERY, Cut, Experience, Genesis, Id, NodeId, Op, Path as DocPath, Replica, Value,
};
use lcloud_store::{Retain, Store};

use crate::storage::Report;

/// A store in `dir` of one member's 700 writes, attested: checkpoints at depths 256 and 512
/// are final. Returns its root.
pub(crate) fn seed(dir: &Path) -> Result<Id, String> {
    let key = SigningKey::from([9u8; 32]);
    let me = NodeId(key.verification_key().to_bytes());
    let genesis = Experience::create_genesis(&key, Genesis::members_only("compaction", Vec::new()));
    let mut r = Replica::new(genesis.clone()).map_err(|e| e.to_string())?;
    for i in 0..700u64 {
        let op = Op::Set {
            path: DocPath::from(vec!["k".into(), (i % 40).to_string()]),
            value: Value::Str(format!("{i:-<48}")),
        };
        r.write(&key, vec![op]).map_err(|e| e.to_string())?;
        if let Some(depth) = r.lattice().attestation_due(&me, CHECKPOINT_EVERY) {
            let cut = Cut::Clock(r.lattice().depth_cut(depth));
            let root = r.state_at(&cut).map_err(|e| e.to_string())?.root();
            r.write(&key, vec![Op::Attest { depth, root }])
                .map_err(|e| e.to_string())?;
        }
    }
    let mut store = Store::create(dir, &genesis).map_err(|e| e.to_string())?;
    let records: Vec<Vec<u8>> = r.lattice().iter().skip(1).map(|e| e.to_bytes()).collect();
    let refs: Vec<&[u8]> = records.iter().map(|x| x.as_slice()).collect();
    let mut local = store.load(&mut |_| {}).map_err(|e| e.to_string())?;
    store
        .import(&mut local, &refs, &mut |_| {})
        .map_err(|e| e.to_string())?;
    Ok(local.root())
}

/// The child of a compaction round: compacts the store in `dir` (it is killed meanwhile).
pub fn compactor_child(dir: &Path) -> ! {
    let mut store = Store::open(dir).expect("the store opens");
    let replica = store.load(&mut |_| {}).expect("the store loads");
    store
        .compact(&replica, Retain::Headers)
        .expect("the store compacts");
    std::process::exit(0)
}

/// One round: a copy of `seeded` (root `root`) compacted by a child killed after a random
/// delay, then reopened and compacted again.
pub(crate) fn round(
    exe: &Path,
    base: &Path,
    seeded: &Path,
    root: Id,
    delay_ms: u64,
    report: &mut Report,
) {
    let dir: PathBuf = base.join("compacting-store");
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = crate::storage::copy_dir(seeded, &dir) {
        report.failures.push(format!("cannot copy the store: {e}"));
        return;
    }
    let mut child = Command::new(exe)
        .arg("storage-compactor")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the compactor starts");
    std::thread::sleep(Duration::from_millis(delay_ms));
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    let reopened = Store::open(&dir).and_then(|s| {
        let r = s.load(&mut |_| {})?;
        let compacted = s.compaction_point()?.is_some();
        let persisted = s.state()?.root();
        Ok((s, r, compacted, persisted))
    });
    match reopened {
        Ok((mut store, replica, compacted, persisted)) => {
            report.compactions_killed[usize::from(compacted)] += 1;
            if finished && !compacted {
                report
                    .failures
                    .push("a compaction that finished left the store uncompacted".into());
            }
            if replica.root() != root || persisted != root {
                report.failures.push(format!(
                    "a store whose compaction was killed after {delay_ms} ms serves root {} (persisted {persisted}), not {root}",
                    replica.root()
                ));
                return;
            }
            // And it compacts (again) to the same root.
            match store
                .compact(&replica, Retain::Checkpoint)
                .and_then(|_| store.load(&mut |_| {}))
            {
                Ok(again) if again.root() == root => {}
                Ok(again) => report.failures.push(format!(
                    "compacting after a killed compaction gives root {}, not {root}",
                    again.root()
                )),
                Err(e) => report
                    .failures
                    .push(format!("compacting after a killed compaction: {e}")),
            }
        }
        Err(e) => report.failures.push(format!(
            "a store whose compaction was killed after {delay_ms} ms does not reopen: {e}"
        )),
    }
}
