//! A device's clock as its datagrams, hellos and heartbeats show it: the
//! real clock offset by the device's skew; and, for datagrams, never
//! repeating or going back across a reboot, so the hub can tell the new
//! sequence from late datagrams of the old one (it needs a newer clock).
//! Pure: the caller passes the real time in.

/// `now_ms` (Unix ms) as a clock `skew_ms` ahead (negative: behind) shows
/// it, saturating at 0 and `u64::MAX`.
pub fn skewed_ms(now_ms: u64, skew_ms: i64) -> u64 {
    now_ms.saturating_add_signed(skew_ms)
}

/// The clock that stamps one device's datagrams.
#[derive(Debug, Clone)]
pub(crate) struct DatagramClock {
    skew_ms: i64,
    /// The latest stamp so far.
    latest_ms: Option<u64>,
}

impl DatagramClock {
    /// A clock `skew_ms` off the real one.
    pub fn new(skew_ms: i64) -> DatagramClock {
        DatagramClock {
            skew_ms,
            latest_ms: None,
        }
    }

    /// The time to stamp a datagram sent at `now_ms` (real Unix ms) with.
    /// The first datagram after a reboot (`new_epoch`) is stamped at least
    /// 1 ms after every datagram before it.
    pub fn stamp(&mut self, now_ms: u64, new_epoch: bool) -> u64 {
        let mut stamp = skewed_ms(now_ms, self.skew_ms);
        if let Some(latest) = self.latest_ms {
            if new_epoch && stamp <= latest {
                stamp = latest.saturating_add(1);
            }
        }
        self.latest_ms = Some(self.latest_ms.map_or(stamp, |latest| latest.max(stamp)));
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_moves_the_clock_either_way_and_saturates() {
        assert_eq!(skewed_ms(10_000, 2_500), 12_500);
        assert_eq!(skewed_ms(10_000, -2_500), 7_500);
        assert_eq!(skewed_ms(10, -2_500), 0);
        assert_eq!(skewed_ms(u64::MAX - 1, 5), u64::MAX);
    }

    #[test]
    fn stamps_follow_the_real_clock_plus_skew() {
        let mut clock = DatagramClock::new(-1_000);
        assert_eq!(clock.stamp(5_000, false), 4_000);
        // Within an epoch the real clock is kept, even if it stands still.
        assert_eq!(clock.stamp(5_000, false), 4_000);
        assert_eq!(clock.stamp(5_020, false), 4_020);
    }

    #[test]
    fn the_first_stamp_after_a_reboot_is_newer_than_all_before() {
        let mut clock = DatagramClock::new(0);
        clock.stamp(1_000, false);
        clock.stamp(1_005, false);
        // Rebooted within the same millisecond, or the real clock stepped back.
        assert_eq!(clock.stamp(1_005, true), 1_006);
        assert_eq!(clock.stamp(900, true), 1_007);
        // Later on, the real clock again.
        assert_eq!(clock.stamp(2_000, true), 2_000);
        // A first datagram ever is a new epoch with nothing before it.
        assert_eq!(DatagramClock::new(5).stamp(100, true), 105);
    }
}
