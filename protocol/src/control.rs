//! The TCP control channel, version 1: connection preamble, frame layout,
//! and the messages in both directions, as pure functions on byte slices.
//!
//! A connection starts with the device sending [`PREAMBLE`]. After that,
//! both sides exchange frames: a 2-byte big-endian body length, then the
//! postcard body. The first frame from the device must be
//! [`DeviceMessage::Hello`]; the hub answers [`HubMessage::Welcome`] or
//! [`HubMessage::Reject`]. Strings and lists are bounded (heapless), so a
//! decoder needs no allocator and an over-long field is a decode error.

use core::fmt;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::auth::{Nonce, Proof};
use crate::datagram::{Channel, DeviceId, MAGIC};

/// Control protocol version spoken by this crate.
pub const CONTROL_VERSION: u8 = 1;
/// First bytes a device sends on a new connection: magic, version.
pub const PREAMBLE: [u8; 2] = [MAGIC, CONTROL_VERSION];
/// Length of a frame header (big-endian body length).
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest body a frame header can announce.
pub const MAX_FRAME_BODY: usize = u16::MAX as usize;
/// Most sensors a device may declare.
pub const MAX_SENSORS: usize = 64;

/// Capacity of a [`Name`], bytes.
pub const NAME_LEN: usize = 32;
/// Capacity of a [`Text`], bytes.
pub const TEXT_LEN: usize = 128;
/// Capacity of a sensor unit, bytes.
pub const UNIT_LEN: usize = 16;

/// A bounded short text (names, firmware versions, config keys).
pub type Name = String<NAME_LEN>;
/// A bounded longer text (tokens, config values, details, reasons).
pub type Text = String<TEXT_LEN>;

/// `text` cut at a character boundary to fit `N` bytes, for senders that
/// prefer a shortened name or detail to an unsendable frame.
pub fn fit<const N: usize>(text: &str) -> String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    String::try_from(&text[..end]).unwrap_or_default()
}

/// Type of a sensor's values; matches [`crate::Value`]'s variants.
/// (Names are snake_case in text formats; postcard uses the index.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// `Value::F32`.
    F32,
    /// `Value::I32`.
    I32,
    /// `Value::Bool`.
    Bool,
}

/// A sensor as the device describes it in its hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorInfo {
    /// Channel of its readings in datagrams.
    pub channel: Channel,
    /// Human name, e.g. "temperature".
    pub name: Name,
    /// Unit, e.g. "°C"; empty for none.
    pub unit: String<UNIT_LEN>,
    /// Value type.
    pub kind: ValueKind,
    /// Lowest plausible value, if known.
    pub min: Option<f32>,
    /// Highest plausible value, if known.
    pub max: Option<f32>,
}

/// The first frame of every session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The id the device uses in its datagrams.
    pub device_id: DeviceId,
    /// Human name.
    pub name: Name,
    /// Firmware version text.
    pub firmware: Name,
    /// Credential: the device's own token or the fleet token.
    pub token: Text,
    /// How often the device sends a datagram, in ms (0: it sends none).
    pub interval_ms: u32,
    /// Device clock, Unix ms, when it sent this.
    pub device_time_ms: u64,
    /// Its sensors.
    pub sensors: Vec<SensorInfo, MAX_SENSORS>,
}

/// A hello proven with the device's key instead of a token: the answer to
/// the hub's [`HubMessage::Challenge`]. See [`crate::auth`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedHello {
    /// The hello; its `token` must be empty (the hub refuses a keyed hello
    /// that carries one: the key is the credential).
    pub hello: Hello,
    /// The device's fresh random nonce for this session.
    pub device_nonce: Nonce,
    /// HMAC proof over the frame body before it (last on the wire).
    pub proof: Proof,
}

/// What a device reports about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done.
    Succeeded,
    /// Not done (unknown command, bad argument, device error).
    Failed,
}

