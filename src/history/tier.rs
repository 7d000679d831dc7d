//! The tiers of the history — raw readings, 1-minute and 1-hour aggregates —
//! how long each is kept ([`Retention`]), which tier answers a query
//! ([`choose_tier`]) and where the retention job cuts ([`expired_before`]).
//!
//! A query is answered from one tier: the finest that still holds the whole
//! range, unless it would hand the query far more rows than the chart asked
//! for, in which case a coarser one gives the same picture for less work.

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Longest range answered from raw readings.
pub const RAW_MAX_SPAN_MS: u64 = 6 * HOUR_MS;
/// Longest range answered from minute aggregates.
pub const MINUTE_MAX_SPAN_MS: u64 = 7 * DAY_MS;
/// Minute buckets per point asked for above which the hour tier is used.
pub const MINUTE_OVERSAMPLING: u64 = 10;

/// Where readings of some age are kept, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Every reading as received.
    Raw,
    /// 1-minute aggregates.
    Minute,
    /// 1-hour aggregates.
    Hour,
}

impl Tier {
    /// All tiers, finest first.
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    /// Width of a bucket, ms (raw readings have none: 1).
    pub const fn bucket_ms(self) -> u64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
        }
    }

    /// Start of the bucket holding `t_ms` (`t_ms` itself for raw).
    pub const fn bucket_start(self, t_ms: u64) -> u64 {
        t_ms - t_ms % self.bucket_ms()
    }
}

/// How long each tier is kept, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw readings (default 24 h).
    pub raw_ms: u64,
    /// Minute aggregates (default 30 days).
    pub minute_ms: u64,
    /// Hour aggregates (default 365 days).
    pub hour_ms: u64,
}

impl Retention {
    /// The retention `[storage]` configures.
    pub fn configured(config: &crate::config::StorageConfig) -> Retention {
        const HOUR_MS: u64 = 3_600_000;
        Retention {
            raw_ms: config.raw_retention_hours.saturating_mul(HOUR_MS),
            minute_ms: config.minute_retention_days.saturating_mul(24 * HOUR_MS),
            hour_ms: config.hour_retention_days.saturating_mul(24 * HOUR_MS),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_ms: DAY_MS,
            minute_ms: 30 * DAY_MS,
            hour_ms: 365 * DAY_MS,
        }
    }
}

impl Retention {
    /// How long `tier` is kept, ms.
    pub const fn of(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Raw => self.raw_ms,
            Tier::Minute => self.minute_ms,
            Tier::Hour => self.hour_ms,
        }
    }
}

/// The tier that answers a query for `[from_ms, to_ms)` at `now_ms` that
/// wants at most `max_points` points.
///
/// With `span = to_ms - from_ms` (0 when `to_ms <= from_ms`) and
/// `p = max(max_points, 1)`:
/// * a tier *holds* the range when `from_ms >= now_ms - retention` of it;
/// * Raw is *too fine* when `span > RAW_MAX_SPAN_MS` (6 h) or
///   `span >= p` minutes: minute aggregates then already give every point
///   of the reduced answer a minute or more, so raw rows add nothing;
/// * Minute is *too fine* when `span > MINUTE_MAX_SPAN_MS` (7 days) or
///   `span > MINUTE_OVERSAMPLING * p` minutes (more than 10 minute buckets
///   per point asked for);
/// * Hour is never too fine.
///
/// The answer is the finest tier that holds the range and is not too fine;
/// if every tier that holds it is too fine, the coarsest that holds it; if
/// none holds it, the tier kept longest (Hour by default; ties: the coarser),
/// which returns what is left of the range.
pub fn choose_tier(
    from_ms: u64,
    to_ms: u64,
    now_ms: u64,
    max_points: usize,
    retention: &Retention,
) -> Tier {
    let span = to_ms.saturating_sub(from_ms);
    let points = max_points.max(1) as u64;
    let too_fine = |tier: Tier| match tier {
        Tier::Raw => span > RAW_MAX_SPAN_MS || span >= points.saturating_mul(MINUTE_MS),
        Tier::Minute => {
            span > MINUTE_MAX_SPAN_MS
                || span > points.saturating_mul(MINUTE_OVERSAMPLING * MINUTE_MS)
        }
        Tier::Hour => false,
    };
    let mut coarsest_holding = None;
    for tier in Tier::ALL {
        if from_ms < now_ms.saturating_sub(retention.of(tier)) {
            continue;
        }
        if !too_fine(tier) {
            return tier;
        }
        coarsest_holding = Some(tier);
    }
    coarsest_holding.unwrap_or_else(|| {
        Tier::ALL.into_iter().fold(Tier::Raw, |best, tier| {
            if retention.of(tier) >= retention.of(best) {
                tier
            } else {
                best
            }
        })
    })
}

