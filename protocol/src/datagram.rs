//! The UDP datagram format, version 1: layout, limits, encoder and decoder.
//!
//! A datagram is `[MAGIC, VERSION]` followed by the postcard encoding of
//! [`Datagram`]. The prefix lets a receiver reject foreign traffic after
//! looking at two bytes; the version byte lets later formats coexist with
//! this one on the same port. Decoding never allocates and never panics:
//! every malformed input maps to one [`DecodeError`] variant, which the hub
//! counts as the drop reason.

use core::fmt;

use serde::{Deserialize, Serialize};

/// First byte of every datagram. Chosen outside ASCII and outside the first
/// bytes of common UDP protocols on LANs (DNS ids aside, which are random).
pub const MAGIC: u8 = 0xB5;
/// Datagram format version described by this module.
pub const VERSION: u8 = 1;
/// Largest datagram a v1 receiver accepts, prefix included. Any valid v1
/// datagram (64 readings of the widest kind plus an auth tag) fits in it.
pub const MAX_DATAGRAM_LEN: usize = 512;
/// Most readings one datagram may carry.
pub const MAX_READINGS: usize = 64;
/// Length of the optional per-device authentication tag.
pub const AUTH_TAG_LEN: usize = 16;

/// Numeric device id, unique within a fleet. Small ids encode shorter.
pub type DeviceId = u32;
/// Sensor channel within a device (0..=255).
pub type Channel = u8;
/// Authentication tag bytes (reserved in v1; filled by a later revision).
pub type AuthTag = [u8; AUTH_TAG_LEN];
/// The readings of one datagram, stored inline.
pub type Readings = heapless::Vec<Reading, MAX_READINGS>;

/// A typed sensor value. The variant index is the wire tag: `F32` = 0,
/// `I32` = 1, `Bool` = 2. New kinds are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// 32-bit float, 4 bytes little-endian on the wire.
    F32(f32),
    /// Signed integer, zigzag varint on the wire (1..=5 bytes).
    I32(i32),
    /// Boolean, one byte 0 or 1.
    Bool(bool),
}

/// One sensor reading: which channel, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Sensor channel on the device.
    pub channel: Channel,
    /// The measured value.
    pub value: Value,
}

/// The body of a v1 datagram, in wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datagram {
    /// Sender's device id (varint).
    pub device_id: DeviceId,
    /// Per-device sequence number, +1 per datagram, wrapping at `u32::MAX`
    /// and restarting at 0 when the device reboots (varint).
    pub seq: u32,
    /// Low 32 bits of the device's clock in milliseconds since the Unix
    /// epoch, fixed 4 bytes little-endian. See [`restore_time_ms`].
    #[serde(with = "postcard::fixint::le")]
    pub time_ms: u32,
    /// One or more readings (zero is allowed: a keep-alive).
    pub readings: Readings,
    /// Reserved for per-device authentication; `None` in v1 senders.
    pub auth_tag: Option<AuthTag>,
}

/// Why a byte slice is not a valid v1 datagram. Each variant is one drop
/// reason in the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Longer than [`MAX_DATAGRAM_LEN`].
    Oversized,
    /// Ends before the datagram does (including shorter than the prefix).
    Truncated,
    /// First byte is not [`MAGIC`]: not our traffic.
    BadMagic,
    /// Our magic, but a version this decoder does not speak.
    BadVersion(u8),
    /// Prefix fine, body not a valid v1 encoding (unknown value tag, bad
    /// varint, more than [`MAX_READINGS`] readings, trailing bytes…).
    Undecodable,
}

impl DecodeError {
    /// Every reason, in a fixed order (for counters indexed by reason).
    pub const ALL: [DecodeError; 5] = [
        DecodeError::Oversized,
        DecodeError::Truncated,
        DecodeError::BadMagic,
        DecodeError::BadVersion(0),
        DecodeError::Undecodable,
    ];

    /// Stable snake_case name, used as a metrics label.
    pub const fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized => "oversized",
            DecodeError::Truncated => "truncated",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::Undecodable => "undecodable",
        }
    }

    /// Position of this reason in [`DecodeError::ALL`].
    pub const fn index(&self) -> usize {
        match self {
            DecodeError::Oversized => 0,
            DecodeError::Truncated => 1,
            DecodeError::BadMagic => 2,
            DecodeError::BadVersion(_) => 3,
            DecodeError::Undecodable => 4,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Oversized => write!(f, "datagram longer than {MAX_DATAGRAM_LEN} bytes"),
            DecodeError::Truncated => write!(f, "datagram ends early"),
            DecodeError::BadMagic => write!(f, "not a sensor-hub datagram (bad magic byte)"),
            DecodeError::BadVersion(v) => {
                write!(
                    f,
                    "datagram version {v} not supported (this hub speaks {VERSION})"
                )
            }
            DecodeError::Undecodable => write!(f, "datagram body is not valid v{VERSION}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a datagram could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small; [`MAX_DATAGRAM_LEN`] always suffices.
    BufferTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => write!(f, "output buffer too small for the datagram"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Encodes `datagram` into `buf` and returns the written prefix of `buf`.
pub fn encode_datagram<'b>(
    datagram: &Datagram,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    if buf.len() < 2 {
        return Err(EncodeError::BufferTooSmall);
    }
    buf[0] = MAGIC;
    buf[1] = VERSION;
    let body_len = postcard::to_slice(datagram, &mut buf[2..])
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    Ok(&mut buf[..2 + body_len])
}

/// Decodes one datagram. Pure: no allocation, no panic on any input.
pub fn decode_datagram(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(DecodeError::Oversized);
    }
    match bytes {
        // Fewer than the two prefix bytes is `Truncated`, whatever the one
        // byte is (docs/PROTOCOL.md is normative here).
        [] | [_] => Err(DecodeError::Truncated),
        [m, ..] if *m != MAGIC => Err(DecodeError::BadMagic),
        [_, v, ..] if *v != VERSION => Err(DecodeError::BadVersion(*v)),
        [_, _, body @ ..] => match postcard::take_from_bytes::<Datagram>(body) {
            Ok((datagram, [])) => Ok(datagram),
            Ok((_, _trailing)) => Err(DecodeError::Undecodable),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
            Err(_) => Err(DecodeError::Undecodable),
        },
    }
}

/// Restores a full millisecond timestamp from its low 32 bits, choosing the
/// value nearest to `reference_ms` (normally the receiver's clock). Exact
/// whenever sender and receiver clocks differ by less than ~24.8 days.
pub fn restore_time_ms(low_bits: u32, reference_ms: u64) -> u64 {
    let delta = low_bits.wrapping_sub(reference_ms as u32) as i32;
    reference_ms.wrapping_add_signed(i64::from(delta))
}

#[cfg(test)]
mod tests;
