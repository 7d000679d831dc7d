//! Fleets with failover hubs against small fake hubs over real sockets:
//! devices leave a primary that closes their sessions, refuses their
//! connections, rejects them or falls silent, for the next hub, and their
//! datagrams (tagged with the new session's key, when keyed) follow them;
//! devices whose primary works, or refuses their credentials, stay. Every
//! wait polls toward a generous deadline; no assertion rests on a sleep.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use device_sim::keys::{device_key, KeySeed};
use device_sim::udp::unix_ms;
use device_sim::{
    build_fleet, run_fleet_monitored, ControlTarget, FaultSpec, FleetMonitor, FleetOptions,
    FleetSpec, FleetStats, HubAddrs,
};
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::auth::{keyed_welcome, DatagramKey, NONCE_LEN};
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{DeviceMessage, HubMessage, RejectReason, PREAMBLE};
use sensor_hub_protocol::{decode_datagram, DeviceId, MAX_DATAGRAM_LEN};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one awaited state may take to come about (a silent hub is
/// noticed after two seconds).
const DEADLINE: Duration = Duration::from_secs(15);
/// How long one handshake step of the fake hub may take.
const STEP: Duration = Duration::from_secs(5);
/// The heartbeat period the fake hubs ask for.
const HEARTBEAT_MS: u32 = 50;
const TOKEN: &str = "failover-t0ken";
const KEY_SEED: KeySeed = [7; 32];

/// What a fake hub does with a device's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Welcomes every hello and answers heartbeats until the device leaves.
    Serve,
    /// Welcomes every hello, then closes the connection at once.
    CloseAfterWelcome,
    /// Welcomes every hello, then never sends anything again (a hub that
    /// hangs with its connections open).
    Mute,
    /// Refuses every hello with this reason.
    Reject(RejectReason),
}

/// What a fake hub saw.
#[derive(Debug, Default, Clone)]
struct HubLog {
    /// Connections accepted.
    connections: u64,
    /// Hellos (token or keyed) read.
    hellos: u64,
    /// Device of each session welcomed, in order.
    welcomed: Vec<DeviceId>,
    /// Sessions open now, per device.
    open: HashMap<DeviceId, u32>,
    /// Heartbeats received, per device.
    heartbeats: HashMap<DeviceId, u64>,
    /// Welcomed sessions the device ended with a `Bye`.
    byes: u64,
    /// Welcomed sessions that ended without one (closed or dropped).
    silent_ends: u64,
    /// The datagram key of each keyed device's latest session.
    session_keys: HashMap<DeviceId, DatagramKey>,
}

impl HubLog {
    /// Devices with a session open now.
    fn devices_up(&self) -> BTreeSet<DeviceId> {
        self.open
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(&d, _)| d)
            .collect()
    }
}

fn with_log<T>(log: &Mutex<HubLog>, f: impl FnOnce(&mut HubLog) -> T) -> T {
    f(&mut log.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A fake hub: a control listener behaving as told (keyed hellos answered
/// with the keys of [`KEY_SEED`]) and a UDP socket that only receives.
#[derive(Debug)]
struct FakeHub {
    control: SocketAddr,
    udp: UdpSocket,
    log: Arc<Mutex<HubLog>>,
    acceptor: JoinHandle<()>,
    sessions: TaskTracker,
}

impl FakeHub {
    async fn start(behaviour: Behaviour) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let control = listener.local_addr().expect("local address");
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let log = Arc::new(Mutex::new(HubLog::default()));
        let sessions = TaskTracker::new();
        let acceptor = tokio::spawn({
            let (log, sessions) = (log.clone(), sessions.clone());
            async move {
                let mut session_id = 0;
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    session_id += 1;
                    with_log(&log, |log| log.connections += 1);
                    sessions.spawn(serve(stream, session_id, behaviour, log.clone()));
                }
            }
        });
        FakeHub {
            control,
            udp,
            log,
            acceptor,
            sessions,
        }
    }

    fn addrs(&self) -> HubAddrs {
        HubAddrs {
            udp: self.udp.local_addr().expect("local address"),
            control: self.control,
        }
    }

    /// The log now.
    fn log(&self) -> HubLog {
        with_log(&self.log, |log| log.clone())
    }

    /// Stops accepting, waits for every session to end, returns the log.
    async fn finish(self) -> HubLog {
        self.acceptor.abort();
        self.sessions.close();
        timeout(STEP, self.sessions.wait())
            .await
            .expect("every session ends in time");
        with_log(&self.log, |log| log.clone())
    }
}

/// A hub that is gone: nothing listens on its control port (connections
/// are refused); its UDP socket still receives.
async fn dead_hub() -> (HubAddrs, UdpSocket) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addrs = HubAddrs {
        udp: udp.local_addr().expect("local address"),
        control: listener.local_addr().expect("local address"),
    };
    drop(listener);
    (addrs, udp)
}

