//! Counters kept by the I/O shell (WebSocket clients, live stream, control
//! connections) as atomics, and the Prometheus text rendering of those
//! together with the pure core's ingest counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::net::KernelUdpStats;
use crate::state::{DropReason, IngestCounters};
use crate::ws::messages::ClientError;

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
    /// Live frames a lagging client skipped (oldest first).
    pub ws_frames_skipped: AtomicU64,
    /// Client messages answered with an error, by [`ClientError::index`].
    pub ws_client_errors: [AtomicU64; ClientError::COUNT],
    /// Live `readings` frames serialized (each shared by all clients).
    pub live_frames: AtomicU64,
    /// Datagrams left out of the live stream because its queue was full.
    pub live_datagrams_dropped: AtomicU64,
    /// Errors reading the UDP socket.
    pub udp_recv_errors: AtomicU64,
    /// Control-channel connections accepted.
    pub control_connections: AtomicU64,
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
    /// The shell's counters.
    pub shell: &'a ShellMetrics,
    /// Kernel counters of the UDP socket, where the OS exposes them.
    pub kernel: Option<KernelUdpStats>,
    /// Usable receive buffer the kernel granted, bytes.
    pub udp_recv_buffer_bytes: usize,
    /// Seconds since the hub started.
    pub uptime_seconds: f64,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Renders the snapshot in the Prometheus text exposition format 0.0.4.
pub fn render(s: &MetricsSnapshot<'_>) -> String {
    let mut o = Out(String::with_capacity(4096));
    let i = &s.ingest;
    o.single(
        "sensor_hub_udp_datagrams_received_total",
        "counter",
        "Datagrams read from the UDP socket, valid or not.",
        i.datagrams_received,
    );
    o.single(
        "sensor_hub_udp_bytes_received_total",
        "counter",
        "Bytes read from the UDP socket.",
        i.bytes_received,
    );
    o.single(
        "sensor_hub_udp_datagrams_accepted_total",
        "counter",
        "Datagrams accepted into the hub state.",
        i.datagrams_accepted,
    );
    o.single(
        "sensor_hub_readings_accepted_total",
        "counter",
        "Sensor readings in accepted datagrams.",
        i.readings_accepted,
    );
    o.family(
        "sensor_hub_udp_datagrams_dropped_total",
        "counter",
        "Datagrams read but not accepted, by reason.",
    );
    for (index, count) in i.dropped.iter().enumerate() {
        let labels = format!("{{reason=\"{}\"}}", DropReason::label(index));
        o.sample("sensor_hub_udp_datagrams_dropped_total", &labels, count);
    }
    if let Some(k) = s.kernel {
        o.single(
            "sensor_hub_udp_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped before the hub could read them (receive buffer full).",
            k.drops,
        );
        o.single(
            "sensor_hub_udp_receive_queue_bytes",
            "gauge",
            "Bytes waiting in the UDP socket's kernel receive queue.",
            k.rx_queue_bytes,
        );
    }
    o.single(
        "sensor_hub_udp_receive_buffer_bytes",
        "gauge",
        "Usable UDP receive buffer granted by the kernel (SO_RCVBUF).",
        s.udp_recv_buffer_bytes,
    );
    o.single(
        "sensor_hub_udp_receive_errors_total",
        "counter",
        "Errors returned by the UDP socket on receive.",
        load(&s.shell.udp_recv_errors),
    );
    o.single("sensor_hub_devices", "gauge", "Devices tracked.", s.devices);
    let sh = s.shell;
    o.single(
        "sensor_hub_ws_clients",
        "gauge",
        "WebSocket clients connected.",
        load(&sh.ws_clients),
    );
    o.single(
        "sensor_hub_ws_clients_accepted_total",
        "counter",
        "WebSocket clients accepted.",
        load(&sh.ws_clients_accepted),
    );
    o.single(
        "sensor_hub_ws_clients_rejected_total",
        "counter",
        "WebSocket upgrades refused because ws.max_clients were connected.",
        load(&sh.ws_clients_rejected),
    );
    o.single(
        "sensor_hub_ws_messages_sent_total",
        "counter",
        "Messages sent to WebSocket clients.",
        load(&sh.ws_messages_sent),
    );
    o.single(
        "sensor_hub_ws_frames_skipped_total",
        "counter",
        "Live frames skipped by clients that fell more than ws.broadcast_frames behind.",
        load(&sh.ws_frames_skipped),
    );
    o.family(
        "sensor_hub_ws_client_errors_total",
        "counter",
        "Client messages answered with an error, by code.",
    );
    for e in ClientError::ALL {
        let labels = format!("{{code=\"{}\"}}", e.code());
        o.sample(
            "sensor_hub_ws_client_errors_total",
            &labels,
            load(&sh.ws_client_errors[e.index()]),
        );
    }
    o.single(
        "sensor_hub_live_frames_total",
        "counter",
        "Live readings frames serialized (each shared by every client).",
        load(&sh.live_frames),
    );
    o.single(
        "sensor_hub_live_datagrams_dropped_total",
        "counter",
        "Accepted datagrams left out of the live stream because its queue (ws.live_queue_batches) was full.",
        load(&sh.live_datagrams_dropped),
    );
    o.single(
        "sensor_hub_control_connections_total",
        "counter",
        "TCP control-channel connections accepted.",
        load(&sh.control_connections),
    );
    o.single(
        "sensor_hub_uptime_seconds",
        "gauge",
        "Seconds since the hub started.",
        format!("{:.3}", s.uptime_seconds),
    );
    o.0
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
            shell: &shell,
            kernel: Some(KernelUdpStats {
                drops: 2,
                rx_queue_bytes: 0,
            }),
            udp_recv_buffer_bytes: 1024,
            uptime_seconds: 1.5,
        });
        assert!(text.contains("sensor_hub_udp_datagrams_received_total 10\n"));
        assert!(
            text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"device_limit\"} 3\n")
        );
        assert!(text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"bad_magic\"} 0\n"));
        assert!(text.contains("sensor_hub_udp_kernel_drops_total 2\n"));
        assert!(text.contains("sensor_hub_ws_clients_rejected_total 1\n"));
        assert!(text.contains("sensor_hub_devices 4\n"));
        assert!(text.contains("sensor_hub_uptime_seconds 1.500\n"));
        // Every sample line belongs to a family announced with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
