//! The serving loop: accepts TCP connections, optionally terminates TLS, and drives each
//! connection through hyper's HTTP/1.1 server with the API as its service.
//!
//! Owns: the connection cap, the TLS handshake, the header-read and idle timeouts, and the
//! graceful stop of every connection. Must not touch: request handling (the `http` router),
//! the data dir.
//!
//! What a slow or idle client can hold, and for how long:
//! - a connection slot: at most `max_connections` at once; further connections wait in the
//!   kernel's listen backlog until a slot frees, so memory and file descriptors stay bounded;
//! - a TLS handshake: at most `header_read_timeout`;
//! - a request's headers: at most `header_read_timeout`, counted from when the server starts
//!   waiting for them (a new connection, or the previous response sent), so an idle keep-alive
//!   connection is closed after that long too;
//! - a request in its handler (including reading the body): the router's request timeout (408);
//! - a response it does not read: `idle_timeout` without a byte moving either way, once no
//!   handler is running.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Most connections `max_connections` may allow (a semaphore waits for all of them at stop).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// How connections are accepted and served.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Serve HTTPS with this configuration (see [`crate::tls::server_config`]); plain HTTP
    /// without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest wait for a request's complete headers (or a TLS handshake), from when the server
    /// starts waiting for them; the connection is closed beyond it.
    pub header_read_timeout: Duration,
    /// Longest a connection may go with no byte read or written while no request is in a
    /// handler; it is closed beyond it.
    pub idle_timeout: Duration,
    /// Most connections open at once (1 to [`MAX_CONNECTIONS_LIMIT`]); more wait in the backlog.
    pub max_connections: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish its request in progress, and returns once all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    config: &NetConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max = config.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    // Every connection task holds one permit until it has dropped its connection (and with it
    // the router and its state), so taking all permits back means every connection is done.
    let slots = Arc::new(Semaphore::new(max));
    // A watch channel, not a broadcast: a connection that starts watching late still sees the
    // stop, because it reads the current value.
    let (stop, stopped) = watch::channel(false);
    let settings = Arc::new(ConnSettings {
        tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    });
    tokio::pin!(shutdown);
    loop {
        // The slot is taken before `accept`: past the cap, connections wait in the backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        tokio::spawn(connection(
            stream,
            app.clone(),
            Arc::clone(&settings),
            stopped.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Errors that concern one connection only (axum's `serve` skips the same ones).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

struct ConnSettings {
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// One connection, start to close. `_slot` is released when this returns, after the
/// connection and its service have been dropped.
async fn connection(
    stream: TcpStream,
    app: Router,
    settings: Arc<ConnSettings>,
    mut stopped: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let stream = Watched {
        io: stream,
        activity: activity.clone(),
    };
    match &settings.tls {
        None => drive(stream, app, &settings, stopped, activity).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream));
            let tls = tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                tls = handshake => tls,
            };
            match tls {
                Ok(Ok(tls)) => drive(tls, app, &settings, stopped, activity).await,
                // A plain-HTTP client, a client that does not trust our certificate, a scanner.
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP/1.1 on `io` until the client leaves, a timeout closes it, or the server stops.
async fn drive<I>(
    io: I,
    app: Router,
    settings: &ConnSettings,
    mut stopped: watch::Receiver<bool>,
    activity: Activity,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let in_handler = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = in_handler.busy();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = activity.idle(settings.idle_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    // Header timeouts, resets, malformed requests: the client's business.
                    tracing::debug!(error = %e, "connection closed");
                }
                return;
            }
            // Finish the request in progress (if any), then close.
            _ = stopped.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle => {
                tracing::debug!("closing a connection idle for {:?}", settings.idle_timeout);
                return;
            }
        }
    }
}

/// When a connection last moved a byte, and whether a request of it is in a handler.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    origin: Instant,
    /// Microseconds after `origin` of the last byte read or written, or handler finished.
    last: AtomicU64,
    /// Requests of this connection in a handler (at most one with HTTP/1.1).
    busy: AtomicUsize,
}

/// Marks a request in a handler; its drop counts as activity.
struct Busy(Activity);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityState {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }))
    }

    fn touch(&self) {
        let micros = u64::try_from(self.0.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.0.last.fetch_max(micros, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.0.origin + Duration::from_micros(self.0.last.load(Ordering::Relaxed))
    }

    fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once the connection has been idle for `timeout`: no byte moved and no
    /// handler running.
    async fn idle(&self, timeout: Duration) {
        let mut deadline = self.last() + timeout;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            if self.0.busy.load(Ordering::Relaxed) > 0 {
                // A handler's own time is bounded by the request timeout; the end of the
                // handler counts as activity, so the wait restarts from there.
                deadline = now + timeout;
                continue;
            }
            let due = self.last() + timeout;
            if due > now {
                deadline = due;
                continue;
            }
            return;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records in [`Activity`] each time bytes move.
struct Watched<S> {
    io: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
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
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
