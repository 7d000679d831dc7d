//! The hub's one clock, injected wherever time is read: [`Now`] pairs a
//! monotonic reading (for every duration and deadline: liveness, command
//! TTLs, rate limits, rolling windows) with the wall-clock time (only for
//! timestamps people see or that are stored). An NTP step on a Raspberry Pi
//! without a real-time clock moves `wall_ms` but never `mono_ms`, so no
//! deadline fires early or freezes.
//!
//! The pure core takes a [`Now`] as an argument and never reads a clock;
//! the shell reads [`Clock::now`]. [`Clock::system`] follows tokio's clock,
//! so tests on a paused runtime (`start_paused`) drive it with
//! `tokio::time::advance`; [`Clock::manual`] is set by hand in unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One moment, read once and passed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on the monotonic clock since the [`Clock`] was made;
    /// never goes back. Compare only with other `mono_ms` of the same clock.
    pub mono_ms: u64,
    /// Wall-clock time, Unix ms (0 if the system clock is before 1970). May
    /// jump in either direction.
    pub wall_ms: u64,
}

impl Now {
    /// A moment with both clocks at the given values (tests, replays).
    pub const fn at(mono_ms: u64, wall_ms: u64) -> Now {
        Now { mono_ms, wall_ms }
    }

    /// The same moment `ms` later on both clocks.
    pub fn after(self, ms: u64) -> Now {
        Now {
            mono_ms: self.mono_ms.saturating_add(ms),
            wall_ms: self.wall_ms.saturating_add(ms),
        }
    }
}

/// Current wall-clock time in Unix ms (0 before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug)]
enum Source {
    /// tokio's monotonic clock (paused in tests that ask for it) and the
    /// system's wall clock.
    System { origin: tokio::time::Instant },
    /// Values set by hand.
    Manual {
        mono_ms: AtomicU64,
        wall_ms: AtomicU64,
    },
}

/// Where time comes from; cheap to clone (all clones read the same clock).
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

impl Clock {
    /// The real clock. Its monotonic origin is now; must be called inside a
    /// tokio runtime only if the runtime's clock is paused (it reads
    /// `tokio::time::Instant`, which falls back to the system clock).
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System {
            origin: tokio::time::Instant::now(),
        }))
    }

    /// A clock that stands still until [`Clock::advance`] or [`Clock::set_wall`].
    pub fn manual(start: Now) -> Clock {
        Clock(Arc::new(Source::Manual {
            mono_ms: AtomicU64::new(start.mono_ms),
            wall_ms: AtomicU64::new(start.wall_ms),
        }))
    }

    /// The current moment.
    pub fn now(&self) -> Now {
        match &*self.0 {
            Source::System { origin } => Now {
                mono_ms: u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX),
                wall_ms: wall_ms(),
            },
            Source::Manual { mono_ms, wall_ms } => Now {
                mono_ms: mono_ms.load(Ordering::Acquire),
                wall_ms: wall_ms.load(Ordering::Acquire),
            },
        }
    }

    /// The monotonic clock in µs (same origin as `mono_ms`), for the few
    /// durations measured finer than a millisecond.
    pub fn mono_us(&self) -> u64 {
        match &*self.0 {
            Source::System { origin } => {
                u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
            Source::Manual { mono_ms, .. } => mono_ms.load(Ordering::Acquire).saturating_mul(1_000),
        }
    }

    /// The monotonic instant `mono_ms` stands for, for tokio timers; `None`
    /// on a manual clock.
    pub fn instant_at(&self, mono_ms: u64) -> Option<tokio::time::Instant> {
        match &*self.0 {
            Source::System { origin } => Some(*origin + std::time::Duration::from_millis(mono_ms)),
            Source::Manual { .. } => None,
        }
    }

    /// Moves a manual clock forward by `ms` on both clocks (no-op on the
    /// system clock).
    pub fn advance(&self, ms: u64) {
        if let Source::Manual { mono_ms, wall_ms } = &*self.0 {
            mono_ms.fetch_add(ms, Ordering::AcqRel);
            wall_ms.fetch_add(ms, Ordering::AcqRel);
        }
    }

    /// Steps a manual clock's wall time (an NTP step); its monotonic time
    /// does not move (no-op on the system clock).
    pub fn set_wall(&self, ms: u64) {
        if let Source::Manual { wall_ms, .. } = &*self.0 {
            wall_ms.store(ms, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(Now::at(5, 1_000));
        assert_eq!(clock.now(), Now::at(5, 1_000));
        clock.advance(10);
        assert_eq!(clock.now(), Now::at(15, 1_010));
        // An NTP step back moves wall time only.
        clock.set_wall(7);
        assert_eq!(clock.now(), Now::at(15, 7));
        assert_eq!(clock.instant_at(0), None);
    }

    #[test]
    fn after_saturates() {
        assert_eq!(Now::at(u64::MAX - 1, 3).after(5), Now::at(u64::MAX, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_follows_tokio_time() {
        let clock = Clock::system();
        let start = clock.now();
        tokio::time::advance(std::time::Duration::from_millis(2_500)).await;
        let later = clock.now();
        assert_eq!(later.mono_ms - start.mono_ms, 2_500);
        let deadline = clock.instant_at(later.mono_ms);
        assert!(deadline.is_some_and(|d| d <= tokio::time::Instant::now()));
    }
}
