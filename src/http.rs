//! The HTTP application, built by one function ([`routes`]) so tests can
//! drive it with `warp::test` without a server: embedded dashboard files,
//! `GET /api/devices`, `POST /api/devices/{id}/commands`,
//! `GET /api/devices/{id}/sensors/{sensor}/history`, `GET /api/hub`,
//! `GET /healthz`, `GET /metrics` and `/ws`.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection, Reply};

use crate::assets;
use crate::command_json::parse_command;
use crate::history::query::{RangeRequest, SensorRef};
use crate::history_api::{self, HistoryError};
use crate::hub::{unix_ms, Hub};
use crate::registry::{kind_of, CommandRecord, CommandState, Origin};
use crate::views::{self, DeviceView};
use crate::ws;

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
struct DevicesView<'a> {
    hub_time_ms: u64,
    devices: Vec<DeviceView<'a>>,
}

/// JSON body of `GET /api/devices`: every device the data plane or the
/// control plane knows (see [`views`]).
pub fn devices_json(hub: &Hub) -> String {
    let state = hub.lock_state();
    let now = unix_ms();
    let view = DevicesView {
        hub_time_ms: now,
        devices: views::devices(&state, None, now),
    };
    serde_json::to_string(&view).unwrap_or_default()
}

/// A command as the HTTP API reports it.
#[derive(Serialize)]
struct CommandView<'a> {
    command_id: u32,
    device: u32,
    kind: &'a str,
    state: CommandState,
    detail: Option<&'a str>,
    created_ms: u64,
    updated_ms: u64,
}

fn command_json(record: &CommandRecord) -> String {
    serde_json::to_string(&CommandView {
        command_id: record.id,
        device: record.device,
        kind: kind_of(&record.body),
        state: record.state,
        detail: record.detail.as_deref(),
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
    })
    .unwrap_or_default()
}

fn json_error(status: StatusCode, message: String) -> Response<Bytes> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(status, "application/json", body)
}

/// Query of `POST /api/devices/{id}/commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandQuery {
    /// Queue the command while the device has no session (default true).
    wait: Option<bool>,
    /// How long this request waits for a final state, ms (default: the
    /// command TTL plus one second; at most ten minutes).
    timeout_ms: Option<u64>,
}

/// Submits a command and answers with its final state (200) or, if the
/// request's wait ends first, its current state (202).
async fn submit_command(
    hub: Hub,
    device: u32,
    query: CommandQuery,
    body: Bytes,
) -> Response<Bytes> {
    let command: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let message =
                format!("the body must be a JSON command like {{\"kind\":\"identify\"}}: {e}");
            return json_error(StatusCode::BAD_REQUEST, message);
        }
    };
    let body = match parse_command(&command) {
        Ok(body) => body,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let default_wait = hub.config().commands.ttl_ms.saturating_add(1_000);
    let wait = Duration::from_millis(query.timeout_ms.unwrap_or(default_wait).min(600_000));
    let mut updates = hub.subscribe_commands();
    let id = hub.control(|r, now| {
        r.submit(
            device,
            body,
            query.wait.unwrap_or(true),
            Origin::default(),
            now,
        )
    });
    let current = |hub: &Hub| hub.lock_state().registry.command(id).cloned();
    let mut record = current(&hub);
    let deadline = tokio::time::Instant::now() + wait;
    while !record.as_ref().is_some_and(|r| r.state.is_final()) {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => break,
            // Wake-ups only: the registry has the newest state.
            Ok(Ok(update)) if update.id == id => record = current(&hub).or(Some(update)),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => record = current(&hub).or(record),
        }
    }
    match record {
        Some(r) if r.state.is_final() => {
            response(StatusCode::OK, "application/json", command_json(&r))
        }
        Some(r) => response(StatusCode::ACCEPTED, "application/json", command_json(&r)),
        None => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the command was retired before it could be reported (commands.retain_finished)".into(),
        ),
    }
}

/// `from`, `to` and `max_points` of a history query string.
fn range_request(query: &HashMap<String, String>) -> Result<RangeRequest, String> {
    let mut request = RangeRequest::default();
    for (key, value) in query {
        let slot = match key.as_str() {
            "from" => &mut request.from_ms,
            "to" => &mut request.to_ms,
            "max_points" => &mut request.max_points,
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; use from, to (Unix ms) and max_points"
                ))
            }
        };
        *slot = Some(value.parse().map_err(|_| {
            format!("`{key}` must be a whole number (Unix ms for from/to), not {value:?}")
        })?);
    }
    Ok(request)
}

/// `GET /api/devices/{id}/sensors/{sensor}/history`.
async fn history(
    hub: Hub,
    device: u32,
    sensor: String,
    query: HashMap<String, String>,
) -> Response<Bytes> {
    let request = match range_request(&query) {
        Ok(r) => r,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let sensor = percent_encoding::percent_decode_str(&sensor).decode_utf8_lossy();
    match history_api::answer(&hub, device, &SensorRef::parse(&sensor), &request, None).await {
        Ok(answer) => response(StatusCode::OK, "application/json", answer.to_json()),
        Err(e) => {
            if let HistoryError::Failed(_) = e {
                tracing::warn!(error = %e, "history query failed");
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_error(status, e.to_string())
        }
    }
}

/// The whole HTTP application.
pub fn routes(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let get = warp::get();
    let api_hub = hub.clone();
    let devices = warp::path!("api" / "devices")
        .and(get)
        .map(move || response(StatusCode::OK, "application/json", devices_json(&api_hub)));
    let hub_view = hub.clone();
    let hub_api = warp::path!("api" / "hub")
        .and(get)
        .map(move || response(StatusCode::OK, "application/json", hub_view.hub_json()));
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
    let command_hub = hub.clone();
    let commands = warp::path!("api" / "devices" / u32 / "commands")
        .and(warp::post())
        .and(warp::query::<CommandQuery>())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::bytes())
        .then(move |device, query, body| submit_command(command_hub.clone(), device, query, body));
    let history_hub = hub.clone();
    let history = warp::path!("api" / "devices" / u32 / "sensors" / String / "history")
        .and(get)
        .and(warp::query::<HashMap<String, String>>())
        .then(move |device, sensor, query| history(history_hub.clone(), device, sensor, query));
    ws::route(hub)
        .or(devices)
        .or(commands)
        .or(history)
        .or(hub_api)
        .or(healthz)
        .or(metrics)
        .or(files)
}

#[cfg(test)]
mod tests;
