//! Device authentication: the keyed hello (challenge–response), the hub's
//! proof in its welcome, the per-session datagram key, and datagram tags.
//!
//! One construction throughout: HMAC-SHA-256 (RFC 2104) keyed with a
//! 32-byte secret, its output truncated to the leftmost 128 bits where it
//! is a tag or proof (as RFC 4868 does for IPsec). Every message a MAC
//! covers is covered **as its bytes were sent**: a proof or tag is always
//! the last 16 bytes of what it protects, and covers everything before it.
//! Each use has its own label, so a value made for one use is never valid
//! for another:
//!
//! | value | key | input |
//! |---|---|---|
//! | hello proof | device key | `"sensor-hub hello v1"` ‖ hub nonce ‖ hello frame body without its proof |
//! | welcome proof | device key | `"sensor-hub welcome v1"` ‖ device nonce ‖ hub nonce ‖ welcome frame body without its proof |
//! | session key (32 bytes) | device key | `"sensor-hub datagram v1"` ‖ hub nonce ‖ device nonce |
//! | datagram tag | session key | the datagram up to its tag (magic, version, body, the `01` of `auth_tag`) |
//!
//! Both nonces are fresh per session, so each session has its own datagram
//! key: a datagram recorded in an earlier session (before a reboot, or
//! before the hub restarted) never verifies in a later one, and the
//! device needs no clock and no storage beyond its key.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::control::{
    encode_frame, ControlError, DeviceMessage, Hello, HubMessage, KeyedHello, FRAME_HEADER_LEN,
};
use crate::datagram::{encode_datagram, AuthTag, Datagram, EncodeError, AUTH_TAG_LEN};

/// Length of a device key and of a session key.
pub const KEY_LEN: usize = 32;
/// Length of a nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a proof (a truncated MAC).
pub const PROOF_LEN: usize = 16;

/// A device's long-term secret, shared with the hub that adopted it.
pub type DeviceKey = [u8; KEY_LEN];
/// A one-time random value (each side makes one per session).
pub type Nonce = [u8; NONCE_LEN];
/// A truncated HMAC proving possession of a key.
pub type Proof = [u8; PROOF_LEN];

const HELLO_LABEL: &[u8] = b"sensor-hub hello v1";
const WELCOME_LABEL: &[u8] = b"sensor-hub welcome v1";
const DATAGRAM_LABEL: &[u8] = b"sensor-hub datagram v1";

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8; KEY_LEN]) -> HmacSha256 {
    // HMAC takes keys of any length; a 32-byte key cannot be refused.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn truncated(mac: HmacSha256) -> Proof {
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(&full[..PROOF_LEN]);
    out
}

fn hello_mac(key: &DeviceKey, hub_nonce: &Nonce, signed: &[u8]) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(HELLO_LABEL);
    mac.update(hub_nonce);
    mac.update(signed);
    mac
}

fn welcome_mac(
    key: &DeviceKey,
    device_nonce: &Nonce,
    hub_nonce: &Nonce,
    signed: &[u8],
) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(WELCOME_LABEL);
    mac.update(device_nonce);
    mac.update(hub_nonce);
    mac.update(signed);
    mac
}

/// Splits a message that ends in a proof into what the proof covers and
/// the proof.
fn split_proof(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.len().checked_sub(PROOF_LEN)?;
    Some(bytes.split_at(at))
}

/// The session's datagram key: derived from the device key and both
/// nonces of the session's hello.
pub fn session_key(key: &DeviceKey, hub_nonce: &Nonce, device_nonce: &Nonce) -> [u8; KEY_LEN] {
    let mut mac = keyed(key);
    mac.update(DATAGRAM_LABEL);
    mac.update(hub_nonce);
    mac.update(device_nonce);
    mac.finalize().into_bytes().into()
}

/// Encodes a keyed hello frame (header included) into `buf`: the device's
/// answer to the hub's challenge `hub_nonce`. `hello.token` should be
/// empty: the key never crosses the wire.
pub fn encode_keyed_hello<'b>(
    hello: &Hello,
    device_nonce: Nonce,
    key: &DeviceKey,
    hub_nonce: &Nonce,
    buf: &'b mut [u8],
) -> Result<&'b [u8], ControlError> {
    let message = DeviceMessage::KeyedHello(KeyedHello {
        hello: hello.clone(),
        device_nonce,
        proof: [0; PROOF_LEN],
    });
    let len = encode_frame(&message, buf)?.len();
    let frame = &mut buf[..len];
    let (signed, proof) =
        frame[FRAME_HEADER_LEN..].split_at_mut(len - FRAME_HEADER_LEN - PROOF_LEN);
    proof.copy_from_slice(&truncated(hello_mac(key, hub_nonce, signed)));
    Ok(frame)
}

/// Whether `body`, the body of a keyed hello frame as received, carries a
/// valid proof for `key` and the hub's challenge `hub_nonce`. Constant
/// time in the proof.
pub fn verify_keyed_hello(body: &[u8], key: &DeviceKey, hub_nonce: &Nonce) -> bool {
    let Some((signed, proof)) = split_proof(body) else {
        return false;
    };
    hello_mac(key, hub_nonce, signed)
        .verify_truncated_left(proof)
        .is_ok()
}

