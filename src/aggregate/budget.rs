//! The per-device ingest budget: a token bucket of readings per second
//! (`devices.max_readings_per_s`), holding at most two seconds' worth, so
//! one device — or a spoofer of an unkeyed one — cannot fill the disk or
//! the stream. A datagram costs its number of readings, and at least one
//! (keep-alives are not free). Time is passed in (monotonic ms).

/// A device's budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    tokens: f64,
    updated_ms: u64,
}

impl Budget {
    /// A full budget at `now_ms` for `rate` readings per second.
    pub fn full(rate: u32, now_ms: u64) -> Budget {
        Budget {
            tokens: capacity(rate),
            updated_ms: now_ms,
        }
    }

    /// Takes `readings` (at least one) at `now_ms` if the budget allows;
    /// returns whether it did. A refusal takes nothing.
    pub fn take(&mut self, readings: usize, rate: u32, now_ms: u64) -> bool {
        let elapsed_s = now_ms.saturating_sub(self.updated_ms) as f64 / 1_000.0;
        self.updated_ms = self.updated_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed_s * f64::from(rate)).min(capacity(rate));
        let cost = readings.max(1) as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

fn capacity(rate: u32) -> f64 {
    2.0 * f64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_its_rate_and_a_burst_of_two_seconds() {
        let mut b = Budget::full(100, 0);
        let taken = (0..300).filter(|_| b.take(1, 100, 0)).count();
        assert_eq!(taken, 200, "two seconds' worth at once");
        assert!(!b.take(1, 100, 0));
        assert!(b.take(10, 100, 100), "0.1 s later: 10 more");
        assert!(!b.take(1, 100, 100));
        assert!(b.take(64, 100, 10_000));
    }

    #[test]
    fn a_refused_datagram_costs_nothing_and_keepalives_cost_one() {
        let mut b = Budget::full(10, 0);
        assert!(!b.take(64, 10, 0), "more than the bucket holds");
        assert!(b.take(20, 10, 0), "the refusal took nothing");
        assert!(!b.take(0, 10, 0), "a keep-alive costs one");
        assert!(b.take(0, 10, 100));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut b = Budget::full(10, 1_000);
        assert!(b.take(20, 10, 1_000));
        assert!(!b.take(1, 10, 500));
        assert!(b.take(1, 10, 1_100));
    }
}
