//! When one device sends next: keeps its cadence, applies an interval
//! change at once (counted from the last send), and keeps a rebooting
//! device silent until its boot pause ends, then restarts its sequence.
//! Pure: the caller passes the time in.

use std::time::Duration;

use tokio::time::Instant;

/// The send schedule of one device.
#[derive(Debug, Clone)]
pub(crate) struct SendSlot {
    /// When the device sends next.
    due: Instant,
    /// Bumped whenever `due` changes, so the sender can tell an outdated
    /// entry of its timer heap from the current one.
    generation: u64,
    /// The scheduled time of the last send; the cadence counts from it.
    last_slot: Option<Instant>,
    /// Rebooting: nothing is sent before this.
    silent_until: Option<Instant>,
    /// The next send restarts the sequence at 0 (first after a reboot).
    reset_seq: bool,
}

impl SendSlot {
    /// A device that first sends at `first_due`.
    pub fn new(first_due: Instant) -> SendSlot {
        SendSlot {
            due: first_due,
            generation: 0,
            last_slot: None,
            silent_until: None,
            reset_seq: false,
        }
    }

    /// When the device sends next, and the generation of that decision.
    pub fn due(&self) -> (Instant, u64) {
        (self.due, self.generation)
    }

    /// Whether a timer entry of `generation` is still the current one.
    pub fn is_current(&self, generation: u64) -> bool {
        self.generation == generation
    }

    /// The report interval became `interval` at `now`: the next send is one
    /// new interval after the last one (or now, if that has passed). During
    /// a reboot nothing changes: the pause ends first.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        if self.silent_until.is_some() {
            return;
        }
        let next = match self.last_slot {
            Some(last) => (last + interval).max(now),
            // Not sent yet: keep the start offset unless the new interval is shorter.
            None => self.due.min(now + interval),
        };
        self.set_due(next);
    }

    /// The device reboots: silent until `until`, then its sequence restarts.
    pub fn reboot(&mut self, until: Instant) {
        let until = self
            .silent_until
            .map_or(until, |earlier| earlier.max(until));
        self.silent_until = Some(until);
        self.reset_seq = true;
        self.last_slot = None;
        self.set_due(until);
    }

    /// The device sends the datagram due now and schedules the next one,
    /// `interval` later (skipping missed slots after a stall instead of
    /// bursting). Returns whether to restart the sequence before sending.
    pub fn send_now(&mut self, interval: Duration, now: Instant) -> bool {
        let slot = self.due;
        let reset_seq = std::mem::take(&mut self.reset_seq);
        self.silent_until = None;
        self.last_slot = Some(slot);
        self.set_due((slot + interval).max(now));
        reset_seq
    }

    fn set_due(&mut self, due: Instant) {
        self.due = due;
        self.generation = self.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sends_keep_the_cadence_and_skip_missed_slots() {
        let t0 = Instant::now();
        let mut slot = SendSlot::new(t0);
        assert!(!slot.send_now(100 * MS, t0 + 3 * MS));
        assert_eq!(slot.due().0, t0 + 100 * MS);
        // A stall of 350 ms: the next send is now, not a burst of three.
        slot.send_now(100 * MS, t0 + 450 * MS);
        assert_eq!(slot.due().0, t0 + 450 * MS);
    }

    #[test]
    fn a_shorter_interval_applies_from_the_last_send() {
        let t0 = Instant::now();
        let mut slot = SendSlot::new(t0);
        slot.send_now(1_000 * MS, t0);
        let (_, before) = slot.due();
        slot.set_interval(20 * MS, t0 + 5 * MS);
        let (due, after) = slot.due();
        assert_eq!(due, t0 + 20 * MS);
        assert!(!slot.is_current(before) && slot.is_current(after));
        // Already past one new interval since the last send: send now.
        slot.set_interval(2 * MS, t0 + 5 * MS);
        assert_eq!(slot.due().0, t0 + 5 * MS);
    }

    #[test]
    fn a_longer_interval_postpones_the_next_send() {
        let t0 = Instant::now();
        let mut slot = SendSlot::new(t0);
        slot.send_now(100 * MS, t0);
        slot.set_interval(5_000 * MS, t0 + 50 * MS);
        assert_eq!(slot.due().0, t0 + 5_000 * MS);
    }

    #[test]
    fn before_the_first_send_only_a_shorter_interval_moves_it() {
        let t0 = Instant::now();
        let mut slot = SendSlot::new(t0 + 800 * MS);
        slot.set_interval(5_000 * MS, t0);
        assert_eq!(slot.due().0, t0 + 800 * MS);
        slot.set_interval(10 * MS, t0);
        assert_eq!(slot.due().0, t0 + 10 * MS);
    }

    #[test]
    fn a_reboot_silences_until_the_pause_ends_then_restarts_the_sequence_once() {
        let t0 = Instant::now();
        let mut slot = SendSlot::new(t0);
        slot.send_now(20 * MS, t0);
        slot.reboot(t0 + 1_000 * MS);
        assert_eq!(slot.due().0, t0 + 1_000 * MS);
        // An interval change during the pause does not cut it short.
        slot.set_interval(5 * MS, t0 + 10 * MS);
        assert_eq!(slot.due().0, t0 + 1_000 * MS);
        // A second, earlier-ending reboot does not shorten it either.
        slot.reboot(t0 + 500 * MS);
        assert_eq!(slot.due().0, t0 + 1_000 * MS);
        assert!(slot.send_now(5 * MS, t0 + 1_000 * MS));
        assert_eq!(slot.due().0, t0 + 1_005 * MS);
        assert!(!slot.send_now(5 * MS, t0 + 1_005 * MS));
    }
}
