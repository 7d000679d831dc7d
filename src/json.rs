//! JSON building blocks shared by the WebSocket messages and the HTTP API:
//! sensor values, and slices serialized through a mapping without copying.

use sensor_hub_protocol::{Reading, Value};
use serde::ser::Serializer;
use serde::Serialize;

use crate::state::LiveDatagram;

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

/// A slice serialized as a JSON array, each element mapped on the fly.
#[derive(Debug)]
pub struct Seq<'a, T, J>(pub &'a [T], pub fn(&'a T) -> J);

impl<'a, T, J: Serialize> Serialize for Seq<'a, T, J> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

/// One reading.
#[derive(Serialize, Debug)]
pub struct JsonReading {
    channel: u8,
    value: JsonValue,
}

/// One accepted datagram.
#[derive(Serialize, Debug)]
pub struct JsonDatagram<'a> {
    device: u32,
    seq: u32,
    time_ms: u64,
    received_ms: u64,
    readings: Seq<'a, Reading, JsonReading>,
}

fn json_reading(r: &Reading) -> JsonReading {
    JsonReading {
        channel: r.channel,
        value: JsonValue(r.value),
    }
}

/// A datagram as JSON.
pub fn json_datagram(d: &LiveDatagram) -> JsonDatagram<'_> {
    JsonDatagram {
        device: d.device,
        seq: d.seq,
        time_ms: d.time_ms,
        received_ms: d.received_ms,
        readings: Seq(&d.readings, json_reading),
    }
}
