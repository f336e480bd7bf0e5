//! The HTTP server's accept loop: the router behind hyper, with the limits a
//! box on a mine LAN needs and `axum::serve` does not set.
//!
//! - A client must send a request's head within [`HEADER_TIMEOUT`], and an
//!   idle keep-alive connection is closed after as long: a slow-loris client
//!   cannot hold a connection by trickling bytes.
//! - A request's body must arrive within [`BODY_DEADLINE`] of its head: a
//!   body sent a byte at a time cannot hold the connection either.
//! - At most [`MAX_PER_PEER`] connections from one address, and at most
//!   [`MAX_CONNECTIONS`] from other machines in all; a connection over
//!   either is closed at once and counted. The kiosk on the box itself
//!   (loopback) is never kept out by other machines and has a budget of
//!   its own ([`LOCAL_PER_PEER`]), and no flood takes the file descriptors
//!   SQLite and the serial lines need.
//! - A request head is limited to 64 KiB.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Most connections open at once from other machines.
pub const MAX_CONNECTIONS: usize = 256;
/// Most connections open at once from one address.
pub const MAX_PER_PEER: usize = 32;
/// Connections at once from one loopback address: the box's own kiosk,
/// console and tools have their own, larger budget.
pub const LOCAL_PER_PEER: usize = 128;
/// Time to send a request's head (and the longest a keep-alive connection
/// may sit idle).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's body, from its head: a 5 MiB photo over a poor
/// Wi-Fi link takes well under it.
pub const BODY_DEADLINE: Duration = Duration::from_secs(60);
/// After shutdown, how long open connections (live streams) get to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Connection counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once for being over a limit, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A request body that fails once its deadline has passed.
#[derive(Debug)]
struct Deadline<B> {
    body: B,
    until: Pin<Box<tokio::time::Sleep>>,
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match self.until.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("the request body took too long".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts a connection open until dropped, whatever ends it.
#[derive(Debug)]
struct Open(Arc<ConnStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors of one incoming connection (it went before it was accepted),
/// not of the listener.
fn connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Connections open per peer address.
#[derive(Debug, Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One peer's place, given back when the connection ends.
#[derive(Debug)]
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        let cap = if ip.is_loopback() {
            LOCAL_PER_PEER
        } else {
            MAX_PER_PEER
        };
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self
            .peers
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then gives open
/// connections a moment to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    router: Router,
    stats: Arc<ConnStats>,
    shutdown: CancellationToken,
) {
    let total = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
    let connections = TaskTracker::new();
    // Refusals are warned about once a minute at most.
    let mut warned: Option<tokio::time::Instant> = None;
    let mut accept_warned: Option<tokio::time::Instant> = None;
    let quiet = Duration::from_secs(60);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    if accept_warned.is_none_or(|t| t.elapsed() > quiet) {
                        accept_warned = Some(tokio::time::Instant::now());
                        tracing::warn!(error = %e, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = peers.take(peer.ip());
        // The box's own kiosk and console are never kept out by others.
        let permit = if peer.ip().is_loopback() {
            None
        } else {
            match Arc::clone(&total).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    refuse(&stats, &mut warned, quiet, peer);
                    continue;
                }
            }
        };
        let Some(slot) = slot else {
            refuse(&stats, &mut warned, quiet, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(Arc::clone(&stats));
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _held = (permit, slot, open);
            match tls {
                None => connection(stream, false, peer, router, shutdown).await,
                Some(acceptor) => {
                    // The handshake within the head's time: a client that
                    // stalls in it is a slow-loris like any other.
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, true, peer, router, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // New clients are refused at once rather than left in the backlog.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Whether a request came over TLS (the session cookie is then `Secure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure(pub bool);

/// Serves one connection (plain or TLS) until it ends or the server stops.
async fn connection<S>(
    stream: S,
    secure: bool,
    peer: std::net::SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
            let mut req = req.map(|body| {
                axum::body::Body::new(Deadline {
                    body,
                    until: Box::pin(tokio::time::sleep(BODY_DEADLINE)),
                })
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(Secure(secure));
            router.clone().oneshot(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

fn refuse(
    stats: &ConnStats,
    warned: &mut Option<tokio::time::Instant>,
    quiet: Duration,
    peer: std::net::SocketAddr,
) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    if warned.is_none_or(|t| t.elapsed() > quiet) {
        *warned = Some(tokio::time::Instant::now());
        tracing::warn!(%peer, "too many connections: closing new ones over the limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_comes_fails_at_its_deadline() {
        use http_body::Body as _;
        let deadline = Duration::from_millis(300);
        let mut body = Deadline {
            body: Silent,
            until: Box::pin(tokio::time::sleep(deadline)),
        };
        let early = tokio::time::timeout(
            deadline / 2,
            futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await;
        assert!(early.is_err(), "gave up before the deadline");
        let end = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await;
        assert!(
            matches!(end, Ok(Some(Err(_)))),
            "not failed at the deadline"
        );
    }

    #[test]
    fn a_peer_gets_its_places_back() {
        let peers = Arc::new(Peers::default());
        let ip: IpAddr = [10, 0, 0, 7].into();
        let slots: Vec<PeerSlot> = (0..MAX_PER_PEER).filter_map(|_| peers.take(ip)).collect();
        assert_eq!(slots.len(), MAX_PER_PEER);
        assert!(peers.take(ip).is_none(), "one over the limit");
        assert!(
            peers.take([10, 0, 0, 8].into()).is_some(),
            "another peer is not limited"
        );
        drop(slots);
        let again = peers.take(ip);
        assert!(again.is_some());
        let held = |ip| {
            peers
                .0
                .lock()
                .map(|m| m.get(&ip).copied())
                .unwrap_or_default()
        };
        assert_eq!(held(ip), Some(1));
        drop(again);
        assert_eq!(held(ip), None, "an address with no connection is forgotten");
    }
}
