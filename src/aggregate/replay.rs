//! The anti-replay window of a keyed device's session (RFC 4303 §3.4.3,
//! RFC 6347 §4.1.2.6): the highest sequence number accepted so far and a
//! bitmap of the [`WINDOW`] numbers below it. A number above the highest
//! is new; one inside the window is new if its bit is clear; anything
//! older is refused. Only datagrams whose tag verified may move it, so a
//! forger can neither advance nor poison it.
//!
//! Sequence numbers are 32 bits on the wire; the window extends each to 64
//! bits as the value nearest the highest accepted, so wrapping past
//! `u32::MAX` keeps working.

/// How many sequence numbers below the highest are remembered.
pub const WINDOW: u64 = 128;

/// Whether a sequence number may be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Never seen in this session: accept, then [`ReplayWindow::accept`].
    Fresh(u64),
    /// Seen already, or older than the window.
    Replayed,
}

/// The window of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted, extended to 64 bits; `None` before the first.
    top: Option<u64>,
    /// Bit `i` set: `top - i` was accepted (bit 0 is `top` itself).
    seen: u128,
}

impl ReplayWindow {
    /// Checks `seq` without changing anything.
    pub fn check(&self, seq: u32) -> ReplayVerdict {
        let Some(top) = self.top else {
            return ReplayVerdict::Fresh(u64::from(seq));
        };
        let extended = extend(seq, top);
        if extended > top {
            return ReplayVerdict::Fresh(extended);
        }
        let behind = top - extended;
        if behind >= WINDOW || self.seen & (1u128 << behind) != 0 {
            ReplayVerdict::Replayed
        } else {
            ReplayVerdict::Fresh(extended)
        }
    }

    /// Records `extended` (from [`ReplayVerdict::Fresh`]) as accepted.
    pub fn accept(&mut self, extended: u64) {
        match self.top {
            None => {
                self.top = Some(extended);
                self.seen = 1;
            }
            Some(top) if extended > top => {
                let ahead = extended - top;
                self.seen = if ahead >= WINDOW {
                    1
                } else {
                    (self.seen << ahead) | 1
                };
                self.top = Some(extended);
            }
            Some(top) => {
                let behind = top - extended;
                if behind < WINDOW {
                    self.seen |= 1u128 << behind;
                }
            }
        }
    }
}

/// The 64-bit value nearest `top` whose low 32 bits are `seq` (never below
/// 0).
fn extend(seq: u32, top: u64) -> u64 {
    let delta = i64::from(seq.wrapping_sub(top as u32) as i32);
    top.checked_add_signed(delta).unwrap_or(u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(window: &mut ReplayWindow, seq: u32) -> bool {
        match window.check(seq) {
            ReplayVerdict::Fresh(x) => {
                window.accept(x);
                true
            }
            ReplayVerdict::Replayed => false,
        }
    }

    #[test]
    fn each_number_is_taken_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(take(&mut w, 10));
        assert!(!take(&mut w, 10));
        assert!(take(&mut w, 12));
        assert!(take(&mut w, 11), "late but inside the window");
        assert!(!take(&mut w, 11));
        assert!(take(&mut w, 5), "below the first, still in the window");
        assert!(take(&mut w, 12 + 200));
        assert!(!take(&mut w, 12), "fell out of the window");
        assert!(take(&mut w, 212 - 127));
        assert!(!take(&mut w, 212 - 128), "just outside");
    }

    #[test]
    fn checking_changes_nothing() {
        let mut w = ReplayWindow::default();
        assert!(take(&mut w, 3));
        let before = w.clone();
        assert_eq!(w.check(4), ReplayVerdict::Fresh(4));
        assert_eq!(w.check(3), ReplayVerdict::Replayed);
        assert_eq!(w, before);
    }

    #[test]
    fn sequence_numbers_wrap_past_u32_max() {
        let mut w = ReplayWindow::default();
        assert!(take(&mut w, u32::MAX - 1));
        assert!(take(&mut w, u32::MAX));
        assert!(take(&mut w, 0));
        assert!(take(&mut w, 1));
        assert!(!take(&mut w, u32::MAX), "seen before the wrap");
        assert_eq!(w.check(2), ReplayVerdict::Fresh((1u64 << 32) + 2));
    }

    #[test]
    fn a_far_jump_forward_is_accepted_but_forgets_the_past() {
        let mut w = ReplayWindow::default();
        assert!(take(&mut w, 1));
        assert!(take(&mut w, 1_000_000));
        assert!(!take(&mut w, 1));
        assert!(!take(&mut w, 2), "older than the window");
        assert!(take(&mut w, 999_999));
    }
}
