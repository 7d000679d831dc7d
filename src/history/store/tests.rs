//! The store on real files in a temporary directory.

use super::*;
use crate::history::test_dir::TempDir;
use crate::history::{Reading, Retention};

const T0: u64 = 1_763_730_000_000; // a minute and an hour boundary

fn reading(t_ms: u64, value: f64) -> Reading {
    Reading {
        device: 7,
        channel: 1,
        t_ms,
        value,
    }
}

#[test]
fn writes_survive_reopening_and_answer_every_tier() {
    let dir = TempDir::new("reopen");
    {
        let mut store = Store::open(&dir.file()).unwrap();
        let batch: Vec<Reading> = (0..120)
            .map(|i| reading(T0 + i * 1_000, i as f64))
            .collect();
        assert_eq!(store.write(&batch[..60]).unwrap(), 60);
        assert_eq!(store.write(&batch[60..]).unwrap(), 60);
        assert_eq!(store.write(&[reading(T0 + 500, f64::NAN)]).unwrap(), 0);
    }
    let store = Store::open(&dir.file()).unwrap();
    let raw = store.query(7, 1, T0, T0 + 3_600_000, Tier::Raw).unwrap();
    assert_eq!(raw.len(), 120);
    assert_eq!(raw[5].mean, 5.0);
    let minutes = store.query(7, 1, T0, T0 + 3_600_000, Tier::Minute).unwrap();
    assert_eq!(
        minutes.len(),
        2,
        "two minutes, each merged over two batches"
    );
    assert_eq!(
        (minutes[0].count, minutes[0].min, minutes[0].max),
        (60, 0.0, 59.0)
    );
    assert_eq!((minutes[1].count, minutes[1].last), (60, 119.0));
    let hours = store.query(7, 1, T0, T0 + 3_600_000, Tier::Hour).unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!((hours[0].count, hours[0].mean), (120, 59.5));
    assert!(store
        .query(8, 1, T0, T0 + 3_600_000, Tier::Raw)
        .unwrap()
        .is_empty());
}

#[test]
fn the_journal_keeps_compacting_after_the_wall_clock_steps_back() {
    // Regression: compaction waited for readings past the newest minute
    // compacted, so a clock step back froze it (the journal grew).
    let dir = TempDir::new("step-back");
    let mut store = Store::open(&dir.file()).unwrap();
    let later = T0 + 3_600_000;
    store.write(&[reading(later, 1.0)]).unwrap();
    store.write(&[reading(later + 60_000, 2.0)]).unwrap();
    assert_eq!(rows(&store, "journal"), 1);
    // The clock steps an hour back; minutes pass on it.
    for minute in 0..5 {
        store
            .write(&[reading(T0 + minute * 60_000, 3.0 + minute as f64)])
            .unwrap();
    }
    assert!(
        rows(&store, "journal") <= 2,
        "closed minutes still move out of the journal: {} rows",
        rows(&store, "journal")
    );
    let raw = store.query(7, 1, T0, later + 120_000, Tier::Raw).unwrap();
    assert_eq!(raw.len(), 7, "nothing lost or doubled");
}

#[test]
fn expire_deletes_what_each_tier_no_longer_keeps() {
    let dir = TempDir::new("expire");
    let mut store = Store::open(&dir.file()).unwrap();
    store
        .write(&[reading(T0, 1.0), reading(T0 + 2 * 3_600_000, 2.0)])
        .unwrap();
    let retention = Retention {
        raw_ms: 3_600_000,
        minute_ms: 2 * 3_600_000,
        hour_ms: 10 * 3_600_000,
    };
    // Past the raw window of the first reading, and a whole minute past the
    // minute window of its bucket (a bucket straddling the cut is kept).
    let now = T0 + 2 * 3_600_000 + 60_001;
    assert_eq!(
        store.expire(now, &retention).unwrap(),
        2,
        "one raw row, one minute bucket"
    );
    assert_eq!(
        store.query(7, 1, 0, u64::MAX / 2, Tier::Raw).unwrap().len(),
        1
    );
    assert_eq!(
        store
            .query(7, 1, 0, u64::MAX / 2, Tier::Hour)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = TempDir::new("corrupt");
    let junk = b"this is not sqlite, it is somebody's notes".repeat(200);
    std::fs::write(dir.file(), &junk).unwrap();
    let err = Store::open(&dir.file()).unwrap_err().to_string();
    assert!(err.contains(&dir.file().display().to_string()), "{err}");
    assert!(err.contains("move it away"), "{err}");
    assert_eq!(
        std::fs::read(dir.file()).unwrap(),
        junk,
        "the file is untouched"
    );
}

#[test]
fn an_unwritable_place_is_a_clear_error() {
    let dir = TempDir::new("unwritable");
    let missing = dir.0.join("no-such-dir").join("history.db");
    let err = Store::open(&missing).unwrap_err().to_string();
    assert!(err.contains("writable"), "{err}");
}

#[test]
fn devices_and_their_channels_are_loaded_back() {
    use crate::registry::{DeviceInfo, DeviceRecord, DeviceStatus};
    let dir = TempDir::new("devices");
    let named = DeviceRecord {
        id: 7,
        info: Some(DeviceInfo {
            name: "greenhouse".into(),
            firmware: "2.1".into(),
            interval_ms: 1_000,
            sensors: Vec::new(),
        }),
        status: DeviceStatus::Online,
        status_since_ms: T0 - 5_000,
        last_seen_ms: Some(T0 - 5_000),
    };
    {
        let mut store = Store::open(&dir.file()).unwrap();
        store
            .write_batch(&[reading(T0, 1.0)], std::slice::from_ref(&named), &[])
            .unwrap();
        let mut later = named.clone();
        later.status = DeviceStatus::Late;
        let other = Reading {
            device: 9,
            channel: 2,
            t_ms: T0 + 10,
            value: 0.5,
        };
        store
            .write_batch(&[reading(T0 + 1_000, 2.0), other], &[later], &[])
            .unwrap();
    }
    let store = Store::open(&dir.file()).unwrap();
    let devices = store.load_devices().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].record.id, 7);
    assert_eq!(
        devices[0].record.status,
        DeviceStatus::Late,
        "the latest record"
    );
    assert_eq!(devices[0].record.info, named.info);
    assert_eq!(devices[0].channels, vec![1]);
    assert_eq!(
        devices[0].record.last_seen_ms,
        Some(T0 + 1_000),
        "its latest reading is later than the record"
    );
    // Known only from its readings.
    assert_eq!(devices[1].record.id, 9);
    assert_eq!(devices[1].record.info, None);
    assert_eq!(devices[1].record.status, DeviceStatus::Offline);
    assert_eq!(devices[1].record.last_seen_ms, Some(T0 + 10));
    assert_eq!(devices[1].record.status_since_ms, T0 + 10);
    assert_eq!(devices[1].channels, vec![2]);
}

