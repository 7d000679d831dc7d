//! The control plane's pure core: which devices exist and what they said
//! about themselves, their control sessions, liveness (`online`, `late`,
//! `offline`) and the lifecycle of every command.
//!
//! No I/O and no clock: every method takes the current hub time, changes
//! the state, and queues [`Effect`]s (messages to send, sessions to close,
//! statuses to publish) that the shell drains with
//! [`Registry::take_effects`]. Unit tests drive it on a virtual clock.
//!
//! Liveness: a device's expected cadence is its declared interval (or
//! `liveness.default_interval_ms` until it says). Silence is counted from
//! its latest datagram, or from its session start if that is later. It is
//! `online` while silent for fewer than `late_after_intervals` intervals,
//! `late` until `offline_after_intervals`, then `offline`. A device that
//! keeps its control session is at worst `late` (reachable, no data); one
//! that had a session and lost it goes straight to `offline` once late. A
//! device that declares interval 0 sends no data: it is `online` exactly
//! while its session is open.

mod commands;
mod persist;

use std::collections::{BTreeSet, HashMap, VecDeque};

use sensor_hub_protocol::control::{CommandBody, Hello, Outcome, RejectReason, SensorInfo};
use sensor_hub_protocol::DeviceId;
use serde::{Deserialize, Serialize};

pub use commands::{kind_of, CommandId, CommandRecord, CommandState, Origin};
pub use persist::DeviceRecord;

/// Control session id (unique while the hub runs).
pub type SessionId = u64;

/// Liveness of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Reporting at its cadence.
    Online,
    /// Missed a few intervals.
    Late,
    /// Missed many intervals, or lost its session and its data.
    Offline,
}

impl DeviceStatus {
    /// Every status.
    pub const ALL: [DeviceStatus; 3] = [
        DeviceStatus::Online,
        DeviceStatus::Late,
        DeviceStatus::Offline,
    ];

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Late => "late",
            DeviceStatus::Offline => "offline",
        }
    }
}

/// Thresholds and bounds of the registry (from `[liveness]`, `[commands]`).
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Most devices tracked.
    pub max_devices: usize,
    /// Cadence assumed until a device declares one, ms.
    pub default_interval_ms: u64,
    /// Intervals of silence before `late`.
    pub late_after_intervals: u32,
    /// Intervals of silence before `offline`.
    pub offline_after_intervals: u32,
    /// Time a command may take from submission to result, ms.
    pub command_ttl_ms: u64,
    /// Commands waiting per device; more are rejected.
    pub queue_per_device: usize,
    /// Commands sent but unanswered per device; more wait in the queue.
    pub max_in_flight: usize,
    /// Finished commands kept for lookups.
    pub retain_finished: usize,
}

/// What a device told the hub in its hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Human name.
    pub name: String,
    /// Firmware version.
    pub firmware: String,
    /// Declared report interval, ms (0: no datagrams).
    pub interval_ms: u32,
    /// Declared sensors.
    pub sensors: Vec<SensorInfo>,
}

/// The registry's view of one device.
#[derive(Debug, Clone)]
pub struct DeviceEntry {
    /// Its id.
    pub id: DeviceId,
    /// From its latest hello, if it ever sent one.
    pub info: Option<DeviceInfo>,
    /// Its control session, if connected.
    pub session: Option<SessionId>,
    /// Hub time its current (or latest) session started.
    pub session_started_ms: Option<u64>,
    /// Hub time of its latest datagram.
    pub last_data_ms: Option<u64>,
    /// Hub time of its latest control frame.
    pub last_control_ms: Option<u64>,
    /// Hub clock minus device clock, from its latest hello or heartbeat.
    pub clock_offset_ms: Option<i64>,
    /// Current liveness.
    pub status: DeviceStatus,
    /// Hub time of the latest status change.
    pub status_since_ms: u64,
    /// Channels it sent before the hub restarted (from the history).
    pub known_channels: Vec<u8>,
    queue: VecDeque<CommandId>,
    in_flight: Vec<CommandId>,
}

impl DeviceEntry {
    fn new(id: DeviceId, now_ms: u64) -> DeviceEntry {
        DeviceEntry {
            id,
            info: None,
            session: None,
            session_started_ms: None,
            last_data_ms: None,
            last_control_ms: None,
            clock_offset_ms: None,
            status: DeviceStatus::Online,
            status_since_ms: now_ms,
            known_channels: Vec::new(),
            queue: VecDeque::new(),
            in_flight: Vec::new(),
        }
    }

