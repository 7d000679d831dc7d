//! The HTTP listener: its own accept loop serving the [`crate::http`]
//! application (a warp filter, as a hyper 1 service) over HTTP/1.1 with
//! upgrades, so `/ws` keeps working, plain or over TLS ([`tls`]).
//!
//! Every request carries a [`ConnectionInfo`] extension (peer address, TLS,
//! connection id, and the flag the application sets when a request carried
//! valid credentials). Which connection to close and when is decided by the
//! sans-IO [`table::ConnectionTable`]: a connection must send a whole
//! request head within `http.header_read_timeout_ms` (the TLS handshake
//! included) and the request's body within as long again (each request
//! body is watched for its end), an idle keep-alive connection is closed
//! after
//! `http.idle_timeout_ms`, and at `http.max_connections` (upgraded
//! WebSockets included) a new connection evicts one that never sent a
//! whole head, else an idle one never authenticated, else is refused. This
//! module carries those decisions out: one task per connection, one reaper
//! task that wakes at the table's next deadline, and a guard in each
//! connection's socket that takes it out of the table when the socket
//! closes (for a WebSocket, when the WebSocket ends). Everything closed is
//! counted on `/metrics` ([`HttpCollector`]).
//!
//! At shutdown the loop stops accepting; connections with a request in
//! flight finish it (hyper's graceful shutdown), the others close at once.

pub mod table;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::HttpConfig;
use crate::connection::ConnectionInfo;
use crate::http::{self, HttpContext};
use crate::metrics::{counter, gauge, labeled_counters, Collector, Counter, DescriptorEncoder};
use table::{Admission, CloseReason, ConnectionTable, Stage, TableLimits};

/// How long the accept loop pauses after an error such as "too many open
/// files" (retrying at once would spin while nothing has closed).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Shortest time between two logged accept errors.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Largest buffer a connection reads a request head into, bytes: far more
/// than a browser's head with its cookies, and it bounds what a client can
/// make the hub hold per connection.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// The open connections, shared by the accept loop, the reaper, every
/// connection task and `/metrics`.
#[derive(Debug)]
pub struct Connections {
    state: Mutex<Tracked>,
    clock: Clock,
    accepted: Counter,
    accept_errors: Counter,
    tls_failures: Counter,
}

#[derive(Debug)]
struct Tracked {
    table: ConnectionTable,
    /// Each open connection's handles, by id.
    handles: HashMap<u64, Handles>,
}

#[derive(Debug)]
struct Handles {
    /// Cancelled to close the connection (eviction, timeout).
    closer: CancellationToken,
    /// What its requests see (the application marks it authenticated).
    info: ConnectionInfo,
}

