//! The UDP shell: sends a fleet's datagrams from one socket, each device on
//! its own schedule, until cancelled. Devices are kept in a min-heap by due
//! time, so a large fleet costs one timer, not one task per device.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sensor_hub_protocol::{encode_datagram, MAX_DATAGRAM_LEN};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::SimDevice;

/// What a sending run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends the kernel refused (e.g. nobody listening yet: ICMP unreachable).
    pub send_errors: u64,
}

/// Current wall-clock time in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends each device's datagrams to `hub` at the device's interval until
/// `cancel` fires. Devices start spread over their first interval.
pub async fn run_udp(
    mut devices: Vec<SimDevice>,
    hub: SocketAddr,
    cancel: CancellationToken,
) -> anyhow::Result<UdpStats> {
    let local: SocketAddr = match hub {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("binding the simulator's UDP socket")?;
    socket
        .connect(hub)
        .await
        .with_context(|| format!("setting the hub address {hub}"))?;

    let start = Instant::now();
    let mut schedule: BinaryHeap<Reverse<(Instant, usize)>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let offset = d.interval_ms * i as u64 / devices.len().max(1) as u64;
            Reverse((start + Duration::from_millis(offset), i))
        })
        .collect();

    let mut stats = UdpStats::default();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    while let Some(&Reverse((due, index))) = schedule.peek() {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        schedule.pop();
        let device = &mut devices[index];
        let datagram = device.next_datagram(unix_ms());
        let bytes = encode_datagram(&datagram, &mut buf)
            .context("a simulated datagram exceeded the v1 size limit")?;
        match socket.send(bytes).await {
            Ok(n) => {
                stats.datagrams_sent += 1;
                stats.bytes_sent += n as u64;
            }
            Err(e) => {
                stats.send_errors += 1;
                tracing::debug!(error = %e, "send to {hub} failed");
            }
        }
        // Keep the cadence; after a stall, skip missed slots instead of bursting.
        let interval = Duration::from_millis(device.interval_ms.max(1));
        let next = (due + interval).max(Instant::now());
        schedule.push(Reverse((next, index)));
    }
    Ok(stats)
}
