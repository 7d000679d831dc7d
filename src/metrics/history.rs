//! The history's series on `/metrics` and its part of `GET /api/hub`.

use std::fmt::Write as _;

use super::{family, labeled, singles, COUNTER, GAUGE};
use crate::history::service::{HistoryStats, DROP_REASONS};

/// Appends the history families; with history off, only
/// `sensor_hub_history_enabled 0`.
pub(super) fn render(out: &mut String, stats: Option<&HistoryStats>) {
    singles(
        out,
        &[(
            "sensor_hub_history_enabled",
            GAUGE,
            "1 when readings are kept in the history database (storage.enabled).",
            u64::from(stats.is_some()),
        )],
    );
    let Some(h) = stats else { return };
    singles(
        out,
        &[
            (
                "sensor_hub_history_readings_queued_total",
                COUNTER,
                "Readings queued for the history database.",
                h.queued,
            ),
            (
                "sensor_hub_history_readings_waiting",
                GAUGE,
                "Readings waiting for the next flush.",
                h.waiting,
            ),
            (
                "sensor_hub_history_queue_capacity",
                GAUGE,
                "Most readings that may wait (storage.queue_readings).",
                h.capacity,
            ),
            (
                "sensor_hub_history_readings_written_total",
                COUNTER,
                "Readings committed to the history database.",
                h.written,
            ),
            (
                "sensor_hub_history_flushes_total",
                COUNTER,
                "Flushes that wrote to the history database.",
                h.flushes,
            ),
            (
                "sensor_hub_history_flush_errors_total",
                COUNTER,
                "Flushes that failed (their readings are counted as dropped).",
                h.flush_errors,
            ),
            (
                "sensor_hub_history_expired_rows_total",
                COUNTER,
                "Rows the retention job deleted.",
                h.expired_rows,
            ),
            (
                "sensor_hub_history_queries_total",
                COUNTER,
                "History queries answered.",
                h.queries,
            ),
            (
                "sensor_hub_history_database_bytes",
                GAUGE,
                "Size of the history database file and its write-ahead log.",
                h.database_bytes,
            ),
        ],
    );
    labeled(
        out,
        (
            "sensor_hub_history_dropped_readings_total",
            COUNTER,
            "Readings accepted but not stored in the history, by reason.",
        ),
        "reason",
        DROP_REASONS.iter().copied().zip(h.dropped),
    );
    let name = "sensor_hub_history_last_flush_seconds";
    family(out, name, GAUGE, "Duration of the latest flush.");
    let _ = writeln!(out, "{name} {}", h.last_flush_seconds);
}

/// The `history` object of `GET /api/hub` (null when history is off).
pub(super) fn json(stats: Option<&HistoryStats>) -> serde_json::Value {
    let Some(h) = stats else {
        return serde_json::Value::Null;
    };
    let dropped: serde_json::Map<String, serde_json::Value> = DROP_REASONS
        .iter()
        .zip(h.dropped)
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    serde_json::json!({
        "written": h.written,
        "waiting": h.waiting,
        "dropped": dropped,
        "flush_errors": h.flush_errors,
        "last_flush_s": h.last_flush_seconds,
        "database_bytes": h.database_bytes,
    })
}
