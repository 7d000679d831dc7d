//! The messages the hub sends on `/ws`, as pure functions returning JSON
//! text (docs/WEBSOCKET.md has an example of each). Stream messages carry
//! `seq`, the number of the event they come from, for `resume`.

use sensor_hub_protocol::{Channel, DeviceId, VERSION};
use serde::Serialize;

use crate::json::{json_datagram, JsonDatagram, JsonValue, Seq};
use crate::registry::{kind_of, CommandRecord, CommandState, DeviceStatus};
use crate::state::LiveDatagram;
use crate::stream::conflate::Folded;
use crate::stream::{DeviceStats, Event};
use crate::views::{DeviceView, StatsView};
use crate::ws::requests::ClientError;

/// Version of the hub, reported in `hello`.
pub const HUB_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct JsonFolded {
    device: DeviceId,
    channel: Channel,
    last: JsonValue,
    time_ms: u64,
    count: u64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
}

fn json_folded(((device, channel), f): &((DeviceId, Channel), Folded)) -> JsonFolded {
    let numeric_seen = f.min.is_finite();
    JsonFolded {
        device: *device,
        channel: *channel,
        last: JsonValue(f.last),
        time_ms: f.time_ms,
        count: f.count,
        min: numeric_seen.then_some(f.min),
        max: numeric_seen.then_some(f.max),
        mean: numeric_seen.then(|| f.sum / f.finite as f64),
    }
}

