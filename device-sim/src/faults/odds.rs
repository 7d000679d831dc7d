//! Faults that are events rather than damage to a datagram's bytes: a
//! random reboot (drawn per datagram) and a dropped control session (drawn
//! per heartbeat). [`Odds`] draws them from a seeded generator of its own,
//! apart from the datagram faults' stream, so adding one kind of fault does
//! not change where the others fall; [`stream_seed`] gives each stream
//! (these, jitter, and an attacker's impersonations) its seed. Pure.

/// Which stream of a device's random numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Random reboots.
    Reboot,
    /// Control-session drops.
    SessionDrop,
    /// Jitter delays.
    Jitter,
    /// Impersonations of a keyed device (forgeries, replays, spoofs).
    Attack,
}

/// The seed of one of a device's event streams, given its injector seed
/// ([`crate::faults::injector_seed`]).
pub(crate) fn stream_seed(injector_seed: u64, stream: Stream) -> u64 {
    let salt = match stream {
        Stream::Reboot => 0x5EB0_07ED_0000_0001,
        Stream::SessionDrop => 0xD10B_5E55_0000_0002,
        Stream::Jitter => 0x717E_D0E1_0000_0003,
        Stream::Attack => 0xA77A_C4ED_0000_0004,
    };
    crate::faults::injector_seed(injector_seed ^ salt, 0)
}

/// An event that happens with a fixed probability at each chance.
#[derive(Debug, Clone)]
pub(crate) struct Odds {
    p: f64,
    rng: fastrand::Rng,
}

impl Odds {
    /// Happens with probability `p` (within `0..=1`) at each chance.
    pub fn new(p: f64, seed: u64) -> Odds {
        Odds {
            p,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// One chance: whether it happens now. Draws nothing when `p` is 0.
    pub fn happens(&mut self) -> bool {
        self.p > 0.0 && self.rng.f64() < self.p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_and_always() {
        let mut never = Odds::new(0.0, 1);
        let mut always = Odds::new(1.0, 1);
        for _ in 0..1_000 {
            assert!(!never.happens());
            assert!(always.happens());
        }
    }

    #[test]
    fn a_probability_is_kept_and_the_same_seed_repeats() {
        let draws = |seed| {
            let mut odds = Odds::new(0.25, seed);
            (0..10_000).map(|_| odds.happens()).collect::<Vec<_>>()
        };
        let hits = draws(7).iter().filter(|&&hit| hit).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn streams_of_one_device_differ() {
        let seeds = [
            Stream::Reboot,
            Stream::SessionDrop,
            Stream::Jitter,
            Stream::Attack,
        ]
        .map(|s| stream_seed(9, s));
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| a != b), "{seeds:?}");
        }
        assert_ne!(
            stream_seed(9, Stream::Reboot),
            stream_seed(10, Stream::Reboot)
        );
    }
}
