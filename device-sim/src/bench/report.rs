//! The benchmark report: one entry per scenario point (each the median of
//! its runs), the machine it ran on, a table for people and one JSON line
//! for scripts.

use std::fmt::Write as _;

use serde::Serialize;

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// `uname -r`-style kernel version, from /proc.
    pub kernel: String,
    /// net.core.rmem_max: the kernel's cap on UDP receive buffers, bytes.
    pub rmem_max: Option<u64>,
}

/// The hub with no devices and no clients.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Resident memory one second after start, KiB.
    pub rss_kib: u64,
}

/// Ingest at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct IngestResult {
    /// Offered datagrams/s (0: as fast as the sender could).
    pub offered_per_s: u64,
    /// Datagrams/s the sender achieved towards the hub.
    pub sent_per_s: f64,
    /// Datagrams/s a plain UDP socket received from the same sender.
    pub sink_per_s: f64,
    /// Datagrams/s the hub accepted.
    pub hub_per_s: f64,
    /// hub_per_s / sink_per_s.
    pub ratio: f64,
    /// Readings/s the hub accepted.
    pub hub_readings_per_s: f64,
    /// Percent of the accepted readings written to the history database
    /// once it had caught up (none: storage off).
    pub history_stored_pct: Option<f64>,
    /// Accepted readings the history did not store (queue full, write
    /// failed, not finite); none: storage off.
    pub history_dropped: Option<u64>,
    /// Datagrams the kernel dropped on the hub's socket.
    pub kernel_drops: u64,
    /// Hub CPU, percent of one core.
    pub hub_cpu_pct: f64,
    /// Hub CPU per datagram it accepted, µs: its CPU time from the start of
    /// sending until it had taken everything ÷ datagrams accepted.
    pub hub_cpu_us_per_datagram: f64,
    /// The raw sink's CPU per datagram received, µs: its receiving
    /// thread's CPU time ÷ datagrams received (none if `/proc` could not
    /// tell).
    pub sink_cpu_us_per_datagram: Option<f64>,
    /// Hub peak resident memory, KiB.
    pub hub_peak_rss_kib: u64,
}

/// Ingest with tagged datagrams of keyed devices against untagged ones of
/// devices adopted without keys, at one offered rate (medians).
#[derive(Debug, Clone, Serialize)]
pub struct AuthResult {
    /// Offered datagrams/s (0: as fast as the sender could).
    pub offered_per_s: u64,
    /// Datagrams/s the sender achieved, untagged / tagged (it seals each
    /// tagged one itself, so it may offer fewer).
    pub sent_per_s: [f64; 2],
    /// Datagrams/s the hub accepted, without / with keys.
    pub hub_per_s: [f64; 2],
    /// Hub CPU, percent of one core, without / with keys.
    pub hub_cpu_pct: [f64; 2],
    /// Hub CPU per accepted datagram, µs, without / with keys.
    pub cpu_us_per_datagram: [f64; 2],
    /// Accepted datagrams/s with keys ÷ without.
    pub rate_ratio: f64,
    /// Datagrams/s per unit of hub CPU with keys ÷ without: the share of
    /// the rate kept at the same CPU (the goal is at least 0.85).
    pub per_cpu_ratio: f64,
    /// Datagrams the hub dropped for authentication in the keyed runs
    /// (unauthenticated, bad tag, replayed, no session; should be 0).
    pub refused: u64,
}

