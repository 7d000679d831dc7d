//! Keyed sessions for the authenticated ingest scenario: each bench device
//! proves its key in a keyed hello (challenge request, challenge, keyed
//! hello, keyed welcome whose proof is checked) and keeps the session's
//! datagram key. The connections are closed afterwards: the hub keeps a
//! session key until the device's next hello, so the sender tags
//! datagrams with it while no control traffic runs beside the ingest.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::auth::{keyed_hello, verify_keyed_welcome, DatagramKey, NONCE_LEN};
use sensor_hub_protocol::codec::{FrameCodec, WithBody};
use sensor_hub_protocol::control::{
    fit, DecodedHubMessage, DeviceMessage, Hello, HubMessage, Text, MAX_FRAME_BODY, PREAMBLE,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::keys::{device_key, KeySeed};

/// How long one step of a handshake may take.
const STEP: Duration = Duration::from_secs(5);

type Conn = Framed<TcpStream, FrameCodec<WithBody<DecodedHubMessage>, DeviceMessage>>;

async fn answer(conn: &mut Conn) -> anyhow::Result<WithBody<DecodedHubMessage>> {
    match tokio::time::timeout(STEP, conn.next()).await {
        Err(_) => bail!("the hub did not answer in time"),
        Ok(None) => bail!("the hub closed the connection"),
        Ok(Some(frame)) => Ok(frame?),
    }
}

/// One device's keyed hello; its session's datagram key.
async fn session(control: SocketAddr, id: u32, seed: &KeySeed) -> anyhow::Result<DatagramKey> {
    let key = device_key(seed, id);
    let mut stream = TcpStream::connect(control)
        .await
        .with_context(|| format!("connecting to {control}"))?;
    stream.write_all(&PREAMBLE).await?;
    let mut conn: Conn = Framed::new(stream, FrameCodec::new(MAX_FRAME_BODY));
    conn.send(DeviceMessage::ChallengeRequest).await?;
    let hub_nonce = match answer(&mut conn).await?.message {
        DecodedHubMessage::Known(HubMessage::Challenge { nonce }) => nonce,
        other => bail!("expected a challenge, the hub sent {other:?}"),
    };
    let mut device_nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut device_nonce).map_err(|e| anyhow!("the random source failed: {e}"))?;
    let hello = Hello {
        device_id: id,
        name: fit(&format!("bench-{id}")),
        firmware: fit(crate::hello::FIRMWARE),
        token: Text::new(),
        interval_ms: 0,
        device_time_ms: crate::udp::unix_ms(),
        sensors: Default::default(),
    };
    let mut scratch = vec![0u8; MAX_FRAME_BODY + 2];
    let message = keyed_hello(&hello, device_nonce, &key, &hub_nonce, &mut scratch)
        .map_err(|e| anyhow!("encoding the keyed hello: {e}"))?;
    conn.send(message).await?;
    let welcome = answer(&mut conn).await?;
    match welcome.message {
        DecodedHubMessage::Known(HubMessage::KeyedWelcome { .. })
            if verify_keyed_welcome(&welcome.body, &key, &device_nonce, &hub_nonce) =>
        {
            let _ = conn.send(DeviceMessage::Bye).await;
            Ok(DatagramKey::derive(&key, &hub_nonce, &device_nonce))
        }
        other => bail!("device {id}: expected a keyed welcome with a valid proof, got {other:?}"),
    }
}

/// Keyed sessions for devices 1..=devices of the fleet of `seed`; the
/// session keys in id order.
pub async fn sessions(
    control: SocketAddr,
    devices: u32,
    seed: &KeySeed,
) -> anyhow::Result<Vec<DatagramKey>> {
    let mut keys = Vec::with_capacity(devices as usize);
    for id in 1..=devices {
        keys.push(
            session(control, id, seed)
                .await
                .with_context(|| format!("keyed hello of bench device {id}"))?,
        );
    }
    Ok(keys)
}
