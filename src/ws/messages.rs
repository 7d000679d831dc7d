//! The WebSocket JSON messages, as pure functions: building the hub's
//! messages (`hello`, `readings`, `error`, `pong`) and classifying what a
//! client sent. No sockets here.

use sensor_hub_protocol::{Reading, Value, VERSION};
use serde::ser::Serializer;
use serde::Serialize;

use crate::command_json::parse_command;
use crate::registry::{kind_of, CommandRecord, CommandState, DeviceStatus};
use crate::state::LiveDatagram;
use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::DeviceId;

/// Version of the hub, reported in `hello`.
pub const HUB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A sensor value as JSON: number or boolean; NaN and infinities become
/// `null`. An f32 is written in its shortest f32 form (21.3, not 21.299999).
#[derive(Debug, Clone, Copy)]
pub struct JsonValue(pub Value);

impl Serialize for JsonValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::F32(f) if f.is_finite() => s.serialize_f32(f),
            Value::F32(_) => s.serialize_none(),
            Value::I32(i) => s.serialize_i32(i),
            Value::Bool(b) => s.serialize_bool(b),
        }
    }
}

#[derive(Serialize)]
struct JsonReading {
    channel: u8,
    value: JsonValue,
}

#[derive(Serialize)]
struct JsonDatagram<'a> {
    device: u32,
    seq: u32,
    time_ms: u64,
    received_ms: u64,
    readings: Seq<'a, Reading, JsonReading>,
}

/// A slice serialized as a JSON array, each element mapped on the fly.
struct Seq<'a, T, J>(&'a [T], fn(&'a T) -> J);

impl<'a, T, J: Serialize> Serialize for Seq<'a, T, J> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

fn json_reading(r: &Reading) -> JsonReading {
    JsonReading {
        channel: r.channel,
        value: JsonValue(r.value),
    }
}

fn json_datagram(d: &LiveDatagram) -> JsonDatagram<'_> {
    JsonDatagram {
        device: d.device,
        seq: d.seq,
        time_ms: d.time_ms,
        received_ms: d.received_ms,
        readings: Seq(&d.readings, json_reading),
    }
}

/// Messages the hub sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum HubMessage<'a> {
    Hello {
        protocol: u8,
        hub_version: &'static str,
        server_time_ms: u64,
    },
    Readings {
        hub_time_ms: u64,
        datagrams: Seq<'a, LiveDatagram, JsonDatagram<'a>>,
    },
    Error {
        code: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    CommandStatus {
        id: Option<&'a serde_json::Value>,
        command_id: u32,
        device: DeviceId,
        kind: &'a str,
        state: CommandState,
        detail: Option<&'a str>,
        at_ms: u64,
    },
    DeviceStatus {
        device: DeviceId,
        status: DeviceStatus,
        previous: Option<DeviceStatus>,
        at_ms: u64,
    },
}

/// `{"type":"command_status",…}`: a command's new state; `id` repeats the
/// client's request id (null for commands from the HTTP API).
pub fn command_status(record: &CommandRecord) -> String {
    to_json(&HubMessage::CommandStatus {
        id: record.origin.request_id.as_ref(),
        command_id: record.id,
        device: record.device,
        kind: kind_of(&record.body),
        state: record.state,
        detail: record.detail.as_deref(),
        at_ms: record.updated_ms,
    })
}

/// `{"type":"device_status",…}`: a device's liveness changed (`previous`
/// is null when the device first appears).
pub fn device_status(
    device: DeviceId,
    status: DeviceStatus,
    previous: Option<DeviceStatus>,
    at_ms: u64,
) -> String {
    to_json(&HubMessage::DeviceStatus {
        device,
        status,
        previous,
        at_ms,
    })
}

fn to_json(message: &HubMessage<'_>) -> String {
    // Serializing these types cannot fail: no maps with non-string keys,
    // no fallible Serialize impls.
    serde_json::to_string(message).unwrap_or_default()
}

/// `{"type":"hello",…}`, sent first on every connection.
pub fn hello(now_ms: u64) -> String {
    to_json(&HubMessage::Hello {
        protocol: VERSION,
        hub_version: HUB_VERSION,
        server_time_ms: now_ms,
    })
}

/// `{"type":"readings",…}` for a batch of accepted datagrams.
pub fn readings(batch: &[LiveDatagram], now_ms: u64) -> String {
    to_json(&HubMessage::Readings {
        hub_time_ms: now_ms,
        datagrams: Seq(batch, json_datagram),
    })
}

