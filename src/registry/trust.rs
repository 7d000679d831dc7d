//! Which devices the registry keeps, and on what grounds. A device is
//! **adopted** when the owner listed it in the device file (with or
//! without a key) or when it was admitted by an authenticated hello;
//! adopted devices count against `limits.max_devices`, are persisted and
//! restored. A datagram from any other id may at most create a
//! **discovered** entry: bounded apart (`devices.max_discovered`), dropped
//! after `devices.discovered_ttl_ms` of silence, never persisted, never
//! pushing out an adopted device; with `devices.accept_unknown = false`
//! such datagrams are refused outright.

use sensor_hub_protocol::DeviceId;

use super::{DeviceEntry, DeviceStatus, Effect, Registry};
use crate::clock::Now;

/// Bounds of adoption and discovery (from `[devices]` and `[control]`).
#[derive(Debug, Clone)]
pub struct TrustConfig {
    /// Whether datagrams from unknown ids may create discovered entries.
    pub accept_unknown: bool,
    /// Most discovered devices tracked at once.
    pub max_discovered: usize,
    /// Silence after which a discovered device is dropped, ms.
    pub discovered_ttl_ms: u64,
    /// A session younger than this is not replaced by a new hello, ms.
    pub min_replace_interval_ms: u64,
}

impl Default for TrustConfig {
    /// The defaults of config/default.toml.
    fn default() -> TrustConfig {
        TrustConfig {
            accept_unknown: true,
            max_discovered: 64,
            discovered_ttl_ms: 600_000,
            min_replace_interval_ms: 1_000,
        }
    }
}

/// Why a datagram's device was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Adopted devices are at `limits.max_devices`.
    DeviceLimit,
    /// Unknown id while `devices.accept_unknown` is false.
    UnknownDevice,
    /// Discovered devices are at `devices.max_discovered`.
    DiscoveredLimit,
}

impl Registry {
    fn adopted_count(&self) -> usize {
        self.devices.len() - self.discovered
    }

    /// The device's entry, adding it (adopted when `adopt`, else
    /// discovered) or promoting a discovered one when `adopt`, within the
    /// bounds: the one admission rule for datagrams and hellos alike.
    pub(super) fn admit(
        &mut self,
        device: DeviceId,
        adopt: bool,
        now: Now,
    ) -> Result<&mut DeviceEntry, Refusal> {
        let known = self.devices.get(&device).map(|e| e.adopted);
        match known {
            Some(true) => {}
            Some(false) if !adopt => {}
            Some(false) => {
                if self.adopted_count() >= self.config.max_devices {
                    return Err(Refusal::DeviceLimit);
                }
                self.discovered -= 1;
                if let Some(entry) = self.devices.get_mut(&device) {
                    entry.adopted = true;
                }
                self.changed.insert(device);
            }
            None => {
                if adopt {
                    if self.adopted_count() >= self.config.max_devices {
                        return Err(Refusal::DeviceLimit);
                    }
                } else if !self.config.trust.accept_unknown {
                    return Err(Refusal::UnknownDevice);
                } else if self.discovered >= self.config.trust.max_discovered {
                    return Err(Refusal::DiscoveredLimit);
                }
                let mut entry = DeviceEntry::new(device, now.wall_ms);
                entry.adopted = adopt;
                if adopt {
                    self.changed.insert(device);
                } else {
                    self.discovered += 1;
                }
                self.devices.insert(device, entry);
                self.deadlines_moved = true;
                self.effects.push(Effect::DeviceStatus {
                    device,
                    status: DeviceStatus::Online,
                    previous: None,
                    at_ms: now.wall_ms,
                });
            }
        }
        self.devices.get_mut(&device).ok_or(Refusal::DeviceLimit)
    }

    /// The ids of the device file changed: listed devices already tracked
    /// are adopted (while there is room). Returns the ids no longer listed
    /// (the caller forgets them: removing a device from the file is
    /// forgetting it).
    pub fn set_listed(
        &mut self,
        listed: impl IntoIterator<Item = DeviceId>,
        now: Now,
    ) -> Vec<DeviceId> {
        let listed: std::collections::HashSet<DeviceId> = listed.into_iter().collect();
        let mut unlisted: Vec<DeviceId> = self.listed.difference(&listed).copied().collect();
        unlisted.sort_unstable();
        self.listed = listed;
        let mut promote: Vec<DeviceId> = self
            .listed
            .iter()
            .copied()
            .filter(|id| self.devices.get(id).is_some_and(|e| !e.adopted))
            .collect();
        promote.sort_unstable();
        for id in promote {
            let _ = self.admit(id, true, now);
        }
        unlisted
    }

    /// Whether `device` is in the device file.
    pub fn is_listed(&self, device: DeviceId) -> bool {
        self.listed.contains(&device)
    }

    /// Removes a device: its session is closed, its unfinished commands
    /// fail, and a [`Effect::DeviceRemoved`] is queued. Returns whether it
    /// was tracked.
    pub fn forget(&mut self, device: DeviceId, now: Now) -> bool {
        let Some(entry) = self.devices.get(&device) else {
            return false;
        };
        let session = entry.session;
        let pending: Vec<_> = entry
            .queue
            .iter()
            .chain(entry.in_flight.iter())
            .copied()
            .collect();
        for id in pending {
            self.transition(
                id,
                super::CommandState::Failed,
                Some("the device was forgotten".to_string()),
                now,
            );
        }
        self.remove(device, now);
        if let Some(session) = session {
            self.effects.push(Effect::CloseSession {
                session,
                reason: sensor_hub_protocol::control::RejectReason::BadToken,
            });
        }
        self.counters.forgotten += 1;
        true
    }

    /// Closes the device's session, if it has one (its credential
    /// changed); the device is told `BadToken` and must say hello again.
    pub fn end_session(&mut self, device: DeviceId, now: Now) {
        let Some(session) = self.devices.get(&device).and_then(|e| e.session) else {
            return;
        };
        self.effects.push(Effect::CloseSession {
            session,
            reason: sensor_hub_protocol::control::RejectReason::BadToken,
        });
        self.close_session(device, session, now);
    }

    fn remove(&mut self, device: DeviceId, now: Now) {
        if let Some(entry) = self.devices.remove(&device) {
            if !entry.adopted {
                self.discovered -= 1;
            }
            self.changed.remove(&device);
            self.deadlines_moved = true;
            self.effects.push(Effect::DeviceRemoved {
                device,
                at_ms: now.wall_ms,
            });
        }
    }

    /// Drops discovered devices silent for `devices.discovered_ttl_ms`.
    pub(super) fn expire_discovered(&mut self, now: Now) {
        let ttl = self.config.trust.discovered_ttl_ms;
        let mut expired: Vec<DeviceId> = self
            .devices
            .values()
            .filter(|e| !e.adopted && discovered_expiry(e, ttl) <= now.mono_ms)
            .map(|e| e.id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.remove(id, now);
            self.counters.discovered_expired += 1;
        }
    }

    /// When the earliest discovered device expires, monotonic ms.
    pub(super) fn next_expiry(&self) -> Option<u64> {
        let ttl = self.config.trust.discovered_ttl_ms;
        self.devices
            .values()
            .filter(|e| !e.adopted)
            .map(|e| discovered_expiry(e, ttl))
            .min()
    }
}

fn discovered_expiry(entry: &DeviceEntry, ttl: u64) -> u64 {
    entry
        .last_data_mono
        .max(entry.session_started_mono)
        .unwrap_or(0)
        .saturating_add(ttl)
}
