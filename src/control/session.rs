//! One control connection, owned by one task: the handshake (preamble,
//! hello, token) under a deadline, then frames both ways until the device
//! leaves, goes idle, breaks the protocol, is replaced, or the hub stops.
//! Every decision about the device is the registry's; this module moves
//! bytes and timers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::auth::{
    keyed_welcome, verify_keyed_hello, DatagramKey, DeviceKey, Nonce, NONCE_LEN,
};
use sensor_hub_protocol::codec::{CodecError, FrameCodec, WithBody};
use sensor_hub_protocol::control::{
    check_preamble, ControlError, DeviceMessage, Hello, HubMessage, RejectReason, PREAMBLE,
};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Framed;

use super::{reject, CloseReason, ControlContext, HubFramed};
use crate::core::SessionMessage;

/// Wraps a connection in the control frame codec.
pub fn framed(ctx: &ControlContext, stream: TcpStream) -> HubFramed {
    Framed::new(stream, FrameCodec::new(ctx.config.max_frame_bytes))
}

fn frame_error(e: &CodecError) -> CloseReason {
    match e {
        CodecError::Protocol(ControlError::Oversized { .. }) => CloseReason::OversizedFrame,
        CodecError::Protocol(_) => CloseReason::UndecodableFrame,
        CodecError::Io(_) => CloseReason::IoError,
    }
}

/// What a successful keyed hello leaves for the welcome and the session.
struct Keyed {
    key: DeviceKey,
    hub_nonce: Nonce,
    device_nonce: Nonce,
}

