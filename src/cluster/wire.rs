//! The shared stream's entries on the wire: what one hub writes to Redis
//! and every other hub decodes. An entry is a Redis stream entry with the
//! fields `h` (the hub that wrote it), `i` (its run), `n` (the event's
//! number in that run, for exactly-once appends), optionally `a` (the hub
//! whose device it is about, when another hub reports it) and `e`, the
//! event: a version byte, then [`WireEvent`] in postcard.
//!
//! Everything read back is outside input (any client of the Redis server
//! can write there): decoding is bounded ([`MAX_PAYLOAD`]), checked, and
//! fails with a [`WireError`] the reader counts; it never panics. Fields a
//! hub keeps to itself (which WebSocket client sent a command, its request
//! id, monotonic deadlines) are not shared.

use std::sync::Arc;

use sensor_hub_protocol::control::{CommandBody, SensorInfo};
use sensor_hub_protocol::{DeviceId, Reading};
use serde::{Deserialize, Serialize};

use crate::aggregate::sequence::SeqCounts;
use crate::registry::{CommandRecord, CommandState, DeviceStatus, Origin};
use crate::remote::{Forward, Holding, RemoteInfo, SharedEntry, SharedItem};
use crate::state::LiveDatagram;
use crate::stream::{DeviceStats, Event};

/// Version byte of the payload format.
pub const VERSION: u8 = 1;

/// Largest payload decoded, bytes (a batch of readings is far smaller).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Longest hub name or run id accepted.
const MAX_NAME: usize = 64;

/// Why an entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A field is missing or not what it should be.
    #[error("entry field {0:?} is missing or malformed")]
    Field(&'static str),
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// A payload version this hub does not know (a newer hub wrote it).
    #[error(
        "payload version {0} is unknown to this hub: upgrade it to the cluster's newest version"
    )]
    Version(u8),
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// The entry id is not a position this cluster writes (`<n>-0`).
    #[error("entry id {0:?} is not a shared position")]
    Id(String),
}

/// One datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireDatagram {
    device: DeviceId,
    seq: u32,
    time_ms: u64,
    received_ms: u64,
    readings: Vec<Reading>,
}

/// One command's state, without what only its hub knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCommand {
    id: u32,
    device: DeviceId,
    body: CommandBody,
    state: CommandState,
    detail: Option<String>,
    source: Option<String>,
    created_ms: u64,
    updated_ms: u64,
    /// The hub whose client sent it (none: not a client's).
    origin_hub: Option<String>,
    /// That hub's client id.
    origin_client: Option<u64>,
    /// That client's request id, as JSON text.
    origin_request: Option<String>,
    /// That hub's mark, for a command it handed over.
    ticket: Option<u64>,
}

/// Longest request id carried, as JSON text (the WebSocket parser bounds
/// it far below).
const MAX_REQUEST_ID: usize = 256;

/// One device's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireStats {
    device: DeviceId,
    received: u64,
    lost: u64,
    reordered: u64,
    duplicated: u64,
    restarts: u64,
    rate_per_s: f64,
    latency_p50_ms: Option<u64>,
    latency_p99_ms: Option<u64>,
    latency_count: u64,
}

/// What an entry says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireEvent {
    /// [`Event::Readings`].
    Readings(Vec<WireDatagram>),
    /// [`Event::DeviceStatus`].
    DeviceStatus {
        /// The device.
        device: DeviceId,
        /// New status.
        status: DeviceStatus,
        /// Previous one.
        previous: Option<DeviceStatus>,
        /// Wall time, ms.
        at_ms: u64,
    },
    /// [`Event::DeviceRemoved`].
    DeviceRemoved {
        /// The device.
        device: DeviceId,
        /// Wall time, ms.
        at_ms: u64,
    },
    /// [`Event::CommandStatus`].
    CommandStatus(Box<WireCommand>),
    /// [`Event::DeviceStats`].
    DeviceStats(Vec<WireStats>),
    /// [`SharedItem::Holdings`].
    Holdings(Vec<WireHolding>),
}

