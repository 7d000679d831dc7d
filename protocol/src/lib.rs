//! Wire types shared by the hub, the simulator and real device firmware.
//!
//! This crate is `no_std` and allocation-free so that firmware on a
//! microcontroller can depend on it as-is. It owns the byte layout of
//! everything that crosses the network and nothing else: no sockets, no
//! clocks, no state.
//!
//! # Layout
//!
//! * [`auth`]: device authentication: the keyed hello's
//!   challenge–response, per-session datagram keys, datagram tags
//!   (HMAC-SHA-256 truncated to 128 bits).
//! * [`control`]: the TCP control channel: preamble, length-prefixed
//!   frames, hello/auth, heartbeats, commands and their results.
//! * `codec` (feature `codec`, needs std): a `tokio_util` codec for
//!   control frames.
//! * [`datagram`]: the UDP data plane. A datagram is a two-byte prefix
//!   (magic, version) followed by a postcard-encoded [`Datagram`]. The
//!   pure functions [`encode_datagram`] and [`decode_datagram`] work on
//!   byte slices.
//!
//! The normative description, with exact-byte examples that are also this
//! crate's test vectors, is `docs/PROTOCOL.md` at the repository root.
#![no_std]

#[cfg(feature = "codec")]
extern crate std;

pub mod auth;
#[cfg(feature = "codec")]
pub mod codec;
pub mod control;
pub mod datagram;

pub use datagram::{
    decode_datagram, encode_datagram, restore_time_ms, AuthTag, Channel, Datagram, DecodeError,
    DeviceId, EncodeError, Reading, Readings, Value, AUTH_TAG_LEN, MAGIC, MAX_DATAGRAM_LEN,
    MAX_READINGS, VERSION,
};
