//! The history's SQLite database (rusqlite, bundled SQLite, WAL mode,
//! `synchronous = FULL`):
//! opening or creating it with errors that say what to do, and the schema.
//! Writing, compaction and retention are in [`write`](self) (`write.rs`),
//! queries and loading the devices back in `read.rs`.
//!
//! Layout, chosen for few page writes (SD cards wear by pages written, not
//! bytes stored): each flush appends its readings to `journal`, in arrival
//! order with no index, so a commit touches the table's last pages only.
//! Once a minute the closed minutes are moved out of the journal into `raw`
//! (clustered by sensor and time, `WITHOUT ROWID`) and folded into the
//! minute and hour aggregates in `agg`, so each sensor's pages are written
//! once a minute instead of once a flush. Queries read the tier's table and
//! the journal's rows of the sensor. Retention deletes by sensor, through
//! the primary keys, so no index by time is needed.
//!
//! A file that exists but is not a sensor-hub database, or that SQLite
//! finds damaged, is refused — never replaced by a new empty database.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OpenFlags};

use super::Tier;

mod read;
mod write;

pub use read::StoredDevice;

/// Schema version written into new databases.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t_ms INTEGER NOT NULL,
    device INTEGER NOT NULL, channel INTEGER NOT NULL, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS raw (
    device INTEGER NOT NULL, channel INTEGER NOT NULL, t_ms INTEGER NOT NULL,
    id INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (device, channel, t_ms, id)) WITHOUT ROWID;
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
    /// The minute the journal was last compacted up to (0: not since
    /// opening, so the first write compacts what a crash left behind); a
    /// batch in another minute, later or earlier, compacts again.
    last_cut_ms: u64,
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
            // FULL: every commit (one per flush) is on disk before the next
            // flush starts, so a power cut loses at most one flush interval.
            // (NORMAL would only sync at checkpoints, minutes apart for a
            // small fleet.)
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Room for a whole minute's compaction of a large fleet, so pages
            // are not spilled to the WAL and written again (16 MiB at most).
            conn.pragma_update(None, "cache_size", -16_384)?;
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
        Ok(Store {
            conn,
            channels,
            last_cut_ms: 0,
        })
    }

    /// A second, read-only connection to the database a [`Store`] opened at
    /// `path`, for queries while the store writes (WAL lets both proceed).
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, &e))?;
        Ok(Store {
            conn,
            channels: HashSet::new(),
            last_cut_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests;