/// Device → hub.
// Hello is large (64 bounded sensors) and the others small; boxing it would
// need an allocator, and it is sent once per session.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceMessage {
    /// Identify and authenticate; must be the first frame.
    Hello(Hello),
    /// Still here. Carries the device clock for offset estimation.
    Heartbeat {
        /// Device clock, Unix ms.
        device_time_ms: u64,
    },
    /// The command arrived and will be carried out.
    CommandAck {
        /// Hub-assigned command id.
        id: u32,
    },
    /// The command finished.
    CommandResult {
        /// Hub-assigned command id.
        id: u32,
        /// How it went.
        outcome: Outcome,
        /// Optional explanation.
        detail: Option<Text>,
    },
    /// The device closes the session on purpose.
    Bye,
    /// Instead of a hello: the device will prove its key; the hub answers
    /// [`HubMessage::Challenge`].
    ChallengeRequest,
    /// The keyed hello, after the challenge.
    KeyedHello(KeyedHello),
}

/// What the hub asks a device to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Send a datagram every `ms` milliseconds.
    SetInterval {
        /// New report interval.
        ms: u32,
    },
    /// Make yourself noticed (blink, beep).
    Identify,
    /// Restart; the sequence number restarts at 0.
    Reboot,
    /// Store a configuration value.
    SetConfig {
        /// Key.
        key: Name,
        /// Value.
        value: Text,
    },
    /// A device-specific command, by name, with free-form arguments.
    Custom {
        /// Command name.
        name: Name,
        /// Arguments (the hub passes JSON text).
        args: Text,
    },
}

/// Why the hub refused or ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The preamble named a control version the hub does not speak.
    UnsupportedVersion,
    /// The first frame was not a valid hello.
    BadHello,
    /// Token missing or wrong for this device id.
    BadToken,
    /// The hub tracks as many devices as it may.
    TooManyDevices,
    /// The hub has as many control connections as it may.
    TooManyConnections,
    /// A newer session of the same device replaced this one.
    Replaced,
    /// The hub is shutting down.
    ShuttingDown,
    /// The device's session was replaced moments ago; the detail says when
    /// to retry (two devices sharing an id or a key show up as this).
    TooSoon,
}

/// Hub → device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HubMessage {
    /// Session accepted.
    Welcome {
        /// Identifies this session in the hub's logs.
        session_id: u64,
        /// Hub clock, Unix ms, so the device can estimate its offset.
        hub_time_ms: u64,
        /// Send a heartbeat at least this often.
        heartbeat_ms: u32,
    },
    /// Session refused or ended; the hub closes the connection after it.
    Reject {
        /// Why.
        reason: RejectReason,
        /// Human explanation.
        detail: Text,
    },
    /// Carry out a command and report with `CommandAck` and `CommandResult`.
    /// The id comes first on the wire so a device that cannot decode the
    /// body (a newer command) can still answer it as failed.
    Command {
        /// Hub-assigned id.
        id: u32,
        /// What to do.
        body: CommandBody,
    },
    /// Answer to a heartbeat, with the hub clock.
    HeartbeatAck {
        /// Hub clock, Unix ms.
        hub_time_ms: u64,
    },
    /// Answer to [`DeviceMessage::ChallengeRequest`]: the hub's fresh
    /// nonce, which the keyed hello's proof covers.
    Challenge {
        /// The hub's nonce for this session.
        nonce: Nonce,
    },
    /// Keyed session accepted; the proof shows the hub holds the device's
    /// key (a device must check it with
    /// [`crate::auth::verify_keyed_welcome`] and close the connection if it
    /// fails).
    KeyedWelcome {
        /// Identifies this session in the hub's logs.
        session_id: u64,
        /// Hub clock, Unix ms.
        hub_time_ms: u64,
        /// Send a heartbeat at least this often.
        heartbeat_ms: u32,
        /// HMAC proof over the frame body before it (last on the wire).
        proof: Proof,
    },
}

/// Wire tag of [`HubMessage::Command`] (its variant index).
const COMMAND_TAG: u32 = 2;

