//! Keeps liveness and command deadlines on time: ticks the core when it
//! says it next has work ([`Core::tick`] returns that deadline), or sooner
//! when a change may have brought a deadline closer
//! ([`Core::deadlines_moved`]), and at least every `liveness.tick_ms`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::core::Core;

/// Runs until `cancel` fires. `max_sleep` bounds every wait.
pub async fn run(core: Arc<Core>, max_sleep: Duration, clock: Clock, cancel: CancellationToken) {
    loop {
        let now = clock.now();
        let next = core.tick(now);
        let latest = tokio::time::Instant::now() + max_sleep;
        let wake = next
            .and_then(|mono_ms| clock.instant_at(mono_ms))
            .map_or(latest, |at| at.min(latest));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            _ = core.deadlines_moved() => {}
        }
    }
}
