//! The history's I/O shell: [`History`] owns the database, a writer thread
//! and the queue between ingest and that thread.
//!
//! Ingest hands accepted datagrams to [`History::record`] (a lock and a
//! copy, never a wait for the disk; overflow is dropped and counted, see
//! [`super::queue`]). The writer thread wakes every
//! `storage.flush_interval_ms`, writes everything waiting in one
//! transaction, and every minute deletes what the retention keeps no longer.
//! A failed write is logged with what to do and its readings are counted as
//! dropped; the hub keeps running and the next flush tries again.
//!
//! Queries run on a second, read-only connection (WAL lets it read while
//! the writer writes). A query holds the commit lock for reading while it
//! looks at the queue and then the database, and the writer takes the
//! batch from the queue only under the same lock held for writing, so a
//! reading is seen exactly once: waiting in the queue or committed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sensor_hub_protocol::DeviceId;

use super::merge::merge_unwritten;
use super::query::{Answer, Range};
use super::queue::{Queue, QueueDrops};
use super::store::StoredDevice;
use super::{choose_tier, reduce, Retention, Store, StoreError};
use crate::clock::wall_ms;
use crate::config::StorageConfig;
use crate::registry::DeviceRecord;
use crate::state::LiveDatagram;

/// How often the retention job runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Shortest time between two logged write errors.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of the writer.
#[derive(Debug, Default)]
struct WriterCounters {
    written: AtomicU64,
    write_failed: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    last_flush_us: AtomicU64,
    expired_rows: AtomicU64,
    queries: AtomicU64,
}

/// The history's figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryStats {
    /// Readings queued for writing since start.
    pub queued: u64,
    /// Readings waiting for the next flush.
    pub waiting: u64,
    /// Most readings that may wait.
    pub capacity: u64,
    /// Readings committed to the database.
    pub written: u64,
    /// Readings not stored, by reason: queue full, not finite, write failed.
    pub dropped: [u64; 3],
    /// Flushes that wrote something.
    pub flushes: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// Duration of the latest flush, seconds.
    pub last_flush_seconds: f64,
    /// Rows deleted by the retention job.
    pub expired_rows: u64,
    /// Queries answered.
    pub queries: u64,
    /// Size of the database file and its WAL, bytes.
    pub database_bytes: u64,
}

/// Labels of [`HistoryStats::dropped`].
pub const DROP_REASONS: [&str; 3] = ["queue_full", "not_finite", "write_failed"];

#[derive(Debug)]
struct Waiting {
    queue: Queue,
    stop: bool,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    flush_every: Duration,
    retention: Retention,
    waiting: Mutex<Waiting>,
    wake: Condvar,
    commit: RwLock<()>,
    reader: Mutex<Store>,
    counters: WriterCounters,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Queries holding a [`QuerySlot`].
    running: AtomicUsize,
}

/// Permission to run one query; see [`History::query_slot`].
#[derive(Debug)]
pub struct QuerySlot(Arc<Inner>);

impl Drop for QuerySlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Handle to the history (cheap to clone).
#[derive(Debug, Clone)]
pub struct History(Arc<Inner>);

