//! The control-channel shell of one simulated device: connects to the hub
//! (`control::conn`), heartbeats, answers commands (decided by
//! [`crate::command`]) and carries out their effects on the device's shared
//! [`DeviceControl`]. It reconnects after a reboot, a reject or a lost
//! connection, with backoff ([`crate::backoff`]), until cancelled; then it
//! says `Bye`. Injected faults: it may drop a session abruptly at a
//! heartbeat (no `Bye`), and it drops the session, waits out the boot
//! pause and reconnects when the sender reports a random reboot. The first
//! connection of a fleet's devices is staggered so the hub's accept queue
//! is not flooded.
//!
//! Failover: a device may know several hubs (primary first). When a
//! session cannot be opened, or ends without the device asking (the hub
//! closed or reset it, rejected the device for any reason but its
//! credentials, or, with failover hubs only, stayed silent for
//! [`SILENT_HEARTBEATS`] heartbeats), the device moves to the next hub,
//! round robin, and reconnects there after the usual backoff; its
//! datagrams follow (`DeviceControl::set_hub`). Reboots, injected drops
//! and credential refusals keep it where it is. With one hub nothing
//! moves.

mod conn;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use sensor_hub_protocol::auth::DeviceKey;
use sensor_hub_protocol::control::{DecodedHubMessage, DeviceMessage, HubMessage, RejectReason};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::command::{handle_command, unknown_command, CommandEffect, CommandReply, ConfigStore};
use crate::device_control::DeviceControl;
use crate::faults::odds::{stream_seed, Odds, Stream};
use crate::faults::skewed_ms;
use crate::hello::HelloTemplate;
use crate::udp::unix_ms;
use conn::{close, open_session, send, Handshake, HubConnection};

/// A session up this long counts as working: the backoff starts over.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// How long a hello under way when the fleet is cancelled may take to be
/// answered (so device and hub agree on whether a session opened).
const HANDSHAKE_GRACE: Duration = Duration::from_secs(1);
/// With failover hubs, a session whose hub has sent nothing (no heartbeat
/// ack, no command) for this many heartbeat periods is given up as lost:
/// a hub that vanished without closing its connections (a host crash, a
/// partition) is noticed in seconds rather than at TCP's retransmission
/// timeout.
const SILENT_HEARTBEATS: u32 = 3;
/// The shortest such silence, whatever the heartbeat period: a busy hub
/// may answer a heartbeat late.
const MIN_SILENCE: Duration = Duration::from_secs(2);

/// Counts over every control session of a fleet.
#[derive(Debug, Default)]
pub(crate) struct SessionCounters {
    /// Welcomes received.
    pub sessions_opened: AtomicU64,
    /// Sessions welcomed and not yet ended.
    pub sessions_up: AtomicU64,
    /// Rejects received, before or after a welcome.
    pub rejects: AtomicU64,
    /// Commands received, known or not.
    pub commands_received: AtomicU64,
    /// Reboots carried out on the hub's command.
    pub reboots: AtomicU64,
    /// Attempts that failed before a welcome (no connection, no answer, bad answer).
    pub connect_failures: AtomicU64,
    /// Sessions dropped abruptly on purpose (an injected fault).
    pub session_drops: AtomicU64,
    /// Moves of a device to the next of its hubs.
    pub hub_moves: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What one device's control sessions need.
#[derive(Debug)]
pub(crate) struct SessionContext {
    /// The device's hello.
    pub template: HelloTemplate,
    /// The hubs' control addresses, primary first, then the failover hubs
    /// in order (at least one; shared by the fleet). Index `i` here is hub
    /// `i` of the UDP sender.
    pub hubs: Arc<[SocketAddr]>,
    /// How long a reboot keeps the device off the network.
    pub boot_pause: Duration,
    /// What the sessions change about the device's datagrams.
    pub control: Arc<DeviceControl>,
    /// Fleet-wide counts.
    pub counters: Arc<SessionCounters>,
    /// Wait this long before the first connection (staggered start).
    pub start_delay: Duration,
    /// The device's clock offset, in ms (hello and heartbeats).
    pub clock_skew_ms: i64,
    /// Probability, per heartbeat, of dropping the session abruptly.
    pub session_drop: f64,
    /// Seed of the session-drop draws (see [`crate::faults::injector_seed`]).
    pub seed: u64,
    /// The device's key: it says hello with a challenge and tags its
    /// datagrams (`None`: it presents the template's token).
    pub key: Option<DeviceKey>,
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// Cancelled; the device is done.
    Cancelled,
    /// The hub asked for a reboot; the connection is closed.
    Reboot,
    /// The device rebooted by itself (the sender already silenced it).
    DeviceRebooted,
    /// Refused, lost, closed or dropped; `stable` if it had worked for a
    /// while, `hub_failed` if the hub is to blame (no session could be
    /// opened, or it ended without the device asking): the device moves on.
    Closed { stable: bool, hub_failed: bool },
}

/// How serving a welcomed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServeEnd {
    /// Cancelled; `Bye` was sent.
    Cancelled,
    /// The hub asked for a reboot.
    Reboot,
    /// The device rebooted by itself: the connection is dropped as it is.
    DeviceRebooted,
    /// An injected drop: the connection is dropped as it is.
    Dropped,
    /// The hub refused the device's credentials after all.
    Refused,
    /// The hub closed it, rejected the device, went silent, or the
    /// connection failed.
    Lost,
}