type DeviceConn = Framed<TcpStream, FrameCodec<DeviceMessage, HubMessage>>;

/// One connection: preamble, hello (token or keyed), then `behaviour`.
async fn serve(
    mut stream: TcpStream,
    session_id: u64,
    behaviour: Behaviour,
    log: Arc<Mutex<HubLog>>,
) {
    let mut preamble = [0u8; 2];
    match timeout(STEP, stream.read_exact(&mut preamble)).await {
        Ok(Ok(_)) => assert_eq!(preamble, PREAMBLE),
        // Gone before its preamble (the fleet stopped while connecting).
        _ => return,
    }
    let mut conn: DeviceConn = Framed::new(stream, FrameCodec::new(4_096));
    let Some(first) = next(&mut conn).await else {
        return;
    };
    let (device, welcome) = match first {
        DeviceMessage::Hello(hello) => {
            assert_eq!(hello.token, TOKEN);
            let welcome = HubMessage::Welcome {
                session_id,
                hub_time_ms: unix_ms(),
                heartbeat_ms: HEARTBEAT_MS,
            };
            (hello.device_id, welcome)
        }
        DeviceMessage::ChallengeRequest => {
            let hub_nonce: [u8; NONCE_LEN] = std::array::from_fn(|_| fastrand::u8(..));
            if conn
                .send(HubMessage::Challenge { nonce: hub_nonce })
                .await
                .is_err()
            {
                return;
            }
            let keyed = match next(&mut conn).await {
                Some(DeviceMessage::KeyedHello(keyed)) => keyed,
                None => return,
                Some(other) => panic!("expected a keyed hello, got {other:?}"),
            };
            let device = keyed.hello.device_id;
            let key = device_key(&KEY_SEED, device);
            let welcome = keyed_welcome(
                session_id,
                unix_ms(),
                HEARTBEAT_MS,
                &key,
                &keyed.device_nonce,
                &hub_nonce,
            );
            if let Behaviour::Serve | Behaviour::Mute | Behaviour::CloseAfterWelcome = behaviour {
                let datagrams = DatagramKey::derive(&key, &hub_nonce, &keyed.device_nonce);
                with_log(&log, |log| log.session_keys.insert(device, datagrams));
            }
            (device, welcome)
        }
        other => panic!("expected a hello, got {other:?}"),
    };
    with_log(&log, |log| log.hellos += 1);
    if let Behaviour::Reject(reason) = behaviour {
        let detail = "refused by the fake hub".try_into().expect("short text");
        let _ = conn.send(HubMessage::Reject { reason, detail }).await;
        return;
    }
    if conn.send(welcome).await.is_err() {
        return;
    }
    with_log(&log, |log| {
        log.welcomed.push(device);
        *log.open.entry(device).or_default() += 1;
    });
    let bye = if behaviour == Behaviour::CloseAfterWelcome {
        let _ = conn.close().await;
        false
    } else {
        until_the_device_leaves(&mut conn, device, behaviour == Behaviour::Serve, &log).await
    };
    with_log(&log, |log| {
        if let Some(open) = log.open.get_mut(&device) {
            *open -= 1;
        }
        if bye {
            log.byes += 1;
        } else {
            log.silent_ends += 1;
        }
    });
}

