//! The `/ws` endpoint: the upgrade handshake (done here rather than with
//! warp's wrapper so messages can be shared as `Utf8Bytes` without a copy
//! per client), the client-count limit, and one [`session`] per client.
//! The API is documented in docs/WEBSOCKET.md.

pub mod json;
pub mod limits;
pub mod messages;
pub mod requests;
pub mod session;

use std::sync::atomic::Ordering;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection};

use crate::hub::Hub;
use crate::metrics::bump;

type Reply = Response<warp::hyper::body::Bytes>;

/// Read and write buffer of each connection, bytes.
const CONNECTION_BUFFER: usize = 8 * 1024;

/// Largest WebSocket write buffer per client before a send waits.
const MAX_WRITE_BUFFER: usize = 4 << 20;

/// The `GET /ws` filter.
pub fn route(hub: Hub) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(move |headers: warp::http::HeaderMap, on_upgrade| accept(&hub, &headers, on_upgrade))
}

fn plain(status: StatusCode, text: &'static str) -> Reply {
    crate::http::response(status, "text/plain; charset=utf-8", text)
}

fn header_has(headers: &warp::http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn accept(hub: &Hub, headers: &warp::http::HeaderMap, on_upgrade: Option<OnUpgrade>) -> Reply {
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
    let Some(slot) = ClientSlot::reserve(hub) else {
        bump(&hub.metrics().ws_clients_rejected);
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket clients (limit ws.max_clients); try again later\n",
        );
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let config = WebSocketConfig::default()
        .max_message_size(Some(hub.config().ws.max_client_message_bytes))
        .max_frame_size(Some(hub.config().ws.max_client_message_bytes))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        // Per-connection buffers: small, as a hub may have thousands of
        // clients (tungstenite's defaults are 128 KiB each).
        .read_buffer_size(CONNECTION_BUFFER)
        .write_buffer_size(CONNECTION_BUFFER);
    let session_hub = hub.clone();
    hub.tasks().spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session::run(session_hub, ws).await;
                drop(slot);
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

/// One place among `ws.max_clients`, released when dropped.
#[derive(Debug)]
struct ClientSlot(Hub);

impl ClientSlot {
    fn reserve(hub: &Hub) -> Option<ClientSlot> {
        let max = hub.config().ws.max_clients as u64;
        hub.metrics()
            .ws_clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot(hub.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.metrics().ws_clients.fetch_sub(1, Ordering::AcqRel);
    }
}
