//! The history service on a real file with times passed in: which tier
//! answers, that answers never exceed `max_points`, and that readings still
//! waiting for a flush are seen exactly once.

use sensor_hub_protocol::{Reading as Wire, Value};

use super::*;
use crate::clock::wall_ms;
use crate::history::query::RangeRequest;
use crate::history::test_dir::TempDir;

const HOUR: u64 = 3_600_000;

fn config(dir: &TempDir, flush_interval_ms: u64) -> StorageConfig {
    StorageConfig {
        enabled: true,
        path: dir.file(),
        flush_interval_ms,
        queue_readings: 1_000_000,
        raw_retention_hours: 24,
        minute_retention_days: 30,
        hour_retention_days: 365,
    }
}

fn datagram(device: u32, received_ms: u64, value: f32) -> LiveDatagram {
    LiveDatagram {
        device,
        seq: 0,
        time_ms: received_ms,
        received_ms,
        readings: Box::new([Wire {
            channel: 0,
            value: Value::F32(value),
        }]),
    }
}

fn range(from_ms: u64, to_ms: u64, max_points: u64) -> Range {
    RangeRequest {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        max_points: Some(max_points),
    }
    .validate(to_ms)
    .unwrap()
}

fn total(answer: &Answer) -> u64 {
    answer.points.iter().map(|p| p.count).sum()
}

#[test]
fn each_range_is_answered_from_the_tier_that_fits_within_max_points() {
    let dir = TempDir::new("tiers");
    let (history, _) = History::open(&config(&dir, 10)).unwrap();
    // Three days of one reading every 10 s, ending at the hour before now
    // (real time: the retention job runs on the real clock).
    let end = wall_ms() / HOUR * HOUR;
    let start = end - 72 * HOUR;
    let batch: Vec<LiveDatagram> = (0..72 * 360)
        .map(|i| datagram(1, start + i * 10_000, (i % 360) as f32))
        .collect();
    history.record(&batch);
    history.shutdown(); // writes everything

    // The last hour: raw, unreduced (360 readings < 500 points).
    let answer = history
        .query(1, 0, range(end - HOUR, end, 500), end)
        .unwrap();
    assert_eq!((answer.tier, answer.step_ms), ("raw", 1));
    assert_eq!(answer.points.len(), 360);

    // Two days: raw no longer holds the start; 2,880 minute buckets reduced
    // to at most 300 points carrying every reading and the extremes.
    let answer = history
        .query(1, 0, range(end - 48 * HOUR, end, 300), end)
        .unwrap();
    assert_eq!(answer.tier, "minute");
    assert!(answer.points.len() <= 300, "{}", answer.points.len());
    assert_eq!(total(&answer), 48 * 360);
    let max = answer.points.iter().map(|p| p.max).fold(f64::MIN, f64::max);
    let min = answer.points.iter().map(|p| p.min).fold(f64::MAX, f64::min);
    assert_eq!((min, max), (0.0, 359.0));

    // Three days in 50 points: minute buckets would be 86 per point; hours.
    let answer = history.query(1, 0, range(start, end, 50), end).unwrap();
    assert_eq!(answer.tier, "hour");
    assert!(answer.points.len() <= 50);
    assert_eq!(total(&answer), 72 * 360);

    // Three days in up to 10,000 points: the 4,320 minute buckets as they
    // are, each a minute wide.
    let answer = history.query(1, 0, range(start, end, 10_000), end).unwrap();
    assert_eq!(answer.tier, "minute");
    assert_eq!(answer.points.len(), 72 * 60);
    assert_eq!(answer.step_ms, 60_000);
}

#[test]
fn readings_waiting_for_a_flush_are_answered_exactly_once() {
    let dir = TempDir::new("waiting");
    // A flush interval far longer than the test: nothing is written until
    // shutdown.
    let (history, _) = History::open(&config(&dir, 60_000)).unwrap();
    let now = wall_ms();
    let batch: Vec<LiveDatagram> = (0..100)
        .map(|i| datagram(2, now - 1_000 + i, 1.0))
        .collect();
    history.record(&batch);
    let before = history
        .query(2, 0, range(now - HOUR, now, 500), now)
        .unwrap();
    assert_eq!(before.points.len(), 100, "from the queue");
    assert_eq!(history.stats().written, 0);
    history.shutdown();
    assert_eq!(history.stats().written, 100);
    let after = history
        .query(2, 0, range(now - HOUR, now, 500), now)
        .unwrap();
    assert_eq!(after, before, "from the database, the same answer");
    // The minute tier merges queued readings into the stored buckets.
    history.record(&[datagram(2, now - 500, 7.0)]);
    let minutes = history
        .query(2, 0, range(now - 24 * HOUR, now, 200), now)
        .unwrap();
    assert_eq!(minutes.tier, "minute");
    assert_eq!(total(&minutes), 101);
    assert_eq!(
        minutes
            .points
            .iter()
            .map(|p| p.max)
            .fold(f64::MIN, f64::max),
        7.0
    );
}

#[test]
fn devices_written_come_back_when_reopened() {
    let dir = TempDir::new("devices");
    let record = DeviceRecord {
        id: 4,
        info: None,
        status: crate::registry::DeviceStatus::Late,
        status_since_ms: 1_000,
        last_seen_ms: Some(900),
    };
    {
        let (history, devices) = History::open(&config(&dir, 10)).unwrap();
        assert!(devices.is_empty());
        history.record_devices(vec![record.clone()]);
        history.shutdown();
    }
    let (_, devices) = History::open(&config(&dir, 10)).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].record, record);
}