/// What a device decoded from a hub frame.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedHubMessage {
    /// A message this crate knows.
    Known(HubMessage),
    /// A command whose body this crate cannot decode (newer hub): answer
    /// it with a failed `CommandResult`.
    UnknownCommand {
        /// Its id.
        id: u32,
    },
}

/// Why a control frame or preamble was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlError {
    /// A frame announced a body longer than the receiver's limit.
    Oversized {
        /// Announced body length.
        len: usize,
    },
    /// The body is not a valid message.
    Undecodable,
    /// The preamble's first byte is not the magic byte.
    BadMagic,
    /// The preamble names another control version.
    BadVersion(u8),
    /// The output buffer is too small for the frame.
    BufferTooSmall,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Oversized { len } => write!(f, "frame of {len} bytes exceeds the limit"),
            ControlError::Undecodable => write!(f, "frame body is not a valid v1 message"),
            ControlError::BadMagic => write!(f, "not a sensor-hub control connection"),
            ControlError::BadVersion(v) => {
                write!(
                    f,
                    "control version {v} not supported (this side speaks {CONTROL_VERSION})"
                )
            }
            ControlError::BufferTooSmall => write!(f, "output buffer too small for the frame"),
        }
    }
}

impl core::error::Error for ControlError {}

/// Checks a connection preamble.
pub fn check_preamble(bytes: [u8; 2]) -> Result<(), ControlError> {
    match bytes {
        [m, _] if m != MAGIC => Err(ControlError::BadMagic),
        [_, v] if v != CONTROL_VERSION => Err(ControlError::BadVersion(v)),
        _ => Ok(()),
    }
}

/// Body length announced by a frame header, checked against `max_body`
/// before anything is allocated for it.
pub fn frame_body_len(
    header: [u8; FRAME_HEADER_LEN],
    max_body: usize,
) -> Result<usize, ControlError> {
    let len = usize::from(u16::from_be_bytes(header));
    if len > max_body {
        Err(ControlError::Oversized { len })
    } else {
        Ok(len)
    }
}

/// Writes `message` as a whole frame (header and body) into `buf` and
/// returns the frame.
pub fn encode_frame<'b, M: Serialize>(
    message: &M,
    buf: &'b mut [u8],
) -> Result<&'b [u8], ControlError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(ControlError::BufferTooSmall);
    }
    let body_len = postcard::to_slice(message, &mut buf[FRAME_HEADER_LEN..])
        .map_err(|_| ControlError::BufferTooSmall)?
        .len();
    let header = u16::try_from(body_len).map_err(|_| ControlError::BufferTooSmall)?;
    buf[..FRAME_HEADER_LEN].copy_from_slice(&header.to_be_bytes());
    Ok(&buf[..FRAME_HEADER_LEN + body_len])
}

fn decode_exact<'de, M: Deserialize<'de>>(body: &'de [u8]) -> Result<M, ControlError> {
    match postcard::take_from_bytes::<M>(body) {
        Ok((message, [])) => Ok(message),
        _ => Err(ControlError::Undecodable),
    }
}

/// Decodes the body of a device → hub frame.
pub fn decode_device_message(body: &[u8]) -> Result<DeviceMessage, ControlError> {
    decode_exact(body)
}

/// Decodes the body of a hub → device frame, keeping the id of commands
/// whose body is unknown to this version.
pub fn decode_hub_message(body: &[u8]) -> Result<DecodedHubMessage, ControlError> {
    if let Ok(message) = decode_exact::<HubMessage>(body) {
        return Ok(DecodedHubMessage::Known(message));
    }
    let (tag, rest) =
        postcard::take_from_bytes::<u32>(body).map_err(|_| ControlError::Undecodable)?;
    if tag != COMMAND_TAG {
        return Err(ControlError::Undecodable);
    }
    let (id, _) = postcard::take_from_bytes::<u32>(rest).map_err(|_| ControlError::Undecodable)?;
    Ok(DecodedHubMessage::UnknownCommand { id })
}

#[cfg(test)]
mod tests;
