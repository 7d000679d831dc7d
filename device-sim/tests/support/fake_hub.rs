//! A fake hub control port for fleets of several devices: welcomes every
//! hello, then reads frames until the device leaves, and logs what it saw:
//! sessions welcomed, sessions ended with `Bye` and without a word, and
//! the device clock in hellos and heartbeats next to its own.

#![allow(dead_code)] // each includer uses a part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use device_sim::udp::unix_ms;
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{DeviceMessage, HubMessage, PREAMBLE};
use sensor_hub_protocol::DeviceId;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::task::TaskTracker;

/// How long one handshake step may take.
const STEP: Duration = Duration::from_secs(1);

/// What the fake hub saw.
#[derive(Debug, Default, Clone)]
pub struct SessionLog {
    /// Hellos welcomed.
    pub welcomed: u64,
    /// Sessions that ended with a `Bye`.
    pub byes: u64,
    /// Welcomed sessions that ended without a `Bye` (dropped).
    pub silent_ends: u64,
    /// Device clock minus hub clock, in ms, per device: each hello's and
    /// heartbeat's.
    pub clock_offsets: HashMap<DeviceId, Vec<i64>>,
}

/// The fake hub's control port.
#[derive(Debug)]
pub struct FakeHub {
    pub addr: SocketAddr,
    log: Arc<Mutex<SessionLog>>,
    acceptor: JoinHandle<()>,
    sessions: TaskTracker,
}

fn with_log<T>(log: &Mutex<SessionLog>, f: impl FnOnce(&mut SessionLog) -> T) -> T {
    f(&mut log.lock().unwrap_or_else(PoisonError::into_inner))
}

impl FakeHub {
    /// Listens on a free loopback port, asking for heartbeats every
    /// `heartbeat_ms`.
    pub async fn start(heartbeat_ms: u32) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = listener.local_addr().expect("local address");
        let log = Arc::new(Mutex::new(SessionLog::default()));
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
                    sessions.spawn(serve(stream, session_id, heartbeat_ms, log.clone()));
                }
            }
        });
        FakeHub {
            addr,
            log,
            acceptor,
            sessions,
        }
    }

    /// Stops accepting: the listener closes, new connections are refused.
    /// Sessions already accepted go on.
    pub async fn stop_accepting(&self) {
        self.acceptor.abort();
        // Let the abort land, and handshakes under way finish.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// Waits (up to `within`) for every session to end, then returns the log.
    pub async fn finish(self, within: Duration) -> SessionLog {
        self.acceptor.abort();
        self.sessions.close();
        tokio::time::timeout(within, self.sessions.wait())
            .await
            .expect("every session ends in time");
        with_log(&self.log, |log| log.clone())
    }
}

/// One connection: preamble, hello, welcome, then frames until it ends.
async fn serve(
    mut stream: TcpStream,
    session_id: u64,
    heartbeat_ms: u32,
    log: Arc<Mutex<SessionLog>>,
) {
    let mut preamble = [0u8; 2];
    match tokio::time::timeout(STEP, stream.read_exact(&mut preamble)).await {
        Ok(Ok(_)) => assert_eq!(preamble, PREAMBLE),
        // Gone before its preamble (the fleet stopped while connecting).
        _ => return,
    }
    let mut conn: Framed<TcpStream, FrameCodec<DeviceMessage, HubMessage>> =
        Framed::new(stream, FrameCodec::new(4_096));
    let hello = match tokio::time::timeout(STEP, conn.next()).await {
        Ok(Some(Ok(DeviceMessage::Hello(hello)))) => hello,
        Ok(None) | Ok(Some(Err(_))) | Err(_) => return,
        Ok(Some(Ok(other))) => panic!("expected a hello, got {other:?}"),
    };
    let device = hello.device_id;
    record_clock(&log, device, hello.device_time_ms);
    let welcome = HubMessage::Welcome {
        session_id,
        hub_time_ms: unix_ms(),
        heartbeat_ms,
    };
    if conn.send(welcome).await.is_err() {
        return;
    }
    with_log(&log, |log| log.welcomed += 1);
    loop {
        match conn.next().await {
            Some(Ok(DeviceMessage::Bye)) => {
                with_log(&log, |log| log.byes += 1);
                return;
            }
            Some(Ok(DeviceMessage::Heartbeat { device_time_ms })) => {
                record_clock(&log, device, device_time_ms);
                let ack = HubMessage::HeartbeatAck {
                    hub_time_ms: unix_ms(),
                };
                // The device may be gone already; its end is read next.
                let _ = conn.send(ack).await;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => {
                with_log(&log, |log| log.silent_ends += 1);
                return;
            }
        }
    }
}

fn record_clock(log: &Mutex<SessionLog>, device: DeviceId, device_time_ms: u64) {
    let offset = device_time_ms as i64 - unix_ms() as i64;
    with_log(log, |log| {
        log.clock_offsets.entry(device).or_default().push(offset);
    });
}
