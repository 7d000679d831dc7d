//! The socket driver of one WebSocket client: it feeds the sans-IO
//! [`Client`] what arrives (frames, stream wake-ups, written bytes, history
//! answers, timers) and carries out the [`Action`]s it returns. It is
//! generic over the socket (any `Sink` + `Stream` of tungstenite messages),
//! so tests can drive it in memory.
//!
//! A writer task owns the socket's sending half, so a client that does not
//! read blocks only its own writer; it pings every `ws.ping_interval_ms`
//! and batches what is queued into one flush. Bytes handed to it and not
//! yet written are the client's budget figure.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::DeviceId;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Principal};
use crate::clock::{Clock, Now};
use crate::config::WsConfig;
use crate::core::{Core, Snapshot, SubmitError};
use crate::history_api::{self, HistoryGate};
use crate::per_address::AddressLimit;
use crate::registry::Origin;
use crate::stream::subscription::Subscription;
use crate::stream::{Entry, Gone};
use crate::ws::client::{
    Action, Client, ClientConfig, Close, EventSource, HistoryQuery, Tick, WsMetrics,
    HISTORY_IN_FLIGHT,
};
use crate::ws::messages;
use crate::ws::requests::ClientError;

/// Messages the writer may hold beyond the byte budget's accounting.
const WRITER_QUEUE: usize = 4_096;
/// How long an evicted client has to take its close frame (it may need to
/// read what is already in flight first).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages written with one flush.
const WRITE_BATCH: u64 = 64;
/// Longest wait between two timer checks when the clock cannot say when
/// (a manual clock in tests).
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Everything a WebSocket client's task needs.
#[derive(Debug, Clone)]
pub struct WsContext {
    /// The hub's state and stream.
    pub core: Arc<Core>,
    /// `[ws]`.
    pub config: Arc<WsConfig>,
    /// Time.
    pub clock: Clock,
    /// Counters shared by all clients.
    pub metrics: Arc<WsMetrics>,
    /// Fires at shutdown.
    pub cancel: CancellationToken,
    /// Source of client ids.
    pub next_client: Arc<AtomicU64>,
    /// Access control: a client is closed when its credentials end.
    pub auth: Auth,
    /// Clients per address (`ws.max_clients_per_address`).
    pub per_address: Arc<AddressLimit>,
    /// History queries per address, shared with HTTP's.
    pub history: Arc<HistoryGate>,
    /// Every client's bytes waiting, for `ws.total_budget_bytes`.
    pub backlogs: Arc<Backlogs>,
}

impl WsContext {
    /// A context whose per-address caps come from `config`
    /// (`ws.max_clients_per_address`, `http.history_queries_per_address`).
    pub fn new(
        core: Arc<Core>,
        config: &crate::config::HubConfig,
        clock: Clock,
        metrics: Arc<WsMetrics>,
        cancel: CancellationToken,
        auth: Auth,
    ) -> WsContext {
        WsContext {
            core,
            config: Arc::new(config.ws.clone()),
            clock,
            metrics,
            cancel,
            next_client: Arc::new(AtomicU64::new(1)),
            auth,
            per_address: AddressLimit::new(config.ws.max_clients_per_address),
            history: Arc::new(HistoryGate::new(config.http.history_queries_per_address)),
            backlogs: Arc::new(Backlogs::default()),
        }
    }
}

impl EventSource for Core {
    fn epoch(&self) -> Arc<str> {
        Core::epoch(self)
    }
    fn epoch_changes(&self) -> u64 {
        Core::epoch_changes(self)
    }

