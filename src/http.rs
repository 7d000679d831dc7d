//! The HTTP application, built by one function ([`routes`]) so tests can
//! drive it with `warp::test` without a server: embedded dashboard files,
//! `GET /api/devices`, `GET /healthz`, `GET /metrics` and `/ws`.

use serde::Serialize;
use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection, Reply};

use crate::assets;
use crate::hub::{unix_ms, Hub};
use crate::state::DeviceState;
use crate::ws;
use crate::ws::messages::JsonValue;

/// A response with a fixed body and the headers every answer carries.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

#[derive(Serialize)]
struct SensorView {
    channel: u8,
    value: JsonValue,
    time_ms: u64,
    received_ms: u64,
}

#[derive(Serialize)]
struct DeviceView {
    id: u32,
    addr: String,
    first_seen_ms: u64,
    last_seen_ms: u64,
    datagrams: u64,
    readings: u64,
    bytes: u64,
    last_seq: u32,
    sensors: Vec<SensorView>,
}

impl From<&DeviceState> for DeviceView {
    fn from(d: &DeviceState) -> Self {
        DeviceView {
            id: d.id,
            addr: d.addr.to_string(),
            first_seen_ms: d.first_seen_ms,
            last_seen_ms: d.last_seen_ms,
            datagrams: d.datagrams,
            readings: d.readings,
            bytes: d.bytes,
            last_seq: d.last_seq,
            sensors: d
                .sensors
                .iter()
                .map(|(&channel, s)| SensorView {
                    channel,
                    value: JsonValue(s.value),
                    time_ms: s.time_ms,
                    received_ms: s.received_ms,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct DevicesView {
    hub_time_ms: u64,
    devices: Vec<DeviceView>,
}

/// JSON body of `GET /api/devices`.
pub fn devices_json(hub: &Hub) -> String {
    let view = {
        let state = hub.lock_state();
        DevicesView {
            hub_time_ms: unix_ms(),
            devices: state
                .devices_by_id()
                .into_iter()
                .map(DeviceView::from)
                .collect(),
        }
    };
    serde_json::to_string(&view).unwrap_or_default()
}

/// The whole HTTP application.
pub fn routes(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let get = warp::get();
    let api_hub = hub.clone();
    let devices = warp::path!("api" / "devices")
        .and(get)
        .map(move || response(StatusCode::OK, "application/json", devices_json(&api_hub)));
    let healthz = warp::path!("healthz")
        .and(get)
        .map(|| response(StatusCode::OK, "application/json", r#"{"status":"ok"}"#));
    let metrics_hub = hub.clone();
    let metrics = warp::path!("metrics").and(get).map(move || {
        response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_hub.metrics_text(),
        )
    });
    let files = get
        .and(warp::path::full())
        .and_then(|path: warp::path::FullPath| async move {
            match assets::find(path.as_str()) {
                Some(a) => Ok(response(StatusCode::OK, a.content_type, a.body)),
                None => Err(warp::reject::not_found()),
            }
        });
    ws::route(hub).or(devices).or(healthz).or(metrics).or(files)
}

#[cfg(test)]
mod tests;
