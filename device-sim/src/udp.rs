//! The UDP shell: sends a fleet's datagrams from one socket, each device on
//! its own schedule (`schedule`), until cancelled. Devices are kept in a
//! min-heap by due time, so a large fleet costs one timer, not one task per
//! device. Interval changes and commanded reboots arrive through the
//! fleet's shared control state (`device_control`) and wake the sender at
//! once. Each device's datagrams pass through its lane (`udp::lane`): its
//! skewed clock and its [`FaultInjector`](crate::FaultInjector); with
//! jitter they then wait in the lane's delay line, released by a second
//! heap. A random reboot is applied here and told to the device's control
//! session. A *stranger* (a second socket, so another source address)
//! sends the spoofs the injectors make and the fleet's phantom flood
//! ([`PhantomFlood`](crate::faults::PhantomFlood)), on a timer of its own.
//! When the run is cancelled, waiting datagrams go out, and a device whose
//! injector asks for it sends one last clean datagram, so the injected
//! report matches what the hub counts.

mod lane;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sensor_hub_protocol::MAX_DATAGRAM_LEN;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::device::SimDevice;
use crate::device_control::{FleetControls, Sealing};
use crate::faults::{FaultSpec, InjectedFaults, PhantomFlood};
use lane::Lane;

/// What a sending run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UdpStats {
    /// Datagrams handed to the kernel, corrupted ones included.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends the kernel refused (e.g. nobody listening yet: ICMP unreachable).
    pub send_errors: u64,
    /// Random reboots injected.
    pub reboots: u64,
    /// Datagrams a keyed device did not send for want of a session key
    /// (before its first keyed welcome, after each reboot until the next
    /// one, and while it says hello again).
    pub held_without_session: u64,
    /// Faults injected, summed over devices, and the phantom flood (all
    /// zero without faults).
    pub injected: InjectedFaults,
    /// The address the devices' datagrams came from (the hub shows it as
    /// each device's address).
    pub device_addr: Option<SocketAddr>,
    /// The address the stranger's spoofs and phantoms came from, if it
    /// sent any.
    pub stranger_addr: Option<SocketAddr>,
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
    let controls = FleetControls::new(&devices, false);
    let plan = SendPlan {
        hub,
        boot_pause: Duration::ZERO,
        faults: vec![FaultSpec::NONE; devices.len()],
        phantoms: None,
    };
    send_datagrams(devices, &controls, plan, &UdpCounters::default(), cancel).await
}

/// Where to send and what to inject.
#[derive(Debug, Clone)]
pub(crate) struct SendPlan {
    /// The hub's UDP address.
    pub hub: SocketAddr,
    /// How long a randomly rebooted device stays silent.
    pub boot_pause: Duration,
    /// Each device's faults, in fleet order (missing: none).
    pub faults: Vec<FaultSpec>,
    /// The fleet's phantom flood, if any.
    pub phantoms: Option<PhantomFlood>,
}

/// The sender's figures as it goes, for a live display (it alone writes).
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub send_errors: AtomicU64,
    /// Random reboots.
    pub reboots: AtomicU64,
    /// Datagram faults as far as visible (lost, reordered, duplicated,
    /// corrupted, impersonations, phantoms).
    pub faults: AtomicU64,
}

/// A timer entry: when, which device, and the schedule generation it was
/// made for (outdated entries are skipped).
type TimerEntry = Reverse<(Instant, usize, u64)>;
/// A release entry: when a lane's oldest delayed datagram is due, which lane.
type ReleaseEntry = Reverse<(Instant, usize)>;