    fn head(&self) -> u64 {
        self.stream_head()
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Arc<Entry>>, Gone> {
        self.read_stream(from, max)
    }
    fn read_previous(&self, epoch: &Arc<str>, from: u64, max: usize) -> Vec<Arc<Entry>> {
        Core::read_previous(self, epoch, from, max)
    }
    fn continues(&self, epoch: &Arc<str>) -> Option<u64> {
        self.stream_continues(epoch)
    }

    fn snapshot(&self, subscription: &Subscription, now: Now) -> Snapshot {
        Core::snapshot(self, Some(subscription), now)
    }

    fn submit(
        &self,
        device: DeviceId,
        body: CommandBody,
        wait: bool,
        origin: Origin,
        now: Now,
    ) -> Result<(), SubmitError> {
        self.submit_command(device, body, wait, origin, now)
            .map(|_| ())
    }
}

/// A message for the writer, with its size for the budget.
#[derive(Debug)]
struct Outgoing {
    message: Message,
    bytes: usize,
    /// When its oldest reading was read (µs, the hub's monotonic clock).
    received_us: Option<u64>,
}

/// The writer's side of the budget: bytes queued and not yet written.
#[derive(Debug, Default)]
struct Queued {
    bytes: AtomicUsize,
    /// Set while the client waits for its queue to drain; only then does a
    /// write wake the driver (a wake-up per message would cost a stream
    /// read, under the core's lock, per message and client).
    draining: AtomicBool,
    /// Wakes the driver when bytes were written (the client may take more).
    written: Notify,
    /// Set when the hub closes the client to bring all clients back under
    /// `ws.total_budget_bytes`: its writer drops what is queued at once,
    /// even in the middle of a write the client does not read.
    cut: AtomicBool,
    /// Wakes the driver when `cut` is set.
    cut_driver: Notify,
    /// Wakes the writer when `cut` is set.
    cut_writer: Notify,
}

/// The bytes every client has waiting, so that when all together exceed
/// `ws.total_budget_bytes` the hub closes the clients furthest behind
/// first ([`furthest_behind`]). The lock is taken only to join, to leave,
/// and while over the budget.
#[derive(Debug, Default)]
pub struct Backlogs {
    clients: std::sync::Mutex<std::collections::HashMap<u64, Arc<Queued>>>,
}

impl Backlogs {
    fn join(&self, id: u64, queued: Arc<Queued>) {
        self.lock().insert(id, queued);
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<Queued>>> {
        // A panic elsewhere cannot leave the map half-changed.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cuts the clients furthest behind until the others' bytes fit in
    /// `budget`; returns how many it cut.
    fn enforce(&self, budget: usize) -> usize {
        let clients = self.lock();
        let backlog: Vec<(u64, usize)> = clients
            .iter()
            .filter(|(_, q)| !q.cut.load(Ordering::Acquire))
            .map(|(&id, q)| (id, q.bytes.load(Ordering::Acquire)))
            .collect();
        let chosen = furthest_behind(backlog, budget);
        for id in &chosen {
            if let Some(q) = clients.get(id) {
                q.cut.store(true, Ordering::Release);
                q.cut_driver.notify_one();
                q.cut_writer.notify_one();
            }
        }
        chosen.len()
    }
}

/// Which clients to close, most bytes waiting first, so that the rest
/// together have at most `budget` bytes waiting.
pub fn furthest_behind(mut backlog: Vec<(u64, usize)>, budget: usize) -> Vec<u64> {
    let mut total: usize = backlog.iter().map(|&(_, bytes)| bytes).sum();
    // Most bytes first; the older client (lower id) first among equals.
    backlog.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen = Vec::new();
    for (id, bytes) in backlog {
        if total <= budget {
            break;
        }
        total -= bytes;
        chosen.push(id);
    }
    chosen
}

/// Serves one client with `principal`'s rights, at `peer` (`None` when
/// unknown), on `socket` until it leaves, is closed, or the hub stops.
pub async fn run<S>(ctx: WsContext, principal: Principal, socket: S, peer: Option<IpAddr>)
where
    S: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send + 'static,
{
    let (sink, mut incoming) = socket.split();
    let (out, out_rx) = mpsc::channel(WRITER_QUEUE);
    let queued = Arc::new(Queued::default());
    let discard = Arc::new(AtomicBool::new(false));
    let ping_every = Duration::from_millis(ctx.config.ping_interval_ms.max(1));
    let mut writer = tokio::spawn(write(
        ctx.metrics.clone(),
        sink,
        out_rx,
        queued.clone(),
        discard.clone(),
        ping_every,
        ctx.clock.clone(),
    ));
    let id = ctx.next_client.fetch_add(1, Ordering::Relaxed);
    ctx.backlogs.join(id, queued.clone());
    let mut client = Client::new(
        id,
        principal.role,
        ClientConfig::from(&*ctx.config),
        ctx.metrics.clone(),
        &*ctx.core,
        ctx.clock.now(),
    );
    let mut driver = Driver {
        ctx: &ctx,
        out,
        queued: queued.clone(),
        peer,
    };
    let (history_tx, mut history_rx) = mpsc::channel::<String>(HISTORY_IN_FLIGHT);
    let mut head = ctx.core.watch_head();
    let mut credentials = ctx.auth.changes();
    let max_message = ctx.config.max_client_message_bytes;
    // One timer, moved only when the client's next deadline moves (not
    // re-registered on every wake-up).
    let timer = tokio::time::sleep(IDLE_CHECK);
    tokio::pin!(timer);
    let close = loop {
        if let Some(end) = driver.carry_out(&mut client, &history_tx) {
            break end;
        }
        let total_budget = ctx.config.total_budget_bytes;
        if usize::try_from(ctx.metrics.queued_bytes.get()).is_ok_and(|all| all > total_budget) {
            let cut = ctx.backlogs.enforce(total_budget);
            if cut > 0 {
                tracing::info!(
                    clients = cut,
                    "WebSocket clients together over ws.total_budget_bytes: closing those furthest behind"
                );
            }
        }
        let draining = client.waits_for_drain();
        // SeqCst on both sides (here and in the writer): either the writer
        // sees the flag and wakes us, or we see the bytes it wrote.
        queued.draining.store(draining, Ordering::SeqCst);
        if draining && queued.bytes.load(Ordering::SeqCst) < ctx.config.client_budget_bytes {
            client.pump(&*ctx.core, driver.tick());
            continue;
        }
        let wake = client
            .poll_timeout()
            .and_then(|ms| ctx.clock.instant_at(ms))
            .unwrap_or_else(|| Instant::now() + IDLE_CHECK);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        let woken = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Wake::Shutdown,
            frame = incoming.next() => Wake::Frame(frame),
            // Not while the client holds back (coalescing): a wake-up per
            // event would cost what coalescing saves.
            changed = head.changed(), if !client.is_holding() => match changed {
                Ok(()) => Wake::Stream,
                Err(_) => break None,
            },
            // Polled (so registered with the writer's Notify) only while
            // the client waits for its queue to drain.
            _ = queued.written.notified(), if draining => Wake::Stream,
            _ = queued.cut_driver.notified() => Wake::Cut,
            _ = &mut timer => Wake::Timer,
            Some(answer) = history_rx.recv() => Wake::History(answer),
            Ok(()) = credentials.changed() => Wake::Credentials,
        };
        // The moment is read after the wake-up, not before the wait.
        let tick = driver.tick();
        match woken {
            Wake::Shutdown => client.handle_shutdown(),
            Wake::Credentials => {
                if !ctx.auth.still_valid(&principal, tick.now) {
                    client.handle_logged_out();
                }
            }
            Wake::Frame(frame) => match frame {
                None => break None,
                Some(Ok(Message::Text(text))) => client.handle_text(&text, &*ctx.core, tick),
                Some(Ok(Message::Binary(_))) => client.handle_binary(tick),
                // Close: tungstenite answers it; the next read ends the stream.
                // Ping/Pong: answered by tungstenite; heard all the same.
                Some(Ok(_)) => client.handle_heard(tick),
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    client.handle_too_large(max_message);
                }
                Some(Err(WsError::Utf8(_))) => client.handle_invalid_utf8(),
                Some(Err(e)) => {
                    tracing::debug!(client = id, error = %e, "WebSocket client error");
                    break None;
                }
            },
            Wake::Stream => client.pump(&*ctx.core, tick),
            Wake::Timer => client.handle_timeout(&*ctx.core, tick),
            Wake::History(answer) => client.handle_history_answer(answer),
            Wake::Cut => {
                if queued.cut.load(Ordering::Acquire) {
                    client.handle_writer_full();
                }
            }
        }
    };
    // The writer sends the close frame after what is queued (or, for a
    // client that does not read, after only the message it is writing), then
    // ends. A client that never takes it is cut off after CLOSE_TIMEOUT.
    if let Some(close) = close {
        discard.store(close.discard, Ordering::Release);
        let frame = Outgoing {
            message: Message::Close(Some(CloseFrame {
                code: CloseCode::from(close.code),
                reason: close.reason.into(),
            })),
            bytes: 0,
            received_us: None,
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, driver.out.send(frame)).await;
    }
    drop(driver);
    ctx.backlogs.leave(id);
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        // Bytes of messages dropped unsent leave the hub-wide gauge.
        let unsent = queued.bytes.swap(0, Ordering::AcqRel);
        ctx.metrics
            .queued_bytes
            .dec_by(i64::try_from(unsent).unwrap_or(i64::MAX));
    }
}

