//! Simulated devices against a fake hub over real sockets: the control
//! handshake, heartbeats, commands and their answers, reboots and
//! reconnects, and what commands do to the devices' datagrams. Every wait
//! has a timeout and timing assertions are loose bounds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec, FleetStats,
};
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{
    CommandBody, DeviceMessage, Hello, HubMessage, Outcome, RejectReason, ValueKind, PREAMBLE,
};
use sensor_hub_protocol::{decode_datagram, Datagram};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// The hub's end of a device connection.
type DeviceConn = Framed<TcpStream, FrameCodec<DeviceMessage, HubMessage>>;

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest one expected event may take.
const STEP: Duration = Duration::from_secs(3);
const TOKEN: &str = "fleet-t0ken-for-tests";

/// A fleet of one device (id 7; temperature, humidity, pressure) sending
/// every `interval_ms`.
struct Sim {
    cancel: CancellationToken,
    task: JoinHandle<anyhow::Result<FleetStats>>,
}

impl Sim {
    fn start(udp: SocketAddr, control: SocketAddr, interval_ms: u64, boot_pause_ms: u64) -> Sim {
        let devices = build_fleet(&FleetSpec {
            devices: 1,
            first_id: 7,
            interval_ms,
            seed: 1,
        });
        let options = FleetOptions {
            udp,
            control: Some(ControlTarget {
                addr: control,
                token: TOKEN.into(),
                key_seed: None,
            }),
            boot_pause_ms,
            faults: FaultSpec::NONE,
            device_faults: Vec::new(),
            failover: Vec::new(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(devices, options, cancel.clone()));
        Sim { cancel, task }
    }

    async fn stop(self) -> FleetStats {
        self.cancel.cancel();
        timeout(STEP, self.task)
            .await
            .expect("the fleet stops in time")
            .expect("the fleet task did not panic")
            .expect("the fleet ran")
    }
}

async fn fake_hub() -> (TcpListener, UdpSocket) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    (tcp, udp)
}

fn local_addr<T>(result: std::io::Result<T>) -> T {
    result.expect("local address")
}

/// Reads the 2-byte preamble without buffering anything beyond it.
async fn read_preamble(stream: &TcpStream) -> [u8; 2] {
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
    preamble
}

/// Accepts a device connection and reads its preamble and hello.
async fn accept_device(listener: &TcpListener) -> (DeviceConn, Hello) {
    let (stream, _) = timeout(STEP, listener.accept())
        .await
        .expect("a device connects in time")
        .expect("accept");
    let preamble = timeout(STEP, read_preamble(&stream))
        .await
        .expect("preamble in time");
    assert_eq!(preamble, PREAMBLE);
    let mut conn = Framed::new(stream, FrameCodec::new(4_096));
    match next_frame(&mut conn).await {
        DeviceMessage::Hello(hello) => (conn, hello),
        other => panic!("expected a hello, got {other:?}"),
    }
}

async fn next_frame(conn: &mut DeviceConn) -> DeviceMessage {
    timeout(STEP, conn.next())
        .await
        .expect("a frame in time")
        .expect("the connection stays open")
        .expect("a valid frame")
}

/// The next frame that is not a heartbeat.
async fn next_reply(conn: &mut DeviceConn) -> DeviceMessage {
    loop {
        match next_frame(conn).await {
            DeviceMessage::Heartbeat { .. } => continue,
            other => return other,
        }
    }
}

/// Waits until the device closes the connection, ignoring heartbeats.
async fn expect_closed(conn: &mut DeviceConn) {
    let deadline = Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, conn.next()).await {
            Err(_) => panic!("the device did not close the connection"),
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(DeviceMessage::Heartbeat { .. }))) => continue,
            Ok(Some(Ok(other))) => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

async fn send(conn: &mut DeviceConn, message: HubMessage) {
    timeout(STEP, conn.send(message))
        .await
        .expect("sent in time")
        .expect("sent");
}

