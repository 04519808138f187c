//! The listener: accepts TCP (optionally TLS) connections, serves HTTP/1.1
//! and HTTP/2 on each, enforces the connection-level limits, and shuts down
//! gracefully.
//!
//! Connection-level limits:
//! - request head size (`max_header_bytes`): HTTP/1 buffer cap, HTTP/2
//!   header-list cap;
//! - slow request heads: `client_idle_timeout_ms` to send a complete head;
//! - idle connections: closed when no byte moved in either direction for
//!   `client_idle_timeout_ms` while no request is in flight (this also cuts
//!   off clients that stop reading a streamed response).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::{Connection, Gateway};

/// Serves until `shutdown` resolves, then stops accepting and waits (up to
/// `limits.shutdown_grace_seconds`) for in-flight requests to finish.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = gateway.config.limits.clone();
    let shared = Arc::new(Shared {
        builder: http_builder(&limits),
        tls,
        idle_timeout: limits.client_idle_timeout(),
        epoch: Instant::now(),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    // At most `limits.max_connections` open client connections: past it the
    // gateway stops accepting (new ones wait in the kernel's backlog) rather
    // than spending memory and file descriptors on a flood.
    let connection_slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            slot = connection_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let connection = serve_connection(
            tcp,
            peer,
            gateway.clone(),
            shared.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }
    drop(listener);
    gateway.begin_shutdown();
    let grace = Duration::from_secs(limits.shutdown_grace_seconds);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// What every connection shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    idle_timeout: Duration,
    /// The clock connections measure idleness against.
    epoch: Instant,
}

/// HTTP/1.1 and HTTP/2 with the header limits and timeouts.
fn http_builder(limits: &crate::config::Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_idle_timeout())
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// One client connection: TLS first (bounded by the idle timeout), then
/// HTTP on whichever stream, until it ends, idles out or shutdown drains it.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let activity = Arc::new(Activity::new(shared.epoch));
    let io = ActivityIo {
        inner: tcp,
        activity: activity.clone(),
    };
    let io = match &shared.tls {
        None => ClientIo::Plain(io),
        Some(acceptor) => {
            match tokio::time::timeout(shared.idle_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => ClientIo::Tls(Box::new(stream)),
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let certificate_subject = match &io {
        ClientIo::Tls(stream) => stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| crate::tls::certificate_subject(cert.as_ref())),
        ClientIo::Plain(_) => None,
    };
    let conn_info = Connection {
        peer,
        tls: matches!(io, ClientIo::Tls(_)),
        certificate_subject,
    };
    let service_activity = activity.clone();
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        let conn_info = conn_info.clone();
        let activity = service_activity.clone();
        async move {
            // A guard, not a pair of calls: an HTTP/2 stream reset
            // drops this future midway, and the count must still
            // come down (else the connection never counts as idle).
            let _in_flight = InFlight::enter(activity.clone());
            let response = gateway.handle(request, conn_info).await;
            activity.touch();
            Ok::<_, Infallible>(response)
        }
    });
    let connection = watcher.watch(
        shared
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        () = activity.idle_for(shared.idle_timeout) => tracing::debug!(%peer, "closed idle connection"),
    }
}

/// Last time a byte moved on a connection, and how many requests are in
/// flight on it.
/// One request in flight on a connection, for as long as it lives.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once the connection has been idle (no bytes, no request in
    /// flight) for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let idle = now.saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if idle >= timeout_ms && self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            let wait = timeout_ms.saturating_sub(idle).clamp(100, 1_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// An IO stream that records activity on every successful read and write.
#[derive(Debug)]
pub struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client connection, plain or TLS, so one HTTP server serves both.
#[derive(Debug)]
pub enum ClientIo {
    Plain(ActivityIo<tokio::net::TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<ActivityIo<tokio::net::TcpStream>>>),
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ClientIo::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_write(cx, data),
            ClientIo::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ClientIo::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(io) => io.is_write_vectored(),
            ClientIo::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ClientIo::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ClientIo::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
