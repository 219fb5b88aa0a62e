//! The attack suite: hostile peers against real `lcloud node run` processes on loopback.
//!
//! The attacker is this harness speaking libp2p itself (TCP, Noise, Yamux, the sync protocol)
//! with raw bytes, so it can send what no honest node would: forged and malformed experiences,
//! broken frames, replays, equivocations, tampered and withheld chains, and floods of garbage
//! connections. Each attack is one check with a pass/fail verdict; [`run`] runs them all.
//!
//! The clouds are member-only: the attacker's identities are members (an insider, the worst
//! case), except where the attack is about a non-member. A node bans a peer at 100 points (25
//! per invalid experience or frame), so an attacker that wants to go on must come back under a
//! new member identity: the suite has 600 of them.

mod clients;
mod contracts;
mod membership;
mod tokens;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ed25519_consensus::SigningKey;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use lcloud_core::codec::ByteBuf;
use lcloud_core::sync::{MESSAGE_BYTES_MAX, Request, Response, Summary};
use lcloud_core::{Draft, Experience, Id, NodeId, Op, Path as DocPath, Replica, Value, Verified};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

/// Member identities the attacker holds (each banned one is replaced by the next).
const ATTACKER_KEYS: usize = 600;
/// A node's ban threshold over the points of one invalid frame or experience.
const FRAMES_PER_IDENTITY: usize = 4;

/// How to run the suite.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `lcloud` binary.
    pub lcloud: PathBuf,
    /// Only the attacks whose name contains this.
    pub only: Option<String>,
    /// The rejection rate the hostile-frames attack must reach: the issue's target (5 000/s)
    /// for `attacks` and `soak`; 0 in the CI tier, which reports the rate it measured (speed
    /// targets live in benchmarks, and a busy CI machine must not fail a correct build).
    pub min_rejections_per_s: f64,
}

