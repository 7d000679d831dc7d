//! The benchmark command's machinery in a run of seconds, against the real
//! hub binary: it completes and its JSON has every section and field. This
//! checks shape, never speed (figures belong in BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use device_sim::bench::{run, BenchConfig};

/// The history write benchmark (`cargo bench --bench history_store`), whose
/// core this file calls the way the hub benchmark's is called below.
#[path = "../benches/history_store.rs"]
#[allow(dead_code)] // the bench's `main`
mod history_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_bench_run_prints_valid_json() {
    let config = BenchConfig::quick(env!("CARGO_BIN_EXE_sensor-hub").into());
    let report = run(&config).await.unwrap();
    let line = report.json();
    assert!(!line.contains('\n'), "one line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(v["idle"]["rss_kib"].as_u64().unwrap() > 0);
    let ingest = &v["ingest"][0];
    for key in [
        "offered_per_s",
        "sent_per_s",
        "sink_per_s",
        "hub_per_s",
        "ratio",
        "kernel_drops",
        "hub_cpu_pct",
        "hub_peak_rss_kib",
    ] {
        assert!(ingest.get(key).is_some(), "ingest.{key}");
    }
    assert!(
        ingest["hub_per_s"].as_f64().unwrap() > 0.0,
        "the hub accepted datagrams"
    );
    let auth = &v["auth"][0];
    for key in [
        "offered_per_s",
        "hub_per_s",
        "hub_cpu_pct",
        "cpu_us_per_datagram",
        "rate_ratio",
        "per_cpu_ratio",
        "refused",
    ] {
        assert!(auth.get(key).is_some(), "auth.{key}");
    }
    assert!(
        auth["hub_per_s"][1].as_f64().unwrap() > 0.0,
        "the hub accepted tagged datagrams of keyed devices"
    );
    assert_eq!(auth["refused"], 0, "no tagged datagram was refused");
    let latency = &v["latency"][0];
    for key in ["p50_us", "p99_us", "p999_us", "samples", "missing"] {
        assert!(latency.get(key).is_some(), "latency.{key}");
    }
    assert!(
        latency["samples"].as_u64().unwrap() > 0,
        "latencies were measured"
    );
    let fanout = v["fanout"].as_array().unwrap();
    assert_eq!(fanout.len(), 2);
    for f in fanout {
        for key in [
            "clients",
            "updates_per_s",
            "delivered_per_s",
            "messages_per_s",
            "complete_clients",
            "min_fraction",
            "p50_us",
            "p99_us",
            "hub_cpu_pct",
            "hub_peak_rss_kib",
        ] {
            assert!(f.get(key).is_some(), "fanout.{key}");
        }
    }
    let table = report.table();
    assert!(table.contains("ingest") && table.contains("fan-out") && table.contains("with keys"));
    println!("{table}");
}

/// `cargo bench --bench history_store -- --quick --json` in process: every
/// shape is written and measured, and the figures are consistent with each
/// other and with the schema. Speed is not checked.
#[test]
fn a_quick_history_store_bench_run_measures_every_shape() {
    let args = ["--bench", "--quick", "--json"].map(String::from);
    let config = history_store::Config::from_args(&args).unwrap();
    assert!(config.json && config.runs == 1 && config.age.is_none());
    let report = history_store::run(&config).unwrap();
    assert_eq!(report.shapes.len(), config.shapes.len());
    for (s, shape) in report.shapes.iter().zip(&config.shapes) {
        let m = &s.median;
        let r = &s.runs[0];
        // Every reading sent in the simulated time, except those still in
        // flight (0–3 ms) when the last batch closed.
        let offered = shape.readings_per_s() * shape.sim_seconds;
        assert!(
            r.readings <= offered && r.readings * 100 >= offered * 99,
            "{}: {} of {offered} readings",
            s.name,
            r.readings
        );
        assert_eq!(r.batches, shape.sim_seconds);
        assert!(m.readings_per_s > 0.0, "{}", s.name);
        assert!(
            0.0 < m.batch_ms_p50 && m.batch_ms_p50 <= m.batch_ms_p99,
            "{}",
            s.name
        );
        assert!(m.batch_ms_p99 <= m.batch_ms_max, "{}", s.name);
        // A raw row (device, channel, time, journal id, 8-byte value) is some
        // 25 bytes before page overhead; the fixed pages of a small database
        // add at most ~100 per reading here.
        assert!(
            (10.0..=500.0).contains(&m.db_bytes_per_reading),
            "{}: {} B/reading",
            s.name,
            m.db_bytes_per_reading
        );
        assert_eq!(r.db_bytes % r.page_size, 0, "whole pages");
        // The bundled SQLite has dbstat: the split accounts for every byte,
        // and raw rows outweigh the minute and hour aggregates.
        let split = r.split.unwrap();
        assert_eq!(
            split.raw_bytes + split.agg_bytes + split.other_bytes,
            r.db_bytes,
            "{}",
            s.name
        );
        assert!(split.raw_bytes > split.agg_bytes, "{}", s.name);
        // Every page of the new file was written through the WAL and then
        // copied into the file, so at least its size was written (other
        // tests in this process only add to the process-wide count).
        if let Some(io) = r.io {
            assert!(io.wchar >= r.db_bytes, "{}: {io:?}", s.name);
        }
    }
    let days = 86_400.0 * 3.0;
    let devices: Vec<u32> = report.wear.iter().map(|w| w.devices).collect();
    assert_eq!(devices, [10, 100, 1_000]);
    for w in &report.wear {
        assert_eq!(w.readings_per_day, f64::from(w.devices) * days);
        assert_eq!(w.naive_card_bytes_per_day, 2.0 * w.db_growth_per_day);
    }
    let line = report.json().unwrap();
    assert!(!line.contains('\n'), "one line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["shapes"].as_array().unwrap().len(), config.shapes.len());
    assert!(v["shapes"][0]["median"]["readings_per_s"].as_f64().unwrap() > 0.0);
    let table = report.table();
    assert!(table.contains("SD-card wear"));
    println!("{table}");
}

/// `--aged` writes its history first and measures only what follows.
#[test]
fn an_aged_history_store_bench_run_measures_only_the_run() {
    let shape = history_store::Shape {
        name: "smoke-aged",
        devices: 5,
        hz: 1,
        sim_seconds: 20,
    };
    let age = history_store::Age::QUICK;
    let r = history_store::run_once(&shape, 0, Some(age)).unwrap();
    assert_eq!(r.aged_readings, 5 * 3 * age.readings_per_sensor());
    assert!(r.db_bytes_before > 0);
    assert!(r.readings > 0 && r.readings <= 5 * 3 * 20);
    let split = r.split.unwrap();
    assert_eq!(
        split.raw_bytes + split.agg_bytes + split.other_bytes,
        r.db_bytes
    );
}
