//! The HTTP application, built by one function ([`routes`]) from an
//! [`HttpContext`], so tests can drive it with `warp::test` without a
//! server: embedded dashboard files, `GET /api/devices`,
//! `POST /api/devices/{id}/commands`,
//! `GET /api/devices/{id}/sensors/{sensor}/history`, `GET /api/hub`,
//! `GET /healthz`, `GET /metrics`, `/ws`, the account endpoints
//! ([`account`]) and the owner's device administration ([`devices`]). Every request passes [`access`] first: the Host check,
//! then credentials and a role per route (only `/healthz`, the login page
//! and its files, and `POST /api/login` are open). docs/openapi.yaml
//! describes every path, and a test checks real answers against it.

pub mod access;
pub mod account;
pub mod devices;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use strum::IntoEnumIterator as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;
use warp::http::{Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection, Reply};

use crate::assets;
use crate::auth::{Auth, Denied, Role};
use crate::command_json::parse_command;
use crate::connection::ConnectionInfo;
use crate::core::{Core, SubmitError};
use crate::device_file::DeviceDirectory;
use crate::history::query::{RangeRequest, SensorRef};
use crate::history_api::{self, HistoryError};
use crate::ingest::IngestMetrics;
use crate::metrics;
use crate::registry::{kind_of, CommandRecord, CommandState, DeviceStatus, Origin};
use crate::response::{json_error, response};
use crate::state::DropReason;
use crate::supervisor::Health;
use crate::views::DeviceView;
use crate::ws::{self, WsContext};

/// How long `POST /api/devices/{id}/commands` waits for a final state when
/// the request gives no `timeout_ms`: long enough for a device on the LAN
/// to answer, short enough that a script never hangs for the whole
/// command TTL; the answer is then 202 with the current state.
pub const DEFAULT_COMMAND_WAIT_MS: u64 = 5_000;
/// Longest wait a `timeout_ms` may ask for, ms (ten minutes); larger values
/// are capped to it.
pub const MAX_COMMAND_WAIT_MS: u64 = 600_000;

/// Everything the HTTP application needs.
#[derive(Debug, Clone)]
pub struct HttpContext {
    /// The hub's state.
    pub core: Arc<Core>,
    /// What `/ws` clients need.
    pub ws: WsContext,
    /// Tracks WebSocket client tasks.
    pub tasks: TaskTracker,
    /// Every family of `/metrics`.
    pub metrics: Arc<metrics::Registry>,
    /// Which tasks failed (`/healthz`).
    pub health: Health,
    /// The UDP socket's figures (for `/api/hub`).
    pub ingest: Arc<IngestMetrics>,
    /// When the hub started (monotonic ms of the context's clock).
    pub started_mono_ms: u64,
    /// Access control.
    pub auth: Auth,
    /// `metrics.open`: `/metrics` without a token.
    pub metrics_open: bool,
    /// The device file (adopt and forget change it).
    pub devices: Arc<DeviceDirectory>,
    /// The MQTT bridge's state (`/api/hub`'s `mqtt`).
    pub mqtt: Arc<crate::mqtt::MqttStatus>,
    /// The cluster link, if the hub is in a cluster (`/healthz`,
    /// `/api/hub`'s `cluster`).
    pub cluster: Option<Arc<crate::cluster::ClusterStatus>>,
}

#[derive(Serialize)]
struct DevicesView {
    hub_time_ms: u64,
    devices: Vec<DeviceView>,
}

