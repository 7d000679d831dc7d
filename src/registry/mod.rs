//! The control plane's pure core: which devices exist and what they said
//! about themselves, their control sessions, liveness (`online`, `late`,
//! `offline`) and the lifecycle of every command.
//!
//! No I/O and no clock: every method takes the current moment ([`Now`]:
//! monotonic time for liveness and command deadlines, wall time only for
//! the timestamps it records for people), changes the state, and queues
//! [`Effect`]s (messages to send, sessions to close,
//! statuses to publish) that the shell drains with
//! [`Registry::take_effects`]. Unit tests drive it on a virtual clock.
//!
//! Liveness: a device's expected cadence is its declared interval (or
//! `liveness.default_interval_ms` until it says, or a successful
//! `set_interval` changes it). Silence is counted from
//! its latest datagram, or from its session start if that is later. It is
//! `online` while silent for fewer than `late_after_intervals` intervals,
//! `late` until `offline_after_intervals`, then `offline`. A device that
//! keeps its control session is at worst `late` (reachable, no data); one
//! that had a session and lost it goes straight to `offline` once late. A
//! device that declares interval 0 sends no data: it is `online` exactly
//! while its session is open.

mod commands;
mod persist;
mod trust;

use std::collections::{BTreeSet, HashMap, VecDeque};

use strum::EnumCount as _;

use sensor_hub_protocol::control::{CommandBody, Hello, Outcome, RejectReason, SensorInfo};
use sensor_hub_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::clock::Now;

pub use commands::{kind_of, CommandId, CommandRecord, CommandState, Origin};
pub use persist::DeviceRecord;
pub use trust::{Refusal, TrustConfig};

/// Control session id (unique while the hub runs).
pub type SessionId = u64;

/// Liveness of a device.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumCount,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeviceStatus {
    /// Reporting at its cadence.
    Online,
    /// Missed a few intervals.
    Late,
    /// Missed many intervals, or lost its session and its data.
    Offline,
}

impl DeviceStatus {
    /// snake_case name (as in JSON and metrics).
    pub fn name(self) -> &'static str {
        self.into()
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
    /// Adopted and discovered devices, session replacement.
    pub trust: TrustConfig,
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
    /// Wall time its current (or latest) session started, Unix ms.
    pub session_started_ms: Option<u64>,
    /// Wall time of its latest datagram, Unix ms.
    pub last_data_ms: Option<u64>,
    /// Wall time of its latest control frame, Unix ms.
    pub last_control_ms: Option<u64>,
    /// Hub clock minus device clock, from its latest hello or heartbeat.
    pub clock_offset_ms: Option<i64>,
    /// Current liveness.
    pub status: DeviceStatus,
    /// Wall time of the latest status change, Unix ms.
    pub status_since_ms: u64,
    /// Channels it sent before the hub restarted (from the history).
    pub known_channels: Vec<u8>,
    queue: VecDeque<CommandId>,
    in_flight: Vec<CommandId>,
    /// Monotonic time of its latest datagram.
    last_data_mono: Option<u64>,
    /// Monotonic time its current (or latest) session started.
    session_started_mono: Option<u64>,
    /// Known only from before a restart, and not heard from since.
    restored: bool,
    /// Adopted (listed in the device file, or admitted by a hello) rather
    /// than only discovered from its datagrams.
    pub adopted: bool,
}

