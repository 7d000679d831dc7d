//! One WebSocket client's logic, sans I/O: its requests, its subscription
//! and cursor in the event stream, its byte budget and eviction, aggregate
//! conflation and resume. [`Client`] is a plain type driven by calls that
//! each take a [`Tick`] (the current [`Now`] and the bytes still queued for
//! the socket) and push [`Action`]s the driver carries out
//! ([`Client::poll_action`]); [`Client::poll_timeout`] says when it next
//! needs [`Client::handle_timeout`]. The model is quinn-proto: the socket
//! task ([`super::session`]) only moves bytes and timers.
//!
//! It reads the stream and snapshots through [`EventSource`] (the
//! [`Core`](crate::core::Core) in the hub, an in-memory stream in tests).
//!
//! Budget rules (`ws.client_budget_bytes` counts bytes handed to the socket
//! and not yet written):
//! - live mode: over budget, the client stops taking events (it never
//!   skips one); still over budget after `ws.slow_grace_ms`, or once the
//!   stream has dropped events it had not taken, it is closed with 4008
//!   "slow consumer";
//! - aggregate mode: events keep being folded, and a new `aggregates`
//!   message is only handed over while under budget (latest value wins).
//!
//! A client silent for `ws.ping_interval_ms + ws.pong_timeout_ms` is
//! closed with 4009 (the driver pings; any frame counts as heard).

use std::collections::VecDeque;
use std::sync::Arc;

use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::DeviceId;
use strum::EnumCount as _;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::auth::Role;
use crate::clock::Now;
use crate::config::WsConfig;
use crate::core::{Snapshot, SubmitError};
use crate::history::query::{RangeRequest, SensorRef};
use crate::metrics::{Counter, CounterArray, Gauge, MicrosHistogram};
use crate::registry::Origin;
use crate::stream::conflate::Conflator;
use crate::stream::subscription::{Mode, Subscription};
use crate::stream::{Entry, Event, Gone};
use crate::ws::limits::{Admission, RateLimit};
use crate::ws::messages;
use crate::ws::requests::{self, ClientError, Refusal, Request};

/// Events taken from the stream per read.
pub const READ_BATCH: usize = 256;
/// Actions a client keeps room for between bursts.
const IDLE_ACTIONS: usize = 16;
/// Largest coalesced `readings` message, bytes (more starts another).
const MERGE_MAX_BYTES: usize = 64 * 1024;
/// While all clients together are over `ws.total_budget_bytes`, a live
/// client tries again this often, ms.
const HUB_FULL_RETRY_MS: u64 = 10;
/// History requests a client may have running at once.
pub const HISTORY_IN_FLIGHT: usize = 4;

/// Close code for a client that cannot keep up.
pub const SLOW_CONSUMER: u16 = 4008;
/// Close code for a client that stopped answering pings.
pub const NO_PONG: u16 = 4009;
/// Close code for a message over the size limit (RFC 6455 "message too big").
pub const TOO_BIG: u16 = 1009;
/// Close code for text that is not UTF-8 (RFC 6455 "invalid payload").
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close code for a client that keeps flooding (RFC 6455 "policy violation").
pub const POLICY: u16 = 1008;
/// Close code at shutdown (RFC 6455 "going away").
pub const GOING_AWAY: u16 = 1001;
/// Close code when the client's session ended or its token was revoked
/// (the HTTP 401 of the 4000–4999 private range).
pub const LOGGED_OUT: u16 = 4401;

/// Why the hub closed a client (counted on `/metrics`; the label is the
/// snake_case name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Eviction {
    /// Over budget too long, or behind the replay ring.
    SlowConsumer,
    /// No pong in time.
    NoPong,
    /// Kept flooding after `rate_limited` errors.
    Flood,
    /// Sent a message over the size limit.
    TooLarge,
    /// Sent text that is not UTF-8.
    InvalidUtf8,
    /// Its session ended (logout, expiry) or its token was revoked.
    LoggedOut,
}