/// JSON body of `GET /api/devices`: every device the data plane or the
/// control plane knows (copied out under the core's lock, serialised
/// after it).
pub fn devices_json(ctx: &HttpContext) -> String {
    let now = ctx.ws.clock.now();
    let snapshot = ctx.core.snapshot(None, now);
    let view = DevicesView {
        hub_time_ms: now.wall_ms,
        devices: snapshot.devices,
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

/// Largest body `POST /api/devices/{id}/commands` reads, bytes.
pub const MAX_COMMAND_BODY_BYTES: u64 = 16 * 1024;

/// Query of `POST /api/devices/{id}/commands` (public for the fuzz
/// target `http_query`).
#[derive(Debug, Default, PartialEq)]
pub struct CommandQuery {
    /// Queue the command while the device has no session (default true).
    pub wait: Option<bool>,
    /// How long this request waits for a final state, ms (default
    /// [`DEFAULT_COMMAND_WAIT_MS`], at most [`MAX_COMMAND_WAIT_MS`]).
    pub timeout_ms: Option<u64>,
}

impl CommandQuery {
    /// The query string's fields, or what is wrong with them (a message for
    /// the client).
    pub fn parse(query: &HashMap<String, String>) -> Result<CommandQuery, String> {
        let mut parsed = CommandQuery::default();
        for (key, value) in query {
            match key.as_str() {
                "wait" => {
                    parsed.wait = Some(
                        value
                            .parse()
                            .map_err(|_| format!("`wait` must be true or false, not {value:?}"))?,
                    )
                }
                "timeout_ms" => {
                    parsed.timeout_ms = Some(value.parse().map_err(|_| {
                        format!(
                            "`timeout_ms` must be a whole number of milliseconds \
                             (at most {MAX_COMMAND_WAIT_MS}), not {value:?}"
                        )
                    })?)
                }
                other => {
                    return Err(format!(
                        "unknown query parameter `{other}`; use wait (true or false) \
                         and timeout_ms (milliseconds)"
                    ))
                }
            }
        }
        Ok(parsed)
    }

    /// How long the request waits for a final state.
    fn wait(&self) -> Duration {
        let ms = self.timeout_ms.unwrap_or(DEFAULT_COMMAND_WAIT_MS);
        Duration::from_millis(ms.min(MAX_COMMAND_WAIT_MS))
    }
}

/// The status that tells what happened to a command: 200 once it reached
/// a final state of the device (`succeeded`, `failed`) or of its TTL
/// (`timed_out`), 409 when the hub refused it (`rejected`), 202 while it
/// is still on its way (`queued`, `sent`, `acked`).
fn command_status(state: CommandState) -> StatusCode {
    match state {
        CommandState::Rejected => StatusCode::CONFLICT,
        s if s.is_final() => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    }
}

/// Submits a command and answers: 404 for an unknown device (nothing is
/// submitted), 409 when the hub rejects it at once, 200 once it reaches
/// `succeeded`, `failed` or `timed_out`, or 202 with its current state if
/// the request's wait ends first.
async fn submit_command(
    ctx: HttpContext,
    device: u32,
    query: HashMap<String, String>,
    body: Bytes,
) -> Response<Bytes> {
    let query = match CommandQuery::parse(&query) {
        Ok(q) => q,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let command: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let message =
                format!("the body must be a JSON command like {{\"kind\":\"identify\"}}: {e}");
            return json_error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let body = match parse_command(&command) {
        Ok(body) => body,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let wait = query.wait();
    let mut updates = ctx.core.command_updates();
    let submitted = ctx.core.submit_command(
        device,
        body,
        query.wait.unwrap_or(true),
        Origin::default(),
        ctx.ws.clock.now(),
    );
    let mut record = match submitted {
        Ok(record) => record,
        Err(e @ SubmitError::UnknownDevice(_)) => {
            return json_error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e @ SubmitError::Retired(_)) => {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(e @ SubmitError::ClusterBusy) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(SubmitError::Forwarded { device, ticket }) => {
            return forwarded_command(device, ticket, wait, updates).await
        }
    };
    let id = record.id;
    let deadline = tokio::time::Instant::now() + wait;
    while !record.state.is_final() {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => break,
            // Wake-ups only: the core has the newest state.
            Ok(Ok(update)) if update.id == id => {
                record = ctx.core.command(id).unwrap_or(update);
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                if let Some(current) = ctx.core.command(id) {
                    record = current;
                }
            }
        }
    }
    response(
        command_status(record.state),
        "application/json",
        command_json(&record),
    )
}

/// Answers a command handed to the hub holding its device: its statuses
/// come back through the shared stream, found by the ticket in their
/// origin. 200 once final, else 202 with the latest state seen (or
/// `"forwarded"` if none came back before `wait`).
async fn forwarded_command(
    device: u32,
    ticket: u64,
    wait: Duration,
    mut updates: tokio::sync::broadcast::Receiver<CommandRecord>,
) -> Response<Bytes> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut latest: Option<CommandRecord> = None;
    while !latest.as_ref().is_some_and(|r| r.state.is_final()) {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => break,
            Ok(Ok(update)) if update.origin.ticket == Some(ticket) => latest = Some(update),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
        }
    }
    match latest {
        Some(record) => response(
            command_status(record.state),
            "application/json",
            command_json(&record),
        ),
        None => response(
            StatusCode::ACCEPTED,
            "application/json",
            serde_json::json!({
                "device": device,
                "state": "forwarded",
                "detail": "handed to the hub holding the device; its statuses reach every client of the stream",
            })
            .to_string(),
        ),
    }
}

/// `from`, `to` and `max_points` of a history query string (public for
/// the fuzz target `http_query`).
pub fn range_request(query: &HashMap<String, String>) -> Result<RangeRequest, String> {
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

/// `GET /api/devices/{id}/sensors/{sensor}/history`, from a client at
/// `connection` (absent under `warp::test`: no per-address cap).
async fn history(
    ctx: HttpContext,
    device: u32,
    sensor: String,
    query: HashMap<String, String>,
    connection: Option<ConnectionInfo>,
) -> Response<Bytes> {
    let request = match range_request(&query) {
        Ok(r) => r,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let sensor = percent_encoding::percent_decode_str(&sensor).decode_utf8_lossy();
    let sensor = SensorRef::parse(&sensor);
    let now = ctx.ws.clock.now();
    let peer = connection.map(|c| c.peer.ip());
    let gate = &ctx.ws.history;
    match history_api::answer(&ctx.core, gate, peer, device, &sensor, &request, None, now).await {
        Ok(answer) => response(StatusCode::OK, "application/json", answer.to_json()),
        Err(e) => {
            if let HistoryError::Failed(_) = e {
                tracing::warn!(error = %e, "history query failed");
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_error(status, &e.to_string())
        }
    }
}

/// The cluster part of `/healthz` and `/api/hub`: the link as shown, and
/// whether this hub's stream is the cluster's right now.
fn cluster_json(core: &Core, status: &crate::cluster::ClusterStatus) -> (bool, serde_json::Value) {
    let view = status.view();
    let figures = core.cluster_figures();
    let linked = view.link == crate::cluster::LinkState::Up
        && figures
            .as_ref()
            .is_some_and(|f| f.mode == crate::outbox::LinkMode::Linked);
    let mut json = serde_json::json!({
        "hub": view.hub,
        "link": if linked { "up" } else if view.link == crate::cluster::LinkState::Connecting { "connecting" } else { "down" },
        "since_ms": view.since_ms,
        "error": view.error,
        "hubs": view.hubs,
    });
    if let Some(f) = figures {
        json["epoch"] = f.epoch.to_string().into();
        json["position"] = f.read_position.into();
        json["local_devices"] = f.local_devices.into();
        json["remote_devices"] = f.remote_devices.into();
        json["outbox_events"] = f.outbox_events.into();
        json["events_shared"] = f.outbox.shared.into();
        json["events_shared_late"] = f.outbox.shared_late.into();
        json["events_unshared"] = f.outbox.unshared.into();
        json["datagrams_unshared"] = f.outbox.unshared_datagrams.into();
    }
    (linked, json)
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 naming the tasks that
/// ended unexpectedly.
/// In a cluster, also 503 `"status":"degraded"` while the hub is not
/// linked: it serves its own devices and browsers, but the cluster's
/// delivery through it has stopped.
fn healthz(
    health: &Health,
    cluster: Option<(&Core, &crate::cluster::ClusterStatus)>,
) -> Response<Bytes> {
    let failed = health.failed();
    let cluster = cluster.map(|(core, status)| cluster_json(core, status));
    let mut body = if failed.is_empty() {
        serde_json::json!({ "status": "ok" })
    } else {
        serde_json::json!({ "status": "failed", "failed_tasks": failed })
    };
    let mut ok = failed.is_empty();
    if let Some((linked, json)) = cluster {
        if ok && !linked {
            body["status"] = "degraded".into();
            ok = false;
        }
        body["cluster"] = serde_json::json!({
            "hub": json["hub"],
            "link": json["link"],
            "since_ms": json["since_ms"],
            "error": json["error"],
        });
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    response(code, "application/json", body.to_string())
}

/// The JSON of `GET /api/hub`: the same figures as `/metrics`.
pub fn hub_json(ctx: &HttpContext) -> String {
    let s = ctx.core.stats();
    let ws = &ctx.ws.metrics;
    let i = &s.ingest;
    let by_label = |pairs: Vec<(&'static str, u64)>| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect()
    };
    let uptime_ms = ctx
        .ws
        .clock
        .now()
        .mono_ms
        .saturating_sub(ctx.started_mono_ms);
    let view = serde_json::json!({
        "hub_version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime_ms as f64 / 1_000.0,
        "datagrams_received": i.datagrams_received,
        "bytes_received": i.bytes_received,
        "datagrams_accepted": i.datagrams_accepted,
        "datagrams_duplicated": i.datagrams_duplicated,
        "readings_accepted": i.readings_accepted,
        "dropped": by_label(DropReason::iter().map(|r| (r.name(), i.dropped[r.index()])).collect()),
        "kernel_drops": ctx.ingest.kernel().map(|k| k.drops),
        "udp_receive_buffer_bytes": ctx.ingest.recv_buffer.granted(),
        "udp_receive_sockets": ctx.ingest.sockets(),
        "devices": s.devices,
        "devices_by_status": by_label(DeviceStatus::iter().map(|st| (st.name(), s.device_status[st as usize] as u64)).collect()),
        "sequence": {
            "received": s.seq_totals.received,
            "lost": s.seq_totals.lost,
            "reordered": s.seq_totals.reordered,
            "duplicated": s.seq_totals.duplicated,
            "restarts": s.seq_totals.restarts,
        },
        "latency_ms": {
            "p50": s.latency.quantile_ms(0.5),
            "p99": s.latency.quantile_ms(0.99),
            "count": s.latency.count(),
        },
        "ws_clients": ws.clients.get(),
        "ws_messages_sent": ws.messages_sent.get(),
        "ws_queued_bytes": ws.queued_bytes.get(),
        "ws_evictions": by_label(ws::client::Eviction::iter().map(|e| (e.name(), ws.evictions.get(e.index()))).collect()),
        "control_sessions": s.control_sessions,
        "commands_finished": by_label(CommandState::iter().filter(|st| st.is_final()).map(|st| (st.name(), s.registry.commands_final[st.index()])).collect()),
        "stream_seq": s.stream_seq,
        "history": ctx.core.history().map(|h| h.stats().json()),
        "mqtt": ctx.mqtt.json(),
        "cluster": ctx.cluster.as_deref().map(|c| cluster_json(&ctx.core, c).1),
    });
    view.to_string()
}

/// Answers a request that no route took with the API's JSON error: no
/// such path (404), a method the path does not take (405), a command body
/// without a length (411) or too large (413), or one warp could not read
/// (400). Checked in warp's own order of preference.
async fn json_rejection(rejection: Rejection) -> Result<Response<Bytes>, Infallible> {
    use warp::reject::{InvalidQuery, LengthRequired, MethodNotAllowed, PayloadTooLarge};
    if let Some(access::Refused(denied)) = rejection.find() {
        return Ok(access::refusal(denied));
    }
    let (status, message) = if rejection.find::<PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {MAX_COMMAND_BODY_BYTES} bytes; \
                 a command is a small JSON object like {{\"kind\":\"identify\"}}"
            ),
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "send the body with a Content-Length header (chunked bodies are not accepted)".into(),
        )
    } else if rejection.find::<InvalidQuery>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "the query string is malformed; write it as name=value pairs joined by &".into(),
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "this path does not take that method; docs/openapi.yaml lists each path's methods"
                .into(),
        )
    } else if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "no such path; docs/openapi.yaml lists the hub's paths".into(),
        )
    } else {
        tracing::debug!(?rejection, "HTTP request refused");
        (
            StatusCode::BAD_REQUEST,
            format!(
                "the hub could not read this request ({rejection:?}); check its headers and body"
            ),
        )
    };
    Ok(json_error(status, &message))
}

/// Largest body `POST /api/login` and `POST /api/tokens` read, bytes.
pub const MAX_ACCOUNT_BODY_BYTES: u64 = 4 * 1024;

/// Files anyone may load: the login page needs them before a login.
const PUBLIC_FILES: [&str; 5] = [
    "/login.html",
    "/login.js",
    "/style.css",
    "/favicon.svg",
    "/favicon.ico",
];

/// An embedded file: public ones for anyone; the others for viewers, and
/// a browser without a session that asks for a page is sent to the login
/// page.
fn file(
    ctx: &HttpContext,
    path: &str,
    facts: &access::RequestFacts,
) -> Result<Response<Bytes>, Rejection> {
    let Some(asset) = assets::find(path) else {
        return Err(warp::reject::not_found());
    };
    if !PUBLIC_FILES.contains(&path) {
        if let Err(denied) = access::check(&ctx.auth, &ctx.ws.clock, facts, Role::Viewer) {
            ctx.auth.count(&denied);
            if denied == Denied::Unauthenticated && asset.content_type.starts_with("text/html") {
                let mut to_login = response(
                    StatusCode::SEE_OTHER,
                    "text/plain; charset=utf-8",
                    "log in first: /login.html\n",
                );
                to_login.headers_mut().insert(
                    warp::http::header::LOCATION,
                    warp::http::HeaderValue::from_static("/login.html"),
                );
                return Ok(to_login);
            }
            return Err(warp::reject::custom(access::Refused(denied)));
        }
    }
    Ok(response(StatusCode::OK, asset.content_type, asset.body))
}

/// The whole HTTP application.
pub fn routes(
    ctx: HttpContext,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let get = warp::get();
    let (auth, clock) = (ctx.auth.clone(), ctx.ws.clock.clone());
    let viewer = access::require(auth.clone(), clock.clone(), Role::Viewer);
    let operator = access::require(auth.clone(), clock.clone(), Role::Operator);
    let owner = access::require(auth.clone(), clock.clone(), Role::Owner);
    let json = access::json_body(auth.clone());
    let api_ctx = ctx.clone();
    let devices = warp::path!("api" / "devices")
        .and(get)
        .and(viewer.clone())
        .map(move |_| response(StatusCode::OK, "application/json", devices_json(&api_ctx)));
    let hub_ctx = ctx.clone();
    let hub_api = warp::path!("api" / "hub")
        .and(get)
        .and(viewer.clone())
        .map(move |_| response(StatusCode::OK, "application/json", hub_json(&hub_ctx)));
    let health = ctx.health.clone();
    let health_core = ctx.core.clone();
    let health_cluster = ctx.cluster.clone();
    let healthz = warp::path!("healthz").and(get).map(move || {
        healthz(
            &health,
            health_cluster.as_deref().map(|c| (&*health_core, c)),
        )
    });
    let registry = ctx.metrics.clone();
    let metrics_ctx = ctx.clone();
    let metrics = warp::path!("metrics")
        .and(get)
        .and(access::facts())
        .and_then(move |facts: access::RequestFacts| {
            let ctx = metrics_ctx.clone();
            async move {
                if ctx.metrics_open {
                    return Ok(());
                }
                access::check(&ctx.auth, &ctx.ws.clock, &facts, Role::Viewer)
                    .map(|_| ())
                    .map_err(|denied| {
                        ctx.auth.count(&denied);
                        warp::reject::custom(access::Refused(denied))
                    })
            }
        })
        .map(move |()| {
            response(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                metrics::render(&registry),
            )
        });
    let files_ctx = ctx.clone();
    let files = get.and(warp::path::full()).and(access::facts()).and_then(
        move |path: warp::path::FullPath, facts: access::RequestFacts| {
            let result = file(&files_ctx, path.as_str(), &facts);
            async move { result }
        },
    );
    let command_ctx = ctx.clone();
    let commands = warp::path!("api" / "devices" / u32 / "commands")
        .and(warp::post())
        .and(operator)
        .and(json.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::body::content_length_limit(MAX_COMMAND_BODY_BYTES))
        .and(warp::body::bytes())
        .then(move |device, _, query, body| {
            submit_command(command_ctx.clone(), device, query, body)
        });
    let history_ctx = ctx.clone();
    let history = warp::path!("api" / "devices" / u32 / "sensors" / String / "history")
        .and(get)
        .and(viewer.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<ConnectionInfo>())
        .then(move |device, sensor, _, query, connection| {
            history(history_ctx.clone(), device, sensor, query, connection)
        });
    let login_ctx = ctx.clone();
    let login = warp::path!("api" / "login")
        .and(warp::post())
        .and(json.clone())
        .and(access::facts())
        .and(warp::body::content_length_limit(MAX_ACCOUNT_BODY_BYTES))
        .and(warp::body::bytes())
        .then(move |facts, body| account::login(login_ctx.clone(), facts, body));
    let logout_ctx = ctx.clone();
    let logout = warp::path!("api" / "logout")
        .and(warp::post())
        .and(viewer.clone())
        .and(json.clone())
        .and(access::facts())
        .map(move |_, facts| account::logout(&logout_ctx, &facts));
    let me = warp::path!("api" / "me")
        .and(get)
        .and(viewer.clone())
        .map(|principal| account::me(&principal));
    let tokens_ctx = ctx.clone();
    let list_tokens = warp::path!("api" / "tokens")
        .and(get)
        .and(owner.clone())
        .map(move |_| account::list_tokens(&tokens_ctx));
    let create_ctx = ctx.clone();
    let create_token = warp::path!("api" / "tokens")
        .and(warp::post())
        .and(owner.clone())
        .and(json.clone())
        .and(warp::body::content_length_limit(MAX_ACCOUNT_BODY_BYTES))
        .and(warp::body::bytes())
        .then(move |_, body| account::create_token(create_ctx.clone(), body));
    let adopt_ctx = ctx.clone();
    let adopt = warp::path!("api" / "devices" / u32 / "adopt")
        .and(warp::post())
        .and(owner.clone())
        .and(json.clone())
        .and(warp::body::content_length_limit(MAX_ACCOUNT_BODY_BYTES))
        .and(warp::body::bytes())
        .then(move |device, _, body| devices::adopt(adopt_ctx.clone(), device, body));
    let forget_ctx = ctx.clone();
    let forget = warp::path!("api" / "devices" / u32)
        .and(warp::delete())
        .and(owner.clone())
        .then(move |device, _| devices::forget(forget_ctx.clone(), device));
    let revoke_ctx = ctx.clone();
    let revoke_token = warp::path!("api" / "tokens" / String)
        .and(warp::delete())
        .and(owner)
        .then(move |id, _| account::revoke_token(revoke_ctx.clone(), id));
    let app = ws::route(ctx.ws.clone(), ctx.tasks.clone(), viewer)
        .or(devices)
        .or(commands)
        .or(history)
        .or(hub_api)
        .or(healthz)
        .or(metrics)
        .or(login)
        .or(logout)
        .or(me)
        .or(list_tokens)
        .or(create_token)
        .or(revoke_token)
        .or(adopt)
        .or(forget)
        .or(files);
    access::host(auth).and(app).recover(json_rejection)
}

#[cfg(test)]
mod tests;
