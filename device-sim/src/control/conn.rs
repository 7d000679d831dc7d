//! One control connection to the hub, seen from the device: connecting with
//! the preamble, the hello and the hub's answer to it, sending a frame, and
//! closing cleanly. Each step has a deadline. The device's datagrams are
//! pointed at the hub being tried: a token device's at once, a keyed
//! device's once those tagged for its previous session are out.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::auth::{keyed_hello, verify_keyed_welcome, DatagramKey, NONCE_LEN};
use sensor_hub_protocol::codec::{FrameCodec, WithBody};
use sensor_hub_protocol::control::{
    DecodedHubMessage, DeviceMessage, HubMessage, RejectReason, Text, PREAMBLE,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::SessionContext;
use crate::faults::skewed_ms;
use crate::udp::unix_ms;

/// How long connecting to the hub may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the hub may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one frame (or the closing handshake) may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest heartbeat period, whatever the hub asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// Longest a keyed hello waits for the device's delayed datagrams to go
/// out: they wait at most the longest jitter.
const QUEUE_DRAIN_TIMEOUT: Duration = Duration::from_millis(crate::faults::MAX_JITTER_MS + 1_000);
/// Largest hub frame body accepted (hub frames are small).
const MAX_HUB_FRAME: usize = 4_096;
/// Starting size of a connection's read and write buffers (they grow when
/// needed): small, since a fleet holds one connection per device.
const CONNECTION_BUFFER: usize = 512;

/// A framed connection to the hub, seen from the device (hub frames keep
/// their body, which a keyed welcome's proof covers).
pub(super) type HubConnection =
    Framed<TcpStream, FrameCodec<WithBody<DecodedHubMessage>, DeviceMessage>>;

/// How a hello went.
pub(super) enum Handshake {
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

/// Connects to hub `hub` (of `ctx.hubs`) at `addr`, sends the preamble and
/// the hello, and waits for the answer. Boxed: a hello is about 6 KB
/// inline, and a fleet holds a session future per device; only the devices
/// connecting now pay for it.
pub(super) fn open_session(
    ctx: &SessionContext,
    hub: usize,
    addr: SocketAddr,
) -> BoxFuture<'_, Handshake> {
    Box::pin(handshake(ctx, hub, addr))
}

async fn handshake(ctx: &SessionContext, hub: usize, addr: SocketAddr) -> Handshake {
    if ctx.key.is_none() {
        // Untagged datagrams belong to no session: they go to the hub
        // being tried from now on.
        ctx.control.set_hub(hub);
    }
    let mut conn = match connect(addr).await {
        Ok(conn) => conn,
        Err(e) => return Handshake::Failed(e),
    };
    let device_time_ms = skewed_ms(unix_ms(), ctx.clock_skew_ms);
    let hello = ctx
        .template
        .hello(ctx.control.interval_ms(), device_time_ms);
    let Some(key) = ctx.key else {
        if let Err(e) = send(&mut conn, DeviceMessage::Hello(hello)).await {
            return Handshake::Failed(e.context("sending the preamble and hello"));
        }
        return match answer(&mut conn).await {
            Ok(answer) => welcomed(ctx, conn, answer.message),
            Err(e) => Handshake::Failed(e),
        };
    };
    // Keyed: challenge request, challenge, keyed hello, keyed welcome. The
    // old session key is given up first, and datagrams tagged with it that
    // still wait out their jitter go before the hub can replace it (see
    // `DeviceControl::hello_begins`).
    ctx.control.hello_begins();
    if tokio::time::timeout(QUEUE_DRAIN_TIMEOUT, ctx.control.queue_drained())
        .await
        .is_err()
    {
        tracing::debug!(
            device = ctx.template.device_id(),
            "saying hello before the delay line emptied"
        );
    }
    // Datagrams tagged for the old session went to its hub; the new
    // session's go to this one.
    ctx.control.set_hub(hub);
    if let Err(e) = send(&mut conn, DeviceMessage::ChallengeRequest).await {
        return Handshake::Failed(e.context("sending the preamble and challenge request"));
    }
    let hub_nonce = match answer(&mut conn).await {
        Ok(WithBody {
            message: DecodedHubMessage::Known(HubMessage::Challenge { nonce }),
            ..
        }) => nonce,
        Ok(other) => return welcomed(ctx, conn, other.message),
        Err(e) => return Handshake::Failed(e),
    };
    let mut device_nonce = [0u8; NONCE_LEN];
    if let Err(e) = getrandom::fill(&mut device_nonce) {
        return Handshake::Failed(anyhow::anyhow!("the random source failed: {e}"));
    }
    let mut scratch = vec![0u8; sensor_hub_protocol::control::MAX_FRAME_BODY + 2];
    let message = match keyed_hello(&hello, device_nonce, &key, &hub_nonce, &mut scratch) {
        Ok(message) => message,
        Err(e) => return Handshake::Failed(anyhow::anyhow!("encoding the keyed hello: {e}")),
    };
    drop(scratch);
    if let Err(e) = send(&mut conn, message).await {
        return Handshake::Failed(e.context("sending the keyed hello"));
    }
    let answer = match answer(&mut conn).await {
        Ok(answer) => answer,
        Err(e) => return Handshake::Failed(e),
    };
    if let DecodedHubMessage::Known(HubMessage::KeyedWelcome {
        session_id,
        heartbeat_ms,
        ..
    }) = answer.message
    {
        if !verify_keyed_welcome(&answer.body, &key, &device_nonce, &hub_nonce) {
            return Handshake::Failed(anyhow::anyhow!(
                "the hub's welcome does not prove it holds this device's key; not its hub"
            ));
        }
        ctx.control
            .session_up(Some(DatagramKey::derive(&key, &hub_nonce, &device_nonce)));
        return Handshake::Welcome {
            conn,
            session_id,
            heartbeat: Duration::from_millis(heartbeat_ms.into()).max(MIN_HEARTBEAT),
        };
    }
    welcomed(ctx, conn, answer.message)
}

/// The hub's next frame, within [`WELCOME_TIMEOUT`].
async fn answer(conn: &mut HubConnection) -> anyhow::Result<WithBody<DecodedHubMessage>> {
    match tokio::time::timeout(WELCOME_TIMEOUT, conn.next()).await {
        Err(_) => Err(anyhow::anyhow!("no answer to the hello in time")),
        Ok(None) => Err(anyhow::anyhow!("the hub closed the connection")),
        Ok(Some(Err(e))) => Err(anyhow::Error::new(e)),
        Ok(Some(Ok(answer))) => Ok(answer),
    }
}

/// The outcome of a token hello's answer (or of an unexpected answer).
fn welcomed(ctx: &SessionContext, conn: HubConnection, answer: DecodedHubMessage) -> Handshake {
    if let DecodedHubMessage::Known(HubMessage::Welcome { .. }) = &answer {
        ctx.control.session_up(None);
    }
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
    let mut conn = Framed::with_capacity(stream, FrameCodec::new(MAX_HUB_FRAME), CONNECTION_BUFFER);
    conn.write_buffer_mut().extend_from_slice(&PREAMBLE);
    Ok(conn)
}

/// Sends one frame, giving up after [`SEND_TIMEOUT`]. Boxed, as
/// [`open_session`] is: a [`DeviceMessage`] is as large as a hello.
pub(super) fn send(
    conn: &mut HubConnection,
    message: DeviceMessage,
) -> BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        tokio::time::timeout(SEND_TIMEOUT, conn.send(message))
            .await
            .context("sending to the hub timed out")?
            .context("sending to the hub")
    })
}

/// Ends the connection cleanly: flushes, then shuts down the write side.
pub(super) async fn close(conn: &mut HubConnection) {
    let _ = tokio::time::timeout(SEND_TIMEOUT, conn.close()).await;
}
