//! The UDP shell: sends a fleet's datagrams from one socket, each device on
//! its own schedule (`schedule`), until cancelled, each to the hub its
//! control state names (with one hub the socket is connected to it; with
//! failover hubs it addresses every datagram, looking the hub's address up
//! by the device's hub index, so a device that moves takes its datagrams
//! along at once). Devices are kept in a
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
        hubs: vec![hub],
        boot_pause: Duration::ZERO,
        faults: vec![FaultSpec::NONE; devices.len()],
        phantoms: None,
    };
    send_datagrams(devices, &controls, plan, &UdpCounters::default(), cancel).await
}

/// Where to send and what to inject.
#[derive(Debug, Clone)]
pub(crate) struct SendPlan {
    /// The hubs' UDP addresses, primary first (at least one, all of one IP
    /// family): each device's datagrams go to the one its control state
    /// names ([`crate::device_control::DeviceControl::hub`]).
    pub hubs: Vec<SocketAddr>,
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
    let socket = open_socket(&plan.hubs).await?;
    let spoofs = plan.faults.iter().any(|spec| spec.spoof > 0.0);
    let stranger = if spoofs || plan.phantoms.is_some() {
        Some(open_socket(&plan.hubs).await?)
    } else {
        None
    };
    let device_addr = seen_addr(&socket, &plan.hubs).await;
    let stranger_addr = match &stranger {
        Some(stranger) => seen_addr(stranger, &plan.hubs).await,
        None => None,
    };
    let mut wire = Wire {
        stats: UdpStats {
            device_addr,
            stranger_addr,
            ..UdpStats::default()
        },
        socket,
        stranger,
        hubs: plan.hubs,
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
                // Phantoms are fleet-wide: they go to the primary hub.
                wire.send_as_stranger(&bytes, 0).await;
                live.faults.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if next_release.is_some_and(|release| release <= now) {
            if let Some(Reverse((_, index))) = releases.pop() {
                if let Some(lane) = lanes.get_mut(index) {
                    lane.armed = None;
                    let hub = hub_of(controls, index);
                    while let Some(bytes) = lane.delay.pop_due(now) {
                        wire.send(&bytes, hub).await;
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
        let control = controls.device(index);
        let sealing = control.map_or(Sealing::Plain, |c| c.sealing());
        let hub = control.map_or(0, |c| c.hub());
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
                wire.send(&bytes, hub).await;
            }
            arm(lane, index, &mut releases);
        } else {
            for bytes in outgoing.datagrams() {
                wire.send(bytes, hub).await;
            }
        }
        if let Some(spoofed) = outgoing.spoofed() {
            wire.send_as_stranger(spoofed, hub).await;
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
        let hub = hub_of(controls, index);
        let waiting: Vec<Vec<u8>> = lane.delay.drain().collect();
        for bytes in waiting {
            wire.send(&bytes, hub).await;
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
                wire.send(bytes, hub).await;
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

/// A socket of the simulator's for `hubs` (primary first): connected to
/// the hub if there is one, else bound only, every datagram addressed.
async fn open_socket(hubs: &[SocketAddr]) -> anyhow::Result<UdpSocket> {
    let Some(&primary) = hubs.first() else {
        anyhow::bail!("no hub to send datagrams to");
    };
    let socket = UdpSocket::bind(unspecified(primary))
        .await
        .context("binding the simulator's UDP socket")?;
    if hubs.len() == 1 {
        socket
            .connect(primary)
            .await
            .with_context(|| format!("setting the hub address {primary}"))?;
    }
    Ok(socket)
}

/// Any local address of `hub`'s IP family, any port.
fn unspecified(hub: SocketAddr) -> SocketAddr {
    match hub {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// The address the primary hub sees `socket`'s datagrams come from. A
/// socket that is not connected is bound to the unspecified address: its
/// port, with the local address a socket connected to the primary gets.
async fn seen_addr(socket: &UdpSocket, hubs: &[SocketAddr]) -> Option<SocketAddr> {
    let local = socket.local_addr().ok()?;
    if !local.ip().is_unspecified() {
        return Some(local);
    }
    let primary = *hubs.first()?;
    let probe = UdpSocket::bind(unspecified(primary)).await.ok()?;
    probe.connect(primary).await.ok()?;
    let toward_primary = probe.local_addr().ok()?;
    Some(SocketAddr::new(toward_primary.ip(), local.port()))
}

/// The hub index the device at `index` sends to now.
fn hub_of(controls: &FleetControls, index: usize) -> usize {
    controls.device(index).map_or(0, |c| c.hub())
}

/// The sockets and what went through them.
struct Wire<'a> {
    /// The devices' socket.
    socket: UdpSocket,
    /// The stranger's socket (spoofs and phantoms), if it sends anything.
    stranger: Option<UdpSocket>,
    /// The hubs' UDP addresses, primary first; with one the sockets are
    /// connected to it.
    hubs: Vec<SocketAddr>,
    stats: UdpStats,
    live: &'a UdpCounters,
}

impl Wire<'_> {
    /// Where a datagram for hub `hub` is addressed: `None` when the sockets
    /// are connected to the only hub (an index out of range is the primary).
    fn destination(&self, hub: usize) -> Option<SocketAddr> {
        match self.hubs.as_slice() {
            [] | [_] => None,
            hubs => hubs.get(hub).or(hubs.first()).copied(),
        }
    }

    /// Puts one datagram for hub `hub` on the wire from the devices'
    /// socket, counting it.
    async fn send(&mut self, bytes: &[u8], hub: usize) {
        let sent = match self.destination(hub) {
            None => self.socket.send(bytes).await,
            Some(to) => self.socket.send_to(bytes, to).await,
        };
        self.count(sent, hub);
    }

    /// Puts one datagram for hub `hub` on the wire from the stranger's
    /// socket (there is one whenever the plan has spoofs or phantoms),
    /// counting it.
    async fn send_as_stranger(&mut self, bytes: &[u8], hub: usize) {
        let to = self.destination(hub);
        let sent = match (&self.stranger, to) {
            (Some(stranger), None) => stranger.send(bytes).await,
            (Some(stranger), Some(to)) => stranger.send_to(bytes, to).await,
            (None, _) => Err(std::io::Error::other("no stranger's socket")),
        };
        self.count(sent, hub);
    }

    /// Counts the outcome of one send to hub `hub`.
    fn count(&mut self, sent: std::io::Result<usize>, hub: usize) {
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
                if let Some(to) = self.hubs.get(hub).or(self.hubs.first()) {
                    tracing::debug!(error = %e, "send to {to} failed");
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{build_fleet, FleetSpec};
    use sensor_hub_protocol::decode_datagram;

    const STEP: Duration = Duration::from_secs(5);

    /// The id of the next datagram `hub` receives, within [`STEP`].
    async fn next_device(hub: &UdpSocket) -> u32 {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let n = tokio::time::timeout(STEP, hub.recv(&mut buf))
            .await
            .expect("a datagram in time")
            .expect("udp recv");
        decode_datagram(&buf[..n]).expect("intact").device_id
    }

    #[tokio::test]
    async fn each_device_sends_to_the_hub_its_control_state_names_and_follows_a_move() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let hubs = vec![
            a.local_addr().expect("address"),
            b.local_addr().expect("address"),
        ];
        let devices = build_fleet(&FleetSpec {
            devices: 2,
            first_id: 1,
            interval_ms: 10,
            seed: 1,
        });
        let controls = FleetControls::new(&devices, false);
        let (Some(first), Some(second)) = (controls.device(0), controls.device(1)) else {
            panic!("two devices");
        };
        second.set_hub(1);
        let plan = SendPlan {
            hubs,
            boot_pause: Duration::ZERO,
            faults: vec![FaultSpec::NONE; 2],
            phantoms: None,
        };
        let cancel = CancellationToken::new();
        let live = UdpCounters::default();
        let sending = send_datagrams(devices, &controls, plan, &live, cancel.clone());
        let checks = async {
            for _ in 0..5 {
                assert_eq!(next_device(&a).await, 1, "device 1 stays on the primary");
                assert_eq!(next_device(&b).await, 2, "device 2 sends to hub 1");
            }
            first.set_hub(1);
            // Datagrams sent before the move may still be queued at A.
            let mut at_b = std::collections::HashSet::new();
            while at_b.len() < 2 {
                at_b.insert(next_device(&b).await);
            }
            cancel.cancel();
        };
        let (stats, ()) = tokio::join!(sending, checks);
        let stats = stats.expect("ran");
        assert_eq!(stats.send_errors, 0);
        let seen = stats.device_addr.expect("an address");
        assert!(seen.ip().is_loopback() && seen.port() != 0, "{seen}");
    }
}