/// Runs the device's control sessions, one after the other, until `cancel`.
pub(crate) async fn run_control_sessions(ctx: SessionContext, cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(ctx.start_delay) => {}
    }
    let mut rng = fastrand::Rng::new();
    let mut drops = Odds::new(ctx.session_drop, stream_seed(ctx.seed, Stream::SessionDrop));
    let mut own_reboots = ctx.control.watch_own_reboots();
    let mut backoff = Backoff::default();
    let mut config = ConfigStore::default();
    let mut hub = 0;
    loop {
        // Only a reboot during this attempt or session ends it.
        own_reboots.mark_unchanged();
        let mut session = Session {
            ctx: &ctx,
            hub,
            config: &mut config,
            drops: &mut drops,
            own_reboots: &mut own_reboots,
        };
        let mut delay = match session.connect_and_serve(&cancel).await {
            SessionEnd::Cancelled => return,
            SessionEnd::Reboot => {
                bump(&ctx.counters.reboots);
                ctx.control.request_reboot(ctx.boot_pause);
                backoff.reset();
                ctx.boot_pause
            }
            SessionEnd::DeviceRebooted => {
                backoff.reset();
                ctx.boot_pause
            }
            SessionEnd::Closed { stable, hub_failed } => {
                if stable {
                    backoff.reset();
                }
                if hub_failed {
                    hub = next_hub(&ctx, hub);
                }
                backoff.next_delay(&mut rng)
            }
        };
        // A random reboot while waiting: the boot pause starts over.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => break,
                _ = rebooted(&mut own_reboots) => delay = ctx.boot_pause,
            }
        }
    }
}

/// The hub after `hub` (round robin), counted as a move; `hub` itself if
/// the device knows no other.
fn next_hub(ctx: &SessionContext, hub: usize) -> usize {
    let count = ctx.hubs.len();
    if count < 2 {
        return hub;
    }
    let next = (hub + 1) % count;
    bump(&ctx.counters.hub_moves);
    tracing::info!(
        device = ctx.template.device_id(),
        from = ?ctx.hubs.get(hub),
        to = ?ctx.hubs.get(next),
        "moving to the next hub"
    );
    next
}

/// Completes at the device's next own reboot (never, if none can come).
async fn rebooted(own_reboots: &mut watch::Receiver<u64>) {
    if own_reboots.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One connection attempt and, if welcomed, its session.
struct Session<'a> {
    ctx: &'a SessionContext,
    /// Which of `ctx.hubs` to connect to.
    hub: usize,
    config: &'a mut ConfigStore,
    drops: &'a mut Odds,
    own_reboots: &'a mut watch::Receiver<u64>,
}

