//! Merging readings that are received but not yet written into the points
//! a query read from the database, so a history answer is complete up to
//! the moment it was asked, not up to the last flush.

use std::collections::BTreeMap;

use super::{Aggregate, Point, Reading, Tier};

/// `stored` (one tier's points, sorted by time) with `unwritten` readings
/// added: as raw points for [`Tier::Raw`], else folded into the tier's
/// buckets, merged with a stored bucket of the same start. Sorted by time;
/// readings that are not finite are left out. An unwritten reading is taken
/// to be the latest of its bucket (it arrived after every stored one).
pub fn merge_unwritten(stored: Vec<Point>, tier: Tier, unwritten: &[Reading]) -> Vec<Point> {
    let finite = unwritten.iter().filter(|r| r.value.is_finite());
    if tier == Tier::Raw {
        let mut points = stored;
        points.extend(finite.map(|r| Point::raw(r.t_ms, r.value)));
        points.sort_by_key(|p| p.t_ms); // stable: stored first on equal times
        return points;
    }
    let mut buckets: BTreeMap<u64, Aggregate> = BTreeMap::new();
    for r in finite {
        buckets
            .entry(tier.bucket_start(r.t_ms))
            .and_modify(|a| a.add(r.value, r.t_ms))
            .or_insert_with(|| Aggregate::new(r.value, r.t_ms));
    }
    if buckets.is_empty() {
        return stored;
    }
    let mut points = Vec::with_capacity(stored.len() + buckets.len());
    for p in stored {
        match buckets.remove(&p.t_ms) {
            Some(fresh) => {
                let mut merged = Aggregate {
                    count: p.count,
                    min: p.min,
                    max: p.max,
                    sum: p.mean * p.count as f64,
                    last: p.last,
                    last_ms: p.t_ms,
                };
                merged.merge(&fresh);
                points.push(Point::from_aggregate(p.t_ms, &merged));
            }
            None => points.push(p),
        }
    }
    points.extend(
        buckets
            .iter()
            .map(|(&start, a)| Point::from_aggregate(start, a)),
    );
    points.sort_by_key(|p| p.t_ms);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn reading(t_ms: u64, value: f64) -> Reading {
        Reading {
            device: 1,
            channel: 0,
            t_ms,
            value,
        }
    }

    #[test]
    fn raw_readings_are_appended_in_time_order() {
        let stored = vec![Point::raw(10, 1.0), Point::raw(20, 2.0)];
        let merged = merge_unwritten(
            stored,
            Tier::Raw,
            &[reading(30, 3.0), reading(15, 1.5), reading(40, f64::NAN)],
        );
        let times: Vec<u64> = merged.iter().map(|p| p.t_ms).collect();
        assert_eq!(times, vec![10, 15, 20, 30]);
    }

    #[test]
    fn aggregates_merge_into_the_stored_bucket_and_open_new_ones() {
        // Stored: minute 0 with 2 readings (1 and 3), mean 2.
        let stored = vec![Point {
            t_ms: 0,
            min: 1.0,
            max: 3.0,
            mean: 2.0,
            count: 2,
            last: 3.0,
        }];
        let merged = merge_unwritten(
            stored,
            Tier::Minute,
            &[reading(30_000, 8.0), reading(MIN + 5, -1.0)],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0],
            Point {
                t_ms: 0,
                min: 1.0,
                max: 8.0,
                mean: 4.0,
                count: 3,
                last: 8.0
            }
        );
        assert_eq!(
            merged[1],
            Point::raw(MIN, -1.0),
            "a new bucket of one reading"
        );
    }

    #[test]
    fn nothing_unwritten_leaves_the_points_alone() {
        let stored = vec![Point::raw(0, 1.0)];
        assert_eq!(merge_unwritten(stored.clone(), Tier::Hour, &[]), stored);
    }
}