/// What woke the driver.
enum Wake {
    Shutdown,
    Frame(Option<Result<Message, WsError>>),
    /// Events were appended, or bytes written: the client may take more.
    Stream,
    Timer,
    History(String),
    /// A session ended or the credentials file changed.
    Credentials,
    /// The hub closes it: all clients together were over their budget.
    Cut,
}

/// The driver's I/O half: hands messages to the writer, starts history
/// queries.
struct Driver<'a> {
    ctx: &'a WsContext,
    out: mpsc::Sender<Outgoing>,
    queued: Arc<Queued>,
    /// The client's address, for the per-address history cap.
    peer: Option<IpAddr>,
}

impl Driver<'_> {
    fn tick(&self) -> Tick {
        let metrics = &self.ctx.metrics;
        Tick {
            now: self.ctx.clock.now(),
            queued: self.queued.bytes.load(Ordering::Acquire),
            coalesce: usize::try_from(metrics.clients.get())
                .is_ok_and(|n| n >= self.ctx.config.coalesce_from_clients),
        }
    }

    /// Carries out every queued action; `Some` ends the loop (with the
    /// close to send, or `None` when the client is gone).
    fn carry_out(
        &mut self,
        client: &mut Client,
        history_tx: &mpsc::Sender<String>,
    ) -> Option<Option<Close>> {
        while let Some(action) = client.poll_action() {
            match action {
                Action::Send(text, received_us) => {
                    let bytes = text.len();
                    self.queued.bytes.fetch_add(bytes, Ordering::AcqRel);
                    self.ctx
                        .metrics
                        .queued_bytes
                        .inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
                    let outgoing = Outgoing {
                        message: Message::Text(text),
                        bytes,
                        received_us,
                    };
                    if let Err(e) = self.out.try_send(outgoing) {
                        self.queued.bytes.fetch_sub(bytes, Ordering::AcqRel);
                        self.ctx
                            .metrics
                            .queued_bytes
                            .dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
                        match e {
                            mpsc::error::TrySendError::Full(_) => {
                                client.handle_writer_full();
                            }
                            mpsc::error::TrySendError::Closed(_) => return Some(None),
                        }
                    }
                }
                Action::History(query) => {
                    let HistoryQuery {
                        id,
                        device,
                        sensor,
                        range,
                    } = *query;
                    let core = self.ctx.core.clone();
                    let gate = self.ctx.history.clone();
                    let peer = self.peer;
                    let metrics = self.ctx.metrics.clone();
                    let tx = history_tx.clone();
                    let now = self.ctx.clock.now();
                    tokio::spawn(async move {
                        let text = match history_api::answer(
                            &core,
                            &gate,
                            peer,
                            device,
                            &sensor,
                            &range,
                            id.clone(),
                            now,
                        )
                        .await
                        {
                            Ok(answer) => answer.to_json(),
                            Err(e) => {
                                let code = match e {
                                    ref e if e.is_busy() => ClientError::HistoryBusy,
                                    ref e if e.is_client_error() => ClientError::BadHistory,
                                    _ => ClientError::HistoryUnavailable,
                                };
                                metrics.client_errors.inc(code.index());
                                messages::error(code, &e.to_string(), id.as_ref())
                            }
                        };
                        // Fails only when the client has gone.
                        let _ = tx.send(text).await;
                    });
                }
                Action::Close(close) => return Some(Some(close)),
            }
        }
        None
    }
}

