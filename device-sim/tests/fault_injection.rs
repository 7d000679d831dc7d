//! A fleet with faults injected, against a plain UDP socket: every datagram
//! received goes through the real hub's ingest core (decoding, drop reasons,
//! sequence accounting; `support/real_hub.rs`), whose totals must equal the
//! fleet's injected report, also across reboots ordered over a (fake)
//! control session, with every kind of fault at once, and with a phantom
//! flood on top.

#[path = "support/fake_hub.rs"]
mod fake_hub;
#[path = "support/real_hub.rs"]
mod real_hub;

use std::collections::HashMap;
use std::time::Duration;

use device_sim::udp::unix_ms;
use device_sim::{build_fleet, run_fleet, FaultSpec, FleetOptions, FleetSpec, FleetStats};
use device_sim::{ControlTarget, Corruption};
use fake_hub::FakeHub;
use futures_util::{SinkExt as _, StreamExt as _};
use real_hub::Hub;
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{CommandBody, DeviceMessage, HubMessage, PREAMBLE};
use sensor_hub_protocol::DeviceId;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one step (a connection, a frame, the fleet stopping) may take.
const STEP: Duration = Duration::from_secs(1);

/// What the socket received, as the hub would count it, and each device's
/// clock offset (its datagram time minus the receiver's clock), lowest and
/// highest.
#[derive(Debug, Default)]
struct Tally {
    hub: Hub,
    offsets: HashMap<DeviceId, (i64, i64)>,
}

