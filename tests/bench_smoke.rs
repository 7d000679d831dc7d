//! The benchmark command's machinery in a run of seconds, against the real
//! hub binary: it completes and its JSON has every section and field. This
//! checks shape, never speed (figures belong in BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use device_sim::bench::{run, BenchConfig};

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
    assert!(table.contains("ingest") && table.contains("fan-out"));
    println!("{table}");
}
