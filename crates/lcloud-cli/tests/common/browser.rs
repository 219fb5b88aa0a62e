//! A real browser for the debugger's tests: headless Chromium over chromedriver
//! (`fantoccini`), skipped with the reason where it is not installed unless
//! `LCLOUD_REQUIRE_BROWSER` is set (CI sets it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as J, json};

/// A chromedriver process on a free port, killed by pid when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn driver_or_skip() -> Option<Driver> {
    let missing = ["chromedriver", "chromium"].into_iter().find(|b| {
        Command::new("which")
            .arg(b)
            .output()
            .map_or(true, |o| !o.status.success())
    });
    if let Some(b) = missing {
        let why =
            format!("{b} is not installed (Debian: apt-get install chromium chromium-driver)");
        if std::env::var_os("LCLOUD_REQUIRE_BROWSER").is_some() {
            panic!("LCLOUD_REQUIRE_BROWSER is set but {why}");
        }
        println!("SKIPPED: {why}");
        return None;
    }
    // A free port, taken by chromedriver a moment later: another process may take it first,
    // so a driver that exits, or a port that answers as something else, is tried again.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if driver.child.try_wait().unwrap().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Listening, and still running a moment later: the port is chromedriver's
                // (one that lost the port to another process exits at once).
                std::thread::sleep(Duration::from_millis(200));
                if driver.child.try_wait().unwrap().is_none() {
                    return Some(driver);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("chromedriver did not start on a free port in five tries");
}

pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]}),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// Clicks the element `css` selects.
pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Polls `check` (a script returning a value) until `done` holds for its result.
pub async fn until(c: &Client, script: &str, done: impl Fn(&J) -> bool, what: &str) -> J {
    let t = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.expect("the script runs");
        if done(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what}: last saw {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
