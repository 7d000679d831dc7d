//! Device credentials: per-device tokens and the fleet token, compared in
//! constant time (`subtle`) so response timing does not leak how much of a
//! guess was right.

use std::collections::HashMap;

use sensor_hub_protocol::DeviceId;
use subtle::ConstantTimeEq as _;

/// The tokens the hub accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    fleet: Option<String>,
    per_device: HashMap<DeviceId, String>,
}

impl Tokens {
    /// `fleet` (empty: none) and the per-device tokens.
    pub fn new(fleet: &str, per_device: HashMap<DeviceId, String>) -> Tokens {
        Tokens {
            fleet: (!fleet.is_empty()).then(|| fleet.to_string()),
            per_device,
        }
    }

    /// True when no device could ever be accepted.
    pub fn is_empty(&self) -> bool {
        self.fleet.is_none() && self.per_device.is_empty()
    }

    /// Whether `token` admits `device`: its own token if it has one,
    /// otherwise the fleet token.
    pub fn admits(&self, device: DeviceId, token: &str) -> bool {
        let expected = match self.per_device.get(&device) {
            Some(own) => own,
            None => match &self.fleet {
                Some(fleet) => fleet,
                None => return false,
            },
        };
        bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_token_wins_over_the_fleet_token() {
        let tokens = Tokens::new("fleet", [(7, "own".to_string())].into_iter().collect());
        assert!(tokens.admits(7, "own"));
        assert!(
            !tokens.admits(7, "fleet"),
            "a device with its own token must use it"
        );
        assert!(tokens.admits(8, "fleet"));
        assert!(!tokens.admits(8, "own"));
        assert!(!tokens.admits(8, ""));
        assert!(!tokens.admits(8, "flee"));
        assert!(!tokens.admits(8, "fleet2"));
    }

    #[test]
    fn without_tokens_nobody_is_admitted() {
        let tokens = Tokens::new("", HashMap::new());
        assert!(tokens.is_empty());
        assert!(!tokens.admits(1, ""));
    }
}
