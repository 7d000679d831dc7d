//! JSON views of the fleet, shared by `GET /api/devices` and the WebSocket
//! `snapshot`: each device with what the data plane measured and what the
//! control plane knows, its sensors (declared metadata merged with latest
//! values and rolling statistics), and its packet statistics. Built from
//! the data-plane [`HubState`] and the [`Registry`] at a given moment into
//! owned values, so the caller can release its lock before serialising;
//! no I/O.

use std::collections::BTreeSet;

use sensor_hub_protocol::control::ValueKind;
use sensor_hub_protocol::DeviceId;
use serde::Serialize;

use crate::aggregate::sequence::SeqCounts;
use crate::clock::Now;
use crate::json::JsonValue;
use crate::registry::{DeviceEntry, DeviceStatus, Registry};
use crate::remote::{RemoteDevice, RemoteFleet};
use crate::state::{DeviceState, HubState};
use crate::stream::subscription::Subscription;
use crate::stream::DeviceStats;

/// Statistics of one rolling window.
#[derive(Debug, Serialize)]
pub struct WindowView {
    /// Window length, seconds.
    pub window_s: u64,
    /// Readings in it.
    pub count: u64,
    /// Smallest.
    pub min: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Mean (for booleans: fraction true).
    pub mean: Option<f64>,
    /// Readings per second.
    pub rate_per_s: f64,
}

/// One sensor.
#[derive(Debug, Serialize)]
pub struct SensorView {
    channel: u8,
    name: Option<String>,
    unit: Option<String>,
    kind: Option<ValueKind>,
    min: Option<f32>,
    max: Option<f32>,
    value: Option<JsonValue>,
    time_ms: Option<u64>,
    received_ms: Option<u64>,
    count: u64,
    windows: Vec<WindowView>,
}

/// Latency summary.
#[derive(Debug, Serialize, PartialEq)]
pub struct LatencyView {
    /// Median, upper bucket bound in ms.
    pub p50_ms: Option<u64>,
    /// 99th percentile, upper bucket bound in ms.
    pub p99_ms: Option<u64>,
    /// Samples.
    pub count: u64,
}

/// Packet statistics of one device (also the `device_stats` entries).
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// The device.
    pub device: DeviceId,
    /// Datagrams accepted (duplicates included).
    pub received: u64,
    /// Sequence numbers never received.
    pub lost: u64,
    /// Arrived after a higher sequence number.
    pub reordered: u64,
    /// Extra copies.
    pub duplicated: u64,
    /// Sequence restarts (reboots).
    pub restarts: u64,
    /// lost / (unique received + lost).
    pub loss_ratio: f64,
    /// Datagrams per second over the first rolling window.
    pub rate_per_s: f64,
    /// Latency.
    pub latency_ms: LatencyView,
}

impl From<&DeviceStats> for StatsView {
    fn from(s: &DeviceStats) -> Self {
        let SeqCounts {
            received,
            lost,
            reordered,
            duplicated,
            restarts,
        } = s.seq;
        StatsView {
            device: s.device,
            received,
            lost,
            reordered,
            duplicated,
            restarts,
            loss_ratio: s.seq.loss_ratio(),
            rate_per_s: s.rate_per_s,
            latency_ms: LatencyView {
                p50_ms: s.latency_p50_ms,
                p99_ms: s.latency_p99_ms,
                count: s.latency_count,
            },
        }
    }
}

/// The statistics of a device at `now`.
pub fn device_stats(d: &DeviceState, now: Now) -> DeviceStats {
    DeviceStats {
        device: d.id,
        seq: *d.seq.counts(),
        rate_per_s: d.rate_per_s(now),
        latency_p50_ms: d.latency.quantile_ms(0.5),
        latency_p99_ms: d.latency.quantile_ms(0.99),
        latency_count: d.latency.count(),
    }
}

/// One device.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    id: u32,
    /// The hub holding it (in a cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    hub: Option<String>,
    name: Option<String>,
    firmware: Option<String>,
    interval_ms: Option<u32>,
    status: Option<DeviceStatus>,
    status_since_ms: Option<u64>,
    connected: bool,
    /// Adopted (listed or admitted by a hello), or only discovered.
    adopted: bool,
    /// Whether its datagrams must carry a tag of its session key.
    keyed: bool,
    clock_offset_ms: Option<i64>,
    addr: Option<String>,
    first_seen_ms: Option<u64>,
    last_seen_ms: Option<u64>,
    datagrams: u64,
    readings: u64,
    bytes: u64,
    last_seq: Option<u32>,
    stats: Option<StatsView>,
    sensors: Vec<SensorView>,
}