impl DeviceEntry {
    fn new(id: DeviceId, status_since_ms: u64) -> DeviceEntry {
        DeviceEntry {
            id,
            info: None,
            session: None,
            session_started_ms: None,
            last_data_ms: None,
            last_control_ms: None,
            clock_offset_ms: None,
            status: DeviceStatus::Online,
            status_since_ms,
            known_channels: Vec::new(),
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            last_data_mono: None,
            session_started_mono: None,
            restored: false,
            adopted: true,
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
    /// A device is gone: forgotten by the owner, or a discovered device
    /// that went silent for `devices.discovered_ttl_ms`.
    DeviceRemoved {
        /// The device.
        device: DeviceId,
        /// Wall time, Unix ms.
        at_ms: u64,
    },
    /// A device changed status (or appeared: `previous` is `None`).
    DeviceStatus {
        /// The device.
        device: DeviceId,
        /// New status.
        status: DeviceStatus,
        /// Status before, if it existed.
        previous: Option<DeviceStatus>,
        /// Wall time of the change, Unix ms.
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
    /// Hellos refused because the device's session was replaced less than
    /// `control.min_replace_interval_ms` before.
    pub rejected_too_soon: u64,
    /// Discovered devices dropped after `devices.discovered_ttl_ms` of
    /// silence.
    pub discovered_expired: u64,
    /// Devices the owner forgot.
    pub forgotten: u64,
    /// Commands that reached each final state, by [`CommandState::index`].
    pub commands_final: [u64; CommandState::COUNT],
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
    /// See [`Registry::take_deadlines_moved`].
    deadlines_moved: bool,
    counters: RegistryCounters,
    /// Ids in the device file: adopted whenever they appear.
    listed: std::collections::HashSet<DeviceId>,
    /// Entries with `adopted == false`.
    discovered: usize,
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
            deadlines_moved: false,
            counters: RegistryCounters::default(),
            listed: std::collections::HashSet::new(),
            discovered: 0,
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

    /// Number of devices in each status, indexed by `status as usize`.
    pub fn status_counts(&self) -> [usize; DeviceStatus::COUNT] {
        let mut counts = [0; DeviceStatus::COUNT];
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

    /// Number of devices tracked, adopted and discovered.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Number of discovered (not adopted) devices tracked.
    pub fn discovered_count(&self) -> usize {
        self.discovered
    }

    /// A datagram from `device` arrived at `now` (its tag, if it needs
    /// one, already verified): admits the device (see [`Registry::admit`])
    /// and records the arrival. Returns the device's clock offset (hub
    /// minus device) if known, and whether it is adopted.
    pub fn data_seen(
        &mut self,
        device: DeviceId,
        now: Now,
    ) -> Result<(Option<i64>, bool), Refusal> {
        let adopt = self.listed.contains(&device);
        let entry = self.admit(device, adopt, now)?;
        entry.last_data_ms = Some(now.wall_ms);
        entry.last_data_mono = Some(now.mono_ms);
        entry.restored = false;
        let found = (entry.clock_offset_ms, entry.adopted);
        self.update_status(device, now);
        Ok(found)
    }

    /// A device said hello (already authenticated by the shell). Returns the
    /// new session's id, or why it is refused.
    pub fn open_session(&mut self, hello: &Hello, now: Now) -> Result<SessionId, RejectReason> {
        let session = self.next_session;
        let min_replace = self.config.trust.min_replace_interval_ms;
        if let Some(entry) = self.devices.get(&hello.device_id) {
            if let (Some(_), Some(started)) = (entry.session, entry.session_started_mono) {
                if now.mono_ms < started.saturating_add(min_replace) {
                    self.counters.rejected_too_soon += 1;
                    return Err(RejectReason::TooSoon);
                }
            }
        }
        let entry = match self.admit(hello.device_id, true, now) {
            Ok(entry) => entry,
            Err(_) => {
                self.counters.rejected_too_many_devices += 1;
                return Err(RejectReason::TooManyDevices);
            }
        };
        let replaced = entry.session.replace(session);
        entry.info = Some(DeviceInfo {
            name: hello.name.to_string(),
            firmware: hello.firmware.to_string(),
            interval_ms: hello.interval_ms,
            sensors: hello.sensors.to_vec(),
        });
        entry.session_started_ms = Some(now.wall_ms);
        entry.session_started_mono = Some(now.mono_ms);
        entry.last_control_ms = Some(now.wall_ms);
        entry.restored = false;
        entry.clock_offset_ms = Some(offset(now.wall_ms, hello.device_time_ms));
        self.changed.insert(hello.device_id);
        self.deadlines_moved = true;
        self.next_session += 1;
        self.counters.sessions_opened += 1;
        if let Some(old) = replaced {
            self.counters.sessions_replaced += 1;
            self.effects.push(Effect::CloseSession {
                session: old,
                reason: RejectReason::Replaced,
            });
        }
        self.update_status(hello.device_id, now);
        self.pump(hello.device_id, now);
        Ok(session)
    }

    /// A session ended (any reason). Ignored if the device already has a
    /// newer session.
    pub fn close_session(&mut self, device: DeviceId, session: SessionId, now: Now) {
        if let Some(entry) = self.devices.get_mut(&device) {
            if entry.session == Some(session) {
                entry.session = None;
                self.deadlines_moved = true;
                self.update_status(device, now);
            }
        }
    }

    /// A heartbeat (or any frame) arrived on the device's session.
    pub fn heartbeat(&mut self, device: DeviceId, device_time_ms: Option<u64>, now: Now) {
        if let Some(entry) = self.devices.get_mut(&device) {
            entry.last_control_ms = Some(now.wall_ms);
            if let Some(t) = device_time_ms {
                entry.clock_offset_ms = Some(offset(now.wall_ms, t));
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
        now: Now,
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
            created_ms: now.wall_ms,
            updated_ms: now.wall_ms,
            deadline_mono_ms: now.mono_ms.saturating_add(self.config.command_ttl_ms),
        };
        self.deadlines_moved = true;
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
            Some(reason) => self.transition(id, CommandState::Rejected, Some(reason), now),
            None => {
                self.publish(id);
                if let Some(d) = self.devices.get_mut(&device) {
                    d.queue.push_back(id);
                }
                self.pump(device, now);
            }
        }
        id
    }

    /// The device holds its session on another hub of the cluster now:
    /// its commands still queued here end `rejected` (saying where they
    /// went) and are returned, to be submitted again on that hub. Commands
    /// already sent stay: the device may still answer them.
    pub fn hand_over_queued(
        &mut self,
        device: DeviceId,
        hub: &str,
        now: Now,
    ) -> Vec<CommandRecord> {
        let Some(entry) = self.devices.get_mut(&device) else {
            return Vec::new();
        };
        if entry.session.is_some() {
            return Vec::new();
        }
        let queued: Vec<CommandId> = entry.queue.drain(..).collect();
        let mut moved = Vec::with_capacity(queued.len());
        for id in queued {
            if let Some(record) = self.commands.get(&id) {
                moved.push(record.clone());
                self.transition(
                    id,
                    CommandState::Rejected,
                    Some(format!(
                        "device {device} is on hub {hub} now; the command was handed over to it"
                    )),
                    now,
                );
            }
        }
        moved
    }

    /// The device confirmed receipt of command `id`.
    pub fn command_acked(&mut self, device: DeviceId, id: CommandId, now: Now) {
        match self.commands.get(&id) {
            Some(c) if c.device == device && c.state == CommandState::Sent => {
                self.transition(id, CommandState::Acked, None, now);
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
        now: Now,
    ) {
        match self.commands.get(&id) {
            Some(c) if c.device == device && !c.state.is_final() => {
                let state = match outcome {
                    Outcome::Succeeded => CommandState::Succeeded,
                    Outcome::Failed => CommandState::Failed,
                };
                let new_interval = match (outcome, &c.body) {
                    (Outcome::Succeeded, CommandBody::SetInterval { ms }) => Some(*ms),
                    _ => None,
                };
                if let Some(ms) = new_interval {
                    // The device now reports at the new cadence: liveness
                    // follows it, and the stored record says so.
                    let entry = self.devices.get_mut(&device);
                    if let Some(info) = entry.and_then(|d| d.info.as_mut()) {
                        info.interval_ms = ms;
                        self.changed.insert(device);
                        self.deadlines_moved = true;
                    }
                }
                self.transition(id, state, detail, now);
                self.pump(device, now);
                self.update_status(device, now);
            }
            _ => self.counters.unmatched_replies += 1,
        }
    }

    /// Advances time: times out commands past their TTL and re-evaluates
    /// every device's status. Returns when it next has work (see
    /// [`Registry::next_deadline`]).
    pub fn tick(&mut self, now: Now) -> Option<u64> {
        let mut expired: Vec<CommandId> = self
            .commands
            .values()
            .filter(|c| !c.state.is_final() && now.mono_ms >= c.deadline_mono_ms)
            .map(|c| c.id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            let ttl = self.config.command_ttl_ms;
            let detail = format!("no result within {ttl} ms (commands.ttl_ms)");
            self.transition(id, CommandState::TimedOut, Some(detail), now);
            if let Some(device) = self.commands.get(&id).map(|c| c.device) {
                self.pump(device, now);
            }
        }
        self.expire_discovered(now);
        let mut ids: Vec<DeviceId> = self.devices.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.update_status(id, now);
        }
        self.next_deadline(now)
    }

    /// The monotonic time (ms) at which [`Registry::tick`] next has work:
    /// the earliest command deadline or liveness threshold still ahead;
    /// `None` when nothing is pending. Datagrams only move these later, so
    /// the shell recomputes it early only when
    /// [`Registry::take_deadlines_moved`] says one may have come closer.
    pub fn next_deadline(&self, now: Now) -> Option<u64> {
        let commands = self
            .commands
            .values()
            .filter(|c| !c.state.is_final())
            .map(|c| c.deadline_mono_ms);
        let devices = self
            .devices
            .values()
            .filter_map(|d| next_change(d, &self.config, now.mono_ms));
        commands
            .chain(devices)
            .chain(self.next_expiry())
            .map(|t| t.max(now.mono_ms))
            .min()
    }

    /// Whether a change since the last call may have brought
    /// [`Registry::next_deadline`] closer (a new device, session or command,
    /// a closed session, a new interval); clears the flag.
    pub fn take_deadlines_moved(&mut self) -> bool {
        std::mem::take(&mut self.deadlines_moved)
    }

    /// Sends queued commands of `device` while it has a session and room.
    fn pump(&mut self, device: DeviceId, now: Now) {
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
            self.transition(id, CommandState::Sent, None, now);
        }
    }

    /// Moves a command to `state`, publishes it, and retires final ones.
    fn transition(&mut self, id: CommandId, state: CommandState, detail: Option<String>, now: Now) {
        let Some(c) = self.commands.get_mut(&id) else {
            return;
        };
        c.state = state;
        c.detail = detail;
        c.updated_ms = now.wall_ms;
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

    fn update_status(&mut self, device: DeviceId, now: Now) {
        let Some(entry) = self.devices.get_mut(&device) else {
            return;
        };
        let status = evaluate(entry, &self.config, now.mono_ms);
        if status != entry.status {
            let previous = entry.status;
            entry.status = status;
            entry.status_since_ms = now.wall_ms;
            self.changed.insert(device);
            self.effects.push(Effect::DeviceStatus {
                device,
                status,
                previous: Some(previous),
                at_ms: now.wall_ms,
            });
        }
    }
}

/// Largest clock offset the hub records, ms (about 285,000 years): far
/// beyond any real clock error, far inside `i64`, so arithmetic on it
/// cannot overflow.
pub const MAX_CLOCK_OFFSET_MS: i64 = 1 << 53;

/// Hub clock minus device clock, ms, clamped to ±[`MAX_CLOCK_OFFSET_MS`]
/// (a device time near `u64::MAX` used to drive it to `i64::MIN`).
fn offset(hub_ms: u64, device_ms: u64) -> i64 {
    let delta = i128::from(hub_ms) - i128::from(device_ms);
    let bound = i128::from(MAX_CLOCK_OFFSET_MS);
    i64::try_from(delta.clamp(-bound, bound)).unwrap_or(0)
}

/// When a device's status would next change by silence alone, monotonic ms
/// (`None`: not by silence, e.g. a device that sends no data).
fn next_change(entry: &DeviceEntry, config: &RegistryConfig, now_ms: u64) -> Option<u64> {
    let interval = match &entry.info {
        Some(info) if info.interval_ms == 0 => return None,
        Some(info) => u64::from(info.interval_ms),
        None => config.default_interval_ms,
    };
    let last = entry.last_data_mono.max(entry.session_started_mono)?;
    let after = |n: u32| last.saturating_add(interval.saturating_mul(u64::from(n)));
    [
        after(config.late_after_intervals),
        after(config.offline_after_intervals),
    ]
    .into_iter()
    .find(|&t| t > now_ms)
}

/// The liveness rule (see the module documentation), on monotonic time.
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
    let silence = match entry.last_data_mono.max(entry.session_started_mono) {
        Some(last) => now_ms.saturating_sub(last),
        // Known only from before a restart: silent since then.
        None if entry.restored => u64::MAX,
        None => 0,
    };
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