/// One device a hub holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireHolding {
    /// The device.
    device: DeviceId,
    /// Its hello's name.
    name: String,
    /// Its firmware.
    firmware: String,
    /// Report interval, ms.
    interval_ms: u32,
    /// Declared sensors.
    sensors: Vec<SensorInfo>,
    /// Adopted.
    adopted: bool,
    /// Keyed.
    keyed: bool,
    /// The hub holds a session with it.
    connected: bool,
}

/// Where a command came from, as shared: known sources keep their name.
fn known_source(source: &str) -> Option<&'static str> {
    ["mqtt", "cluster"].into_iter().find(|&s| s == source)
}

impl WireEvent {
    /// The wire form of an event of hub `hub`.
    pub fn from_event(event: &Event, hub: &str) -> WireEvent {
        match event {
            Event::Readings(batch) => WireEvent::Readings(
                batch
                    .iter()
                    .map(|d| WireDatagram {
                        device: d.device,
                        seq: d.seq,
                        time_ms: d.time_ms,
                        received_ms: d.received_ms,
                        readings: d.readings.to_vec(),
                    })
                    .collect(),
            ),
            &Event::DeviceStatus {
                device,
                status,
                previous,
                at_ms,
            } => WireEvent::DeviceStatus {
                device,
                status,
                previous,
                at_ms,
            },
            &Event::DeviceRemoved { device, at_ms } => WireEvent::DeviceRemoved { device, at_ms },
            Event::CommandStatus(record) => {
                let o = &record.origin;
                let from_client = o.client.is_some() || o.ticket.is_some();
                WireEvent::CommandStatus(Box::new(WireCommand {
                    id: record.id,
                    device: record.device,
                    body: record.body.clone(),
                    state: record.state,
                    detail: record.detail.clone(),
                    source: o.source.map(str::to_string),
                    created_ms: record.created_ms,
                    updated_ms: record.updated_ms,
                    origin_hub: match &o.hub {
                        Some(h) => Some(h.to_string()),
                        None => from_client.then(|| hub.to_string()),
                    },
                    origin_client: o.client,
                    origin_request: o
                        .request_id
                        .as_ref()
                        .map(|id| id.to_string())
                        .filter(|text| text.len() <= MAX_REQUEST_ID),
                    ticket: o.ticket,
                }))
            }
            Event::DeviceStats(stats) => WireEvent::DeviceStats(
                stats
                    .iter()
                    .map(|s| WireStats {
                        device: s.device,
                        received: s.seq.received,
                        lost: s.seq.lost,
                        reordered: s.seq.reordered,
                        duplicated: s.seq.duplicated,
                        restarts: s.seq.restarts,
                        rate_per_s: s.rate_per_s,
                        latency_p50_ms: s.latency_p50_ms,
                        latency_p99_ms: s.latency_p99_ms,
                        latency_count: s.latency_count,
                    })
                    .collect(),
            ),
        }
    }

    /// The wire form of a hub's holdings.
    pub fn holdings(holdings: &[Holding]) -> WireEvent {
        WireEvent::Holdings(
            holdings
                .iter()
                .map(|h| WireHolding {
                    device: h.device,
                    name: h.info.name.clone(),
                    firmware: h.info.firmware.clone(),
                    interval_ms: h.info.interval_ms,
                    sensors: h.info.sensors.clone(),
                    adopted: h.info.adopted,
                    keyed: h.info.keyed,
                    connected: h.connected,
                })
                .collect(),
        )
    }

