//! Reducing the points of a query to at most the number a chart asked for.
//!
//! A query returns [`Point`]s — raw readings or minute/hour aggregates —
//! sorted by time. When there are more than `max_points`, [`reduce`] splits
//! the queried range into `max_points` equal time buckets and emits one
//! point per non-empty bucket carrying the bucket's true min and max, its
//! count, its count-weighted mean and its latest value, so spikes survive
//! the reduction and the chart never gets more points than it asked for.

use super::rollup::Aggregate;

/// One point of a series: a raw reading or the aggregate of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Time of the reading, or start of the bucket, Unix ms.
    pub t_ms: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Readings summarised (1 for a raw reading).
    pub count: u64,
    /// Latest value.
    pub last: f64,
}

impl Point {
    /// A raw reading.
    pub fn raw(t_ms: u64, value: f64) -> Point {
        Point {
            t_ms,
            min: value,
            max: value,
            mean: value,
            count: 1,
            last: value,
        }
    }

    /// A stored aggregate of the bucket starting at `bucket_start_ms`.
    pub fn from_aggregate(bucket_start_ms: u64, aggregate: &Aggregate) -> Point {
        Point {
            t_ms: bucket_start_ms,
            min: aggregate.min,
            max: aggregate.max,
            mean: aggregate.mean(),
            count: aggregate.count,
            last: aggregate.last,
        }
    }
}

/// Points of one output bucket being merged.
#[derive(Debug, Clone, Copy)]
struct Merge {
    min: f64,
    max: f64,
    count: u64,
    /// Σ mean × count.
    weighted: f64,
    /// Σ mean and how many, for buckets whose counts are all 0.
    means: f64,
    parts: u64,
    last: f64,
    last_t_ms: u64,
}

impl Merge {
    fn new(p: &Point) -> Merge {
        Merge {
            min: p.min,
            max: p.max,
            count: p.count,
            weighted: p.mean * p.count as f64,
            means: p.mean,
            parts: 1,
            last: p.last,
            last_t_ms: p.t_ms,
        }
    }

    fn add(&mut self, p: &Point) {
        self.min = self.min.min(p.min);
        self.max = self.max.max(p.max);
        self.count += p.count;
        self.weighted += p.mean * p.count as f64;
        self.means += p.mean;
        self.parts += 1;
        if p.t_ms >= self.last_t_ms {
            self.last = p.last;
            self.last_t_ms = p.t_ms;
        }
    }

    fn finish(&self, t_ms: u64) -> Point {
        let mean = if self.count > 0 {
            self.weighted / self.count as f64
        } else {
            self.means / self.parts as f64
        };
        Point {
            t_ms,
            min: self.min,
            max: self.max,
            mean,
            count: self.count,
            last: self.last,
        }
    }
}

/// At most `max_points` points summarising `points` over `[from_ms, to_ms)`.
///
/// `points` are expected sorted by `t_ms`, as the store returns them. When
/// there are no more than `max_points` they are returned as they are.
/// Otherwise `[from_ms, to_ms)` is split into `max_points` equal buckets —
/// bucket `i` holds the times `t` with `(t - from) × max_points / (to - from)`
/// rounded down equal to `i` — and each non-empty bucket becomes one point:
/// `t_ms` the bucket's start, min and max the extremes of its points, count
/// their sum, mean weighted by count, last the `last` of the point with the
/// latest `t_ms` (ties: the later in `points`). Points before `from_ms` fall
/// into the first bucket and points at or after `to_ms` into the last, so no
/// reading is lost; when `to_ms <= from_ms` everything is one bucket.
/// The result is sorted by `t_ms` whatever the order of a reduced input.
/// `max_points` 0 gives nothing; 1 gives one point covering everything.
pub fn reduce(points: &[Point], from_ms: u64, to_ms: u64, max_points: usize) -> Vec<Point> {
    if max_points == 0 {
        return Vec::new();
    }
    if points.len() <= max_points {
        return points.to_vec();
    }
    let span = u128::from(to_ms.saturating_sub(from_ms).max(1));
    let n = max_points as u128;
    let last_t_ms = from_ms + (span as u64 - 1);
    // Fewer buckets than points, so this is smaller than the input.
    let mut buckets: Vec<Option<Merge>> = vec![None; max_points];
    for p in points {
        let offset = u128::from(p.t_ms.clamp(from_ms, last_t_ms) - from_ms);
        let index = (offset * n / span) as usize;
        match &mut buckets[index] {
            Some(merge) => merge.add(p),
            slot => *slot = Some(Merge::new(p)),
        }
    }
    buckets
        .iter()
        .enumerate()
        .filter_map(|(i, merge)| {
            // The smallest offset whose index is i: ⌈i × span / n⌉.
            let start = (i as u128 * span).div_ceil(n) as u64;
            merge.map(|m| m.finish(from_ms + start))
        })
        .collect()
}

#[cfg(test)]
mod tests;
