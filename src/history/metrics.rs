//! The history's families on `/metrics` ([`HistoryCollector`]) and its part
//! of `GET /api/hub` ([`HistoryStats::json`]).

use crate::metrics::{counter, gauge, labeled_counters, Collector, DescriptorEncoder};

use super::service::{HistoryStats, DROP_REASONS};
use super::History;

/// Writes the history families; with history off, only
/// `sensor_hub_history_enabled 0`.
#[derive(Debug)]
pub struct HistoryCollector(pub Option<History>);

impl Collector for HistoryCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        gauge(
            &mut e,
            "sensor_hub_history_enabled",
            "1 when readings are kept in the history database (storage.enabled).",
            u64::from(self.0.is_some()),
        )?;
        let Some(h) = self.0.as_ref().map(History::stats) else {
            return Ok(());
        };
        counter(
            &mut e,
            "sensor_hub_history_readings_queued",
            "Readings queued for the history database.",
            h.queued,
        )?;
        gauge(
            &mut e,
            "sensor_hub_history_readings_waiting",
            "Readings waiting for the next flush.",
            h.waiting,
        )?;
        gauge(
            &mut e,
            "sensor_hub_history_queue_capacity",
            "Most readings that may wait (storage.queue_readings).",
            h.capacity,
        )?;
        counter(
            &mut e,
            "sensor_hub_history_readings_written",
            "Readings committed to the history database.",
            h.written,
        )?;
        counter(
            &mut e,
            "sensor_hub_history_flushes",
            "Flushes that wrote to the history database.",
            h.flushes,
        )?;
        counter(
            &mut e,
            "sensor_hub_history_flush_errors",
            "Flushes that failed (their readings are counted as dropped).",
            h.flush_errors,
        )?;
        counter(
            &mut e,
            "sensor_hub_history_expired_rows",
            "Rows the retention job deleted.",
            h.expired_rows,
        )?;
        counter(
            &mut e,
            "sensor_hub_history_queries",
            "History queries answered.",
            h.queries,
        )?;
        gauge(
            &mut e,
            "sensor_hub_history_database_bytes",
            "Size of the history database file and its write-ahead log.",
            h.database_bytes,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_history_dropped_readings",
                "Readings accepted but not stored in the history, by reason.",
            ),
            "reason",
            DROP_REASONS.iter().copied().zip(h.dropped),
        )?;
        gauge(
            &mut e,
            "sensor_hub_history_last_flush_seconds",
            "Duration of the latest flush.",
            h.last_flush_seconds,
        )
    }
}

impl HistoryStats {
    /// The `history` object of `GET /api/hub`.
    pub fn json(&self) -> serde_json::Value {
        let dropped: serde_json::Map<String, serde_json::Value> = DROP_REASONS
            .iter()
            .zip(self.dropped)
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        serde_json::json!({
            "written": self.written,
            "waiting": self.waiting,
            "dropped": dropped,
            "flush_errors": self.flush_errors,
            "last_flush_s": self.last_flush_seconds,
            "database_bytes": self.database_bytes,
        })
    }
}
