//! What keeps strangers from wearing the control channel down: failed
//! hellos slow their address down (the web side's
//! [`Throttle`](crate::auth::throttle::Throttle): a wait after each
//! failure, doubling up to a ceiling) and are logged within a budget
//! ([`LogBudget`]), and connections that have not said a valid hello yet
//! share a small budget of their own ([`HandshakeQueue`]): when it is
//! full, a new connection ends the oldest unauthenticated one, so idle
//! connections opened again and again cannot keep a real device out.
//! [`HandshakeQueue`] is pure; [`HelloGuard`] wraps the three for the
//! listener and its connections.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::auth::throttle::{LogBudget, LogVerdict, Throttle};
use crate::config::ControlConfig;
use crate::metrics::Counter;

/// Connections in their handshake, oldest first, at most `max`.
#[derive(Debug)]
pub struct HandshakeQueue {
    max: usize,
    order: VecDeque<u64>,
}

impl HandshakeQueue {
    /// At most `max` (at least 1) at once.
    pub fn new(max: usize) -> HandshakeQueue {
        HandshakeQueue {
            max: max.max(1),
            order: VecDeque::new(),
        }
    }

    /// Connection `id` starts its handshake; returns the one it pushes out
    /// when the queue was full (the oldest).
    pub fn begin(&mut self, id: u64) -> Option<u64> {
        let evicted = (self.order.len() >= self.max)
            .then(|| self.order.pop_front())
            .flatten();
        self.order.push_back(id);
        evicted
    }

    /// Connection `id` finished its handshake (either way).
    pub fn end(&mut self, id: u64) {
        if let Some(at) = self.order.iter().position(|&x| x == id) {
            self.order.remove(at);
        }
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The control channel's defences, shared by its connections.
#[derive(Debug)]
pub struct HelloGuard {
    throttle: Mutex<Throttle>,
    log: Mutex<LogBudget>,
    handshakes: Mutex<(HandshakeQueue, Vec<(u64, CancellationToken)>)>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HelloGuard {
    /// From `[control]`.
    pub fn new(config: &ControlConfig) -> HelloGuard {
        HelloGuard {
            throttle: Mutex::new(Throttle::new(
                config.failure_delay_ms,
                config.max_failure_delay_ms,
            )),
            log: Mutex::new(LogBudget::new(config.failure_log_per_minute)),
            handshakes: Mutex::new((HandshakeQueue::new(config.max_handshaking), Vec::new())),
        }
    }

    /// Connection `id` starts its handshake; the token is cancelled when a
    /// newer connection pushes it out of the handshake budget.
    pub fn begin_handshake(&self, id: u64) -> CancellationToken {
        let token = CancellationToken::new();
        let mut guard = locked(&self.handshakes);
        let (queue, tokens) = &mut *guard;
        if let Some(evicted) = queue.begin(id) {
            if let Some(at) = tokens.iter().position(|(x, _)| *x == evicted) {
                tokens.swap_remove(at).1.cancel();
            }
        }
        tokens.push((id, token.clone()));
        token
    }

    /// Connection `id` finished its handshake.
    pub fn end_handshake(&self, id: u64) {
        let mut guard = locked(&self.handshakes);
        let (queue, tokens) = &mut *guard;
        queue.end(id);
        if let Some(at) = tokens.iter().position(|(x, _)| *x == id) {
            tokens.swap_remove(at);
        }
    }

    /// `Ok` if `ip` may present a token now, else how long it must wait, ms.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        locked(&self.throttle).check(ip, now_ms)
    }

    /// A wrong token from `ip` for `device`: slows the address down and
    /// logs within the budget; counts a line left out in `left_out`.
    pub fn failed(&self, ip: IpAddr, device: u32, now_ms: u64, left_out: &Counter) {
        let wait_ms = locked(&self.throttle).fail(ip, now_ms);
        let verdict = locked(&self.log).admit(now_ms);
        match verdict {
            LogVerdict::Write { left_out: 0 } => {
                tracing::warn!(peer = %ip, device, wait_ms, "control hello with a bad token");
            }
            LogVerdict::Write { left_out } => {
                tracing::warn!(
                    peer = %ip, device, wait_ms, left_out,
                    "control hello with a bad token ({left_out} more were not logged)"
                );
            }
            LogVerdict::LeaveOut => {
                left_out.inc();
            }
        }
    }

    /// A valid token from `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        locked(&self.throttle).succeed(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_pushes_out_its_oldest() {
        let mut q = HandshakeQueue::new(2);
        assert_eq!(q.begin(1), None);
        assert_eq!(q.begin(2), None);
        assert_eq!(q.begin(3), Some(1));
        q.end(2);
        assert_eq!(q.begin(4), None);
        assert_eq!(q.begin(5), Some(3));
        assert_eq!(q.len(), 2);
        q.end(99);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn the_pushed_out_connection_is_told_by_its_token() {
        let mut config = crate::config::HubConfig::defaults().unwrap().control;
        config.max_handshaking = 1;
        let guard = HelloGuard::new(&config);
        let first = guard.begin_handshake(1);
        let second = guard.begin_handshake(2);
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        guard.end_handshake(2);
        let third = guard.begin_handshake(3);
        assert!(!third.is_cancelled() && !second.is_cancelled());
    }

    #[test]
    fn failures_slow_the_address_and_log_within_budget() {
        let mut config = crate::config::HubConfig::defaults().unwrap().control;
        config.failure_delay_ms = 100;
        config.max_failure_delay_ms = 100;
        config.failure_log_per_minute = 2;
        let guard = HelloGuard::new(&config);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let left_out = Counter::default();
        for i in 0..5 {
            guard.failed(ip, 7, i * 100, &left_out);
        }
        assert_eq!(guard.check(ip, 450), Err(50));
        assert_eq!(left_out.get(), 3);
        guard.succeeded(ip);
        assert_eq!(guard.check(ip, 450), Ok(()));
    }
}
