//! The MQTT bridge as a state machine with no I/O: it is told about the
//! fleet (catalog refreshes and stream events), the broker connection and
//! incoming messages, with the monotonic time in ms, and hands out the
//! messages to publish ([`Bridge::poll_publish`]) and when it next has
//! work ([`Bridge::poll_timeout`]). What it owes the broker is kept per
//! device (newest values, newest availability, whether discovery is due),
//! so its memory is bounded by the fleet, never by the broker's speed:
//! a state superseded before it went out is counted as coalesced, and the
//! newest always goes out. Only command results queue, bounded, oldest
//! dropped first (counted).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::{DeviceId, Value};
use serde_json::json;

use crate::command_json::{parse_command, MAX_INTERVAL_MS};
use crate::config::MqttConfig;
use crate::json::JsonValue;
use crate::registry::{kind_of, CommandId, CommandRecord, CommandState, DeviceStatus};
use crate::stream::Event;
use crate::views::CatalogDevice;

use super::discovery::{self, DeviceMeta, Origin, SensorMeta, Topics};

/// Commands the bridge remembers having submitted, to publish their
/// statuses; the oldest is forgotten first (its later statuses are then
/// not published, only shown on the dashboard).
pub const MAX_OWN_COMMANDS: usize = 1024;

/// Forgotten devices whose retained topics still have to be cleared.
pub const MAX_REMOVALS: usize = 4096;

/// States fall due on multiples of this, ms: a thousand devices' states
/// then go out in a few batches a second rather than one wake-up each
/// (a state waits at most this much longer than `min_interval_ms`).
pub const STATE_TICK_MS: u64 = 50;

/// `ms` rounded up to the next [`STATE_TICK_MS`].
fn on_tick(ms: u64) -> u64 {
    ms.div_ceil(STATE_TICK_MS).saturating_mul(STATE_TICK_MS)
}

/// Home Assistant's birth makes the bridge publish everything again at
/// most this often, ms: anyone who may publish `homeassistant/status`
/// could otherwise turn one message into thousands, again and again.
pub const BIRTH_MIN_INTERVAL_MS: u64 = 5_000;

/// One message for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Topic.
    pub topic: String,
    /// Payload; empty clears a retained message.
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retained by the broker.
    pub retain: bool,
    /// What it is, for the counters.
    pub kind: PublishKind,
}

/// What a [`Publish`] carries (`sensor_hub_mqtt_published_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PublishKind {
    /// `T/status`.
    Status,
    /// A discovery config.
    Discovery,
    /// A removal of a retained config or state.
    Removal,
    /// A device's state.
    State,
    /// A device's availability.
    Availability,
    /// A device's report interval.
    Interval,
    /// The hub's own figures.
    Hub,
    /// A command result.
    Result,
}

/// The outcome of a command request from MQTT
/// (`sensor_hub_mqtt_commands_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CommandOutcome {
    /// Handed to the hub (it may still reject it, as for any client).
    Submitted,
    /// The payload or topic could not be used.
    Invalid,
    /// No such device.
    UnknownDevice,
    /// `mqtt.commands` is off.
    Disabled,
}

/// A command the shell should submit to the core.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    /// Target.
    pub device: DeviceId,
    /// What to do.
    pub body: CommandBody,
    /// Queue while the device has no session.
    pub wait: bool,
    /// The request's own `id`, echoed in every result.
    pub request_id: Option<serde_json::Value>,
}

/// The hub's own figures, published on `T/hub`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HubFigures {
    /// Datagrams accepted per second, recently.
    pub datagrams_per_s: f64,
    /// Devices known.
    pub devices: usize,
    /// Devices online.
    pub devices_online: usize,
    /// Datagrams dropped since start.
    pub datagrams_dropped: u64,
}

/// Everything the bridge counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BridgeCounters {
    /// Published, by [`PublishKind`] (in `PublishKind::iter()` order).
    pub published: [u64; 8],
    /// States superseded before they were published.
    pub states_coalesced: u64,
    /// Command results dropped because `max_results` were waiting.
    pub dropped_results_full: u64,
    /// Removals dropped because [`MAX_REMOVALS`] were waiting.
    pub dropped_removals_full: u64,
    /// Times the bridge fell behind the hub's event stream.
    pub stream_gaps: u64,
    /// Command requests, by [`CommandOutcome`].
    pub commands: [u64; 4],
    /// Incoming messages on no topic of ours (or too large).
    pub ignored_messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    Online,
    Offline,
}

