//! What a hub in a cluster still has to share: its own events, numbered in
//! the order they happened, waiting to be appended to the shared stream,
//! and how it is linked to that stream right now ([`LinkMode`]).
//!
//! Numbers make sharing exactly-once: the shared stream remembers the
//! highest number it appended for this hub's run, and skips any number at
//! or below it, so an append retried after a timeout cannot be appended
//! twice. Numbers also tell which of the hub's own events, read back from
//! the shared stream, its browsers already saw while the hub was alone
//! ([`Outbox::delivered_locally`]).
//!
//! Bounded by an estimate of the events' size as JSON: beyond it, the
//! oldest are dropped and counted (events and the datagrams in them), so a
//! long Redis outage costs a known, visible amount and never unbounded
//! memory. Plain state; no I/O.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::stream::Event;

/// How a hub is linked to the shared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum LinkMode {
    /// Its stream is the shared stream: every event, its own included,
    /// reaches its browsers at the position the shared stream gave it.
    Linked,
    /// Cut off from the shared stream: its own events reach its browsers
    /// at once (in an epoch of its own) and wait here to be shared late.
    Alone,
}

impl LinkMode {
    /// Its name in JSON and metrics.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One event waiting to be shared.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its number in this hub's run.
    pub number: u64,
    /// The event.
    pub event: Arc<Event>,
    /// The hub whose device it is about, when not this one (a hub reports
    /// the devices of a hub that is gone).
    pub about: Option<Arc<str>>,
    approx_bytes: usize,
}

/// Counters of what was shared, late or never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Events appended to the shared stream.
    pub shared: u64,
    /// Of which the hub's browsers had seen already, while it was alone.
    pub shared_late: u64,
    /// Events dropped unshared because the outbox was full.
    pub unshared: u64,
    /// Datagrams inside those events.
    pub unshared_datagrams: u64,
    /// Shared events passed over when a later one was read back first
    /// (never expected: the shared stream keeps a run's order).
    pub skipped_read_back: u64,
}

/// The hub's own events not yet in the shared stream, and those in it that
/// the hub has not read back yet (read back, they reach its browsers as
/// they were, with what the wire form leaves out: which client asked).
#[derive(Debug)]
pub struct Outbox {
    entries: VecDeque<Pending>,
    unread: VecDeque<Pending>,
    bytes: usize,
    max_bytes: usize,
    next_number: u64,
    /// The highest number whose event the hub's browsers saw before it was
    /// shared.
    delivered_locally_up_to: u64,
    counters: OutboxCounters,
}

