//! Keys of simulated devices. Each device's key is derived from a fleet
//! seed and its id (HMAC-SHA-256 of the id under the seed), so a simulator
//! and the hub's device file agree from one 32-byte secret, however many
//! devices a fleet has. [`provisioning`] is the list `sensor-hub device
//! import` reads; `device-sim keys` prints it. Pure, apart from
//! [`random_seed`].

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use sensor_hub_protocol::auth::{DeviceKey, KEY_LEN};
use sensor_hub_protocol::DeviceId;
use serde::Serialize;
use sha2::Sha256;

use crate::device::SimDevice;

/// The secret a simulated fleet's keys come from.
pub type KeySeed = [u8; KEY_LEN];

const LABEL: &[u8] = b"device-sim device key v1";

/// The key of device `id` in the fleet of `seed`.
pub fn device_key(seed: &KeySeed, id: DeviceId) -> DeviceKey {
    let mut mac = match Hmac::<Sha256>::new_from_slice(seed) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(LABEL);
    mac.update(&id.to_le_bytes());
    mac.finalize().into_bytes().into()
}

/// 32 random bytes from the operating system.
pub fn random_seed() -> anyhow::Result<KeySeed> {
    let mut seed = [0u8; KEY_LEN];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("the random source failed: {e}"))?;
    Ok(seed)
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A seed from 64 hex digits.
pub fn parse_seed(text: &str) -> anyhow::Result<KeySeed> {
    let text = text.trim();
    anyhow::ensure!(
        text.len() == 2 * KEY_LEN && text.is_ascii(),
        "a key seed is 64 hex digits (make one with `openssl rand -hex 32`)"
    );
    let mut seed = [0u8; KEY_LEN];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .context("a key seed is 64 hex digits")?;
    }
    Ok(seed)
}

/// One device as `sensor-hub device import` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    /// Its id.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its key, 64 hex digits.
    pub key: String,
}

/// The import list for `devices` in the fleet of `seed`.
pub fn provisioning(devices: &[SimDevice], seed: &KeySeed) -> Vec<Provisioned> {
    devices
        .iter()
        .map(|d| Provisioned {
            id: d.id,
            name: d.name.clone(),
            key: hex(&device_key(seed, d.id)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_device_and_seed_and_are_stable() {
        let a = [1u8; KEY_LEN];
        let b = [2u8; KEY_LEN];
        assert_eq!(device_key(&a, 7), device_key(&a, 7));
        assert_ne!(device_key(&a, 7), device_key(&a, 8));
        assert_ne!(device_key(&a, 7), device_key(&b, 7));
        assert_eq!(parse_seed(&hex(&a)).unwrap(), a);
        assert!(parse_seed("abc").is_err());
        assert!(parse_seed(&"g".repeat(64)).is_err());
    }
}