fn stats_view(s: &DeviceStats) -> StatsView {
    StatsView::from(s)
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum HubMessage<'a> {
    Hello {
        protocol: u8,
        hub_version: &'static str,
        server_time_ms: u64,
        epoch: &'a str,
        seq: u64,
    },
    Snapshot {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        epoch: &'a str,
        seq: u64,
        hub_time_ms: u64,
        devices: &'a [DeviceView],
    },
    Resync {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        reason: &'a str,
        epoch: &'a str,
        seq: u64,
        hub_time_ms: u64,
        devices: &'a [DeviceView],
    },
    Renumbered {
        epoch: &'a str,
        seq: u64,
    },
    Readings {
        seq: u64,
        hub_time_ms: u64,
        datagrams: Seq<'a, LiveDatagram, JsonDatagram<'a>>,
    },
    Aggregates {
        seq: u64,
        interval_ms: u64,
        sensors: Seq<'a, ((DeviceId, Channel), Folded), JsonFolded>,
    },
    DeviceStatus {
        seq: u64,
        device: DeviceId,
        status: DeviceStatus,
        previous: Option<DeviceStatus>,
        at_ms: u64,
    },
    DeviceRemoved {
        seq: u64,
        device: DeviceId,
        at_ms: u64,
    },
    DeviceStats {
        seq: u64,
        devices: Seq<'a, DeviceStats, StatsView>,
    },
    CommandStatus {
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        command_id: u32,
        device: DeviceId,
        kind: &'a str,
        state: CommandState,
        detail: Option<&'a str>,
        at_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'static str>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        of: &'a str,
        seq: u64,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
}

fn to_json(message: &HubMessage<'_>) -> String {
    // Serializing these types cannot fail: no maps with non-string keys,
    // no fallible Serialize impls.
    serde_json::to_string(message).unwrap_or_default()
}

/// `hello`, sent first on every connection: the stream's epoch and head.
pub fn hello(epoch: &str, seq: u64, now_ms: u64) -> String {
    to_json(&HubMessage::Hello {
        protocol: VERSION,
        hub_version: HUB_VERSION,
        server_time_ms: now_ms,
        epoch,
        seq,
    })
}

/// `snapshot` (answer to `subscribe`) or, with a `reason`, `resync`
/// (answer to a `resume` that cannot be honoured).
pub fn snapshot(
    id: Option<&serde_json::Value>,
    resync_reason: Option<&str>,
    epoch: &str,
    seq: u64,
    now_ms: u64,
    devices: &[DeviceView],
) -> String {
    to_json(&match resync_reason {
        None => HubMessage::Snapshot {
            id,
            epoch,
            seq,
            hub_time_ms: now_ms,
            devices,
        },
        Some(reason) => HubMessage::Resync {
            id,
            reason,
            epoch,
            seq,
            hub_time_ms: now_ms,
            devices,
        },
    })
}

/// `renumbered`: the stream goes on, with nothing missed, in `epoch`
/// after position `seq`.
pub fn renumbered(epoch: &str, seq: u64) -> String {
    to_json(&HubMessage::Renumbered { epoch, seq })
}

/// `readings` for (a filtered part of) the batch of event `seq`.
pub fn readings(seq: u64, batch: &[LiveDatagram], now_ms: u64) -> String {
    to_json(&HubMessage::Readings {
        seq,
        hub_time_ms: now_ms,
        datagrams: Seq(batch, json_datagram),
    })
}

/// What precedes a `readings` message's datagram list in the JSON
/// [`readings`] writes (the fields before it are numbers: it occurs once).
const DATAGRAM_LIST: &str = "\"datagrams\":[";

/// One `readings` message with the datagrams of several (as [`readings`]
/// writes them), in their order: the `seq` and `hub_time_ms` are the last
/// one's. Coalesced fan-out: several events leave as one message. The
/// datagram lists are copied as they are (made once per event and shared
/// by every client), never serialized again. `None` when a text is not a
/// `readings` message of that form, or none is given.
pub fn merge_readings<T: AsRef<str>>(texts: &[T]) -> Option<String> {
    let list = |text: &str| -> Option<(usize, usize)> {
        let start = text.find(DATAGRAM_LIST)? + DATAGRAM_LIST.len();
        let end = text.len().checked_sub(2).filter(|_| text.ends_with("]}"))?;
        (start <= end).then_some((start, end))
    };
    let last = texts.last()?.as_ref();
    let (head_end, _) = list(last)?;
    let mut merged = String::with_capacity(texts.iter().map(|t| t.as_ref().len()).sum());
    merged.push_str(&last[..head_end]);
    let mut first = true;
    for text in texts {
        let text = text.as_ref();
        let (start, end) = list(text)?;
        if start == end {
            continue; // an empty list adds nothing
        }
        if !first {
            merged.push(',');
        }
        first = false;
        merged.push_str(&text[start..end]);
    }
    merged.push_str("]}");
    Some(merged)
}

/// `aggregates`: what was folded up to event `seq`.
pub fn aggregates(seq: u64, interval_ms: u64, folded: &[((DeviceId, Channel), Folded)]) -> String {
    to_json(&HubMessage::Aggregates {
        seq,
        interval_ms,
        sensors: Seq(folded, json_folded),
    })
}

/// `device_stats` for (a filtered part of) the statistics of event `seq`.
pub fn device_stats(seq: u64, stats: &[DeviceStats]) -> String {
    to_json(&HubMessage::DeviceStats {
        seq,
        devices: Seq(stats, stats_view),
    })
}

/// The JSON of an event for a client that wants all of it. A
/// `command_status` is made without the request's `id`: the form every
/// client but the one that submitted the command receives (see
/// [`own_command_status`]).
pub fn event(seq: u64, event: &Event, now_ms: u64) -> String {
    match event {
        Event::Readings(batch) => readings(seq, batch, now_ms),
        Event::DeviceStats(stats) => device_stats(seq, stats),
        Event::DeviceStatus {
            device,
            status,
            previous,
            at_ms,
        } => to_json(&HubMessage::DeviceStatus {
            seq,
            device: *device,
            status: *status,
            previous: *previous,
            at_ms: *at_ms,
        }),
        Event::DeviceRemoved { device, at_ms } => to_json(&HubMessage::DeviceRemoved {
            seq,
            device: *device,
            at_ms: *at_ms,
        }),
        Event::CommandStatus(record) => command_status(seq, record, None),
    }
}

/// `command_status` for the client that submitted the command: with the
/// `id` of its request (when the request had one). Every other client gets
/// [`event`]'s form, without `id`, so an `id` always means "yours".
pub fn own_command_status(seq: u64, record: &CommandRecord) -> String {
    command_status(seq, record, record.origin.request_id.as_ref())
}

fn command_status(seq: u64, record: &CommandRecord, id: Option<&serde_json::Value>) -> String {
    to_json(&HubMessage::CommandStatus {
        seq,
        id,
        command_id: record.id,
        device: record.device,
        kind: kind_of(&record.body),
        state: record.state,
        detail: record.detail.as_deref(),
        at_ms: record.updated_ms,
        source: record.origin.source,
    })
}

/// `ack` of an `unsubscribe` or a successful `resume`.
pub fn ack(id: Option<&serde_json::Value>, of: &str, seq: u64) -> String {
    to_json(&HubMessage::Ack { id, of, seq })
}

/// `pong`, the answer to `ping`.
pub fn pong(id: Option<&serde_json::Value>) -> String {
    to_json(&HubMessage::Pong { id })
}

/// `error`, echoing the request's `id` if any.
pub fn error(code: ClientError, message: &str, id: Option<&serde_json::Value>) -> String {
    to_json(&HubMessage::Error {
        code: code.code(),
        message,
        id,
    })
}

#[cfg(test)]
mod tests;