/// Serves connection `id`; returns why it ended.
pub async fn serve(
    ctx: &ControlContext,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> CloseReason {
    let evicted = ctx.guard.begin_handshake(id);
    let handshake = tokio::select! {
        handshake = handshake(ctx, stream, peer) => handshake,
        _ = evicted.cancelled() => Err(CloseReason::HandshakeEvicted),
        _ = ctx.cancel.cancelled() => Err(CloseReason::Shutdown),
    };
    ctx.guard.end_handshake(id);
    let (mut framed, hello, keyed) = match handshake {
        Ok(done) => done,
        Err(reason) => return reason,
    };

    // Room for every command a device may have in flight, plus a close.
    let (tx, rx) = mpsc::channel(ctx.max_in_flight.saturating_add(2));
    let datagram_key = keyed
        .as_ref()
        .map(|k| DatagramKey::derive(&k.key, &k.hub_nonce, &k.device_nonce));
    let opened = ctx
        .core
        .open_session(&hello, tx, datagram_key, ctx.clock.now());
    let session = match opened {
        Ok(session) => session,
        Err(RejectReason::TooSoon) => {
            let wait_s = ctx.config.min_replace_interval_ms.div_ceil(1_000);
            let detail = format!(
                "device {} has a session that started moments ago; retry in {wait_s} s",
                hello.device_id
            );
            reject(&mut framed, RejectReason::TooSoon, &detail).await;
            return CloseReason::TooSoon;
        }
        Err(reason) => {
            reject(
                &mut framed,
                reason,
                "the hub tracks limits.max_devices devices",
            )
            .await;
            return CloseReason::TooManyDevices;
        }
    };
    tracing::info!(%peer, device = hello.device_id, name = %hello.name, session, keyed = keyed.is_some(), "control session opened");
    let hub_time_ms = ctx.clock.now().wall_ms;
    let heartbeat_ms = u32::try_from(ctx.config.heartbeat_interval_ms).unwrap_or(u32::MAX);
    let welcome = match &keyed {
        Some(k) => keyed_welcome(
            session,
            hub_time_ms,
            heartbeat_ms,
            &k.key,
            &k.device_nonce,
            &k.hub_nonce,
        ),
        None => HubMessage::Welcome {
            session_id: session,
            hub_time_ms,
            heartbeat_ms,
        },
    };
    let reason = match framed.send(welcome).await {
        Ok(()) => run_session(ctx, &mut framed, hello.device_id, rx).await,
        Err(_) => CloseReason::IoError,
    };
    ctx.core
        .close_session(hello.device_id, session, ctx.clock.now());
    tracing::info!(%peer, device = hello.device_id, session, reason = reason.name(), "control session closed");
    reason
}

/// Reads the next frame of the handshake; a frame that is not a valid
/// message is answered as a bad hello.
async fn next_frame(
    framed: &mut HubFramed,
    deadline: Instant,
) -> Result<WithBody<DeviceMessage>, CloseReason> {
    match timeout_at(deadline, framed.next()).await {
        Err(_) => Err(CloseReason::HandshakeTimeout),
        Ok(None) => Err(CloseReason::PeerClosed),
        Ok(Some(Err(e))) => {
            let reason = frame_error(&e);
            if reason == CloseReason::UndecodableFrame {
                reject(
                    framed,
                    RejectReason::BadHello,
                    "the frame is not a valid v1 hello",
                )
                .await;
                return Err(CloseReason::BadHello);
            }
            Err(reason)
        }
        Ok(Some(Ok(frame))) => Ok(frame),
    }
}

/// Preamble, then a token hello, or a challenge and a keyed hello, all
/// within `control.handshake_timeout_ms`.
async fn handshake(
    ctx: &ControlContext,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Result<(HubFramed, Hello, Option<Keyed>), CloseReason> {
    let config = &ctx.config;
    let deadline = Instant::now() + Duration::from_millis(config.handshake_timeout_ms);

    let mut preamble = [0u8; PREAMBLE.len()];
    match timeout_at(deadline, stream.read_exact(&mut preamble)).await {
        Err(_) => return Err(CloseReason::HandshakeTimeout),
        Ok(Err(_)) => return Err(CloseReason::PeerClosed),
        Ok(Ok(_)) => {}
    }
    let mut framed = framed(ctx, stream);
    match check_preamble(preamble) {
        Ok(()) => {}
        Err(ControlError::BadVersion(v)) => {
            let detail = format!(
                "control version {v} is not supported; this hub speaks {}",
                PREAMBLE[1]
            );
            reject(&mut framed, RejectReason::UnsupportedVersion, &detail).await;
            return Err(CloseReason::UnsupportedVersion);
        }
        Err(_) => return Err(CloseReason::BadPreamble),
    }

    let (hello, keyed) = match next_frame(&mut framed, deadline).await?.message {
        DeviceMessage::Hello(hello) => (hello, None),
        DeviceMessage::ChallengeRequest => {
            let mut hub_nonce = [0u8; NONCE_LEN];
            if getrandom::fill(&mut hub_nonce).is_err() {
                tracing::error!(
                    "the operating system's random source failed; cannot challenge a device"
                );
                reject(
                    &mut framed,
                    RejectReason::ShuttingDown,
                    "the hub cannot make a challenge now",
                )
                .await;
                return Err(CloseReason::IoError);
            }
            if framed
                .send(HubMessage::Challenge { nonce: hub_nonce })
                .await
                .is_err()
            {
                return Err(CloseReason::IoError);
            }
            let frame = next_frame(&mut framed, deadline).await?;
            let DeviceMessage::KeyedHello(keyed) = frame.message else {
                reject(
                    &mut framed,
                    RejectReason::BadHello,
                    "after a challenge, the next frame must be a keyed hello",
                )
                .await;
                return Err(CloseReason::BadHello);
            };
            if !keyed.hello.token.is_empty() {
                reject(
                    &mut framed,
                    RejectReason::BadHello,
                    "a keyed hello must not carry a token",
                )
                .await;
                return Err(CloseReason::BadHello);
            }
            let device_nonce = keyed.device_nonce;
            (keyed.hello, Some((hub_nonce, device_nonce, frame.body)))
        }
        _ => {
            reject(
                &mut framed,
                RejectReason::BadHello,
                "the first frame must be a hello or a challenge request",
            )
            .await;
            return Err(CloseReason::BadHello);
        }
    };
    if let Err(problem) = check_hello(&hello) {
        reject(&mut framed, RejectReason::BadHello, &problem).await;
        return Err(CloseReason::BadHello);
    }
    let now_ms = ctx.clock.now().mono_ms;
    if let Err(wait_ms) = ctx.guard.check(peer.ip(), now_ms) {
        let detail = format!(
            "hello for device {} not checked: too many bad tokens from this address; retry in {} s",
            hello.device_id,
            wait_ms.div_ceil(1_000)
        );
        reject(&mut framed, RejectReason::BadToken, &detail).await;
        return Err(CloseReason::Throttled);
    }
    let (keyring, _) = ctx.devices.refresh(now_ms, false);
    let device_key = keyring.key(hello.device_id).copied();
    let verdict = match (&keyed, device_key) {
        (Some((hub_nonce, device_nonce, body)), Some(key)) => {
            if verify_keyed_hello(body, &key, hub_nonce) {
                Ok(Some(Keyed {
                    key,
                    hub_nonce: *hub_nonce,
                    device_nonce: *device_nonce,
                }))
            } else {
                Err(format!(
                    "the key proof is not valid for device {}",
                    hello.device_id
                ))
            }
        }
        (Some(_), None) => Err(format!(
            "device {} has no key on this hub; adopt it with `sensor-hub device add --id {}`",
            hello.device_id, hello.device_id
        )),
        (None, Some(_)) => Err(format!(
            "device {} has a key: it must prove it (challenge request), not send a token",
            hello.device_id
        )),
        (None, None) if ctx.tokens.admits(hello.device_id, &hello.token) => Ok(None),
        (None, None) => Err(format!(
            "the token is not valid for device {}",
            hello.device_id
        )),
    };
    match verdict {
        Ok(keyed) => {
            ctx.guard.succeeded(peer.ip());
            Ok((framed, hello, keyed))
        }
        Err(detail) => {
            ctx.guard.failed(
                peer.ip(),
                hello.device_id,
                now_ms,
                &ctx.metrics.log_lines_left_out,
            );
            reject(&mut framed, RejectReason::BadToken, &detail).await;
            Err(CloseReason::BadToken)
        }
    }
}

/// Checks what the types cannot: sensor channels are unique.
fn check_hello(hello: &Hello) -> Result<(), String> {
    let mut seen = [false; 256];
    for sensor in &hello.sensors {
        let slot = &mut seen[usize::from(sensor.channel)];
        if *slot {
            return Err(format!(
                "sensor channel {} is declared twice",
                sensor.channel
            ));
        }
        *slot = true;
    }
    Ok(())
}

async fn run_session(
    ctx: &ControlContext,
    framed: &mut HubFramed,
    device: u32,
    mut outbound: mpsc::Receiver<SessionMessage>,
) -> CloseReason {
    let idle = Duration::from_millis(ctx.config.idle_timeout_ms);
    let mut idle_deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                reject(framed, RejectReason::ShuttingDown, "the hub is shutting down").await;
                return CloseReason::Shutdown;
            }
            message = outbound.recv() => match message {
                Some(SessionMessage::Command { id, body }) => {
                    if framed.send(HubMessage::Command { id, body }).await.is_err() {
                        return CloseReason::IoError;
                    }
                }
                Some(SessionMessage::Close(RejectReason::Replaced)) => {
                    reject(framed, RejectReason::Replaced, "a newer session of this device replaced this one").await;
                    return CloseReason::Replaced;
                }
                Some(SessionMessage::Close(reason)) => {
                    let detail = "the owner forgot this device or changed its key; say hello again with its current credential";
                    reject(framed, reason, detail).await;
                    return CloseReason::Revoked;
                }
                None => return CloseReason::Shutdown,
            },
            frame = timeout_at(idle_deadline, framed.next()) => {
                let message = match frame {
                    Err(_) => return CloseReason::IdleTimeout,
                    Ok(None) => return CloseReason::PeerClosed,
                    Ok(Some(Err(e))) => return frame_error(&e),
                    Ok(Some(Ok(frame))) => frame.message,
                };
                idle_deadline = Instant::now() + idle;
                if let Some(reason) = handle(ctx, framed, device, message).await {
                    return reason;
                }
            }
        }
    }
}

