//! Rolling-window statistics of one sensor: count, min, max, mean and rate
//! over the last W seconds, for each configured W.
//!
//! Each window is a ring of `buckets` equal slices; a value lands in the
//! current slice and slices older than W are left out, so the window slides
//! in steps of W / buckets (10 s in steps of 1 s by default). A sensor costs
//! `buckets` × 24 bytes per window, whatever its rate.

/// One slice of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
}

/// Statistics of a window at some moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Window length, ms.
    pub window_ms: u64,
    /// Values in the window.
    pub count: u64,
    /// Smallest (None when empty).
    pub min: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Mean (for booleans: the fraction that was true).
    pub mean: Option<f64>,
    /// Values per second over the window.
    pub rate_per_s: f64,
}

/// One rolling window.
#[derive(Debug, Clone)]
pub struct Window {
    slice_ms: u64,
    buckets: Vec<Bucket>,
    /// Index of the current slice and the time it started.
    head: usize,
    head_start_ms: u64,
}

impl Window {
    /// A window of `window_ms` in `buckets` slices (both at least 1).
    pub fn new(window_ms: u64, buckets: usize, now_ms: u64) -> Window {
        let buckets = buckets.max(1);
        let slice_ms = (window_ms / buckets as u64).max(1);
        Window {
            slice_ms,
            buckets: vec![Bucket::EMPTY; buckets],
            head: 0,
            head_start_ms: now_ms - now_ms % slice_ms,
        }
    }

    fn window_ms(&self) -> u64 {
        self.slice_ms * self.buckets.len() as u64
    }

    /// Slices between the head and `now_ms` (0: still in the head slice).
    fn elapsed_slices(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.head_start_ms) / self.slice_ms
    }

    /// Adds a value observed at `now_ms` (times never go backwards here:
    /// the hub's receive time is used).
    pub fn add(&mut self, now_ms: u64, value: f64) {
        let steps = self.elapsed_slices(now_ms);
        if steps > 0 {
            let n = self.buckets.len();
            for _ in 0..steps.min(n as u64) {
                self.head = (self.head + 1) % n;
                self.buckets[self.head] = Bucket::EMPTY;
            }
            self.head_start_ms += steps * self.slice_ms;
        }
        let b = &mut self.buckets[self.head];
        b.count += 1;
        b.sum += value;
        b.min = b.min.min(value);
        b.max = b.max.max(value);
    }

    /// Statistics over the slices still inside the window at `now_ms`.
    /// `age_ms` is how long the sensor has existed: a younger sensor's rate
    /// is taken over its age, not the whole window.
    pub fn stats(&self, now_ms: u64, age_ms: u64) -> WindowStats {
        let n = self.buckets.len() as u64;
        let skipped = self.elapsed_slices(now_ms);
        let mut total = Bucket::EMPTY;
        for age in 0..n.saturating_sub(skipped) {
            let index = (self.head + self.buckets.len() - age as usize) % self.buckets.len();
            let b = &self.buckets[index];
            total.count += b.count;
            total.sum += b.sum;
            total.min = total.min.min(b.min);
            total.max = total.max.max(b.max);
        }
        let window_ms = self.window_ms();
        // At least a second, so a sensor's first value is not a huge rate.
        let span_ms = window_ms.min(age_ms.max(1_000));
        let count = u64::from(total.count);
        WindowStats {
            window_ms,
            count,
            min: (count > 0).then_some(total.min),
            max: (count > 0).then_some(total.max),
            mean: (count > 0).then(|| total.sum / count as f64),
            rate_per_s: count as f64 * 1_000.0 / span_ms as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn stats_cover_the_window_and_forget_older_values() {
        let mut w = Window::new(10_000, 10, T0);
        for i in 0..10u64 {
            w.add(T0 + i * 1_000, i as f64); // one value per second: 0..9
        }
        let s = w.stats(T0 + 9_500, 60_000);
        assert_eq!(s.count, 10);
        assert_eq!(s.min, Some(0.0));
        assert_eq!(s.max, Some(9.0));
        assert_eq!(s.mean, Some(4.5));
        assert!((s.rate_per_s - 1.0).abs() < 1e-9);
        // 3 s later the three oldest slices have left the window.
        let s = w.stats(T0 + 12_500, 60_000);
        assert_eq!(s.count, 7);
        assert_eq!(s.min, Some(3.0));
        // Long silence: empty.
        let s = w.stats(T0 + 100_000, 200_000);
        assert_eq!((s.count, s.min, s.mean), (0, None, None));
        assert_eq!(s.rate_per_s, 0.0);
    }

    #[test]
    fn adding_after_a_long_gap_starts_clean() {
        let mut w = Window::new(10_000, 10, T0);
        w.add(T0, 100.0);
        w.add(T0 + 50_000, 1.0);
        let s = w.stats(T0 + 50_000, 60_000);
        assert_eq!((s.count, s.max), (1, Some(1.0)));
    }

    #[test]
    fn young_sensor_rate_is_over_its_age() {
        let mut w = Window::new(60_000, 10, T0);
        for i in 0..20u64 {
            w.add(T0 + i * 100, 1.0); // 10 per second for 2 s
        }
        let s = w.stats(T0 + 2_000, 2_000);
        assert!((s.rate_per_s - 10.0).abs() < 1e-9, "{}", s.rate_per_s);
    }
}
