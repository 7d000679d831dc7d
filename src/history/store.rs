//! The history's SQLite database (rusqlite, bundled SQLite, WAL mode):
//! opening or creating it with errors that say what to do, the schema,
//! batched writes (raw readings plus the minute/hour roll-ups, one
//! transaction per batch, together with the device records and the channels
//! seen), retention, range queries per tier, and loading the devices back.
//!
//! A file that exists but is not a sensor-hub database, or that SQLite
//! finds damaged, is refused — never replaced by a new empty database.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension as _};

use super::{expired_before, Point, Reading, Retention, Rollup, Tier};
use crate::registry::{DeviceRecord, DeviceStatus};

/// Schema version written into new databases.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS raw (
    device INTEGER NOT NULL, channel INTEGER NOT NULL, t_ms INTEGER NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS raw_by_sensor ON raw (device, channel, t_ms);
CREATE INDEX IF NOT EXISTS raw_by_time ON raw (t_ms);
CREATE TABLE IF NOT EXISTS agg (
    tier INTEGER NOT NULL, device INTEGER NOT NULL, channel INTEGER NOT NULL,
    bucket_ms INTEGER NOT NULL, count INTEGER NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    sum REAL NOT NULL, last REAL NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (tier, device, channel, bucket_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    device INTEGER NOT NULL, channel INTEGER NOT NULL, PRIMARY KEY (device, channel)) WITHOUT ROWID;
";

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created; `hint` says what to do.
    #[error("cannot use the history database {path}: {problem}; {hint}")]
    Open {
        /// The file (`storage.path`).
        path: PathBuf,
        /// What SQLite said.
        problem: String,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// A statement failed on an open database.
    #[error("history database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The writer thread could not be started.
    #[error("cannot start the history writer thread: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        let code = match self {
            StoreError::Open { hint, .. } => return hint,
            StoreError::Sql(e) => e.sqlite_error_code(),
            StoreError::Thread(_) => return "the system is out of threads or memory",
        };
        match code {
            Some(ErrorCode::DiskFull) => "the disk is full: free space (readings are dropped until then)",
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                "the database is damaged: stop the hub, move the file away or restore a backup"
            }
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) | Some(ErrorCode::CannotOpen) => {
                "the database file or its directory is no longer writable: check permissions and the disk"
            }
            Some(ErrorCode::SystemIoFailure) => "the disk reported an I/O error: check it (dmesg) and free space",
            _ => "check the disk and storage.path",
        }
    }
}

fn tier_code(tier: Tier) -> i64 {
    match tier {
        Tier::Raw => 0,
        Tier::Minute => 1,
        Tier::Hour => 2,
    }
}

