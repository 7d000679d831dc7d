//! The owner's device administration: `POST /api/devices/{id}/adopt`
//! (adopt a discovered or unknown device, with a new key or none) and
//! `DELETE /api/devices/{id}` (forget a device: its key goes, the hub
//! drops it). Both change the device file under its lock (on a blocking
//! thread), then hand the new list to the core at once.

use serde::Deserialize;
use warp::http::{Response, StatusCode};
use warp::hyper::body::Bytes;

use super::HttpContext;
use crate::device_file::{key_hex, random_key, DeviceFileError};
use crate::response::{json_error, response};

/// Body of `POST /api/devices/{id}/adopt`.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    /// Make a key (default); false adopts it without one.
    #[serde(default = "yes")]
    pub key: bool,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
}

fn yes() -> bool {
    true
}

impl AdoptBody {
    /// Reads a request body (empty: the defaults), or says what is wrong
    /// with it (a message for the client).
    pub fn parse(body: &[u8]) -> Result<AdoptBody, String> {
        if body.is_empty() {
            return Ok(AdoptBody {
                key: true,
                name: None,
            });
        }
        serde_json::from_slice::<AdoptBody>(body).map_err(|e| {
            format!("the body must be like {{\"key\": true, \"name\": \"porch\"}}: {e}")
        })
    }
}

fn file_error(e: &DeviceFileError) -> Response<Bytes> {
    match e {
        DeviceFileError::Refused(message) => json_error(StatusCode::CONFLICT, message),
        other => {
            tracing::error!(error = %other, "the device file could not be changed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string())
        }
    }
}

/// Re-reads the device file and hands it to the core.
fn publish(ctx: &HttpContext) {
    let now = ctx.ws.clock.now();
    let (keyring, _) = ctx.devices.refresh(now.mono_ms, true);
    ctx.core.set_device_list(&keyring, now);
}

/// `POST /api/devices/{id}/adopt`: 201 with the key (shown only in this
/// answer), 409 if the device file lists it already.
pub async fn adopt(ctx: HttpContext, device: u32, body: Bytes) -> Response<Bytes> {
    let body = match AdoptBody::parse(&body) {
        Ok(body) => body,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let key = if body.key {
        match random_key() {
            Ok(key) => Some(key),
            Err(e) => return file_error(&e),
        }
    } else {
        None
    };
    let name = body
        .name
        .or_else(|| ctx.core.device_name(device))
        .unwrap_or_default();
    let file = ctx.devices.file().clone();
    let now_ms = ctx.ws.clock.now().wall_ms;
    let written = tokio::task::spawn_blocking(move || {
        file.update(|list| list.add(device, &name, key, now_ms))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return file_error(&e),
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("adopting the device failed: {e}"),
            )
        }
    }
    publish(&ctx);
    tracing::info!(device, keyed = key.is_some(), "device adopted");
    let answer = serde_json::json!({
        "device": device,
        "key": key.as_ref().map(key_hex),
    });
    response(StatusCode::CREATED, "application/json", answer.to_string())
}

/// `DELETE /api/devices/{id}`: 204 once the device is forgotten, 404 if
/// the hub neither lists nor tracks it.
pub async fn forget(ctx: HttpContext, device: u32) -> Response<Bytes> {
    let file = ctx.devices.file().clone();
    let removed =
        tokio::task::spawn_blocking(move || file.update(|list| Ok(list.remove(device)))).await;
    let listed = match removed {
        Ok(Ok(removed)) => removed.is_some(),
        Ok(Err(e)) => return file_error(&e),
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("forgetting the device failed: {e}"),
            )
        }
    };
    // Unlisting forgets it in the core; a device that was only known
    // (discovered, or admitted by a token hello) is forgotten directly.
    publish(&ctx);
    let tracked = ctx.core.forget(device, ctx.ws.clock.now());
    if listed || tracked {
        tracing::info!(device, "device forgotten");
        response(StatusCode::NO_CONTENT, "application/json", "")
    } else {
        json_error(
            StatusCode::NOT_FOUND,
            &format!("device {device} is neither adopted nor known to the hub"),
        )
    }
}