async fn write<W>(
    metrics: Arc<WsMetrics>,
    mut sink: W,
    mut rx: mpsc::Receiver<Outgoing>,
    queued: Arc<Queued>,
    discard: Arc<AtomicBool>,
    ping_every: Duration,
    clock: Clock,
) where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            _ = queued.cut_writer.notified() => return cut(&metrics, rx, &queued, 0),
            outgoing = rx.recv() => outgoing,
            _ = ping.tick() => Some(Outgoing {
                message: Message::Ping(Bytes::new()),
                bytes: 0,
                received_us: None,
            }),
        };
        let Some(first) = first else {
            break; // the driver dropped the queue
        };
        // Bytes taken from the queue in this batch (written or not).
        let mut taken = 0;
        let mut oldest_us = None;
        let batch = write_batch(
            &mut sink,
            &mut rx,
            first,
            &discard,
            &mut taken,
            &mut oldest_us,
        );
        let outcome = tokio::select! {
            biased;
            // Cut in the middle of a write the client does not read: what
            // is queued is dropped at once.
            _ = queued.cut_writer.notified() => return cut(&metrics, rx, &queued, taken),
            outcome = batch => outcome,
        };
        if let (Some(received), true) = (oldest_us, outcome.ok) {
            let latency = clock.mono_us().saturating_sub(received);
            metrics.write_latency.0.observe(latency);
        }
        queued.bytes.fetch_sub(taken, Ordering::SeqCst);
        if queued.draining.load(Ordering::SeqCst) {
            queued.written.notify_one();
        }
        metrics
            .queued_bytes
            .dec_by(i64::try_from(taken).unwrap_or(i64::MAX));
        metrics.messages_sent.inc_by(outcome.messages);
        if !outcome.ok || outcome.close {
            break;
        }
    }
    let _ = sink.close().await;
}