impl Connections {
    /// No connections yet; bounds from `[http]`.
    pub fn new(config: &HttpConfig, clock: Clock) -> Arc<Connections> {
        Arc::new(Connections {
            state: Mutex::new(Tracked {
                table: ConnectionTable::new(TableLimits {
                    max_connections: config.max_connections,
                    header_timeout_ms: config.header_read_timeout_ms,
                    idle_timeout_ms: config.idle_timeout_ms,
                }),
                handles: HashMap::new(),
            }),
            clock,
            accepted: Counter::default(),
            accept_errors: Counter::default(),
            tls_failures: Counter::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tracked> {
        // The table's invariants hold between calls, whatever panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().mono_ms
    }

    /// Admits a connection from `peer`, closing the victim it evicts;
    /// `None` when it is refused.
    fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        tls: bool,
    ) -> Option<(EntryGuard, CancellationToken, ConnectionInfo)> {
        let now = self.now_ms();
        let mut s = self.lock();
        let Tracked { table, handles } = &mut *s;
        // The application may have marked connections authenticated during
        // a request still running: the table learns it before it chooses.
        for (&id, h) in handles.iter() {
            if h.info.is_authenticated() {
                table.authenticated(id);
            }
        }
        let id = match table.admit(peer, now) {
            Admission::Refuse => return None,
            Admission::Admit(id) => id,
            Admission::AdmitEvicting { id, victim } => {
                if let Some(h) = handles.get(&victim) {
                    h.closer.cancel();
                }
                tracing::debug!(victim, peer = ?table.peer(victim), "HTTP connection evicted to make room");
                id
            }
        };
        let closer = CancellationToken::new();
        let info = ConnectionInfo::new(peer, tls, id);
        handles.insert(
            id,
            Handles {
                closer: closer.clone(),
                info: info.clone(),
            },
        );
        drop(s);
        self.accepted.inc();
        Some((
            EntryGuard {
                connections: self.clone(),
                id,
            },
            closer,
            info,
        ))
    }

    /// Closes the connections whose deadline passed; returns the next
    /// deadline, monotonic ms.
    fn expire(&self) -> Option<u64> {
        let now = self.now_ms();
        let mut s = self.lock();
        for (id, reason) in s.table.expire(now) {
            tracing::debug!(id, reason = reason.name(), "HTTP connection timed out");
            if let Some(h) = s.handles.get(&id) {
                h.closer.cancel();
            }
        }
        s.table.next_deadline()
    }

    fn headers_complete(&self, id: u64, body_pending: bool) {
        let now = self.now_ms();
        self.lock().table.headers_complete(id, body_pending, now);
    }

    fn body_done(&self, id: u64) {
        let now = self.now_ms();
        self.lock().table.body_done(id, now);
    }

    /// A request on `id` was answered; returns whether it is idle now.
    fn request_done(&self, id: u64, authenticated: bool, upgraded: bool) -> bool {
        let now = self.now_ms();
        let mut s = self.lock();
        let idle = s.table.request_done(id, authenticated, now);
        if upgraded {
            s.table.upgraded(id);
            return false;
        }
        idle
    }

    fn bytes_arrived(&self, id: u64) {
        let now = self.now_ms();
        self.lock().table.bytes_arrived(id, now);
    }

    fn stage(&self, id: u64) -> Option<Stage> {
        self.lock().table.stage(id)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().table.open()
    }

    /// Connections closed for `reason` since start.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.lock().table.closed_for(reason)
    }

    /// The shortest of the two timeouts, ms: no deadline can be added
    /// nearer than this to the moment it is added.
    fn shortest_timeout_ms(&self) -> u64 {
        let limits = self.lock().table.limits();
        limits.header_timeout_ms.min(limits.idle_timeout_ms).max(1)
    }
}

/// The listener's families on `/metrics`.
#[derive(Debug)]
pub struct HttpCollector(pub Arc<Connections>);

impl Collector for HttpCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let c = &self.0;
        let (open, closed): (usize, Vec<(&'static str, u64)>) = {
            let s = c.lock();
            (
                s.table.open(),
                s.table.closed().map(|(r, n)| (r.name(), n)).collect(),
            )
        };
        gauge(
            &mut e,
            "sensor_hub_http_connections",
            "HTTP connections open, WebSockets upgraded from them included (at most http.max_connections, plus those being closed).",
            open as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_http_connections_accepted",
            "HTTP connections accepted and served.",
            c.accepted.get(),
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_http_connections_closed",
                "HTTP connections the hub closed, by reason.",
            ),
            "reason",
            closed,
        )?;
        counter(
            &mut e,
            "sensor_hub_http_accept_errors",
            "Errors accepting HTTP connections (e.g. too many open files).",
            c.accept_errors.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_http_tls_handshake_failures",
            "TLS handshakes that failed (not TLS, no common cipher, certificate not trusted by the client).",
            c.tls_failures.get(),
        )
    }
}

/// Takes its connection out of the table when dropped, i.e. when the
/// socket closes.
#[derive(Debug)]
struct EntryGuard {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        let mut s = self.connections.lock();
        s.table.remove(self.id);
        s.handles.remove(&self.id);
    }
}