/// Why a client message was answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// Not JSON.
    BadJson,
    /// JSON, but not an object with a string `type`.
    MissingType,
    /// A `type` this hub does not know.
    UnknownType,
    /// A binary frame; the API is JSON text.
    Binary,
    /// Larger than `ws.max_client_message_bytes` (the socket is closed).
    TooLarge,
    /// A `command` request that is missing or has bad fields.
    BadCommand,
}

impl ClientError {
    /// Number of variants.
    pub const COUNT: usize = 6;
    /// Every variant, in index order.
    pub const ALL: [ClientError; ClientError::COUNT] = [
        ClientError::BadJson,
        ClientError::MissingType,
        ClientError::UnknownType,
        ClientError::Binary,
        ClientError::TooLarge,
        ClientError::BadCommand,
    ];

    /// The `code` field of the error message, and the metrics label.
    pub fn code(self) -> &'static str {
        match self {
            ClientError::BadJson => "bad_json",
            ClientError::MissingType => "missing_type",
            ClientError::UnknownType => "unknown_type",
            ClientError::Binary => "binary_unsupported",
            ClientError::TooLarge => "too_large",
            ClientError::BadCommand => "bad_command",
        }
    }

    /// Position in [`ClientError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What to do about one text message from a client.
#[derive(Debug, PartialEq)]
pub enum ClientReply {
    /// Answer with this JSON text.
    Send(String),
    /// Answer with this JSON error text, and count the error.
    Reject(ClientError, String),
    /// Submit a command; its statuses answer it.
    Command {
        /// Target device.
        device: DeviceId,
        /// What to do.
        body: CommandBody,
        /// Queue it while the device has no session (default true).
        wait: bool,
        /// The client's request id, echoed in every status.
        request_id: Option<serde_json::Value>,
    },
}

/// An `error` message for `error`, echoing the request `id` if any.
pub fn error(error: ClientError, message: String, id: Option<&serde_json::Value>) -> String {
    to_json(&HubMessage::Error {
        code: error.code(),
        message,
        id,
    })
}

/// Classifies and answers a client's text message.
pub fn handle_client_text(text: &str) -> ClientReply {
    let parsed: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("message is not valid JSON: {e}");
            return ClientReply::Reject(
                ClientError::BadJson,
                error(ClientError::BadJson, message, None),
            );
        }
    };
    let id = parsed.get("id");
    match parsed.get("type").and_then(|t| t.as_str()) {
        Some("ping") => ClientReply::Send(to_json(&HubMessage::Pong { id })),
        Some("command") => command_request(&parsed, id),
        Some(other) => {
            let message =
                format!("unknown message type `{other}`; this hub accepts: ping, command");
            ClientReply::Reject(
                ClientError::UnknownType,
                error(ClientError::UnknownType, message, id),
            )
        }
        None => {
            let message =
                "expected a JSON object with a string field `type`, e.g. {\"type\":\"ping\"}"
                    .to_string();
            ClientReply::Reject(
                ClientError::MissingType,
                error(ClientError::MissingType, message, id),
            )
        }
    }
}