impl AuthResult {
    /// Medians of paired runs.
    pub fn from_runs(
        offered_per_s: u64,
        plain: &[super::scenarios::AuthRun],
        keyed: &[super::scenarios::AuthRun],
    ) -> AuthResult {
        let med = |runs: &[super::scenarios::AuthRun], f: fn(&super::scenarios::AuthRun) -> f64| {
            median(runs.iter().map(f).collect())
        };
        let per_dg = |r: &super::scenarios::AuthRun| {
            if r.hub_per_s > 0.0 {
                r.hub_cpu_pct / 100.0 * 1e6 / r.hub_per_s
            } else {
                0.0
            }
        };
        let hub_per_s = [med(plain, |r| r.hub_per_s), med(keyed, |r| r.hub_per_s)];
        let cpu_us = [med(plain, per_dg), med(keyed, per_dg)];
        AuthResult {
            offered_per_s,
            sent_per_s: [med(plain, |r| r.sent_per_s), med(keyed, |r| r.sent_per_s)],
            hub_per_s,
            hub_cpu_pct: [med(plain, |r| r.hub_cpu_pct), med(keyed, |r| r.hub_cpu_pct)],
            cpu_us_per_datagram: cpu_us,
            rate_ratio: if hub_per_s[0] > 0.0 {
                hub_per_s[1] / hub_per_s[0]
            } else {
                0.0
            },
            per_cpu_ratio: if cpu_us[1] > 0.0 {
                cpu_us[0] / cpu_us[1]
            } else {
                0.0
            },
            refused: keyed.iter().map(|r| r.refused).max().unwrap_or(0),
        }
    }
}

/// Device → WebSocket latency at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Offered datagrams/s.
    pub offered_per_s: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Datagrams timed.
    pub samples: u64,
    /// Datagrams sent but never seen on the WebSocket.
    pub missing: u64,
    /// Hub CPU, percent of one core.
    pub hub_cpu_pct: f64,
    /// The hub's own share (UDP read → socket write, its
    /// `sensor_hub_ws_write_latency_seconds`): the upper bound of the
    /// bucket holding the median and the 99th percentile, µs (null when
    /// the hub does not publish it).
    pub hub_write_p50_le_us: Option<u64>,
    /// See `hub_write_p50_le_us`.
    pub hub_write_p99_le_us: Option<u64>,
}

/// The bucket bound (µs) under which quantile `q` of a Prometheus
/// histogram lies, from `/metrics` text: `None` when the family is absent
/// or empty.
pub fn histogram_quantile_le_us(metrics: &str, family: &str, q: f64) -> Option<u64> {
    let prefix = format!("{family}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|&&(_, cumulative)| cumulative >= q * total)
        .map(|&(le, _)| {
            if le.is_finite() {
                (le * 1e6).round() as u64
            } else {
                u64::MAX
            }
        })
}

/// WebSocket fan-out with one number of clients.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// WebSocket clients subscribed to everything.
    pub clients: usize,
    /// Devices, each sending at 1 Hz.
    pub devices: u32,
    /// Datagrams/s the hub accepted.
    pub updates_per_s: f64,
    /// Datagrams/s delivered, summed over clients.
    pub delivered_per_s: f64,
    /// WebSocket messages/s, summed over clients.
    pub messages_per_s: f64,
    /// Clients that received every accepted datagram.
    pub complete_clients: usize,
    /// The smallest share of the accepted datagrams any client received.
    pub min_fraction: f64,
    /// Median latency of one timed client, µs.
    pub p50_us: u64,
    /// 99th percentile latency of one timed client, µs.
    pub p99_us: u64,
    /// Hub CPU, percent of one core.
    pub hub_cpu_pct: f64,
    /// Hub peak resident memory, KiB.
    pub hub_peak_rss_kib: u64,
}

