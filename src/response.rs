//! HTTP responses with the headers every answer of the hub carries
//! (content type, no caching, no content sniffing, and a content security
//! policy that lets a page load only the hub's own scripts, styles and
//! connections, never be framed, and send no referrer), and JSON error
//! bodies.
//! A leaf: the HTTP application and the WebSocket upgrade both use it.

use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;

/// A response with a fixed body and the headers every answer carries.
pub fn response(
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
    for (name, value) in EVERY_ANSWER {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    r
}

/// Headers every answer carries, whatever its content.
const EVERY_ANSWER: [(header::HeaderName, &str); 5] = [
    (header::CACHE_CONTROL, "no-cache"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// Only the hub's own files and connections (its `/ws` included: `'self'`
/// covers the same host's WebSocket), no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(status, "application/json", body)
}