#[test]
fn a_reader_sees_what_the_writer_committed() {
    let dir = TempDir::new("reader");
    let mut store = Store::open(&dir.file()).unwrap();
    let reader = Store::open_reader(&dir.file()).unwrap();
    assert!(reader
        .query(7, 1, 0, u64::MAX / 2, Tier::Raw)
        .unwrap()
        .is_empty());
    store.write(&[reading(T0, 1.0)]).unwrap();
    assert_eq!(
        reader
            .query(7, 1, 0, u64::MAX / 2, Tier::Raw)
            .unwrap()
            .len(),
        1
    );
}

fn rows(store: &Store, table: &str) -> i64 {
    store
        .conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_journal_holds_the_open_minute_and_closed_minutes_move_to_raw_and_agg() {
    let dir = TempDir::new("journal");
    {
        let mut store = Store::open(&dir.file()).unwrap();
        // T0 is a minute boundary: 50 s of the first minute.
        for i in 0..50 {
            store.write(&[reading(T0 + i * 1_000, i as f64)]).unwrap();
        }
        assert_eq!((rows(&store, "journal"), rows(&store, "raw")), (50, 0));
        assert_eq!(rows(&store, "agg"), 0);
        // Queries see the journal, in every tier.
        assert_eq!(
            store.query(7, 1, T0, T0 + 60_000, Tier::Raw).unwrap().len(),
            50
        );
        let minute = store.query(7, 1, T0, T0 + 60_000, Tier::Minute).unwrap();
        assert_eq!(
            (minute.len(), minute[0].count, minute[0].max),
            (1, 50, 49.0)
        );
        // The first reading of the next minute closes the first.
        store.write(&[reading(T0 + 60_000, 60.0)]).unwrap();
        assert_eq!((rows(&store, "journal"), rows(&store, "raw")), (1, 50));
        assert_eq!(rows(&store, "agg"), 2, "one minute and one hour bucket");
        let raw = store.query(7, 1, T0, T0 + 120_000, Tier::Raw).unwrap();
        assert_eq!(raw.len(), 51);
        let hour = store.query(7, 1, T0, T0 + 3_600_000, Tier::Hour).unwrap();
        assert_eq!((hour.len(), hour[0].count, hour[0].last), (1, 51, 60.0));
        // Dropped without closing: what a crash leaves.
        store.write(&[reading(T0 + 61_000, 61.0)]).unwrap();
    }
    let mut store = Store::open(&dir.file()).unwrap();
    assert_eq!(rows(&store, "journal"), 2, "the open minute survived");
    // A late reading for a closed minute (a clock step) is merged into it.
    store
        .write(&[reading(T0 + 10_500, 100.0), reading(T0 + 62_000, 62.0)])
        .unwrap();
    assert_eq!(rows(&store, "journal"), 3);
    store.write(&[reading(T0 + 120_000, 0.0)]).unwrap();
    assert_eq!((rows(&store, "journal"), rows(&store, "raw")), (1, 54));
    let minutes = store.query(7, 1, T0, T0 + 180_000, Tier::Minute).unwrap();
    let summary: Vec<(u64, f64)> = minutes.iter().map(|p| (p.count, p.max)).collect();
    assert_eq!(summary, vec![(51, 100.0), (3, 62.0), (1, 0.0)]);
    let raw = store
        .query(7, 1, T0 + 10_000, T0 + 11_000, Tier::Raw)
        .unwrap();
    let values: Vec<f64> = raw.iter().map(|p| p.mean).collect();
    assert_eq!(values, vec![10.0, 100.0], "in time order");
}

#[test]
fn a_large_batch_is_written_whole_through_the_many_row_insert() {
    let dir = TempDir::new("many-rows");
    let mut store = Store::open(&dir.file()).unwrap();
    // Two full statements of 64 rows and a remainder, with a NaN skipped.
    let mut batch: Vec<Reading> = (0..151).map(|i| reading(T0 + i * 100, i as f64)).collect();
    batch[70].value = f64::NAN;
    assert_eq!(store.write(&batch).unwrap(), 150);
    let raw = store.query(7, 1, T0, T0 + 60_000, Tier::Raw).unwrap();
    let values: Vec<f64> = raw.iter().map(|p| p.mean).collect();
    let expected: Vec<f64> = (0..151).filter(|&i| i != 70).map(f64::from).collect();
    assert_eq!(values, expected);
}