/// The MQTT bridge against a local Mosquitto broker (medians of runs):
/// the hub with the bridge off and on at 1 Hz per device, and the rate it
/// sustains with `min_interval_ms` = 0.
#[derive(Debug, Clone, Serialize)]
pub struct MqttResult {
    /// Adopted devices sending.
    pub devices: u32,
    /// The measurement window, s (after a warm-up).
    pub window_s: f64,
    /// Hub CPU, percent of one core, bridge off, devices at 1 Hz.
    pub off_cpu_pct: f64,
    /// The same with the bridge on (`min_interval_ms` 1000, the default).
    pub on_cpu_pct: f64,
    /// Datagrams/s the hub accepted, bridge off.
    pub off_accepted_per_s: f64,
    /// Datagrams/s the hub accepted, bridge on.
    pub on_accepted_per_s: f64,
    /// Hub CPU per accepted datagram, µs, bridge off.
    pub off_cpu_us_per_datagram: f64,
    /// Hub CPU per accepted datagram, µs, bridge on.
    pub on_cpu_us_per_datagram: f64,
    /// on_cpu_us_per_datagram − off_cpu_us_per_datagram: the bridge's
    /// cost per datagram.
    pub extra_cpu_us_per_datagram: f64,
    /// MQTT messages/s the broker delivered to a subscriber of
    /// `sensor-hub/#`, bridge on at 1 Hz.
    pub msgs_per_s_1hz: f64,
    /// Messages/s the bridge handed to its client (`/api/hub`
    /// `mqtt.published`, every kind), at 1 Hz.
    pub published_per_s_1hz: f64,
    /// States/s superseded before they were published
    /// (`mqtt.states_coalesced`), at 1 Hz.
    pub coalesced_per_s_1hz: f64,
    /// Broker CPU, percent of one core, at 1 Hz.
    pub broker_cpu_pct_1hz: f64,
    /// Bridge on with `min_interval_ms` = 0 at a higher rate.
    pub sustained: MqttSustained,
}

