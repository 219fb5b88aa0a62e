//! The node processes: started in their namespaces (on a tmpfs for the disk-full node, under
//! libfaketime for the skewed one), stopped by process id, and measured.

use super::*;

pub(super) struct Proc {
    pub(super) child: Option<Child>,
}

/// A tmpfs (root), unmounted when dropped.
pub(super) struct Tmpfs(pub(super) PathBuf);

/// Bytes of store per experience the disk-full node's tmpfs makes room for (its store file
/// measured ~1.3 KB per experience of the real tier's history, free pages included).
pub(super) const STORE_BYTES_PER_EXPERIENCE: u64 = 2048;

/// The disk-full node's tmpfs: room for the whole history the run will write (so that the disk
/// is full only when the harness fills it), and at least 64 MiB.
pub(super) fn tmpfs_mib(cfg: &Config) -> u64 {
    // Unpaced clients: assume 100 writes per second per node.
    let rate = if cfg.rate > 0.0 { cfg.rate } else { 100.0 };
    let experiences = rate * cfg.nodes as f64 * cfg.seconds as f64;
    64.max((experiences * STORE_BYTES_PER_EXPERIENCE as f64 / f64::from(1 << 20)).ceil() as u64)
}

impl Tmpfs {
    pub(super) fn mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let p = at.to_str().ok_or("utf-8 path")?;
        run_cmd(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", p],
        )?;
        Ok(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(p) = self.0.to_str() {
            let _ = run_cmd("umount", &["-l", p]);
        }
    }
}

/// Copies a directory's files (not subdirectories).
pub(super) fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().map_err(|e| e.to_string())?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Writes zeros to `path` until the file system is full.
pub(super) fn fill(path: &Path) {
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

impl Proc {
    /// Stops the node cleanly (SIGCONT in case it is paused, then SIGTERM) and waits for it.
    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            for sig in ["-CONT", "-TERM"] {
                let _ = Command::new("kill")
                    .args([sig, &c.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.wait();
        }
    }
}

/// A new fault before the open heals were measured: their times are not known.
impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// libfaketime (Debian's `faketime` package), for clock skew.
pub(super) fn faketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("faketime/libfaketimeMT.so.1"))
    .find(|p| p.exists())
}

/// The skew a skewed node runs with: two hours behind, and its clock 1.5× fast (so its
/// timers, timeouts and intervals all run short).
pub(super) const SKEW: &str = "-2h x1.5";

pub(super) fn start(cfg: &Config, net: &Net, dir: &Path, i: usize, skew: Option<&Path>) -> Proc {
    let subnet = subnet_of_run();
    let mut cmd = Command::new("ip");
    if let Some(lib) = skew {
        // `ip netns exec` execs the node, which keeps the environment (and the pid).
        cmd.env("LD_PRELOAD", lib).env("FAKETIME", SKEW);
    }
    cmd.args(["netns", "exec", &net.ns(i)])
        .arg(&cfg.lcloud)
        .arg("--dir")
        .arg(dir)
        .args(["node", "run", "--sync-every", "0.5"])
        .args(if COMPACTING.contains(&i) {
            &["--retain", "checkpoint"][..]
        } else {
            &[]
        })
        .args(["--api", &format!("0.0.0.0:{API_PORT}")])
        .args(["--listen", &format!("/ip4/{subnet}.{i}/tcp/{P2P_PORT}")])
        .env_remove("LCLOUD_DIR")
        .env_remove("LCLOUD_NODE")
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("LCLOUD_CHAOS_LOGS") {
            // Each node's log (RUST_LOG applies), appended across restarts.
            Some(d) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&d).join(format!("n{i}.log")))
                .map_or(Stdio::null(), Stdio::from),
            None => Stdio::null(),
        });
    for j in 1..=cfg.nodes {
        if j != i {
            cmd.args(["--peer", &format!("/ip4/{subnet}.{j}/tcp/{P2P_PORT}")]);
        }
    }
    crate::tokens::register(&format!("{subnet}.{i}:{API_PORT}"), dir);
    Proc {
        child: Some(cmd.spawn().expect("the node starts")),
    }
}

pub(super) fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The node process's own pid (the child is `ip netns exec`, which execs into lcloud, so it is
/// the same process).
pub(super) fn pid(p: &Proc) -> Option<u32> {
    p.child.as_ref().map(Child::id)
}