impl Outbox {
    /// An empty outbox holding about `max_bytes` of events; the first
    /// event gets number 1.
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            unread: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_number: 1,
            delivered_locally_up_to: 0,
            counters: OutboxCounters::default(),
        }
    }

    /// Whether `event` fits without dropping anything (events shared but
    /// not read back count too).
    pub fn fits(&self, event: &Event) -> bool {
        self.bytes.saturating_add(event.approx_bytes()) <= self.max_bytes
    }

    /// Queues an event (which the hub's browsers saw already if
    /// `delivered_locally`), dropping the oldest beyond the bound; returns
    /// its number.
    pub fn push(&mut self, event: Arc<Event>, delivered_locally: bool) -> u64 {
        self.push_about(event, delivered_locally, None)
    }

    /// [`Outbox::push`], for an event about another hub's device.
    pub fn push_about(
        &mut self,
        event: Arc<Event>,
        delivered_locally: bool,
        about: Option<Arc<str>>,
    ) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        if delivered_locally {
            self.delivered_locally_up_to = number;
        }
        let approx_bytes = event.approx_bytes();
        self.bytes = self.bytes.saturating_add(approx_bytes);
        self.entries.push_back(Pending {
            number,
            event,
            about,
            approx_bytes,
        });
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.approx_bytes;
                self.counters.unshared += 1;
                if let Event::Readings(batch) = &*old.event {
                    self.counters.unshared_datagrams += batch.len() as u64;
                }
            }
        }
        number
    }

    /// Every event queued from now on was (or will be) seen by the hub's
    /// browsers before it is shared: what is queued now, too.
    pub fn mark_all_delivered_locally(&mut self) {
        self.delivered_locally_up_to = self.next_number - 1;
    }

    /// Up to `max` of the oldest events, without removing them.
    pub fn peek(&self, max: usize) -> Vec<Pending> {
        self.entries.iter().take(max).cloned().collect()
    }

    /// The shared stream holds every event up to number `up_to`: they
    /// are counted as shared, and wait to be read back unless the hub's
    /// browsers saw them already.
    pub fn confirm(&mut self, up_to: u64) {
        while self.entries.front().is_some_and(|e| e.number <= up_to) {
            if let Some(e) = self.entries.pop_front() {
                self.counters.shared += 1;
                if e.number <= self.delivered_locally_up_to {
                    self.counters.shared_late += 1;
                    self.bytes -= e.approx_bytes;
                } else {
                    self.unread.push_back(e);
                }
            }
        }
    }

    /// The hub read its event `number` back from the shared stream: the
    /// event as it was queued (none if the browsers saw it already, or it
    /// is not this run's).
    pub fn read_back(&mut self, number: u64) -> Option<Arc<Event>> {
        // Read back before the append's reply arrived: it is shared.
        self.confirm(number);
        while self.unread.front().is_some_and(|e| e.number < number) {
            // Skipped by the shared stream (cannot happen while appends
            // keep their order): counted, and the bytes freed.
            if let Some(e) = self.unread.pop_front() {
                self.bytes -= e.approx_bytes;
                self.counters.skipped_read_back += 1;
            }
        }
        if self.unread.front().is_some_and(|e| e.number == number) {
            let e = self.unread.pop_front()?;
            self.bytes -= e.approx_bytes;
            return Some(e.event);
        }
        None
    }

    /// Every event not yet seen by the hub's browsers, oldest first: those
    /// shared but not read back, then those waiting. From now on they
    /// count as seen (the hub delivers them itself: it is going alone).
    pub fn take_unseen(&mut self) -> Vec<Arc<Event>> {
        let mut unseen: Vec<Arc<Event>> =
            Vec::with_capacity(self.unread.len() + self.entries.len());
        for e in self.unread.drain(..) {
            self.bytes -= e.approx_bytes;
            unseen.push(e.event);
        }
        unseen.extend(
            self.entries
                .iter()
                .filter(|e| e.number > self.delivered_locally_up_to)
                .map(|e| e.event.clone()),
        );
        self.delivered_locally_up_to = self.next_number - 1;
        unseen
    }

    /// Whether the hub's browsers saw event `number` before it was shared
    /// (so it is not delivered to them again when read back).
    pub fn delivered_locally(&self, number: u64) -> bool {
        number <= self.delivered_locally_up_to
    }

    /// Number of the oldest event waiting.
    pub fn oldest_number(&self) -> Option<u64> {
        self.entries.front().map(|e| e.number)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Estimated bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What was shared, late or never.
    pub fn counters(&self) -> OutboxCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LiveDatagram;

    fn readings(n: usize) -> Arc<Event> {
        Arc::new(Event::Readings(
            (0..n)
                .map(|i| LiveDatagram {
                    device: 1,
                    seq: i as u32,
                    time_ms: 0,
                    received_ms: 0,
                    readings: Box::new([]),
                })
                .collect(),
        ))
    }

    #[test]
    fn numbers_events_and_confirms_in_order() {
        let mut outbox = Outbox::new(1 << 20);
        assert_eq!(outbox.push(readings(1), false), 1);
        assert_eq!(outbox.push(readings(1), false), 2);
        assert_eq!(outbox.push(readings(1), false), 3);
        assert_eq!(outbox.oldest_number(), Some(1));
        let numbers: Vec<u64> = outbox.peek(2).iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2]);
        outbox.confirm(2);
        assert_eq!(outbox.len(), 1);
        // Confirming again (an append retried) changes nothing.
        outbox.confirm(2);
        assert_eq!(outbox.counters().shared, 2);
        outbox.confirm(3);
        assert!(outbox.is_empty());
        assert_eq!(outbox.oldest_number(), None);
        // Read back, they are gone for good.
        for number in 1..=3 {
            assert!(outbox.read_back(number).is_some());
        }
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn events_seen_while_alone_are_shared_late_and_not_delivered_again() {
        let mut outbox = Outbox::new(1 << 20);
        outbox.push(readings(1), true);
        outbox.push(readings(1), true);
        outbox.push(readings(1), false);
        assert!(outbox.delivered_locally(2));
        assert!(!outbox.delivered_locally(3));
        outbox.confirm(3);
        let c = outbox.counters();
        assert_eq!((c.shared, c.shared_late), (3, 2));
        outbox.push(readings(1), false);
        outbox.mark_all_delivered_locally();
        assert!(outbox.delivered_locally(4));
        assert!(!outbox.delivered_locally(5));
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_them_with_their_datagrams() {
        let one = readings(3).approx_bytes();
        let mut outbox = Outbox::new(2 * one);
        for _ in 0..5 {
            outbox.push(readings(3), true);
        }
        assert_eq!(outbox.len(), 2);
        let c = outbox.counters();
        assert_eq!((c.unshared, c.unshared_datagrams), (3, 9));
        let numbers: Vec<u64> = outbox.peek(10).iter().map(|p| p.number).collect();
        assert_eq!(numbers, [4, 5]);
        assert!(!outbox.fits(&readings(3)));
    }

    #[test]
    fn shared_events_are_read_back_as_queued_once() {
        let mut outbox = Outbox::new(1 << 20);
        let first = readings(2);
        outbox.push(first.clone(), false);
        outbox.push(readings(1), false);
        outbox.confirm(2);
        assert!(outbox.is_empty());
        assert!(outbox.bytes() > 0, "read-back copies still count");
        assert!(Arc::ptr_eq(&outbox.read_back(1).unwrap(), &first));
        assert!(outbox.read_back(1).is_none());
        assert!(outbox.read_back(2).is_some());
        assert_eq!(outbox.bytes(), 0);
        // Another run's number (or one seen already) has nothing.
        assert!(outbox.read_back(7).is_none());
    }

    #[test]
    fn going_alone_hands_over_every_unseen_event_in_order() {
        let mut outbox = Outbox::new(1 << 20);
        for _ in 0..4 {
            outbox.push(readings(1), false);
        }
        outbox.confirm(2);
        assert!(outbox.read_back(1).is_some());
        // 2 shared but not read back; 3 and 4 waiting.
        let unseen = outbox.take_unseen();
        assert_eq!(unseen.len(), 3);
        assert!(outbox.delivered_locally(4));
        // Shared later, they are late and not read back.
        outbox.confirm(4);
        assert_eq!(outbox.counters().shared_late, 2);
        assert!(outbox.read_back(3).is_none());
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn an_event_read_back_before_its_append_is_confirmed_is_not_lost() {
        let mut outbox = Outbox::new(1 << 20);
        let event = readings(1);
        outbox.push(event.clone(), false);
        outbox.push(readings(1), false);
        // The reader sees number 1 before the writer heard back.
        assert!(Arc::ptr_eq(&outbox.read_back(1).unwrap(), &event));
        assert_eq!(outbox.counters().shared, 1);
        assert_eq!(outbox.len(), 1);
        // The writer's confirmation comes later and changes nothing.
        outbox.confirm(1);
        assert_eq!(outbox.counters().shared, 1);
        assert!(outbox.read_back(2).is_some());
    }

    #[test]
    fn events_passed_over_at_read_back_are_counted() {
        let mut outbox = Outbox::new(1 << 20);
        for _ in 0..3 {
            outbox.push(readings(1), false);
        }
        outbox.confirm(3);
        assert!(outbox.read_back(3).is_some());
        assert_eq!(outbox.counters().skipped_read_back, 2);
        assert_eq!(outbox.bytes(), 0);
    }
}
