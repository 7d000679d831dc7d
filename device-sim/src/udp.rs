//! The UDP shell: sends a fleet's datagrams from one socket, each device on
//! its own schedule (`schedule`), until cancelled. Devices are kept in a
//! min-heap by due time, so a large fleet costs one timer, not one task per
//! device. Interval changes and reboots arrive through the fleet's shared
//! control state (`device_control`) and wake the sender at once. Each
//! device's datagrams pass through its [`FaultInjector`]; when the run is
//! cancelled, a device whose injector asks for it sends one last clean
//! datagram, so the injected report matches what the hub counts.

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
use crate::device_control::FleetControls;
use crate::faults::{injector_seed, FaultInjector, FaultSpec, InjectedFaults, Outgoing};
use crate::schedule::SendSlot;

/// What a sending run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends the kernel refused (e.g. nobody listening yet: ICMP unreachable).
    pub send_errors: u64,
    /// Faults injected, summed over devices (all zero without faults).
    pub injected: InjectedFaults,
}

/// Current wall-clock time in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends each device's datagrams to `hub` at the device's interval until
/// `cancel` fires. Devices start spread over their first interval. Nothing
/// changes their intervals; for devices under remote control, see
/// [`crate::run_fleet`].
pub async fn run_udp(
    devices: Vec<SimDevice>,
    hub: SocketAddr,
    cancel: CancellationToken,
) -> anyhow::Result<UdpStats> {
    let controls = FleetControls::new(&devices);
    send_datagrams(devices, &controls, hub, FaultSpec::NONE, cancel).await
}

/// A timer entry: when, which device, and the schedule generation it was
/// made for (outdated entries are skipped).
type TimerEntry = Reverse<(Instant, usize, u64)>;

/// Like [`run_udp`], but each device's interval and reboots follow its
/// entry in `controls` (same order as `devices`), and `faults` are
/// injected into its datagrams.
pub(crate) async fn send_datagrams(
    mut devices: Vec<SimDevice>,
    controls: &FleetControls,
    hub: SocketAddr,
    faults: FaultSpec,
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
    let mut slots: Vec<SendSlot> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let offset = d.interval_ms * i as u64 / devices.len().max(1) as u64;
            SendSlot::new(start + Duration::from_millis(offset))
        })
        .collect();
    let mut timers: BinaryHeap<TimerEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| timer_entry(i, slot))
        .collect();

    let mut injectors: Vec<FaultInjector> = devices
        .iter()
        .map(|d| FaultInjector::new(faults, injector_seed(d.seed(), d.id)))
        .collect();
    let mut stats = UdpStats::default();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    while let Some(&Reverse((due, index, generation))) = timers.peek() {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = controls.changed() => {
                apply_changes(&mut devices, &mut slots, controls, &mut timers);
                continue;
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        timers.pop();
        let (Some(device), Some(slot), Some(injector)) = (
            devices.get_mut(index),
            slots.get_mut(index),
            injectors.get_mut(index),
        ) else {
            continue;
        };
        if !slot.is_current(generation) {
            continue;
        }
        let interval = Duration::from_millis(device.interval_ms.max(1));
        if slot.send_now(interval, Instant::now()) {
            device.reset_seq();
        }
        timers.push(timer_entry(index, slot));
        let datagram = device.next_datagram(unix_ms());
        let bytes = encode_datagram(&datagram, &mut buf)
            .context("a simulated datagram exceeded the v1 size limit")?;
        let outgoing = injector.push(datagram.seq, bytes);
        send_all(&socket, hub, &outgoing, &mut stats).await;
    }
    // Last datagrams: make trailing drops visible and release held ones.
    for (device, injector) in devices.iter_mut().zip(&mut injectors) {
        if injector.needs_final() {
            let datagram = device.next_datagram(unix_ms());
            let bytes = encode_datagram(&datagram, &mut buf)
                .context("a simulated datagram exceeded the v1 size limit")?;
            let outgoing = injector.finish(datagram.seq, bytes);
            send_all(&socket, hub, &outgoing, &mut stats).await;
        }
        stats.injected.add(&injector.report());
    }
    Ok(stats)
}

/// Puts `outgoing` on the wire to `hub`, in order, counting into `stats`.
async fn send_all(
    socket: &UdpSocket,
    hub: SocketAddr,
    outgoing: &Outgoing<'_>,
    stats: &mut UdpStats,
) {
    for bytes in outgoing.datagrams() {
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
    }
}

fn timer_entry(index: usize, slot: &SendSlot) -> TimerEntry {
    let (due, generation) = slot.due();
    Reverse((due, index, generation))
}

/// Reschedules every device whose control state changed.
fn apply_changes(
    devices: &mut [SimDevice],
    slots: &mut [SendSlot],
    controls: &FleetControls,
    timers: &mut BinaryHeap<TimerEntry>,
) {
    let now = Instant::now();
    for (index, (device, slot)) in devices.iter_mut().zip(slots.iter_mut()).enumerate() {
        let Some(change) = controls.device(index).and_then(|c| c.take_change()) else {
            continue;
        };
        if let Some(until) = change.reboot_until {
            slot.reboot(until);
        }
        device.interval_ms = change.interval_ms;
        slot.set_interval(Duration::from_millis(change.interval_ms.max(1)), now);
        timers.push(timer_entry(index, slot));
    }
}
