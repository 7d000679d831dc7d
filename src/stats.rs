//! Publishes `device_stats` events every `ws.stats_interval_ms` for the
//! devices whose statistics changed since the previous ones (the choice is
//! the core's, [`Core::publish_device_stats`]; this task only keeps time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::core::Core;

/// Runs until `cancel` fires.
pub async fn run(core: Arc<Core>, every: Duration, clock: Clock, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        core.publish_device_stats(&mut published, clock.now());
    }
}