impl Eviction {
    /// Metrics label.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Position in declaration order (for counters indexed by reason).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The close frame's code and reason.
    pub fn close(self) -> Close {
        let (code, reason) = match self {
            Eviction::SlowConsumer => (SLOW_CONSUMER, "slow consumer"),
            Eviction::NoPong => (NO_PONG, "no pong"),
            Eviction::Flood => (POLICY, "too many messages"),
            Eviction::TooLarge => (TOO_BIG, "message too large"),
            Eviction::InvalidUtf8 => (INVALID_PAYLOAD, "text is not valid UTF-8"),
            Eviction::LoggedOut => (LOGGED_OUT, "logged out"),
        };
        Close {
            code,
            reason,
            // A client that cannot or does not read gets no more messages.
            discard: matches!(
                self,
                Eviction::SlowConsumer | Eviction::NoPong | Eviction::LoggedOut
            ),
        }
    }
}

/// How the hub closes a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason text.
    pub reason: &'static str,
    /// Drop what is still queued for it instead of sending it first.
    pub discard: bool,
}

/// The WebSocket clients' counters, shared by all clients.
#[derive(Debug, Default)]
pub struct WsMetrics {
    /// Clients connected now.
    pub clients: Gauge,
    /// Clients accepted since start.
    pub clients_accepted: Counter,
    /// Upgrades refused because `ws.max_clients` were connected.
    pub clients_rejected: Counter,
    /// Upgrades refused because `ws.max_clients_per_address` clients of
    /// that address were connected.
    pub clients_rejected_per_address: Counter,
    /// Upgrades refused because the page's `Origin` was another site's.
    pub foreign_origin_refused: Counter,
    /// Messages written to clients.
    pub messages_sent: Counter,
    /// Bytes handed to writers and not yet written, all clients.
    pub queued_bytes: Gauge,
    /// `ws.total_budget_bytes`, beside `queued_bytes` on `/metrics` (set
    /// once at start).
    pub total_budget_bytes: Gauge,
    /// Clients the hub closed, by [`Eviction::index`].
    pub evictions: CounterArray<{ Eviction::COUNT }>,
    /// Client messages answered with an error, by [`ClientError::index`].
    pub client_errors: CounterArray<{ ClientError::COUNT }>,
    /// From the UDP read of a message's oldest reading to the end of the
    /// write that carried it to a client.
    pub write_latency: WriteLatency,
}

/// Upper bounds of `sensor_hub_ws_write_latency_seconds`, µs.
pub const WRITE_LATENCY_BOUNDS_US: [u64; 16] = [
    25, 50, 100, 200, 300, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    250_000, 1_000_000,
];

/// The hub's own share of a reading's latency: UDP read → socket write.
#[derive(Debug)]
pub struct WriteLatency(pub MicrosHistogram);

impl Default for WriteLatency {
    fn default() -> WriteLatency {
        WriteLatency(MicrosHistogram::new(&WRITE_LATENCY_BOUNDS_US))
    }
}

/// The `resync` reason when the stream's numbering changed under a client.
const NEW_EPOCH: &str =
    "the hub's stream started a new numbering (it lost or regained its cluster link)";

/// What the client reads from the hub.
pub trait EventSource {
    /// The stream's epoch (it changes when a cluster hub loses or regains
    /// its link).
    fn epoch(&self) -> Arc<str>;
    /// How many times the epoch changed: compared on every pump, so it
    /// must be cheap.
    fn epoch_changes(&self) -> u64;
    /// Sequence number of the newest event.
    fn head(&self) -> u64;
    /// Up to `max` events from `from` on, or [`Gone`].
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Arc<Entry>>, Gone>;
    /// Up to `max` events from `from` on of the stream before its last
    /// change of numbering, if `epoch` is that stream's (else none).
    fn read_previous(&self, epoch: &Arc<str>, from: u64, max: usize) -> Vec<Arc<Entry>>;
    /// If the stream continues `epoch`'s without a gap, the position
    /// before its first event.
    fn continues(&self, epoch: &Arc<str>) -> Option<u64>;
    /// The devices `subscription` covers, with the position they match.
    fn snapshot(&self, subscription: &Subscription, now: Now) -> Snapshot;
    /// Submits a command.
    fn submit(
        &self,
        device: DeviceId,
        body: CommandBody,
        wait: bool,
        origin: Origin,
        now: Now,
    ) -> Result<(), SubmitError>;
}

