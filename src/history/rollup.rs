//! Incremental minute and hour aggregates of readings.
//!
//! An [`Aggregate`] is the count, min, max, sum and last value of the
//! readings in one bucket. A [`Rollup`] folds the readings of one batch (a
//! flush of the writer) into one aggregate per tier, device, channel and
//! bucket, and [`Rollup::drain`] hands them over sorted by [`BucketKey`], to
//! be merged into the stored rows as [`Aggregate::merge`] does. Folding
//! readings in one batch or in several and merging the results gives the
//! same aggregates (the sum up to floating-point rounding), in any order of
//! arrival. Values that are not finite are skipped and counted.

use std::collections::BTreeMap;

use super::tier::Tier;

/// One reading as the history stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Device id.
    pub device: u32,
    /// Channel of the device.
    pub channel: u8,
    /// Hub receive time, Unix ms.
    pub t_ms: u64,
    /// The value (booleans as 0 or 1).
    pub value: f64,
}

/// Summary of the readings in one bucket (at least one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Readings.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Value of the latest reading.
    pub last: f64,
    /// Time of the latest reading, Unix ms.
    pub last_ms: u64,
}

impl Aggregate {
    /// The aggregate of one reading.
    pub fn new(value: f64, t_ms: u64) -> Aggregate {
        Aggregate {
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
            last_ms: t_ms,
        }
    }

    /// Adds a reading. It becomes `last` unless an earlier-added one is
    /// later (on equal times the one added later wins).
    pub fn add(&mut self, value: f64, t_ms: u64) {
        self.merge(&Aggregate::new(value, t_ms));
    }

    /// Adds the readings of `other`. Count, min, max and sum do not depend
    /// on the order of merging; `last` is the one with the later `last_ms`,
    /// on equal times `other`'s.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if other.last_ms >= self.last_ms {
            self.last = other.last;
            self.last_ms = other.last_ms;
        }
    }

    /// Mean value (for booleans: the fraction that was true).
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Which aggregate row a reading lands in. Sorts by tier, device, channel,
/// then time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    /// [`Tier::Minute`] or [`Tier::Hour`].
    pub tier: Tier,
    /// Device id.
    pub device: u32,
    /// Channel of the device.
    pub channel: u8,
    /// Start of the bucket, Unix ms.
    pub bucket_start_ms: u64,
}

/// The tiers a [`Rollup`] feeds.
pub const ROLLUP_TIERS: [Tier; 2] = [Tier::Minute, Tier::Hour];

/// Aggregates of the readings folded since the last [`Rollup::drain`].
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    buckets: BTreeMap<BucketKey, Aggregate>,
    skipped: u64,
}

impl Rollup {
    /// An empty rollup.
    pub fn new() -> Rollup {
        Rollup::default()
    }

    /// Folds one reading into its minute and hour buckets; false (and
    /// counted as skipped) when the value is NaN or infinite.
    pub fn add(&mut self, reading: &Reading) -> bool {
        if !reading.value.is_finite() {
            self.skipped += 1;
            return false;
        }
        for tier in ROLLUP_TIERS {
            let key = BucketKey {
                tier,
                device: reading.device,
                channel: reading.channel,
                bucket_start_ms: tier.bucket_start(reading.t_ms),
            };
            self.buckets
                .entry(key)
                .and_modify(|a| a.add(reading.value, reading.t_ms))
                .or_insert_with(|| Aggregate::new(reading.value, reading.t_ms));
        }
        true
    }

    /// Folds a batch of readings, in order.
    pub fn add_all(&mut self, readings: &[Reading]) {
        for reading in readings {
            self.add(reading);
        }
    }

    /// Aggregates waiting to be drained.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Nothing waiting to be drained.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Readings skipped for a value that is not finite, since creation
    /// (draining does not reset it).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Takes the aggregates, sorted by key, leaving the rollup empty.
    pub fn drain(&mut self) -> Vec<(BucketKey, Aggregate)> {
        std::mem::take(&mut self.buckets).into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
