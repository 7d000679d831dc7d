//! Reconnect delays: exponential backoff from 100 ms doubling to 5 s, each
//! delay jittered down by up to half so a fleet that lost its hub does not
//! reconnect in lockstep. Pure: the caller passes the random generator.

use std::time::Duration;

/// First delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The delay before the next reconnect attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay to wait now (between half and all of the current step),
    /// doubling the step for next time, up to [`BACKOFF_MAX`].
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_MAX);
        let half = step / 2;
        half + half.mul_f64(rng.f64())
    }

    /// Back to the shortest delay (after a session that worked).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_of_at_most_half() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut backoff = Backoff::default();
        let mut step = BACKOFF_MIN;
        for _ in 0..12 {
            let delay = backoff.next_delay(&mut rng);
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(step, BACKOFF_MAX);
        assert!(backoff.next_delay(&mut rng) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= BACKOFF_MIN);
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let mut rng = fastrand::Rng::with_seed(11);
        let delays: Vec<Duration> = (0..20)
            .map(|_| Backoff::default().next_delay(&mut rng))
            .collect();
        let (min, max) = (delays.iter().min(), delays.iter().max());
        assert!(min < max, "{delays:?}");
    }
}
