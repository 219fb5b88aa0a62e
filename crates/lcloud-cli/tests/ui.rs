//! The time-travel debugger (`/ui`) in a real browser: headless Chromium over chromedriver,
//! against a real `lcloud node run`, checked against what the CLI prints on the same store.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them and sets
//! `LCLOUD_REQUIRE_BROWSER` so that the test fails rather than skips there). Elsewhere, without
//! them, the test prints why and does nothing else. It saves a screenshot to
//! `target/ui.png` (`LCLOUD_UI_SCREENSHOT=FILE` to put it elsewhere: `docs/ui.png` is one).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{browser, click, driver_or_skip, until};
use common::cli_node::{Node, copy_dir, partition_story};
use common::procs::NodeProc;
use fantoccini::Locator;
use serde_json::{Value as J, json};

#[tokio::test(flavor = "multi_thread")]
async fn the_debugger_shows_the_history_the_cli_shows() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let (a, bob) = partition_story();
    // The node serves a copy of Alice's store; the page gets a read token.
    let served = copy_dir(&a);
    let read: J = serde_json::from_str(&common::ok(
        served.path(),
        &[
            "--json", "token", "create", "--scope", "read", "--name", "ui",
        ],
    ))
    .unwrap();
    let token = read["token"].as_str().unwrap().to_owned();
    let node = NodeProc::start(served.path(), &[]);
    let c = browser(&driver).await;
    c.goto(&format!("{}/ui#token={token}", node.api))
        .await
        .unwrap();

    // The lattice: the genesis and seven writes, in two lanes.
    let drawn = until(
        &c,
        "return [document.querySelectorAll('#rows tr.row').length, new Set([...document.querySelectorAll('#edges circle')].map(e => e.getAttribute('cx'))).size]",
        |v| v[0] == 8,
        "eight experiences drawn",
    )
    .await;
    assert_eq!(drawn[1], 2, "one lane per node");
    // The token left the address (it stays in the tab's session storage only).
    assert!(!c.current_url().await.unwrap().as_str().contains("token"));
    // The rows are the log the CLI prints, newest first.
    let log = a.json(&["log"]);
    let ids: Vec<String> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let shown = c
        .execute(
            "return [...document.querySelectorAll('#rows tr.row')].map(r => r.dataset.id)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(ids));

    // Clicking the last experience before the partition shows the state the CLI prints at its
    // clock.
    let alice = a.ok(&["id"]);
    let alice3 = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["seq"] == 3 && r["author"] == json!(alice))
        .expect("alice's seq 3")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    click(&c, &format!("#rows tr[data-id='{alice3}']")).await;
    let state = until(
        &c,
        "const t = document.getElementById('tree').dataset.state; return t ? JSON.parse(t) : null",
        |v| !v.is_null() && v.get("w").is_none() && v.get("v").is_some(),
        "the state at alice:3",
    )
    .await;
    assert_eq!(state, a.json(&["state", "--at", "alice:3"]));
    assert_eq!(state, json!({"v": 2}));

    // A second cut (Shift+click on the newest) shows the diff `lcloud diff` prints.
    c.execute(
        "document.querySelector('#rows tr.row').dispatchEvent(new MouseEvent('click', {bubbles: true, shiftKey: true}))",
        vec![],
    )
    .await
    .unwrap();
    let diff = until(
        &c,
        "return [...document.querySelectorAll('#diff tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
        "the diff",
    )
    .await;
    let cli = a.json(&["diff", &format!("@{alice3}"), &format!("@{}", ids[0])]);
    let show = |v: &J| {
        if v.is_null() {
            "—".to_owned()
        } else {
            v.to_string()
        }
    };
    let want: Vec<J> = cli["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| json!([ch["path"], show(&ch["before"]), show(&ch["after"])]))
        .collect();
    assert_eq!(diff, json!(want));

    // Attribution: the register both wrote, its winner and the value it won over, each
    // linking to its experience.
    click(&c, "#now").await;
    let leaf = until(
        &c,
        "const l = document.querySelector('#tree .leaf[data-path=\"/t\"]'); return l ? l.textContent : null",
        |v| v.is_string(),
        "the /t leaf now",
    )
    .await;
    assert!(leaf.as_str().unwrap().contains("from"));
    click(&c, "#tree .leaf[data-path='/t']").await;
    let who = until(
        &c,
        "return [...document.querySelectorAll('#who a')].map(a => a.dataset.id)",
        |v| v.as_array().is_some_and(|a| a.len() == 2),
        "who wrote /t",
    )
    .await;
    let conflicts = a.json(&["conflicts", "/t"]);
    let writers: Vec<&J> = conflicts["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["experience"])
        .collect();
    assert_eq!(who, json!(writers));
    // Each links to its experience in the lattice: the value that lost, there and focused.
    click(&c, "#who a").await;
    until(
        &c,
        "return document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.id : null",
        |v| v == &who[0],
        "the lost value's experience focused in the lattice",
    )
    .await;

    // The keyboard: the first row, two down, Enter picks that cut.
    c.execute("document.querySelector('#rows tr.row').focus()", vec![])
        .await
        .unwrap();
    let row = c.active_element().await.unwrap();
    row.send_keys("\u{E015}").await.unwrap(); // ArrowDown
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E015}")
        .await
        .unwrap();
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap(); // Enter
    until(
        &c,
        "return document.getElementById('cut-label').textContent",
        |v| v.as_str().is_some_and(|s| s.contains(&ids[2][..8])),
        "the third row's cut picked from the keyboard",
    )
    .await;

    // A view the CLI has: without Bob.
    c.find(Locator::Css("#without"))
        .await
        .unwrap()
        .select_by_label(&bob)
        .await
        .unwrap();
    click(&c, "#cut button[type=submit]").await;
    let without = until(
        &c,
        "const t = document.getElementById('tree').dataset.state; const s = t ? JSON.parse(t) : null; return s && !('w' in s) ? s : null",
        |v| !v.is_null(),
        "the state without bob",
    )
    .await;
    assert_eq!(without, a.json(&["state", "--without", &bob]));

    // A typed clock, and what a node had seen: as the CLI prints them.
    c.find(Locator::Css("#without"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    let seen = format!("{bob}@1");
    for (field, text, args) in [
        ("#at", "alice:2", ["state", "--at", "alice:2"]),
        (
            "#seen-by",
            seen.as_str(),
            ["state", "--seen-by", seen.as_str()],
        ),
    ] {
        for f in ["#at", "#seen-by"] {
            c.find(Locator::Css(f))
                .await
                .unwrap()
                .clear()
                .await
                .unwrap();
        }
        c.find(Locator::Css(field))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
        click(&c, "#cut button[type=submit]").await;
        let want = a.json(&args);
        let got = until(
            &c,
            &format!(
                "const t = document.getElementById('tree').dataset.state; return t && JSON.stringify(JSON.parse(t)) === JSON.stringify({want}) ? JSON.parse(t) : null"
            ),
            |v| !v.is_null(),
            &format!("the state for {field} {text}"),
        )
        .await;
        assert_eq!(got, want);
    }

    // Only Bob's chain in the lattice, then every node's again.
    let only = |who: String| {
        let c = &c;
        async move {
            c.find(Locator::Css("#only"))
                .await
                .unwrap()
                .select_by_label(&who)
                .await
                .unwrap();
        }
    };
    only(bob.clone()).await;
    let chain = until(
        &c,
        "return [...document.querySelectorAll('#rows tr.row')].map(r => r.cells[2].textContent)",
        |v| v.as_array().is_some_and(|a| a.len() == 2),
        "bob's chain alone",
    )
    .await;
    assert_eq!(chain, json!([bob, bob]));
    only("(every node)".to_owned()).await;
    until(
        &c,
        "return document.querySelectorAll('#rows tr.row').length",
        |v| v == 8,
        "every node's history again",
    )
    .await;

    // Live: a write to the node appears in the lattice without a reload, the place kept.
    let t = Instant::now();
    node.cli(&["set", "/live", "1"])
        .expect("a write to the node");
    until(
        &c,
        "return document.querySelectorAll('#rows tr.row').length",
        |v| v == 9,
        "the new experience drawn",
    )
    .await;
    println!(
        "a live write appeared in the lattice {:.0} ms after the write command started",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Accessible basics: the lattice is a table with a caption and column headers, its rows
    // reachable by keyboard; the graph has a text alternative in the rows themselves.
    let a11y = c
        .execute(
            "const t = document.getElementById('lattice'); return [!!t.caption, t.tHead.querySelectorAll('th[scope=col]').length, document.querySelectorAll('#rows tr.row[tabindex]').length]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(a11y, json!([true, 6, 9]));

    let shot = c.screenshot().await.unwrap();
    let file = std::env::var_os("LCLOUD_UI_SCREENSHOT").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui.png"),
        std::path::PathBuf::from,
    );
    std::fs::write(&file, shot).unwrap();
    c.close().await.unwrap();
}

/// `lcloud ui` serves the page and reads with a read token it prints in the page's address,
/// opens that address with the browser $BROWSER names, writes nothing (not even the
/// attestation a member owes at depth 256), refuses every write, and revokes its token when
/// it stops.
#[test]
fn lcloud_ui_serves_reads_only_and_revokes_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let a = Node::new();
    a.ok(&["init", "--alias", "alice", "--cloud", "ui"]);
    // Past the depth at which a member attests a checkpoint.
    a.write_many(300);
    let root = a.root();
    // The "browser": a program that writes down the address it was asked to open.
    let scratch = tempfile::tempdir().unwrap();
    let opened = scratch.path().join("opened");
    let browser = scratch.path().join("browser");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\necho \"$1\" > {}.part && mv {0}.part {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lcloud"))
        .arg("--dir")
        .arg(a.path())
        .arg("ui")
        .env("BROWSER", &browser)
        .env_remove("LCLOUD_DIR")
        .env_remove("LCLOUD_NODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut running = common::Running(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let (page, token) = loop {
        let line = lines
            .next()
            .expect("lcloud ui prints the page's address")
            .unwrap();
        assert!(
            !line.starts_with("p2p "),
            "a read-only node listens to no peer: {line}"
        );
        if let Some(url) = line.strip_prefix("ui ") {
            let (page, token) = url
                .split_once("#token=")
                .expect("the address carries a token");
            break (page.to_owned(), token.to_owned());
        }
    };
    let t = Instant::now();
    while !opened.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no browser started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = std::fs::read_to_string(&opened).unwrap();
    assert_eq!(asked.trim_end(), format!("{page}#token={token}"));
    let api = page
        .trim_start_matches("http://")
        .trim_end_matches("/ui")
        .to_owned();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    // The page itself needs no token; its reads take the printed one.
    let (status, html) = common::request(&api, "GET", "/ui", "", "");
    assert_eq!(status, 200);
    assert!(html.contains("time-travel debugger"));
    let (status, body) = common::request(&api, "GET", "/api/state?path=/n", &bearer, "");
    assert_eq!((status, body.as_str()), (200, "299"));
    let (status, _) = common::request(&api, "GET", "/api/log?limit=5", &bearer, "");
    assert_eq!(status, 200);
    // Writes: the read token may not; the admin token may, but the node refuses.
    let write = r#"{"ops":[{"op":"set","path":"/x","value":1}]}"#;
    let (status, _) = common::request(&api, "POST", "/api/ops", &bearer, write);
    assert_eq!(status, 403);
    let admin = std::fs::read_to_string(a.path().join("admin.token")).unwrap();
    let admin = format!("Authorization: Bearer {}\r\n", admin.trim());
    let (status, body) = common::request(&api, "POST", "/api/ops", &admin, write);
    assert!(
        status == 422 && body.contains("reads only"),
        "{status} {body}"
    );
    // Stopped cleanly (SIGTERM): nothing was written, and the page's token is revoked.
    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    running.0.wait().unwrap();
    assert_eq!(a.root(), root, "the store is as it was");
    let log: J = serde_json::from_str(&a.ok(&["--json", "log", "--limit", "1"])).unwrap();
    assert_eq!(log["log"][0]["seq"], 301, "no attestation was written");
    let tokens: J = serde_json::from_str(&a.ok(&["--json", "token", "list"])).unwrap();
    let ui: Vec<&J> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "ui")
        .collect();
    assert_eq!(ui.len(), 1);
    assert_eq!(ui[0]["revoked"], true, "{tokens}");
}

