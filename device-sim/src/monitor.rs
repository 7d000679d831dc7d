//! Live figures of a running fleet, for a progress display: a
//! [`FleetMonitor`] handed to [`crate::run_fleet_monitored`] can be read at
//! any time with [`FleetMonitor::snapshot`]. The sender and the sessions
//! keep relaxed atomic counters; a snapshot reads each once, so its figures
//! may be a moment apart, never torn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::control::SessionCounters;
use crate::udp::UdpCounters;

/// A running fleet's live counters (cheap to clone: shared).
#[derive(Debug, Clone, Default)]
pub struct FleetMonitor {
    pub(crate) udp: Arc<UdpCounters>,
    pub(crate) sessions: Arc<SessionCounters>,
}

/// A fleet's figures so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LiveStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Control sessions up now.
    pub sessions_up: u64,
    /// Control sessions the hub welcomed.
    pub sessions_opened: u64,
    /// Commands received.
    pub commands_received: u64,
    /// Reboots, commanded or random.
    pub reboots: u64,
    /// Faults injected so far: datagram faults the hub can see yet (lost,
    /// reordered, duplicated, corrupted), random reboots, session drops.
    pub faults_injected: u64,
}

impl FleetMonitor {
    /// The figures now.
    pub fn snapshot(&self) -> LiveStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (udp, sessions) = (&*self.udp, &*self.sessions);
        let random_reboots = read(&udp.reboots);
        let session_drops = read(&sessions.session_drops);
        LiveStats {
            datagrams_sent: read(&udp.datagrams_sent),
            bytes_sent: read(&udp.bytes_sent),
            send_errors: read(&udp.send_errors),
            sessions_up: read(&sessions.sessions_up),
            sessions_opened: read(&sessions.sessions_opened),
            commands_received: read(&sessions.commands_received),
            reboots: read(&sessions.reboots) + random_reboots,
            faults_injected: read(&udp.faults) + random_reboots + session_drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sums_what_sender_and_sessions_count() {
        let monitor = FleetMonitor::default();
        let add = |counter: &AtomicU64, n| counter.fetch_add(n, Ordering::Relaxed);
        add(&monitor.udp.datagrams_sent, 10);
        add(&monitor.udp.faults, 3);
        add(&monitor.udp.reboots, 1);
        add(&monitor.sessions.reboots, 2);
        add(&monitor.sessions.session_drops, 4);
        add(&monitor.sessions.sessions_up, 5);
        let seen = monitor.clone().snapshot();
        assert_eq!(seen.datagrams_sent, 10);
        assert_eq!(seen.reboots, 3);
        assert_eq!(seen.faults_injected, 3 + 1 + 4);
        assert_eq!(seen.sessions_up, 5);
    }
}
