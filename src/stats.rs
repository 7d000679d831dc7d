//! Publishes `device_stats` events every `ws.stats_interval_ms` for the
//! devices whose statistics changed since the previous ones.

use std::collections::HashMap;
use std::time::Duration;

use sensor_hub_protocol::DeviceId;

use crate::hub::{unix_ms, Hub};
use crate::stream::{DeviceStats, Event};
use crate::views::device_stats;

/// What identifies a change worth publishing: datagrams counted, and the
/// rate to a hundredth.
type Fingerprint = (u64, u64);

/// Runs until the hub shuts down.
pub async fn run(hub: Hub) {
    let cancel = hub.cancel_token();
    let mut interval =
        tokio::time::interval(Duration::from_millis(hub.config().ws.stats_interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: HashMap<DeviceId, Fingerprint> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let state = hub.lock_state();
        let now = unix_ms();
        let changed: Vec<DeviceStats> = state
            .devices_by_id()
            .into_iter()
            .filter_map(|d| {
                let stats = device_stats(d, now);
                let fingerprint = (d.datagrams, (stats.rate_per_s * 100.0).round() as u64);
                (published.insert(d.id, fingerprint) != Some(fingerprint)).then_some(stats)
            })
            .collect();
        if !changed.is_empty() {
            hub.publish(Event::DeviceStats(changed));
        }
    }
}
