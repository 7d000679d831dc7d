//! What a WebSocket client asked to receive: which devices, which sensor
//! channels, and whether every reading (`live`) or coalesced windows
//! (`aggregate`). Parsing and filtering are pure.

use std::collections::BTreeSet;

use sensor_hub_protocol::{Channel, DeviceId};
use serde_json::Value;

use crate::state::LiveDatagram;

/// Most devices a subscription may list (more: subscribe to "all").
pub const MAX_LISTED_DEVICES: usize = 10_000;

/// How readings are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every reading, in `readings` messages.
    Live,
    /// Per device and sensor, one `aggregates` entry per interval: the
    /// latest value wins, with count/min/max/mean of what was coalesced.
    Aggregate {
        /// Interval between `aggregates` messages, ms.
        interval_ms: u64,
    },
}

/// A client's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Listed devices, or `None` for all.
    pub devices: Option<BTreeSet<DeviceId>>,
    /// Listed channels, or `None` for all.
    pub channels: Option<BTreeSet<Channel>>,
    /// Delivery mode.
    pub mode: Mode,
}

impl Subscription {
    /// Everything, live.
    pub fn all_live() -> Subscription {
        Subscription {
            devices: None,
            channels: None,
            mode: Mode::Live,
        }
    }

    /// Covers every device and channel (so shared JSON can be used as is).
    pub fn is_full(&self) -> bool {
        self.devices.is_none() && self.channels.is_none()
    }

    /// Wants this device.
    pub fn covers_device(&self, device: DeviceId) -> bool {
        self.devices.as_ref().is_none_or(|d| d.contains(&device))
    }

    /// Wants this channel.
    pub fn covers_channel(&self, channel: Channel) -> bool {
        self.channels.as_ref().is_none_or(|c| c.contains(&channel))
    }

    /// The part of a batch this subscription wants. Datagrams of covered
    /// devices are kept even when none of their channels is (they still say
    /// the device is alive), with an empty reading list.
    pub fn filter(&self, batch: &[LiveDatagram]) -> Vec<LiveDatagram> {
        batch
            .iter()
            .filter(|d| self.covers_device(d.device))
            .map(|d| LiveDatagram {
                readings: d
                    .readings
                    .iter()
                    .filter(|r| self.covers_channel(r.channel))
                    .copied()
                    .collect(),
                ..d.clone()
            })
            .collect()
    }

    /// Parses the subscription fields of a `subscribe` or `resume` request:
    /// `devices` ("all" or a list of ids), `sensors` ("all" or a list of
    /// channels), `mode` ("live" or "aggregate") and `interval_ms`.
    pub fn parse(request: &Value, min_interval_ms: u64) -> Result<Subscription, String> {
        let devices = match request.get("devices") {
            None => None,
            Some(v) if v == "all" => None,
            Some(Value::Array(list)) if list.len() <= MAX_LISTED_DEVICES => Some(
                list.iter()
                    .map(|d| d.as_u64().and_then(|d| u32::try_from(d).ok()))
                    .collect::<Option<BTreeSet<_>>>()
                    .ok_or("`devices` must be \"all\" or a list of device ids")?,
            ),
            Some(_) => {
                return Err(format!(
                    "`devices` must be \"all\" or a list of at most {MAX_LISTED_DEVICES} device ids"
                ))
            }
        };
        let channels = match request.get("sensors") {
            None => None,
            Some(v) if v == "all" => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|c| c.as_u64().and_then(|c| u8::try_from(c).ok()))
                    .collect::<Option<BTreeSet<_>>>()
                    .ok_or("`sensors` must be \"all\" or a list of channels (0-255)")?,
            ),
            Some(_) => return Err("`sensors` must be \"all\" or a list of channels (0-255)".into()),
        };
        let mode = match request.get("mode").map(|m| m.as_str()) {
            None | Some(Some("live")) => Mode::Live,
            Some(Some("aggregate")) => {
                let interval_ms = match request.get("interval_ms") {
                    None => 1_000,
                    Some(i) => i
                        .as_u64()
                        .filter(|&i| (min_interval_ms..=3_600_000).contains(&i))
                        .ok_or(format!(
                            "`interval_ms` must be a whole number from {min_interval_ms} to 3600000"
                        ))?,
                };
                Mode::Aggregate { interval_ms }
            }
            Some(_) => return Err("`mode` must be \"live\" or \"aggregate\"".into()),
        };
        Ok(Subscription {
            devices,
            channels,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::{Reading, Value as Reading_Value};
    use serde_json::json;

    fn datagram(device: DeviceId, channels: &[u8]) -> LiveDatagram {
        LiveDatagram {
            device,
            seq: 0,
            time_ms: 1,
            received_ms: 2,
            readings: channels
                .iter()
                .map(|&channel| Reading {
                    channel,
                    value: Reading_Value::I32(1),
                })
                .collect(),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Subscription::parse(&json!({}), 100),
            Ok(Subscription::all_live())
        );
        assert_eq!(
            Subscription::parse(
                &json!({"devices": "all", "sensors": "all", "mode": "live"}),
                100
            ),
            Ok(Subscription::all_live())
        );
        let s = Subscription::parse(
            &json!({"devices": [3, 1], "sensors": [0], "mode": "aggregate", "interval_ms": 500}),
            100,
        )
        .unwrap();
        assert_eq!(s.devices, Some([1, 3].into_iter().collect()));
        assert_eq!(s.channels, Some([0].into_iter().collect()));
        assert_eq!(s.mode, Mode::Aggregate { interval_ms: 500 });
        assert!(!s.is_full());
    }

    #[test]
    fn bad_fields_say_what_is_expected() {
        for (request, expected) in [
            (json!({"devices": "some"}), "`devices`"),
            (json!({"devices": [1, -2]}), "`devices`"),
            (json!({"sensors": [300]}), "`sensors`"),
            (json!({"sensors": 5}), "`sensors`"),
            (json!({"mode": "turbo"}), "`mode`"),
            (
                json!({"mode": "aggregate", "interval_ms": 5}),
                "`interval_ms`",
            ),
        ] {
            let err = Subscription::parse(&request, 100).unwrap_err();
            assert!(err.contains(expected), "{request}: {err}");
        }
    }

    #[test]
    fn filter_keeps_covered_devices_and_channels() {
        let s = Subscription::parse(&json!({"devices": [1, 2], "sensors": [1]}), 100).unwrap();
        let out = s.filter(&[datagram(1, &[0, 1]), datagram(2, &[0]), datagram(3, &[1])]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].device, 1);
        assert_eq!(out[0].readings.len(), 1);
        assert_eq!(out[0].readings[0].channel, 1);
        assert_eq!(out[1].device, 2);
        assert!(out[1].readings.is_empty());
    }
}