/// One attack's verdict.
#[derive(Debug)]
pub struct Verdict {
    /// The attack.
    pub name: &'static str,
    /// What it measured (`Ok`), or what failed.
    pub result: Result<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Processes and HTTP.

/// A running `lcloud node run`, stopped (SIGKILL, then reaped) when dropped.
struct Node {
    child: Child,
    api: String,
    p2p: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn rss_mib(&self) -> f64 {
        proc_kib(self.pid(), "VmRSS:") / 1024.0
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let (code, body) = http(&self.api, "GET", path, b"")?;
        if code != 200 {
            return Err(format!("GET {path}: HTTP {code}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    fn status(&self) -> Result<serde_json::Value, String> {
        self.get("/api/status")
    }

    fn write(&self, value: i64) -> Result<(), String> {
        write_to(&self.api, value)
    }

    fn isolate(&self, on: bool) -> Result<(), String> {
        let body = format!(r#"{{"on":{on}}}"#);
        match http(&self.api, "POST", "/debug/isolate", body.as_bytes())? {
            (200, _) => Ok(()),
            (code, _) => Err(format!("isolate: HTTP {code}")),
        }
    }

    fn bundle(&self) -> Result<Vec<u8>, String> {
        match http(&self.api, "GET", "/api/bundle", b"")? {
            (200, b) => Ok(b),
            (code, _) => Err(format!("bundle: HTTP {code}")),
        }
    }

    /// `/metrics`, as text.
    fn metrics_text(&self) -> Result<String, String> {
        let (code, body) = http(&self.api, "GET", "/metrics", b"")?;
        if code != 200 {
            return Err(format!("metrics: HTTP {code}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `lcloud_rejected_total` by reason.
    fn rejected(&self) -> Result<BTreeMap<String, u64>, String> {
        let text = self.metrics_text()?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("lcloud_rejected_total{reason=\"")
                && let Some((reason, n)) = rest.split_once("\"} ")
            {
                out.insert(reason.to_owned(), n.trim().parse().unwrap_or(0));
            }
        }
        Ok(out)
    }

    fn peer_id(&self) -> Result<PeerId, String> {
        let id = self.p2p.rsplit('/').next().unwrap_or_default();
        id.parse().map_err(|e| format!("peer id {id}: {e}"))
    }
}

/// One honest write (an add to `/honest`) through a node's API.
fn write_to(api: &str, value: i64) -> Result<(), String> {
    let body = format!(r#"{{"ops":[{{"op":"add","path":"/honest","value":{value}}}]}}"#);
    match http(api, "POST", "/api/ops", body.as_bytes())? {
        (200, _) => Ok(()),
        (code, b) => Err(format!(
            "write: HTTP {code} {}",
            String::from_utf8_lossy(&b)
        )),
    }
}

fn proc_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// One HTTP/1.1 request (`Connection: close`): status and body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{method} {path}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
        crate::tokens::header(addr),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no HTTP header"))?;
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status"))?;
    let mut body = out[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| format!("{method} {path}: bad chunked body"))?;
    }
    Ok((code, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The harness's clouds and nodes, in a temporary directory removed at the end.
struct Lab {
    lcloud: PathBuf,
    base: PathBuf,
    next: usize,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Lab {
    fn new(lcloud: &Path) -> Lab {
        let base = std::env::temp_dir().join(format!("lcloud-chaos-attack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        Lab {
            lcloud: lcloud.to_owned(),
            base,
            next: 0,
        }
    }

    fn lcloud(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.lcloud)
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .output()
            .map_err(|e| format!("{}: {e}", self.lcloud.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "lcloud {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A member-only cloud of `n` honest nodes, whose members also include `extra`: the
    /// nodes' directories (the first created the cloud) and the genesis.
    fn cloud(
        &mut self,
        n: usize,
        extra: &[NodeId],
    ) -> Result<(Vec<PathBuf>, Verified<Experience>), String> {
        self.next += 1;
        let root = self.base.join(format!("cloud{}", self.next));
        let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("n{i}"))).collect();
        let mut ids = Vec::new();
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            ids.push(self.lcloud(d, &["id"])?);
        }
        let mut args: Vec<String> = vec!["init".into(), "--cloud".into(), "attacks".into()];
        for id in ids[1..]
            .iter()
            .cloned()
            .chain(extra.iter().map(NodeId::to_hex))
        {
            args.push("--member".into());
            args.push(id);
        }
        if n == 1 && extra.is_empty() {
            // No one else to list: an open cloud (the attacks that need one say so).
            args.push("--open".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.lcloud(&dirs[0], &args)?;
        let bundle = root.join("genesis.bundle");
        let b = bundle.to_str().ok_or("utf-8 path")?;
        self.lcloud(&dirs[0], &["export", b])?;
        for d in &dirs[1..] {
            self.lcloud(d, &["join", b])?;
        }
        let bytes = std::fs::read(&bundle).map_err(|e| e.to_string())?;
        let decoded = lcloud_store::bundle::decode(&bytes).map_err(|e| e.to_string())?;
        let genesis = lcloud_core::validate(decoded.records[0], &decoded.cloud)
            .map_err(|e| format!("genesis: {e}"))?;
        Ok((dirs, genesis))
    }

    /// Starts a node on loopback (any free ports) and waits for its API.
    fn start(&self, dir: &Path, peers: &[&str]) -> Result<Node, String> {
        self.start_with(dir, peers, &[])
    }

    /// [`Lab::start`] with more options for `lcloud node run`.
    fn start_with(&self, dir: &Path, peers: &[&str], extra: &[&str]) -> Result<Node, String> {
        let mut cmd = Command::new(&self.lcloud);
        cmd.arg("--dir")
            .arg(dir)
            .args(["node", "run", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--api", "127.0.0.1:0", "--sync-every", "0.5"])
            // The attacks cut nodes off their peers through the isolation switch.
            .arg("--debug-api")
            .env_remove("LCLOUD_DIR")
            .env_remove("LCLOUD_NODE")
            .stdout(Stdio::piped());
        // LCLOUD_CHAOS_LOGS=DIR keeps each node's log (at info) there, to see why an attack
        // failed; otherwise only errors, thrown away.
        match std::env::var_os("LCLOUD_CHAOS_LOGS") {
            Some(logs) => {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let path = Path::new(&logs).join(format!("{name}.{}.log", std::process::id()));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                cmd.env("RUST_LOG", "info").stderr(file);
            }
            None => {
                cmd.env("RUST_LOG", "error").stderr(Stdio::null());
            }
        }
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Killed on drop if it does not come up.
        let mut node = Node {
            child,
            api: String::new(),
            p2p: String::new(),
        };
        let t = Instant::now();
        while node.api.is_empty() || node.p2p.is_empty() {
            let left = Duration::from_secs(20).saturating_sub(t.elapsed());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| format!("node in {} did not start within 20 s", dir.display()))?;
            if let Some(a) = line.strip_prefix("api http://") {
                node.api = a.trim().to_owned();
            } else if let Some(a) = line.strip_prefix("p2p ") {
                node.p2p = a.trim().to_owned();
            }
        }
        crate::tokens::register(&node.api, dir);
        wait(Duration::from_secs(20), "the node's API", || {
            node.status().is_ok()
        })?;
        Ok(node)
    }
}

/// Polls `ok` every 50 ms until it holds or `limit` passes.
fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        if ok() {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Same root and heads on every node.
fn converged(nodes: &[&Node]) -> bool {
    let s: Vec<_> = nodes.iter().map(|n| n.status().ok()).collect();
    s.iter().all(|x| {
        x.as_ref().is_some_and(|x| {
            let first = s[0].as_ref().expect("checked");
            x["root"] == first["root"] && x["heads"] == first["heads"]
        })
    })
}

fn peers_of(n: &Node) -> usize {
    n.status()
        .ok()
        .and_then(|s| s["peers"].as_array().map(Vec::len))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The attacker: libp2p with raw bytes on the sync protocol.

/// Sends whatever bytes it is given as the request (no framing added), reads a framed answer.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("the attacker serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MESSAGE_BYTES_MAX {
            return Err(std::io::Error::other("answer over the cap"));
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(std::io::Error::other("the attacker serves nothing"))
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>;

/// One authenticated connection of the attacker (Noise with one of its keys).
struct Attacker {
    tx: tokio::sync::mpsc::UnboundedSender<(Vec<u8>, Reply)>,
}

impl Attacker {
    /// Connects to `node` with `key`'s identity. `Err` if the connection is refused or closed
    /// at once (as for a non-member).
    fn connect(
        rt: &tokio::runtime::Runtime,
        key: &SigningKey,
        node: &Node,
    ) -> Result<Attacker, String> {
        // The attackers hold the genesis (the cloud id, which keys the handshake) unless an
        // attack says otherwise.
        let cloud = node.status()?["cloud"]
            .as_str()
            .and_then(lcloud_core::Id::from_hex)
            .ok_or("the node's status names no cloud")?;
        Attacker::connect_with(rt, key, node, lcloud_net::prologue(cloud.as_bytes()))
    }

    /// [`Attacker::connect`] with this Noise prologue.
    fn connect_with(
        rt: &tokio::runtime::Runtime,
        key: &SigningKey,
        node: &Node,
        prologue: Vec<u8>,
    ) -> Result<Attacker, String> {
        let peer = node.peer_id()?;
        let addr: Multiaddr = node.p2p.parse().map_err(|e| format!("{e}"))?;
        let mut secret = key.to_bytes();
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .map_err(|e| e.to_string())?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, Reply)>();
        let (up_tx, up_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let _guard = rt.enter();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                move |key: &libp2p::identity::Keypair| {
                    libp2p::noise::Config::new(key).map(|c| c.with_prologue(prologue.clone()))
                },
                libp2p::yamux::Config::default,
            )
            .map_err(|e| e.to_string())?
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RawCodec,
                    [(
                        StreamProtocol::new(lcloud_net::SYNC_PROTOCOL),
                        ProtocolSupport::Outbound,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(20))
                        .with_max_concurrent_streams(64),
                )
            })
            .map_err(|e| e.to_string())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.dial(addr).map_err(|e| e.to_string())?;
        rt.spawn(async move {
            let mut up = Some(up_tx);
            let mut pending: BTreeMap<request_response::OutboundRequestId, Reply> = BTreeMap::new();
            let mut connected = false;
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some((bytes, reply)) => {
                            if connected {
                                let id = swarm.behaviour_mut().send_request(&peer, bytes);
                                pending.insert(id, reply);
                            } else {
                                let _ = reply.send(Err("not connected".into()));
                            }
                        }
                        None => return,
                    },
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { .. } => {
                            connected = true;
                            // A node that refuses the peer closes at once: wait a moment.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            if let Some(u) = up.take() { let _ = u.send(Ok(())); }
                        }
                        SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                            connected = false;
                            if let Some(u) = up.take() { let _ = u.send(Err("closed at once".into())); }
                            for (_, r) in std::mem::take(&mut pending) {
                                let _ = r.send(Err("connection closed".into()));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            if let Some(u) = up.take() { let _ = u.send(Err(error.to_string())); }
                        }
                        SwarmEvent::Behaviour(request_response::Event::Message {
                            message: request_response::Message::Response { request_id, response },
                            ..
                        }) => {
                            if let Some(r) = pending.remove(&request_id) { let _ = r.send(Ok(response)); }
                        }
                        SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                            request_id, error, ..
                        }) => {
                            if let Some(r) = pending.remove(&request_id) { let _ = r.send(Err(error.to_string())); }
                        }
                        _ => {}
                    },
                }
            }
        });
        match up_rx.blocking_recv() {
            Ok(Ok(())) => Ok(Attacker { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the attacker's connection task ended".into()),
        }
    }

    /// Sends raw request bytes; the framed answer, or why there is none.
    fn send(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((bytes, tx))
            .map_err(|_| "the attacker's connection task ended".to_string())?;
        rx.blocking_recv()
            .map_err(|_| "the attacker's connection task ended".to_string())?
    }

    /// Sends a request as an honest node frames it.
    fn request(&self, req: &Request) -> Result<Response, String> {
        let answer = self.send(frame(&req.to_bytes()))?;
        Response::from_bytes(&answer).map_err(|e| format!("answer: {e}"))
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn push(cloud: Id, exps: Vec<Vec<u8>>) -> Request {
    Request::Push {
        cloud,
        exps: exps.into_iter().map(ByteBuf).collect(),
    }
}

/// Pushes experiences in batches of at most `sync::BATCH_BYTES`; the sum of `new`.
fn push_all(a: &Attacker, cloud: Id, exps: &[Vec<u8>]) -> Result<u64, String> {
    let mut new = 0u64;
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut send = |batch: Vec<Vec<u8>>| -> Result<(), String> {
        match a.request(&push(cloud, batch))? {
            Response::Pushed { new: n, .. } => {
                new += u64::from(n);
                Ok(())
            }
            other => Err(format!("push answered with {other:?}")),
        }
    };
    for e in exps {
        if !batch.is_empty() && bytes + e.len() > lcloud_core::sync::BATCH_BYTES {
            send(std::mem::take(&mut batch))?;
            bytes = 0;
        }
        bytes += e.len();
        batch.push(e.clone());
    }
    if !batch.is_empty() {
        send(batch)?;
    }
    Ok(new)
}

fn keys() -> Vec<SigningKey> {
    (0..ATTACKER_KEYS + 1)
        .map(|i| {
            let seed = blake3::hash(format!("lcloud-chaos attacker {i}").as_bytes());
            SigningKey::from(*seed.as_bytes())
        })
        .collect()
}

fn node_id(k: &SigningKey) -> NodeId {
    NodeId(k.verification_key().to_bytes())
}

fn signed(
    key: &SigningKey,
    cloud: Id,
    seq: u64,
    prev: Option<Id>,
    deps: Vec<Id>,
    v: i64,
) -> Experience {
    Draft {
        cloud,
        seq,
        prev,
        deps,
        ops: vec![Op::Add {
            path: DocPath::parse("/attack").expect("a path"),
            value: Value::Int(v),
        }],
        root: None,
        fuel: None,
    }
    .seal(node_id(key))
    .sign_unchecked(key)
}

/// The experience's bytes with one bit of its signature flipped.
fn tamper_sig(e: &Experience, byte: usize) -> Vec<u8> {
    let mut b = e.to_bytes();
    let sig = e.sig().0;
    let at = b
        .windows(64)
        .position(|w| w == sig)
        .expect("the signature is in the bytes");
    b[at + byte] ^= 0x20;
    b
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Honest writes to a node on a thread of their own, every 10 ms, until stopped: latencies.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Vec<Duration>, usize)>,
}

impl Writer {
    fn start(api: &str, from: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, api) = (stop.clone(), api.to_owned());
        let handle = std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut failed = 0;
            let mut v = from;
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                match write_to(&api, v) {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => failed += 1,
                }
                v += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (lat, failed)
        });
        Writer { stop, handle }
    }

    /// (acknowledged writes, p99 latency, failed writes).
    fn stop(self) -> (usize, Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut lat, failed) = self.handle.join().unwrap_or_default();
        lat.sort();
        let p99 = lat
            .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        (lat.len(), p99, failed)
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The attacks.

/// 10 000 hostile items from authenticated members: 8 000 forged or malformed experiences in
/// push frames and 2 000 malformed frames; each must be refused and counted under its reason.
fn hostile_frames(lab: &mut Lab, keys: &[SigningKey], min_rate: f64) -> Result<String, String> {
    let rt = runtime()?;
    let members: Vec<NodeId> = keys[..ATTACKER_KEYS].iter().map(node_id).collect();
    let (dirs, genesis) = lab.cloud(2, &members)?;
    let cloud = genesis.id();
    let mut a = lab.start(&dirs[0], &[])?;
    let b = lab.start(&dirs[1], &[a.p2p.as_str()])?;
    wait(Duration::from_secs(10), "B connects to A", || {
        peers_of(&a) > 0
    })?;
    // The insider's honest chain: e1, e2.
    let insider = &keys[0];
    let e1 = signed(insider, cloud, 1, None, vec![genesis.id()], 1);
    let e2 = signed(insider, cloud, 2, Some(e1.id()), vec![], 2);
    let honest = Attacker::connect(&rt, insider, &a)?;
    let new = push_all(&honest, cloud, &[e1.to_bytes(), e2.to_bytes()])?;
    ensure(new == 2, || {
        format!("the insider's honest experiences: {new} new, 2 expected")
    })?;
    drop(honest);
    // Hostile experiences, 1 000 of each kind, and the reason each must be counted under.
    let outsider = &keys[ATTACKER_KEYS];
    let base = |k: &SigningKey, v: i64| signed(k, cloud, 1, None, vec![genesis.id()], v).to_bytes();
    let mut kinds: Vec<(&str, &str, Vec<Vec<u8>>)> = Vec::new();
    let per = 1000i64;
    kinds.push((
        "bad signature",
        "bad signature",
        (0..per)
            .map(|i| {
                tamper_sig(
                    &signed(&keys[1], cloud, 1, None, vec![genesis.id()], 10_000 + i),
                    7,
                )
            })
            .collect(),
    ));
    kinds.push((
        "signed by a non-member",
        "not a member",
        (0..per).map(|i| base(outsider, 20_000 + i)).collect(),
    ));
    kinds.push((
        "wrong prev",
        "prev not own chain",
        (0..per)
            .map(|i| signed(&keys[1], cloud, 2, Some(genesis.id()), vec![], 30_000 + i).to_bytes())
            .collect(),
    ));
    kinds.push((
        "seq gap",
        "seq not next",
        (0..per)
            .map(|i| {
                signed(
                    insider,
                    cloud,
                    4 + i as u64,
                    Some(e2.id()),
                    vec![],
                    40_000 + i,
                )
                .to_bytes()
            })
            .collect(),
    ));
    kinds.push((
        "seq reuse",
        "seq not next",
        (0..per)
            .map(|i| signed(insider, cloud, 2, Some(e2.id()), vec![], 50_000 + i).to_bytes())
            .collect(),
    ));
    kinds.push((
        "unknown version",
        "malformed: wrong shape",
        (0..per)
            .map(|i| {
                let mut b = base(&keys[1], 60_000 + i);
                // [header, sig, ops] with the header an array whose first item is the version.
                debug_assert_eq!(b[2], lcloud_core::FORMAT_VERSION);
                b[2] = 9;
                b
            })
            .collect(),
    ));
    kinds.push((
        "truncated experience",
        "malformed: length exceeds input",
        (0..per)
            .map(|i| {
                let b = base(&keys[1], 70_000 + i);
                b[..b.len() / 2].to_vec()
            })
            .collect(),
    ));
    kinds.push((
        "trailing bytes",
        "malformed: trailing bytes",
        (0..per)
            .map(|i| {
                let mut b = base(&keys[1], 80_000 + i);
                b.push(0);
                b
            })
            .collect(),
    ));
    // Each kind must be refused as the suite says (checked here, so a change of rules shows).
    for (kind, reason, exps) in &kinds {
        let r = match lcloud_core::validate(&exps[0], &cloud) {
            Err(e) => e.reason().to_owned(),
            Ok(_) => "passes validation".into(),
        };
        let expected_at_validation = !matches!(
            *reason,
            "not a member" | "prev not own chain" | "seq not next"
        );
        ensure(!expected_at_validation || r == *reason, || {
            format!("{kind}: validation says {r:?}, the suite expects {reason:?}")
        })?;
    }
    // Malformed frames, 400 of each kind.
    let frames_per = 400usize;
    let valid_push = push(cloud, vec![]).to_bytes();
    let mut frame_kinds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("length prefix 0xFFFFFFFF", "frame too large", {
            let mut f = u32::MAX.to_be_bytes().to_vec();
            f.extend_from_slice(&[0; 16]);
            f
        }),
        ("oversized frame", "frame too large", {
            let mut f = ((MESSAGE_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&[0xAB; 65_536]);
            f
        }),
        ("truncated frame", "frame truncated", {
            let mut f = 1000u32.to_be_bytes().to_vec();
            f.extend_from_slice(&[1; 10]);
            f
        }),
        ("garbage message", "message undecodable", {
            let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5C).collect();
            frame(&garbage)
        }),
        ("bytes after the frame", "frame trailing bytes", {
            let mut f = frame(&valid_push);
            f.push(0);
            f
        }),
    ];
    // Expected counts by reason.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, reason, exps) in &kinds {
        *expected.entry((*reason).to_owned()).or_default() += exps.len() as u64;
    }
    for (_, reason, _) in &frame_kinds {
        *expected.entry((*reason).to_owned()).or_default() += frames_per as u64;
    }
    let total: u64 = expected.values().sum();
    // Jobs: one identity each. A push frame of 100 hostile experiences gets its sender banned;
    // four malformed frames do.
    let mut jobs: Vec<Vec<Vec<u8>>> = Vec::new();
    for (_, _, exps) in &kinds {
        for chunk in exps.chunks(100) {
            jobs.push(vec![frame(&push(cloud, chunk.to_vec()).to_bytes())]);
        }
    }
    for (_, _, f) in frame_kinds.drain(..) {
        for _ in 0..frames_per / FRAMES_PER_IDENTITY {
            jobs.push(vec![f.clone(); FRAMES_PER_IDENTITY]);
        }
    }
    ensure(jobs.len() < ATTACKER_KEYS, || {
        "not enough attacker identities".into()
    })?;
    let before = a.rejected()?;
    let rss_before = a.rss_mib();
    let writer = Writer::start(&a.api, 0);
    let started = Instant::now();
    let jobs = Arc::new(std::sync::Mutex::new(
        jobs.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let rt = Arc::new(rt);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (jobs, errors, rt, keys, a) = (jobs.clone(), errors.clone(), rt.clone(), keys, &a);
            s.spawn(move || {
                loop {
                    let Some((i, frames)) = jobs.lock().expect("not poisoned").pop() else {
                        return;
                    };
                    let key = &keys[1 + i];
                    match Attacker::connect(&rt, key, a) {
                        Ok(att) => {
                            for f in frames {
                                // Refused frames get no answer: the outcome is read in the metrics.
                                let _ = att.send(f);
                            }
                        }
                        Err(e) => errors
                            .lock()
                            .expect("not poisoned")
                            .push(format!("identity {}: {e}", 1 + i)),
                    }
                }
            });
        }
    });
    let errors = errors.lock().expect("not poisoned").clone();
    ensure(errors.is_empty(), || {
        format!("attacker connections failed: {errors:?}")
    })?;
    // Every item counted (the last pushes may still be in validation).
    let mut got = BTreeMap::new();
    let counted = wait(
        Duration::from_secs(30),
        "every hostile item counted",
        || {
            got = a.rejected().map(|r| delta(&before, &r)).unwrap_or_default();
            expected
                .iter()
                .all(|(k, v)| got.get(k).copied().unwrap_or(0) >= *v)
        },
    );
    let elapsed = started.elapsed();
    let (acked, p99, failed) = writer.stop();
    let rss_after = a.rss_mib();
    counted.map_err(|e| format!("{e}: expected {expected:?}, counted {got:?}"))?;
    for (k, v) in &expected {
        ensure(got.get(k) == Some(v), || {
            format!("reason {k:?}: {:?} counted, {v} sent", got.get(k))
        })?;
    }
    ensure(a.alive() && a.status().is_ok(), || {
        "the attacked node died".into()
    })?;
    wait(Duration::from_secs(10), "A and B converge", || {
        converged(&[&a, &b])
    })?;
    let s = a.status()?;
    let held = s["experiences"].as_u64().unwrap_or(0);
    ensure(held == 3 + acked as u64, || {
        format!("A holds {held} experiences; genesis + 2 + {acked} honest expected")
    })?;
    let rate = total as f64 / elapsed.as_secs_f64();
    let growth = rss_after - rss_before;
    ensure(growth <= 32.0, || {
        format!("RSS grew by {growth:.1} MiB (at most 32)")
    })?;
    ensure(p99 <= Duration::from_secs(1), || {
        format!("honest writes p99 {p99:?} (at most 1 s)")
    })?;
    ensure(failed == 0, || format!("{failed} honest writes failed"))?;
    ensure(rate >= min_rate, || {
        format!("{rate:.0} rejections/s (at least {min_rate:.0})")
    })?;
    Ok(format!(
        "{total} hostile items ({} experiences in push frames, {} frames) all refused and counted by reason; {rate:.0} rejections/s; {acked} honest writes meanwhile, p99 {:.0} ms; RSS {rss_before:.0} → {rss_after:.0} MiB; A and B agree",
        kinds.iter().map(|k| k.2.len()).sum::<usize>(),
        5 * frames_per,
        p99.as_secs_f64() * 1e3
    ))
}

/// 10 000 valid experiences pushed, then replayed by another member: nothing new.
fn replay(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(2, &[node_id(&keys[0]), node_id(&keys[1])])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    let b = lab.start(&dirs[1], &[a.p2p.as_str()])?;
    let mut r = Replica::new(genesis).map_err(|e| e.to_string())?;
    let mut exps = Vec::new();
    for i in 0..10_000 {
        let path = DocPath::parse("/replayed").expect("a path");
        let e = r
            .write(
                &keys[0],
                vec![Op::Add {
                    path,
                    value: Value::Int(i),
                }],
            )
            .map_err(|e| e.to_string())?;
        exps.push(e.to_bytes());
    }
    let first = Attacker::connect(&rt, &keys[0], &a)?;
    let new = push_all(&first, cloud, &exps)?;
    ensure(new == 10_000, || {
        format!("first push: {new} new, 10 000 expected")
    })?;
    wait(Duration::from_secs(30), "A and B converge", || {
        converged(&[&a, &b])
    })?;
    let s = a.status()?;
    let before = a.rejected()?;
    let replayer = Attacker::connect(&rt, &keys[1], &a)?;
    let t = Instant::now();
    let again = push_all(&replayer, cloud, &exps)?;
    let took = t.elapsed();
    let s2 = a.status()?;
    ensure(again == 0, || {
        format!("the replay added {again} experiences")
    })?;
    ensure(
        s2["experiences"] == s["experiences"] && s2["root"] == s["root"],
        || "the replay changed the node".into(),
    )?;
    ensure(delta(&before, &a.rejected()?).is_empty(), || {
        "valid replays were counted as misbehaviour".into()
    })?;
    // Still connected (a replay is not misbehaviour) and the node still answers.
    let more = push_all(&replayer, cloud, &exps[..10])?;
    ensure(more == 0, || "a second replay added experiences".into())?;
    Ok(format!(
        "10 000 valid experiences replayed in {:.0} ms: 0 new, root and count unchanged",
        took.as_secs_f64() * 1e3
    ))
}

/// An author signs two experiences with the same seq, one to each side of a partition.
fn equivocation(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(3, &[node_id(&keys[0])])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    let b = lab.start(&dirs[1], &[a.p2p.as_str()])?;
    let c = lab.start(&dirs[2], &[b.p2p.as_str()])?;
    wait(Duration::from_secs(10), "B connects to A and C", || {
        peers_of(&b) == 2
    })?;
    b.isolate(true)?;
    wait(Duration::from_secs(10), "A and C cut off", || {
        peers_of(&a) == 0 && peers_of(&c) == 0
    })?;
    let x = signed(&keys[0], cloud, 1, None, vec![genesis.id()], 1);
    let y = signed(&keys[0], cloud, 1, None, vec![genesis.id()], 2);
    let to_a = Attacker::connect(&rt, &keys[0], &a)?;
    let to_c = Attacker::connect(&rt, &keys[0], &c)?;
    ensure(push_all(&to_a, cloud, &[x.to_bytes()])? == 1, || {
        "A refused x".into()
    })?;
    ensure(push_all(&to_c, cloud, &[y.to_bytes()])? == 1, || {
        "C refused y".into()
    })?;
    drop((to_a, to_c));
    a.write(1)?;
    c.write(2)?;
    b.isolate(false)?;
    let t = wait(Duration::from_secs(10), "A, B and C converge", || {
        converged(&[&a, &b, &c])
    })?;
    let proofs: Vec<serde_json::Value> = [&a, &b, &c]
        .iter()
        .map(|n| n.get("/api/forks"))
        .collect::<Result<_, _>>()?;
    for p in &proofs {
        ensure(p.as_array().map(Vec::len) == Some(1), || {
            format!("fork proofs: {p}")
        })?;
        ensure(*p == proofs[0], || {
            "the nodes hold different fork proofs".into()
        })?;
    }
    let hex = proofs[0][0]["proof"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let proof: lcloud_core::ForkProof =
        lcloud_core::codec::from_canonical(&bytes).map_err(|e| format!("proof: {e}"))?;
    proof.check().map_err(|e| format!("proof: {e}"))?;
    ensure(
        proof.author() == node_id(&keys[0])
            && proof.ids()
                == if x.id() < y.id() {
                    (x.id(), y.id())
                } else {
                    (y.id(), x.id())
                },
        || "the proof names other experiences".into(),
    )?;
    Ok(format!(
        "the equivocation across the partition gives one identical, checkable fork proof and one root on all 3 nodes, {:.1} s after the heal",
        t.as_secs_f64()
    ))
}

/// A relay serves a chain with one tampered experience: refused exactly there, the rest waits,
/// and the honest author's link repairs it.
fn tampered_relay(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(2, &[node_id(&keys[0])])?;
    let cloud = genesis.id();
    let b = lab.start(&dirs[1], &[])?;
    b.isolate(true)?;
    let a = lab.start(&dirs[0], &[b.p2p.as_str()])?;
    for v in 0..30 {
        b.write(v)?;
    }
    let author = b.status()?["node"].as_str().unwrap_or_default().to_owned();
    let bundle = b.bundle()?;
    let decoded = lcloud_store::bundle::decode(&bundle).map_err(|e| e.to_string())?;
    let mut chain: Vec<Experience> = decoded
        .records
        .iter()
        .filter_map(|r| lcloud_core::validate(r, &cloud).ok())
        .map(|v| (*v).clone())
        .filter(|e| e.author().to_hex() == author)
        .collect();
    chain.sort_by_key(Experience::seq);
    ensure(chain.len() == 30, || {
        format!("B's chain has {} experiences", chain.len())
    })?;
    let bad = chain[14].id();
    let mut exps: Vec<Vec<u8>> = chain.iter().map(Experience::to_bytes).collect();
    exps[14] = tamper_sig(&chain[14], 3);
    let relay = Attacker::connect(&rt, &keys[0], &a)?;
    let before = a.rejected()?;
    let _ = push_all(&relay, cloud, &exps);
    let s = a.status()?;
    let held = s["clock"][&author].as_u64().unwrap_or(0);
    let got = delta(&before, &a.rejected()?);
    ensure(held == 14, || {
        format!("A holds B's chain up to {held}; 14 expected (the tampered one is 15)")
    })?;
    ensure(
        got.get("bad signature") == Some(&1) && got.len() == 1,
        || format!("rejections: {got:?}; one bad signature expected"),
    )?;
    ensure(s["parked"].as_u64() == Some(15), || {
        format!("A parked {}; 15 expected", s["parked"])
    })?;
    ensure(
        s["missing"][0].as_str() == Some(bad.to_hex().as_str()),
        || format!("A waits for {}; {bad} expected", s["missing"]),
    )?;
    b.isolate(false)?;
    let t = wait(Duration::from_secs(10), "A repaired from B", || {
        converged(&[&a, &b])
    })?;
    let s = a.status()?;
    ensure(
        s["parked"].as_u64() == Some(0) && s["clock"][&author].as_u64() == Some(30),
        || format!("after the repair: {s}"),
    )?;
    Ok(format!(
        "the tampered chain refused exactly at seq 15 (bad signature), 14 admitted, 15 parked waiting for it; repaired {:.1} s after the honest link appeared",
        t.as_secs_f64()
    ))
}

/// A node whose only peer withholds one author: it reports the gap, and converges once an
/// honest link appears.
fn eclipse(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(3, &[node_id(&keys[0])])?;
    let cloud = genesis.id();
    let b = lab.start(&dirs[1], &[])?;
    let c = lab.start(&dirs[2], &[b.p2p.as_str()])?;
    for v in 0..20 {
        b.write(v)?;
    }
    wait(Duration::from_secs(10), "C has B's writes", || {
        converged(&[&b, &c])
    })?;
    for v in 100..120 {
        c.write(v)?;
    }
    wait(Duration::from_secs(10), "B has C's writes", || {
        converged(&[&b, &c])
    })?;
    b.isolate(true)?;
    c.isolate(true)?;
    let a = lab.start(&dirs[0], &[b.p2p.as_str(), c.p2p.as_str()])?;
    let withheld = b.status()?["node"].as_str().unwrap_or_default().to_owned();
    let bundle = c.bundle()?;
    let decoded = lcloud_store::bundle::decode(&bundle).map_err(|e| e.to_string())?;
    let rest: Vec<Vec<u8>> = decoded
        .records
        .iter()
        .filter(|r| {
            lcloud_core::validate(r, &cloud)
                .is_ok_and(|e| e.author().to_hex() != withheld && !e.header().is_genesis())
        })
        .map(|r| r.to_vec())
        .collect();
    let eclipser = Attacker::connect(&rt, &keys[0], &a)?;
    push_all(&eclipser, cloud, &rest)?;
    let s = a.status()?;
    let parked = s["parked"].as_u64().unwrap_or(0);
    let missing = s["missing"].as_array().map_or(0, Vec::len);
    ensure(parked == 20 && missing > 0, || {
        format!("the eclipsed node reports parked {parked}, missing {missing}: {s}")
    })?;
    ensure(s["clock"].get(&withheld).is_none(), || {
        "the eclipsed node holds the withheld author".into()
    })?;
    c.isolate(false)?;
    let t = wait(Duration::from_secs(10), "A converges with C", || {
        converged(&[&a, &c])
    })?;
    let s = a.status()?;
    ensure(s["parked"].as_u64() == Some(0), || {
        format!("after the honest link: {s}")
    })?;
    Ok(format!(
        "the eclipsed node reported a gap ({parked} parked, waiting for {missing} ids of the withheld author) and converged {:.1} s after an honest link appeared",
        t.as_secs_f64()
    ))
}

/// 500 connections of garbage and half-open handshakes at once.
fn connection_flood(lab: &mut Lab) -> Result<String, String> {
    let (dirs, _) = lab.cloud(2, &[])?;
    let mut a = lab.start(&dirs[0], &[])?;
    let b = lab.start(&dirs[1], &[a.p2p.as_str()])?;
    wait(Duration::from_secs(10), "B connects to A", || {
        peers_of(&a) > 0
    })?;
    let port: u16 = a
        .p2p
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .ok_or("A's port")?;
    let rss_before = a.rss_mib();
    let writer = Writer::start(&a.api, 0);
    let mut socks = Vec::new();
    let mut refused = 0;
    for i in 0..500 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                if i % 2 == 0 {
                    let garbage: Vec<u8> = (0..1024u32).map(|j| (j * 31 + i) as u8).collect();
                    let _ = s.write_all(&garbage);
                } else {
                    // A handshake started and never finished.
                    let _ = s.write_all(b"\x13/multistream/1.0.0\n");
                }
                socks.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    // Meanwhile B's writes still reach A over the established link.
    for v in 0..20 {
        b.write(1000 + v)?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut open = 0;
    for s in &mut socks {
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if !closed {
            open += 1;
        }
    }
    let conv = wait(
        Duration::from_secs(10),
        "A and B converge during the flood",
        || converged(&[&a, &b]),
    );
    drop(socks);
    let (acked, p99, failed) = writer.stop();
    let rss_after = a.rss_mib();
    conv?;
    ensure(a.alive(), || "the flooded node died".into())?;
    let cap = lcloud_net::PENDING_INBOUND_MAX as usize;
    ensure(open <= cap, || {
        format!("{open} flood connections still open after 3 s (pending cap {cap})")
    })?;
    ensure(failed == 0 && p99 <= Duration::from_secs(1), || {
        format!("honest writes: {failed} failed, p99 {p99:?}")
    })?;
    let growth = rss_after - rss_before;
    ensure(growth <= 32.0, || format!("RSS grew by {growth:.1} MiB"))?;
    Ok(format!(
        "500 garbage and half-open connections ({refused} refused by the kernel): {open} still open after 3 s (cap {cap}); {acked} honest writes meanwhile, p99 {:.0} ms; B's writes still arrive; RSS {rss_before:.0} → {rss_after:.0} MiB",
        p99.as_secs_f64() * 1e3
    ))
}

/// A non-member connects: refused at once, gets nothing, stores nothing.
fn non_member(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    // Member-only (a cloud created without members is open to anyone).
    let (dirs, genesis) = lab.cloud(1, &[node_id(&keys[0])])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    a.write(1)?;
    let before = a.status()?;
    let outsider = &keys[ATTACKER_KEYS];
    let mut leaked = 0;
    for _ in 0..5 {
        let Ok(att) = Attacker::connect(&rt, outsider, &a) else {
            continue;
        };
        let sync = Request::Sync {
            summary: Summary {
                cloud,
                chains: vec![],
            },
        };
        if let Ok(Response::Sync { exps, .. }) = att.request(&sync) {
            leaked += exps.len();
        }
        let e = signed(outsider, cloud, 1, None, vec![genesis.id()], 1);
        let _ = att.request(&push(cloud, vec![e.to_bytes()]));
    }
    let after = a.status()?;
    ensure(leaked == 0, || {
        format!("a non-member received {leaked} experiences")
    })?;
    ensure(after["experiences"] == before["experiences"], || {
        "a non-member's experience was stored".into()
    })?;
    Ok("a non-member is disconnected at once: 0 experiences sent to it, 0 stored from it".into())
}

/// A fresh key that never held the genesis dials an open cloud's node: without the cloud id
/// it cannot make the Noise prologue, so the handshake fails and it learns nothing (not the
/// id, not the topic, no experience). The same key with the genesis connects and syncs (the
/// control: the handshake is the gate).
fn stranger(lab: &mut Lab, keys: &[SigningKey]) -> Result<String, String> {
    let rt = runtime()?;
    let (dirs, genesis) = lab.cloud(1, &[])?;
    let cloud = genesis.id();
    let a = lab.start(&dirs[0], &[])?;
    a.write(1)?;
    let stranger = &keys[ATTACKER_KEYS];
    let guesses: [(&str, Vec<u8>); 3] = [
        ("no prologue", Vec::new()),
        ("another cloud's", lcloud_net::prologue(&[7; 32])),
        ("the genesis id itself", cloud.as_bytes().to_vec()),
    ];
    for (what, prologue) in &guesses {
        if Attacker::connect_with(&rt, stranger, &a, prologue.clone()).is_ok() {
            return Err(format!("a stranger connected with {what} prologue"));
        }
    }
    let att = Attacker::connect(&rt, stranger, &a)?;
    let sync = Request::Sync {
        summary: Summary {
            cloud,
            chains: vec![],
        },
    };
    let got = match att.request(&sync) {
        Ok(Response::Sync { exps, .. }) => exps.len(),
        other => return Err(format!("with the genesis, a sync got {other:?}")),
    };
    ensure(got >= 2, || {
        format!("with the genesis, a sync got {got} experiences")
    })?;
    Ok(format!(
        "a stranger's handshake fails with {} guessed prologues (it learns nothing); with the genesis the same key connects and syncs {got} experiences",
        guesses.len()
    ))
}

/// Runs every attack (or those named by `only`), each on fresh nodes.
pub fn run(cfg: &Config) -> Vec<Verdict> {
    let keys = keys();
    let mut lab = Lab::new(&cfg.lcloud);
    type Attack<'a> = Box<dyn Fn(&mut Lab, &[SigningKey]) -> Result<String, String> + 'a>;
    let min_rate = cfg.min_rejections_per_s;
    let attacks: [(&'static str, Attack); 17] = [
        (
            "hostile frames",
            Box::new(move |lab, keys| hostile_frames(lab, keys, min_rate)),
        ),
        ("replay", Box::new(replay)),
        ("equivocation", Box::new(equivocation)),
        ("tampered relay", Box::new(tampered_relay)),
        ("eclipse", Box::new(eclipse)),
        ("connection flood", Box::new(|lab, _| connection_flood(lab))),
        ("non-member", Box::new(non_member)),
        ("stranger to an open cloud", Box::new(stranger)),
        (
            "removed member keeps writing",
            Box::new(membership::removed_member),
        ),
        (
            "rotated-away key keeps writing",
            Box::new(membership::rotated_key),
        ),
        ("hostile contracts", Box::new(contracts::hostile_contracts)),
        ("bad tokens", Box::new(tokens::bad_tokens)),
        ("event stream flood", Box::new(tokens::stream_flood)),
        ("big bundles", Box::new(clients::big_bundles)),
        ("stalled readers", Box::new(clients::stalled_readers)),
        ("API connection flood", Box::new(clients::api_flood)),
        ("slow clients", Box::new(clients::slow_clients)),
    ];
    attacks
        .into_iter()
        .filter(|(name, _)| cfg.only.as_deref().is_none_or(|o| name.contains(o)))
        .map(|(name, attack)| {
            let t = Instant::now();
            if crate::interrupt::interrupted() {
                let result = Err("not run: interrupted".to_owned());
                return Verdict { name, result };
            }
            let result = attack(&mut lab, &keys)
                .map(|s| format!("{s} ({:.1} s)", t.elapsed().as_secs_f64()));
            Verdict { name, result }
        })
        .collect()
}
