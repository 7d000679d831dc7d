//! One WebSocket client: its subscription, its cursor in the event stream,
//! its budget, and the task that writes to it.
//!
//! The session task reads the client's requests and moves events from the
//! replay ring to the client; a writer task owns the socket's sending half,
//! so a client that does not read blocks only its own writer. Bytes handed
//! to the writer and not yet written count against `ws.client_budget_bytes`:
//! - live mode: over budget, the session stops taking events (it never
//!   skips one); still over budget after `ws.slow_grace_ms`, or once the
//!   ring has dropped events it had not taken, the client is closed with
//!   4008 "slow consumer";
//! - aggregate mode: events keep being folded, and a new `aggregates`
//!   message is only handed over while under budget (latest value wins).
//!
//! The writer pings every `ws.ping_interval_ms`; a client silent for that
//! plus `ws.pong_timeout_ms` is closed with 4009.
//!
//! A `history` request runs in a task of its own (the database is read on a
//! blocking thread); its answer comes back to the session, which hands it
//! to the writer like any message. A client may have at most
//! [`HISTORY_IN_FLIGHT`] of them running; more are refused.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use sensor_hub_protocol::DeviceId;

use crate::history::query::{RangeRequest, SensorRef};
use crate::history_api::{self, HistoryError};
use crate::hub::{unix_ms, Hub};
use crate::metrics::bump;
use crate::registry::Origin;
use crate::stream::conflate::Conflator;
use crate::stream::subscription::{Mode, Subscription};
use crate::stream::{Entry, Event, Gone};
use crate::views;
use crate::ws::limits::{Admission, RateLimit};
use crate::ws::messages;
use crate::ws::requests::{self, ClientError, Refusal, Request};

/// The upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Messages the writer may hold beyond the byte budget's accounting.
const WRITER_QUEUE: usize = 4_096;
/// How long an evicted client has to take its close frame (it may need to
/// read what is already in flight first).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events taken from the ring per lock.
const READ_BATCH: usize = 256;
/// Most messages written with one flush.
const WRITE_BATCH: u64 = 64;
/// History requests a client may have running at once.
pub const HISTORY_IN_FLIGHT: usize = 4;
/// How often budgets and pongs are checked.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Close code for a client that cannot keep up.
pub const SLOW_CONSUMER: u16 = 4008;
/// Close code for a client that stopped answering pings.
pub const NO_PONG: u16 = 4009;

/// Why the hub closed a client (counted on `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Over budget too long, or behind the replay ring.
    SlowConsumer,
    /// No pong in time.
    NoPong,
    /// Kept flooding after `rate_limited` errors.
    Flood,
    /// Sent a message over the size limit.
    TooLarge,
}

impl Eviction {
    /// Every reason, in index order.
    pub const ALL: [Eviction; 4] = [
        Eviction::SlowConsumer,
        Eviction::NoPong,
        Eviction::Flood,
        Eviction::TooLarge,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Eviction::ALL.len();

    /// Metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::SlowConsumer => "slow_consumer",
            Eviction::NoPong => "no_pong",
            Eviction::Flood => "flood",
            Eviction::TooLarge => "too_large",
        }
    }

    /// Position in [`Eviction::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn close_frame(self) -> CloseFrame {
        let (code, reason) = match self {
            Eviction::SlowConsumer => (CloseCode::from(SLOW_CONSUMER), "slow consumer"),
            Eviction::NoPong => (CloseCode::from(NO_PONG), "no pong"),
            Eviction::Flood => (CloseCode::Policy, "too many messages"),
            Eviction::TooLarge => (CloseCode::Size, "message too large"),
        };
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// A message for the writer, with its size for the budget.
struct Outgoing {
    message: Message,
    bytes: usize,
}

/// How the session loop ends.
enum End {
    /// The client left or the connection broke.
    Gone,
    /// The hub closes it with this frame; `discard` drops what is still
    /// queued for it (a client that cannot or does not read).
    Close {
        /// The close frame.
        frame: CloseFrame,
        /// Drop queued messages instead of sending them first.
        discard: bool,
    },
}

