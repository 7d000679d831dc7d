//! The `/ws` endpoint: the upgrade handshake (done here rather than with
//! warp's wrapper so messages can be shared as `Utf8Bytes` without a copy
//! per client), the client-count limits (all clients, and per address, the
//! address taken from the listener's [`ConnectionInfo`]), and one
//! [`session`] per client, whose logic is the sans-IO [`client::Client`].
//! The API is documented in docs/WEBSOCKET.md.

pub mod client;
pub mod limits;
pub mod messages;
pub mod requests;
pub mod session;

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection};

use crate::auth::Principal;
use crate::connection::ConnectionInfo;
use crate::metrics::{counter, gauge, histograms, labeled_counters, Collector, DescriptorEncoder};
use crate::response::{json_error, response};
use client::{Eviction, WsMetrics};
use requests::ClientError;
pub use session::WsContext;
use strum::IntoEnumIterator as _;
use tokio_util::task::TaskTracker;

type Reply = Response<warp::hyper::body::Bytes>;

/// Read and write buffer of each connection, bytes.
const CONNECTION_BUFFER: usize = 8 * 1024;

/// Largest WebSocket write buffer per client before a send waits.
const MAX_WRITE_BUFFER: usize = 4 << 20;

/// The `GET /ws` filter: `gate` says who the client is (or refuses it);
/// client tasks are tracked by `tasks`.
pub fn route(
    ctx: WsContext,
    tasks: TaskTracker,
    gate: impl Filter<Extract = (Principal,), Error = Rejection> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(gate)
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<ConnectionInfo>())
        .map(
            move |headers: warp::http::HeaderMap,
                  principal: Principal,
                  on_upgrade,
                  connection: Option<ConnectionInfo>| {
                accept(&ctx, &tasks, &headers, principal, on_upgrade, connection)
            },
        )
}

/// The WebSocket families on `/metrics`.
#[derive(Debug)]
pub struct WsCollector(pub Arc<WsMetrics>);

impl Collector for WsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        gauge(
            &mut e,
            "sensor_hub_ws_clients",
            "WebSocket clients connected.",
            m.clients.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_ws_clients_accepted",
            "WebSocket clients accepted.",
            m.clients_accepted.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_ws_clients_rejected",
            "WebSocket upgrades refused because ws.max_clients were connected.",
            m.clients_rejected.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_ws_messages_sent",
            "Messages written to WebSocket clients.",
            m.messages_sent.get(),
        )?;
        gauge(
            &mut e,
            "sensor_hub_ws_queued_bytes",
            "Bytes waiting to be written to WebSocket clients (each bounded by ws.client_budget_bytes).",
            m.queued_bytes.get(),
        )?;
        gauge(
            &mut e,
            "sensor_hub_ws_total_budget_bytes",
            "Bytes all WebSocket clients together may have waiting (ws.total_budget_bytes); over it, those furthest behind are closed.",
            m.total_budget_bytes.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_ws_clients_rejected_per_address",
            "WebSocket upgrades refused (429) because ws.max_clients_per_address clients of that address were connected.",
            m.clients_rejected_per_address.get(),
        )?;
        counter(
            &mut e,
            "sensor_hub_ws_foreign_origin_refused",
            "WebSocket upgrades refused because the page's Origin was another site's.",
            m.foreign_origin_refused.get(),
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_ws_client_errors",
                "Client messages answered with an error, by code.",
            ),
            "code",
            ClientError::iter().map(|c| (c.code(), m.client_errors.get(c.index()))),
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_ws_evictions",
                "WebSocket clients closed by the hub, by reason.",
            ),
            "reason",
            Eviction::iter().map(|r| (r.name(), m.evictions.get(r.index()))),
        )?;
        histograms(
            &mut e,
            (
                "sensor_hub_ws_write_latency_seconds",
                "From the hub's UDP read of the oldest reading in a write to a WebSocket client to the end of that write, one sample per write (the hub's own share of a reading's latency; readings this hub read itself, not those a cluster shared).",
            ),
            [(None, m.write_latency.0.samples())],
        )
    }
}

fn plain(status: StatusCode, text: &'static str) -> Reply {
    response(status, "text/plain; charset=utf-8", text)
}

fn header_has(headers: &warp::http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn accept(
    ctx: &WsContext,
    tasks: &TaskTracker,
    headers: &warp::http::HeaderMap,
    principal: Principal,
    on_upgrade: Option<OnUpgrade>,
    connection: Option<ConnectionInfo>,
) -> Reply {
    // A browser sends `Origin`; a page of another site must not read the
    // stream or send commands (cross-site WebSocket hijacking). Clients
    // that are not browsers send none.
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !ctx.auth.policy().origin_allowed(
            origin.as_bytes(),
            headers.get(header::HOST).map(|h| h.as_bytes()),
        ) {
            ctx.metrics.foreign_origin_refused.inc();
            return plain(
                StatusCode::FORBIDDEN,
                "cross-origin WebSocket refused: /ws answers only pages the hub served itself (Origin must match Host)\n",
            );
        }
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    let is_upgrade = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::SEC_WEBSOCKET_VERSION, "13");
    let (Some(key), Some(on_upgrade), true) = (key, on_upgrade, is_upgrade) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13)\n",
        );
    };
    // Without a listener's ConnectionInfo (`warp::test`), no per-address cap.
    let peer = connection.map(|c| c.peer.ip());
    let address_slot = match peer {
        Some(ip) => match ctx.per_address.try_acquire(ip) {
            Some(slot) => Some(slot),
            None => {
                ctx.metrics.clients_rejected_per_address.inc();
                return json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "your address has {} WebSocket connections open already \
                         (ws.max_clients_per_address); close one (another tab?) and retry",
                        ctx.per_address.max()
                    ),
                );
            }
        },
        None => None,
    };
    let Some(slot) = ClientSlot::reserve(&ctx.metrics, ctx.config.max_clients) else {
        ctx.metrics.clients_rejected.inc();
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket clients (limit ws.max_clients); try again later\n",
        );
    };
    let accept_key = derive_accept_key(key.as_bytes());
    ctx.metrics.clients_accepted.inc();
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.config.max_client_message_bytes))
        .max_frame_size(Some(ctx.config.max_client_message_bytes))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        // Per-connection buffers: small, as a hub may have thousands of
        // clients (tungstenite's defaults are 128 KiB each).
        .read_buffer_size(CONNECTION_BUFFER)
        .write_buffer_size(CONNECTION_BUFFER);
    let session_ctx = ctx.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session::run(session_ctx, principal, ws, peer).await;
                drop((slot, address_slot));
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade did not complete"),
        }
    });
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// One place among `ws.max_clients`, released when dropped; the
/// `sensor_hub_ws_clients` gauge is the count of these.
#[derive(Debug)]
struct ClientSlot(Arc<WsMetrics>);

impl ClientSlot {
    fn reserve(metrics: &Arc<WsMetrics>, max: usize) -> Option<ClientSlot> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let taken = metrics.clients.inner().fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |n| (n < max).then_some(n + 1),
        );
        taken.ok().map(|_| ClientSlot(metrics.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.dec();
    }
}
