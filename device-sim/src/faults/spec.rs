//! What faults to inject, per device: [`FaultSpec`] (probabilities, delays,
//! a clock offset, impersonations of keyed devices and a phantom-id flood)
//! and its validation ([`InvalidFaultSpec`]). Pure data.

use std::fmt;

/// Longest jitter delay, in ms.
pub const MAX_JITTER_MS: u64 = 60_000;
/// Largest clock skew either way, in ms (20 days: the hub restores a
/// datagram's time exactly within about 24.8 days of its own clock).
pub const MAX_CLOCK_SKEW_MS: i64 = 20 * 24 * 3_600 * 1_000;
/// Most datagrams of the previous session re-sent after each new session
/// ([`FaultSpec::replay_after_reboot`]); the injector remembers this many.
pub const MAX_REPLAY_AFTER_REBOOT: u32 = 8;
/// Highest phantom rate, datagrams per second, fleet-wide.
pub const MAX_PHANTOM_PER_S: f64 = 10_000.0;
/// Most phantom ids taking turns.
pub const MAX_PHANTOM_IDS: u32 = 4_096;
/// Phantom ids taking turns when `device-sim run` is not told how many.
pub const DEFAULT_PHANTOM_IDS: u32 = 32;

/// The faults of one device (or of every device of a fleet). Probabilities
/// are within `0..=1`; a datagram gets at most one of loss, corruption,
/// hold-back or duplication (drawn in that order).
///
/// `forge`, `replay`, `replay_after_reboot` and `spoof` are what an
/// attacker on the network does to a device with a key: they need a keyed
/// fleet (a fleet without keys is refused). `phantom_per_s` is fleet-wide:
/// only the fleet's spec may set it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSpec {
    /// Per datagram: it is not sent.
    pub loss: f64,
    /// Per datagram: it is held back and sent right after the device's next one.
    pub reorder: f64,
    /// Per datagram: it is sent twice, back to back (a keyed device's copy
    /// is a replay to the hub: `replayed`).
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
    /// Per datagram (keyed devices): a forged copy goes out too, the
    /// datagram with one byte of its tag flipped (hub: `bad_tag`).
    pub forge: f64,
    /// Per datagram (keyed devices): a datagram of the current session that
    /// the hub accepted earlier is sent again (hub: `replayed`).
    pub replay: f64,
    /// After each new session (keyed devices: each reboot), this many
    /// datagrams the hub accepted in the previous session are sent again
    /// once the new one is up (hub: `bad_tag` each; at most
    /// [`MAX_REPLAY_AFTER_REBOOT`]).
    pub replay_after_reboot: u32,
    /// Per datagram (keyed devices): a stranger (another UDP socket) sends
    /// an untagged datagram in the device's name, with its next sequence
    /// number and absurd readings (hub: `unauthenticated`).
    pub spoof: f64,
    /// Fleet-wide: datagrams per second from phantom ids, ids no device of
    /// the fleet uses (hub: a discovered device per id while
    /// `devices.max_discovered` allows, `discovered_limit` for the rest;
    /// at most [`MAX_PHANTOM_PER_S`]).
    pub phantom_per_s: f64,
    /// How many phantom ids take turns (round robin), at most
    /// [`MAX_PHANTOM_IDS`]; at least 1 when `phantom_per_s` is set.
    pub phantom_ids: u32,
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
        forge: 0.0,
        replay: 0.0,
        replay_after_reboot: 0,
        spoof: 0.0,
        phantom_per_s: 0.0,
        phantom_ids: 0,
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
    /// jitter within [`MAX_JITTER_MS`], the skew within
    /// ±[`MAX_CLOCK_SKEW_MS`], the replays after a reboot within
    /// [`MAX_REPLAY_AFTER_REBOOT`], the phantom rate within
    /// [`MAX_PHANTOM_PER_S`] and the phantom ids within
    /// 1..=[`MAX_PHANTOM_IDS`] (0 only without phantoms).
    pub fn validate(&self) -> Result<(), InvalidFaultSpec> {
        for (fault, value) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("session_drop", self.session_drop),
            ("reboot", self.reboot),
            ("forge", self.forge),
            ("replay", self.replay),
            ("spoof", self.spoof),
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
        if self.replay_after_reboot > MAX_REPLAY_AFTER_REBOOT {
            return Err(InvalidFaultSpec {
                fault: "replay_after_reboot",
                value: f64::from(self.replay_after_reboot),
            });
        }
        if !(0.0..=MAX_PHANTOM_PER_S).contains(&self.phantom_per_s) {
            return Err(InvalidFaultSpec {
                fault: "phantom_per_s",
                value: self.phantom_per_s,
            });
        }
        let fewest_ids = u32::from(self.phantom_per_s > 0.0);
        if !(fewest_ids..=MAX_PHANTOM_IDS).contains(&self.phantom_ids) {
            return Err(InvalidFaultSpec {
                fault: "phantom_ids",
                value: f64::from(self.phantom_ids),
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

    /// Whether it impersonates a device with a key (forgeries, replays,
    /// spoofs), which only a keyed fleet can be asked for.
    pub fn needs_keyed_fleet(&self) -> bool {
        self.forge > 0.0 || self.replay > 0.0 || self.replay_after_reboot > 0 || self.spoof > 0.0
    }

    /// Whether the device's earlier datagrams must be remembered (to replay
    /// them).
    pub(crate) fn replays(&self) -> bool {
        self.replay > 0.0 || self.replay_after_reboot > 0
    }
}

/// A fault setting out of range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidFaultSpec {
    /// Which setting: a probability (`loss`, `reorder`, `duplicate`,
    /// `corrupt`, `session_drop`, `reboot`, `forge`, `replay`, `spoof`),
    /// `jitter_ms`, `clock_skew_ms`, `replay_after_reboot`,
    /// `phantom_per_s` or `phantom_ids`.
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
            "replay_after_reboot" => write!(
                f,
                "the datagrams replayed after a reboot must be within 0..={MAX_REPLAY_AFTER_REBOOT}, not {value}"
            ),
            "phantom_per_s" => write!(
                f,
                "the phantom rate must be within 0..={MAX_PHANTOM_PER_S} datagrams/s, not {value}"
            ),
            "phantom_ids" => write!(
                f,
                "the phantom ids must be within 1..={MAX_PHANTOM_IDS} (0 only without phantoms), not {value}"
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

    #[test]
    fn impersonations_and_phantoms_are_checked() {
        let refused = |spec: FaultSpec| spec.validate().expect_err("refused").to_string();
        let none = FaultSpec::NONE;
        for spec in [
            FaultSpec { forge: 1.5, ..none },
            FaultSpec {
                replay: -0.1,
                ..none
            },
            FaultSpec {
                spoof: f64::NAN,
                ..none
            },
        ] {
            assert!(refused(spec).contains("probability must be within 0..=1"));
        }
        assert_eq!(
            refused(FaultSpec {
                replay_after_reboot: MAX_REPLAY_AFTER_REBOOT + 1,
                ..none
            }),
            "the datagrams replayed after a reboot must be within 0..=8, not 9"
        );
        assert_eq!(
            refused(FaultSpec {
                phantom_per_s: 10_001.0,
                phantom_ids: 1,
                ..none
            }),
            "the phantom rate must be within 0..=10000 datagrams/s, not 10001"
        );
        assert!(refused(FaultSpec {
            phantom_per_s: f64::NAN,
            phantom_ids: 1,
            ..none
        })
        .starts_with("the phantom rate"));
        // A flood needs ids to come from.
        assert!(refused(FaultSpec {
            phantom_per_s: 5.0,
            ..none
        })
        .starts_with("the phantom ids must be within 1..=4096"));
        assert!(refused(FaultSpec {
            phantom_ids: MAX_PHANTOM_IDS + 1,
            ..none
        })
        .starts_with("the phantom ids"));
        let edge = FaultSpec {
            forge: 1.0,
            replay: 1.0,
            replay_after_reboot: MAX_REPLAY_AFTER_REBOOT,
            spoof: 1.0,
            phantom_per_s: MAX_PHANTOM_PER_S,
            phantom_ids: MAX_PHANTOM_IDS,
            ..none
        };
        assert_eq!(edge.validate(), Ok(()));
        assert!(edge.needs_keyed_fleet() && !edge.touches_datagrams());
    }

    #[test]
    fn only_impersonations_need_a_keyed_fleet() {
        let none = FaultSpec::NONE;
        assert!(!none.needs_keyed_fleet());
        let phantoms = FaultSpec {
            phantom_per_s: 10.0,
            phantom_ids: 3,
            ..FaultSpec::new(0.5, 0.5, 0.5).expect("valid")
        };
        assert!(!phantoms.needs_keyed_fleet());
        for keyed in [
            FaultSpec { forge: 0.1, ..none },
            FaultSpec {
                replay: 0.1,
                ..none
            },
            FaultSpec {
                replay_after_reboot: 1,
                ..none
            },
            FaultSpec { spoof: 0.1, ..none },
        ] {
            assert!(keyed.needs_keyed_fleet(), "{keyed:?}");
        }
    }
}
