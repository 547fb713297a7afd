//! The accept loop: HTTP/1 connections served by hyper with the limits that keep one
//! client from starving the others.
//!
//! - at most `server.max_connections` connections are served at once; beyond that, new
//!   connections wait in the kernel's backlog until one closes;
//! - a connection whose request headers do not arrive in full within
//!   `server.header_read_timeout_ms` of their first byte (or of the connection's start)
//!   is closed, and so is a kept-alive connection idle for `server.idle_timeout_ms`; a
//!   watchdog per connection compares the time of its last byte with the requests in
//!   flight (a slow body is bounded by the handlers' `server.body_read_timeout_ms`);
//! - on shutdown the listener closes, idle connections close, requests in flight get
//!   `server.shutdown_grace_ms` to finish, and whatever remains is dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Connection limits, from `[server]` in `quiver.toml`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            serve_one(stream, router, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown grace period over: closing the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What the watchdog of one connection knows about it.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes read from the client so far.
    bytes_read: AtomicU64,
    /// When the first byte after the last request boundary arrived (ms since the
    /// connection started): the start of the request whose headers are awaited.
    request_started_ms: AtomicU64,
    /// `bytes_read` at the last request boundary (a request handed to the router, or
    /// its response produced).
    bytes_at_request: AtomicU64,
    /// Requests handed to the router so far.
    requests: AtomicU64,
    /// When the last response was produced (ms since the connection started).
    idle_since_ms: AtomicU64,
    /// Requests being handled.
    in_flight: AtomicUsize,
}

async fn serve_one(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
        started,
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = InFlight::start(&activity, started);
            let response = router
                .clone()
                .oneshot(Request::from(request.map(axum::body::Body::new)));
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    // The watchdog below enforces the header timeout from the first byte of a request;
    // hyper's own timer (which also counts idle keep-alive time) is a backstop.
    builder.header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let watchdog = watch_connection(&activity, started, limits);
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut watchdog => return, // dropping the connection closes it
            changed = stop.changed(), if !*stop.borrow() => {
                if changed.is_err() || *stop.borrow() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Completes when the connection should be closed: idle too long, or a request's
/// headers arriving too slowly.
async fn watch_connection(activity: &Activity, started: Instant, limits: ConnectionLimits) {
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            continue;
        }
        let now = started.elapsed().as_millis() as u64;
        let read = activity.bytes_read.load(Ordering::Acquire);
        let at_request = activity.bytes_at_request.load(Ordering::Acquire);
        let first_request = activity.requests.load(Ordering::Acquire) == 0;
        let header_limit = limits.header_read_timeout.as_millis() as u64;
        if read > at_request {
            // Part of a request has arrived: its headers get header_read_timeout.
            let since = activity.request_started_ms.load(Ordering::Acquire);
            if now.saturating_sub(since) > header_limit {
                tracing::debug!("closing a connection whose request headers are too slow");
                return;
            }
        } else if first_request {
            // A new connection owes its first request's headers within the same limit.
            if now > header_limit {
                tracing::debug!("closing a connection that sent no request");
                return;
            }
        } else {
            let idle_since = activity.idle_since_ms.load(Ordering::Acquire);
            if now.saturating_sub(idle_since) > limits.idle_timeout.as_millis() as u64 {
                tracing::debug!("closing an idle connection");
                return;
            }
        }
    }
}

/// Counts a request in flight for the watchdog; on drop, marks the connection idle.
struct InFlight {
    activity: Arc<Activity>,
    started: Instant,
}

impl InFlight {
    fn start(activity: &Arc<Activity>, started: Instant) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.bytes_at_request.store(
            activity.bytes_read.load(Ordering::Acquire),
            Ordering::Release,
        );
        InFlight {
            activity: Arc::clone(activity),
            started,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Bytes of the body read by the handler belong to this request, not the next.
        self.activity.bytes_at_request.store(
            self.activity.bytes_read.load(Ordering::Acquire),
            Ordering::Release,
        );
        self.activity
            .idle_since_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that records when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    started: Instant,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let before = self
                .activity
                .bytes_read
                .fetch_add(read as u64, Ordering::AcqRel);
            if before == self.activity.bytes_at_request.load(Ordering::Acquire) {
                self.activity
                    .request_started_ms
                    .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
            }
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
