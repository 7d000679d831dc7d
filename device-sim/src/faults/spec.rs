//! What faults to inject, per device: [`FaultSpec`] (probabilities, delays
//! and a clock offset) and its validation ([`InvalidFaultSpec`]). Pure data.

use std::fmt;

/// Longest jitter delay, in ms.
pub const MAX_JITTER_MS: u64 = 60_000;
/// Largest clock skew either way, in ms (20 days: the hub restores a
/// datagram's time exactly within about 24.8 days of its own clock).
pub const MAX_CLOCK_SKEW_MS: i64 = 20 * 24 * 3_600 * 1_000;

/// The faults of one device (or of every device of a fleet). Probabilities
/// are within `0..=1`; a datagram gets at most one of loss, corruption,
/// hold-back or duplication (drawn in that order).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSpec {
    /// Per datagram: it is not sent.
    pub loss: f64,
    /// Per datagram: it is held back and sent right after the device's next one.
    pub reorder: f64,
    /// Per datagram: it is sent twice, back to back.
    pub duplicate: f64,
    /// Per datagram: it is sent damaged, so that the hub drops it under a
    /// known reason (see [`crate::faults::Corruption`]).
    pub corrupt: f64,
    /// Each datagram's send is delayed by a random 0..=`jitter_ms` ms,
    /// keeping the device's order (timing only; at most [`MAX_JITTER_MS`]).
    pub jitter_ms: u64,
    /// The device's clock runs this many ms ahead (negative: behind) in
    /// datagrams, hellos and heartbeats (at most [`MAX_CLOCK_SKEW_MS`]
    /// either way).
    pub clock_skew_ms: i64,
    /// Per heartbeat: the device drops its control session abruptly (no
    /// `Bye`) instead, and reconnects with its usual backoff.
    pub session_drop: f64,
    /// Per datagram: the device reboots right after it, as a `reboot`
    /// command would make it (boot pause, sequence restart, reconnect).
    pub reboot: f64,
}

impl FaultSpec {
    /// No faults: every datagram goes out once, in order, on time.
    pub const NONE: FaultSpec = FaultSpec {
        loss: 0.0,
        reorder: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        jitter_ms: 0,
        clock_skew_ms: 0,
        session_drop: 0.0,
        reboot: 0.0,
    };

    /// A validated spec with only loss, reordering and duplicates (set the
    /// other fields with `FaultSpec { corrupt: …, ..FaultSpec::NONE }`).
    pub fn new(loss: f64, reorder: f64, duplicate: f64) -> Result<FaultSpec, InvalidFaultSpec> {
        let spec = FaultSpec {
            loss,
            reorder,
            duplicate,
            ..FaultSpec::NONE
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that every probability is within `0..=1` (NaN is not), the
    /// jitter within [`MAX_JITTER_MS`] and the skew within
    /// ±[`MAX_CLOCK_SKEW_MS`].
    pub fn validate(&self) -> Result<(), InvalidFaultSpec> {
        for (fault, value) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("session_drop", self.session_drop),
            ("reboot", self.reboot),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(InvalidFaultSpec { fault, value });
            }
        }
        if self.jitter_ms > MAX_JITTER_MS {
            return Err(InvalidFaultSpec {
                fault: "jitter_ms",
                value: self.jitter_ms as f64,
            });
        }
        if self.clock_skew_ms.unsigned_abs() > MAX_CLOCK_SKEW_MS.unsigned_abs() {
            return Err(InvalidFaultSpec {
                fault: "clock_skew_ms",
                value: self.clock_skew_ms as f64,
            });
        }
        Ok(())
    }

    /// Whether nothing at all is injected.
    pub fn is_none(&self) -> bool {
        *self == FaultSpec::NONE
    }

    /// Whether a datagram's bytes or sequence can be touched (loss,
    /// corruption, reordering, duplicates).
    pub fn touches_datagrams(&self) -> bool {
        self.loss > 0.0 || self.corrupt > 0.0 || self.reorder > 0.0 || self.duplicate > 0.0
    }
}

/// A fault setting out of range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidFaultSpec {
    /// Which setting: a probability (`loss`, `reorder`, `duplicate`,
    /// `corrupt`, `session_drop`, `reboot`), `jitter_ms` or `clock_skew_ms`.
    pub fault: &'static str,
    /// The value given.
    pub value: f64,
}

impl fmt::Display for InvalidFaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fault, value) = (self.fault, self.value);
        match fault {
            "jitter_ms" => write!(
                f,
                "the jitter must be within 0..={MAX_JITTER_MS} ms, not {value}"
            ),
            "clock_skew_ms" => write!(
                f,
                "the clock skew must be within ±{MAX_CLOCK_SKEW_MS} ms, not {value}"
            ),
            _ => write!(
                f,
                "the {fault} probability must be within 0..=1, not {value}"
            ),
        }
    }
}

impl std::error::Error for InvalidFaultSpec {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_probabilities_are_refused() {
        for (loss, reorder, duplicate) in [(-0.1, 0.0, 0.0), (0.0, 1.5, 0.0), (0.0, 0.0, f64::NAN)]
        {
            assert!(FaultSpec::new(loss, reorder, duplicate).is_err());
        }
        let err = FaultSpec::new(0.0, 2.0, 0.0).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the reorder probability must be within 0..=1, not 2"
        );
        assert!(FaultSpec::new(0.0, 1.0, 1.0).is_ok());
        assert!(FaultSpec::NONE.is_none() && FaultSpec::default().is_none());
    }

    #[test]
    fn every_new_setting_is_checked() {
        let refused = |spec: FaultSpec| spec.validate().expect_err("refused").to_string();
        let none = FaultSpec::NONE;
        assert_eq!(
            refused(FaultSpec {
                corrupt: 1.01,
                ..none
            }),
            "the corrupt probability must be within 0..=1, not 1.01"
        );
        assert!(refused(FaultSpec {
            session_drop: -1.0,
            ..none
        })
        .contains("session_drop probability"));
        assert!(refused(FaultSpec {
            reboot: f64::NAN,
            ..none
        })
        .contains("reboot probability"));
        assert_eq!(
            refused(FaultSpec {
                jitter_ms: MAX_JITTER_MS + 1,
                ..none
            }),
            "the jitter must be within 0..=60000 ms, not 60001"
        );
        assert!(refused(FaultSpec {
            clock_skew_ms: -MAX_CLOCK_SKEW_MS - 1,
            ..none
        })
        .starts_with("the clock skew must be within ±"));
        let edge = FaultSpec {
            corrupt: 1.0,
            jitter_ms: MAX_JITTER_MS,
            clock_skew_ms: -MAX_CLOCK_SKEW_MS,
            session_drop: 1.0,
            reboot: 1.0,
            ..none
        };
        assert_eq!(edge.validate(), Ok(()));
        assert!(!edge.is_none() && edge.touches_datagrams());
    }

    #[test]
    fn timing_faults_alone_do_not_touch_datagrams() {
        let timing = FaultSpec {
            jitter_ms: 5,
            clock_skew_ms: -3,
            session_drop: 0.5,
            reboot: 0.1,
            ..FaultSpec::NONE
        };
        assert!(!timing.is_none());
        assert!(!timing.touches_datagrams());
    }
}
