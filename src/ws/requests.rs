//! What clients send on `/ws`, parsed into [`Request`]s, or the error to
//! answer with. Pure; docs/WEBSOCKET.md documents every field.

use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::DeviceId;
use serde_json::Value;

use crate::command_json::parse_command;
use crate::history::query::{RangeRequest, SensorRef};
use crate::stream::subscription::Subscription;

/// Why a client message was answered with an error (the `code` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter)]
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
    /// A `subscribe` or `resume` with bad fields.
    BadSubscription,
    /// More messages than `ws.client_messages_per_s` allows.
    RateLimited,
    /// A `history` request with bad fields, or for an unknown device or
    /// sensor.
    BadHistory,
    /// A valid `history` request the hub cannot answer (history off,
    /// database error).
    HistoryUnavailable,
    /// Too many `history` requests running (this client's or the hub's);
    /// retry after an answer arrives.
    HistoryBusy,
    /// An `id` that is not a string of at most [`MAX_ID_BYTES`] bytes or a
    /// number.
    BadId,
    /// A `command` from a client whose credentials have only the viewer
    /// role.
    Forbidden,
}

/// Longest string `id` a request may carry, bytes. The id is kept with a
/// command for its whole life and repeated in every answer, so its size is
/// bounded (and counted in the replay ring's budget).
pub const MAX_ID_BYTES: usize = 128;

impl ClientError {
    /// The `code` field of the error message, and the metrics label.
    pub fn code(self) -> &'static str {
        match self {
            ClientError::BadJson => "bad_json",
            ClientError::MissingType => "missing_type",
            ClientError::UnknownType => "unknown_type",
            ClientError::Binary => "binary_unsupported",
            ClientError::TooLarge => "too_large",
            ClientError::BadCommand => "bad_command",
            ClientError::BadSubscription => "bad_subscription",
            ClientError::RateLimited => "rate_limited",
            ClientError::BadHistory => "bad_history",
            ClientError::HistoryUnavailable => "history_unavailable",
            ClientError::HistoryBusy => "history_busy",
            ClientError::BadId => "bad_id",
            ClientError::Forbidden => "forbidden",
        }
    }

    /// Position in declaration order (for counters indexed by code).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A valid client request; `id` is echoed in its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Replace the subscription; answered with a `snapshot`.
    Subscribe {
        /// Request id.
        id: Option<Value>,
        /// What to receive.
        subscription: Subscription,
    },
    /// Stop receiving; answered with an `ack`.
    Unsubscribe {
        /// Request id.
        id: Option<Value>,
    },
    /// Continue a stream after reconnecting; answered with an `ack` and the
    /// missed messages, or with a `resync`.
    Resume {
        /// Request id.
        id: Option<Value>,
        /// Epoch from the earlier connection's `hello`.
        epoch: String,
        /// Last `seq` the client processed.
        last_seq: u64,
        /// What to receive.
        subscription: Subscription,
    },
    /// Start a command; answered with `command_status` messages.
    Command {
        /// Request id (repeated in every status).
        id: Option<Value>,
        /// Target device.
        device: DeviceId,
        /// What to do.
        body: CommandBody,
        /// Queue it while the device has no session (default true).
        wait: bool,
    },
    /// Answered with a `history` message (or an error).
    History {
        /// Request id.
        id: Option<Value>,
        /// The device.
        device: DeviceId,
        /// Its sensor.
        sensor: SensorRef,
        /// The range and number of points.
        range: RangeRequest,
    },
    /// Answered with `pong`.
    Ping {
        /// Request id.
        id: Option<Value>,
    },
}

/// A refused message: what to count and what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The error code.
    pub error: ClientError,
    /// Human explanation.
    pub message: String,
    /// The request's id, if it had one.
    pub id: Option<Value>,
}

fn refuse(error: ClientError, message: impl Into<String>, id: Option<&Value>) -> Refusal {
    Refusal {
        error,
        message: message.into(),
        id: id.cloned(),
    }
}