/// A connection's socket, which tells the table when bytes of a next
/// request arrive on an idle connection, and takes the connection out of
/// the table when dropped (after an upgrade, the WebSocket owns it).
#[derive(Debug)]
struct TrackedIo<I> {
    inner: I,
    guard: EntryGuard,
    /// Set while the connection is idle: the next bytes start a request.
    idle: Arc<AtomicBool>,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && self.idle.swap(false, Ordering::AcqRel)
        {
            self.guard.connections.bytes_arrived(self.guard.id);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
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

/// A request's body, which tells the table when it has arrived whole.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    /// Told once, at the end of the body.
    watch: Option<(Arc<Connections>, u64)>,
}

impl hyper::body::Body for TrackedBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            if let Some((connections, id)) = self.watch.take() {
                connections.body_done(id);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The application as one connection's service: each request gets the
/// connection's [`ConnectionInfo`], and the table hears when a request
/// starts and ends.
#[derive(Debug, Clone)]
struct ConnectionService<S> {
    inner: S,
    info: ConnectionInfo,
    connections: Arc<Connections>,
    idle: Arc<AtomicBool>,
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: hyper::service::Service<
        Request<TrackedBody>,
        Response = warp::reply::Response,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
{
    type Response = warp::reply::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<warp::reply::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let id = self.info.id;
        let body_pending = !request.body().is_end_stream();
        self.connections.headers_complete(id, body_pending);
        let mut request = request.map(|inner| TrackedBody {
            inner,
            watch: body_pending.then(|| (self.connections.clone(), id)),
        });
        request.extensions_mut().insert(self.info.clone());
        let answer = self.inner.call(request);
        let (info, connections, idle) = (
            self.info.clone(),
            self.connections.clone(),
            self.idle.clone(),
        );
        Box::pin(async move {
            let response = answer.await;
            let upgraded =
                matches!(&response, Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS);
            if connections.request_done(id, info.is_authenticated(), upgraded) {
                idle.store(true, Ordering::Release);
            }
            response
        })
    }
}

/// What the listener needs besides its socket.
#[derive(Clone)]
pub struct ListenerContext {
    /// The HTTP application's context.
    pub http: HttpContext,
    /// The open connections (also registered with `/metrics`).
    pub connections: Arc<Connections>,
    /// Present when the listener serves HTTPS.
    pub tls: Option<TlsAcceptor>,
    /// Stops accepting when cancelled.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for ListenerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerContext")
            .field("connections", &self.connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Accepts and serves connections on `listener` until `ctx.cancel` fires,
/// then waits for the requests in flight (the caller bounds the wait with
/// `shutdown.drain_timeout_ms`).
pub async fn run(listener: TcpListener, ctx: ListenerContext) {
    let ListenerContext {
        http: http_ctx,
        connections,
        tls,
        cancel,
    } = ctx;
    let app = TowerToHyperService::new(warp::service(http::routes(http_ctx)));
    let tasks = TaskTracker::new();
    tasks.spawn(reap(connections.clone(), cancel.clone()));
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                connections.accept_errors.inc();
                let now = tokio::time::Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t) >= ACCEPT_ERROR_LOG_EVERY) {
                    last_error_log = Some(now);
                    tracing::warn!(
                        error = %e,
                        "cannot accept HTTP connections; if the error is \"too many open files\", \
                         lower http.max_connections or control.max_connections, or raise the \
                         open-file limit (LimitNOFILE= in the systemd unit)"
                    );
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some((guard, closer, info)) = connections.admit(peer, tls.is_some()) else {
            tracing::debug!(%peer, "HTTP connection refused: every connection is busy or authenticated");
            drop(stream);
            continue;
        };
        let idle = Arc::new(AtomicBool::new(false));
        let service = ConnectionService {
            inner: app.clone(),
            info,
            connections: connections.clone(),
            idle: idle.clone(),
        };
        let connection = Connection {
            guard,
            closer,
            cancel: cancel.clone(),
            idle,
        };
        tasks.spawn(connection.serve(stream, tls.clone(), service));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Wakes at the table's next deadline and closes what is due. No deadline
/// is ever added nearer than the shortest timeout, so waking at least that
/// often misses none.
async fn reap(connections: Arc<Connections>, cancel: CancellationToken) {
    let shortest = connections.shortest_timeout_ms();
    loop {
        let next = connections.expire();
        let now = connections.now_ms();
        let wake_ms = next.unwrap_or(u64::MAX).min(now.saturating_add(shortest));
        let wake = connections
            .clock
            .instant_at(wake_ms)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(shortest));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// One accepted connection's task.
struct Connection {
    guard: EntryGuard,
    /// Cancelled when the table closes this connection.
    closer: CancellationToken,
    /// The hub's shutdown.
    cancel: CancellationToken,
    idle: Arc<AtomicBool>,
}

impl Connection {
    async fn serve<S>(
        self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
        service: ConnectionService<S>,
    ) where
        ConnectionService<S>: hyper::service::Service<
                Request<Incoming>,
                Response = warp::reply::Response,
                Error = Infallible,
            > + Send
            + 'static,
        <ConnectionService<S> as hyper::service::Service<Request<Incoming>>>::Future:
            Send + 'static,
    {
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls else {
            return self.http(stream, service).await;
        };
        // The handshake counts against the header-read timeout: the table
        // keeps the connection `Opening` until its first request head.
        let handshake = tokio::select! {
            biased;
            () = self.closer.cancelled() => return,
            () = self.cancel.cancelled() => return,
            handshake = acceptor.accept(stream) => handshake,
        };
        match handshake {
            Ok(stream) => self.http(stream, service).await,
            Err(e) => {
                self.guard.connections.tls_failures.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
            }
        }
    }

    async fn http<I, S>(self, stream: I, service: ConnectionService<S>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        ConnectionService<S>: hyper::service::Service<
                Request<Incoming>,
                Response = warp::reply::Response,
                Error = Infallible,
            > + Send
            + 'static,
        <ConnectionService<S> as hyper::service::Service<Request<Incoming>>>::Future:
            Send + 'static,
    {
        let Connection {
            guard,
            closer,
            cancel,
            idle,
        } = self;
        let id = guard.id;
        let connections = guard.connections.clone();
        let io = TrackedIo {
            inner: stream,
            guard,
            idle,
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // Head and idle deadlines are the table's.
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(MAX_READ_BUFFER);
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                () = closer.cancelled() => return,
                () = cancel.cancelled(), if !draining => {
                    // A request in flight is finished; anything else closes now.
                    if !matches!(
                        connections.stage(id),
                        Some(Stage::Busy(_) | Stage::Receiving)
                    ) {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
            }
        }
    }
}

/// Errors of one connection that does not concern the listener (the peer
/// gave up before it was accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
