//! Counters kept by the I/O shell (WebSocket clients, live stream, control
//! connections) as atomics, and the Prometheus text rendering of those
//! together with the pure core's ingest counters.

mod history;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aggregate::latency::{LatencyHistogram, BOUNDS_MS};
use crate::aggregate::sequence::SeqCounts;
use crate::control::CloseReason;
use crate::history::service::HistoryStats;
use crate::net::KernelUdpStats;
use crate::registry::{CommandState, DeviceStatus, RegistryCounters};
use crate::state::{DropReason, IngestCounters};
use crate::ws::requests::ClientError;
use crate::ws::session::Eviction;
use sensor_hub_protocol::DeviceId;

/// Shell-side counters; cheap to bump from any task.
#[derive(Debug, Default)]
pub struct ShellMetrics {
    /// WebSocket clients connected now (gauge).
    pub ws_clients: AtomicU64,
    /// WebSocket clients accepted since start.
    pub ws_clients_accepted: AtomicU64,
    /// Upgrade requests refused because `ws.max_clients` were connected.
    pub ws_clients_rejected: AtomicU64,
    /// Messages sent to WebSocket clients.
    pub ws_messages_sent: AtomicU64,
    /// Bytes handed to WebSocket writers and not yet written, all clients.
    pub ws_queued_bytes: AtomicU64,
    /// Clients the hub closed, by [`Eviction::index`].
    pub ws_evictions: [AtomicU64; Eviction::COUNT],
    /// Client messages answered with an error, by [`ClientError::index`].
    pub ws_client_errors: [AtomicU64; ClientError::COUNT],
    /// Errors reading the UDP socket.
    pub udp_recv_errors: AtomicU64,
    /// Control-channel connections accepted.
    pub control_connections: AtomicU64,
    /// Control connections ended, by [`CloseReason::index`].
    pub control_closed: [AtomicU64; CloseReason::COUNT],
    /// Messages for a control session dropped because its queue was full.
    pub control_outbound_dropped: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Everything `/metrics` shows, gathered at one moment.
#[derive(Debug)]
pub struct MetricsSnapshot<'a> {
    /// The pure core's counters.
    pub ingest: IngestCounters,
    /// Tracked devices.
    pub devices: usize,
    /// The registry's counters.
    pub registry: RegistryCounters,
    /// Devices per status, in [`DeviceStatus::ALL`] order.
    pub device_status: [usize; 3],
    /// Open control sessions.
    pub control_sessions: usize,
    /// Sequence accounting summed over devices.
    pub seq_totals: SeqCounts,
    /// Latency over all devices.
    pub latency: LatencyHistogram,
    /// Per-device sequence accounting and latency, when few enough devices.
    pub per_device: Option<Vec<(DeviceId, SeqCounts, LatencyHistogram)>>,
    /// Estimated bytes in the replay ring.
    pub replay_bytes: usize,
    /// Sequence number of the newest streamed event.
    pub stream_seq: u64,
    /// The shell's counters.
    pub shell: &'a ShellMetrics,
    /// Kernel counters of the UDP socket, where the OS exposes them.
    pub kernel: Option<KernelUdpStats>,
    /// Usable receive buffer the kernel granted, bytes.
    pub udp_recv_buffer_bytes: usize,
    /// Seconds since the hub started.
    pub uptime_seconds: f64,
    /// The history's figures, when it is on.
    pub history: Option<HistoryStats>,
}

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// One unlabelled series: name, type, help, value.
type Single = (&'static str, &'static str, &'static str, u64);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn singles(out: &mut String, series: &[Single]) {
    for &(name, kind, help, value) in series {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// A family with one label: a `(label value, count)` per series.
fn labeled(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    series: impl IntoIterator<Item = (&'static str, u64)>,
) {
    family(out, name, kind, help);
    for (value, count) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}

/// The samples of a Prometheus histogram; `labels` go before `le`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, count) in h.buckets().iter().enumerate() {
        cumulative += count;
        let le = BOUNDS_MS
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_ms());
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Renders the snapshot in the Prometheus text exposition format 0.0.4.
pub fn render(s: &MetricsSnapshot<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let (i, sh) = (&s.ingest, s.shell);
    singles(
        &mut out,
        &[
            (
                "sensor_hub_udp_datagrams_received_total",
                COUNTER,
                "Datagrams read from the UDP socket, valid or not.",
                i.datagrams_received,
            ),
            (
                "sensor_hub_udp_bytes_received_total",
                COUNTER,
                "Bytes read from the UDP socket.",
                i.bytes_received,
            ),
            (
                "sensor_hub_udp_datagrams_accepted_total",
                COUNTER,
                "Datagrams accepted into the hub state.",
                i.datagrams_accepted,
            ),
            (
                "sensor_hub_readings_accepted_total",
                COUNTER,
                "Sensor readings in accepted datagrams.",
                i.readings_accepted,
            ),
        ],
    );
    labeled(
        &mut out,
        (
            "sensor_hub_udp_datagrams_dropped_total",
            COUNTER,
            "Datagrams read but not accepted, by reason.",
        ),
        "reason",
        i.dropped
            .iter()
            .enumerate()
            .map(|(index, &count)| (DropReason::label(index), count)),
    );
    if let Some(k) = s.kernel {
        singles(
            &mut out,
            &[
                ("sensor_hub_udp_kernel_drops_total", COUNTER,
                 "Datagrams the kernel dropped before the hub could read them (receive buffer full).",
                 k.drops),
                ("sensor_hub_udp_receive_queue_bytes", GAUGE,
                 "Bytes waiting in the UDP socket's kernel receive queue.", k.rx_queue_bytes),
            ],
        );
    }
    singles(
        &mut out,
        &[
            (
                "sensor_hub_udp_receive_buffer_bytes",
                GAUGE,
                "Usable UDP receive buffer granted by the kernel (SO_RCVBUF).",
                s.udp_recv_buffer_bytes as u64,
            ),
            (
                "sensor_hub_udp_receive_errors_total",
                COUNTER,
                "Errors returned by the UDP socket on receive.",
                load(&sh.udp_recv_errors),
            ),
            (
                "sensor_hub_devices",
                GAUGE,
                "Devices tracked.",
                s.devices as u64,
            ),
            (
                "sensor_hub_ws_clients",
                GAUGE,
                "WebSocket clients connected.",
                load(&sh.ws_clients),
            ),
            (
                "sensor_hub_ws_clients_accepted_total",
                COUNTER,
                "WebSocket clients accepted.",
                load(&sh.ws_clients_accepted),
            ),
            (
                "sensor_hub_ws_clients_rejected_total",
                COUNTER,
                "WebSocket upgrades refused because ws.max_clients were connected.",
                load(&sh.ws_clients_rejected),
            ),
            (
                "sensor_hub_ws_messages_sent_total",
                COUNTER,
                "Messages sent to WebSocket clients.",
                load(&sh.ws_messages_sent),
            ),
            (
                "sensor_hub_ws_queued_bytes",
                GAUGE,
                "Bytes waiting to be written to WebSocket clients (each bounded by ws.client_budget_bytes).",
                load(&sh.ws_queued_bytes),
            ),
            (
                "sensor_hub_stream_seq",
                COUNTER,
                "Sequence number of the newest event in the WebSocket stream.",
                s.stream_seq,
            ),
            (
                "sensor_hub_stream_replay_bytes",
                GAUGE,
                "Estimated bytes held in the replay buffer (ws.replay_bytes).",
                s.replay_bytes as u64,
            ),
        ],
    );
    labeled(
        &mut out,
        (
            "sensor_hub_ws_client_errors_total",
            COUNTER,
            "Client messages answered with an error, by code.",
        ),
        "code",
        ClientError::ALL.map(|e| (e.code(), load(&sh.ws_client_errors[e.index()]))),
    );
    labeled(
        &mut out,
        (
            "sensor_hub_ws_evictions_total",
            COUNTER,
            "WebSocket clients closed by the hub, by reason.",
        ),
        "reason",
        Eviction::ALL.map(|e| (e.name(), load(&sh.ws_evictions[e.index()]))),
    );
    labeled(
        &mut out,
        (
            "sensor_hub_devices_by_status",
            GAUGE,
            "Devices per liveness status.",
        ),
        "status",
        DeviceStatus::ALL.map(|st| (st.name(), s.device_status[st as usize] as u64)),
    );
    labeled(
        &mut out,
        (
            "sensor_hub_control_closed_total",
            COUNTER,
            "Control connections ended, by reason.",
        ),
        "reason",
        CloseReason::ALL.map(|r| (r.name(), load(&sh.control_closed[r.index()]))),
    );
    labeled(
        &mut out,
        (
            "sensor_hub_commands_finished_total",
            COUNTER,
            "Commands that reached a final state, by state.",
        ),
        "state",
        CommandState::ALL
            .into_iter()
            .filter(|st| st.is_final())
            .map(|st| (st.name(), s.registry.commands_final[st.index()])),
    );
    singles(
        &mut out,
        &[
            (
                "sensor_hub_control_sessions",
                GAUGE,
                "Open control sessions.",
                s.control_sessions as u64,
            ),
            (
                "sensor_hub_control_sessions_opened_total",
                COUNTER,
                "Control sessions opened (hello accepted).",
                s.registry.sessions_opened,
            ),
            (
                "sensor_hub_control_sessions_replaced_total",
                COUNTER,
                "Control sessions replaced by a newer hello of the same device.",
                s.registry.sessions_replaced,
            ),
            (
                "sensor_hub_control_unmatched_replies_total",
                COUNTER,
                "Command acks or results naming no pending command of that device.",
                s.registry.unmatched_replies,
            ),
            (
                "sensor_hub_control_outbound_dropped_total",
                COUNTER,
                "Messages for a control session dropped because its queue was full.",
                load(&sh.control_outbound_dropped),
            ),
        ],
    );
    singles(
        &mut out,
        &[(
            "sensor_hub_control_connections_total",
            COUNTER,
            "TCP control-channel connections accepted.",
            load(&sh.control_connections),
        )],
    );
    let seq = &s.seq_totals;
    labeled(
        &mut out,
        (
            "sensor_hub_sequence_total",
            COUNTER,
            "Datagram accounting from sequence numbers, over all devices.",
        ),
        "kind",
        [
            ("received", seq.received),
            ("lost", seq.lost),
            ("reordered", seq.reordered),
            ("duplicated", seq.duplicated),
            ("restarts", seq.restarts),
        ],
    );
    let latency = "sensor_hub_latency_ms";
    family(
        &mut out,
        latency,
        "histogram",
        "Hub receive time minus device time (clock-offset corrected), ms.",
    );
    histogram(&mut out, latency, "", &s.latency);
    if let Some(devices) = &s.per_device {
        let name = "sensor_hub_device_sequence_total";
        family(&mut out, name, COUNTER, "Per-device datagram accounting (while at most metrics.per_device_max devices are tracked).");
        for (device, c, _) in devices {
            for (kind, v) in [
                ("received", c.received),
                ("lost", c.lost),
                ("reordered", c.reordered),
                ("duplicated", c.duplicated),
                ("restarts", c.restarts),
            ] {
                let _ = writeln!(out, "{name}{{device=\"{device}\",kind=\"{kind}\"}} {v}");
            }
        }
        let name = "sensor_hub_device_latency_ms";
        family(
            &mut out,
            name,
            "histogram",
            "Per-device latency, ms (while at most metrics.per_device_max devices are tracked).",
        );
        for (device, _, latency) in devices {
            histogram(&mut out, name, &format!("device=\"{device}\""), latency);
        }
    }
    let uptime = "sensor_hub_uptime_seconds";
    family(&mut out, uptime, GAUGE, "Seconds since the hub started.");
    let _ = writeln!(out, "{uptime} {:.3}", s.uptime_seconds);
    history::render(&mut out, s.history.as_ref());
    out
}

/// The same figures as JSON, for the dashboard's hub view (`GET /api/hub`).
pub fn hub_json(s: &MetricsSnapshot<'_>) -> String {
    let sh = s.shell;
    let i = &s.ingest;
    let by_label = |pairs: Vec<(&'static str, u64)>| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect()
    };
    let view = serde_json::json!({
        "hub_version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.uptime_seconds,
        "datagrams_received": i.datagrams_received,
        "bytes_received": i.bytes_received,
        "datagrams_accepted": i.datagrams_accepted,
        "readings_accepted": i.readings_accepted,
        "dropped": by_label((0..DropReason::COUNT).map(|r| (DropReason::label(r), i.dropped[r])).collect()),
        "kernel_drops": s.kernel.map(|k| k.drops),
        "udp_receive_buffer_bytes": s.udp_recv_buffer_bytes,
        "devices": s.devices,
        "devices_by_status": by_label(DeviceStatus::ALL.iter().map(|st| (st.name(), s.device_status[*st as usize] as u64)).collect()),
        "sequence": {
            "received": s.seq_totals.received,
            "lost": s.seq_totals.lost,
            "reordered": s.seq_totals.reordered,
            "duplicated": s.seq_totals.duplicated,
            "restarts": s.seq_totals.restarts,
        },
        "latency_ms": {
            "p50": s.latency.quantile_ms(0.5),
            "p99": s.latency.quantile_ms(0.99),
            "count": s.latency.count(),
        },
        "ws_clients": load(&sh.ws_clients),
        "ws_messages_sent": load(&sh.ws_messages_sent),
        "ws_queued_bytes": load(&sh.ws_queued_bytes),
        "ws_evictions": by_label(Eviction::ALL.iter().map(|e| (e.name(), load(&sh.ws_evictions[e.index()]))).collect()),
        "control_sessions": s.control_sessions,
        "commands_finished": by_label(CommandState::ALL.iter().filter(|st| st.is_final()).map(|st| (st.name(), s.registry.commands_final[st.index()])).collect()),
        "stream_seq": s.stream_seq,
        "history": history::json(s.history.as_ref()),
    });
    view.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_type_and_values() {
        let shell = ShellMetrics::default();
        bump(&shell.ws_clients_rejected);
        let mut ingest = IngestCounters {
            datagrams_received: 10,
            ..Default::default()
        };
        ingest.dropped[DropReason::DeviceLimit.index()] = 3;
        let text = render(&MetricsSnapshot {
            ingest,
            devices: 4,
            registry: RegistryCounters::default(),
            device_status: [3, 1, 0],
            control_sessions: 2,
            seq_totals: SeqCounts {
                received: 9,
                lost: 1,
                ..Default::default()
            },
            latency: {
                let mut h = LatencyHistogram::default();
                h.record(3);
                h
            },
            per_device: Some(vec![(7, SeqCounts::default(), LatencyHistogram::default())]),
            replay_bytes: 100,
            stream_seq: 5,
            shell: &shell,
            kernel: Some(KernelUdpStats {
                drops: 2,
                rx_queue_bytes: 0,
            }),
            udp_recv_buffer_bytes: 1024,
            uptime_seconds: 1.5,
            history: Some(HistoryStats {
                written: 12,
                dropped: [1, 2, 3],
                last_flush_seconds: 0.25,
                ..Default::default()
            }),
        });
        assert!(text.contains("sensor_hub_history_enabled 1\n"));
        assert!(text.contains("sensor_hub_history_readings_written_total 12\n"));
        assert!(
            text.contains("sensor_hub_history_dropped_readings_total{reason=\"write_failed\"} 3\n")
        );
        assert!(text.contains("sensor_hub_history_last_flush_seconds 0.25\n"));
        assert!(text.contains("sensor_hub_udp_datagrams_received_total 10\n"));
        assert!(
            text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"device_limit\"} 3\n")
        );
        assert!(text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"bad_magic\"} 0\n"));
        assert!(text.contains("sensor_hub_udp_kernel_drops_total 2\n"));
        assert!(text.contains("sensor_hub_ws_clients_rejected_total 1\n"));
        assert!(text.contains("sensor_hub_devices 4\n"));
        assert!(text.contains("sensor_hub_devices_by_status{status=\"late\"} 1\n"));
        assert!(text.contains("sensor_hub_sequence_total{kind=\"lost\"} 1\n"));
        assert!(text.contains("sensor_hub_latency_ms_bucket{le=\"2\"} 0\n"));
        assert!(text.contains("sensor_hub_latency_ms_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("sensor_hub_latency_ms_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("sensor_hub_latency_ms_count 1\n"));
        assert!(text.contains("sensor_hub_device_latency_ms_count{device=\"7\"} 0\n"));
        assert!(text.contains("sensor_hub_device_sequence_total{device=\"7\",kind=\"lost\"} 0\n"));
        assert!(text.contains("sensor_hub_ws_evictions_total{reason=\"slow_consumer\"} 0\n"));
        assert!(text.contains("sensor_hub_control_sessions 2\n"));
        assert!(text.contains("sensor_hub_control_closed_total{reason=\"idle_timeout\"} 0\n"));
        assert!(text.contains("sensor_hub_commands_finished_total{state=\"timed_out\"} 0\n"));
        assert!(text.contains("sensor_hub_uptime_seconds 1.500\n"));
        // Every sample line belongs to a family announced with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
                })
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
