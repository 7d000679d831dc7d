//! Latency histograms: hub receive time minus device send time (corrected
//! by the device's clock offset when known), in fixed millisecond buckets
//! so that one device costs a few dozen bytes and histograms add up.

/// Upper bounds of the buckets, in milliseconds; a last bucket takes the rest.
pub const BOUNDS_MS: [u64; 13] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// A latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; BUCKETS],
    count: u64,
    sum_ms: u64,
    /// Samples where the device time was ahead of the hub's (clock skew);
    /// counted in the first bucket.
    pub negative: u64,
}

impl LatencyHistogram {
    /// Adds one sample.
    pub fn record(&mut self, latency_ms: i64) {
        if latency_ms < 0 {
            self.negative += 1;
        }
        let ms = latency_ms.max(0) as u64;
        let index = BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all samples, ms (negative ones as 0).
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// Count per bucket, in [`BOUNDS_MS`] order plus the overflow bucket.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// Upper bound (ms) of the bucket holding quantile `q` (0..=1); `None`
    /// when empty, `u64::MAX` when it falls in the overflow bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// Adds another histogram's samples.
    pub fn add(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
        self.negative += other.negative;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_buckets_and_quantiles_follow() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in [0, 1, 1, 3, 7, 40, 40, 40, 300, 20_000] {
            h.record(ms);
        }
        assert_eq!(h.count(), 10);
        assert_eq!(h.buckets()[0], 3); // 0, 1, 1
        assert_eq!(h.buckets()[2], 1); // 3
        assert_eq!(h.buckets()[5], 3); // 40s
        assert_eq!(h.buckets()[BUCKETS - 1], 1);
        assert_eq!(h.quantile_ms(0.5), Some(10)); // 5th of 10 is 7 ms
        assert_eq!(h.quantile_ms(0.6), Some(50)); // 6th is 40 ms
        assert_eq!(h.quantile_ms(0.3), Some(1));
        assert_eq!(h.quantile_ms(0.9), Some(500));
        assert_eq!(h.quantile_ms(1.0), Some(u64::MAX));
        assert_eq!(h.sum_ms(), 20_432);
    }

    #[test]
    fn negative_latency_is_counted_as_skew() {
        let mut h = LatencyHistogram::default();
        h.record(-20);
        assert_eq!(h.negative, 1);
        assert_eq!(h.buckets()[0], 1);
    }

    #[test]
    fn the_sum_saturates_instead_of_overflowing() {
        let mut h = LatencyHistogram::default();
        h.record(i64::MAX);
        h.record(i64::MAX);
        h.record(i64::MAX);
        assert_eq!(h.sum_ms(), u64::MAX);
        assert_eq!(h.count(), 3);
        let copy = h.clone();
        h.add(&copy);
        assert_eq!(h.sum_ms(), u64::MAX);
    }

    #[test]
    fn histograms_add() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(3);
        b.record(3);
        b.record(900);
        a.add(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.buckets()[2], 2);
        assert_eq!(a.buckets()[9], 1);
    }
}
