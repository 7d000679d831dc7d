//! Reduction: hand-made cases, then properties over random series.

use super::*;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn raws(values: &[(u64, f64)]) -> Vec<Point> {
    values.iter().map(|&(t, v)| Point::raw(T0 + t, v)).collect()
}

#[test]
fn few_enough_points_are_returned_as_they_are() {
    let points = raws(&[(5, 1.0), (7, 2.0)]);
    assert_eq!(reduce(&points, T0, T0 + 100, 2), points);
    assert_eq!(reduce(&points, T0, T0 + 100, 10), points);
    assert!(reduce(&[], T0, T0 + 100, 10).is_empty());
}

#[test]
fn zero_points_asked_gives_nothing() {
    assert!(reduce(&raws(&[(5, 1.0)]), T0, T0 + 100, 0).is_empty());
}

#[test]
fn one_point_covers_everything() {
    let points = raws(&[(0, 3.0), (10, -2.0), (90, 8.0), (99, 1.0)]);
    let out = reduce(&points, T0, T0 + 100, 1);
    let expected = Point {
        t_ms: T0,
        min: -2.0,
        max: 8.0,
        mean: 2.5,
        count: 4,
        last: 1.0,
    };
    assert_eq!(out, [expected]);
}

#[test]
fn buckets_keep_extremes_weighted_mean_and_last() {
    let mut points = raws(&[(0, 1.0), (10, 9.0), (49, 2.0), (50, 4.0)]);
    // An aggregate of 3 readings with mean 6.
    let mut a = Aggregate::new(5.0, T0 + 75);
    a.add(7.0, T0 + 76);
    a.add(6.0, T0 + 77);
    points.push(Point::from_aggregate(T0 + 60, &a));
    let out = reduce(&points, T0, T0 + 100, 2);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].t_ms, out[0].min, out[0].max), (T0, 1.0, 9.0));
    assert_eq!((out[0].count, out[0].mean, out[0].last), (3, 4.0, 2.0));
    assert_eq!((out[1].t_ms, out[1].min, out[1].max), (T0 + 50, 4.0, 7.0));
    assert_eq!((out[1].count, out[1].mean, out[1].last), (4, 5.5, 6.0));
}

#[test]
fn uneven_buckets_start_where_their_first_time_maps() {
    // 10 ms in 3 buckets: [0, 4), [4, 7), [7, 10).
    let points = raws(&[(0, 0.0), (3, 3.0), (4, 4.0), (6, 6.0), (7, 7.0), (9, 9.0)]);
    let out = reduce(&points, T0, T0 + 10, 3);
    let summary: Vec<_> = out.iter().map(|p| (p.t_ms - T0, p.min, p.max)).collect();
    assert_eq!(summary, [(0, 0.0, 3.0), (4, 4.0, 6.0), (7, 7.0, 9.0)]);
}

#[test]
fn points_outside_the_range_join_the_edge_buckets() {
    let points = vec![
        Point::raw(T0 - 500, -5.0),
        Point::raw(T0 + 10, 1.0),
        Point::raw(T0 + 90, 2.0),
        Point::raw(T0 + 100, 50.0),
    ];
    let out = reduce(&points, T0, T0 + 100, 2);
    let summary: Vec<_> = out
        .iter()
        .map(|p| (p.t_ms - T0, p.count, p.min, p.max))
        .collect();
    assert_eq!(summary, [(0, 2, -5.0, 1.0), (50, 2, 2.0, 50.0)]);
}

#[test]
fn empty_range_is_one_bucket() {
    let points = raws(&[(0, 1.0), (1, 2.0), (2, 3.0)]);
    let out = reduce(&points, T0 + 5, T0 + 5, 2);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].t_ms, out[0].count, out[0].last), (T0 + 5, 3, 3.0));
}

fn point(from: u64, span: u64) -> impl Strategy<Value = Point> {
    (0..span, -1000i32..1000, 0u32..100, 0u32..100, 1u64..20).prop_map(
        move |(offset, min, up, last, count)| {
            let (min, up, last) = (f64::from(min), f64::from(up), f64::from(last));
            Point {
                t_ms: from + offset,
                min,
                max: min + up,
                mean: min + up / 2.0,
                count,
                last: min + last.min(up),
            }
        },
    )
}

/// A range and points in it, sorted by time.
fn series() -> impl Strategy<Value = (u64, u64, Vec<Point>)> {
    (1u64..10_000_000).prop_flat_map(|span| {
        let points = prop::collection::vec(point(T0, span), 0..300).prop_map(|mut v| {
            v.sort_by_key(|p| p.t_ms);
            v
        });
        (Just(T0), Just(T0 + span), points)
    })
}

fn total_count(points: &[Point]) -> u64 {
    points.iter().map(|p| p.count).sum()
}

fn global(points: &[Point]) -> (f64, f64) {
    let min = points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
    let max = points
        .iter()
        .map(|p| p.max)
        .fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

proptest! {
    #[test]
    fn reduction_fits_and_preserves_totals(
        (from, to, points) in series(),
        max_points in 0usize..60,
    ) {
        let out = reduce(&points, from, to, max_points);
        prop_assert!(out.len() <= max_points);
        prop_assert!(out.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        if max_points == 0 {
            prop_assert!(out.is_empty());
            return Ok(());
        }
        if points.len() <= max_points {
            prop_assert_eq!(&out, &points);
        }
        prop_assert!(out.iter().all(|p| (from..to).contains(&p.t_ms)));
        prop_assert_eq!(total_count(&out), total_count(&points));
        prop_assert_eq!(global(&out), global(&points));
        let weighted = |ps: &[Point]| ps.iter().map(|p| p.mean * p.count as f64).sum::<f64>();
        let (a, b) = (weighted(&out), weighted(&points));
        prop_assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{} vs {}", a, b);
        if let (Some(o), Some(p)) = (out.last(), points.last()) {
            prop_assert_eq!(o.last, p.last);
        }
    }

    #[test]
    fn unsorted_input_still_fits(
        (from, to, mut points) in series(),
        max_points in 1usize..60,
    ) {
        points.reverse();
        let out = reduce(&points, from, to, max_points);
        prop_assert!(out.len() <= max_points);
        prop_assert_eq!(total_count(&out), total_count(&points));
        prop_assert_eq!(global(&out), global(&points));
    }
}