fn open_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    let hint = match code {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            "it is not a sensor-hub history database or it is damaged: move it away (the hub then creates a new one) or restore a backup"
        }
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) | Some(ErrorCode::ReadOnly) => {
            "check that its directory exists and is writable by the hub's user, or choose another storage.path"
        }
        Some(ErrorCode::DiskFull) => "the disk is full: free space or choose another storage.path",
        _ => "check storage.path, or set storage.enabled = false to run without history",
    };
    StoreError::Open {
        path: path.to_path_buf(),
        problem: e.to_string(),
        hint,
    }
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// (device, channel) pairs already in the `channels` table.
    channels: HashSet<(u32, u8)>,
}

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
    /// Opens the database at `path`, creating it (and its schema) if the
    /// file does not exist. An existing file that is not a sensor-hub
    /// database, or that is damaged, is an error.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, &e))?;
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if check != "ok" {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(check),
                ));
            }
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION],
            )?;
            Ok(())
        };
        setup().map_err(|e| open_error(path, &e))?;
        let version: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| open_error(path, &e))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                problem: format!("schema version {version}, this hub uses {SCHEMA_VERSION}"),
                hint: "use a hub version that matches the database, or move it away",
            });
        }
        let channels = (|| {
            let mut stmt = conn.prepare("SELECT device, channel FROM channels")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<HashSet<(u32, u8)>>>()
        })()
        .map_err(|e| open_error(path, &e))?;
        Ok(Store { conn, channels })
    }

    /// A second, read-only connection to the database a [`Store`] opened at
    /// `path`, for queries while the store writes (WAL lets both proceed).
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, &e))?;
        Ok(Store {
            conn,
            channels: HashSet::new(),
        })
    }

    /// Writes a batch of readings and their roll-ups in one transaction.
    /// Returns the readings written (NaN and infinities are skipped).
    pub fn write(&mut self, readings: &[Reading]) -> Result<usize, StoreError> {
        self.write_batch(readings, &[])
    }

    /// Writes readings, their roll-ups, the channels not seen before and
    /// the device records in one transaction. Returns the readings written
    /// (NaN and infinities are skipped).
    pub fn write_batch(
        &mut self,
        readings: &[Reading],
        devices: &[DeviceRecord],
    ) -> Result<usize, StoreError> {
        let mut rollup = Rollup::new();
        let mut new_channels = Vec::new();
        let tx = self.conn.transaction()?;
        let mut written = 0;
        {
            let mut save = tx.prepare_cached(
                "INSERT INTO devices (id, record) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            )?;
            for device in devices {
                let json = serde_json::to_string(device)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                save.execute(params![device.id, json])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO raw (device, channel, t_ms, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in readings {
                if rollup.add(r) {
                    insert.execute(params![r.device, r.channel, r.t_ms as i64, r.value])?;
                    written += 1;
                }
                if !self.channels.contains(&(r.device, r.channel)) {
                    new_channels.push((r.device, r.channel));
                }
            }
            new_channels.sort_unstable();
            new_channels.dedup();
            let mut channel = tx.prepare_cached(
                "INSERT OR IGNORE INTO channels (device, channel) VALUES (?1, ?2)",
            )?;
            for &(device, ch) in &new_channels {
                channel.execute(params![device, ch])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO agg (tier, device, channel, bucket_ms, count, min, max, sum, last, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (tier, device, channel, bucket_ms) DO UPDATE SET
                   count = count + excluded.count,
                   min = min(min, excluded.min),
                   max = max(max, excluded.max),
                   sum = sum + excluded.sum,
                   last = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last ELSE last END,
                   last_ms = max(last_ms, excluded.last_ms)",
            )?;
            for (key, a) in rollup.drain() {
                upsert.execute(params![
                    tier_code(key.tier),
                    key.device,
                    key.channel,
                    key.bucket_start_ms as i64,
                    a.count as i64,
                    a.min,
                    a.max,
                    a.sum,
                    a.last,
                    a.last_ms as i64
                ])?;
            }
        }
        tx.commit()?;
        self.channels.extend(new_channels);
        Ok(written)
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
        // Per channel, so each is one lookup at the end of the index.
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

    /// Deletes what each tier no longer keeps at `now_ms`; returns rows deleted.
    pub fn expire(&mut self, now_ms: u64, retention: &Retention) -> Result<usize, StoreError> {
        let raw_cut = expired_before(Tier::Raw, now_ms, retention) as i64;
        let mut deleted = self
            .conn
            .execute("DELETE FROM raw WHERE t_ms < ?1", params![raw_cut])?;
        for tier in [Tier::Minute, Tier::Hour] {
            let cut = expired_before(tier, now_ms, retention) as i64;
            deleted += self.conn.execute(
                "DELETE FROM agg WHERE tier = ?1 AND bucket_ms < ?2",
                params![tier_code(tier), cut],
            )?;
        }
        Ok(deleted)
    }

    /// The points of one sensor in `[from_ms, to_ms)` from `tier`, by time.
    pub fn query(
        &self,
        device: u32,
        channel: u8,
        from_ms: u64,
        to_ms: u64,
        tier: Tier,
    ) -> Result<Vec<Point>, StoreError> {
        let (from, to) = (from_ms as i64, to_ms as i64);
        let points = if tier == Tier::Raw {
            let mut stmt = self.conn.prepare_cached(
                "SELECT t_ms, value FROM raw WHERE device = ?1 AND channel = ?2 AND t_ms >= ?3 AND t_ms < ?4 ORDER BY t_ms",
            )?;
            let rows = stmt.query_map(params![device, channel, from, to], |r| {
                Ok(Point::raw(r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        } else {
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
        Ok(points)
    }
}

#[cfg(test)]
mod tests;
