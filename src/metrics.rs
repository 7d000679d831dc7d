//! Metrics plumbing, and nothing about what is measured: the Prometheus
//! project's own `prometheus-client` crate renders the text (OpenMetrics
//! 1.0, which Prometheus scrapes natively), and each subsystem owns its
//! counters and implements [`Collector`] to write its own families at
//! scrape time (core, ingest, control, WebSocket, history, process). This
//! module only gives them the small helpers they share, so it depends on
//! nothing else in the crate.
//!
//! Every family, its labels and meaning are listed in docs/METRICS.md, which
//! a test checks against a real `/metrics`.

use std::fmt;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{EncodeGaugeValue, NoLabelSet};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text of every registered family, in registration order.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail, and the collectors write only
    // numbers and fixed names.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "rendering /metrics failed");
    }
    out
}

/// One counter family with no labels; `name` without `_total` (the encoder
/// adds it).
pub fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One gauge family with no labels.
pub fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family with one label: a `(label value, count)` per series.
pub fn labeled_counters<'v>(
    e: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    label: &str,
    series: impl IntoIterator<Item = (&'v str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in series {
        family
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

/// A gauge family with one label.
pub fn labeled_gauges<'v>(
    e: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    label: &str,
    series: impl IntoIterator<Item = (&'v str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in series {
        family.encode_family(&[(label, value)])?.encode_gauge(&v)?;
    }
    Ok(())
}

/// One histogram's samples: non-cumulative counts per upper bound (the
/// last bound may be `f64::INFINITY`), their sum and count.
#[derive(Debug, Clone)]
pub struct HistogramSamples {
    /// `(upper bound, count in that bucket alone)`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the samples.
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
}

/// A histogram of durations in µs with fixed bounds, updated with atomics
/// only (it is written on hot paths by many tasks at once).
#[derive(Debug)]
pub struct MicrosHistogram {
    bounds: &'static [u64],
    /// One count per bound, then one above the last.
    counts: Box<[std::sync::atomic::AtomicU64]>,
    sum_us: std::sync::atomic::AtomicU64,
}

impl MicrosHistogram {
    /// A histogram with these upper bounds, µs, increasing.
    pub fn new(bounds: &'static [u64]) -> MicrosHistogram {
        MicrosHistogram {
            bounds,
            counts: (0..=bounds.len())
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            sum_us: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, us: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let bucket = self.bounds.partition_point(|&bound| bound < us);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The samples, in seconds (Prometheus' base unit).
    pub fn samples(&self) -> HistogramSamples {
        use std::sync::atomic::Ordering::Relaxed;
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = self
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
                (bound, count.load(Relaxed))
            })
            .collect();
        HistogramSamples {
            count: buckets.iter().map(|&(_, n)| n).sum(),
            buckets,
            sum: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram family: one unlabelled series, or one per `(label, value)`.
pub fn histograms<'v>(
    e: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    series: impl IntoIterator<Item = (Option<(&'v str, String)>, HistogramSamples)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (label, h) in series {
        match label {
            None => family.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?,
            Some((key, value)) => family
                .encode_family(&[(key, value.as_str())])?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?,
        }
    }
    Ok(())
}

/// A count by enum variant: one counter per variant of `E`, indexed by
/// `variant as usize` (the enums derive `strum::EnumCount`).
#[derive(Debug)]
pub struct CounterArray<const N: usize>([Counter; N]);

impl<const N: usize> Default for CounterArray<N> {
    fn default() -> Self {
        CounterArray(std::array::from_fn(|_| Counter::default()))
    }
}

impl<const N: usize> CounterArray<N> {
    /// Adds one to the counter at `index` (ignored out of range).
    pub fn inc(&self, index: usize) {
        if let Some(c) = self.0.get(index) {
            c.inc();
        }
    }

    /// The counter at `index` (0 out of range).
    pub fn get(&self, index: usize) -> u64 {
        self.0.get(index).map_or(0, Counter::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_micros_histogram_counts_each_duration_in_its_bucket_in_seconds() {
        static BOUNDS: [u64; 3] = [10, 100, 1_000];
        let h = MicrosHistogram::new(&BOUNDS);
        for us in [0, 10, 11, 100, 5_000] {
            h.observe(us);
        }
        let s = h.samples();
        assert_eq!(
            s.buckets,
            [(0.00001, 2), (0.0001, 2), (0.001, 0), (f64::INFINITY, 1)]
        );
        assert_eq!(s.count, 5);
        assert!((s.sum - 0.005121).abs() < 1e-12);
    }

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
            counter(&mut e, "t_things", "Things.", 3)?;
            gauge(&mut e, "t_level", "Level.", 1.5)?;
            labeled_counters(
                &mut e,
                ("t_dropped", "Dropped."),
                "reason",
                [("a", 1), ("b", 2)],
            )?;
            histograms(
                &mut e,
                ("t_latency_ms", "Latency."),
                [(
                    Some(("device", "7".to_string())),
                    HistogramSamples {
                        buckets: vec![(1.0, 2), (5.0, 1), (f64::INFINITY, 1)],
                        sum: 20.0,
                        count: 4,
                    },
                )],
            )
        }
    }

    #[test]
    fn helpers_write_openmetrics_families() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = render(&registry);
        for line in [
            "# HELP t_things Things.",
            "# TYPE t_things counter",
            "t_things_total 3",
            "# TYPE t_level gauge",
            "t_level 1.5",
            "t_dropped_total{reason=\"b\"} 2",
            "# TYPE t_latency_ms histogram",
            "t_latency_ms_bucket{le=\"1.0\",device=\"7\"} 2",
            "t_latency_ms_bucket{le=\"5.0\",device=\"7\"} 3",
            "t_latency_ms_bucket{le=\"+Inf\",device=\"7\"} 4",
            "t_latency_ms_count{device=\"7\"} 4",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn counter_arrays_ignore_out_of_range() {
        let a = CounterArray::<2>::default();
        a.inc(1);
        a.inc(5);
        assert_eq!((a.get(0), a.get(1), a.get(5)), (0, 1, 0));
    }
}