/// The moment a call happens, as the driver sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Now.
    pub now: Now,
    /// Bytes handed to the socket and not yet written.
    pub queued: usize,
    /// Whether enough clients are connected for coalescing
    /// (`ws.coalesce_from_clients`).
    pub coalesce: bool,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this text message. With it, when its oldest reading was read
    /// from the UDP socket (µs on the hub's monotonic clock), if known.
    Send(Utf8Bytes, Option<u64>),
    /// Run this history query; hand its answer (or error) text to
    /// [`Client::handle_history_answer`]. (Boxed: actions queue up by the
    /// hundred, and the common one, `Send`, is small.)
    History(Box<HistoryQuery>),
    /// Close the connection; the client takes no more calls after this.
    Close(Close),
}

/// A history request to run.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// Request id.
    pub id: Option<serde_json::Value>,
    /// The device.
    pub device: DeviceId,
    /// Its sensor.
    pub sensor: SensorRef,
    /// The range.
    pub range: RangeRequest,
}

/// The client's settings (from `[ws]`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws.client_budget_bytes`.
    pub budget_bytes: usize,
    /// `ws.slow_grace_ms`.
    pub slow_grace_ms: u64,
    /// `ws.ping_interval_ms + ws.pong_timeout_ms`.
    pub silence_limit_ms: u64,
    /// `ws.client_messages_per_s`.
    pub messages_per_s: u32,
    /// `ws.client_message_burst`.
    pub message_burst: u32,
    /// `ws.min_aggregate_interval_ms`.
    pub min_aggregate_interval_ms: u64,
    /// `ws.total_budget_bytes`.
    pub total_budget_bytes: usize,
    /// `ws.coalesce_ms` (0: one message per event, taken at once).
    pub coalesce_ms: u64,
}

impl From<&WsConfig> for ClientConfig {
    fn from(c: &WsConfig) -> ClientConfig {
        ClientConfig {
            budget_bytes: c.client_budget_bytes,
            slow_grace_ms: c.slow_grace_ms,
            silence_limit_ms: c.ping_interval_ms.saturating_add(c.pong_timeout_ms),
            messages_per_s: c.client_messages_per_s,
            message_burst: c.client_message_burst,
            min_aggregate_interval_ms: c.min_aggregate_interval_ms,
            total_budget_bytes: c.total_budget_bytes,
            coalesce_ms: c.coalesce_ms,
        }
    }
}

/// One client.
#[derive(Debug)]
pub struct Client {
    id: u64,
    config: ClientConfig,
    metrics: Arc<WsMetrics>,
    subscription: Option<Subscription>,
    /// Next stream position to read.
    cursor: u64,
    /// The epoch `cursor` belongs to.
    epoch: Arc<str>,
    /// The source's count of epoch changes when `epoch` was last checked.
    epoch_changes: u64,
    conflator: Conflator,
    folded_up_to: u64,
    /// Monotonic time of the next `aggregates` message, in aggregate mode.
    next_aggregate_ms: Option<u64>,
    over_budget_since: Option<u64>,
    last_heard_ms: u64,
    rate: RateLimit,
    history_in_flight: usize,
    actions: VecDeque<Action>,
    /// Consecutive `readings` texts to leave as one message
    /// ([`messages::merge_readings`]), and their bytes.
    merging: Vec<Utf8Bytes>,
    merging_bytes: usize,
    /// When the first of them was read, if known.
    merging_received_us: Option<u64>,
    /// When the client last took events from the stream (coalescing).
    last_take_ms: Option<u64>,
    /// The client takes no events before this (coalescing, or the hub's
    /// clients over their total budget).
    hold_until_ms: Option<u64>,
    closed: bool,
    /// What its credentials allow (commands need [`Role::Operator`]).
    role: Role,
}

