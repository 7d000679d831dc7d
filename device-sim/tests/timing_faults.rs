//! Faults that change when things happen rather than what the hub counts
//! of datagrams: jitter (datagrams late, never out of order), dropped
//! control sessions (gone without a `Bye`, then redialled) and random
//! reboots with control sessions (the session goes down with the device).
//! Against a plain UDP socket and a fake hub; timing bounds are loose.

#[path = "support/fake_hub.rs"]
mod fake_hub;
#[path = "support/real_hub.rs"]
mod real_hub;

use std::collections::HashMap;
use std::time::Duration;

use device_sim::udp::unix_ms;
use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec, FleetStats,
};
use fake_hub::FakeHub;
use real_hub::Hub;
use sensor_hub_protocol::DeviceId;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one step may take.
const STEP: Duration = Duration::from_secs(1);

fn fleet(devices: u32, interval_ms: u64) -> Vec<device_sim::SimDevice> {
    build_fleet(&FleetSpec {
        devices,
        first_id: 1,
        interval_ms,
        seed: 9,
    })
}

/// Runs `options` for `for_ms`, stopping the fleet by cancel.
fn start(
    devices: u32,
    interval_ms: u64,
    options: FleetOptions,
    for_ms: u64,
) -> JoinHandle<anyhow::Result<FleetStats>> {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_fleet(
        fleet(devices, interval_ms),
        options,
        cancel.clone(),
    ));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        cancel.cancel();
    });
    task
}

#[tokio::test]
async fn jitter_delays_datagrams_but_keeps_each_devices_order() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let options = FleetOptions {
            faults: FaultSpec {
                jitter_ms: 30,
                ..FaultSpec::NONE
            },
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let mut fleet = start(2, 5, options, 700);
        let mut hub = Hub::default();
        let mut order: HashMap<DeviceId, Vec<u32>> = HashMap::new();
        let mut delays = Vec::new();
        let mut buf = [0u8; 2_048];
        let mut record = |bytes: &[u8]| {
            let now = unix_ms();
            let datagram = hub.read(bytes, now).expect("intact");
            order.entry(datagram.device).or_default().push(datagram.seq);
            delays.push(now as i64 - datagram.time_ms as i64);
        };
        let stats = loop {
            tokio::select! {
                biased;
                received = udp.recv(&mut buf) => record(&buf[..received.expect("recv")]),
                stats = &mut fleet => break stats.expect("no panic").expect("ran"),
            }
        };
        while let Ok(n) = udp.try_recv(&mut buf) {
            record(&buf[..n]);
        }

        let hub = hub.counts();
        assert_eq!(stats.datagrams_sent, hub.datagrams);
        for (device, seqs) in &order {
            let expected: Vec<u32> = (0..seqs.len() as u32).collect();
            assert_eq!(seqs, &expected, "device {device} in order, none lost");
        }
        let counts = hub.seq;
        assert_eq!(
            (counts.lost, counts.reordered, counts.duplicated),
            (0, 0, 0)
        );
        assert!(delays.len() >= 100, "{}", delays.len());
        let (min, max) = (delays.iter().min(), delays.iter().max());
        let (Some(&min), Some(&max)) = (min, max) else {
            panic!("no datagrams");
        };
        // Sent at once after the run too; otherwise up to 30 ms late.
        assert!(min >= -2 && max <= 30 + 40, "{min}..{max}");
        assert!(max >= 10, "delayed at all: {min}..{max}");
        assert_eq!(stats.faults_injected(), 0, "jitter is not a counted fault");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn dropped_sessions_end_without_bye_and_are_counted_exactly() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let hub = FakeHub::start(10).await;
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: hub.addr,
                token: "t".into(),
                key_seed: None,
            }),
            faults: FaultSpec {
                session_drop: 0.3,
                ..FaultSpec::NONE
            },
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let fleet = start(3, 50, options, 900);
        // No new session may be half open when the fleet stops.
        tokio::time::sleep(Duration::from_millis(700)).await;
        hub.stop_accepting().await;
        let stats = timeout(STEP + STEP, fleet)
            .await
            .expect("the fleet stops in time")
            .expect("no panic")
            .expect("ran");
        let log = hub.finish(STEP).await;

        assert!(stats.session_drops > 0, "{stats:?}");
        assert_eq!(log.welcomed, stats.sessions_opened, "{log:?} {stats:?}");
        assert_eq!(log.silent_ends, stats.session_drops, "{log:?} {stats:?}");
        assert_eq!(log.byes + log.silent_ends, log.welcomed, "{log:?}");
        // A device says bye at most once, if a session of it is up at the
        // end; every other session of it was dropped.
        assert!(log.byes <= 3, "{log:?}");
        assert_eq!((stats.reboots, stats.random_reboots), (0, 0));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn a_random_reboot_takes_the_control_session_down_with_the_device() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let hub = FakeHub::start(1_000).await;
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: hub.addr,
                token: "t".into(),
                key_seed: None,
            }),
            boot_pause_ms: 40,
            faults: FaultSpec {
                reboot: 0.05,
                ..FaultSpec::NONE
            },
            ..FleetOptions::udp_only(udp.local_addr().expect("local address"))
        };
        let fleet = start(1, 5, options, 900);
        tokio::time::sleep(Duration::from_millis(700)).await;
        hub.stop_accepting().await;
        let stats = timeout(STEP + STEP, fleet)
            .await
            .expect("the fleet stops in time")
            .expect("no panic")
            .expect("ran");
        let log = hub.finish(STEP).await;

        assert!(stats.random_reboots >= 2, "{stats:?}");
        assert_eq!(stats.reboots, stats.random_reboots, "{stats:?}");
        assert_eq!(log.welcomed, stats.sessions_opened, "{log:?}");
        // Each reboot while a session was up ended it without a word; the
        // device came back after its pause and said hello again.
        assert!(log.silent_ends >= 1, "{log:?} {stats:?}");
        assert!(log.silent_ends <= stats.random_reboots, "{log:?} {stats:?}");
        assert!(stats.sessions_opened >= 2, "{stats:?}");
        assert_eq!(stats.session_drops, 0);
    })
    .await
    .expect("test finished in time");
}