/// Every channel of a device: declared in its hello, seen in its data, or
/// known from before a restart.
pub fn sensor_channels(data: Option<&DeviceState>, entry: Option<&DeviceEntry>) -> BTreeSet<u8> {
    let mut channels: BTreeSet<u8> = entry
        .and_then(|e| e.info.as_ref())
        .map(|i| i.sensors.iter().map(|s| s.channel).collect())
        .unwrap_or_default();
    if let Some(d) = data {
        channels.extend(d.sensors.keys());
    }
    if let Some(e) = entry {
        channels.extend(&e.known_channels);
    }
    channels
}

/// A sensor: what its hello declared, and its latest value (value, device
/// time, receive time, readings), without rolling windows.
fn sensor_view(
    channel: u8,
    declared: Option<&sensor_hub_protocol::control::SensorInfo>,
    latest: Option<(sensor_hub_protocol::Value, u64, u64, u64)>,
) -> SensorView {
    SensorView {
        channel,
        name: declared.map(|s| s.name.to_string()),
        unit: declared.map(|s| s.unit.to_string()),
        kind: declared.map(|s| s.kind),
        min: declared.and_then(|s| s.min),
        max: declared.and_then(|s| s.max),
        value: latest.map(|l| JsonValue(l.0)),
        time_ms: latest.map(|l| l.1),
        received_ms: latest.map(|l| l.2),
        count: latest.map_or(0, |l| l.3),
        windows: Vec::new(),
    }
}

fn device_view(
    id: u32,
    data: Option<&DeviceState>,
    entry: Option<&DeviceEntry>,
    keyed: bool,
    subscription: Option<&Subscription>,
    now: Now,
) -> DeviceView {
    let info = entry.and_then(|e| e.info.as_ref());
    let sensors = sensor_channels(data, entry)
        .into_iter()
        .filter(|&c| subscription.is_none_or(|s| s.covers_channel(c)))
        .map(|channel| {
            let declared = info.and_then(|i| i.sensors.iter().find(|s| s.channel == channel));
            let latest = data.and_then(|d| d.sensors.get(&channel));
            let mut view = sensor_view(
                channel,
                declared,
                latest.map(|s| (s.value, s.time_ms, s.received_ms, s.count)),
            );
            view.windows = latest
                .map(|s| {
                    s.window_stats(now)
                        .into_iter()
                        .map(|w| WindowView {
                            window_s: w.window_ms / 1_000,
                            count: w.count,
                            min: w.min,
                            max: w.max,
                            mean: w.mean,
                            rate_per_s: w.rate_per_s,
                        })
                        .collect()
                })
                .unwrap_or_default();
            view
        })
        .collect();
    DeviceView {
        id,
        hub: None,
        name: info.map(|i| i.name.clone()),
        firmware: info.map(|i| i.firmware.clone()),
        interval_ms: info.map(|i| i.interval_ms),
        status: entry.map(|e| e.status),
        status_since_ms: entry.map(|e| e.status_since_ms),
        connected: entry.is_some_and(|e| e.session.is_some()),
        adopted: entry.is_none_or(|e| e.adopted),
        keyed,
        clock_offset_ms: entry.and_then(|e| e.clock_offset_ms),
        addr: data.map(|d| d.addr.to_string()),
        first_seen_ms: data.map(|d| d.first_seen_ms),
        last_seen_ms: data
            .map(|d| d.last_seen_ms)
            .max(entry.and_then(|e| e.last_seen_ms())),
        datagrams: data.map_or(0, |d| d.datagrams),
        readings: data.map_or(0, |d| d.readings),
        bytes: data.map_or(0, |d| d.bytes),
        last_seq: data.map(|d| d.last_seq),
        stats: data.map(|d| StatsView::from(&device_stats(d, now))),
        sensors,
    }
}

/// This hub's name and the other hubs' devices, for a hub in a cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterFleet<'a> {
    /// This hub's name (the `hub` of its own devices).
    pub hub: &'a str,
    /// The devices other hubs hold.
    pub remote: &'a RemoteFleet,
}

/// Every device the data plane or the control plane knows, and in a
/// cluster every device the other hubs hold (that the subscription
/// covers, if one is given), ordered by id.
pub fn devices(
    state: &HubState,
    registry: &Registry,
    cluster: Option<ClusterFleet<'_>>,
    subscription: Option<&Subscription>,
    now: Now,
) -> Vec<DeviceView> {
    // Every device with data is in the registry too (it admits them).
    let mut ids: Vec<u32> = registry.device_ids().collect();
    if let Some(c) = cluster {
        ids.extend(
            c.remote
                .iter()
                .map(|(id, _)| id)
                .filter(|&id| registry.device(id).is_none()),
        );
    }
    ids.sort_unstable();
    ids.into_iter()
        .filter(|&id| subscription.is_none_or(|s| s.covers_device(id)))
        .filter_map(|id| match registry.device(id) {
            // Held by another hub now (it left this one): that hub's view.
            Some(entry)
                if entry.session.is_none()
                    && cluster.is_some_and(|c| c.remote.get(id).is_some()) =>
            {
                let remote = cluster?.remote.get(id)?;
                Some(remote_device_view(id, remote, subscription))
            }
            Some(entry) => {
                let mut view = device_view(
                    id,
                    state.device(id),
                    Some(entry),
                    state.is_keyed(id),
                    subscription,
                    now,
                );
                view.hub = cluster.map(|c| c.hub.to_string());
                Some(view)
            }
            None => {
                let remote = cluster?.remote.get(id)?;
                Some(remote_device_view(id, remote, subscription))
            }
        })
        .collect()
}

