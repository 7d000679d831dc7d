//! Per-client message rate limiting: a token bucket, with a count of
//! consecutive refusals so a client that keeps flooding can be closed.
//! Pure, driven by a time passed in.

/// A token bucket.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_s: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
    refused_in_a_row: u32,
}

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Handle it.
    Accept,
    /// Answer `rate_limited` and drop it.
    Refuse,
    /// The client keeps flooding: close it.
    Close,
}

impl RateLimit {
    /// `per_s` messages a second on average, bursts of `burst`.
    pub fn new(per_s: u32, burst: u32, now_ms: u64) -> RateLimit {
        RateLimit {
            per_s: f64::from(per_s),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last_ms: now_ms,
            refused_in_a_row: 0,
        }
    }

    /// Decides about a message arriving at `now_ms`. A client refused more
    /// than `burst` times in a row is flooding.
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1_000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admission::Accept;
        }
        self.refused_in_a_row += 1;
        if f64::from(self.refused_in_a_row) > self.burst {
            Admission::Close
        } else {
            Admission::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_rate_applies() {
        let mut r = RateLimit::new(10, 5, 0);
        for _ in 0..5 {
            assert_eq!(r.admit(0), Admission::Accept);
        }
        assert_eq!(r.admit(0), Admission::Refuse);
        // 100 ms later one token is back.
        assert_eq!(r.admit(100), Admission::Accept);
        assert_eq!(r.admit(100), Admission::Refuse);
    }

    #[test]
    fn a_steady_client_is_never_refused() {
        let mut r = RateLimit::new(10, 5, 0);
        for i in 0..1_000 {
            assert_eq!(r.admit(i * 100), Admission::Accept);
        }
    }

    #[test]
    fn a_flood_is_closed_after_burst_refusals() {
        let mut r = RateLimit::new(10, 3, 0);
        let verdicts: Vec<Admission> = (0..7).map(|_| r.admit(0)).collect();
        assert_eq!(
            verdicts,
            [
                Admission::Accept,
                Admission::Accept,
                Admission::Accept,
                Admission::Refuse,
                Admission::Refuse,
                Admission::Refuse,
                Admission::Close
            ]
        );
    }
}
