//! A fleet with faults injected, against a plain UDP socket: every datagram
//! received is decoded and run through a copy of the hub's sequence
//! accounting, whose totals must equal the fleet's injected report, also
//! across reboots ordered over a (fake) control session.

#[path = "support/hub_model.rs"]
mod hub_model;

use std::collections::HashMap;
use std::time::Duration;

use device_sim::udp::unix_ms;
use device_sim::{build_fleet, run_fleet, FaultSpec, FleetOptions, FleetSpec, FleetStats};
use device_sim::{ControlTarget, InjectedFaults};
use futures_util::{SinkExt as _, StreamExt as _};
use hub_model::{Counts, HubModel};
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{CommandBody, DeviceMessage, HubMessage, PREAMBLE};
use sensor_hub_protocol::{decode_datagram, restore_time_ms, DeviceId};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one step (a connection, a frame, the fleet stopping) may take.
const STEP: Duration = Duration::from_secs(1);

/// What the socket received, counted as the hub would, per device.
#[derive(Debug, Default)]
struct Tally {
    datagrams: u64,
    devices: HashMap<DeviceId, HubModel>,
}

impl Tally {
    fn observe(&mut self, bytes: &[u8]) {
        let datagram = decode_datagram(bytes).expect("a valid datagram");
        let time_ms = restore_time_ms(datagram.time_ms, unix_ms());
        self.datagrams += 1;
        self.devices
            .entry(datagram.device_id)
            .or_default()
            .observe(datagram.seq, time_ms);
    }

    fn totals(&self) -> Counts {
        let mut totals = Counts::default();
        for device in self.devices.values() {
            totals.add(&device.counts);
        }
        totals
    }
}

/// Receives and counts datagrams until `fleet` finishes, then whatever is
/// still queued on the socket.
async fn count_until_done(
    udp: &UdpSocket,
    mut fleet: JoinHandle<anyhow::Result<FleetStats>>,
) -> (FleetStats, Tally) {
    let mut tally = Tally::default();
    let mut buf = [0u8; 2_048];
    let stats = loop {
        tokio::select! {
            biased;
            received = udp.recv(&mut buf) => {
                let n = received.expect("udp recv");
                tally.observe(&buf[..n]);
            }
            stats = &mut fleet => break stats.expect("no panic").expect("the fleet ran"),
        }
    };
    // Loopback delivery is done by the time `send` returns: what is left
    // is queued already.
    while let Ok(n) = udp.try_recv(&mut buf) {
        tally.observe(&buf[..n]);
    }
    (stats, tally)
}

/// Asserts that the hub model counted exactly what the fleet reported.
fn assert_exact(stats: &FleetStats, tally: &Tally) {
    let hub = tally.totals();
    let counted = InjectedFaults {
        sent: hub.received,
        lost: hub.lost,
        reordered: hub.reordered,
        duplicated: hub.duplicated,
    };
    assert_eq!(counted, stats.injected, "{stats:?}");
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    assert_eq!(stats.datagrams_sent, tally.datagrams, "{stats:?}");
    assert_eq!(stats.injected.sent, tally.datagrams, "{stats:?}");
}

fn fleet(devices: u32, seed: u64) -> Vec<device_sim::SimDevice> {
    build_fleet(&FleetSpec {
        devices,
        first_id: 1,
        interval_ms: 5,
        seed,
    })
}

#[tokio::test]
async fn a_faulty_fleet_reports_exactly_what_the_hub_counts() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let options = FleetOptions {
            faults: FaultSpec::new(0.1, 0.1, 0.05).expect("valid"),
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet(3, 7), options, cancel.clone()));
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        let (stats, tally) = timeout(Duration::from_secs(1) + STEP, count_until_done(&udp, task))
            .await
            .expect("the fleet stops in time");
        stop.await.expect("no panic");

        assert_exact(&stats, &tally);
        assert_eq!(tally.devices.len(), 3);
        assert_eq!(tally.totals().restarts, 0);
        let injected = stats.injected;
        assert!(injected.sent >= 200, "{injected:?}");
        assert!(
            injected.lost > 0 && injected.reordered > 0 && injected.duplicated > 0,
            "{injected:?}"
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn the_report_stays_exact_across_reboots() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let control = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: control.local_addr().expect("local address"),
                token: "t".into(),
            }),
            boot_pause_ms: 50,
            // Often a datagram is held or a drop not yet visible at a reboot.
            faults: FaultSpec::new(0.3, 0.6, 0.3).expect("valid"),
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet(1, 3), options, cancel.clone()));
        let hub = tokio::spawn(reboot_then_stop(control, REBOOTS, cancel));
        let (stats, tally) = timeout(TEST_TIMEOUT, count_until_done(&udp, task))
            .await
            .expect("the fleet stops in time");
        hub.abort();

        assert_exact(&stats, &tally);
        assert_eq!(stats.reboots, REBOOTS, "{stats:?}");
        assert_eq!(tally.totals().restarts, REBOOTS, "{:?}", tally.totals());
    })
    .await
    .expect("test finished in time");
}

/// Reboots ordered by [`reboot_then_stop`].
const REBOOTS: u64 = 3;

/// The hub's side of the control channel: welcomes the device; `reboots`
/// times, orders a reboot 150 ms later and welcomes the device when it is
/// back; stops the fleet 150 ms after that. Then keeps the last session
/// open until aborted.
async fn reboot_then_stop(control: TcpListener, reboots: u64, cancel: CancellationToken) {
    let mut conn = accept_device(&control, 0).await;
    for id in 1..=reboots {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reboot = HubMessage::Command {
            id: id as u32,
            body: CommandBody::Reboot,
        };
        conn.send(reboot).await.expect("sent");
        conn = accept_device(&control, id).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    cancel.cancel();
    std::future::pending::<()>().await;
}

type DeviceConn = Framed<TcpStream, FrameCodec<DeviceMessage, HubMessage>>;

/// Accepts a device, reads its preamble and hello, and welcomes it.
async fn accept_device(listener: &TcpListener, session_id: u64) -> DeviceConn {
    let (stream, _) = timeout(STEP, listener.accept())
        .await
        .expect("a device connects in time")
        .expect("accept");
    // The preamble is not a frame: read exactly its two bytes first.
    let mut preamble = [0u8; 2];
    let mut filled = 0;
    while filled < preamble.len() {
        stream.readable().await.expect("readable");
        match stream.try_read(&mut preamble[filled..]) {
            Ok(0) => panic!("closed before the preamble"),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the preamble: {e}"),
        }
    }
    assert_eq!(preamble, PREAMBLE);
    let mut conn = Framed::new(stream, FrameCodec::new(4_096));
    let hello = timeout(STEP, conn.next()).await.expect("a hello in time");
    assert!(
        matches!(hello, Some(Ok(DeviceMessage::Hello(_)))),
        "{hello:?}"
    );
    let welcome = HubMessage::Welcome {
        session_id,
        hub_time_ms: unix_ms(),
        heartbeat_ms: 1_000,
    };
    conn.send(welcome).await.expect("sent");
    conn
}