struct Session {
    hub: Hub,
    client: u64,
    out: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
    subscription: Option<Subscription>,
    cursor: u64,
    conflator: Conflator,
    folded_up_to: u64,
    over_budget_since: Option<Instant>,
    last_heard: Instant,
    rate: RateLimit,
    /// Answers of history requests, as JSON text (room for every one
    /// running, so a finished query never waits).
    history_tx: mpsc::Sender<String>,
    history_in_flight: usize,
}

/// Serves one client until it leaves, is evicted, or the hub stops.
pub async fn run(hub: Hub, ws: Socket) {
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel(WRITER_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let closing = Arc::new(AtomicBool::new(false));
    let ping_every = Duration::from_millis(hub.config().ws.ping_interval_ms);
    let mut writer = tokio::spawn(write(
        hub.clone(),
        sink,
        out_rx,
        queued.clone(),
        closing.clone(),
        ping_every,
    ));
    let config = &hub.config().ws;
    let (history_tx, mut history_rx) = mpsc::channel(HISTORY_IN_FLIGHT);
    let mut session = Session {
        client: hub.next_client_id(),
        out,
        queued: queued.clone(),
        subscription: None,
        cursor: 0,
        conflator: Conflator::default(),
        folded_up_to: 0,
        over_budget_since: None,
        last_heard: Instant::now(),
        rate: RateLimit::new(
            config.client_messages_per_s,
            config.client_message_burst,
            unix_ms(),
        ),
        history_tx,
        history_in_flight: 0,
        hub: hub.clone(),
    };
    let head = hub.ring().head();
    session.cursor = head + 1;
    let end = match session.send(messages::hello(hub.epoch(), head, unix_ms())) {
        Ok(()) => session.serve(&mut stream, &mut history_rx).await,
        Err(end) => end,
    };
    // The writer sends the close frame after what is queued (or, for a
    // client that does not read, after only the message it is writing), then
    // ends. A client that never takes it is cut off after CLOSE_TIMEOUT.
    if let End::Close { frame, discard } = end {
        closing.store(discard, Ordering::Release);
        let close = Outgoing {
            message: Message::Close(Some(frame)),
            bytes: 0,
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.out.send(close)).await;
    }
    drop(session);
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        // Bytes of messages dropped unsent leave the hub-wide gauge.
        let unsent = queued.swap(0, Ordering::AcqRel) as u64;
        hub.metrics()
            .ws_queued_bytes
            .fetch_sub(unsent, Ordering::AcqRel);
    }
}

async fn write(
    hub: Hub,
    mut sink: SplitSink<Socket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            outgoing = rx.recv() => outgoing,
            _ = ping.tick() => Some(Outgoing { message: Message::Ping(Bytes::new()), bytes: 0 }),
        };
        let Some(first) = first else {
            break; // the session dropped the queue
        };
        // Everything already queued goes out with one flush (one write for
        // many small messages when the client is behind).
        let mut next = Some(first);
        let (mut bytes_done, mut messages, mut ok, mut close) = (0, 0, true, false);
        while let Some(Outgoing { message, bytes }) = next.take() {
            let is_close = message.is_close();
            if !closing.load(Ordering::Acquire) || is_close {
                ok = sink.feed(message).await.is_ok();
                messages += u64::from(bytes > 0);
            }
            bytes_done += bytes;
            close = is_close;
            if !ok || close || messages >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        ok = ok && sink.flush().await.is_ok();
        queued.fetch_sub(bytes_done, Ordering::AcqRel);
        let metrics = hub.metrics();
        metrics
            .ws_queued_bytes
            .fetch_sub(bytes_done as u64, Ordering::AcqRel);
        metrics
            .ws_messages_sent
            .fetch_add(messages, Ordering::Relaxed);
        if !ok || close {
            break;
        }
    }
    let _ = sink.close().await;
}