impl Session<'_> {
    /// One connection: hello, then serve until it ends. A hello under way
    /// is always answered before the device leaves (cancel, own reboot),
    /// so a session the hub opened is one the device counts.
    async fn connect_and_serve(&mut self, cancel: &CancellationToken) -> SessionEnd {
        let ctx = self.ctx;
        let device = ctx.template.device_id();
        let Some(&addr) = ctx.hubs.get(self.hub) else {
            tracing::error!(device, hub = self.hub, "no such hub");
            return SessionEnd::Closed {
                stable: false,
                hub_failed: true,
            };
        };
        let mut handshake = open_session(ctx, self.hub, addr);
        let handshake = tokio::select! {
            biased;
            done = &mut handshake => done,
            _ = cancel.cancelled() => {
                let done = tokio::time::timeout(HANDSHAKE_GRACE, handshake).await;
                if let Ok(Handshake::Welcome { mut conn, .. }) = done {
                    bump(&ctx.counters.sessions_opened);
                    if let Err(e) = send(&mut conn, DeviceMessage::Bye).await {
                        tracing::debug!(device, error = format!("{e:#}"), "could not say bye");
                    }
                    close(&mut conn).await;
                }
                return SessionEnd::Cancelled;
            }
        };
        // The device rebooted during the hello: gone right after it.
        let rebooted_meanwhile = self.own_reboots.has_changed().unwrap_or(false);
        let (mut conn, heartbeat) = match handshake {
            Handshake::Welcome {
                conn,
                session_id,
                heartbeat,
            } => {
                bump(&ctx.counters.sessions_opened);
                tracing::debug!(device, session_id, %addr, "control session opened");
                if rebooted_meanwhile {
                    self.own_reboots.mark_unchanged();
                    return SessionEnd::DeviceRebooted;
                }
                bump(&ctx.counters.sessions_up);
                (conn, heartbeat)
            }
            Handshake::Rejected { reason, detail } => {
                bump(&ctx.counters.rejects);
                tracing::warn!(device, ?reason, %detail, %addr, "the hub refused the hello");
                return SessionEnd::Closed {
                    stable: false,
                    hub_failed: !is_credential_refusal(reason),
                };
            }
            Handshake::Failed(e) => {
                bump(&ctx.counters.connect_failures);
                tracing::debug!(device, error = format!("{e:#}"), %addr, "no control session");
                return SessionEnd::Closed {
                    stable: false,
                    hub_failed: true,
                };
            }
        };
        let opened = Instant::now();
        let end = self.serve(&mut conn, heartbeat, cancel).await;
        match end {
            ServeEnd::Cancelled | ServeEnd::Reboot | ServeEnd::Refused | ServeEnd::Lost => {
                close(&mut conn).await
            }
            // Gone without a word: the connection is just dropped.
            ServeEnd::DeviceRebooted | ServeEnd::Dropped => {}
        }
        drop(conn);
        ctx.counters.sessions_up.fetch_sub(1, Ordering::Relaxed);
        let stable = opened.elapsed() >= STABLE_SESSION;
        match end {
            ServeEnd::Cancelled => SessionEnd::Cancelled,
            ServeEnd::Reboot => SessionEnd::Reboot,
            ServeEnd::DeviceRebooted => SessionEnd::DeviceRebooted,
            ServeEnd::Dropped | ServeEnd::Refused => SessionEnd::Closed {
                stable,
                hub_failed: false,
            },
            ServeEnd::Lost => SessionEnd::Closed {
                stable,
                hub_failed: true,
            },
        }
    }

    /// Heartbeats and answers commands until the session ends.
    async fn serve(
        &mut self,
        conn: &mut HubConnection,
        heartbeat: Duration,
        cancel: &CancellationToken,
    ) -> ServeEnd {
        let ctx = self.ctx;
        let device = ctx.template.device_id();
        let mut heartbeats = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Only a device that has somewhere else to go watches for a silent
        // hub (without failover hubs, sessions end as they always did).
        let longest_silence = (ctx.hubs.len() > 1)
            .then(|| heartbeat.saturating_mul(SILENT_HEARTBEATS).max(MIN_SILENCE));
        let mut last_heard = Instant::now();
        loop {
            let message = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    if let Err(e) = send(conn, DeviceMessage::Bye).await {
                        tracing::debug!(device, error = format!("{e:#}"), "could not say bye");
                    }
                    return ServeEnd::Cancelled;
                }
                _ = rebooted(self.own_reboots) => {
                    tracing::debug!(device, "rebooted by itself");
                    return ServeEnd::DeviceRebooted;
                }
                _ = heartbeats.tick() => {
                    if self.drops.happens() {
                        bump(&ctx.counters.session_drops);
                        tracing::debug!(device, "dropping the control session (injected)");
                        return ServeEnd::Dropped;
                    }
                    if longest_silence.is_some_and(|longest| last_heard.elapsed() > longest) {
                        tracing::info!(device, "the hub stopped answering; control session lost");
                        return ServeEnd::Lost;
                    }
                    let device_time_ms = skewed_ms(unix_ms(), ctx.clock_skew_ms);
                    let beat = DeviceMessage::Heartbeat { device_time_ms };
                    if let Err(e) = send(conn, beat).await {
                        tracing::debug!(device, error = format!("{e:#}"), "control session lost");
                        return ServeEnd::Lost;
                    }
                    continue;
                }
                frame = conn.next() => match frame {
                    None => {
                        tracing::debug!(device, "the hub closed the control session");
                        return ServeEnd::Lost;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(device, error = %e, "control session lost");
                        return ServeEnd::Lost;
                    }
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        message
                    }
                },
            };
            let (id, reply) = match message.message {
                DecodedHubMessage::Known(HubMessage::Command { id, body }) => {
                    (id, handle_command(self.config, &body))
                }
                DecodedHubMessage::UnknownCommand { id } => (id, unknown_command()),
                DecodedHubMessage::Known(HubMessage::HeartbeatAck { hub_time_ms }) => {
                    tracing::trace!(device, hub_time_ms, "heartbeat acknowledged");
                    continue;
                }
                DecodedHubMessage::Known(HubMessage::Reject { reason, detail }) => {
                    bump(&ctx.counters.rejects);
                    tracing::info!(device, ?reason, %detail, "the hub ended the control session");
                    if is_credential_refusal(reason) {
                        return ServeEnd::Refused;
                    }
                    return ServeEnd::Lost;
                }
                DecodedHubMessage::Known(
                    HubMessage::Welcome { .. }
                    | HubMessage::KeyedWelcome { .. }
                    | HubMessage::Challenge { .. },
                ) => {
                    tracing::debug!(device, "ignoring a handshake message after the handshake");
                    continue;
                }
            };
            bump(&ctx.counters.commands_received);
            if let Err(e) = carry_out(conn, ctx, id, &reply).await {
                tracing::debug!(device, error = format!("{e:#}"), "control session lost");
                return ServeEnd::Lost;
            }
            if reply.effect == CommandEffect::Reboot {
                tracing::info!(device, "rebooting");
                return ServeEnd::Reboot;
            }
        }
    }
}

/// Whether a reject refuses the device's credentials: every hub of a
/// cluster shares the fleet's, so moving would not help.
fn is_credential_refusal(reason: RejectReason) -> bool {
    reason == RejectReason::BadToken
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_control::FleetControls;
    use crate::fleet::{build_fleet, FleetSpec};

    #[test]
    fn a_session_future_stays_small() {
        // A fleet holds one per device: 10 000 devices at 25 KB (a hello
        // held inline) were 250 MB.
        let devices = build_fleet(&FleetSpec::default());
        let controls = FleetControls::new(&devices, false);
        let (Some(device), Some(control)) = (devices.first(), controls.devices().first()) else {
            panic!("a device");
        };
        let ctx = SessionContext {
            template: HelloTemplate::new(device, "t").expect("short token"),
            hubs: Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]),
            boot_pause: Duration::ZERO,
            control: control.clone(),
            counters: Arc::default(),
            start_delay: Duration::ZERO,
            clock_skew_ms: 0,
            session_drop: 0.0,
            key: None,
            seed: 0,
        };
        assert!(std::mem::size_of_val(&ctx) <= 512);
        let future = run_control_sessions(ctx, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 4_096, "{size} bytes");
    }
}
