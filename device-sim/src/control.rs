//! The control-channel shell of one simulated device: connects to the hub,
//! says hello, heartbeats, answers commands (decided by [`crate::command`])
//! and carries out their effects on the device's shared [`DeviceControl`].
//! It reconnects after a reboot, a reject or a lost connection, with
//! backoff ([`crate::backoff`]), until cancelled; then it says `Bye`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{
    DecodedHubMessage, DeviceMessage, HubMessage, RejectReason, Text, PREAMBLE,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::command::{handle_command, unknown_command, CommandEffect, CommandReply, ConfigStore};
use crate::device_control::DeviceControl;
use crate::hello::HelloTemplate;
use crate::udp::unix_ms;

/// How long connecting to the hub may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the hub may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one frame (or the closing handshake) may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A session up this long counts as working: the backoff starts over.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// Shortest heartbeat period, whatever the hub asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// Largest hub frame body accepted (hub frames are small).
const MAX_HUB_FRAME: usize = 4_096;

/// A framed connection to the hub, seen from the device.
type HubConnection = Framed<TcpStream, FrameCodec<DecodedHubMessage, DeviceMessage>>;

/// Counts over every control session of a fleet.
#[derive(Debug, Default)]
pub(crate) struct SessionCounters {
    /// Welcomes received.
    pub sessions_opened: AtomicU64,
    /// Rejects received, before or after a welcome.
    pub rejects: AtomicU64,
    /// Commands received, known or not.
    pub commands_received: AtomicU64,
    /// Reboots carried out.
    pub reboots: AtomicU64,
    /// Attempts that failed before a welcome (no connection, no answer, bad answer).
    pub connect_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What one device's control sessions need.
#[derive(Debug)]
pub(crate) struct SessionContext {
    /// The device's hello.
    pub template: HelloTemplate,
    /// The hub's control address.
    pub addr: SocketAddr,
    /// How long a reboot keeps the device off the network.
    pub boot_pause: Duration,
    /// What the sessions change about the device's datagrams.
    pub control: Arc<DeviceControl>,
    /// Fleet-wide counts.
    pub counters: Arc<SessionCounters>,
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// Cancelled; the device is done.
    Cancelled,
    /// The hub asked for a reboot; the connection is closed.
    Reboot,
    /// Refused, lost or closed; `stable` if it had worked for a while.
    Closed { stable: bool },
}

/// Runs the device's control sessions, one after the other, until `cancel`.
pub(crate) async fn run_control_sessions(ctx: SessionContext, cancel: CancellationToken) {
    let mut rng = fastrand::Rng::new();
    let mut backoff = Backoff::default();
    let mut config = ConfigStore::default();
    loop {
        let delay = match connect_and_serve(&ctx, &mut config, &cancel).await {
            SessionEnd::Cancelled => return,
            SessionEnd::Reboot => {
                bump(&ctx.counters.reboots);
                ctx.control.request_reboot(ctx.boot_pause);
                backoff.reset();
                ctx.boot_pause
            }
            SessionEnd::Closed { stable } => {
                if stable {
                    backoff.reset();
                }
                backoff.next_delay(&mut rng)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection: hello, then serve until it ends.
async fn connect_and_serve(
    ctx: &SessionContext,
    config: &mut ConfigStore,
    cancel: &CancellationToken,
) -> SessionEnd {
    let device = ctx.template.device_id();
    let handshake = tokio::select! {
        _ = cancel.cancelled() => return SessionEnd::Cancelled,
        handshake = open_session(ctx) => handshake,
    };
    let (mut conn, heartbeat) = match handshake {
        Handshake::Welcome {
            conn,
            session_id,
            heartbeat,
        } => {
            bump(&ctx.counters.sessions_opened);
            tracing::info!(device, session_id, addr = %ctx.addr, "control session opened");
            (conn, heartbeat)
        }
        Handshake::Rejected { reason, detail } => {
            bump(&ctx.counters.rejects);
            tracing::warn!(device, ?reason, %detail, "the hub refused the hello");
            return SessionEnd::Closed { stable: false };
        }
        Handshake::Failed(e) => {
            bump(&ctx.counters.connect_failures);
            tracing::debug!(device, error = format!("{e:#}"), "no control session");
            return SessionEnd::Closed { stable: false };
        }
    };
    let opened = Instant::now();
    let end = serve(&mut conn, ctx, config, heartbeat, cancel).await;
    close(&mut conn).await;
    match end {
        SessionEnd::Closed { .. } => SessionEnd::Closed {
            stable: opened.elapsed() >= STABLE_SESSION,
        },
        other => other,
    }
}

/// How a hello went.
enum Handshake {
    Welcome {
        conn: HubConnection,
        session_id: u64,
        heartbeat: Duration,
    },
    Rejected {
        reason: RejectReason,
        detail: Text,
    },
    Failed(anyhow::Error),
}

/// Connects, sends the preamble and the hello, and waits for the answer.
async fn open_session(ctx: &SessionContext) -> Handshake {
    let mut conn = match connect(ctx.addr).await {
        Ok(conn) => conn,
        Err(e) => return Handshake::Failed(e),
    };
    let hello = ctx.template.hello(ctx.control.interval_ms(), unix_ms());
    if let Err(e) = send(&mut conn, DeviceMessage::Hello(hello)).await {
        return Handshake::Failed(e.context("sending the preamble and hello"));
    }
    let answer = match tokio::time::timeout(WELCOME_TIMEOUT, conn.next()).await {
        Err(_) => return Handshake::Failed(anyhow::anyhow!("no answer to the hello in time")),
        Ok(None) => return Handshake::Failed(anyhow::anyhow!("the hub closed the connection")),
        Ok(Some(Err(e))) => return Handshake::Failed(anyhow::Error::new(e)),
        Ok(Some(Ok(answer))) => answer,
    };
    match answer {
        DecodedHubMessage::Known(HubMessage::Welcome {
            session_id,
            heartbeat_ms,
            ..
        }) => Handshake::Welcome {
            conn,
            session_id,
            heartbeat: Duration::from_millis(heartbeat_ms.into()).max(MIN_HEARTBEAT),
        },
        DecodedHubMessage::Known(HubMessage::Reject { reason, detail }) => {
            Handshake::Rejected { reason, detail }
        }
        other => Handshake::Failed(anyhow::anyhow!(
            "expected a welcome, the hub sent {other:?}"
        )),
    }
}

/// A connection to `addr` with the preamble queued: it goes out with the
/// first frame.
async fn connect(addr: SocketAddr) -> anyhow::Result<HubConnection> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let mut conn = Framed::new(stream, FrameCodec::new(MAX_HUB_FRAME));
    conn.write_buffer_mut().extend_from_slice(&PREAMBLE);
    Ok(conn)
}

/// Heartbeats and answers commands until the session ends.
async fn serve(
    conn: &mut HubConnection,
    ctx: &SessionContext,
    config: &mut ConfigStore,
    heartbeat: Duration,
    cancel: &CancellationToken,
) -> SessionEnd {
    let device = ctx.template.device_id();
    let closed = SessionEnd::Closed { stable: false };
    let mut heartbeats = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                if let Err(e) = send(conn, DeviceMessage::Bye).await {
                    tracing::debug!(device, error = format!("{e:#}"), "could not say bye");
                }
                return SessionEnd::Cancelled;
            }
            _ = heartbeats.tick() => {
                let beat = DeviceMessage::Heartbeat { device_time_ms: unix_ms() };
                if let Err(e) = send(conn, beat).await {
                    tracing::info!(device, error = format!("{e:#}"), "control session lost");
                    return closed;
                }
                continue;
            }
            frame = conn.next() => match frame {
                None => {
                    tracing::info!(device, "the hub closed the control session");
                    return closed;
                }
                Some(Err(e)) => {
                    tracing::info!(device, error = %e, "control session lost");
                    return closed;
                }
                Some(Ok(message)) => message,
            },
        };
        let (id, reply) = match message {
            DecodedHubMessage::Known(HubMessage::Command { id, body }) => {
                (id, handle_command(config, &body))
            }
            DecodedHubMessage::UnknownCommand { id } => (id, unknown_command()),
            DecodedHubMessage::Known(HubMessage::HeartbeatAck { hub_time_ms }) => {
                tracing::trace!(device, hub_time_ms, "heartbeat acknowledged");
                continue;
            }
            DecodedHubMessage::Known(HubMessage::Reject { reason, detail }) => {
                bump(&ctx.counters.rejects);
                tracing::info!(device, ?reason, %detail, "the hub ended the control session");
                return closed;
            }
            DecodedHubMessage::Known(HubMessage::Welcome { .. }) => {
                tracing::debug!(device, "ignoring a second welcome");
                continue;
            }
        };
        bump(&ctx.counters.commands_received);
        if let Err(e) = carry_out(conn, ctx, id, &reply).await {
            tracing::info!(device, error = format!("{e:#}"), "control session lost");
            return closed;
        }
        if reply.effect == CommandEffect::Reboot {
            tracing::info!(device, "rebooting");
            return SessionEnd::Reboot;
        }
    }
}

/// Acknowledges command `id`, applies its effect (a reboot is left to the
/// caller) and reports its result.
async fn carry_out(
    conn: &mut HubConnection,
    ctx: &SessionContext,
    id: u32,
    reply: &CommandReply,
) -> anyhow::Result<()> {
    let device = ctx.template.device_id();
    send(conn, DeviceMessage::CommandAck { id }).await?;
    match reply.effect {
        CommandEffect::SetInterval(ms) => ctx.control.set_interval_ms(ms.into()),
        CommandEffect::Identify => tracing::info!(device, "identify: blinking the LED"),
        CommandEffect::Reboot | CommandEffect::None => {}
    }
    tracing::debug!(device, id, outcome = ?reply.outcome, detail = %reply.detail, "command done");
    let result = DeviceMessage::CommandResult {
        id,
        outcome: reply.outcome,
        detail: Some(reply.detail.clone()),
    };
    send(conn, result).await
}

/// Sends one frame, giving up after [`SEND_TIMEOUT`].
async fn send(conn: &mut HubConnection, message: DeviceMessage) -> anyhow::Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, conn.send(message))
        .await
        .context("sending to the hub timed out")?
        .context("sending to the hub")
}

/// Ends the connection cleanly: flushes, then shuts down the write side.
async fn close(conn: &mut HubConnection) {
    let _ = tokio::time::timeout(SEND_TIMEOUT, conn.close()).await;
}