impl Availability {
    fn payload(self) -> &'static [u8] {
        match self {
            Availability::Online => b"online",
            Availability::Offline => b"offline",
        }
    }
}

#[derive(Debug, Default)]
struct DeviceEntry {
    meta: Option<DeviceMeta>,
    adopted: bool,
    /// Config topics last announced (removed when no longer wanted).
    announced: Vec<String>,
    values: BTreeMap<u8, Value>,
    availability: Option<Availability>,
    discovery_due: bool,
    availability_due: bool,
    interval_due: bool,
    state_due: bool,
    /// Monotonic ms before which no state is published.
    next_state_ms: u64,
    /// When this device is in `work` (so it is there once).
    scheduled: Option<u64>,
}

impl DeviceEntry {
    fn announce(&self) -> bool {
        self.adopted && self.meta.is_some()
    }
}

/// Devices of other hubs remembered as such (so their events do not make
/// the bridge re-read the catalog each time).
const MAX_FOREIGN: usize = 100_000;

/// The bridge's state; see the module documentation.
#[derive(Debug)]
pub struct Bridge {
    topics: Topics,
    origin: Origin,
    discovery: bool,
    commands: bool,
    qos_state: u8,
    qos_discovery: u8,
    retain_state: bool,
    min_interval_ms: u64,
    late_is_offline: bool,
    hub_interval_ms: u64,
    max_results: usize,

    connected: bool,
    status_due: bool,
    hub_discovery_due: bool,
    next_hub_ms: u64,
    hub: Option<HubFigures>,
    devices: HashMap<DeviceId, DeviceEntry>,
    /// Devices with work, by the monotonic ms it is due.
    work: BTreeSet<(u64, DeviceId)>,
    /// Messages of the device being worked on (at most one device's).
    out: VecDeque<Publish>,
    removals: VecDeque<Vec<String>>,
    results: VecDeque<Publish>,
    own_commands: HashMap<CommandId, Option<serde_json::Value>>,
    own_order: VecDeque<CommandId>,
    catalog_wanted: bool,
    /// Devices in events since the last catalog that it did not list yet.
    unknown: BTreeSet<DeviceId>,
    /// Devices in events that the last catalog did not list: another hub
    /// of a cluster holds them, and its own bridge publishes them (at most
    /// [`MAX_FOREIGN`]; beyond it the set starts again).
    foreign: BTreeSet<DeviceId>,
    /// When Home Assistant's birth last made it republish, and when a
    /// later one is due.
    last_birth_ms: Option<u64>,
    birth_due_ms: Option<u64>,
    counters: BridgeCounters,
}

impl Bridge {
    /// A bridge for `config`, announcing `version` as its origin.
    pub fn new(config: &MqttConfig, version: &'static str) -> Bridge {
        Bridge {
            topics: Topics::new(config),
            origin: Origin { version },
            discovery: config.discovery,
            commands: config.commands,
            qos_state: config.qos_state,
            qos_discovery: config.qos_discovery,
            retain_state: config.retain_state,
            min_interval_ms: config.min_interval_ms,
            late_is_offline: config.late_is_offline,
            hub_interval_ms: config.hub_interval_ms,
            max_results: config.max_results,
            connected: false,
            status_due: false,
            hub_discovery_due: false,
            next_hub_ms: 0,
            hub: None,
            devices: HashMap::new(),
            work: BTreeSet::new(),
            out: VecDeque::new(),
            removals: VecDeque::new(),
            results: VecDeque::new(),
            own_commands: HashMap::new(),
            own_order: VecDeque::new(),
            catalog_wanted: true,
            unknown: BTreeSet::new(),
            foreign: BTreeSet::new(),
            last_birth_ms: None,
            birth_due_ms: None,
            counters: BridgeCounters::default(),
        }
    }

    /// The topics it uses.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// What it counted.
    pub fn counters(&self) -> &BridgeCounters {
        &self.counters
    }