/// The device's next frame within [`STEP`]; `None` if it left or stalled.
async fn next(conn: &mut DeviceConn) -> Option<DeviceMessage> {
    match timeout(STEP, conn.next()).await {
        Ok(Some(Ok(message))) => Some(message),
        _ => None,
    }
}

/// Reads frames (acking heartbeats if `answer`) until the device leaves;
/// whether it said `Bye`.
async fn until_the_device_leaves(
    conn: &mut DeviceConn,
    device: DeviceId,
    answer: bool,
    log: &Mutex<HubLog>,
) -> bool {
    loop {
        match conn.next().await {
            Some(Ok(DeviceMessage::Bye)) => return true,
            Some(Ok(DeviceMessage::Heartbeat { .. })) => {
                with_log(log, |log| *log.heartbeats.entry(device).or_default() += 1);
                if answer {
                    let ack = HubMessage::HeartbeatAck {
                        hub_time_ms: unix_ms(),
                    };
                    // The device may be gone already; its end is read next.
                    let _ = conn.send(ack).await;
                }
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return false,
        }
    }
}

/// A running fleet.
struct Fleet {
    cancel: CancellationToken,
    task: JoinHandle<anyhow::Result<FleetStats>>,
    monitor: FleetMonitor,
}

impl Fleet {
    /// `devices` devices (ids 1..), sending every 20 ms, with sessions at
    /// `primary` then `failover`; keyed with [`KEY_SEED`] if `keyed`.
    fn start(devices: u32, primary: HubAddrs, failover: Vec<HubAddrs>, keyed: bool) -> Fleet {
        let fleet = build_fleet(&FleetSpec {
            devices,
            first_id: 1,
            interval_ms: 20,
            seed: 3,
        });
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: primary.control,
                token: if keyed { String::new() } else { TOKEN.into() },
                key_seed: keyed.then_some(KEY_SEED),
            }),
            boot_pause_ms: 100,
            faults: FaultSpec::NONE,
            failover,
            ..FleetOptions::udp_only(primary.udp)
        };
        let cancel = CancellationToken::new();
        let monitor = FleetMonitor::default();
        let task = tokio::spawn(run_fleet_monitored(
            fleet,
            options,
            cancel.clone(),
            monitor.clone(),
        ));
        Fleet {
            cancel,
            task,
            monitor,
        }
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

/// Polls `done` until it holds, failing after [`DEADLINE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `udp` until every one of `devices` was heard from (failing after
/// [`DEADLINE`]); `check` sees every datagram's bytes and device.
async fn hear_from(udp: &UdpSocket, devices: &BTreeSet<DeviceId>, mut check: impl FnMut(&[u8])) {
    let deadline = Instant::now() + DEADLINE;
    let mut heard = BTreeSet::new();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    while !devices.is_subset(&heard) {
        let n = tokio::time::timeout_at(deadline, udp.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("heard only from {heard:?}, not from all of {devices:?}"))
            .expect("udp recv");
        let datagram = decode_datagram(&buf[..n]).expect("a valid datagram");
        check(&buf[..n]);
        heard.insert(datagram.device_id);
    }
}

/// Whether anything waits on `udp`.
fn received_anything(udp: &UdpSocket) -> bool {
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    udp.try_recv(&mut buf).is_ok()
}

fn ids(devices: u32) -> BTreeSet<DeviceId> {
    (1..=devices).collect()
}

