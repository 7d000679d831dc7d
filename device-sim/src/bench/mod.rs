//! `device-sim bench`: drives a real hub process and measures it against a
//! plain UDP socket in the same run — ingest rate as a ratio of the raw
//! sink's, ingest with authenticated (tagged) datagrams against the same
//! without, device → WebSocket latency, WebSocket fan-out, the MQTT
//! bridge's cost and rate against a local Mosquitto, three hubs in a
//! cluster through a local Redis against one hub — with the hub's
//! CPU and peak RSS for each scenario. The hub's device file adopts the
//! bench's devices (with keys for the authenticated runs). Results print as a table and as one
//! JSON line; every figure is the median of `runs` repetitions.
//!
//! # Layout
//! * [`hub`]: starting the hub binary, reading its `/proc` figures and `/api/hub`.
//! * [`udp`]: the paced sender and the raw UDP sink.
//! * [`keyed`]: keyed hellos for the authenticated ingest runs.
//! * [`ws`]: WebSocket clients that count and time what they receive.
//! * [`memory`]: what idle and stalled WebSocket clients cost the hub.
//! * [`scenarios`]: idle, ingest, latency and fan-out runs.
//! * [`server`]: a server program a scenario starts beside the hubs
//!   (Mosquitto, Redis): free port, temporary directory, killed on drop.
//! * [`mqtt`]: the MQTT bridge against a Mosquitto broker it starts.
//! * [`cluster`]: three hubs through a Redis it starts, against one hub.
//! * [`report`]: the report types, medians, table and JSON.

pub mod cluster;
pub mod hub;
pub mod keyed;
pub mod memory;
pub mod mqtt;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod udp;
pub mod ws;

use std::path::PathBuf;
use std::time::Duration;

pub use report::BenchReport;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `sensor-hub` binary to start.
    pub hub_bin: PathBuf,
    /// Repetitions of every measurement (the median is reported).
    pub runs: usize,
    /// Offered rates for the ingest scenario (datagrams/s); 0 = as fast as
    /// the sender can.
    pub ingest_rates: Vec<u64>,
    /// Duration of each ingest measurement.
    pub ingest_duration: Duration,
    /// Offered rates for the authenticated-ingest scenario: at each, one
    /// run with untagged datagrams of devices adopted without keys and one
    /// with tagged datagrams of keyed devices, in turn.
    pub auth_rates: Vec<u64>,
    /// Offered rates for the latency scenario.
    pub latency_rates: Vec<u64>,
    /// Duration of each latency measurement.
    pub latency_duration: Duration,
    /// Client counts for the fan-out scenario.
    pub fanout_clients: Vec<usize>,
    /// Devices (each at 1 Hz) in the fan-out scenario.
    pub fanout_devices: u32,
    /// Duration of each fan-out measurement.
    pub fanout_duration: Duration,
    /// The MQTT scenario (needs Mosquitto); none: not run.
    pub mqtt: Option<mqtt::MqttPlan>,
    /// The cluster scenario (needs redis-server); none: not run.
    pub cluster: Option<cluster::ClusterPlan>,
    /// The memory scenario (idle and stalled clients); none: not run.
    pub memory: Option<memory::MemoryPlan>,
    /// Devices the ingest and latency senders cycle through.
    pub devices: u32,
    /// Run the hub with its history database (as it ships); false sets
    /// `storage.enabled = false`, for a before/after comparison.
    pub storage: bool,
}

impl BenchConfig {
    /// The full suite (a few minutes).
    pub fn full(hub_bin: PathBuf) -> BenchConfig {
        BenchConfig {
            hub_bin,
            runs: 3,
            ingest_rates: vec![100_000, 200_000, 400_000, 0],
            ingest_duration: Duration::from_secs(3),
            auth_rates: vec![100_000, 200_000, 0],
            latency_rates: vec![1_000, 10_000],
            latency_duration: Duration::from_secs(3),
            fanout_clients: vec![1, 100, 1_000],
            fanout_devices: 1_000,
            fanout_duration: Duration::from_secs(5),
            mqtt: Some(mqtt::MqttPlan {
                devices: 1_000,
                sustained_hz: 10,
                warm_up: Duration::from_secs(2),
                duration: Duration::from_secs(10),
            }),
            cluster: Some(cluster::ClusterPlan {
                rates: vec![1_000, 10_000, 25_000, 50_000, 75_000, 100_000],
                duration: Duration::from_secs(10),
                devices: 1_000,
            }),
            memory: Some(memory::MemoryPlan {
                clients: 1_000,
                devices: 1_000,
                rate: 2_000,
                duration: Duration::from_secs(5),
            }),
            devices: 1_000,
            storage: true,
        }
    }

    /// A run of a few seconds, to check the bench itself works.
    pub fn quick(hub_bin: PathBuf) -> BenchConfig {
        BenchConfig {
            hub_bin,
            runs: 1,
            ingest_rates: vec![20_000],
            ingest_duration: Duration::from_millis(500),
            auth_rates: vec![20_000],
            latency_rates: vec![1_000],
            latency_duration: Duration::from_millis(500),
            fanout_clients: vec![1, 10],
            fanout_devices: 100,
            fanout_duration: Duration::from_millis(1_500),
            mqtt: Some(mqtt::MqttPlan {
                devices: 100,
                sustained_hz: 10,
                warm_up: Duration::from_secs(1),
                duration: Duration::from_secs(2),
            }),
            cluster: Some(cluster::ClusterPlan {
                rates: vec![2_000],
                duration: Duration::from_secs(3),
                devices: 100,
            }),
            memory: Some(memory::MemoryPlan {
                clients: 20,
                devices: 100,
                rate: 1_000,
                duration: Duration::from_secs(1),
            }),
            devices: 100,
            storage: true,
        }
    }
}

/// Runs every scenario.
pub async fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    scenarios::run_all(config).await
}