    /// Whether the broker connection is up (as last told).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The topic filters to subscribe to after each connection.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters = Vec::new();
        if self.discovery {
            filters.push(self.topics.home_assistant_status());
        }
        if self.commands {
            filters.push(self.topics.command_filter());
        }
        filters
    }

    /// Whether the shell should hand it a fresh catalog
    /// ([`Bridge::handle_catalog`]); cleared by that call.
    pub fn catalog_wanted(&self) -> bool {
        self.catalog_wanted
    }

    /// The broker accepted the connection: everything is published again
    /// (a broker may have lost retained messages; a clean session has no
    /// subscriptions).
    pub fn handle_connected(&mut self, now_ms: u64) {
        self.connected = true;
        self.status_due = true;
        self.out.clear();
        self.republish_all(now_ms);
    }

    /// The connection is gone; nothing is handed out until it is back.
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        // What was handed to the client but not confirmed is published
        // again, whole, after the next connection.
        self.out.clear();
    }

    fn republish_all(&mut self, now_ms: u64) {
        self.hub_discovery_due = self.discovery;
        self.next_hub_ms = now_ms;
        let ids: Vec<DeviceId> = self.devices.keys().copied().collect();
        for id in ids {
            if let Some(entry) = self.devices.get_mut(&id) {
                entry.discovery_due = self.discovery;
                entry.availability_due = true;
                entry.interval_due = true;
                entry.state_due = !entry.values.is_empty();
                entry.next_state_ms = now_ms;
            }
            self.schedule(id, now_ms);
        }
    }

    /// Every device the hub knows now (from [`crate::core::Core::catalog`]).
    pub fn handle_catalog(&mut self, catalog: &[CatalogDevice], now_ms: u64) {
        self.catalog_wanted = false;
        let listed: BTreeSet<DeviceId> = catalog.iter().map(|d| d.id).collect();
        // What events named and the hub does not list is another hub's.
        if self.foreign.len() >= MAX_FOREIGN {
            self.foreign.clear();
        }
        let unknown = std::mem::take(&mut self.unknown);
        self.foreign
            .extend(unknown.into_iter().filter(|id| !listed.contains(id)));
        self.foreign.retain(|id| !listed.contains(id));
        let mut seen: BTreeSet<DeviceId> = BTreeSet::new();
        for device in catalog {
            seen.insert(device.id);
            let names: Vec<(u8, Option<&str>)> = device
                .sensors
                .iter()
                .map(|s| (s.channel, s.name.as_deref()))
                .collect();
            let keys = discovery::sensor_keys(&names);
            let meta = DeviceMeta {
                name: device.name.clone(),
                firmware: device.firmware.clone(),
                interval_ms: device.interval_ms,
                sensors: device
                    .sensors
                    .iter()
                    .zip(keys)
                    .map(|(s, key)| SensorMeta {
                        channel: s.channel,
                        key,
                        name: s.name.clone(),
                        unit: s.unit.clone().unwrap_or_default(),
                        kind: s.kind,
                    })
                    .collect(),
            };
            let availability = self.availability_of(device.status);
            let discovery = self.discovery;
            let entry = self.devices.entry(device.id).or_default();
            let mut changed = false;
            if entry.meta.as_ref() != Some(&meta) || entry.adopted != device.adopted {
                let interval_changed =
                    entry.meta.as_ref().map(|m| m.interval_ms) != Some(meta.interval_ms);
                entry.meta = Some(meta);
                entry.adopted = device.adopted;
                entry.discovery_due = discovery;
                entry.interval_due |= interval_changed;
                entry.availability_due = true;
                changed = true;
            }
            // The catalog's values are at least as new as what the bridge
            // read (after a stream gap, newer).
            for sensor in &device.sensors {
                if let Some(value) = sensor.value {
                    let old = entry.values.insert(sensor.channel, value);
                    if !old.is_some_and(|old| same_value(old, value)) {
                        entry.state_due = true;
                        changed = true;
                    }
                }
            }
            if entry.availability != Some(availability) {
                entry.availability = Some(availability);
                entry.availability_due = true;
                changed = true;
            }
            if changed {
                self.schedule(device.id, now_ms);
            }
        }
        let gone: Vec<DeviceId> = self
            .devices
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.remove_device(id);
        }
    }

    fn availability_of(&self, status: Option<DeviceStatus>) -> Availability {
        match status {
            Some(DeviceStatus::Online) => Availability::Online,
            Some(DeviceStatus::Late) if !self.late_is_offline => Availability::Online,
            _ => Availability::Offline,
        }
    }

    /// The bridge fell behind the event stream: it will re-read the fleet.
    pub fn handle_stream_gap(&mut self) {
        self.counters.stream_gaps += 1;
        self.catalog_wanted = true;
    }

    /// One event of the hub's stream.
    pub fn handle_event(&mut self, event: &Event, now_ms: u64) {
        match event {
            Event::Readings(batch) => {
                for datagram in batch {
                    let entry = match self.devices.get_mut(&datagram.device) {
                        Some(entry) => entry,
                        None => {
                            // A device not in the last catalog: learn it
                            // (its latest values come with the catalog),
                            // unless another hub holds it.
                            if !self.foreign.contains(&datagram.device) {
                                self.unknown.insert(datagram.device);
                                self.catalog_wanted = true;
                            }
                            continue;
                        }
                    };
                    for reading in datagram.readings.iter() {
                        entry.values.insert(reading.channel, reading.value);
                    }
                    let due = if entry.state_due {
                        self.counters.states_coalesced += 1;
                        None
                    } else {
                        entry.state_due = true;
                        Some(on_tick(entry.next_state_ms.max(now_ms)))
                    };
                    if let Some(due) = due {
                        self.schedule(datagram.device, due);
                    }
                }
            }
            Event::DeviceStatus { device, status, .. } => {
                // A new status may come with a new hello (name, sensors),
                // or a device of another hub may have moved here.
                self.catalog_wanted = true;
                if !self.devices.contains_key(device) {
                    self.unknown.insert(*device);
                    return;
                }
                let availability = self.availability_of(Some(*status));
                let entry = self.devices.entry(*device).or_default();
                if entry.availability != Some(availability) {
                    entry.availability = Some(availability);
                    entry.availability_due = true;
                    self.schedule(*device, now_ms);
                }
            }
            Event::DeviceRemoved { device, .. } => self.remove_device(*device),
            Event::CommandStatus(record) => self.handle_command_status(record),
            Event::DeviceStats(_) => {}
        }
    }

    fn remove_device(&mut self, id: DeviceId) {
        let Some(entry) = self.devices.remove(&id) else {
            return;
        };
        if let Some(due) = entry.scheduled {
            self.work.remove(&(due, id));
        }
        self.out
            .retain(|p| !p.topic.contains(&format!("/device/{id}/")));
        if !entry.announce() && entry.announced.is_empty() {
            return;
        }
        let mut topics = entry.announced;
        for leaf in ["state", "availability", "interval"] {
            topics.push(self.topics.device(id, leaf));
        }
        if self.removals.len() == MAX_REMOVALS {
            self.removals.pop_front();
            self.counters.dropped_removals_full += 1;
        }
        self.removals.push_back(topics);
    }

    fn schedule(&mut self, id: DeviceId, due_ms: u64) {
        let Some(entry) = self.devices.get_mut(&id) else {
            return;
        };
        match entry.scheduled {
            Some(current) if current <= due_ms => {}
            current => {
                if let Some(current) = current {
                    self.work.remove(&(current, id));
                }
                entry.scheduled = Some(due_ms);
                self.work.insert((due_ms, id));
            }
        }
    }

    /// The hub's current figures; published every `hub_interval_ms`.
    pub fn handle_hub_figures(&mut self, figures: HubFigures) {
        self.hub = Some(figures);
    }

    /// Whether the hub's figures are due (the shell then reads them and
    /// calls [`Bridge::handle_hub_figures`] before polling).
    pub fn hub_due(&self, now_ms: u64) -> bool {
        self.connected && now_ms >= self.next_hub_ms
    }

    /// A message from the broker. Returns a command to submit, if it
    /// asked for one that parses; a request that does not gets its
    /// `rejected` result here.
    pub fn handle_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<CommandRequest> {
        if self.discovery && topic == self.topics.home_assistant_status() {
            if payload.trim_ascii() == b"online" {
                // Home Assistant (re)started: announce everything again,
                // at most once per BIRTH_MIN_INTERVAL_MS.
                match self.last_birth_ms {
                    Some(last) if now_ms < last.saturating_add(BIRTH_MIN_INTERVAL_MS) => {
                        self.birth_due_ms = Some(last.saturating_add(BIRTH_MIN_INTERVAL_MS));
                    }
                    _ => {
                        self.last_birth_ms = Some(now_ms);
                        self.republish_all(now_ms);
                    }
                }
            }
            return None;
        }
        let Some((device, leaf)) = self.topics.parse_command_topic(topic) else {
            self.counters.ignored_messages += 1;
            return None;
        };
        let parsed = match leaf {
            "command" => parse_generic(payload),
            "identify/press" => Ok((CommandBody::Identify, false, None)),
            "reboot/press" => Ok((CommandBody::Reboot, false, None)),
            "interval/set" => {
                parse_interval(payload).map(|ms| (CommandBody::SetInterval { ms }, false, None))
            }
            // Our own results and states come back to us through the
            // wildcard subscription.
            "command/result" | "state" | "availability" | "interval" => return None,
            _ => {
                self.counters.ignored_messages += 1;
                return None;
            }
        };
        if !self.commands {
            self.count_command(CommandOutcome::Disabled);
            return None;
        }
        match parsed {
            Ok((body, wait, request_id)) => Some(CommandRequest {
                device,
                body,
                wait,
                request_id,
            }),
            Err((message, request_id)) => {
                self.count_command(CommandOutcome::Invalid);
                self.push_result(device, None, None, "rejected", Some(&message), request_id);
                None
            }
        }
    }

    /// What the core answered to a [`CommandRequest`]: the command's
    /// record, or `None` when the device is unknown.
    pub fn handle_submitted(&mut self, request: CommandRequest, record: Option<CommandRecord>) {
        match record {
            Some(record) => {
                self.count_command(CommandOutcome::Submitted);
                if !record.state.is_final() {
                    if self.own_order.len() == MAX_OWN_COMMANDS {
                        if let Some(oldest) = self.own_order.pop_front() {
                            self.own_commands.remove(&oldest);
                        }
                    }
                    self.own_order.push_back(record.id);
                    self.own_commands
                        .insert(record.id, request.request_id.clone());
                }
                self.push_record(&record, request.request_id);
            }
            None => {
                self.count_command(CommandOutcome::UnknownDevice);
                let detail = format!("the hub knows no device {}", request.device);
                self.push_result(
                    request.device,
                    None,
                    Some(kind_of(&request.body)),
                    "rejected",
                    Some(&detail),
                    request.request_id,
                );
            }
        }
    }

    fn handle_command_status(&mut self, record: &CommandRecord) {
        let Some(request_id) = self.own_commands.get(&record.id).cloned() else {
            return;
        };
        if record.state.is_final() {
            self.own_commands.remove(&record.id);
            self.own_order.retain(|&id| id != record.id);
        }
        self.push_record(record, request_id);
    }

    fn push_record(&mut self, record: &CommandRecord, request_id: Option<serde_json::Value>) {
        let state: &'static str = state_name(record.state);
        self.push_result(
            record.device,
            Some(record.id),
            Some(kind_of(&record.body)),
            state,
            record.detail.as_deref(),
            request_id,
        );
    }

    fn push_result(
        &mut self,
        device: DeviceId,
        command_id: Option<CommandId>,
        kind: Option<&str>,
        state: &str,
        detail: Option<&str>,
        request_id: Option<serde_json::Value>,
    ) {
        let payload = json!({
            "command_id": command_id,
            "device": device,
            "kind": kind,
            "state": state,
            "detail": detail,
            "id": request_id,
        });
        if self.results.len() >= self.max_results {
            self.results.pop_front();
            self.counters.dropped_results_full += 1;
        }
        self.results.push_back(Publish {
            topic: self.topics.device(device, "command/result"),
            payload: payload.to_string().into_bytes(),
            qos: self.qos_state,
            retain: false,
            kind: PublishKind::Result,
        });
    }

    fn count_command(&mut self, outcome: CommandOutcome) {
        self.counters.commands[outcome as usize] += 1;
    }

    /// The next message to publish, if any is due; `None` while
    /// disconnected. Each one handed out is counted as published.
    pub fn poll_publish(&mut self, now_ms: u64) -> Option<Publish> {
        if !self.connected {
            return None;
        }
        let publish = self.next_publish(now_ms)?;
        self.counters.published[publish.kind as usize] += 1;
        Some(publish)
    }

    fn next_publish(&mut self, now_ms: u64) -> Option<Publish> {
        if self.birth_due_ms.is_some_and(|due| now_ms >= due) {
            self.birth_due_ms = None;
            self.last_birth_ms = Some(now_ms);
            self.republish_all(now_ms);
        }
        if self.status_due {
            self.status_due = false;
            return Some(Publish {
                topic: self.topics.status(),
                payload: b"online".to_vec(),
                qos: self.qos_discovery,
                retain: true,
                kind: PublishKind::Status,
            });
        }
        if let Some(publish) = self.out.pop_front() {
            return Some(publish);
        }
        if let Some(topics) = self.removals.pop_front() {
            self.out.extend(topics.into_iter().map(|topic| Publish {
                topic,
                payload: Vec::new(),
                qos: self.qos_discovery,
                retain: true,
                kind: PublishKind::Removal,
            }));
            return self.out.pop_front();
        }
        if let Some(result) = self.results.pop_front() {
            return Some(result);
        }
        if self.hub_discovery_due {
            self.hub_discovery_due = false;
            let qos = self.qos_discovery;
            self.out.extend(
                discovery::hub_configs(&self.topics, &self.origin)
                    .into_iter()
                    .map(|(topic, config)| Publish {
                        topic,
                        payload: config.to_string().into_bytes(),
                        qos,
                        retain: true,
                        kind: PublishKind::Discovery,
                    }),
            );
            return self.out.pop_front();
        }
        while let Some(&(due, id)) = self.work.first() {
            if due > now_ms {
                break;
            }
            self.work.pop_first();
            if let Some(entry) = self.devices.get_mut(&id) {
                entry.scheduled = None;
            }
            self.device_work(id, now_ms);
            if let Some(publish) = self.out.pop_front() {
                return Some(publish);
            }
        }
        if now_ms >= self.next_hub_ms {
            if let Some(figures) = self.hub.take() {
                self.next_hub_ms = now_ms.saturating_add(self.hub_interval_ms);
                let payload = json!({
                    "datagrams_per_s": (figures.datagrams_per_s * 100.0).round() / 100.0,
                    "devices": figures.devices,
                    "devices_online": figures.devices_online,
                    "datagrams_dropped": figures.datagrams_dropped,
                    "mqtt_dropped": self.counters.dropped_results_full + self.counters.dropped_removals_full,
                });
                return Some(Publish {
                    topic: self.topics.hub(),
                    payload: payload.to_string().into_bytes(),
                    qos: self.qos_state,
                    retain: self.retain_state,
                    kind: PublishKind::Hub,
                });
            }
        }
        None
    }

    /// Fills `out` with what device `id` owes the broker now, and
    /// schedules it again for a state not yet due.
    fn device_work(&mut self, id: DeviceId, now_ms: u64) {
        let (qos_d, qos_s, retain_s) = (self.qos_discovery, self.qos_state, self.retain_state);
        let Some(entry) = self.devices.get_mut(&id) else {
            return;
        };
        if !entry.announce() {
            // Discovered devices (possibly strangers) and devices not yet
            // described are not published; their flags wait.
            if !entry.announced.is_empty() {
                // It was announced, and no longer is (e.g. un-adopted).
                for topic in std::mem::take(&mut entry.announced) {
                    self.out.push_back(Publish {
                        topic,
                        payload: Vec::new(),
                        qos: qos_d,
                        retain: true,
                        kind: PublishKind::Removal,
                    });
                }
            }
            return;
        }
        let Some(meta) = entry.meta.as_ref() else {
            return;
        };
        if entry.discovery_due {
            entry.discovery_due = false;
            let configs =
                discovery::device_configs(&self.topics, &self.origin, id, meta, self.commands);
            let wanted: Vec<String> = configs.iter().map(|(t, _)| t.clone()).collect();
            for stale in entry.announced.iter().filter(|t| !wanted.contains(t)) {
                self.out.push_back(Publish {
                    topic: stale.clone(),
                    payload: Vec::new(),
                    qos: qos_d,
                    retain: true,
                    kind: PublishKind::Removal,
                });
            }
            self.out
                .extend(configs.into_iter().map(|(topic, config)| Publish {
                    topic,
                    payload: config.to_string().into_bytes(),
                    qos: qos_d,
                    retain: true,
                    kind: PublishKind::Discovery,
                }));
            entry.announced = wanted;
        }
        if entry.availability_due {
            entry.availability_due = false;
            let availability = entry.availability.unwrap_or(Availability::Offline);
            self.out.push_back(Publish {
                topic: self.topics.device(id, "availability"),
                payload: availability.payload().to_vec(),
                qos: qos_s,
                retain: true,
                kind: PublishKind::Availability,
            });
        }
        if entry.interval_due {
            entry.interval_due = false;
            if let Some(ms) = meta.interval_ms {
                self.out.push_back(Publish {
                    topic: self.topics.device(id, "interval"),
                    payload: ms.to_string().into_bytes(),
                    qos: qos_s,
                    retain: retain_s,
                    kind: PublishKind::Interval,
                });
            }
        }
        if entry.state_due && entry.next_state_ms > now_ms {
            let due = entry.next_state_ms;
            self.schedule(id, due);
            return;
        }
        let Some(entry) = self.devices.get_mut(&id) else {
            return;
        };
        let Some(meta) = entry.meta.as_ref() else {
            return;
        };
        if entry.state_due {
            entry.state_due = false;
            entry.next_state_ms = on_tick(now_ms.saturating_add(self.min_interval_ms));
            // Serialised from the values themselves, so an f32 is written
            // in its shortest form, as the WebSocket API writes it.
            let state: BTreeMap<String, JsonValue> = entry
                .values
                .iter()
                .map(|(channel, value)| {
                    let key = meta
                        .sensors
                        .iter()
                        .find(|s| s.channel == *channel)
                        .map_or_else(|| format!("ch{channel}"), |s| s.key.clone());
                    (key, JsonValue(*value))
                })
                .collect();
            self.out.push_back(Publish {
                topic: self.topics.device(id, "state"),
                payload: serde_json::to_vec(&state).unwrap_or_default(),
                qos: qos_s,
                retain: retain_s,
                kind: PublishKind::State,
            });
        }
    }

    /// When it next has work (monotonic ms), if connected.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.connected {
            return None;
        }
        if self.status_due
            || !self.out.is_empty()
            || !self.removals.is_empty()
            || !self.results.is_empty()
            || self.hub_discovery_due
        {
            return Some(0);
        }
        let work = self.work.first().map(|&(due, _)| due);
        let mut next = self.next_hub_ms;
        for due in [work, self.birth_due_ms].into_iter().flatten() {
            next = next.min(due);
        }
        Some(next)
    }
}