/// The cutoff of the retention job at `now_ms`: rows of `tier` whose time
/// (bucket start for aggregates) is before it are deleted. It is the start
/// of the bucket holding `now_ms - retention`, so the bucket straddling the
/// limit is kept whole, and every range that [`choose_tier`] says a tier
/// holds is still complete in it.
pub fn expired_before(tier: Tier, now_ms: u64, retention: &Retention) -> u64 {
    tier.bucket_start(now_ms.saturating_sub(retention.of(tier)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time on an hour boundary, plus 12 min 34.567 s.
    const NOW: u64 = 1_700_002_800_000 + 754_567;
    const MIN: u64 = MINUTE_MS;

    fn choose(from_ago: u64, span: u64, max_points: usize) -> Tier {
        let from = NOW - from_ago;
        choose_tier(from, from + span, NOW, max_points, &Retention::default())
    }

    #[test]
    fn buckets() {
        assert_eq!(Tier::Raw.bucket_ms(), 1);
        assert_eq!(Tier::Raw.bucket_start(NOW), NOW);
        assert_eq!(Tier::Minute.bucket_start(119_999), 60_000);
        assert_eq!(Tier::Minute.bucket_start(120_000), 120_000);
        assert_eq!(Tier::Hour.bucket_start(NOW), 1_700_002_800_000);
        assert_eq!(Tier::Hour.bucket_start(0), 0);
    }

    #[test]
    fn default_retention() {
        let r = Retention::default();
        assert_eq!(r.of(Tier::Raw), 86_400_000);
        assert_eq!(r.of(Tier::Minute), 30 * 86_400_000);
        assert_eq!(r.of(Tier::Hour), 365 * 86_400_000);
    }

    #[test]
    fn raw_up_to_six_hours() {
        assert_eq!(choose(HOUR_MS, 0, 1000), Tier::Raw);
        assert_eq!(choose(6 * HOUR_MS, 6 * HOUR_MS, 1000), Tier::Raw);
        assert_eq!(choose(6 * HOUR_MS, 6 * HOUR_MS + 1, 1000), Tier::Minute);
    }

    #[test]
    fn raw_while_minutes_would_give_fewer_points_than_asked() {
        assert_eq!(choose(HOUR_MS, 100 * MIN - 1, 100), Tier::Raw);
        assert_eq!(choose(HOUR_MS, 100 * MIN, 100), Tier::Minute);
        // max_points 0 counts as 1.
        assert_eq!(choose(HOUR_MS, MIN - 1, 0), Tier::Raw);
        assert_eq!(choose(HOUR_MS, MIN, 0), Tier::Minute);
    }

    #[test]
    fn raw_only_while_it_holds_the_start() {
        assert_eq!(choose(DAY_MS, MIN, 1000), Tier::Raw);
        assert_eq!(choose(DAY_MS + 1, MIN, 1000), Tier::Minute);
    }

    #[test]
    fn minute_up_to_ten_buckets_per_point_and_seven_days() {
        assert_eq!(choose(8 * DAY_MS, 10_000 * MIN, 1000), Tier::Minute);
        assert_eq!(choose(8 * DAY_MS, 10_000 * MIN + 1, 1000), Tier::Hour);
        assert_eq!(choose(8 * DAY_MS, 7 * DAY_MS, 100_000), Tier::Minute);
        assert_eq!(choose(8 * DAY_MS, 7 * DAY_MS + 1, 100_000), Tier::Hour);
        assert_eq!(choose(30 * DAY_MS, MIN, 1000), Tier::Minute);
        assert_eq!(choose(30 * DAY_MS + 1, MIN, 1000), Tier::Hour);
    }

    #[test]
    fn beyond_every_retention_the_longest_kept() {
        assert_eq!(choose(400 * DAY_MS, HOUR_MS, 1000), Tier::Hour);
        let r = Retention {
            raw_ms: DAY_MS,
            minute_ms: 400 * DAY_MS,
            hour_ms: 300 * DAY_MS,
        };
        // Hour does not hold it; Minute does, though too fine.
        let from = NOW - 350 * DAY_MS;
        assert_eq!(choose_tier(from, NOW, NOW, 10, &r), Tier::Minute);
        // Nothing holds it: Minute is kept longest.
        let from = NOW - 500 * DAY_MS;
        assert_eq!(choose_tier(from, NOW, NOW, 10, &r), Tier::Minute);
    }

    #[test]
    fn degenerate_ranges_and_early_times() {
        // to before from: an empty range, raw.
        assert_eq!(
            choose_tier(NOW - 10, NOW - 20, NOW, 10, &Retention::default()),
            Tier::Raw
        );
        // now earlier than a retention: everything is held.
        assert_eq!(
            choose_tier(0, 1_000, 5_000, 10, &Retention::default()),
            Tier::Raw
        );
    }

    #[test]
    fn expiry_keeps_the_straddling_bucket() {
        let r = Retention::default();
        assert_eq!(expired_before(Tier::Raw, NOW, &r), NOW - DAY_MS);
        let minute = expired_before(Tier::Minute, NOW, &r);
        assert_eq!(minute, Tier::Minute.bucket_start(NOW - 30 * DAY_MS));
        assert!(minute <= NOW - 30 * DAY_MS && NOW - 30 * DAY_MS - minute < MIN);
        let hour = expired_before(Tier::Hour, NOW, &r);
        assert_eq!(hour, 1_700_002_800_000 - 365 * DAY_MS);
        assert_eq!(expired_before(Tier::Hour, 1_000, &r), 0);
    }
}
