//! Slowing down guessing, and keeping the log readable while someone
//! guesses. [`Throttle`]: after a failed login or a wrong token, the
//! client's address must wait before its next try, the wait doubling with
//! each further failure up to a ceiling; a success forgets the address.
//! IPv6 clients are keyed by their /64 (one host usually holds a whole
//! /64). At most [`MAX_TRACKED`] addresses are remembered. [`LogBudget`]:
//! at most N log lines per minute, then one line saying how many were left
//! out. Both pure; time passed in.

use std::collections::HashMap;
use std::net::IpAddr;

/// Most addresses remembered at once; when full, the one whose wait ended
/// longest ago is forgotten.
pub const MAX_TRACKED: usize = 4096;

/// The key an address is slowed under: itself for IPv4, its /64 for IPv6
/// (the same key as the per-address caps).
pub use crate::per_address::address_key as key;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until_ms: u64,
}

/// Per-address waits after failures.
#[derive(Debug)]
pub struct Throttle {
    first_ms: u64,
    max_ms: u64,
    entries: HashMap<IpAddr, Entry>,
}

impl Throttle {
    /// Waits of `first_ms`, doubling up to `max_ms`.
    pub fn new(first_ms: u64, max_ms: u64) -> Throttle {
        Throttle {
            first_ms,
            max_ms: max_ms.max(first_ms),
            entries: HashMap::new(),
        }
    }

    /// `Ok` if `ip` may try now, else how many ms it must still wait.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(&key(ip)) {
            Some(e) if e.until_ms > now_ms => Err(e.until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Records a failure from `ip` at `now_ms`; returns the wait imposed.
    pub fn fail(&mut self, ip: IpAddr, now_ms: u64) -> u64 {
        let k = key(ip);
        if !self.entries.contains_key(&k) && self.entries.len() >= MAX_TRACKED {
            self.forget_one(now_ms);
        }
        let entry = self.entries.entry(k).or_insert(Entry {
            failures: 0,
            until_ms: 0,
        });
        // An address whose wait ended long ago (a ceiling's worth) starts over.
        if entry.until_ms.saturating_add(self.max_ms) < now_ms {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        let shift = (entry.failures - 1).min(32);
        let wait = self.first_ms.saturating_mul(1u64 << shift).min(self.max_ms);
        entry.until_ms = now_ms.saturating_add(wait);
        wait
    }

    /// `ip` logged in: forget its failures.
    pub fn succeed(&mut self, ip: IpAddr) {
        self.entries.remove(&key(ip));
    }

    /// Addresses remembered.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn forget_one(&mut self, now_ms: u64) {
        self.entries
            .retain(|_, e| e.until_ms.saturating_add(self.max_ms) >= now_ms);
        if self.entries.len() >= MAX_TRACKED {
            if let Some(k) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.until_ms)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&k);
            }
        }
    }
}

/// Whether to write a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it; `left_out` lines were not written since the last one.
    Write {
        /// Lines suppressed before this one.
        left_out: u64,
    },
    /// Over budget: count it, do not write it.
    LeaveOut,
}

/// At most `per_minute` lines a minute.
#[derive(Debug)]
pub struct LogBudget {
    per_minute: u32,
    window_start_ms: u64,
    written: u32,
    left_out: u64,
}

impl LogBudget {
    /// At most `per_minute` lines in any minute-long window.
    pub fn new(per_minute: u32) -> LogBudget {
        LogBudget {
            per_minute,
            window_start_ms: 0,
            written: 0,
            left_out: 0,
        }
    }

    /// Decides about one line at `now_ms`.
    pub fn admit(&mut self, now_ms: u64) -> LogVerdict {
        if now_ms.saturating_sub(self.window_start_ms) >= 60_000 {
            self.window_start_ms = now_ms;
            self.written = 0;
        }
        if self.written >= self.per_minute {
            self.left_out += 1;
            return LogVerdict::LeaveOut;
        }
        self.written += 1;
        let left_out = std::mem::take(&mut self.left_out);
        LogVerdict::Write { left_out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_failure_doubles_the_wait_up_to_the_ceiling() {
        let mut t = Throttle::new(100, 1_000);
        let a = ip("10.0.0.1");
        assert_eq!(t.check(a, 0), Ok(()));
        assert_eq!(t.fail(a, 0), 100);
        assert_eq!(t.check(a, 40), Err(60));
        assert_eq!(t.check(a, 100), Ok(()));
        assert_eq!(t.fail(a, 100), 200);
        assert_eq!(t.fail(a, 300), 400);
        assert_eq!(t.fail(a, 700), 800);
        assert_eq!(t.fail(a, 1_500), 1_000);
        assert_eq!(t.fail(a, 2_500), 1_000);
        // Another address is not slowed.
        assert_eq!(t.check(ip("10.0.0.2"), 2_501), Ok(()));
        t.succeed(a);
        assert_eq!(t.check(a, 2_501), Ok(()));
        assert_eq!(t.fail(a, 2_501), 100);
    }

    #[test]
    fn an_address_quiet_for_a_ceiling_starts_over() {
        let mut t = Throttle::new(100, 1_000);
        let a = ip("10.0.0.1");
        t.fail(a, 0);
        t.fail(a, 100);
        assert_eq!(t.fail(a, 5_000), 100);
    }

    #[test]
    fn ipv6_is_slowed_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = Throttle::new(100, 1_000);
        t.fail(ip("2001:db8:1:2::1"), 0);
        assert!(t.check(ip("2001:db8:1:2:ffff::9"), 1).is_err());
        assert!(t.check(ip("2001:db8:1:3::1"), 1).is_ok());
        t.fail(ip("::ffff:192.0.2.7"), 0);
        assert!(t.check(ip("192.0.2.7"), 1).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::new(10, 20);
        for i in 0..(MAX_TRACKED as u32 + 500) {
            t.fail(IpAddr::V4(i.into()), u64::from(i));
        }
        assert!(t.tracked() <= MAX_TRACKED);
        // The newest address is still slowed.
        let last = IpAddr::V4((MAX_TRACKED as u32 + 499).into());
        assert!(t.check(last, u64::from(MAX_TRACKED as u32 + 499)).is_err());
    }

    #[test]
    fn the_log_budget_writes_n_lines_a_minute_and_counts_the_rest() {
        let mut b = LogBudget::new(3);
        let verdicts: Vec<_> = (0..10).map(|i| b.admit(i)).collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| matches!(v, LogVerdict::Write { .. }))
                .count(),
            3
        );
        assert_eq!(b.admit(60_000), LogVerdict::Write { left_out: 7 });
        assert_eq!(b.admit(60_001), LogVerdict::Write { left_out: 0 });
    }
}
