//! History requests from HTTP and WebSocket clients, in the shell: the
//! device and sensor must be known to the hub (a sensor by channel or by
//! its declared name), the range is validated, and the query runs on a
//! blocking thread, at most [`MAX_QUERIES`] at once and at most
//! `http.history_queries_per_address` from one client address (more are
//! refused as busy, so a burst of requests cannot pile up threads, and one
//! client looping on queries cannot take every slot). The [`HistoryGate`]
//! holds the per-address counts and the refusals for `/metrics`.

use std::net::IpAddr;
use std::sync::Arc;

use sensor_hub_protocol::DeviceId;
use serde_json::Value;

use crate::clock::Now;
use crate::core::{Core, SensorCatalog};
use crate::history::query::{Answer, RangeRequest, SensorRef};
use crate::history::StoreError;
use crate::metrics::{labeled_counters, Collector, Counter, DescriptorEncoder};
use crate::per_address::AddressLimit;

/// History queries running or waiting for the database at once.
pub const MAX_QUERIES: usize = 8;

/// Why a history request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `storage.enabled` is false.
    #[error("history is off on this hub (storage.enabled = false); only live data is available")]
    Disabled,
    /// The hub does not know the device.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// The device has no such sensor.
    #[error("device {device} has no sensor {sensor}; known: {known}")]
    UnknownSensor {
        /// The device.
        device: DeviceId,
        /// What was asked for.
        sensor: String,
        /// Its sensors, as "name (channel)".
        known: String,
    },
    /// Bad `from`, `to` or `max_points`.
    #[error("{0}")]
    BadRange(String),
    /// Too many queries at once.
    #[error("too many history queries at once; retry in a moment")]
    Busy,
    /// This client's address has its share of queries running.
    #[error(
        "{0} history queries from your address are already running \
         (http.history_queries_per_address); wait for their answers, then retry"
    )]
    AddressBusy(usize),
    /// The query's thread ended without an answer (it panicked).
    #[error("the history query failed unexpectedly; the hub's log says why")]
    Aborted,
    /// The database failed.
    #[error("{0}; {hint}", hint = .0.hint())]
    Failed(#[from] StoreError),
}

impl HistoryError {
    /// HTTP status for it.
    pub fn status(&self) -> u16 {
        match self {
            HistoryError::Disabled => 503,
            HistoryError::Busy | HistoryError::AddressBusy(_) => 429,
            HistoryError::UnknownDevice(_) | HistoryError::UnknownSensor { .. } => 404,
            HistoryError::BadRange(_) => 400,
            HistoryError::Failed(_) | HistoryError::Aborted => 500,
        }
    }

    /// Whether the client asked for something wrong (`bad_history`), as
    /// opposed to the hub being unable to answer (`history_unavailable`).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            HistoryError::UnknownDevice(_)
                | HistoryError::UnknownSensor { .. }
                | HistoryError::BadRange(_)
        )
    }
}

impl HistoryError {
    /// Whether the hub (or this address's share of it) is busy: retry later.
    pub fn is_busy(&self) -> bool {
        matches!(self, HistoryError::Busy | HistoryError::AddressBusy(_))
    }
}

/// Admission of history queries beyond the database's own: the
/// per-address cap and the count of refusals.
#[derive(Debug)]
pub struct HistoryGate {
    per_address: Arc<AddressLimit>,
    /// Refused because [`MAX_QUERIES`] were running.
    refused_busy: Counter,
    /// Refused because the address had its share running.
    refused_address: Counter,
}

impl HistoryGate {
    /// At most `per_address` queries running per client address.
    pub fn new(per_address: usize) -> HistoryGate {
        HistoryGate {
            per_address: AddressLimit::new(per_address),
            refused_busy: Counter::default(),
            refused_address: Counter::default(),
        }
    }
}

/// The gate's family on `/metrics`.
#[derive(Debug)]
pub struct HistoryGateCollector(pub Arc<HistoryGate>);

impl Collector for HistoryGateCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let g = &self.0;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_history_queries_refused",
                "History queries answered busy: the hub's limit (busy) or the address's (address_busy).",
            ),
            "reason",
            [
                ("busy", g.refused_busy.get()),
                ("address_busy", g.refused_address.get()),
            ],
        )
    }
}

/// Answers a history request at `now` from a client at `peer` (`None`
/// when unknown: no per-address cap); `id` is echoed in the answer.
#[allow(clippy::too_many_arguments)] // each is a separate part of the request
pub async fn answer(
    core: &Arc<Core>,
    gate: &HistoryGate,
    peer: Option<IpAddr>,
    device: DeviceId,
    sensor: &SensorRef,
    request: &RangeRequest,
    id: Option<Value>,
    now: Now,
) -> Result<Answer, HistoryError> {
    let history = core.history().cloned().ok_or(HistoryError::Disabled)?;
    let catalog = core
        .sensor_catalog(device)
        .ok_or(HistoryError::UnknownDevice(device))?;
    let channel = resolve(&catalog, device, sensor)?;
    let now = now.wall_ms;
    let range = request.validate(now).map_err(HistoryError::BadRange)?;
    let address_slot = match peer {
        Some(ip) => Some(gate.per_address.try_acquire(ip).ok_or_else(|| {
            gate.refused_address.inc();
            HistoryError::AddressBusy(gate.per_address.max())
        })?),
        None => None,
    };
    let slot = history.query_slot(MAX_QUERIES).ok_or_else(|| {
        gate.refused_busy.inc();
        HistoryError::Busy
    })?;
    let mut answer = tokio::task::spawn_blocking(move || {
        let _slots = (slot, address_slot);
        history.query(device, channel, range, now)
    })
    .await
    .map_err(|_| HistoryError::Aborted)??;
    answer.id = id;
    Ok(answer)
}

/// The channel `sensor` names on `device`.
fn resolve(
    catalog: &SensorCatalog,
    device: DeviceId,
    sensor: &SensorRef,
) -> Result<u8, HistoryError> {
    let declared = catalog.declared.as_slice();
    let channels = &catalog.channels;
    let found = match sensor {
        SensorRef::Channel(c) => channels.contains(c).then_some(*c),
        SensorRef::Name(name) => declared
            .iter()
            .find(|s| s.name.as_str() == name)
            .map(|s| s.channel),
    };
    found.ok_or_else(|| HistoryError::UnknownSensor {
        device,
        sensor: match sensor {
            SensorRef::Channel(c) => format!("on channel {c}"),
            SensorRef::Name(name) => format!("named {name:?}"),
        },
        known: if channels.is_empty() {
            "none yet".into()
        } else {
            channels
                .iter()
                .map(|&c| match declared.iter().find(|s| s.channel == c) {
                    Some(s) => format!("{} ({c})", s.name),
                    None => format!("channel {c}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests;
