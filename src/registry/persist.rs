//! What of the registry outlives a restart: each device's [`DeviceRecord`]
//! (what it said in its hello, its latest status and when it was last
//! heard from). The registry marks a device changed when its hello or its
//! status changes — not on every datagram — and the shell hands
//! [`Registry::take_changed`] to the history writer; on start,
//! [`Registry::restore`] loads what was written.

use serde::{Deserialize, Serialize};

use super::{DeviceEntry, DeviceInfo, DeviceStatus, Registry};
use sensor_hub_protocol::DeviceId;

/// The persisted part of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Its id.
    pub id: DeviceId,
    /// From its latest hello, if it ever sent one.
    pub info: Option<DeviceInfo>,
    /// Status when written.
    pub status: DeviceStatus,
    /// Hub time of that status change.
    pub status_since_ms: u64,
    /// Hub time it was last heard from (data or control), if ever.
    pub last_seen_ms: Option<u64>,
}

impl DeviceRecord {
    fn of(entry: &DeviceEntry) -> DeviceRecord {
        DeviceRecord {
            id: entry.id,
            info: entry.info.clone(),
            status: entry.status,
            status_since_ms: entry.status_since_ms,
            last_seen_ms: entry.last_seen_ms(),
        }
    }
}

impl Registry {
    /// Records of the devices whose hello or status changed since the last
    /// call, by id.
    pub fn take_changed(&mut self) -> Vec<DeviceRecord> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|id| self.devices.get(&id))
            .filter(|entry| entry.adopted)
            .map(DeviceRecord::of)
            .collect()
    }

    /// Adds a device known from before a restart, with the channels it
    /// sent. It has no session; its status is re-evaluated at the next
    /// [`Registry::tick`]: silent since before the restart, it goes
    /// `offline` unless it sends or reconnects first (the monotonic clock
    /// does not span restarts, so its wall-clock `last_seen_ms` is only shown). Queues nothing. A device
    /// already tracked, or one over `max_devices`, is ignored; returns
    /// whether it was added.
    pub fn restore(&mut self, record: DeviceRecord, known_channels: Vec<u8>) -> bool {
        // Only adopted devices were ever written; a record without a hello
        // from before adoption existed is adopted only if listed.
        let adopted = record.info.is_some() || self.listed.contains(&record.id);
        if !adopted
            || self.devices.contains_key(&record.id)
            || self.devices.len() - self.discovered >= self.config.max_devices
        {
            return false;
        }
        let mut entry = DeviceEntry::new(record.id, record.status_since_ms);
        entry.info = record.info;
        entry.status = record.status;
        entry.last_data_ms = record.last_seen_ms;
        entry.known_channels = known_channels;
        entry.restored = true;
        self.devices.insert(record.id, entry);
        self.deadlines_moved = true;
        true
    }
}
