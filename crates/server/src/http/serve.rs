//! The HTTP listener: accepts connections up to a limit, gives each a header-read timeout and an
//! idle timeout, and serves the router on it (HTTP/1.1 and HTTP/2, with upgrades for the runner
//! sessions).
//!
//! Invariants:
//! - Every accepted socket holds one permit of the connection limit from `accept` until the socket
//!   is dropped, a WebSocket session's socket included (the permit lives in the socket's wrapper,
//!   which hyper hands to the upgraded stream), so at most `max_connections` sockets are open
//!   through this listener. At the limit the loop stops accepting: new connections wait in the
//!   kernel's listen backlog until one closes, and a warning says so (at most one per
//!   [`LIMIT_WARNING_EVERY`], with how many waits it stands for).
//! - A connection must deliver each request's headers within the header-read timeout, counted
//!   from when it is ready for the next request: a client trickling headers, or a kept-alive
//!   connection left unused, is closed after it.
//! - Inside a request, a connection that moves no byte either way for the idle timeout is closed
//!   (a body that stops arriving, a client that stops reading its response). A runner session
//!   upgraded to a WebSocket is exempt ([`IdleExemption`]): its lifetime is its heartbeat's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::state::AppState;

/// At most one "connection limit reached" warning per this long.
pub const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How the listener treats connections (`--max-connections`, `--header-read-timeout-seconds`,
/// `--idle-timeout-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Put in every request's extensions: a handler that takes the connection over for a long-lived
/// exchange of its own (the runner session's WebSocket) exempts it from the idle timeout.
#[derive(Debug, Clone, Default)]
pub struct IdleExemption(Arc<AtomicBool>);

impl IdleExemption {
    pub fn exempt(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_exempt(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets the open requests finish (kept-
/// alive connections close at once, upgraded sessions are left to their own shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ConnectionSettings,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    // Every connection task holds a receiver; all dropped = all connections done.
    let (done_tx, done_rx) = watch::channel(());
    let mut warnings = LimitWarnings::default();
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                state.metrics.http_connection_limit_reached.inc();
                warnings.waiting(settings.max_connections);
                tokio::select! {
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: say so and give it a moment, as a busy loop
                // would only make it worse.
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Runner sessions exchange small latency-bound frames (assign, update, ack): without
        // TCP_NODELAY each one can wait up to 40 ms behind the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let exemption = IdleExemption::default();
        let io = Connection {
            tcp,
            idle: IdleTimer::new(settings.idle_timeout, exemption.clone()),
            state: state.clone(),
            _permit: permit,
        };
        state.metrics.http_connections.inc();
        let service = app
            .clone()
            .map_request(move |request: axum::http::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(remote));
                request.extensions_mut().insert(exemption.clone());
                request
            });
        tokio::spawn(serve_connection(
            io,
            TowerToHyperService::new(service),
            settings.header_read_timeout,
            state.clone(),
            stop.clone(),
            done_rx.clone(),
        ));
    }
    drop(done_rx);
    done_tx.closed().await;
}

async fn serve_connection<S>(
    io: Connection,
    service: TowerToHyperService<S>,
    header_read_timeout: Duration,
    state: AppState,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) where
    S: tower::Service<
            axum::http::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // WebSockets over HTTP/2 use extended CONNECT.
    builder.http2().enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    let headers_too_slow = e
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    if headers_too_slow {
                        state.metrics.http_connections_timed_out.inc();
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors of one connection that `accept` reports (the peer gave up before it was accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Rate-limits the warning the loop gives when it stops accepting.
#[derive(Debug, Default)]
struct LimitWarnings {
    last: Option<Instant>,
    unreported: u64,
}

impl LimitWarnings {
    fn waiting(&mut self, limit: usize) {
        self.unreported += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < LIMIT_WARNING_EVERY) {
            return;
        }
        tracing::warn!(
            limit,
            times = self.unreported,
            "connection limit reached: {limit} connections are open, so new ones wait in the listen backlog until one closes (raise it with --max-connections)"
        );
        self.last = Some(now);
        self.unreported = 0;
    }
}

/// One accepted socket: holds its permit of the limit, counts itself on `/metrics`, and fails its
/// reads and writes once it has been idle too long.
struct Connection {
    tcp: TcpStream,
    idle: IdleTimer,
    state: AppState,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.state.metrics.http_connections.dec();
    }
}

/// The idle timeout of one connection. Progress only records the time (no timer is touched on the
/// hot path); the sleep is re-armed lazily when it fires early.
struct IdleTimer {
    timeout: Duration,
    last_progress: Instant,
    sleep: Pin<Box<Sleep>>,
    exemption: IdleExemption,
    expired: bool,
}

impl IdleTimer {
    fn new(timeout: Duration, exemption: IdleExemption) -> Self {
        Self {
            timeout,
            last_progress: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(timeout)),
            exemption,
            expired: false,
        }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// With the inner operation pending: has the connection been idle past its timeout?
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.exemption.is_exempt() {
            return false;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last_progress + self.timeout;
            if Instant::now() >= deadline {
                self.expired = true;
                return true;
            }
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl Connection {
    fn check_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.idle.expired {
            return Poll::Ready(Err(idle_error()));
        }
        if self.idle.poll_expired(cx) {
            self.state.metrics.http_connections_timed_out.inc();
            return Poll::Ready(Err(idle_error()));
        }
        Poll::Pending
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.idle.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.check_idle(cx),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.idle.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => this.check_idle(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.idle.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => this.check_idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.tcp).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