/// A device another hub holds, as far as the shared stream tells: no
/// rolling windows (its hub has them) and no address.
fn remote_device_view(
    id: u32,
    d: &RemoteDevice,
    subscription: Option<&Subscription>,
) -> DeviceView {
    let info = d.info.as_ref();
    let mut channels: BTreeSet<u8> = d.latest.keys().copied().collect();
    if let Some(i) = info {
        channels.extend(i.sensors.iter().map(|s| s.channel));
    }
    let sensors = channels
        .into_iter()
        .filter(|&c| subscription.is_none_or(|s| s.covers_channel(c)))
        .map(|channel| {
            let declared = info.and_then(|i| i.sensors.iter().find(|s| s.channel == channel));
            let latest = d.latest.get(&channel);
            sensor_view(
                channel,
                declared,
                latest.map(|l| (l.value, l.time_ms, l.received_ms, l.count)),
            )
        })
        .collect();
    DeviceView {
        id,
        hub: Some(d.hub.to_string()),
        name: info.map(|i| i.name.clone()),
        firmware: info.map(|i| i.firmware.clone()),
        interval_ms: info.map(|i| i.interval_ms),
        status: d.status,
        status_since_ms: d.status_since_ms,
        connected: d.connected,
        adopted: info.is_none_or(|i| i.adopted),
        keyed: info.is_some_and(|i| i.keyed),
        clock_offset_ms: None,
        addr: None,
        first_seen_ms: d.first_seen_ms,
        last_seen_ms: d.last_seen_ms,
        datagrams: d.datagrams,
        readings: d.readings,
        bytes: 0,
        last_seq: d.last_seq,
        stats: d.stats.as_ref().map(StatsView::from),
        sensors,
    }
}

/// What an outside consumer (the MQTT bridge) needs to describe a device:
/// identity, declared sensors and latest values, without statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogDevice {
    /// The device.
    pub id: DeviceId,
    /// From its hello.
    pub name: Option<String>,
    /// From its hello.
    pub firmware: Option<String>,
    /// Report interval from its hello, ms.
    pub interval_ms: Option<u32>,
    /// Liveness.
    pub status: Option<DeviceStatus>,
    /// Adopted, or only discovered.
    pub adopted: bool,
    /// Every channel, as in [`sensor_channels`].
    pub sensors: Vec<CatalogSensor>,
}

/// One sensor of a [`CatalogDevice`].
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogSensor {
    /// Channel in datagrams.
    pub channel: u8,
    /// Declared name.
    pub name: Option<String>,
    /// Declared unit ("" for none).
    pub unit: Option<String>,
    /// Declared value type.
    pub kind: Option<ValueKind>,
    /// Latest value.
    pub value: Option<sensor_hub_protocol::Value>,
}

/// Every device the registry knows, ordered by id, as [`CatalogDevice`]s.
pub fn catalog(state: &HubState, registry: &Registry) -> Vec<CatalogDevice> {
    let mut ids: Vec<u32> = registry.device_ids().collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| {
            let data = state.device(id);
            let entry = registry.device(id);
            let info = entry.and_then(|e| e.info.as_ref());
            let sensors = sensor_channels(data, entry)
                .into_iter()
                .map(|channel| {
                    let declared =
                        info.and_then(|i| i.sensors.iter().find(|s| s.channel == channel));
                    CatalogSensor {
                        channel,
                        name: declared.map(|s| s.name.to_string()),
                        unit: declared.map(|s| s.unit.to_string()),
                        kind: declared.map(|s| s.kind),
                        value: data.and_then(|d| d.sensors.get(&channel)).map(|s| s.value),
                    }
                })
                .collect();
            CatalogDevice {
                id,
                name: info.map(|i| i.name.clone()),
                firmware: info.map(|i| i.firmware.clone()),
                interval_ms: info.map(|i| i.interval_ms),
                status: entry.map(|e| e.status),
                adopted: entry.is_none_or(|e| e.adopted),
                sensors,
            }
        })
        .collect()
}
