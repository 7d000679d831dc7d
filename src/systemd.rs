//! What the hub tells systemd (the `sd_notify` protocol, through the
//! `sd-notify` crate; nothing happens outside a service, where
//! `NOTIFY_SOCKET` is unset): `READY=1` once every listener serves, so
//! `systemctl start` returns only then; `STOPPING=1` at shutdown; and,
//! when the unit sets `WatchdogSec=`, `WATCHDOG=1` at half that period for
//! as long as the core answers. A probe takes the core's lock on a
//! blocking thread; while one has not come back, no ping is sent, so a hub
//! whose core is stuck (a lock never released, a wedged runtime) goes
//! silent and systemd restarts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::core::Core;

/// Tells systemd the hub serves, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "could not tell systemd the hub is ready");
    }
}

/// Tells systemd the hub is stopping.
pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Stopping]) {
        tracing::debug!(error = %e, "could not tell systemd the hub is stopping");
    }
}

/// How often to ping the watchdog: half its period, if the unit set one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

/// Pings the watchdog every `interval` while the core answers, until
/// `cancel` fires.
pub async fn run_watchdog(core: Arc<Core>, interval: Duration, cancel: CancellationToken) {
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let answered = Arc::new(AtomicBool::new(true));
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        // A probe still out means the core did not answer within a period.
        if !answered.swap(false, Ordering::AcqRel) {
            tracing::warn!("the core did not answer within a watchdog period; not pinging systemd");
            continue;
        }
        let (probe_core, probe_answered) = (core.clone(), answered.clone());
        let probe = tokio::task::spawn_blocking(move || {
            let _ = probe_core.stats();
            probe_answered.store(true, Ordering::Release);
        });
        // Waits at most a period for the answer; a late one still counts
        // at the next tick.
        if tokio::time::timeout(interval, probe).await.is_ok() && answered.load(Ordering::Acquire) {
            if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "could not ping the systemd watchdog");
            }
        }
    }
}