    /// What the entry means to hub `hub`: a command's origin is kept
    /// whole only on the hub whose client sent it.
    pub fn into_item(self, hub: &str) -> SharedItem {
        match self {
            WireEvent::Readings(batch) => SharedItem::Event(Event::Readings(
                batch
                    .into_iter()
                    .map(|d| LiveDatagram {
                        device: d.device,
                        seq: d.seq,
                        time_ms: d.time_ms,
                        received_ms: d.received_ms,
                        readings: d.readings.into_boxed_slice(),
                    })
                    .collect(),
            )),
            WireEvent::DeviceStatus {
                device,
                status,
                previous,
                at_ms,
            } => SharedItem::Event(Event::DeviceStatus {
                device,
                status,
                previous,
                at_ms,
            }),
            WireEvent::DeviceRemoved { device, at_ms } => {
                SharedItem::Event(Event::DeviceRemoved { device, at_ms })
            }
            WireEvent::CommandStatus(c) => {
                let c = *c;
                let origin = match c.origin_hub {
                    Some(origin_hub) if origin_hub == hub => Origin {
                        request_id: c
                            .origin_request
                            .as_deref()
                            .and_then(|text| serde_json::from_str(text).ok()),
                        client: c.origin_client,
                        source: c.source.as_deref().and_then(known_source),
                        hub: None,
                        ticket: c.ticket,
                    },
                    Some(origin_hub) => Origin {
                        source: c.source.as_deref().and_then(known_source),
                        hub: Some(origin_hub.into()),
                        ..Default::default()
                    },
                    None => Origin {
                        source: c.source.as_deref().and_then(known_source),
                        ..Default::default()
                    },
                };
                SharedItem::Event(Event::CommandStatus(Box::new(CommandRecord {
                    id: c.id,
                    device: c.device,
                    body: c.body,
                    state: c.state,
                    detail: c.detail,
                    origin,
                    created_ms: c.created_ms,
                    updated_ms: c.updated_ms,
                    // Another hub's deadline; nothing here times it out.
                    deadline_mono_ms: 0,
                })))
            }
            WireEvent::DeviceStats(stats) => SharedItem::Event(Event::DeviceStats(
                stats
                    .into_iter()
                    .map(|s| DeviceStats {
                        device: s.device,
                        seq: SeqCounts {
                            received: s.received,
                            lost: s.lost,
                            reordered: s.reordered,
                            duplicated: s.duplicated,
                            restarts: s.restarts,
                        },
                        rate_per_s: s.rate_per_s,
                        latency_p50_ms: s.latency_p50_ms,
                        latency_p99_ms: s.latency_p99_ms,
                        latency_count: s.latency_count,
                    })
                    .collect(),
            )),
            WireEvent::Holdings(holdings) => SharedItem::Holdings(
                holdings
                    .into_iter()
                    .map(|h| Holding {
                        device: h.device,
                        info: RemoteInfo {
                            name: h.name,
                            firmware: h.firmware,
                            interval_ms: h.interval_ms,
                            sensors: h.sensors,
                            adopted: h.adopted,
                            keyed: h.keyed,
                        },
                        connected: h.connected,
                    })
                    .collect(),
            ),
        }
    }

    /// The payload: version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode_payload(self)
    }

    /// Decodes a payload.
    pub fn decode(payload: &[u8]) -> Result<WireEvent, WireError> {
        let event: WireEvent = decode_payload(payload)?;
        if let WireEvent::DeviceStats(stats) = &event {
            if stats
                .iter()
                .any(|s| !s.rate_per_s.is_finite() || s.rate_per_s < 0.0)
            {
                return Err(WireError::Field("rate_per_s"));
            }
        }
        Ok(event)
    }
}

/// A command handed to the hub holding its device (an entry of that hub's
/// command stream: fields `f`, the sending hub, and `e`, this in postcard
/// after the version byte).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireForward {
    /// The device.
    pub device: DeviceId,
    /// What to do.
    pub body: CommandBody,
    /// Wait for the device if it is offline.
    pub wait: bool,
    /// The sending hub's client.
    pub client: Option<u64>,
    /// Its request id, as JSON text.
    pub request: Option<String>,
    /// The sending hub's mark.
    pub ticket: u64,
    /// When it was sent, Unix ms (a command older than its TTL is not
    /// run).
    pub sent_ms: u64,
}