/// Equal, NaN included (a NaN reading repeated is no change).
fn same_value(a: Value, b: Value) -> bool {
    match (a, b) {
        (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
        (a, b) => a == b,
    }
}

fn state_name(state: CommandState) -> &'static str {
    match state {
        CommandState::Queued => "queued",
        CommandState::Sent => "sent",
        CommandState::Acked => "acked",
        CommandState::Succeeded => "succeeded",
        CommandState::Failed => "failed",
        CommandState::Rejected => "rejected",
        CommandState::TimedOut => "timed_out",
    }
}

type Parsed =
    Result<(CommandBody, bool, Option<serde_json::Value>), (String, Option<serde_json::Value>)>;

/// `T/device/<id>/command`: a WebSocket-style command object, with an
/// optional `id` and `wait`.
fn parse_generic(payload: &[u8]) -> Parsed {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(e) => {
            return Err((
                format!("the payload is not JSON ({e}); send e.g. {{\"kind\": \"identify\"}}"),
                None,
            ))
        }
    };
    let request_id = value.get("id").cloned();
    let wait = match value.get("wait") {
        None => false,
        Some(serde_json::Value::Bool(wait)) => *wait,
        Some(_) => return Err(("`wait` must be true or false".into(), request_id)),
    };
    match parse_command(&value) {
        Ok(body) => Ok((body, wait, request_id)),
        Err(message) => Err((message, request_id)),
    }
}

/// `T/device/<id>/interval/set`: a whole number of ms.
fn parse_interval(payload: &[u8]) -> Result<u32, (String, Option<serde_json::Value>)> {
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    // Home Assistant's number entity may send "500.0".
    let ms = text
        .parse::<u64>()
        .ok()
        .or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_INTERVAL_MS as f64)
                .map(|f| f as u64)
        })
        .filter(|ms| (1..=MAX_INTERVAL_MS).contains(ms));
    match ms.and_then(|ms| u32::try_from(ms).ok()) {
        Some(ms) => Ok(ms),
        None => Err((
            format!(
                "the interval must be a whole number of milliseconds from 1 to {MAX_INTERVAL_MS}"
            ),
            None,
        )),
    }
}

#[cfg(test)]
mod tests;
