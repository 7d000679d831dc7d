//! Rollups: hand-made cases, then properties: folding in one batch equals
//! folding in several and merging.

use super::*;
use proptest::prelude::*;

/// An hour boundary.
const T0: u64 = 1_700_002_800_000;

fn reading(device: u32, channel: u8, t_ms: u64, value: f64) -> Reading {
    Reading {
        device,
        channel,
        t_ms,
        value,
    }
}

#[test]
fn aggregate_tracks_extremes_mean_and_latest() {
    let mut a = Aggregate::new(2.0, T0 + 10);
    a.add(5.0, T0 + 30);
    a.add(-1.0, T0 + 20); // late: not the last
    assert_eq!((a.count, a.min, a.max, a.sum), (3, -1.0, 5.0, 6.0));
    assert_eq!((a.last, a.last_ms), (5.0, T0 + 30));
    assert_eq!(a.mean(), 2.0);
    a.add(7.0, T0 + 30); // same time, added later: wins
    assert_eq!((a.last, a.last_ms), (7.0, T0 + 30));
}

#[test]
fn merge_takes_the_later_last() {
    let mut a = Aggregate::new(1.0, T0 + 50);
    let mut b = Aggregate::new(3.0, T0 + 10);
    b.add(4.0, T0 + 40);
    a.merge(&b);
    assert_eq!((a.count, a.min, a.max, a.sum), (3, 1.0, 4.0, 8.0));
    assert_eq!((a.last, a.last_ms), (1.0, T0 + 50));
    b.merge(&Aggregate::new(9.0, T0 + 40));
    assert_eq!((b.last, b.last_ms), (9.0, T0 + 40));
}

#[test]
fn booleans_mean_is_the_fraction_true() {
    let mut a = Aggregate::new(1.0, T0);
    for (i, v) in [0.0, 1.0, 1.0].into_iter().enumerate() {
        a.add(v, T0 + i as u64);
    }
    assert_eq!(a.mean(), 0.75);
}

#[test]
fn rollup_buckets_by_tier_device_channel_and_time() {
    let mut r = Rollup::new();
    r.add_all(&[
        reading(2, 0, T0 + 59_999, 1.0),
        reading(2, 0, T0 + 60_000, 2.0),
        reading(1, 3, T0 + 3_600_000, 3.0),
        reading(2, 0, T0 + 10, 4.0),
        reading(1, 0, T0 + 10, 5.0),
    ]);
    assert_eq!(r.len(), 7);
    let drained = r.drain();
    assert!(r.is_empty());
    let keys: Vec<_> = drained
        .iter()
        .map(|(k, a)| (k.tier, k.device, k.channel, k.bucket_start_ms - T0, a.count))
        .collect();
    assert_eq!(
        keys,
        [
            (Tier::Minute, 1, 0, 0, 1),
            (Tier::Minute, 1, 3, 3_600_000, 1),
            (Tier::Minute, 2, 0, 0, 2),
            (Tier::Minute, 2, 0, 60_000, 1),
            (Tier::Hour, 1, 0, 0, 1),
            (Tier::Hour, 1, 3, 3_600_000, 1),
            (Tier::Hour, 2, 0, 0, 3),
        ]
    );
    let hour = drained[6].1;
    assert_eq!((hour.min, hour.max, hour.sum), (1.0, 4.0, 7.0));
    assert_eq!((hour.last, hour.last_ms), (2.0, T0 + 60_000));
}

#[test]
fn non_finite_values_are_skipped_and_counted() {
    let mut r = Rollup::new();
    assert!(!r.add(&reading(1, 0, T0, f64::NAN)));
    assert!(!r.add(&reading(1, 0, T0, f64::INFINITY)));
    assert!(!r.add(&reading(1, 0, T0, f64::NEG_INFINITY)));
    assert!(r.is_empty());
    assert!(r.add(&reading(1, 0, T0, 0.5)));
    assert_eq!((r.len(), r.skipped()), (2, 3));
    r.drain();
    assert_eq!(r.skipped(), 3);
}

fn finite_value() -> impl Strategy<Value = f64> {
    // Whole numbers, so sums are exact in any order.
    prop_oneof![
        4 => (-1_000_000i32..1_000_000).prop_map(f64::from),
        1 => (0u8..2).prop_map(f64::from),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        10 => finite_value(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn readings() -> impl Strategy<Value = Vec<Reading>> {
    // Times on a 30 s grid over ~3.3 h, out of order and often equal.
    let one = (0u32..3, 0u8..2, 0u64..400, value())
        .prop_map(|(d, c, t, v)| reading(d, c, T0 + t * 30_000, v));
    prop::collection::vec(one, 0..200)
}

/// `items` cut at the given places.
fn split<'a, T>(items: &'a [T], cuts: &[prop::sample::Index]) -> Vec<&'a [T]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(items.len() + 1)).collect();
    at.sort_unstable();
    let mut parts = Vec::new();
    let mut start = 0;
    for end in at.into_iter().chain([items.len()]) {
        parts.push(&items[start..end]);
        start = end;
    }
    parts
}

proptest! {
    #[test]
    fn aggregate_of_batches_merged_equals_one_fold(
        values in prop::collection::vec((finite_value(), 0u64..50), 1..100),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let fold = |part: &[(f64, u64)]| {
            let mut it = part.iter();
            let (v, t) = it.next()?;
            let mut a = Aggregate::new(*v, *t);
            it.for_each(|(v, t)| a.add(*v, *t));
            Some(a)
        };
        let whole = fold(&values);
        let merged = split(&values, &cuts)
            .into_iter()
            .filter_map(fold)
            .reduce(|mut a, b| { a.merge(&b); a });
        prop_assert_eq!(whole, merged);
    }

    #[test]
    fn rollup_of_batches_merged_equals_one_batch(
        readings in readings(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut one = Rollup::new();
        one.add_all(&readings);
        let mut merged: BTreeMap<BucketKey, Aggregate> = BTreeMap::new();
        let mut batched = Rollup::new();
        for part in split(&readings, &cuts) {
            batched.add_all(part);
            for (key, a) in batched.drain() {
                merged.entry(key).and_modify(|m| m.merge(&a)).or_insert(a);
            }
        }
        prop_assert_eq!(one.skipped(), batched.skipped());
        prop_assert_eq!(one.drain(), merged.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn rollup_counts_every_finite_reading_once_per_tier(readings in readings()) {
        let mut r = Rollup::new();
        r.add_all(&readings);
        let finite = readings.iter().filter(|x| x.value.is_finite()).count() as u64;
        let drained = r.drain();
        for tier in ROLLUP_TIERS {
            let n: u64 = drained.iter().filter(|(k, _)| k.tier == tier).map(|(_, a)| a.count).sum();
            prop_assert_eq!(n, finite);
        }
        prop_assert_eq!(r.skipped(), readings.len() as u64 - finite);
        prop_assert!(drained.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