impl Session {
    async fn serve(
        &mut self,
        stream: &mut SplitStream<Socket>,
        history_rx: &mut mpsc::Receiver<String>,
    ) -> End {
        let cancel = self.hub.cancel_token();
        let mut head = self.hub.watch_head();
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut aggregate_tick: Option<Interval> = None;
        loop {
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let frame = CloseFrame { code: CloseCode::Away, reason: "hub shutting down".into() };
                    return End::Close { frame, discard: false };
                }
                incoming = stream.next() => self.incoming(incoming, &mut aggregate_tick),
                _ = check.tick() => self.check().and_then(|()| self.pump()),
                changed = head.changed() => match changed {
                    Ok(()) => self.pump(),
                    Err(_) => Err(End::Gone),
                },
                _ = tick(&mut aggregate_tick) => self.flush_aggregates(),
                Some(answer) = history_rx.recv() => {
                    self.history_in_flight -= 1;
                    self.send(answer)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn budget(&self) -> usize {
        self.hub.config().ws.client_budget_bytes
    }

    fn over_budget(&self) -> bool {
        self.queued.load(Ordering::Acquire) >= self.budget()
    }

    /// Hands a message to the writer.
    fn send(&mut self, text: String) -> Result<(), End> {
        let bytes = text.len();
        self.send_shared(Utf8Bytes::from(text), bytes)
    }

    fn send_shared(&mut self, text: Utf8Bytes, bytes: usize) -> Result<(), End> {
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        self.hub
            .metrics()
            .ws_queued_bytes
            .fetch_add(bytes as u64, Ordering::AcqRel);
        let outgoing = Outgoing {
            message: Message::Text(text),
            bytes,
        };
        match self.out.try_send(outgoing) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.fetch_sub(bytes, Ordering::AcqRel);
                self.hub
                    .metrics()
                    .ws_queued_bytes
                    .fetch_sub(bytes as u64, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(self.evict(Eviction::SlowConsumer)),
                    mpsc::error::TrySendError::Closed(_) => Err(End::Gone),
                }
            }
        }
    }