/// The bridge with `min_interval_ms` = 0: every state is published unless
/// it falls behind (then it coalesces).
#[derive(Debug, Clone, Serialize)]
pub struct MqttSustained {
    /// Each device's rate, Hz.
    pub hz: u32,
    /// Datagrams/s offered (devices × hz).
    pub offered_datagrams_per_s: u64,
    /// Datagrams/s the hub accepted.
    pub accepted_per_s: f64,
    /// Messages/s the bridge handed to its client.
    pub published_per_s: f64,
    /// Messages/s the subscriber received.
    pub received_per_s: f64,
    /// States/s coalesced.
    pub coalesced_per_s: f64,
    /// Hub CPU, percent of one core.
    pub cpu_pct: f64,
    /// Hub CPU per accepted datagram, µs.
    pub cpu_us_per_datagram: f64,
    /// Broker CPU, percent of one core.
    pub broker_cpu_pct: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where.
    pub machine: Machine,
    /// Repetitions behind each median.
    pub runs: usize,
    /// Idle hub.
    pub idle: IdleResult,
    /// Ingest scenario.
    pub ingest: Vec<IngestResult>,
    /// Ingest with authenticated datagrams against the same without.
    pub auth: Vec<AuthResult>,
    /// Latency scenario.
    pub latency: Vec<LatencyResult>,
    /// Fan-out scenario.
    pub fanout: Vec<FanoutResult>,
    /// MQTT bridge scenario (null when not run).
    pub mqtt: Option<MqttResult>,
    /// Cluster scenario (null when not run).
    pub cluster: Option<super::cluster::ClusterResult>,
    /// Memory scenario (null when not run).
    pub memory: Option<super::memory::MemoryResult>,
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl BenchReport {
    /// One line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Tables for people.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "machine: {} cores, kernel {}, rmem_max {} bytes; medians of {} run(s)\n",
            m.cores,
            m.kernel,
            m.rmem_max.map_or("?".into(), |v| v.to_string()),
            self.runs
        );
        let _ = writeln!(o, "idle hub RSS: {} KiB\n", self.idle.rss_kib);
        let _ = writeln!(o, "ingest (datagrams/s)");
        let _ = writeln!(
            o,
            "{:>10} {:>10} {:>10} {:>10} {:>7} {:>11} {:>7} {:>10} {:>9} {:>8} {:>8}",
            "offered",
            "sent",
            "raw sink",
            "hub",
            "ratio",
            "kernel drop",
            "hub cpu",
            "sink µs/dg",
            "hub µs/dg",
            "peak RSS",
            "stored"
        );
        for r in &self.ingest {
            let offered = if r.offered_per_s == 0 {
                "max".to_string()
            } else {
                r.offered_per_s.to_string()
            };
            let stored = r
                .history_stored_pct
                .map_or("off".to_string(), |p| format!("{p:.1}%"));
            let sink_us = r
                .sink_cpu_us_per_datagram
                .map_or("?".to_string(), |us| format!("{us:.3}"));
            let _ = writeln!(
                o,
                "{offered:>10} {:>10.0} {:>10.0} {:>10.0} {:>6.1}% {:>11} {:>6.0}% {sink_us:>10} {:>9.3} {:>5} MiB {stored:>8}",
                r.sent_per_s,
                r.sink_per_s,
                r.hub_per_s,
                r.ratio * 100.0,
                r.kernel_drops,
                r.hub_cpu_pct,
                r.hub_cpu_us_per_datagram,
                r.hub_peak_rss_kib / 1024
            );
        }
        if !self.auth.is_empty() {
            let _ = writeln!(
                o,
                "\ningest with keys (tagged datagrams) vs without, same run"
            );
            let _ = writeln!(
                o,
                "{:>10} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>7} {:>8} {:>8}",
                "offered",
                "hub plain",
                "hub keyed",
                "cpu pl.",
                "cpu key",
                "µs/dg pl.",
                "µs/dg key",
                "rate",
                "per cpu",
                "refused"
            );
            for r in &self.auth {
                let offered = if r.offered_per_s == 0 {
                    "max".to_string()
                } else {
                    r.offered_per_s.to_string()
                };
                let _ = writeln!(
                    o,
                    "{offered:>10} {:>10.0} {:>10.0} {:>7.0}% {:>7.0}% {:>9.2} {:>9.2} {:>6.1}% {:>7.1}% {:>8}",
                    r.hub_per_s[0],
                    r.hub_per_s[1],
                    r.hub_cpu_pct[0],
                    r.hub_cpu_pct[1],
                    r.cpu_us_per_datagram[0],
                    r.cpu_us_per_datagram[1],
                    r.rate_ratio * 100.0,
                    r.per_cpu_ratio * 100.0,
                    r.refused
                );
            }
        }
        let _ = writeln!(o, "\nlatency device -> WebSocket (µs)");
        let _ = writeln!(
            o,
            "{:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>11} {:>11}",
            "offered",
            "p50",
            "p99",
            "p99.9",
            "samples",
            "missing",
            "hub cpu",
            "hub p50 ≤",
            "hub p99 ≤"
        );
        let bound = |b: Option<u64>| b.map_or_else(|| "-".to_string(), |b| b.to_string());
        for r in &self.latency {
            let _ = writeln!(
                o,
                "{:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7.0}% {:>11} {:>11}",
                r.offered_per_s,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.samples,
                r.missing,
                r.hub_cpu_pct,
                bound(r.hub_write_p50_le_us),
                bound(r.hub_write_p99_le_us)
            );
        }
        let _ = writeln!(
            o,
            "\nfan-out ({} devices x 1 Hz)",
            self.fanout.first().map_or(0, |f| f.devices)
        );
        let _ = writeln!(
            o,
            "{:>8} {:>9} {:>11} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "clients",
            "updates/s",
            "delivered/s",
            "messages/s",
            "complete",
            "p50 µs",
            "p99 µs",
            "hub cpu",
            "peak RSS"
        );
        for r in &self.fanout {
            let _ = writeln!(
                o,
                "{:>8} {:>9.0} {:>11.0} {:>10.0} {:>9} {:>8} {:>8} {:>7.0}% {:>5} MiB",
                r.clients,
                r.updates_per_s,
                r.delivered_per_s,
                r.messages_per_s,
                format!("{}/{}", r.complete_clients, r.clients),
                r.p50_us,
                r.p99_us,
                r.hub_cpu_pct,
                r.hub_peak_rss_kib / 1024
            );
        }
        if let Some(m) = &self.mqtt {
            m.table(&mut o);
        }
        if let Some(c) = &self.cluster {
            c.table(&mut o);
        }
        if let Some(m) = &self.memory {
            m.table(&mut o);
        }
        o
    }
}