/// Applies one frame from the device; `Some` ends the session.
async fn handle(
    ctx: &ControlContext,
    framed: &mut HubFramed,
    device: u32,
    message: DeviceMessage,
) -> Option<CloseReason> {
    let now = ctx.clock.now();
    match message {
        DeviceMessage::Heartbeat { device_time_ms } => {
            ctx.core.heartbeat(device, Some(device_time_ms), now);
            let ack = HubMessage::HeartbeatAck {
                hub_time_ms: now.wall_ms,
            };
            if framed.send(ack).await.is_err() {
                return Some(CloseReason::IoError);
            }
        }
        DeviceMessage::CommandAck { id } => ctx.core.command_acked(device, id, now),
        DeviceMessage::CommandResult {
            id,
            outcome,
            detail,
        } => ctx
            .core
            .command_result(device, id, outcome, detail.map(|d| d.to_string()), now),
        DeviceMessage::Bye => return Some(CloseReason::PeerClosed),
        DeviceMessage::Hello(_)
        | DeviceMessage::ChallengeRequest
        | DeviceMessage::KeyedHello(_) => {
            reject(
                framed,
                RejectReason::BadHello,
                "hello is only valid as the first frame",
            )
            .await;
            return Some(CloseReason::UndecodableFrame);
        }
    }
    None
}