/// Finality and contracts in the page: a member's node attests the checkpoint at depth 256
/// (the only member: it is final at once), the page marks what lies below it final and draws
/// the checkpoint; a contract's state is shown with who set each key, and the call the fold
/// rejected is marked with why.
#[tokio::test(flavor = "multi_thread")]
async fn the_debugger_shows_final_checkpoints_and_contracts() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let a = Node::new();
    a.ok(&["init", "--alias", "alice", "--cloud", "final"]);
    let wasm = a.path().join("bank.wasm");
    std::fs::write(&wasm, lcloud_examples::BANK).unwrap();
    a.ok(&[
        "contract",
        "deploy",
        wasm.to_str().unwrap(),
        "--name",
        "bank",
    ]);
    a.ok(&["call", "bank", "mint", r#"{"to":"ann","amount":10}"#]);
    let refused = a.run(&[
        "call",
        "bank",
        "transfer",
        r#"{"from":"ann","to":"bo","amount":70}"#,
    ]);
    assert!(!refused.status.success(), "the transfer is rejected");
    a.write_many(300);
    let node = NodeProc::start(a.path(), &[]);
    let admin = std::fs::read_to_string(a.path().join("admin.token")).unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", admin.trim());
    let api = node.api.trim_start_matches("http://").to_owned();
    let t = Instant::now();
    let depth = loop {
        let (_, body) = common::request(&api, "GET", "/api/status", &auth, "");
        let s: J = serde_json::from_str(&body).unwrap();
        if let Some(d) = s["finality"]["final_checkpoint"]["depth"].as_u64() {
            break d;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no final checkpoint: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let c = browser(&driver).await;
    c.goto(&format!("{}/ui#token={}", node.api, admin.trim()))
        .await
        .unwrap();
    let rows = until(
        &c,
        "return document.querySelectorAll('#rows tr.row').length",
        |v| v.as_u64().is_some_and(|n| n > 30),
        "the history drawn",
    )
    .await;
    assert!(
        rows.as_u64().unwrap() < 304,
        "only what is on screen is drawn: {rows}"
    );
    // The checkpoint: scroll to the first row at or below its depth.
    let line = until(
        &c,
        &format!(
            "const k = S.rows.findIndex(r => r.depth <= {depth}); document.getElementById('scroller').scrollTop = k * 24; render();
             const l = document.querySelector('#edges line.checkpoint'); const row = document.querySelector('#rows tr[data-i=\"' + k + '\"]');
             return l && row ? [Number(l.dataset.depth), row.dataset.status, S.rows[k - 1].depth > {depth}] : null"
        ),
        |v| !v.is_null(),
        "the final checkpoint drawn",
    )
    .await;
    assert_eq!(line, json!([depth, "final", true]));
    // The newest experiences, above the checkpoint, are not final.
    let top = c
        .execute(
            "document.getElementById('scroller').scrollTop = 0; render(); return document.querySelector('#rows tr.row').dataset.status",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(top, json!("final"));
    // The contract and its state; the rejected call, with why.
    let ann = until(
        &c,
        "const l = document.querySelector('#contracts .leaf[data-path=\"/balance~1ann\"]'); return l ? l.textContent : null",
        |v| v.is_string(),
        "the bank's state",
    )
    .await;
    assert_eq!(ann, json!("balance/ann: \"10\""));
    // Who set it: the mint, the only change; the refused transfer is not among them. The
    // page lists the changes the node's writes route answers, linked to their experiences.
    let (_, writes) = common::request(
        &api,
        "GET",
        "/api/contracts/bank/writes?key=balance%2Fann",
        &auth,
        "",
    );
    let writes: J = serde_json::from_str(&writes).unwrap();
    let mint = writes["changes"][0]["experience"].clone();
    assert_eq!(writes["changes"].as_array().unwrap().len(), 1, "{writes}");
    c.execute(
        "const l = document.querySelector('#contracts .leaf[data-path=\"/balance~1ann\"]'); l.closest('details').open = true; l.click();",
        vec![],
    )
    .await
    .unwrap();
    let who = until(
        &c,
        "const a = [...document.querySelectorAll('#who a')]; return a.length ? [a.map(a => a.dataset.id), document.getElementById('who').textContent] : null",
        |v| !v.is_null(),
        "who set balance/ann",
    )
    .await;
    assert_eq!(who[0], json!([mint]));
    let text = who[1].as_str().unwrap();
    assert!(
        text.starts_with("shown: ") && text.ends_with("mint by alice: \"10\""),
        "{text}"
    );
    // The contract's state at a past cut, with the state pane: just after the deploy
    // (alice:2) its init's minter and no balance yet; before it (alice:1), no contract.
    for (clock, has, lacks) in [
        ("alice:2", "minter", "balance/ann"),
        ("alice:1", "was not deployed at that cut", "minter"),
    ] {
        let at = c.find(Locator::Css("#at")).await.unwrap();
        at.clear().await.unwrap();
        at.send_keys(clock).await.unwrap();
        click(&c, "#cut button[type=submit]").await;
        until(
            &c,
            "const d = document.querySelector('#contracts details'); return d ? d.textContent : null",
            |v| v.as_str().is_some_and(|t| t.contains(has) && !t.contains(lacks)),
            &format!("the bank at {clock}"),
        )
        .await;
    }
    let why = until(
        &c,
        "const k = S.rows.findIndex(r => r.rejected.length); if (k < 0) return null; document.getElementById('scroller').scrollTop = k * 24; render();
         const m = document.querySelector('#rows tr[data-i=\"' + k + '\"] .rejected'); return m ? m.textContent : null",
        |v| v.is_string(),
        "the rejected call marked",
    )
    .await;
    assert!(
        why.as_str().unwrap().contains("insufficient funds"),
        "{why}"
    );

    // Readable contrast: every kind of text on the page against its white background, at
    // least WCAG's 4.5:1 (the dots, graphics, at least 3:1).
    let ratios = c
        .execute(
            "const lum = (css) => { const [r, g, b] = css.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(v => v / 255)
                 .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
             const ratio = (css) => 1.05 / (lum(css) + 0.05);
             const text = ['#node', '.hint', '#rows tr.row td', '#rows .rejected', '#lattice span.final', '#contracts summary a', 'h2', 'label']
               .map(s => [s, document.querySelector(s)]).filter(([, e]) => e).map(([s, e]) => [s, ratio(getComputedStyle(e).color)]);
             const fills = new Set();
             for (const top of [0, S.rows.length * 24]) {
               document.getElementById('scroller').scrollTop = top; render();
               document.querySelectorAll('#edges circle').forEach(e => fills.add(e.getAttribute('fill')));
             }
             const dots = [...fills]
               .map(hex => ['dot ' + hex, ratio('rgb(' + [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16)).join(',') + ')')]);
             return [text, dots];",
            vec![],
        )
        .await
        .unwrap();
    let (text, dots) = (ratios[0].as_array().unwrap(), ratios[1].as_array().unwrap());
    assert!(text.len() >= 7, "text to check: {text:?}");
    for r in text {
        assert!(
            r[1].as_f64().unwrap() >= 4.5,
            "contrast of {} is {}",
            r[0],
            r[1]
        );
    }
    assert!(dots.len() >= 2, "{dots:?}");
    for r in dots {
        assert!(
            r[1].as_f64().unwrap() >= 3.0,
            "contrast of {} is {}",
            r[0],
            r[1]
        );
    }

    // Live, far down the history: a new experience arrives at the top, and the row the reader
    // was looking at stays where it was.
    let anchor = c
        .execute(
            "const sc = document.getElementById('scroller'); sc.scrollTop = 150 * 24; render();
             return [S.rows.length, S.rows[Math.floor(sc.scrollTop / 24)].id]",
            vec![],
        )
        .await
        .unwrap();
    let (status, body) = common::request(
        &api,
        "POST",
        "/api/ops",
        &auth,
        r#"{"ops":[{"op":"set","path":"/late","value":1}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let after = until(
        &c,
        "const sc = document.getElementById('scroller'); return [S.rows.length, S.rows[Math.floor(sc.scrollTop / 24)].id]",
        |v| v[0].as_u64() > anchor[0].as_u64(),
        "the new experience loaded",
    )
    .await;
    assert_eq!(after[1], anchor[1], "the reader's place moved");
    c.close().await.unwrap();
}

/// A fork in the page: Bob signs two experiences at one seq (from a restored copy of his
/// directory); both are marked, and the fork proof the CLI lists is shown.
#[tokio::test(flavor = "multi_thread")]
async fn the_debugger_marks_forks_with_their_proof() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let a = Node::new();
    a.ok(&["init", "--open", "--alias", "alice", "--cloud", "forks"]);
    let b = Node::new();
    let file = a.bundle("genesis.bundle");
    b.ok(&["join", file.to_str().unwrap(), "--alias", "bob"]);
    b.ok(&["set", "/v", "1"]);
    // A copy of Bob's store and key, without the guard that remembers what he signed.
    let backup = tempfile::tempdir().unwrap();
    for f in ["store.redb", "identity.key"] {
        std::fs::copy(b.path().join(f), backup.path().join(f)).unwrap();
    }
    b.ok(&["set", "/v", "2"]);
    common::ok(backup.path(), &["set", "/v", "\"other\""]);
    let other = backup.path().join("other.bundle");
    common::ok(backup.path(), &["export", other.to_str().unwrap()]);
    a.import(&b.bundle("b.bundle"));
    a.import(&other);
    let forks = a.json(&["forks"]);
    assert_eq!(forks["forks"][0]["valid"], true, "{forks}");
    let header = forks["forks"][0]["a"]["header"]
        .as_str()
        .unwrap()
        .to_owned();
    let served = copy_dir(&a);
    let node = NodeProc::start(served.path(), &[]);
    let admin = std::fs::read_to_string(served.path().join("admin.token")).unwrap();
    // The proof the node serves holds the signed headers the CLI lists.
    let (_, listed) = common::request(
        node.api.trim_start_matches("http://"),
        "GET",
        "/api/forks",
        &format!("Authorization: Bearer {}\r\n", admin.trim()),
        "",
    );
    let listed: J = serde_json::from_str(&listed).unwrap();
    let proof = listed[0]["proof"].as_str().unwrap().to_owned();
    assert!(proof.contains(&header), "{listed}");
    let c = browser(&driver).await;
    c.goto(&format!("{}/ui#token={}", node.api, admin.trim()))
        .await
        .unwrap();
    let marked = until(
        &c,
        "return [...document.querySelectorAll('#rows tr.row')].filter(r => r.querySelector('.fork')).map(r => r.cells[3].textContent)",
        |v| v.as_array().is_some_and(|a| a.len() == 2),
        "the two experiences at the forked seq marked",
    )
    .await;
    assert_eq!(marked, json!(["2", "2"]));
    let shown = until(
        &c,
        "const c = document.querySelector('#forks code'); return c ? [c.textContent, document.getElementById('forks').textContent] : null",
        |v| !v.is_null(),
        "the fork proof listed",
    )
    .await;
    assert_eq!(shown[0], json!(format!("{}…", &proof[..32])));
    assert!(shown[1].as_str().unwrap().contains("at seq 2"), "{shown}");
    c.close().await.unwrap();
}

/// The demo's own story (three daemons, a partition, the heal) in the page `lcloud demo
/// --keep` leaves running: three lanes, every experience, and the state at the clock the demo
/// printed before the partition equal to what the node answers the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn the_debugger_draws_the_demos_partition_story() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let demo = common::kept_demo(&base.path().join("demo"));
    let text = &demo.text;
    let before = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("the vector clock now: "))
        .expect("the clock before the partition")
        .to_owned();
    let (page, api, token) = (&demo.page, &demo.api, &demo.token);
    let cli = |args: &[&str]| -> J {
        let out = Command::new(env!("CARGO_BIN_EXE_lcloud"))
            .args(["--node", api, "--json"])
            .args(args)
            .env("LCLOUD_TOKEN", token)
            .env_remove("LCLOUD_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let log = cli(&["log"]);
    let ids: Vec<&J> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    let c = browser(&driver).await;
    c.goto(page).await.unwrap();
    let drawn = until(
        &c,
        "return [[...document.querySelectorAll('#rows tr.row')].map(r => r.dataset.id), new Set([...document.querySelectorAll('#edges circle')].map(e => e.getAttribute('cx'))).size]",
        |v| v[0].as_array().is_some_and(|a| a.len() == ids.len()),
        "the demo's history drawn",
    )
    .await;
    assert_eq!(drawn[0], json!(ids));
    assert_eq!(drawn[1], 3, "alice, bob and carol: three lanes");
    let at = c.find(Locator::Css("#at")).await.unwrap();
    at.send_keys(&before).await.unwrap();
    click(&c, "#cut button[type=submit]").await;
    let want = cli(&["state", "--at", &before]);
    let got = until(
        &c,
        &format!(
            "const t = document.getElementById('tree').dataset.state; return t && JSON.stringify(JSON.parse(t)) === JSON.stringify({want}) ? JSON.parse(t) : null"
        ),
        |v| !v.is_null(),
        "the state before the partition",
    )
    .await;
    assert_eq!(got, want);
    assert_ne!(
        got,
        cli(&["state"]),
        "the partition changed the state since"
    );
    c.close().await.unwrap();
}