/// Parses one text message. `min_interval_ms` bounds aggregate intervals.
pub fn parse(text: &str, min_interval_ms: u64) -> Result<Request, Refusal> {
    let request: Value = serde_json::from_str(text).map_err(|e| {
        refuse(
            ClientError::BadJson,
            format!("message is not valid JSON: {e}"),
            None,
        )
    })?;
    let id = match request.get("id") {
        None | Some(Value::Null) => None,
        Some(id @ Value::Number(_)) => Some(id),
        Some(id @ Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(id),
        Some(_) => {
            return Err(refuse(
                ClientError::BadId,
                format!(
                    "`id` must be a string of at most {MAX_ID_BYTES} bytes or a number; it is repeated in every answer"
                ),
                None,
            ))
        }
    };
    let subscription = || {
        Subscription::parse(&request, min_interval_ms)
            .map_err(|m| refuse(ClientError::BadSubscription, m, id))
    };
    match request.get("type").and_then(Value::as_str) {
        Some("ping") => Ok(Request::Ping { id: id.cloned() }),
        Some("subscribe") => Ok(Request::Subscribe {
            id: id.cloned(),
            subscription: subscription()?,
        }),
        Some("unsubscribe") => Ok(Request::Unsubscribe { id: id.cloned() }),
        Some("resume") => {
            let epoch = request.get("epoch").and_then(Value::as_str);
            let last_seq = request.get("last_seq").and_then(Value::as_u64);
            match (epoch, last_seq) {
                (Some(epoch), Some(last_seq)) => Ok(Request::Resume {
                    id: id.cloned(),
                    epoch: epoch.to_string(),
                    last_seq,
                    subscription: subscription()?,
                }),
                _ => Err(refuse(
                    ClientError::BadSubscription,
                    "`resume` needs `epoch` (a string from hello) and `last_seq` (a whole number)",
                    id,
                )),
            }
        }
        Some("command") => command(&request, id),
        Some("history") => history(&request, id),
        Some(other) => Err(refuse(
            ClientError::UnknownType,
            format!(
                "unknown message type `{other}`; this hub accepts: subscribe, unsubscribe, resume, command, history, ping"
            ),
            id,
        )),
        None => Err(refuse(
            ClientError::MissingType,
            "expected a JSON object with a string field `type`, e.g. {\"type\":\"ping\"}",
            id,
        )),
    }
}

fn history(request: &Value, id: Option<&Value>) -> Result<Request, Refusal> {
    let bad = |m: &str| refuse(ClientError::BadHistory, m, id);
    let device = request
        .get("device")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or_else(|| bad("`device` must be a device id (a whole number)"))?;
    let sensor = request
        .get("sensor")
        .and_then(SensorRef::from_json)
        .ok_or_else(|| bad("`sensor` must be a channel number (0-255) or a sensor name"))?;
    let number = |key: &str| match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad(&format!(
                "`{key}` must be a whole number (Unix ms for from/to)"
            ))
        }),
    };
    Ok(Request::History {
        id: id.cloned(),
        device,
        sensor,
        range: RangeRequest {
            from_ms: number("from")?,
            to_ms: number("to")?,
            max_points: number("max_points")?,
        },
    })
}