/// Room for a keyed welcome's body (tag, three varints at their widest
/// and the proof take at most 42 bytes).
const MAX_WELCOME_BODY: usize = 64;

/// The hub's keyed welcome, its proof filled in: the welcome's body up to
/// the proof, MACed with the device key and both nonces. Any encoder
/// writes it (postcard's encoding is deterministic, so the bytes sent are
/// the bytes proven).
pub fn keyed_welcome(
    session_id: u64,
    hub_time_ms: u64,
    heartbeat_ms: u32,
    key: &DeviceKey,
    device_nonce: &Nonce,
    hub_nonce: &Nonce,
) -> HubMessage {
    let mut message = HubMessage::KeyedWelcome {
        session_id,
        hub_time_ms,
        heartbeat_ms,
        proof: [0; PROOF_LEN],
    };
    let mut scratch = [0u8; MAX_WELCOME_BODY];
    let filled = match postcard::to_slice(&message, &mut scratch) {
        Ok(body) => {
            let at = body.len() - PROOF_LEN;
            truncated(welcome_mac(key, device_nonce, hub_nonce, &body[..at]))
        }
        Err(_) => unreachable!("a welcome always fits MAX_WELCOME_BODY"),
    };
    if let HubMessage::KeyedWelcome { proof, .. } = &mut message {
        *proof = filled;
    }
    message
}

/// The device's keyed hello as a message, its proof filled in (for
/// senders that encode messages rather than frames; `scratch` must hold
/// the frame: [`crate::control::MAX_FRAME_BODY`] + 2 bytes always do).
pub fn keyed_hello(
    hello: &Hello,
    device_nonce: Nonce,
    key: &DeviceKey,
    hub_nonce: &Nonce,
    scratch: &mut [u8],
) -> Result<DeviceMessage, ControlError> {
    let frame = encode_keyed_hello(hello, device_nonce, key, hub_nonce, scratch)?;
    let mut proof = [0u8; PROOF_LEN];
    proof.copy_from_slice(&frame[frame.len() - PROOF_LEN..]);
    Ok(DeviceMessage::KeyedHello(KeyedHello {
        hello: hello.clone(),
        device_nonce,
        proof,
    }))
}

/// Whether `body`, a keyed welcome frame body as received, proves that
/// the hub holds `key` (and answers this session's nonces). A device
/// that gets a welcome failing this check must close the connection: it
/// is not talking to its hub.
pub fn verify_keyed_welcome(
    body: &[u8],
    key: &DeviceKey,
    device_nonce: &Nonce,
    hub_nonce: &Nonce,
) -> bool {
    let Some((signed, proof)) = split_proof(body) else {
        return false;
    };
    welcome_mac(key, device_nonce, hub_nonce, signed)
        .verify_truncated_left(proof)
        .is_ok()
}

/// Why a datagram's tag was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// The datagram carries no tag.
    Missing,
    /// The tag is not the one the key makes for these bytes.
    Invalid,
}

/// A session's datagram key, ready to tag and verify (the HMAC key
/// schedule is done once, not per datagram).
#[derive(Clone)]
pub struct DatagramKey {
    mac: HmacSha256,
}

impl core::fmt::Debug for DatagramKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DatagramKey(..)")
    }
}

impl DatagramKey {
    /// The key of the session whose hello used these nonces.
    pub fn derive(key: &DeviceKey, hub_nonce: &Nonce, device_nonce: &Nonce) -> DatagramKey {
        DatagramKey::new(&session_key(key, hub_nonce, device_nonce))
    }

    /// A key from its bytes (see [`session_key`]).
    pub fn new(session_key: &[u8; KEY_LEN]) -> DatagramKey {
        DatagramKey {
            mac: keyed(session_key),
        }
    }

    /// The tag of a datagram whose bytes up to the tag are `signed`.
    pub fn tag(&self, signed: &[u8]) -> AuthTag {
        let mut mac = self.mac.clone();
        mac.update(signed);
        truncated(mac)
    }

    /// Encodes `datagram` with its tag into `buf` (its `auth_tag` is
    /// ignored) and returns the datagram.
    pub fn seal<'b>(
        &self,
        datagram: &Datagram,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], EncodeError> {
        let mut tagged = datagram.clone();
        tagged.auth_tag = Some([0; AUTH_TAG_LEN]);
        let len = encode_datagram(&tagged, buf)?.len();
        let out = &mut buf[..len];
        let (signed, tag) = out.split_at_mut(len - AUTH_TAG_LEN);
        tag.copy_from_slice(&self.tag(signed));
        Ok(out)
    }

    /// Checks the tag of `bytes`, a datagram that decoded with
    /// `has_tag` telling whether its `auth_tag` was present (a present
    /// tag is always its last 16 bytes). Constant time in the tag.
    pub fn verify(&self, bytes: &[u8], has_tag: bool) -> Result<(), TagError> {
        if !has_tag {
            return Err(TagError::Missing);
        }
        let Some(at) = bytes.len().checked_sub(AUTH_TAG_LEN) else {
            return Err(TagError::Invalid);
        };
        let (signed, tag) = bytes.split_at(at);
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| TagError::Invalid)
    }
}

#[cfg(test)]
mod tests;
