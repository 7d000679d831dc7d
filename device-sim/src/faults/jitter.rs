//! Jitter: each of a device's datagrams waits a random 0..=max ms before it
//! goes on the wire, without overtaking the device's earlier ones (a
//! datagram whose delay would end first waits for them). [`DelayLine`]
//! holds one device's waiting datagrams, at most [`DELAY_LINE_CAPACITY`];
//! when it is full the oldest goes out at once (early, never out of order).
//! Pure: the caller passes the time in and owns the socket.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Most datagrams one device may have waiting.
pub const DELAY_LINE_CAPACITY: usize = 64;

/// One device's datagrams waiting out their jitter, in send order.
#[derive(Debug, Clone)]
pub(crate) struct DelayLine {
    max_ms: u64,
    rng: fastrand::Rng,
    queue: VecDeque<(Instant, Vec<u8>)>,
}

impl DelayLine {
    /// Delays of up to `max_ms` (0: none), drawn from a generator seeded
    /// with `seed`.
    pub fn new(max_ms: u64, seed: u64) -> DelayLine {
        DelayLine {
            max_ms,
            rng: fastrand::Rng::with_seed(seed),
            queue: VecDeque::new(),
        }
    }

    /// Whether datagrams are delayed at all (if not, send them directly).
    pub fn is_active(&self) -> bool {
        self.max_ms > 0
    }

    /// The time a datagram produced at `now` is due, by a fresh draw.
    pub fn due_from(&mut self, now: Instant) -> Instant {
        now + Duration::from_millis(self.rng.u64(0..=self.max_ms))
    }

    /// Queues `bytes` to go at `due`, or after the datagrams already
    /// queued if they are due later. If the line was full, returns the
    /// oldest datagram, which must go now.
    pub fn push(&mut self, due: Instant, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let evicted = if self.queue.len() >= DELAY_LINE_CAPACITY {
            self.queue.pop_front().map(|(_, bytes)| bytes)
        } else {
            None
        };
        let due = self.queue.back().map_or(due, |&(last, _)| last.max(due));
        self.queue.push_back((due, bytes));
        evicted
    }

    /// When the oldest waiting datagram is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|&(due, _)| due)
    }

    /// The oldest waiting datagram, if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? <= now {
            self.queue.pop_front().map(|(_, bytes)| bytes)
        } else {
            None
        }
    }

    /// Every waiting datagram, in order, due or not (the run is ending).
    pub fn drain(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.queue.drain(..).map(|(_, bytes)| bytes)
    }

    /// How many datagrams are waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_stay_within_the_maximum_and_vary() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(20, 3);
        let delays: Vec<Duration> = (0..500).map(|_| line.due_from(t0) - t0).collect();
        assert!(delays.iter().all(|&d| d <= 20 * MS));
        assert!(delays.contains(&Duration::ZERO) && delays.contains(&(20 * MS)));
        assert!(!DelayLine::new(0, 3).is_active() && line.is_active());
        assert_eq!(DelayLine::new(0, 3).due_from(t0), t0);
    }

    #[test]
    fn a_datagram_never_overtakes_an_earlier_one() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(50, 1);
        assert_eq!(line.push(t0 + 40 * MS, vec![1]), None);
        // Drawn a shorter delay: it waits for datagram 1.
        assert_eq!(line.push(t0 + 10 * MS, vec![2]), None);
        assert_eq!(line.push(t0 + 45 * MS, vec![3]), None);
        assert_eq!(line.pop_due(t0 + 39 * MS), None);
        assert_eq!(line.pop_due(t0 + 40 * MS), Some(vec![1]));
        assert_eq!(line.next_due(), Some(t0 + 40 * MS));
        assert_eq!(line.pop_due(t0 + 40 * MS), Some(vec![2]));
        assert_eq!(line.pop_due(t0 + 44 * MS), None);
        assert_eq!(line.pop_due(t0 + 45 * MS), Some(vec![3]));
        assert_eq!((line.len(), line.next_due()), (0, None));
    }

    #[test]
    fn order_holds_for_any_draws() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(30, 11);
        let mut sent = Vec::new();
        for i in 0..1_000u32 {
            let now = t0 + i * MS;
            while let Some(bytes) = line.pop_due(now) {
                sent.push(bytes);
            }
            let due = line.due_from(now);
            assert!(line.push(due, i.to_le_bytes().to_vec()).is_none());
        }
        sent.extend(line.drain());
        let order: Vec<Vec<u8>> = (0..1_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        assert_eq!(sent, order);
    }

    #[test]
    fn a_full_line_lets_its_oldest_go_at_once() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(1_000, 1);
        for i in 0..DELAY_LINE_CAPACITY {
            assert_eq!(line.push(t0 + 1_000 * MS, vec![i as u8]), None);
        }
        assert_eq!(line.push(t0 + 1_000 * MS, vec![0xFF]), Some(vec![0]));
        assert_eq!(line.len(), DELAY_LINE_CAPACITY);
        let rest: Vec<Vec<u8>> = line.drain().collect();
        assert_eq!(rest.first(), Some(&vec![1]));
        assert_eq!(rest.last(), Some(&vec![0xFF]));
    }
}
