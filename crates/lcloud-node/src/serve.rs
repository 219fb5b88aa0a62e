//! Serving the API over TCP, plain or with TLS (rustls), within limits a client cannot push
//! past: a cap on open connections (kept below the descriptor limit), a deadline for a
//! request's header (which also closes connections that send nothing, or sit idle between
//! requests), a deadline between the chunks of a request body, and a deadline for a write the
//! client does not read. Past the connection cap a new connection gets one `503` and is
//! closed; everyone already connected is served as before. Figures: docs/RELIABILITY.md.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The limits on the API's connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once.
    pub connections: usize,
    /// Most connections open at once from one IP address (so that one client cannot take
    /// every place).
    pub per_address: usize,
    /// Longest wait for a request's whole header, from the connection's start or the end of
    /// the previous answer (so also the longest idle keep-alive).
    pub header: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_idle: Duration,
    /// Longest a write to the client may wait for the client to read.
    pub write_stall: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: CONNECTIONS_MAX,
            per_address: PER_ADDRESS_MAX,
            header: Duration::from_secs(10),
            body_idle: Duration::from_secs(10),
            write_stall: Duration::from_secs(60),
        }
    }
}

/// The default cap on open API connections.
pub const CONNECTIONS_MAX: usize = 1024;

/// The default cap on open API connections from one IP address.
pub const PER_ADDRESS_MAX: usize = 256;

/// Descriptors kept back from the API for the store, the network and refusals.
const DESCRIPTORS_KEPT: u64 = 256;

/// Connections past the cap being told so at once (more are closed without a word).
const REFUSING_MAX: usize = 64;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused past the cap.
    pub refused: AtomicU64,
    /// Connections refused past the cap of their address.
    pub refused_address: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failed: AtomicU64,
    /// Writes the client did not read in time (the connection closed).
    pub write_stalled: AtomicU64,
}

/// Raises this process's soft descriptor limit to its hard limit and returns the connection
/// cap that fits under it: `wanted`, or less if the descriptors do not allow it.
pub fn connection_cap(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim.current = lim.maximum;
        }
    }
    let Some(soft) = lim.current else {
        return wanted;
    };
    let fits = soft.saturating_sub(DESCRIPTORS_KEPT) as usize;
    if fits < wanted {
        tracing::warn!(
            descriptors = soft,
            connections = fits,
            "the descriptor limit allows fewer API connections than asked for"
        );
    }
    wanted.min(fits).max(1)
}

/// The TLS settings from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert and --tls-key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` ends, then lets open requests finish for a
/// few seconds (event streams never finish: they are cut).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(limits.connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_MAX));
    let from = Arc::new(PerAddress {
        open: std::sync::Mutex::new(std::collections::HashMap::new()),
        max: limits.per_address,
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_idle,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, mostly: wait for some to be freed.
                    tracing::warn!(error = %e, "the API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let place = match (
            open.clone().try_acquire_owned(),
            From::take(&from, peer.ip()),
        ) {
            (Ok(permit), Some(from)) => Some((permit, from)),
            (Err(_), _) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
            (Ok(_), None) => {
                counters.refused_address.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let Some(permit) = place else {
            if tls.is_none()
                && let Ok(p) = refusing.clone().try_acquire_owned()
            {
                tokio::spawn(async move {
                    refuse(tcp).await;
                    drop(p);
                });
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let http = http.clone();
        let counters = counters.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let io = TokioIo::new(Stalling::new(tcp, limits.write_stall, counters));
                    let conn = http.serve_connection(io, service);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    // The handshake within the header deadline, like a header.
                    let shake = tokio::time::timeout(limits.header, acceptor.accept(tcp)).await;
                    let Ok(Ok(stream)) = shake else {
                        counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let io = TokioIo::new(Stalling::new(stream, limits.write_stall, counters));
                    let conn = http.serve_connection(io, service);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Open connections by client address.
struct PerAddress {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    max: usize,
}

/// One connection's place among its address's; given back when dropped.
struct From {
    all: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl From {
    fn take(all: &Arc<PerAddress>, ip: std::net::IpAddr) -> Option<From> {
        let mut open = all.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= all.max {
            return None;
        }
        *n += 1;
        Some(From {
            all: all.clone(),
            ip,
        })
    }
}

impl Drop for From {
    fn drop(&mut self) {
        let mut open = self.all.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Tells a connection past the cap why it is closed.
async fn refuse(mut tcp: TcpStream) {
    let body = r#"{"error":"the node serves as many API connections as it may: try again later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// A connection whose writes fail once the client has not read for `limit`: an answer or an
/// event stream nobody reads gives its connection (and its buffers) back.
struct Stalling<T> {
    io: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Arc<Counters>,
}

impl<T> Stalling<T> {
    fn new(io: T, limit: Duration, counters: Arc<Counters>) -> Stalling<T> {
        Stalling {
            io,
            limit,
            stalled: None,
            counters,
        }
    }

    /// A write's outcome: `Pending` starts (or checks) the stall deadline, anything else
    /// clears it.
    fn track<R>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if !p.is_pending() {
            self.stalled = None;
            return p;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.counters.write_stalled.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the answer",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalling<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalling<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(cx, p)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.track(cx, p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