async fn welcome(conn: &mut DeviceConn, session_id: u64) {
    let welcome = HubMessage::Welcome {
        session_id,
        hub_time_ms: 1_700_000_000_000,
        heartbeat_ms: 50,
    };
    send(conn, welcome).await;
}

/// Sends command `id` and returns the result's outcome and detail, after
/// checking the ack came first.
async fn command(conn: &mut DeviceConn, id: u32, body: CommandBody) -> (Outcome, String) {
    send(conn, HubMessage::Command { id, body }).await;
    answer(conn, id).await
}

async fn answer(conn: &mut DeviceConn, id: u32) -> (Outcome, String) {
    assert_eq!(next_reply(conn).await, DeviceMessage::CommandAck { id });
    match next_reply(conn).await {
        DeviceMessage::CommandResult {
            id: result_id,
            outcome,
            detail,
        } => {
            assert_eq!(result_id, id);
            (
                outcome,
                detail.map(|d| d.as_str().to_owned()).unwrap_or_default(),
            )
        }
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The next datagram, or `None` if none arrives by `deadline`.
async fn datagram_by(udp: &UdpSocket, deadline: Instant) -> Option<Datagram> {
    let mut buf = [0u8; 1_024];
    let n = tokio::time::timeout_at(deadline, udp.recv(&mut buf))
        .await
        .ok()?
        .expect("udp recv");
    Some(decode_datagram(&buf[..n]).expect("a valid datagram"))
}

fn text(s: &str) -> sensor_hub_protocol::control::Text {
    s.try_into().expect("short text")
}

#[tokio::test]
async fn hello_heartbeats_commands_and_a_reboot_with_reconnect() {
    timeout(TEST_TIMEOUT, async {
        let (hub, udp) = fake_hub().await;
        let sim = Sim::start(
            local_addr(udp.local_addr()),
            local_addr(hub.local_addr()),
            1_000,
            200,
        );

        let (mut conn, hello) = accept_device(&hub).await;
        assert_eq!(hello.device_id, 7);
        assert_eq!(hello.token, TOKEN);
        assert_eq!(hello.interval_ms, 1_000);
        assert!(
            hello.firmware.starts_with("device-sim "),
            "{}",
            hello.firmware
        );
        assert!(hello.device_time_ms > 1_600_000_000_000);
        let sensors: Vec<_> = hello
            .sensors
            .iter()
            .map(|s| (s.channel, s.name.as_str(), s.kind))
            .collect();
        assert_eq!(
            sensors,
            [
                (0, "temperature", ValueKind::F32),
                (1, "humidity", ValueKind::F32),
                (2, "pressure", ValueKind::F32),
            ]
        );

        welcome(&mut conn, 1).await;
        assert!(matches!(
            next_frame(&mut conn).await,
            DeviceMessage::Heartbeat { .. }
        ));

        assert_eq!(
            command(&mut conn, 1, CommandBody::SetInterval { ms: 0 }).await,
            (Outcome::Failed, "interval must be at least 1 ms".into())
        );
        assert_eq!(
            command(&mut conn, 2, CommandBody::SetInterval { ms: 500 }).await,
            (Outcome::Succeeded, "interval 500 ms".into())
        );
        assert_eq!(
            command(&mut conn, 3, CommandBody::Identify).await,
            (Outcome::Succeeded, "identified (blinked LED)".into())
        );
        let set_config = CommandBody::SetConfig {
            key: "mode".try_into().expect("short"),
            value: text("eco"),
        };
        assert_eq!(
            command(&mut conn, 4, set_config).await,
            (Outcome::Succeeded, "mode = eco".into())
        );
        let custom = CommandBody::Custom {
            name: "dance".try_into().expect("short"),
            args: text("{}"),
        };
        assert_eq!(
            command(&mut conn, 5, custom).await,
            (Outcome::Failed, "unsupported command `dance`".into())
        );

        // A command from a newer hub: tag 02 (Command), id 6, body tag 0x63.
        conn.write_buffer_mut()
            .extend_from_slice(&[0x00, 0x03, 0x02, 0x06, 0x63]);
        timeout(STEP, conn.flush())
            .await
            .expect("flushed in time")
            .expect("flushed");
        assert_eq!(
            answer(&mut conn, 6).await,
            (Outcome::Failed, "unknown command".into())
        );

        assert_eq!(
            command(&mut conn, 7, CommandBody::Reboot).await,
            (Outcome::Succeeded, "rebooting".into())
        );
        expect_closed(&mut conn).await;

        // After the boot pause: a fresh session, announcing the new interval.
        let (mut conn, hello) = accept_device(&hub).await;
        assert_eq!(hello.device_id, 7);
        assert_eq!(hello.interval_ms, 500);
        welcome(&mut conn, 2).await;
        next_frame(&mut conn).await; // a heartbeat: the session is up

        let stats = sim.stop().await;
        assert_eq!(next_reply(&mut conn).await, DeviceMessage::Bye);
        expect_closed(&mut conn).await;
        assert_eq!(stats.sessions_opened, 2);
        assert_eq!(stats.commands_received, 7);
        assert_eq!(stats.reboots, 1);
        assert_eq!(stats.rejects, 0);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn set_interval_speeds_up_datagrams_and_a_reboot_restarts_the_sequence() {
    timeout(TEST_TIMEOUT, async {
        let (hub, udp) = fake_hub().await;
        let boot_pause = Duration::from_millis(300);
        let sim = Sim::start(
            local_addr(udp.local_addr()),
            local_addr(hub.local_addr()),
            1_000,
            boot_pause.as_millis() as u64,
        );
        let (mut conn, _) = accept_device(&hub).await;
        welcome(&mut conn, 1).await;
        let first = datagram_by(&udp, Instant::now() + STEP)
            .await
            .expect("a first datagram");
        assert_eq!((first.device_id, first.seq), (7, 0));

        assert_eq!(
            command(&mut conn, 1, CommandBody::SetInterval { ms: 20 })
                .await
                .0,
            Outcome::Succeeded
        );
        // At 1 s intervals one more would arrive in a second; at 20 ms, ~50.
        let window_end = Instant::now() + Duration::from_secs(1);
        let mut fast = 0;
        let mut last_seq = first.seq;
        while let Some(dg) = datagram_by(&udp, window_end).await {
            assert!(dg.seq > last_seq, "seq {} after {last_seq}", dg.seq);
            last_seq = dg.seq;
            fast += 1;
        }
        assert!(fast >= 10, "only {fast} datagrams in a second at 20 ms");

        assert_eq!(
            command(&mut conn, 2, CommandBody::Reboot).await.0,
            Outcome::Succeeded
        );
        let rebooted_at = Instant::now();
        // Datagrams already on their way may still arrive; then silence,
        // then the sequence starts over.
        let restarted = loop {
            let dg = datagram_by(&udp, rebooted_at + STEP)
                .await
                .expect("datagrams resume after the reboot");
            if dg.seq == 0 {
                break Instant::now();
            }
            assert!(dg.seq > last_seq, "seq {} after {last_seq}", dg.seq);
            last_seq = dg.seq;
        };
        let silence = restarted - rebooted_at;
        assert!(silence >= boot_pause / 2, "silent for only {silence:?}");
        // The new interval survives the reboot.
        let next = datagram_by(&udp, Instant::now() + Duration::from_secs(1))
            .await
            .expect("the next datagram at 20 ms");
        assert_eq!(next.seq, 1);

        expect_closed(&mut conn).await;
        let (mut conn, hello) = accept_device(&hub).await;
        assert_eq!(hello.interval_ms, 20);
        // Answered: a device stopped during its hello waits for the answer.
        welcome(&mut conn, 2).await;
        let stats = sim.stop().await;
        assert_eq!(stats.reboots, 1);
        assert_eq!(stats.sessions_opened, 2);
        assert!(stats.datagrams_sent >= 12, "{stats:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn rejects_and_lost_connections_are_followed_by_reconnects_and_cancel_says_bye() {
    timeout(TEST_TIMEOUT, async {
        let (hub, udp) = fake_hub().await;
        let sim = Sim::start(
            local_addr(udp.local_addr()),
            local_addr(hub.local_addr()),
            1_000,
            100,
        );

        // Replaced by a newer session.
        let (mut conn, _) = accept_device(&hub).await;
        welcome(&mut conn, 1).await;
        let replaced = HubMessage::Reject {
            reason: RejectReason::Replaced,
            detail: text("a newer session of device 7"),
        };
        send(&mut conn, replaced).await;
        expect_closed(&mut conn).await;

        // The hub drops the connection.
        let (mut conn, _) = accept_device(&hub).await;
        welcome(&mut conn, 2).await;
        drop(conn);

        let (mut conn, _) = accept_device(&hub).await;
        welcome(&mut conn, 3).await;
        next_frame(&mut conn).await; // a heartbeat: the session is up
        let stats = sim.stop().await;
        assert_eq!(next_reply(&mut conn).await, DeviceMessage::Bye);
        expect_closed(&mut conn).await;
        assert_eq!(stats.sessions_opened, 3);
        assert_eq!(stats.rejects, 1);
    })
    .await
    .expect("test finished in time");
}

/// Runs a fleet against `control` for about a second and returns its stats.
async fn run_for_a_second(udp: &UdpSocket, control: SocketAddr) -> FleetStats {
    let sim = Sim::start(local_addr(udp.local_addr()), control, 1_000, 100);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    sim.stop().await
}

#[tokio::test]
async fn a_bad_token_reject_backs_off_instead_of_spinning() {
    timeout(TEST_TIMEOUT, async {
        let (hub, udp) = fake_hub().await;
        let control = local_addr(hub.local_addr());
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let rejecting_hub = tokio::spawn(async move {
            loop {
                let (mut conn, hello) = accept_device(&hub).await;
                assert_eq!(hello.token, TOKEN);
                counted.fetch_add(1, Ordering::SeqCst);
                let reject = HubMessage::Reject {
                    reason: RejectReason::BadToken,
                    detail: text("bad token"),
                };
                send(&mut conn, reject).await;
            }
        });
        let stats = run_for_a_second(&udp, control).await;
        rejecting_hub.abort();
        // Backoff from 100 ms, doubling, jittered down by up to half:
        // attempts at 0, >=50, >=150, >=350, >=750 ms, so at most 5.
        let attempts = attempts.load(Ordering::SeqCst);
        assert!((2..=6).contains(&attempts), "{attempts} attempts");
        assert!(stats.rejects >= 2, "{stats:?}");
        assert_eq!(stats.sessions_opened, 0);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn an_unreachable_hub_is_retried_with_backoff() {
    timeout(TEST_TIMEOUT, async {
        let (hub, udp) = fake_hub().await;
        let control = local_addr(hub.local_addr());
        drop(hub); // nothing listens there now: connections are refused
        let stats = run_for_a_second(&udp, control).await;
        assert!(
            (2..=6).contains(&stats.connect_failures),
            "{} failed attempts",
            stats.connect_failures
        );
        assert_eq!(stats.sessions_opened, 0);
        assert!(stats.datagrams_sent >= 1, "datagrams go out regardless");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn a_udp_only_fleet_sends_without_control_sessions() {
    timeout(TEST_TIMEOUT, async {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let devices = build_fleet(&FleetSpec {
            devices: 3,
            first_id: 1,
            interval_ms: 20,
            seed: 1,
        });
        let cancel = CancellationToken::new();
        let options = FleetOptions::udp_only(local_addr(udp.local_addr()));
        let task = tokio::spawn(run_fleet(devices, options, cancel.clone()));
        for _ in 0..6 {
            datagram_by(&udp, Instant::now() + STEP)
                .await
                .expect("datagrams arrive");
        }
        cancel.cancel();
        let stats = timeout(STEP, task)
            .await
            .expect("stops in time")
            .expect("no panic")
            .expect("ran");
        assert!(stats.datagrams_sent >= 6, "{stats:?}");
        assert_eq!(stats.sessions_opened + stats.connect_failures, 0);
    })
    .await
    .expect("test finished in time");
}