impl History {
    /// Opens (or creates) the database at `storage.path`, loads the devices
    /// it remembers, and starts the writer thread.
    pub fn open(config: &StorageConfig) -> Result<(History, Vec<StoredDevice>), StoreError> {
        let store = Store::open(&config.path)?;
        let devices = store.load_devices()?;
        let reader = Store::open_reader(&config.path)?;
        let inner = Arc::new(Inner {
            path: config.path.clone(),
            flush_every: Duration::from_millis(config.flush_interval_ms),
            retention: Retention::configured(config),
            waiting: Mutex::new(Waiting {
                queue: Queue::new(config.queue_readings),
                stop: false,
            }),
            wake: Condvar::new(),
            commit: RwLock::new(()),
            reader: Mutex::new(reader),
            counters: WriterCounters::default(),
            writer: Mutex::new(None),
            running: AtomicUsize::new(0),
        });
        let thread_inner = inner.clone();
        let handle = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_loop(&thread_inner, store))
            .map_err(StoreError::Thread)?;
        *lock(&inner.writer) = Some(handle);
        Ok((History(inner), devices))
    }

    /// Queues the readings of accepted datagrams (never waits for the disk).
    pub fn record(&self, datagrams: &[LiveDatagram]) {
        lock(&self.0.waiting).queue.push_datagrams(datagrams);
    }

    /// Deletes a forgotten device's record at the next write.
    pub fn forget_device(&self, device: DeviceId) {
        lock(&self.0.waiting).queue.forget_device(device);
    }

    /// Queues device records that changed.
    pub fn record_devices(&self, records: Vec<DeviceRecord>) {
        if !records.is_empty() {
            lock(&self.0.waiting).queue.push_devices(records);
        }
    }

    /// The points of one sensor over `range`, from the tier that fits, at
    /// most `range.max_points` of them, including readings not yet written.
    /// Blocking: call it from a blocking thread.
    pub fn query(
        &self,
        device: DeviceId,
        channel: u8,
        range: Range,
        now_ms: u64,
    ) -> Result<Answer, StoreError> {
        let tier = choose_tier(
            range.from_ms,
            range.to_ms,
            now_ms,
            range.max_points,
            &self.0.retention,
        );
        let points = {
            let _commit = self.0.commit.read().unwrap_or_else(|e| e.into_inner());
            let unwritten =
                lock(&self.0.waiting)
                    .queue
                    .waiting(device, channel, range.from_ms, range.to_ms);
            let stored =
                lock(&self.0.reader).query(device, channel, range.from_ms, range.to_ms, tier)?;
            merge_unwritten(stored, tier, &unwritten)
        };
        let reduced = reduce(&points, range.from_ms, range.to_ms, range.max_points);
        self.0.counters.queries.fetch_add(1, Ordering::Relaxed);
        Ok(Answer::new(
            device,
            channel,
            range,
            tier,
            reduced.len() < points.len(),
            &reduced,
        ))
    }

    /// A slot for one query while fewer than `max` hold one; callers take
    /// one before queueing a query on a blocking thread.
    pub fn query_slot(&self, max: usize) -> Option<QuerySlot> {
        if self.0.running.fetch_add(1, Ordering::AcqRel) >= max {
            self.0.running.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(QuerySlot(self.0.clone()))
    }

    /// Writes what is waiting and stops the writer thread. Blocking.
    pub fn shutdown(&self) {
        lock(&self.0.waiting).stop = true;
        self.0.wake.notify_all();
        let handle = lock(&self.0.writer).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!(
                    "the history writer thread panicked; the last readings may be lost"
                );
            }
        }
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> HistoryStats {
        let (
            queue_len,
            queued,
            capacity,
            QueueDrops {
                queue_full,
                not_finite,
            },
        ) = {
            let w = lock(&self.0.waiting);
            (
                w.queue.len(),
                w.queue.queued(),
                w.queue.capacity(),
                w.queue.drops(),
            )
        };
        let c = &self.0.counters;
        let database_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut path = self.0.path.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).ok().map(|m| m.len())
            })
            .sum();
        HistoryStats {
            queued,
            waiting: queue_len as u64,
            capacity: capacity as u64,
            written: c.written.load(Ordering::Relaxed),
            dropped: [
                queue_full,
                not_finite,
                c.write_failed.load(Ordering::Relaxed),
            ],
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_errors: c.flush_errors.load(Ordering::Relaxed),
            last_flush_seconds: c.last_flush_us.load(Ordering::Relaxed) as f64 / 1e6,
            expired_rows: c.expired_rows.load(Ordering::Relaxed),
            queries: c.queries.load(Ordering::Relaxed),
            database_bytes,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer thread: flush every interval, expire every minute, flush
/// once more when told to stop.
fn write_loop(inner: &Inner, mut store: Store) {
    let mut next_flush = Instant::now() + inner.flush_every;
    let mut next_expire = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let stopping = {
            let mut waiting = lock(&inner.waiting);
            while !waiting.stop && Instant::now() < next_flush {
                let left = next_flush.saturating_duration_since(Instant::now());
                waiting = inner
                    .wake
                    .wait_timeout(waiting, left)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            waiting.stop
        };
        next_flush = Instant::now() + inner.flush_every;
        flush(inner, &mut store, &mut last_error_log);
        if Instant::now() >= next_expire {
            next_expire = Instant::now() + EXPIRE_EVERY;
            match store.expire(wall_ms(), &inner.retention) {
                Ok(rows) => {
                    inner
                        .counters
                        .expired_rows
                        .fetch_add(rows as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "history retention job failed; it runs again in a minute")
                }
            }
        }
        if stopping {
            if let Err(e) = store.checkpoint() {
                tracing::warn!(error = %e, "could not fold the history's write-ahead log into the database at stop; it is replayed at the next start");
            }
            return;
        }
    }
}

fn flush(inner: &Inner, store: &mut Store, last_error_log: &mut Option<Instant>) {
    let started = Instant::now();
    let _commit = inner.commit.write().unwrap_or_else(|e| e.into_inner());
    let batch = lock(&inner.waiting).queue.take();
    if batch.is_empty() {
        return;
    }
    let c = &inner.counters;
    match store.write_batch(&batch.readings, &batch.devices, &batch.forgotten) {
        Ok(written) => {
            c.written.fetch_add(written as u64, Ordering::Relaxed);
            c.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            c.flush_errors.fetch_add(1, Ordering::Relaxed);
            c.write_failed
                .fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
            // Device records are few and must not be lost: retry them.
            let mut waiting = lock(&inner.waiting);
            waiting.queue.requeue_forgotten(batch.forgotten);
            waiting.queue.requeue_devices(batch.devices);
            if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                *last_error_log = Some(Instant::now());
                tracing::error!(
                    error = %e,
                    path = %inner.path.display(),
                    readings = batch.readings.len(),
                    "cannot write to the history database; {}. These readings are not stored \
                     (counted in sensor_hub_history_dropped_readings_total{{reason=\"write_failed\"}}); \
                     the next flush tries again",
                    e.hint()
                );
            }
        }
    }
    c.last_flush_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
