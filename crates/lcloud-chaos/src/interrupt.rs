//! Stopping on SIGINT or SIGTERM. The harness finishes the step it is in, stops everything it
//! started (processes by id, namespaces, links, the tmpfs, its directories) and exits non-zero;
//! a second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether a signal asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Sleeps for `d`, or less if the run is interrupted meanwhile.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while !interrupted() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Watches for SIGINT and SIGTERM on a thread of its own.
pub fn install() {
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the signal watcher");
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    eprintln!("cannot watch for signals: an interrupted run may leave what it started");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if INTERRUPTED.swap(true, Ordering::SeqCst) {
                        eprintln!("interrupted again: exiting at once");
                        std::process::exit(130);
                    }
                    eprintln!(
                        "interrupted: stopping everything this run started (a second signal exits at once)"
                    );
                }
            });
        });
    if watcher.is_err() {
        eprintln!("cannot watch for signals: an interrupted run may leave what it started");
    }
}