    /// Latest activity time, if any.
    pub fn last_seen_ms(&self) -> Option<u64> {
        self.last_data_ms.max(self.last_control_ms)
    }
}

/// Something the shell must do or publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a command to a session.
    Send {
        /// The session.
        session: SessionId,
        /// Command id.
        id: CommandId,
        /// Command body.
        body: CommandBody,
    },
    /// Send `Reject { reason }` to a session and close it.
    CloseSession {
        /// The session.
        session: SessionId,
        /// Why.
        reason: RejectReason,
    },
    /// A command changed state.
    Command(CommandRecord),
    /// A device changed status (or appeared: `previous` is `None`).
    DeviceStatus {
        /// The device.
        device: DeviceId,
        /// New status.
        status: DeviceStatus,
        /// Status before, if it existed.
        previous: Option<DeviceStatus>,
        /// Hub time of the change.
        at_ms: u64,
    },
}

/// Counters of the control plane's pure core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryCounters {
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions replaced by a newer hello of the same device.
    pub sessions_replaced: u64,
    /// Hellos refused because `max_devices` were tracked.
    pub rejected_too_many_devices: u64,
    /// Commands that reached each final state, by [`CommandState::index`].
    pub commands_final: [u64; 7],
    /// Acks or results naming a command the hub does not know (or another
    /// device's command).
    pub unmatched_replies: u64,
}

/// Devices, sessions, liveness and commands.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    devices: HashMap<DeviceId, DeviceEntry>,
    commands: HashMap<CommandId, CommandRecord>,
    finished: VecDeque<CommandId>,
    next_session: SessionId,
    next_command: CommandId,
    effects: Vec<Effect>,
    /// Devices whose record (info or status) changed since the last
    /// [`Registry::take_changed`].
    changed: BTreeSet<DeviceId>,
    counters: RegistryCounters,
}