/// Like [`run_udp`], but each device's interval and commanded reboots
/// follow its entry in `controls` (same order as `devices`), the faults of
/// `plan` are injected, and the figures are kept up in `live` as well.
pub(crate) async fn send_datagrams(
    devices: Vec<SimDevice>,
    controls: &FleetControls,
    plan: SendPlan,
    live: &UdpCounters,
    cancel: CancellationToken,
) -> anyhow::Result<UdpStats> {
    let socket = connect(plan.hub).await?;
    let spoofs = plan.faults.iter().any(|spec| spec.spoof > 0.0);
    let stranger = if spoofs || plan.phantoms.is_some() {
        Some(connect(plan.hub).await?)
    } else {
        None
    };
    let mut wire = Wire {
        stats: UdpStats {
            device_addr: socket.local_addr().ok(),
            stranger_addr: stranger.as_ref().and_then(|s| s.local_addr().ok()),
            ..UdpStats::default()
        },
        socket,
        stranger,
        hub: plan.hub,
        live,
    };
    let start = Instant::now();
    let count = devices.len().max(1) as u64;
    let mut faults = plan.faults.iter().copied();
    let mut lanes: Vec<Lane> = devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let offset = d.interval_ms * i as u64 / count;
            let spec = faults.next().unwrap_or(FaultSpec::NONE);
            let keyed = controls.device(i).is_some_and(|c| c.is_keyed());
            Lane::new(d, spec, start + Duration::from_millis(offset), keyed)
        })
        .collect();
    let mut phantoms = plan.phantoms;
    let mut timers: BinaryHeap<TimerEntry> = lanes
        .iter()
        .enumerate()
        .map(|(i, lane)| timer_entry(i, lane))
        .collect();
    let mut releases: BinaryHeap<ReleaseEntry> = BinaryHeap::new();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    loop {
        let next_send = timers.peek().map(|Reverse((due, ..))| *due);
        let next_release = releases.peek().map(|Reverse((due, _))| *due);
        let next_phantom = phantoms.as_ref().map(|flood| start + flood.next_due());
        let Some(due) = earliest(earliest(next_send, next_release), next_phantom) else {
            break;
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = controls.changed() => {
                apply_changes(&mut lanes, controls, &mut timers);
                continue;
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = Instant::now();
        if next_phantom.is_some_and(|phantom| phantom <= now) {
            if let Some(flood) = phantoms.as_mut() {
                let bytes = flood.next_datagram(unix_ms());
                wire.send_as_stranger(&bytes).await;
                live.faults.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if next_release.is_some_and(|release| release <= now) {
            if let Some(Reverse((_, index))) = releases.pop() {
                if let Some(lane) = lanes.get_mut(index) {
                    lane.armed = None;
                    while let Some(bytes) = lane.delay.pop_due(now) {
                        wire.send(&bytes).await;
                    }
                    report_queue(controls, index, lane);
                    arm(lane, index, &mut releases);
                }
            }
            continue;
        }
        let Some(Reverse((_, index, generation))) = timers.pop() else {
            continue;
        };
        let Some(lane) = lanes.get_mut(index) else {
            continue;
        };
        if !lane.slot.is_current(generation) {
            continue;
        }
        let sealing = controls
            .device(index)
            .map_or(Sealing::Plain, |c| c.sealing());
        let key = match &sealing {
            Sealing::Plain => None,
            Sealing::Key(session) => Some(session),
            Sealing::Waiting => {
                lane.hold(now);
                timers.push(timer_entry(index, lane));
                wire.stats.held_without_session += 1;
                continue;
            }
        };
        let outgoing = lane.produce(now, unix_ms(), key, &mut buf)?;
        timers.push(timer_entry(index, lane));
        if lane.delay.is_active() {
            let due = lane.delay.due_from(now);
            let mut early = Vec::new();
            for bytes in outgoing.datagrams() {
                early.extend(lane.delay.push(due, bytes.to_vec()));
            }
            report_queue(controls, index, lane);
            for bytes in early {
                wire.send(&bytes).await;
            }
            arm(lane, index, &mut releases);
        } else {
            for bytes in outgoing.datagrams() {
                wire.send(bytes).await;
            }
        }
        if let Some(spoofed) = outgoing.spoofed() {
            wire.send_as_stranger(spoofed).await;
        }
        live.faults.fetch_add(lane.new_faults(), Ordering::Relaxed);
        if lane.reboots_now() {
            lane.slot.reboot(now + plan.boot_pause);
            timers.push(timer_entry(index, lane));
            if let Some(control) = controls.device(index) {
                control.device_rebooted();
            }
            wire.stats.reboots += 1;
            live.reboots.store(wire.stats.reboots, Ordering::Relaxed);
        }
    }
    // Waiting datagrams go out, then the last ones that make trailing
    // drops visible and release held ones.
    for (index, lane) in lanes.iter_mut().enumerate() {
        let waiting: Vec<Vec<u8>> = lane.delay.drain().collect();
        for bytes in waiting {
            wire.send(&bytes).await;
        }
        report_queue(controls, index, lane);
        let sealing = controls
            .device(index)
            .map_or(Sealing::Plain, |c| c.sealing());
        let key = match &sealing {
            Sealing::Key(session) => Some(session),
            Sealing::Plain | Sealing::Waiting => None,
        };
        let finish = match sealing {
            Sealing::Waiting => None,
            _ => lane.finish(unix_ms(), key, &mut buf)?,
        };
        if let Some(outgoing) = finish {
            for bytes in outgoing.datagrams() {
                wire.send(bytes).await;
            }
        }
        live.faults.fetch_add(lane.new_faults(), Ordering::Relaxed);
        wire.stats.injected.add(&lane.injected());
    }
    if let Some(flood) = &phantoms {
        wire.stats.injected.phantom_sent = flood.sent();
        wire.stats.injected.phantom_ids = flood.ids_used();
    }
    Ok(wire.stats)
}

/// The simulator's socket, connected to `hub`.
async fn connect(hub: SocketAddr) -> anyhow::Result<UdpSocket> {
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
    Ok(socket)
}

/// The sockets and what went through them.
struct Wire<'a> {
    /// The devices' socket.
    socket: UdpSocket,
    /// The stranger's socket (spoofs and phantoms), if it sends anything.
    stranger: Option<UdpSocket>,
    hub: SocketAddr,
    stats: UdpStats,
    live: &'a UdpCounters,
}

impl Wire<'_> {
    /// Puts one datagram on the wire from the devices' socket, counting it.
    async fn send(&mut self, bytes: &[u8]) {
        let sent = self.socket.send(bytes).await;
        self.count(sent);
    }

    /// Puts one datagram on the wire from the stranger's socket (there is
    /// one whenever the plan has spoofs or phantoms), counting it.
    async fn send_as_stranger(&mut self, bytes: &[u8]) {
        let sent = match &self.stranger {
            Some(stranger) => stranger.send(bytes).await,
            None => Err(std::io::Error::other("no stranger's socket")),
        };
        self.count(sent);
    }

    /// Counts one send's outcome.
    fn count(&mut self, sent: std::io::Result<usize>) {
        match sent {
            Ok(n) => {
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += n as u64;
                let live = self.live;
                live.datagrams_sent
                    .store(self.stats.datagrams_sent, Ordering::Relaxed);
                live.bytes_sent
                    .store(self.stats.bytes_sent, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.send_errors += 1;
                self.live
                    .send_errors
                    .store(self.stats.send_errors, Ordering::Relaxed);
                tracing::debug!(error = %e, "send to {} failed", self.hub);
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn timer_entry(index: usize, lane: &Lane) -> TimerEntry {
    let (due, generation) = lane.slot.due();
    Reverse((due, index, generation))
}

/// Tells the device's control state how many of its datagrams wait in its
/// delay line (a keyed hello waits for none to be left).
fn report_queue(controls: &FleetControls, index: usize, lane: &Lane) {
    if let Some(control) = controls.device(index) {
        control.set_queued(lane.delay.len());
    }
}

/// Sets the lane's release timer for its oldest delayed datagram, unless
/// one is set already (it then fires no later than that datagram is due).
fn arm(lane: &mut Lane, index: usize, releases: &mut BinaryHeap<ReleaseEntry>) {
    if lane.armed.is_some() {
        return;
    }
    if let Some(due) = lane.delay.next_due() {
        lane.armed = Some(due);
        releases.push(Reverse((due, index)));
    }
}

/// Reschedules every device whose control state changed.
fn apply_changes(
    lanes: &mut [Lane],
    controls: &FleetControls,
    timers: &mut BinaryHeap<TimerEntry>,
) {
    let now = Instant::now();
    for (index, lane) in lanes.iter_mut().enumerate() {
        let Some(change) = controls.device(index).and_then(|c| c.take_change()) else {
            continue;
        };
        if let Some(until) = change.reboot_until {
            lane.slot.reboot(until);
        }
        lane.device.interval_ms = change.interval_ms;
        lane.slot
            .set_interval(Duration::from_millis(change.interval_ms.max(1)), now);
        timers.push(timer_entry(index, lane));
    }
}