impl Tally {
    fn observe(&mut self, bytes: &[u8]) {
        let now = unix_ms();
        if let Ok(datagram) = self.hub.read(bytes, now) {
            let offset = datagram.time_ms as i64 - now as i64;
            let seen = self
                .offsets
                .entry(datagram.device)
                .or_insert((offset, offset));
            *seen = (seen.0.min(offset), seen.1.max(offset));
        }
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

/// Asserts that the hub counted exactly what the fleet reported.
fn assert_exact(stats: &FleetStats, tally: &Tally) {
    let (hub, injected) = (tally.hub.counts(), &stats.injected);
    let counts = hub.seq;
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    assert_eq!(stats.datagrams_sent, hub.datagrams, "{stats:?}");
    assert_eq!(injected.on_wire(), hub.datagrams, "{stats:?}");
    assert_eq!(counts.received, injected.sent, "{stats:?}");
    assert_eq!(counts.lost, injected.lost, "{stats:?}");
    assert_eq!(counts.reordered, injected.reordered, "{stats:?}");
    assert_eq!(counts.duplicated, injected.duplicated, "{stats:?}");
    assert_eq!(counts.restarts, injected.restarts, "{stats:?}");
    for kind in Corruption::ALL {
        let reason = kind.reason();
        assert_eq!(
            hub.dropped(reason),
            injected.corrupted.get(kind),
            "{reason}: {stats:?}"
        );
    }
    assert_eq!(
        hub.dropped.values().sum::<u64>(),
        injected.corrupted.total()
    );
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
            faults: FaultSpec {
                corrupt: 0.08,
                ..FaultSpec::new(0.1, 0.1, 0.05).expect("valid")
            },
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
        assert_eq!(tally.hub.counts().devices, 3);
        let injected = stats.injected;
        assert_eq!(injected.restarts, 0);
        assert!(injected.sent >= 200, "{injected:?}");
        assert!(
            injected.lost > 0 && injected.reordered > 0 && injected.duplicated > 0,
            "{injected:?}"
        );
        assert!(
            Corruption::ALL
                .iter()
                .all(|&kind| injected.corrupted.get(kind) > 0),
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
                key_seed: None,
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
        assert_eq!(stats.random_reboots, 0, "{stats:?}");
        assert_eq!(stats.injected.restarts, REBOOTS, "{stats:?}");
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

#[tokio::test]
async fn every_fault_kind_at_once_is_counted_exactly() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let control = FakeHub::start(20).await;
        let faults = FaultSpec {
            loss: 0.1,
            reorder: 0.1,
            duplicate: 0.05,
            corrupt: 0.1,
            jitter_ms: 8,
            clock_skew_ms: -2_500,
            session_drop: 0.2,
            reboot: 0.02,
            ..FaultSpec::NONE
        };
        // Device 4 only runs 90 s ahead.
        let ahead = FaultSpec {
            clock_skew_ms: 90_000,
            ..FaultSpec::NONE
        };
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: control.addr,
                token: "t".into(),
                key_seed: None,
            }),
            boot_pause_ms: 30,
            faults,
            device_faults: vec![(4, ahead)],
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet(4, 5), options, cancel.clone()));
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            cancel.cancel();
        });
        let (stats, tally) = timeout(TEST_TIMEOUT, count_until_done(&udp, task))
            .await
            .expect("the fleet stops in time");
        stop.await.expect("no panic");
        let sessions = control.finish(STEP).await;

        // Datagrams: exactly what the hub counts, every kind present.
        assert_exact(&stats, &tally);
        let injected = stats.injected;
        assert!(
            injected.lost > 0 && injected.reordered > 0 && injected.duplicated > 0,
            "{injected:?}"
        );
        assert!(injected.corrupted.total() >= 4, "{injected:?}");
        // Random reboots: each is a restart once the device sends again,
        // which at most one per device (the last) may not have done.
        assert!(stats.random_reboots > 0, "{stats:?}");
        assert_eq!(stats.reboots, stats.random_reboots, "{stats:?}");
        assert!(injected.restarts <= stats.random_reboots, "{stats:?}");
        assert!(injected.restarts + 4 >= stats.random_reboots, "{stats:?}");
        // Sessions: every welcome counted; drops happened and were redialled.
        assert_eq!(sessions.welcomed, stats.sessions_opened, "{sessions:?}");
        assert!(stats.session_drops > 0, "{stats:?}");
        assert!(stats.sessions_opened > 4, "{stats:?}");
        // Clocks: skewed in datagrams (jitter and holds add a little
        // delay), hellos and heartbeats; per device where overridden.
        for device in 1..=4 {
            let skew = if device == 4 { 90_000 } else { -2_500 };
            let (low, high) = tally.offsets[&device];
            assert!(
                low >= skew - 300 && high <= skew + 50,
                "{device}: {low}..{high}"
            );
            let offsets = &sessions.clock_offsets[&device];
            assert!(
                offsets
                    .iter()
                    .all(|&o| (skew - 300..=skew + 50).contains(&o)),
                "{device}: {offsets:?}"
            );
        }
        assert_eq!(
            stats.faults_injected(),
            injected.faults() + stats.random_reboots + stats.session_drops
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn a_phantom_flood_comes_on_top_of_the_fleets_faults() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let options = FleetOptions {
            faults: FaultSpec {
                phantom_per_s: 500.0,
                phantom_ids: 7,
                ..FaultSpec::new(0.1, 0.1, 0.1).expect("valid")
            },
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet(2, 8), options, cancel.clone()));
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            cancel.cancel();
        });
        let (stats, tally) = timeout(TEST_TIMEOUT, count_until_done(&udp, task))
            .await
            .expect("the fleet stops in time");
        stop.await.expect("no panic");

        let (hub, injected) = (tally.hub.counts(), stats.injected);
        assert_eq!(stats.send_errors, 0, "{stats:?}");
        assert_eq!(stats.datagrams_sent, hub.datagrams, "{stats:?}");
        assert_eq!(injected.on_wire(), hub.datagrams, "{stats:?}");
        assert!(injected.phantom_sent >= 100, "{injected:?}");
        assert_eq!(injected.phantom_ids, 7);
        // Room for every phantom: each of their datagrams is accepted, in
        // order, beside the fleet's own figures.
        let admitted = injected.phantom_admitted(u64::MAX);
        assert_eq!(admitted, injected.phantom_sent);
        assert_eq!(hub.seq.received, injected.sent + admitted, "{stats:?}");
        assert_eq!(hub.seq.lost, injected.lost, "{stats:?}");
        assert_eq!(hub.seq.reordered, injected.reordered, "{stats:?}");
        assert_eq!(hub.seq.duplicated, injected.duplicated, "{stats:?}");
        assert_eq!((hub.devices, hub.discovered), (2 + 7, 2 + 7));
        assert!(stats.stranger_addr.is_some() && stats.stranger_addr != stats.device_addr);
    })
    .await
    .expect("test finished in time");
}