fn command_request(request: &serde_json::Value, id: Option<&serde_json::Value>) -> ClientReply {
    let reject = |message: String| {
        ClientReply::Reject(
            ClientError::BadCommand,
            error(ClientError::BadCommand, message, id),
        )
    };
    let Some(device) = request
        .get("device")
        .and_then(serde_json::Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
    else {
        return reject("`device` must be a device id (a whole number)".into());
    };
    let wait = match request.get("wait") {
        None => true,
        Some(w) => match w.as_bool() {
            Some(w) => w,
            None => return reject("`wait` must be true or false".into()),
        },
    };
    match request.get("command").map(parse_command) {
        Some(Ok(body)) => ClientReply::Command {
            device,
            body,
            wait,
            request_id: id.cloned(),
        },
        Some(Err(message)) => reject(message),
        None => reject("`command` is missing, e.g. {\"kind\": \"identify\"}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn hello_names_protocol_version_and_time() {
        assert_eq!(
            parse(&hello(1_700_000_000_000)),
            json!({"type": "hello", "protocol": 1, "hub_version": HUB_VERSION,
                   "server_time_ms": 1_700_000_000_000u64})
        );
    }

    #[test]
    fn readings_carry_every_datagram_and_typed_values() {
        let batch = [
            LiveDatagram {
                device: 3,
                seq: 9,
                time_ms: 1_000,
                received_ms: 1_004,
                readings: [
                    Reading {
                        channel: 0,
                        value: Value::F32(21.5),
                    },
                    Reading {
                        channel: 1,
                        value: Value::I32(-4),
                    },
                    Reading {
                        channel: 2,
                        value: Value::Bool(true),
                    },
                    Reading {
                        channel: 3,
                        value: Value::F32(f32::NAN),
                    },
                ]
                .into_iter()
                .collect(),
            },
            LiveDatagram {
                device: 4,
                seq: 0,
                time_ms: 2_000,
                received_ms: 2_001,
                readings: Default::default(),
            },
        ];
        assert_eq!(
            parse(&readings(&batch, 5_000)),
            json!({"type": "readings", "hub_time_ms": 5_000, "datagrams": [
                {"device": 3, "seq": 9, "time_ms": 1_000, "received_ms": 1_004, "readings": [
                    {"channel": 0, "value": 21.5},
                    {"channel": 1, "value": -4},
                    {"channel": 2, "value": true},
                    {"channel": 3, "value": null},
                ]},
                {"device": 4, "seq": 0, "time_ms": 2_000, "received_ms": 2_001, "readings": []},
            ]})
        );
    }

    #[test]
    fn ping_gets_pong_with_its_id() {
        assert_eq!(
            handle_client_text(r#"{"type":"ping","id":"a1"}"#),
            ClientReply::Send(r#"{"type":"pong","id":"a1"}"#.into())
        );
        assert_eq!(
            handle_client_text(r#"{"type":"ping"}"#),
            ClientReply::Send(r#"{"type":"pong"}"#.into())
        );
    }

    #[test]
    fn malformed_messages_get_typed_errors() {
        let cases = [
            ("{not json", ClientError::BadJson),
            ("", ClientError::BadJson),
            ("[1,2]", ClientError::MissingType),
            ("42", ClientError::MissingType),
            (r#"{"type":7}"#, ClientError::MissingType),
            (r#"{"kind":"ping"}"#, ClientError::MissingType),
            (r#"{"type":"launch","id":5}"#, ClientError::UnknownType),
        ];
        for (input, expected) in cases {
            match handle_client_text(input) {
                ClientReply::Reject(e, text) => {
                    assert_eq!(e, expected, "{input}");
                    let v = parse(&text);
                    assert_eq!(v["type"], "error");
                    assert_eq!(v["code"], expected.code());
                    assert!(!v["message"].as_str().unwrap().is_empty());
                }
                other => panic!("{input}: {other:?}"),
            }
        }
        match handle_client_text(r#"{"type":"launch","id":5}"#) {
            ClientReply::Reject(_, text) => assert_eq!(parse(&text)["id"], 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_requests_parse_or_get_bad_command() {
        assert_eq!(
            handle_client_text(
                r#"{"type":"command","id":"c1","device":3,"command":{"kind":"set_interval","ms":500}}"#
            ),
            ClientReply::Command {
                device: 3,
                body: CommandBody::SetInterval { ms: 500 },
                wait: true,
                request_id: Some(json!("c1")),
            }
        );
        match handle_client_text(
            r#"{"type":"command","device":3,"wait":false,"command":{"kind":"reboot"}}"#,
        ) {
            ClientReply::Command { wait, body, .. } => {
                assert!(!wait);
                assert_eq!(body, CommandBody::Reboot);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"type":"command","id":1,"command":{"kind":"reboot"}}"#,
            r#"{"type":"command","device":-1,"command":{"kind":"reboot"}}"#,
            r#"{"type":"command","device":3}"#,
            r#"{"type":"command","device":3,"wait":"no","command":{"kind":"reboot"}}"#,
            r#"{"type":"command","device":3,"command":{"kind":"set_interval"}}"#,
        ] {
            match handle_client_text(bad) {
                ClientReply::Reject(ClientError::BadCommand, text) => {
                    assert_eq!(parse(&text)["code"], "bad_command", "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_messages_carry_state_and_request_id() {
        let record = CommandRecord {
            id: 9,
            device: 3,
            body: CommandBody::SetInterval { ms: 500 },
            state: CommandState::Acked,
            detail: None,
            origin: crate::registry::Origin {
                request_id: Some(json!("c1")),
            },
            created_ms: 1,
            updated_ms: 2,
            deadline_ms: 3,
        };
        assert_eq!(
            parse(&command_status(&record)),
            json!({"type": "command_status", "id": "c1", "command_id": 9, "device": 3,
                   "kind": "set_interval", "state": "acked", "detail": null, "at_ms": 2})
        );
        assert_eq!(
            parse(&device_status(
                3,
                DeviceStatus::Late,
                Some(DeviceStatus::Online),
                5
            )),
            json!({"type": "device_status", "device": 3, "status": "late",
                   "previous": "online", "at_ms": 5})
        );
    }

    #[test]
    fn error_codes_are_indexed() {
        for (i, e) in ClientError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }
}