impl MqttResult {
    fn table(&self, o: &mut String) {
        let s = &self.sustained;
        let _ = writeln!(
            o,
            "\nMQTT bridge -> local Mosquitto ({} devices; {:.0} s window; subscriber on sensor-hub/#)",
            self.devices, self.window_s
        );
        let _ = writeln!(
            o,
            "{:>22} {:>9} {:>10} {:>8} {:>7} {:>11} {:>10} {:>11} {:>10}",
            "run",
            "offered/s",
            "accepted/s",
            "hub cpu",
            "µs/dg",
            "published/s",
            "received/s",
            "coalesced/s",
            "broker cpu"
        );
        let offered_1hz = f64::from(self.devices);
        let _ = writeln!(
            o,
            "{:>22} {:>9.0} {:>10.0} {:>7.1}% {:>7.2} {:>11} {:>10} {:>11} {:>10}",
            "off, 1 Hz",
            offered_1hz,
            self.off_accepted_per_s,
            self.off_cpu_pct,
            self.off_cpu_us_per_datagram,
            "-",
            "-",
            "-",
            "-"
        );
        let _ = writeln!(
            o,
            "{:>22} {:>9.0} {:>10.0} {:>7.1}% {:>7.2} {:>11.0} {:>10.0} {:>11.0} {:>9.1}%",
            "on, 1 Hz",
            offered_1hz,
            self.on_accepted_per_s,
            self.on_cpu_pct,
            self.on_cpu_us_per_datagram,
            self.published_per_s_1hz,
            self.msgs_per_s_1hz,
            self.coalesced_per_s_1hz,
            self.broker_cpu_pct_1hz
        );
        let _ = writeln!(
            o,
            "{:>22} {:>9} {:>10.0} {:>7.1}% {:>7.2} {:>11.0} {:>10.0} {:>11.0} {:>9.1}%",
            format!("on, {} Hz, min int. 0", s.hz),
            s.offered_datagrams_per_s,
            s.accepted_per_s,
            s.cpu_pct,
            s.cpu_us_per_datagram,
            s.published_per_s,
            s.received_per_s,
            s.coalesced_per_s,
            s.broker_cpu_pct
        );
        let _ = writeln!(
            o,
            "bridge cost at 1 Hz: {:+.2} µs of hub CPU per datagram (on − off)",
            self.extra_cpu_us_per_datagram
        );
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::histogram_quantile_le_us;

    #[test]
    fn the_quantile_bucket_is_read_from_metrics_text() {
        let text = "# TYPE h histogram\n\
                    h_bucket{le=\"0.000025\"} 10\n\
                    h_bucket{le=\"0.0001\"} 98\n\
                    h_bucket{le=\"0.001\"} 100\n\
                    h_bucket{le=\"+Inf\"} 100\n\
                    h_sum 0.01\nh_count 100\n";
        assert_eq!(histogram_quantile_le_us(text, "h", 0.5), Some(100));
        assert_eq!(histogram_quantile_le_us(text, "h", 0.99), Some(1_000));
        assert_eq!(histogram_quantile_le_us(text, "other", 0.5), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    fn report(mqtt: Option<MqttResult>) -> BenchReport {
        BenchReport {
            machine: Machine {
                cores: 2,
                kernel: "test".into(),
                rmem_max: None,
            },
            runs: 1,
            idle: IdleResult { rss_kib: 1 },
            ingest: Vec::new(),
            auth: Vec::new(),
            latency: Vec::new(),
            fanout: Vec::new(),
            mqtt,
            cluster: None,
            memory: None,
        }
    }

    #[test]
    fn the_ingest_table_and_json_show_cpu_per_datagram() {
        let mut r = report(None);
        r.ingest.push(IngestResult {
            offered_per_s: 0,
            sent_per_s: 900_000.0,
            sink_per_s: 880_000.0,
            hub_per_s: 500_000.0,
            ratio: 0.568,
            hub_readings_per_s: 1_500_000.0,
            history_stored_pct: None,
            history_dropped: None,
            kernel_drops: 12,
            hub_cpu_pct: 99.0,
            hub_cpu_us_per_datagram: 1.875,
            sink_cpu_us_per_datagram: Some(0.4321),
            hub_peak_rss_kib: 20_480,
        });
        let table = r.table();
        assert!(
            table.contains("sink µs/dg") && table.contains("hub µs/dg"),
            "{table}"
        );
        assert!(
            table.contains(" 0.432 ") && table.contains(" 1.875 "),
            "{table}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap_or_default();
        assert_eq!(v["ingest"][0]["hub_cpu_us_per_datagram"], 1.875);
        assert_eq!(v["ingest"][0]["sink_cpu_us_per_datagram"], 0.4321);
        assert_eq!(v["ingest"][0]["kernel_drops"], 12);
        r.ingest[0].sink_cpu_us_per_datagram = None;
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap_or_default();
        assert!(v["ingest"][0]["sink_cpu_us_per_datagram"].is_null());
    }

    #[test]
    fn the_mqtt_section_is_in_the_table_and_json_only_when_run() {
        let without = report(None);
        assert!(!without.table().contains("MQTT"));
        let v: serde_json::Value = serde_json::from_str(&without.json()).unwrap_or_default();
        assert!(v["mqtt"].is_null() && v.get("mqtt").is_some());

        let with = report(Some(MqttResult {
            devices: 1_000,
            window_s: 10.0,
            off_cpu_pct: 1.0,
            on_cpu_pct: 3.0,
            off_accepted_per_s: 1_000.0,
            on_accepted_per_s: 1_000.0,
            off_cpu_us_per_datagram: 10.0,
            on_cpu_us_per_datagram: 30.0,
            extra_cpu_us_per_datagram: 20.0,
            msgs_per_s_1hz: 999.0,
            published_per_s_1hz: 1_000.0,
            coalesced_per_s_1hz: 0.0,
            broker_cpu_pct_1hz: 2.0,
            sustained: MqttSustained {
                hz: 10,
                offered_datagrams_per_s: 10_000,
                accepted_per_s: 10_000.0,
                published_per_s: 10_000.0,
                received_per_s: 9_990.0,
                coalesced_per_s: 5.0,
                cpu_pct: 20.0,
                cpu_us_per_datagram: 20.0,
                broker_cpu_pct: 20.0,
            },
        }));
        let table = with.table();
        for row in [
            "off, 1 Hz",
            "on, 1 Hz",
            "on, 10 Hz, min int. 0",
            "+20.00 µs",
        ] {
            assert!(table.contains(row), "{row} in:\n{table}");
        }
        let v: serde_json::Value = serde_json::from_str(&with.json()).unwrap_or_default();
        let m = &v["mqtt"];
        for key in [
            "off_cpu_pct",
            "on_cpu_pct",
            "on_cpu_us_per_datagram",
            "extra_cpu_us_per_datagram",
            "msgs_per_s_1hz",
        ] {
            assert!(m[key].is_number(), "mqtt.{key}");
        }
        for key in [
            "offered_datagrams_per_s",
            "published_per_s",
            "received_per_s",
            "coalesced_per_s",
            "cpu_pct",
        ] {
            assert!(m["sustained"][key].is_number(), "mqtt.sustained.{key}");
        }
    }
}
