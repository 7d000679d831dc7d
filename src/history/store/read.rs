//! Reading the history back: one sensor's points of a tier over a range
//! (the tier's table plus the sensor's rows still in the journal), and the
//! devices with their channels at start.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension as _};

use super::{tier_code, Store, StoreError};
use crate::history::merge::merge_unwritten;
use crate::history::{Point, Reading, Tier};
use crate::registry::{DeviceRecord, DeviceStatus};

/// A device as loaded back: its record and the channels it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDevice {
    /// What was written last (for a device known only from its readings:
    /// no info, `offline`).
    pub record: DeviceRecord,
    /// Channels it sent, ascending.
    pub channels: Vec<u8>,
}

impl Store {
    /// The points of one sensor in `[from_ms, to_ms)` from `tier`, by time:
    /// raw readings, or the tier's buckets, including what is still in the
    /// journal.
    pub fn query(
        &self,
        device: u32,
        channel: u8,
        from_ms: u64,
        to_ms: u64,
        tier: Tier,
    ) -> Result<Vec<Point>, StoreError> {
        let (from, to) = (from_ms as i64, to_ms as i64);
        let stored = if tier == Tier::Raw {
            let mut stmt = self.conn.prepare_cached(
                "SELECT t_ms, value FROM raw WHERE device = ?1 AND channel = ?2 AND t_ms >= ?3 AND t_ms < ?4
                 ORDER BY t_ms, id",
            )?;
            let rows = stmt.query_map(params![device, channel, from, to], |r| {
                Ok(Point::raw(r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        } else {
            // Buckets that start before `from` but reach into the range are
            // not included: a bucket is in the range when its start is.
            let mut stmt = self.conn.prepare_cached(
                "SELECT bucket_ms, count, min, max, sum, last FROM agg
                 WHERE tier = ?1 AND device = ?2 AND channel = ?3 AND bucket_ms >= ?4 AND bucket_ms < ?5
                 ORDER BY bucket_ms",
            )?;
            let rows =
                stmt.query_map(params![tier_code(tier), device, channel, from, to], |r| {
                    let count = r.get::<_, i64>(1)? as u64;
                    let sum: f64 = r.get(4)?;
                    Ok(Point {
                        t_ms: r.get::<_, i64>(0)? as u64,
                        count,
                        min: r.get(2)?,
                        max: r.get(3)?,
                        mean: if count == 0 { 0.0 } else { sum / count as f64 },
                        last: r.get(5)?,
                    })
                })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        // The journal holds about a minute: scanned, not indexed.
        let mut stmt = self.conn.prepare_cached(
            "SELECT t_ms, value FROM journal WHERE device = ?1 AND channel = ?2 AND t_ms >= ?3 AND t_ms < ?4
             ORDER BY id",
        )?;
        let journal = stmt
            .query_map(params![device, channel, from, to], |r| {
                Ok(Reading {
                    device,
                    channel,
                    t_ms: r.get::<_, i64>(0)? as u64,
                    value: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(merge_unwritten(stored, tier, &journal))
    }
    /// Every device written so far, by id, with the channels it sent. Its
    /// last-seen time is the later of the record's and its latest reading.
    /// A record that cannot be read back is skipped with a warning.
    pub fn load_devices(&self) -> Result<Vec<StoredDevice>, StoreError> {
        let mut devices: BTreeMap<u32, StoredDevice> = BTreeMap::new();
        let mut stmt = self.conn.prepare("SELECT id, record FROM devices")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, json) = row?;
            match serde_json::from_str::<DeviceRecord>(&json) {
                Ok(record) if record.id == id => {
                    devices.insert(
                        id,
                        StoredDevice {
                            record,
                            channels: Vec::new(),
                        },
                    );
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        device = id,
                        "skipping an unreadable device record in the history database"
                    );
                }
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT device, channel FROM channels ORDER BY device, channel")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u8>(1)?)))?;
        for row in rows {
            let (id, channel) = row?;
            devices
                .entry(id)
                .or_insert_with(|| StoredDevice {
                    record: DeviceRecord {
                        id,
                        info: None,
                        status: DeviceStatus::Offline,
                        status_since_ms: 0,
                        last_seen_ms: None,
                    },
                    channels: Vec::new(),
                })
                .channels
                .push(channel);
        }
        // The journal's latest per device, in one scan (it is small).
        let mut stmt = self
            .conn
            .prepare("SELECT device, max(t_ms) FROM journal GROUP BY device")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (id, t) = row?;
            if let Some(device) = devices.get_mut(&id) {
                device.record.last_seen_ms = device.record.last_seen_ms.max(Some(t as u64));
            }
        }
        // Then raw, per channel, so each is one lookup at the end of the key.
        let mut latest = self
            .conn
            .prepare("SELECT max(t_ms) FROM raw WHERE device = ?1 AND channel = ?2")?;
        for device in devices.values_mut() {
            for &channel in &device.channels {
                let t: Option<i64> = latest
                    .query_row(params![device.record.id, channel], |r| r.get(0))
                    .optional()?
                    .flatten();
                let t = t.map(|t| t as u64);
                device.record.last_seen_ms = device.record.last_seen_ms.max(t);
            }
            if device.record.status_since_ms == 0 {
                // Known only from its readings: offline since it was last heard.
                device.record.status_since_ms = device.record.last_seen_ms.unwrap_or(0);
            }
        }
        Ok(devices.into_values().collect())
    }
}