/// What one batch of writes did.
struct Written {
    /// Messages written (pings and the close frame not counted).
    messages: u64,
    /// The socket took them all.
    ok: bool,
    /// The close frame was among them.
    close: bool,
}

/// Writes `first` and whatever is already queued behind it (up to
/// [`WRITE_BATCH`] messages), then flushes once: one write for many small
/// messages when the client is behind. Adds the bytes of every message it
/// takes to `taken` as it takes it, so a batch dropped half-way is
/// accounted for.
async fn write_batch<W>(
    sink: &mut W,
    rx: &mut mpsc::Receiver<Outgoing>,
    first: Outgoing,
    discard: &AtomicBool,
    taken: &mut usize,
    oldest_us: &mut Option<u64>,
) -> Written
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut next = Some(first);
    let mut done = Written {
        messages: 0,
        ok: true,
        close: false,
    };
    while let Some(Outgoing {
        message,
        bytes,
        received_us,
    }) = next.take()
    {
        *taken += bytes;
        *oldest_us = match (*oldest_us, received_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let is_close = message.is_close();
        if !discard.load(Ordering::Acquire) || is_close {
            done.ok = sink.feed(message).await.is_ok();
            done.messages += u64::from(bytes > 0);
        }
        done.close = is_close;
        if !done.ok || done.close || done.messages >= WRITE_BATCH {
            break;
        }
        next = rx.try_recv().ok();
    }
    done.ok = done.ok && sink.flush().await.is_ok();
    done
}

/// The writer of a client cut to bring all clients under their total
/// budget stops: what is still queued is dropped and leaves the budget
/// (`taken`: bytes of a batch dropped half-way). The socket is dropped
/// without a close frame: the client was not reading it.
fn cut(metrics: &WsMetrics, mut rx: mpsc::Receiver<Outgoing>, queued: &Queued, taken: usize) {
    // Closed first, so the driver's later sends fail (and it takes their
    // bytes back itself) rather than racing this count.
    rx.close();
    let mut dropped = taken;
    while let Ok(outgoing) = rx.try_recv() {
        dropped += outgoing.bytes;
    }
    queued.bytes.fetch_sub(dropped, Ordering::SeqCst);
    metrics
        .queued_bytes
        .dec_by(i64::try_from(dropped).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests;