impl Registry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            config,
            devices: HashMap::new(),
            commands: HashMap::new(),
            finished: VecDeque::new(),
            next_session: 1,
            next_command: 1,
            effects: Vec::new(),
            changed: BTreeSet::new(),
            counters: RegistryCounters::default(),
        }
    }

    /// Effects queued since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The counters.
    pub fn counters(&self) -> &RegistryCounters {
        &self.counters
    }

    /// One device.
    pub fn device(&self, id: DeviceId) -> Option<&DeviceEntry> {
        self.devices.get(&id)
    }

    /// Every device id the registry tracks.
    pub fn device_ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices.keys().copied()
    }

    /// Number of devices in each status, by [`DeviceStatus::ALL`] order.
    pub fn status_counts(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for d in self.devices.values() {
            counts[d.status as usize] += 1;
        }
        counts
    }

    /// Open control sessions.
    pub fn sessions(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.session.is_some())
            .count()
    }

    /// One command (current, or recently finished).
    pub fn command(&self, id: CommandId) -> Option<&CommandRecord> {
        self.commands.get(&id)
    }

    fn entry(&mut self, device: DeviceId, now_ms: u64) -> Option<&mut DeviceEntry> {
        if !self.devices.contains_key(&device) {
            if self.devices.len() >= self.config.max_devices {
                return None;
            }
            self.devices
                .insert(device, DeviceEntry::new(device, now_ms));
            self.changed.insert(device);
            self.effects.push(Effect::DeviceStatus {
                device,
                status: DeviceStatus::Online,
                previous: None,
                at_ms: now_ms,
            });
        }
        self.devices.get_mut(&device)
    }

    /// A datagram from `device` was accepted at `now_ms`. Returns the
    /// device's clock offset (hub minus device), if known.
    pub fn data_seen(&mut self, device: DeviceId, now_ms: u64) -> Option<i64> {
        let offset = self.entry(device, now_ms).and_then(|entry| {
            entry.last_data_ms = Some(now_ms);
            entry.clock_offset_ms
        });
        self.update_status(device, now_ms);
        offset
    }

    /// A device said hello (already authenticated by the shell). Returns the
    /// new session's id, or why it is refused.
    pub fn open_session(&mut self, hello: &Hello, now_ms: u64) -> Result<SessionId, RejectReason> {
        let session = self.next_session;
        let Some(entry) = self.entry(hello.device_id, now_ms) else {
            self.counters.rejected_too_many_devices += 1;
            return Err(RejectReason::TooManyDevices);
        };
        let replaced = entry.session.replace(session);
        entry.info = Some(DeviceInfo {
            name: hello.name.to_string(),
            firmware: hello.firmware.to_string(),
            interval_ms: hello.interval_ms,
            sensors: hello.sensors.to_vec(),
        });
        entry.session_started_ms = Some(now_ms);
        entry.last_control_ms = Some(now_ms);
        entry.clock_offset_ms = Some(offset(now_ms, hello.device_time_ms));
        self.changed.insert(hello.device_id);
        self.next_session += 1;
        self.counters.sessions_opened += 1;
        if let Some(old) = replaced {
            self.counters.sessions_replaced += 1;
            self.effects.push(Effect::CloseSession {
                session: old,
                reason: RejectReason::Replaced,
            });
        }
        self.update_status(hello.device_id, now_ms);
        self.pump(hello.device_id, now_ms);
        Ok(session)
    }

    /// A session ended (any reason). Ignored if the device already has a
    /// newer session.
    pub fn close_session(&mut self, device: DeviceId, session: SessionId, now_ms: u64) {
        if let Some(entry) = self.devices.get_mut(&device) {
            if entry.session == Some(session) {
                entry.session = None;
                self.update_status(device, now_ms);
            }
        }
    }

    /// A heartbeat (or any frame) arrived on the device's session.
    pub fn heartbeat(&mut self, device: DeviceId, device_time_ms: Option<u64>, now_ms: u64) {
        if let Some(entry) = self.devices.get_mut(&device) {
            entry.last_control_ms = Some(now_ms);
            if let Some(t) = device_time_ms {
                entry.clock_offset_ms = Some(offset(now_ms, t));
            }
        }
    }

    /// Submits a command. It is rejected at once if the device is unknown,
    /// or has no session and `wait` is false, or its queue is full.
    pub fn submit(
        &mut self,
        device: DeviceId,
        body: CommandBody,
        wait: bool,
        origin: Origin,
        now_ms: u64,
    ) -> CommandId {
        let id = self.next_command;
        self.next_command = self.next_command.wrapping_add(1).max(1);
        let record = CommandRecord {
            id,
            device,
            body,
            state: CommandState::Queued,
            detail: None,
            origin,
            created_ms: now_ms,
            updated_ms: now_ms,
            deadline_ms: now_ms.saturating_add(self.config.command_ttl_ms),
        };
        self.commands.insert(id, record);
        let refusal = match self.devices.get(&device) {
            None => Some(format!("unknown device {device}")),
            Some(d) if d.session.is_none() && !wait => Some(format!(
                "device {device} has no control session and the command says not to wait"
            )),
            Some(d) if d.queue.len() >= self.config.queue_per_device => Some(format!(
                "device {device} already has {} commands waiting (commands.queue_per_device)",
                d.queue.len()
            )),
            Some(_) => None,
        };
        match refusal {
            Some(reason) => self.transition(id, CommandState::Rejected, Some(reason), now_ms),
            None => {
                self.publish(id);
                if let Some(d) = self.devices.get_mut(&device) {
                    d.queue.push_back(id);
                }
                self.pump(device, now_ms);
            }
        }
        id
    }

    /// The device confirmed receipt of command `id`.
    pub fn command_acked(&mut self, device: DeviceId, id: CommandId, now_ms: u64) {
        match self.commands.get(&id) {
            Some(c) if c.device == device && c.state == CommandState::Sent => {
                self.transition(id, CommandState::Acked, None, now_ms);
            }
            Some(c) if c.device == device && !c.state.is_final() => {} // duplicate ack
            _ => self.counters.unmatched_replies += 1,
        }
    }

    /// The device reported the outcome of command `id`.
    pub fn command_result(
        &mut self,
        device: DeviceId,
        id: CommandId,
        outcome: Outcome,
        detail: Option<String>,
        now_ms: u64,
    ) {
        match self.commands.get(&id) {
            Some(c) if c.device == device && !c.state.is_final() => {
                let state = match outcome {
                    Outcome::Succeeded => CommandState::Succeeded,
                    Outcome::Failed => CommandState::Failed,
                };
                self.transition(id, state, detail, now_ms);
                self.pump(device, now_ms);
            }
            _ => self.counters.unmatched_replies += 1,
        }
    }

    /// Advances time: times out commands past their TTL and re-evaluates
    /// every device's status.
    pub fn tick(&mut self, now_ms: u64) {
        let mut expired: Vec<CommandId> = self
            .commands
            .values()
            .filter(|c| !c.state.is_final() && now_ms >= c.deadline_ms)
            .map(|c| c.id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            let ttl = self.config.command_ttl_ms;
            let detail = format!("no result within {ttl} ms (commands.ttl_ms)");
            self.transition(id, CommandState::TimedOut, Some(detail), now_ms);
            if let Some(device) = self.commands.get(&id).map(|c| c.device) {
                self.pump(device, now_ms);
            }
        }
        let mut ids: Vec<DeviceId> = self.devices.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.update_status(id, now_ms);
        }
    }

    /// Sends queued commands of `device` while it has a session and room.
    fn pump(&mut self, device: DeviceId, now_ms: u64) {
        loop {
            let Some(entry) = self.devices.get_mut(&device) else {
                return;
            };
            let Some(session) = entry.session else { return };
            if entry.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let Some(id) = entry.queue.pop_front() else {
                return;
            };
            let Some(body) = self.commands.get(&id).map(|c| c.body.clone()) else {
                continue; // retired meanwhile; nothing to send
            };
            entry.in_flight.push(id);
            self.effects.push(Effect::Send { session, id, body });
            self.transition(id, CommandState::Sent, None, now_ms);
        }
    }

    /// Moves a command to `state`, publishes it, and retires final ones.
    fn transition(
        &mut self,
        id: CommandId,
        state: CommandState,
        detail: Option<String>,
        now_ms: u64,
    ) {
        let Some(c) = self.commands.get_mut(&id) else {
            return;
        };
        c.state = state;
        c.detail = detail;
        c.updated_ms = now_ms;
        let device = c.device;
        self.publish(id);
        if state.is_final() {
            self.counters.commands_final[state.index()] += 1;
            if let Some(d) = self.devices.get_mut(&device) {
                d.queue.retain(|&q| q != id);
                d.in_flight.retain(|&q| q != id);
            }
            self.finished.push_back(id);
            while self.finished.len() > self.config.retain_finished {
                if let Some(old) = self.finished.pop_front() {
                    self.commands.remove(&old);
                }
            }
        }
    }

    fn publish(&mut self, id: CommandId) {
        if let Some(c) = self.commands.get(&id) {
            self.effects.push(Effect::Command(c.clone()));
        }
    }

    fn update_status(&mut self, device: DeviceId, now_ms: u64) {
        let Some(entry) = self.devices.get_mut(&device) else {
            return;
        };
        let status = evaluate(entry, &self.config, now_ms);
        if status != entry.status {
            let previous = entry.status;
            entry.status = status;
            entry.status_since_ms = now_ms;
            self.changed.insert(device);
            self.effects.push(Effect::DeviceStatus {
                device,
                status,
                previous: Some(previous),
                at_ms: now_ms,
            });
        }
    }
}

fn offset(hub_ms: u64, device_ms: u64) -> i64 {
    (hub_ms as i128 - device_ms as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The liveness rule (see the module documentation).
fn evaluate(entry: &DeviceEntry, config: &RegistryConfig, now_ms: u64) -> DeviceStatus {
    let connected = entry.session.is_some();
    let interval = match &entry.info {
        Some(info) if info.interval_ms == 0 => {
            return if connected {
                DeviceStatus::Online
            } else {
                DeviceStatus::Offline
            };
        }
        Some(info) => u64::from(info.interval_ms),
        None => config.default_interval_ms,
    };
    let last = entry
        .last_data_ms
        .max(entry.session_started_ms)
        .unwrap_or(now_ms);
    let silence = now_ms.saturating_sub(last);
    let late_after = interval.saturating_mul(u64::from(config.late_after_intervals));
    let offline_after = interval.saturating_mul(u64::from(config.offline_after_intervals));
    let lost_session = entry.info.is_some() && !connected;
    if silence < late_after {
        DeviceStatus::Online
    } else if connected || (silence < offline_after && !lost_session) {
        DeviceStatus::Late
    } else {
        DeviceStatus::Offline
    }
}

#[cfg(test)]
mod tests;