impl WireForward {
    /// The wire form of a command to hand over, sent at `sent_ms`.
    pub fn new(forward: &Forward, sent_ms: u64) -> WireForward {
        WireForward {
            device: forward.device,
            body: forward.body.clone(),
            wait: forward.wait,
            client: forward.origin.client,
            request: forward
                .origin
                .request_id
                .as_ref()
                .map(|id| id.to_string())
                .filter(|text| text.len() <= MAX_REQUEST_ID),
            ticket: forward.origin.ticket.unwrap_or(0),
            sent_ms,
        }
    }

    /// The payload: version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode_payload(self)
    }

    /// Decodes a payload.
    pub fn decode(payload: &[u8]) -> Result<WireForward, WireError> {
        decode_payload(payload)
    }

    /// The origin the command runs with on the device's hub, sent by
    /// `from`.
    pub fn origin(&self, from: &str) -> Origin {
        Origin {
            request_id: self
                .request
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            client: self.client,
            source: None,
            hub: Some(from.into()),
            ticket: Some(self.ticket),
        }
    }
}

impl RawEntry<'_> {
    /// The `h` field (`f` in a command stream).
    pub fn hub_field(&self) -> Option<&[u8]> {
        self.hub
    }
}

/// The sending hub's name of a command stream entry.
pub fn sender(bytes: Option<&[u8]>) -> Result<&str, WireError> {
    name("f", bytes)
}

/// A payload: the version byte, then `value` in postcard.
fn encode_payload(value: &impl Serialize) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serialising plain data into a Vec cannot fail.
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a payload of at most [`MAX_PAYLOAD`] bytes in this version.
fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge(payload.len()));
    }
    let (&version, body) = payload.split_first().ok_or(WireError::Field("e"))?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    postcard::from_bytes(body).map_err(|e| WireError::Payload(e.to_string()))
}

/// A shared position from an entry id (`<n>-0`).
pub fn position_of(id: &str) -> Result<u64, WireError> {
    let bad = || WireError::Id(id.chars().take(40).collect());
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    let position: u64 = ms.parse().map_err(|_| bad())?;
    if seq != "0" || position == 0 {
        return Err(bad());
    }
    Ok(position)
}

/// The fields of one stream entry, as read.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawEntry<'a> {
    /// Entry id.
    pub id: &'a str,
    /// `h` (`f` in a command stream).
    pub hub: Option<&'a [u8]>,
    /// `i`.
    pub run: Option<&'a [u8]>,
    /// `n`.
    pub number: Option<&'a [u8]>,
    /// `a`.
    pub about: Option<&'a [u8]>,
    /// `e`.
    pub payload: Option<&'a [u8]>,
}

fn name<'a>(field: &'static str, bytes: Option<&'a [u8]>) -> Result<&'a str, WireError> {
    let text = std::str::from_utf8(bytes.ok_or(WireError::Field(field))?)
        .map_err(|_| WireError::Field(field))?;
    if text.is_empty()
        || text.len() > MAX_NAME
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(WireError::Field(field));
    }
    Ok(text)
}