    fn evict(&self, why: Eviction) -> End {
        bump(&self.hub.metrics().ws_evictions[why.index()]);
        tracing::info!(
            client = self.client,
            reason = why.name(),
            "closing WebSocket client"
        );
        End::Close {
            frame: why.close_frame(),
            discard: matches!(why, Eviction::SlowConsumer | Eviction::NoPong),
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> Result<(), End> {
        bump(&self.hub.metrics().ws_client_errors[refusal.error.index()]);
        let text = messages::error(refusal.error, &refusal.message, refusal.id.as_ref());
        self.send(text)
    }

    fn incoming(
        &mut self,
        incoming: Option<Result<Message, WsError>>,
        aggregate_tick: &mut Option<Interval>,
    ) -> Result<(), End> {
        self.last_heard = Instant::now();
        match incoming {
            None => Err(End::Gone),
            Some(Ok(Message::Text(text))) => {
                match self.rate.admit(unix_ms()) {
                    Admission::Accept => {}
                    Admission::Refuse => {
                        return self.refuse(Refusal {
                            error: ClientError::RateLimited,
                            message: "too many messages; slow down".into(),
                            id: None,
                        })
                    }
                    Admission::Close => return Err(self.evict(Eviction::Flood)),
                }
                let min_interval = self.hub.config().ws.min_aggregate_interval_ms;
                match requests::parse(&text, min_interval) {
                    Ok(request) => self.request(request, aggregate_tick),
                    Err(refusal) => self.refuse(refusal),
                }
            }
            Some(Ok(Message::Binary(_))) => self.refuse(Refusal {
                error: ClientError::Binary,
                message: "binary frames are not supported; send JSON text".into(),
                id: None,
            }),
            // Close: tungstenite answers it; the next read ends the stream.
            // Ping/Pong: answered by tungstenite / counted as heard above.
            Some(Ok(_)) => Ok(()),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                bump(&self.hub.metrics().ws_client_errors[ClientError::TooLarge.index()]);
                Err(self.evict(Eviction::TooLarge))
            }
            Some(Err(e)) => {
                tracing::debug!(client = self.client, error = %e, "WebSocket client error");
                Err(End::Gone)
            }
        }
    }

    fn request(
        &mut self,
        request: Request,
        aggregate_tick: &mut Option<Interval>,
    ) -> Result<(), End> {
        match request {
            Request::Ping { id } => self.send(messages::pong(id.as_ref())),
            Request::Command {
                id,
                device,
                body,
                wait,
            } => {
                // Its statuses arrive through the stream (routed to us by origin).
                let origin = Origin {
                    request_id: id,
                    client: Some(self.client),
                };
                self.hub
                    .control(|r, now| r.submit(device, body, wait, origin, now));
                Ok(())
            }
            Request::History {
                id,
                device,
                sensor,
                range,
            } => self.history(id, device, sensor, range),
            Request::Subscribe { id, subscription } => {
                self.start(subscription, aggregate_tick);
                self.send_snapshot(id.as_ref(), None)
            }
            Request::Unsubscribe { id } => {
                self.subscription = None;
                *aggregate_tick = None;
                self.conflator.take();
                let head = self.hub.ring().head();
                self.send(messages::ack(id.as_ref(), "unsubscribe", head))
            }
            Request::Resume {
                id,
                epoch,
                last_seq,
                subscription,
            } => {
                self.start(subscription, aggregate_tick);
                let reason = if epoch != self.hub.epoch() {
                    Some("the hub restarted since (new epoch)")
                } else {
                    let ring = self.hub.ring();
                    if last_seq > ring.head() {
                        Some("last_seq is ahead of this hub's stream")
                    } else if ring.read_from(last_seq + 1, 0).is_err() {
                        Some("the messages after last_seq are no longer buffered")
                    } else {
                        None
                    }
                };
                match reason {
                    Some(reason) => self.send_snapshot(id.as_ref(), Some(reason)),
                    None => {
                        self.cursor = last_seq + 1;
                        self.send(messages::ack(id.as_ref(), "resume", last_seq))?;
                        self.pump()
                    }
                }
            }
        }
    }

    /// Starts a history query; its answer (or error) arrives on the
    /// session's history channel.
    fn history(
        &mut self,
        id: Option<serde_json::Value>,
        device: DeviceId,
        sensor: SensorRef,
        range: RangeRequest,
    ) -> Result<(), End> {
        if self.history_in_flight >= HISTORY_IN_FLIGHT {
            return self.refuse(Refusal {
                error: ClientError::HistoryBusy,
                message: format!(
                    "{HISTORY_IN_FLIGHT} history requests are already running; wait for their answers"
                ),
                id,
            });
        }
        self.history_in_flight += 1;
        let hub = self.hub.clone();
        let tx = self.history_tx.clone();
        tokio::spawn(async move {
            let text = match history_api::answer(&hub, device, &sensor, &range, id.clone()).await {
                Ok(answer) => answer.to_json(),
                Err(e) => {
                    let code = match e {
                        HistoryError::Busy => ClientError::HistoryBusy,
                        ref e if e.is_client_error() => ClientError::BadHistory,
                        _ => ClientError::HistoryUnavailable,
                    };
                    bump(&hub.metrics().ws_client_errors[code.index()]);
                    messages::error(code, &e.to_string(), id.as_ref())
                }
            };
            // Fails only when the client has gone.
            let _ = tx.send(text).await;
        });
        Ok(())
    }

    fn start(&mut self, subscription: Subscription, aggregate_tick: &mut Option<Interval>) {
        *aggregate_tick = match subscription.mode {
            Mode::Live => None,
            Mode::Aggregate { interval_ms } => {
                let every = Duration::from_millis(interval_ms);
                let mut t = tokio::time::interval_at(Instant::now() + every, every);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Some(t)
            }
        };
        self.conflator.take();
        self.subscription = Some(subscription);
        self.over_budget_since = None;
    }

    /// A `snapshot` (or `resync`) of what the subscription covers, taken
    /// under the state lock with the ring's head: the stream continues
    /// right after it.
    fn send_snapshot(
        &mut self,
        id: Option<&serde_json::Value>,
        resync: Option<&str>,
    ) -> Result<(), End> {
        let text = {
            let state = self.hub.lock_state();
            let head = self.hub.ring().head();
            let now = unix_ms();
            let devices = views::devices(&state, self.subscription.as_ref(), now);
            self.cursor = head + 1;
            self.folded_up_to = head;
            messages::snapshot(id, resync, self.hub.epoch(), head, now, &devices)
        };
        // A snapshot may exceed the budget on its own; it is sent whole.
        self.send(text)
    }

    /// Moves events from the ring to the client as far as the budget allows.
    /// Without a subscription only the statuses of the client's own
    /// commands are delivered.
    fn pump(&mut self) -> Result<(), End> {
        // Taken out for the duration, so a long device list is not cloned.
        let subscription = self.subscription.take();
        let result = self.pump_with(subscription.as_ref());
        self.subscription = subscription;
        result
    }

    fn pump_with(&mut self, subscription: Option<&Subscription>) -> Result<(), End> {
        let live = subscription.is_none_or(|s| s.mode == Mode::Live);
        loop {
            if live && self.over_budget() {
                self.over_budget_since.get_or_insert_with(Instant::now);
                return Ok(());
            }
            let entries = match self.hub.ring().read_from(self.cursor, READ_BATCH) {
                Ok(entries) => entries,
                Err(Gone { oldest }) if !live => {
                    // Aggregates coalesce anyway: continue from what is left.
                    self.cursor = oldest;
                    continue;
                }
                Err(Gone { .. }) => return Err(self.evict(Eviction::SlowConsumer)),
            };
            if entries.is_empty() {
                self.over_budget_since = None;
                return Ok(());
            }
            for entry in entries {
                self.cursor = entry.seq + 1;
                self.deliver(subscription, &entry)?;
            }
        }
    }

    fn deliver(&mut self, subscription: Option<&Subscription>, entry: &Entry) -> Result<(), End> {
        let now = unix_ms();
        if let Event::CommandStatus(record) = &entry.event {
            let mine = record.origin.client == Some(self.client);
            if mine && record.origin.request_id.is_some() {
                // Only the submitter sees its request's id: made for it alone.
                return self.send(messages::own_command_status(entry.seq, record));
            }
            if mine || subscription.is_some_and(|s| s.covers_device(record.device)) {
                // Without `id`: the form shared by everyone else.
                let text = shared(entry, now);
                let len = text.len();
                return self.send_shared(text, len);
            }
            return Ok(());
        }
        let Some(subscription) = subscription else {
            return Ok(());
        };
        match &entry.event {
            Event::Readings(batch) => match subscription.mode {
                Mode::Aggregate { .. } => {
                    self.conflator.add(&subscription.filter(batch));
                    self.folded_up_to = entry.seq;
                    Ok(())
                }
                Mode::Live if subscription.is_full() => {
                    let text = shared(entry, now);
                    let len = text.len();
                    self.send_shared(text, len)
                }
                Mode::Live => {
                    let filtered = subscription.filter(batch);
                    if filtered.is_empty() {
                        return Ok(());
                    }
                    self.send(messages::readings(entry.seq, &filtered, now))
                }
            },
            Event::DeviceStatus { device, .. } if subscription.covers_device(*device) => {
                let text = shared(entry, now);
                let len = text.len();
                self.send_shared(text, len)
            }
            Event::DeviceStats(stats) => {
                if subscription.devices.is_none() {
                    let text = shared(entry, now);
                    let len = text.len();
                    return self.send_shared(text, len);
                }
                let mine: Vec<_> = stats
                    .iter()
                    .filter(|s| subscription.covers_device(s.device))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    return Ok(());
                }
                self.send(messages::device_stats(entry.seq, &mine))
            }
            _ => Ok(()),
        }
    }