impl Client {
    /// A new client `id` with `role`; queues its `hello` (the stream's
    /// epoch and head).
    pub fn new(
        id: u64,
        role: Role,
        config: ClientConfig,
        metrics: Arc<WsMetrics>,
        source: &impl EventSource,
        now: Now,
    ) -> Client {
        let epoch_changes = source.epoch_changes();
        let epoch = source.epoch();
        let head = source.head();
        let mut client = Client {
            id,
            rate: RateLimit::new(config.messages_per_s, config.message_burst, now.mono_ms),
            config,
            metrics,
            subscription: None,
            cursor: head.saturating_add(1),
            epoch: epoch.clone(),
            epoch_changes,
            conflator: Conflator::default(),
            folded_up_to: 0,
            next_aggregate_ms: None,
            over_budget_since: None,
            last_heard_ms: now.mono_ms,
            history_in_flight: 0,
            actions: VecDeque::new(),
            merging: Vec::new(),
            merging_bytes: 0,
            merging_received_us: None,
            last_take_ms: None,
            hold_until_ms: None,
            closed: false,
            role,
        };
        client.send(messages::hello(&epoch, head, now.wall_ms));
        client
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.flush_merged();
        }
        let action = self.actions.pop_front();
        if action.is_none() && self.actions.capacity() > IDLE_ACTIONS {
            // A burst grew the queue; a thousand idle clients should not
            // each keep that much.
            self.actions.shrink_to(IDLE_ACTIONS);
        }
        action
    }

    /// Whether the client stopped taking events because it is over budget:
    /// the driver should call [`Client::pump`] again once bytes are written.
    /// Not while it holds back: it takes nothing before its hold ends
    /// ([`Client::poll_timeout`]), written bytes or not.
    pub fn waits_for_drain(&self) -> bool {
        self.over_budget_since.is_some() && self.hold_until_ms.is_none()
    }

    /// Whether the client was closed (an [`Action::Close`] was queued).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// When [`Client::handle_timeout`] is next due, monotonic ms.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let silence = self
            .last_heard_ms
            .saturating_add(self.config.silence_limit_ms)
            .saturating_add(1);
        let grace = self.over_budget_since.map(|since| {
            since
                .saturating_add(self.config.slow_grace_ms)
                .saturating_add(1)
        });
        [
            Some(silence),
            grace,
            self.next_aggregate_ms,
            self.hold_until_ms,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: silence, the slow-consumer grace, aggregate flushes.
    pub fn handle_timeout(&mut self, source: &impl EventSource, t: Tick) {
        if self.closed {
            return;
        }
        let now = t.now.mono_ms;
        if now.saturating_sub(self.last_heard_ms) > self.config.silence_limit_ms {
            return self.evict(Eviction::NoPong);
        }
        let over = self.over_budget(t);
        if over
            && self
                .over_budget_since
                .is_some_and(|since| now.saturating_sub(since) > self.config.slow_grace_ms)
        {
            return self.evict(Eviction::SlowConsumer);
        }
        if !over {
            self.over_budget_since = None;
        }
        if let Some(due) = self.next_aggregate_ms {
            if now >= due {
                self.flush_aggregates(t);
                if let Some(Mode::Aggregate { interval_ms }) =
                    self.subscription.as_ref().map(|s| s.mode)
                {
                    self.next_aggregate_ms = Some(now.saturating_add(interval_ms));
                }
            }
        }
        self.pump(source, t);
    }

    /// The client sent something (any frame, pongs included).
    pub fn handle_heard(&mut self, t: Tick) {
        self.last_heard_ms = self.last_heard_ms.max(t.now.mono_ms);
    }

    /// A text message from the client.
    pub fn handle_text(&mut self, text: &str, source: &impl EventSource, t: Tick) {
        if self.closed {
            return;
        }
        self.handle_heard(t);
        match self.rate.admit(t.now.mono_ms) {
            Admission::Accept => {}
            Admission::Refuse => {
                return self.refuse(Refusal {
                    error: ClientError::RateLimited,
                    message: "too many messages; slow down".into(),
                    id: None,
                })
            }
            Admission::Close => return self.evict(Eviction::Flood),
        }
        match requests::parse(text, self.config.min_aggregate_interval_ms) {
            Ok(request) => self.request(request, source, t),
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// A binary message (the API is JSON text).
    pub fn handle_binary(&mut self, t: Tick) {
        self.handle_heard(t);
        self.refuse(Refusal {
            error: ClientError::Binary,
            message: "binary frames are not supported; send JSON text".into(),
            id: None,
        });
    }

    /// A message over `ws.max_client_message_bytes`: answered with a
    /// `too_large` error, then closed with 1009.
    pub fn handle_too_large(&mut self, limit: usize) {
        self.refuse(Refusal {
            error: ClientError::TooLarge,
            message: format!(
                "message larger than {limit} bytes (ws.max_client_message_bytes); the connection is closed"
            ),
            id: None,
        });
        self.evict(Eviction::TooLarge);
    }

    /// The socket's queue is full (far past the byte budget): closed as a
    /// slow consumer.
    pub fn handle_writer_full(&mut self) {
        self.evict(Eviction::SlowConsumer);
    }

    /// The client's session ended or its token was revoked: closed with
    /// [`LOGGED_OUT`] at once.
    pub fn handle_logged_out(&mut self) {
        self.evict(Eviction::LoggedOut);
    }

    /// A text message that is not UTF-8: closed with 1007.
    pub fn handle_invalid_utf8(&mut self) {
        self.evict(Eviction::InvalidUtf8);
    }

    /// The hub is shutting down: closed with 1001 after what is queued.
    pub fn handle_shutdown(&mut self) {
        if !self.closed {
            self.close(Close {
                code: GOING_AWAY,
                reason: "hub shutting down",
                discard: false,
            });
        }
    }

    /// A history query finished; `text` is its answer or error message.
    pub fn handle_history_answer(&mut self, text: String) {
        self.history_in_flight = self.history_in_flight.saturating_sub(1);
        if !self.closed {
            self.send(text);
        }
    }

    /// Moves events from the stream to the client as far as the budget
    /// allows (call it when events were appended or bytes were written).
    /// Without a subscription only the statuses of the client's own
    /// commands are delivered.
    pub fn pump(&mut self, source: &impl EventSource, t: Tick) {
        if self.closed || self.holds(t) {
            return;
        }
        // One atomic load when nothing changed (always, on a single hub).
        let changes = source.epoch_changes();
        if changes != self.epoch_changes {
            self.epoch_changes = changes;
            self.check_epoch(source, t);
        }
        // Taken out for the duration, so a long device list is not cloned.
        let subscription = self.subscription.take();
        self.pump_with(subscription.as_ref(), source, t);
        self.subscription = subscription;
        self.flush_merged();
    }

    /// Whether the client waits before taking events: until its hold
    /// ends, and, while coalescing, until `ws.coalesce_ms` after it last
    /// took some (so what arrives meanwhile leaves as one message). The
    /// first events after a quiet spell are taken at once.
    fn holds(&mut self, t: Tick) -> bool {
        let now = t.now.mono_ms;
        if self.hold_until_ms.is_some_and(|until| now < until) {
            return true;
        }
        self.hold_until_ms = None;
        if self.config.coalesce_ms == 0 || !t.coalesce {
            return false;
        }
        let due = self
            .last_take_ms
            .map(|last| last.saturating_add(self.config.coalesce_ms));
        match due {
            Some(due) if now < due => {
                self.hold_until_ms = Some(due);
                true
            }
            _ => false,
        }
    }

    /// Whether the client is holding back (it need not be woken for new
    /// events before [`Client::poll_timeout`]).
    pub fn is_holding(&self) -> bool {
        self.hold_until_ms.is_some()
    }

    /// The epoch may have changed: if the stream is another allocation
    /// (a reset makes a new one, even for an epoch of the same name), the
    /// stream started a new numbering (a cluster hub lost or regained its
    /// link): what the client had not read of the old one first, then
    /// `renumbered` if nothing was missed, else a subscriber starts again
    /// from a fresh snapshot and others only move their cursor.
    fn check_epoch(&mut self, source: &impl EventSource, t: Tick) {
        let epoch = source.epoch();
        if Arc::ptr_eq(&epoch, &self.epoch) {
            return;
        }
        let subscription = self.subscription.take();
        loop {
            let entries = source.read_previous(&self.epoch, self.cursor, READ_BATCH);
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                self.cursor = entry.seq + 1;
                self.deliver(subscription.as_ref(), &entry, t.now);
            }
        }
        self.subscription = subscription;
        if let Some(position) = source.continues(&self.epoch) {
            // Nothing missed: the client goes on in the new numbering.
            self.epoch = epoch;
            self.cursor = position.saturating_add(1);
            self.send(messages::renumbered(&self.epoch.clone(), position));
        } else if self.subscription.is_some() {
            self.send_snapshot(None, Some(NEW_EPOCH), source, t.now);
        } else {
            self.epoch = epoch;
            self.cursor = source.head().saturating_add(1);
        }
    }

    fn pump_with(
        &mut self,
        subscription: Option<&Subscription>,
        source: &impl EventSource,
        t: Tick,
    ) {
        let live = subscription.is_none_or(|s| s.mode == Mode::Live);
        // What this call queues counts against the budget at once.
        let mut queued = t.queued;
        loop {
            if live && queued >= self.config.budget_bytes {
                self.over_budget_since.get_or_insert(t.now.mono_ms);
                return;
            }
            // All clients together, read live: the others take events at
            // the same moment, and a figure read once per wake-up would let
            // each of a thousand clients take up to its own budget.
            let hub_queued = usize::try_from(self.metrics.queued_bytes.get())
                .unwrap_or(0)
                .saturating_add(queued.saturating_sub(t.queued));
            if live && hub_queued >= self.config.total_budget_bytes {
                // Not this client's doing: it waits (no gap, no grace
                // running) while the clients furthest behind are closed.
                self.hold_until_ms = Some(t.now.mono_ms.saturating_add(HUB_FULL_RETRY_MS));
                return;
            }
            let entries = match source.read_from(self.cursor, READ_BATCH) {
                Ok(entries) => entries,
                Err(Gone { oldest }) if !live => {
                    // Aggregates coalesce anyway: continue from what is left.
                    self.cursor = oldest;
                    continue;
                }
                // The numbering changed under the cursor: the next pump
                // resyncs.
                Err(Gone { .. }) if !Arc::ptr_eq(&source.epoch(), &self.epoch) => return,
                Err(Gone { .. }) => return self.evict(Eviction::SlowConsumer),
            };
            if entries.is_empty() {
                self.over_budget_since = None;
                return;
            }
            self.last_take_ms = Some(t.now.mono_ms);
            for entry in entries {
                self.cursor = entry.seq + 1;
                queued = queued.saturating_add(self.deliver(subscription, &entry, t.now));
            }
        }
    }

    /// Queues what `entry` means for this client; returns the bytes queued.
    fn deliver(&mut self, subscription: Option<&Subscription>, entry: &Entry, now: Now) -> usize {
        if let Event::CommandStatus(record) = &entry.event {
            // Another hub's client ids are not this hub's.
            if record.origin.client == Some(self.id) && record.origin.hub.is_none() {
                return self.send(messages::own_command_status(entry.seq, record));
            }
            if subscription.is_some_and(|s| s.covers_device(record.device)) {
                return self.send_shared(shared(entry, now));
            }
            return 0;
        }
        let Some(subscription) = subscription else {
            return 0;
        };
        match &entry.event {
            Event::Readings(batch) => match subscription.mode {
                Mode::Aggregate { .. } => {
                    self.conflator.add(&subscription.filter(batch));
                    self.folded_up_to = entry.seq;
                    0
                }
                Mode::Live if subscription.is_full() => self.merge(shared(entry, now), entry),
                Mode::Live => {
                    let filtered = subscription.filter(batch);
                    if filtered.is_empty() {
                        return 0;
                    }
                    let text = messages::readings(entry.seq, &filtered, now.wall_ms);
                    self.merge(text.into(), entry)
                }
            },
            Event::DeviceStatus { device, .. } | Event::DeviceRemoved { device, .. }
                if subscription.covers_device(*device) =>
            {
                self.send_shared(shared(entry, now))
            }
            Event::DeviceStats(stats) => {
                if subscription.devices.is_none() {
                    return self.send_shared(shared(entry, now));
                }
                let mine: Vec<_> = stats
                    .iter()
                    .filter(|s| subscription.covers_device(s.device))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    return 0;
                }
                self.send(messages::device_stats(entry.seq, &mine))
            }
            _ => 0,
        }
    }

    fn request(&mut self, request: Request, source: &impl EventSource, t: Tick) {
        match request {
            Request::Ping { id } => {
                self.send(messages::pong(id.as_ref()));
            }
            Request::Command {
                id,
                device,
                body,
                wait,
            } => {
                if self.role < Role::Operator {
                    return self.refuse(Refusal {
                        error: ClientError::Forbidden,
                        message: format!(
                            "commands need the operator role; this client has the {} role",
                            self.role.name()
                        ),
                        id,
                    });
                }
                // Its statuses arrive through the stream (routed here by origin).
                let origin = Origin {
                    request_id: id.clone(),
                    client: Some(self.id),
                    source: None,
                    ..Default::default()
                };
                if let Err(e) =
                    source
                        .submit(device, body, wait, origin, t.now)
                        .or_else(|e| match e {
                            // Handed to the device's hub: statuses follow.
                            SubmitError::Forwarded { .. } => Ok(()),
                            e => Err(e),
                        })
                {
                    self.refuse(Refusal {
                        error: ClientError::BadCommand,
                        message: e.to_string(),
                        id,
                    });
                }
                // The submission's first statuses are in the stream now.
                self.pump(source, t);
            }
            Request::History {
                id,
                device,
                sensor,
                range,
            } => {
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
                self.actions
                    .push_back(Action::History(Box::new(HistoryQuery {
                        id,
                        device,
                        sensor,
                        range,
                    })));
            }
            Request::Subscribe { id, subscription } => {
                self.start(subscription, t.now);
                self.send_snapshot(id.as_ref(), None, source, t.now);
            }
            Request::Unsubscribe { id } => {
                self.subscription = None;
                self.next_aggregate_ms = None;
                self.conflator.take();
                self.send(messages::ack(id.as_ref(), "unsubscribe", source.head()));
            }
            Request::Resume {
                id,
                epoch,
                last_seq,
                subscription,
            } => {
                self.start(subscription, t.now);
                let reason = if *epoch != *source.epoch() {
                    Some("the hub restarted since (new epoch)")
                } else if last_seq > source.head() {
                    Some("last_seq is ahead of this hub's stream")
                } else if source.read_from(last_seq.saturating_add(1), 0).is_err() {
                    Some("the messages after last_seq are no longer buffered")
                } else {
                    None
                };
                match reason {
                    Some(reason) => self.send_snapshot(id.as_ref(), Some(reason), source, t.now),
                    None => {
                        self.cursor = last_seq + 1;
                        self.epoch = source.epoch();
                        self.send(messages::ack(id.as_ref(), "resume", last_seq));
                        self.pump(source, t);
                    }
                }
            }
        }
    }

    fn start(&mut self, subscription: Subscription, now: Now) {
        self.next_aggregate_ms = match subscription.mode {
            Mode::Live => None,
            Mode::Aggregate { interval_ms } => Some(now.mono_ms.saturating_add(interval_ms)),
        };
        self.conflator.take();
        self.subscription = Some(subscription);
        self.over_budget_since = None;
    }

    /// A `snapshot` (or `resync`) of what the subscription covers; the
    /// stream continues right after it. It is sent whole, even over budget.
    fn send_snapshot(
        &mut self,
        id: Option<&serde_json::Value>,
        resync: Option<&str>,
        source: &impl EventSource,
        now: Now,
    ) {
        let all = Subscription::all_live();
        let snapshot = source.snapshot(self.subscription.as_ref().unwrap_or(&all), now);
        self.cursor = snapshot.seq + 1;
        self.folded_up_to = snapshot.seq;
        self.epoch = snapshot.epoch.clone();
        self.send(messages::snapshot(
            id,
            resync,
            &snapshot.epoch,
            snapshot.seq,
            now.wall_ms,
            &snapshot.devices,
        ));
    }

    fn flush_aggregates(&mut self, t: Tick) {
        let Some(Mode::Aggregate { interval_ms }) = self.subscription.as_ref().map(|s| s.mode)
        else {
            return;
        };
        if self.conflator.is_empty() || self.over_budget(t) {
            return; // keep folding: the next message will be fresher
        }
        let folded = self.conflator.take();
        self.send(messages::aggregates(
            self.folded_up_to,
            interval_ms,
            &folded,
        ));
    }

    fn over_budget(&self, t: Tick) -> bool {
        t.queued >= self.config.budget_bytes
    }

    fn send(&mut self, text: String) -> usize {
        self.send_shared(Utf8Bytes::from(text))
    }

    fn send_shared(&mut self, text: Utf8Bytes) -> usize {
        // What was merged so far goes first: order is kept.
        self.flush_merged();
        let bytes = text.len();
        self.actions.push_back(Action::Send(text, None));
        bytes
    }

    /// Queues a `readings` text: with coalescing on, it waits to leave
    /// with the ones that follow it; returns its bytes.
    fn merge(&mut self, text: Utf8Bytes, entry: &Entry) -> usize {
        let received = (entry.received_us > 0).then_some(entry.received_us);
        let bytes = text.len();
        if self.config.coalesce_ms == 0 {
            self.flush_merged();
            self.actions.push_back(Action::Send(text, received));
            return bytes;
        }
        if self.merging_bytes.saturating_add(bytes) > MERGE_MAX_BYTES {
            self.flush_merged();
        }
        self.merging_bytes = self.merging_bytes.saturating_add(bytes);
        self.merging.push(text);
        // The first is the oldest (events are taken in order).
        self.merging_received_us = self.merging_received_us.or(received);
        bytes
    }

    /// Queues what waits to be merged, as one message.
    fn flush_merged(&mut self) {
        let received = self.merging_received_us.take();
        match self.merging.len() {
            0 => return,
            1 => {
                let text = self.merging.pop();
                self.actions
                    .extend(text.map(|text| Action::Send(text, received)));
            }
            _ => match messages::merge_readings(&self.merging) {
                Some(merged) => self
                    .actions
                    .push_back(Action::Send(merged.into(), received)),
                // Not of the form merged texts have: each on its own.
                None => self.actions.extend(
                    self.merging
                        .drain(..)
                        .map(|text| Action::Send(text, received)),
                ),
            },
        }
        self.merging.clear();
        self.merging_bytes = 0;
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.metrics.client_errors.inc(refusal.error.index());
        self.send(messages::error(
            refusal.error,
            &refusal.message,
            refusal.id.as_ref(),
        ));
    }

    fn evict(&mut self, why: Eviction) {
        if self.closed {
            return;
        }
        self.metrics.evictions.inc(why.index());
        tracing::info!(
            client = self.id,
            reason = why.name(),
            "closing WebSocket client"
        );
        self.close(why.close());
    }

    fn close(&mut self, close: Close) {
        self.closed = true;
        self.actions.push_back(Action::Close(close));
    }
}

/// The event's JSON for clients that want all of it, made once and shared.
fn shared(entry: &Entry, now: Now) -> Utf8Bytes {
    entry
        .full_json
        .get_or_init(|| messages::event(entry.seq, &entry.event, now.wall_ms).into())
        .clone()
}

#[cfg(test)]
mod tests;