/// Decodes an entry for hub `own_hub` in run `own_run`: its own entries
/// are not decoded again ([`SharedItem::Own`]). `intern` gives the shared
/// copy of a hub name (so a million entries do not make a million
/// strings).
pub fn decode_entry(
    raw: &RawEntry<'_>,
    own_hub: &str,
    own_run: &str,
    intern: &mut impl FnMut(&str) -> Arc<str>,
) -> Result<SharedEntry, WireError> {
    let position = position_of(raw.id)?;
    let writer = name("h", raw.hub)?;
    let run = name("i", raw.run)?;
    let number: u64 = std::str::from_utf8(raw.number.ok_or(WireError::Field("n"))?)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(WireError::Field("n"))?;
    let about = match raw.about {
        Some(bytes) => Some(name("a", Some(bytes))?),
        None => None,
    };
    let own = run == own_run;
    let item = if own {
        SharedItem::Own
    } else {
        WireEvent::decode(raw.payload.ok_or(WireError::Field("e"))?)?.into_item(own_hub)
    };
    Ok(SharedEntry {
        position,
        hub: intern(about.unwrap_or(writer)),
        own,
        number,
        item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::control::ValueKind;
    use sensor_hub_protocol::Value;

    fn events() -> Vec<Event> {
        vec![
            Event::Readings(vec![LiveDatagram {
                device: 3,
                seq: 9,
                time_ms: 1_000,
                received_ms: 1_001,
                readings: vec![
                    Reading {
                        channel: 0,
                        value: Value::F32(21.5),
                    },
                    Reading {
                        channel: 2,
                        value: Value::Bool(true),
                    },
                ]
                .into_boxed_slice(),
            }]),
            Event::DeviceStatus {
                device: 3,
                status: DeviceStatus::Late,
                previous: Some(DeviceStatus::Online),
                at_ms: 5,
            },
            Event::DeviceRemoved {
                device: 4,
                at_ms: 6,
            },
            Event::CommandStatus(Box::new(CommandRecord {
                id: 17,
                device: 3,
                body: CommandBody::Identify,
                state: CommandState::Succeeded,
                detail: Some("done".into()),
                origin: Origin {
                    request_id: None,
                    client: None,
                    source: Some("mqtt"),
                    ..Default::default()
                },
                created_ms: 1,
                updated_ms: 2,
                deadline_mono_ms: 0,
            })),
            Event::DeviceStats(vec![DeviceStats {
                device: 3,
                seq: SeqCounts {
                    received: 10,
                    lost: 1,
                    reordered: 2,
                    duplicated: 3,
                    restarts: 4,
                },
                rate_per_s: 1.5,
                latency_p50_ms: Some(2),
                latency_p99_ms: None,
                latency_count: 8,
            }]),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for event in events() {
            let wire = WireEvent::from_event(&event, "a");
            let decoded = WireEvent::decode(&wire.encode()).unwrap();
            assert_eq!(decoded, wire);
            assert_eq!(decoded.into_item("b"), SharedItem::Event(event));
        }
    }

    #[test]
    fn holdings_round_trip() {
        let info = RemoteInfo {
            name: "greenhouse".into(),
            firmware: "1.2".into(),
            interval_ms: 1000,
            sensors: vec![SensorInfo {
                channel: 0,
                name: "temperature".try_into().unwrap(),
                unit: "°C".try_into().unwrap(),
                kind: ValueKind::F32,
                min: Some(-40.0),
                max: None,
            }],
            adopted: true,
            keyed: false,
        };
        let holdings = vec![Holding {
            device: 7,
            info,
            connected: true,
        }];
        let wire = WireEvent::holdings(&holdings);
        let decoded = WireEvent::decode(&wire.encode()).unwrap().into_item("b");
        assert_eq!(decoded, SharedItem::Holdings(holdings));
    }

    #[test]
    fn what_a_hub_keeps_to_itself_is_not_shared() {
        let record = CommandRecord {
            id: 1,
            device: 2,
            body: CommandBody::Identify,
            state: CommandState::Queued,
            detail: None,
            origin: Origin {
                request_id: Some(serde_json::json!("c1")),
                client: Some(42),
                source: None,
                ..Default::default()
            },
            created_ms: 0,
            updated_ms: 0,
            deadline_mono_ms: 99,
        };
        let wire = WireEvent::from_event(&Event::CommandStatus(Box::new(record)), "a");
        let decode = |hub: &str| {
            let SharedItem::Event(Event::CommandStatus(back)) =
                WireEvent::decode(&wire.encode()).unwrap().into_item(hub)
            else {
                panic!("a command status");
            };
            back
        };
        // On another hub, the origin names the hub, never its client.
        let elsewhere = decode("b");
        assert_eq!(elsewhere.origin.hub.as_deref(), Some("a"));
        assert_eq!(elsewhere.origin.client, None);
        assert_eq!(elsewhere.deadline_mono_ms, 0);
        // Back on the hub whose client sent it, the origin is whole.
        let home = decode("a");
        assert_eq!(home.origin.hub, None);
        assert_eq!(home.origin.client, Some(42));
        assert_eq!(home.origin.request_id, Some(serde_json::json!("c1")));
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(WireEvent::decode(&[]), Err(WireError::Field("e")));
        assert_eq!(WireEvent::decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            WireEvent::decode(&[VERSION, 200, 200, 200]),
            Err(WireError::Payload(_))
        ));
        let huge = vec![VERSION; MAX_PAYLOAD + 1];
        assert_eq!(
            WireEvent::decode(&huge),
            Err(WireError::TooLarge(MAX_PAYLOAD + 1))
        );
        // Statistics with a rate that is not a number (found by fuzzing).
        let nan = [
            1, 4, 1, 2, 2, 2, 2, 0, 0, 0, 11, 255, 255, 255, 255, 255, 255, 0, 0, 0, 2, 0, 0, 0, 4,
            0, 0,
        ];
        assert!(WireEvent::decode(&nan).is_err());
        // A batch claiming four billion datagrams in a few bytes.
        assert!(WireEvent::decode(&[VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn entries_decode_with_checked_fields() {
        let payload = WireEvent::from_event(&events()[1], "hub-a").encode();
        let mut intern = |s: &str| -> Arc<str> { s.into() };
        let raw = RawEntry {
            id: "41-0",
            hub: Some(b"hub-a"),
            run: Some(b"00ff"),
            number: Some(b"7"),
            about: None,
            payload: Some(&payload),
        };
        let entry = decode_entry(&raw, "me", "other", &mut intern).unwrap();
        assert_eq!(
            (entry.position, &*entry.hub, entry.own, entry.number),
            (41, "hub-a", false, 7)
        );
        // Own entries are not decoded.
        let own = decode_entry(&raw, "me", "00ff", &mut intern).unwrap();
        assert_eq!(own.item, SharedItem::Own);
        // About another hub.
        let about = RawEntry {
            about: Some(b"hub-b"),
            ..raw
        };
        assert_eq!(
            &*decode_entry(&about, "me", "x", &mut intern).unwrap().hub,
            "hub-b"
        );
        for (bad, err) in [
            (RawEntry { id: "41-1", ..raw }, WireError::Id("41-1".into())),
            (RawEntry { id: "0-0", ..raw }, WireError::Id("0-0".into())),
            (
                RawEntry {
                    hub: Some(b"a b"),
                    ..raw
                },
                WireError::Field("h"),
            ),
            (RawEntry { run: None, ..raw }, WireError::Field("i")),
            (
                RawEntry {
                    number: Some(b"-1"),
                    ..raw
                },
                WireError::Field("n"),
            ),
            (
                RawEntry {
                    payload: None,
                    ..raw
                },
                WireError::Field("e"),
            ),
        ] {
            assert_eq!(decode_entry(&bad, "me", "x", &mut intern).unwrap_err(), err);
        }
    }

    #[test]
    fn positions_are_parsed_strictly() {
        assert_eq!(position_of("1-0"), Ok(1));
        assert_eq!(position_of("18446744073709551615-0"), Ok(u64::MAX));
        for bad in [
            "",
            "1",
            "1-",
            "-0",
            "x-0",
            "1-0-0",
            "18446744073709551616-0",
        ] {
            assert!(position_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handed_over_commands_round_trip_and_run_with_the_senders_origin() {
        let forward = Forward {
            hub: "a".into(),
            device: 3,
            body: CommandBody::Identify,
            wait: true,
            origin: Origin {
                request_id: Some(serde_json::json!({"n": 1})),
                client: Some(9),
                ticket: Some(77),
                ..Default::default()
            },
        };
        let wire = WireForward::new(&forward, 5);
        let back = WireForward::decode(&wire.encode()).unwrap();
        assert_eq!(back, wire);
        let origin = back.origin("b");
        assert_eq!(origin.hub.as_deref(), Some("b"));
        assert_eq!(origin.client, Some(9));
        assert_eq!(origin.ticket, Some(77));
        assert_eq!(origin.request_id, Some(serde_json::json!({"n": 1})));
        assert!(WireForward::decode(&[VERSION, 0xff]).is_err());
        assert_eq!(sender(Some(b"hub-b")), Ok("hub-b"));
        assert!(sender(Some(b"")).is_err());
    }
}