fn command(request: &Value, id: Option<&Value>) -> Result<Request, Refusal> {
    let bad = |m: &str| refuse(ClientError::BadCommand, m, id);
    let device = request
        .get("device")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or_else(|| bad("`device` must be a device id (a whole number)"))?;
    let wait = match request.get("wait") {
        None => true,
        Some(w) => w
            .as_bool()
            .ok_or_else(|| bad("`wait` must be true or false"))?,
    };
    let body = match request.get("command").map(parse_command) {
        Some(Ok(body)) => body,
        Some(Err(message)) => return Err(bad(&message)),
        None => return Err(bad("`command` is missing, e.g. {\"kind\": \"identify\"}")),
    };
    Ok(Request::Command {
        id: id.cloned(),
        device,
        body,
        wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::subscription::Mode;
    use serde_json::json;

    fn ok(text: &str) -> Request {
        parse(text, 100).unwrap()
    }

    fn err(text: &str) -> Refusal {
        parse(text, 100).unwrap_err()
    }

    #[test]
    fn every_request_parses() {
        assert_eq!(
            ok(r#"{"type":"ping","id":"p"}"#),
            Request::Ping {
                id: Some(json!("p"))
            }
        );
        assert_eq!(
            ok(r#"{"type":"unsubscribe"}"#),
            Request::Unsubscribe { id: None }
        );
        match ok(
            r#"{"type":"subscribe","id":1,"devices":[4],"mode":"aggregate","interval_ms":250}"#,
        ) {
            Request::Subscribe { id, subscription } => {
                assert_eq!(id, Some(json!(1)));
                assert_eq!(subscription.mode, Mode::Aggregate { interval_ms: 250 });
            }
            other => panic!("{other:?}"),
        }
        match ok(r#"{"type":"resume","epoch":"ab12","last_seq":41}"#) {
            Request::Resume {
                epoch,
                last_seq,
                subscription,
                ..
            } => {
                assert_eq!((epoch.as_str(), last_seq), ("ab12", 41));
                assert_eq!(subscription, Subscription::all_live());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ok(
                r#"{"type":"command","id":"c1","device":3,"command":{"kind":"set_interval","ms":500}}"#
            ),
            Request::Command {
                id: Some(json!("c1")),
                device: 3,
                body: CommandBody::SetInterval { ms: 500 },
                wait: true
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"history","id":"h","device":7,"sensor":"temp","from":10,"to":20,"max_points":5}"#
            ),
            Request::History {
                id: Some(json!("h")),
                device: 7,
                sensor: SensorRef::Name("temp".into()),
                range: RangeRequest {
                    from_ms: Some(10),
                    to_ms: Some(20),
                    max_points: Some(5)
                }
            }
        );
        assert_eq!(
            ok(r#"{"type":"history","device":7,"sensor":2}"#),
            Request::History {
                id: None,
                device: 7,
                sensor: SensorRef::Channel(2),
                range: RangeRequest::default()
            }
        );
    }

    #[test]
    fn malformed_messages_get_typed_errors_with_their_id() {
        let cases = [
            ("{not json", ClientError::BadJson),
            ("", ClientError::BadJson),
            ("[1,2]", ClientError::MissingType),
            ("42", ClientError::MissingType),
            (r#"{"type":7}"#, ClientError::MissingType),
            (r#"{"type":"launch","id":5}"#, ClientError::UnknownType),
            (
                r#"{"type":"subscribe","devices":"some"}"#,
                ClientError::BadSubscription,
            ),
            (
                r#"{"type":"resume","epoch":"x"}"#,
                ClientError::BadSubscription,
            ),
            (
                r#"{"type":"resume","epoch":1,"last_seq":2}"#,
                ClientError::BadSubscription,
            ),
            (
                r#"{"type":"command","command":{"kind":"reboot"}}"#,
                ClientError::BadCommand,
            ),
            (
                r#"{"type":"command","device":-1,"command":{"kind":"reboot"}}"#,
                ClientError::BadCommand,
            ),
            (r#"{"type":"command","device":3}"#, ClientError::BadCommand),
            (
                r#"{"type":"command","device":3,"wait":"no","command":{"kind":"reboot"}}"#,
                ClientError::BadCommand,
            ),
            (
                r#"{"type":"command","device":3,"command":{"kind":"set_interval"}}"#,
                ClientError::BadCommand,
            ),
            (r#"{"type":"history","sensor":1}"#, ClientError::BadHistory),
            (r#"{"type":"history","device":1}"#, ClientError::BadHistory),
            (
                r#"{"type":"history","device":1,"sensor":300}"#,
                ClientError::BadHistory,
            ),
            (
                r#"{"type":"history","device":1,"sensor":1,"from":"yesterday"}"#,
                ClientError::BadHistory,
            ),
            (
                r#"{"type":"history","device":1,"sensor":1,"max_points":-5}"#,
                ClientError::BadHistory,
            ),
        ];
        for (input, expected) in cases {
            let refusal = err(input);
            assert_eq!(refusal.error, expected, "{input}");
            assert!(!refusal.message.is_empty());
        }
        assert_eq!(err(r#"{"type":"launch","id":5}"#).id, Some(json!(5)));
    }

    #[test]
    fn ids_are_bounded_in_size_and_shape() {
        // Regression: any JSON up to 64 KiB was kept in every command
        // record, beyond the replay ring's per-record budget.
        let long = "x".repeat(MAX_ID_BYTES + 1);
        for bad in [
            format!(r#"{{"type":"ping","id":"{long}"}}"#),
            r#"{"type":"ping","id":{"a":1}}"#.to_string(),
            r#"{"type":"ping","id":[1,2]}"#.to_string(),
            r#"{"type":"ping","id":true}"#.to_string(),
        ] {
            let refusal = err(&bad);
            assert_eq!(refusal.error, ClientError::BadId, "{bad}");
            assert_eq!(refusal.id, None, "a bad id is not echoed");
        }
        let fits = "x".repeat(MAX_ID_BYTES);
        assert_eq!(
            ok(&format!(r#"{{"type":"ping","id":"{fits}"}}"#)),
            Request::Ping {
                id: Some(json!(fits))
            }
        );
        assert_eq!(
            ok(r#"{"type":"ping","id":12.5}"#),
            Request::Ping {
                id: Some(json!(12.5))
            }
        );
        assert_eq!(
            ok(r#"{"type":"ping","id":null}"#),
            Request::Ping { id: None }
        );
    }

    #[test]
    fn error_codes_are_indexed_and_distinct() {
        use strum::IntoEnumIterator as _;
        let all: Vec<ClientError> = ClientError::iter().collect();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            for other in &all[i + 1..] {
                assert_ne!(e.code(), other.code());
            }
        }
    }
}