    fn flush_aggregates(&mut self) -> Result<(), End> {
        let Some(Mode::Aggregate { interval_ms }) = self.subscription.as_ref().map(|s| s.mode)
        else {
            return Ok(());
        };
        if self.conflator.is_empty() || self.over_budget() {
            return Ok(()); // keep folding: the next message will be fresher
        }
        let folded = self.conflator.take();
        self.send(messages::aggregates(
            self.folded_up_to,
            interval_ms,
            &folded,
        ))
    }

    fn check(&mut self) -> Result<(), End> {
        let config = &self.hub.config().ws;
        let silent_for = self.last_heard.elapsed();
        if silent_for > Duration::from_millis(config.ping_interval_ms + config.pong_timeout_ms) {
            return Err(self.evict(Eviction::NoPong));
        }
        let grace = Duration::from_millis(config.slow_grace_ms);
        if self
            .over_budget_since
            .is_some_and(|since| since.elapsed() > grace)
            && self.over_budget()
        {
            return Err(self.evict(Eviction::SlowConsumer));
        }
        if !self.over_budget() {
            self.over_budget_since = None;
        }
        Ok(())
    }
}

/// The event's JSON for clients that want all of it, made once (for a
/// `command_status`, the form without the request's `id`).
fn shared(entry: &Entry, now_ms: u64) -> Utf8Bytes {
    entry
        .full_json
        .get_or_init(|| messages::event(entry.seq, &entry.event, now_ms).into())
        .clone()
}

/// Completes at the next tick of `interval`, or never when there is none.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