#[tokio::test]
async fn devices_leave_a_primary_that_closes_their_sessions_and_their_datagrams_follow() {
    timeout(TEST_TIMEOUT, async {
        let a = FakeHub::start(Behaviour::CloseAfterWelcome).await;
        let b = FakeHub::start(Behaviour::Serve).await;
        let fleet = Fleet::start(3, a.addrs(), vec![b.addrs()], false);
        eventually("every device holds a session at B", || {
            b.log().devices_up() == ids(3) && fleet.monitor.snapshot().sessions_up == 3
        })
        .await;
        hear_from(&b.udp, &ids(3), |_| {}).await;
        let stats = fleet.stop().await;
        let (a, b) = (a.finish().await, b.finish().await);
        assert!(stats.hub_moves >= 3, "{stats:?}");
        assert_eq!(
            a.welcomed.iter().copied().collect::<BTreeSet<_>>(),
            ids(3),
            "every device started at A"
        );
        // Nobody left B before the fleet stopped: every session said bye.
        assert_eq!(b.silent_ends, 0, "{b:?}");
        assert_eq!(b.byes, b.welcomed.len() as u64, "{b:?}");
        assert!(stats.sessions_opened >= 6, "{stats:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn keyed_devices_take_a_fresh_session_key_to_the_failover_hub() {
    timeout(TEST_TIMEOUT, async {
        let b = FakeHub::start(Behaviour::Serve).await;
        let (a, a_udp) = dead_hub().await;
        let fleet = Fleet::start(3, a, vec![b.addrs()], true);
        eventually("every device holds a keyed session at B", || {
            let log = b.log();
            log.devices_up() == ids(3) && log.session_keys.len() == 3
        })
        .await;
        let keys = b.log().session_keys;
        let mut checked = 0;
        hear_from(&b.udp, &ids(3), |bytes| {
            let datagram = decode_datagram(bytes).expect("a valid datagram");
            let key = keys.get(&datagram.device_id).expect("a session at B");
            assert_eq!(
                key.verify(bytes, datagram.auth_tag.is_some()),
                Ok(()),
                "device {} tags with its session key at B",
                datagram.device_id
            );
            checked += 1;
        })
        .await;
        let stats = fleet.stop().await;
        let b = b.finish().await;
        assert!(checked >= 3);
        assert!(stats.hub_moves >= 3, "{stats:?}");
        assert!(stats.connect_failures >= 3, "{stats:?}");
        assert_eq!(stats.sessions_opened, 3, "{stats:?}");
        assert_eq!((b.welcomed.len(), b.silent_ends), (3, 0), "{b:?}");
        // Keyed devices send nothing before their first session, and it
        // was at B: nothing went to A.
        assert!(!received_anything(&a_udp));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn devices_stay_on_a_working_primary_whatever_their_failover_hubs() {
    timeout(TEST_TIMEOUT, async {
        let a = FakeHub::start(Behaviour::Serve).await;
        let b = FakeHub::start(Behaviour::Serve).await;
        let fleet = Fleet::start(3, a.addrs(), vec![b.addrs()], false);
        // Long enough for a move to show: ten heartbeats of every device.
        eventually("every device heartbeats at A ten times", || {
            let log = a.log();
            log.devices_up() == ids(3)
                && ids(3)
                    .iter()
                    .all(|d| log.heartbeats.get(d).copied().unwrap_or(0) >= 10)
        })
        .await;
        hear_from(&a.udp, &ids(3), |_| {}).await;
        let stats = fleet.stop().await;
        assert!(!received_anything(&b.udp), "no datagram went to B");
        let (a, b) = (a.finish().await, b.finish().await);
        assert_eq!(stats.hub_moves, 0, "{stats:?}");
        assert_eq!((a.welcomed.len(), a.silent_ends), (3, 0), "{a:?}");
        assert_eq!(b.connections, 0, "{b:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn a_hub_that_falls_silent_is_left_for_the_next() {
    timeout(TEST_TIMEOUT, async {
        let a = FakeHub::start(Behaviour::Mute).await;
        let b = FakeHub::start(Behaviour::Serve).await;
        let fleet = Fleet::start(1, a.addrs(), vec![b.addrs()], false);
        eventually("the device holds a session at B", || {
            b.log().devices_up() == ids(1)
        })
        .await;
        hear_from(&b.udp, &ids(1), |_| {}).await;
        let stats = fleet.stop().await;
        let (a, b) = (a.finish().await, b.finish().await);
        assert_eq!(stats.hub_moves, 1, "{stats:?}");
        // The device gave A up without a bye, after heartbeats unanswered.
        assert_eq!(
            (a.welcomed.len(), a.byes, a.silent_ends),
            (1, 0, 1),
            "{a:?}"
        );
        assert!(a.heartbeats.get(&1).copied().unwrap_or(0) >= 3, "{a:?}");
        assert_eq!((b.welcomed.len(), b.byes), (1, 1), "{b:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn a_credential_refusal_keeps_devices_home_but_other_rejects_move_them() {
    timeout(TEST_TIMEOUT, async {
        // Bad token: every hub shares the fleet's credentials; stay.
        let a = FakeHub::start(Behaviour::Reject(RejectReason::BadToken)).await;
        let b = FakeHub::start(Behaviour::Serve).await;
        let fleet = Fleet::start(1, a.addrs(), vec![b.addrs()], false);
        eventually("three refused hellos at A", || a.log().hellos >= 3).await;
        let stats = fleet.stop().await;
        assert_eq!(stats.hub_moves, 0, "{stats:?}");
        assert!(stats.rejects >= 3, "{stats:?}");
        assert_eq!(b.finish().await.connections, 0);
        a.finish().await;

        // The hub is shutting down: move on.
        let a = FakeHub::start(Behaviour::Reject(RejectReason::ShuttingDown)).await;
        let b = FakeHub::start(Behaviour::Serve).await;
        let fleet = Fleet::start(1, a.addrs(), vec![b.addrs()], false);
        eventually("the device holds a session at B", || {
            b.log().devices_up() == ids(1)
        })
        .await;
        let stats = fleet.stop().await;
        assert_eq!(stats.hub_moves, 1, "{stats:?}");
        assert_eq!(stats.rejects, 1, "{stats:?}");
        assert_eq!(a.finish().await.hellos, 1);
        b.finish().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn moves_go_round_the_list_and_wrap_to_the_primary() {
    timeout(TEST_TIMEOUT, async {
        // A and B close every session; C is gone: devices keep going
        // round A, B, C, A, ... and are counted moving each time.
        let a = FakeHub::start(Behaviour::CloseAfterWelcome).await;
        let b = FakeHub::start(Behaviour::CloseAfterWelcome).await;
        let (c, _c_udp) = dead_hub().await;
        let fleet = Fleet::start(1, a.addrs(), vec![b.addrs(), c], false);
        eventually("the device comes back to A twice", || {
            a.log().welcomed.len() >= 2
        })
        .await;
        let stats = fleet.stop().await;
        let (a, b) = (a.finish().await, b.finish().await);
        assert!(!b.welcomed.is_empty(), "{b:?}");
        // A, B, C, A: three moves at least, and C refused a connection.
        assert!(stats.hub_moves >= 3, "{stats:?}");
        assert!(stats.connect_failures >= 1, "{stats:?}");
        assert!(a.welcomed.len() >= b.welcomed.len(), "{a:?} {b:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn without_failover_hubs_a_device_returns_to_its_only_hub() {
    timeout(TEST_TIMEOUT, async {
        let a = FakeHub::start(Behaviour::CloseAfterWelcome).await;
        let fleet = Fleet::start(1, a.addrs(), Vec::new(), false);
        eventually("three sessions at A", || a.log().welcomed.len() >= 3).await;
        let stats = fleet.stop().await;
        assert_eq!(stats.hub_moves, 0, "{stats:?}");
        assert!(stats.sessions_opened >= 3, "{stats:?}");
        a.finish().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn failover_hubs_without_control_sessions_are_refused() {
    let (a, _a_udp) = dead_hub().await;
    let (b, _b_udp) = dead_hub().await;
    let options = FleetOptions {
        failover: vec![b],
        ..FleetOptions::udp_only(a.udp)
    };
    let fleet = build_fleet(&FleetSpec::default());
    let err = run_fleet_monitored(
        fleet,
        options,
        CancellationToken::new(),
        FleetMonitor::default(),
    )
    .await
    .expect_err("refused");
    assert!(
        format!("{err:#}").contains("need control sessions"),
        "{err:#}"
    );
}
