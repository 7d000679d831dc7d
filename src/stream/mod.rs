//! The hub's outgoing event stream: every reading batch, device status
//! change, command transition and periodic device statistics, numbered in
//! one sequence and kept in a bounded replay ring.
//!
//! Its boundary is three operations, and nothing else reaches inside:
//! [`Stream::append`] (the core, under its lock, right after the change an
//! event describes), [`Stream::read_from`] a cursor (every consumer keeps
//! its own), and [`Stream::head`], the position a snapshot is consistent
//! with. A WebSocket client is one consumer; a second one (an MQTT bridge)
//! reads the same way from its own cursor, and another backend (a stream
//! shared between hubs) implements the same three operations.
//!
//! A client that reconnects resumes from its last sequence number as long
//! as the ring still holds what came after it. The ring is bounded by an
//! estimate of the bytes its events take as JSON (`ws.replay_bytes`);
//! overflow drops the oldest events, and a consumer whose cursor falls
//! behind them is told ([`Gone`]).

pub mod conflate;
pub mod subscription;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use sensor_hub_protocol::DeviceId;

use crate::registry::{CommandRecord, DeviceStatus};
use crate::state::LiveDatagram;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Statistics of one device, as published in `device_stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStats {
    /// The device.
    pub device: DeviceId,
    /// Sequence accounting.
    pub seq: crate::aggregate::sequence::SeqCounts,
    /// Datagrams per second since the previous statistics.
    pub rate_per_s: f64,
    /// Median latency bucket bound, ms.
    pub latency_p50_ms: Option<u64>,
    /// 99th percentile latency bucket bound, ms.
    pub latency_p99_ms: Option<u64>,
    /// Latency samples.
    pub latency_count: u64,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A batch of accepted datagrams.
    Readings(Vec<LiveDatagram>),
    /// A device's liveness changed (or it appeared).
    DeviceStatus {
        /// The device.
        device: DeviceId,
        /// New status.
        status: DeviceStatus,
        /// Previous status, if any.
        previous: Option<DeviceStatus>,
        /// Hub time.
        at_ms: u64,
    },
    /// A device is gone from the hub's list (forgotten, or a discovered
    /// device that went silent).
    DeviceRemoved {
        /// The device.
        device: DeviceId,
        /// Hub time.
        at_ms: u64,
    },
    /// A command changed state (its origin names the client that sent it).
    CommandStatus(Box<CommandRecord>),
    /// Periodic statistics of the devices that changed.
    DeviceStats(Vec<DeviceStats>),
}

impl Event {
    /// A rough size of the event as JSON, for the ring's byte bound.
    pub fn approx_bytes(&self) -> usize {
        match self {
            Event::Readings(batch) => {
                64 + batch
                    .iter()
                    .map(|d| 90 + 32 * d.readings.len())
                    .sum::<usize>()
            }
            Event::DeviceStatus { .. } | Event::DeviceRemoved { .. } => 110,
            Event::CommandStatus(record) => {
                // The origin's request id is kept with the record (bounded
                // by the WebSocket request parser, but counted at its size).
                let id = record
                    .origin
                    .request_id
                    .as_ref()
                    .map_or(0, |id| id.to_string().len());
                180 + record.detail.as_ref().map_or(0, String::len) + id
            }
            Event::DeviceStats(stats) => 64 + 200 * stats.len(),
        }
    }
}

/// An event with its sequence number; the JSON every client with a full
/// subscription receives is made once, by the first that needs it.
#[derive(Debug)]
pub struct Entry {
    /// Position in the stream.
    pub seq: u64,
    /// What happened.
    pub event: Event,
    approx_bytes: usize,
    /// When the hub read the datagrams of a `readings` event, µs on its
    /// monotonic clock (0: not known — other events, and events other hubs
    /// of a cluster shared): the start of the hub's own share of a
    /// reading's latency (`sensor_hub_ws_write_latency_seconds`).
    pub received_us: u64,
    /// JSON for unfiltered subscribers (a `command_status` without the
    /// request's `id`, which only the submitting client receives).
    pub full_json: OnceLock<Utf8Bytes>,
}

/// The event stream: a bounded replay ring.
///
/// Positions increase but need not be contiguous: a hub in a cluster
/// appends events at the positions the shared stream gave them
/// ([`Stream::append_at`]), and skips positions it has nothing to deliver
/// for. An epoch names the numbering: [`Stream::reset`] starts a new one
/// (and empties the ring) when a hub joins or leaves the cluster's
/// numbering.
#[derive(Debug)]
pub struct Stream {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
    /// The smallest position the ring can still answer from: one past the
    /// newest entry dropped, or where the epoch began.
    floor: u64,
    epoch: Arc<str>,
    /// The ring before the last [`Stream::reset`], kept until the next one
    /// so a client can still read what it had not read of it before it
    /// resyncs (at most one more ring's worth of memory).
    previous: Option<(Arc<str>, VecDeque<Arc<Entry>>)>,
    /// The last reset continued the previous ring without a gap: a client
    /// that read all of it misses nothing.
    continuous: bool,
}

/// The ring no longer holds what a cursor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// Oldest sequence number still held.
    pub oldest: u64,
}

/// [`Stream::append_at`] was given a position not after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream position {position} is not after the head {head}")]
pub struct NotAfterHead {
    /// The position asked for.
    pub position: u64,
    /// The newest position held.
    pub head: u64,
}

impl Stream {
    /// An empty ring holding about `max_bytes` of events, in `epoch`; the
    /// first event gets sequence number 1.
    pub fn new(max_bytes: usize, epoch: Arc<str>) -> Stream {
        Stream {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_seq: 1,
            floor: 1,
            epoch,
            previous: None,
            continuous: false,
        }
    }

    /// The numbering positions belong to.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Empties the ring and starts `epoch`, whose next position is
    /// `next_seq` (at least 1); `continuous` when nothing happened between
    /// the old ring's last event and the new one's first that the new one
    /// does not hold.
    pub fn reset(&mut self, epoch: Arc<str>, next_seq: u64, continuous: bool) {
        self.continuous = continuous;
        let old = std::mem::take(&mut self.entries);
        self.previous = Some((std::mem::replace(&mut self.epoch, epoch.clone()), old));
        self.bytes = 0;
        self.next_seq = next_seq.max(1);
        self.floor = self.next_seq;
        self.epoch = epoch;
    }

    /// Appends an event, dropping the oldest ones beyond the bound; returns
    /// its sequence number.
    pub fn append(&mut self, event: Event) -> u64 {
        self.append_received(event, 0)
    }

    /// [`Stream::append`] of an event the hub read at `received_us` (µs on
    /// its monotonic clock).
    pub fn append_received(&mut self, event: Event, received_us: u64) -> u64 {
        let seq = self.next_seq;
        self.push(seq, event, received_us);
        seq
    }

    /// Appends an event at `position` (after the head; the positions in
    /// between stay empty).
    pub fn append_at(&mut self, position: u64, event: Event) -> Result<(), NotAfterHead> {
        if position < self.next_seq {
            return Err(NotAfterHead {
                position,
                head: self.head(),
            });
        }
        self.push(position, event, 0);
        Ok(())
    }

    fn push(&mut self, seq: u64, event: Event, received_us: u64) {
        self.next_seq = seq.saturating_add(1);
        let approx_bytes = event.approx_bytes();
        self.bytes += approx_bytes;
        self.entries.push_back(Arc::new(Entry {
            seq,
            event,
            approx_bytes,
            received_us,
            full_json: OnceLock::new(),
        }));
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.approx_bytes;
                self.floor = old.seq + 1;
            }
        }
    }

    /// Sequence number of the newest event (0 before the first).
    pub fn head(&self) -> u64 {
        self.next_seq - 1
    }

    /// Index of the first entry at or after `from`.
    fn index_of(&self, from: u64) -> usize {
        self.entries.partition_point(|e| e.seq < from)
    }

    /// Up to `max` entries from sequence number `from` on, or [`Gone`] if
    /// some of them were dropped already.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Arc<Entry>>, Gone> {
        if from < self.floor {
            return Err(Gone {
                oldest: self.entries.front().map_or(self.next_seq, |e| e.seq),
            });
        }
        let skip = self.index_of(from);
        Ok(self.entries.iter().skip(skip).take(max).cloned().collect())
    }

    /// Up to `max` entries from `from` on of the ring before the last
    /// reset, if `epoch` is that ring's (the same allocation); empty
    /// otherwise.
    pub fn read_previous(&self, epoch: &Arc<str>, from: u64, max: usize) -> Vec<Arc<Entry>> {
        match &self.previous {
            Some((previous, entries)) if Arc::ptr_eq(previous, epoch) => {
                let skip = entries.partition_point(|e| e.seq < from);
                entries.iter().skip(skip).take(max).cloned().collect()
            }
            _ => Vec::new(),
        }
    }

    /// If the ring continues `epoch`'s without a gap, the position before
    /// its first: a client of `epoch` that read all of the old ring goes on
    /// from there.
    pub fn continues(&self, epoch: &Arc<str>) -> Option<u64> {
        match &self.previous {
            Some((previous, _)) if self.continuous && Arc::ptr_eq(previous, epoch) => {
                Some(self.floor - 1)
            }
            _ => None,
        }
    }

    /// Estimated bytes of the events from `from` on (how far behind a
    /// cursor is).
    pub fn bytes_from(&self, from: u64) -> usize {
        let skip = self.index_of(from);
        self.entries.iter().skip(skip).map(|e| e.approx_bytes).sum()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(device: DeviceId) -> Event {
        Event::DeviceStatus {
            device,
            status: DeviceStatus::Online,
            previous: None,
            at_ms: 1,
        }
    }

    #[test]
    fn numbers_events_and_reads_from_a_cursor() {
        let mut ring = Stream::new(10_000, "e".into());
        assert_eq!(ring.head(), 0);
        assert_eq!(ring.read_from(1, 10).unwrap().len(), 0);
        for d in 0..5 {
            ring.append(status(d));
        }
        assert_eq!(ring.head(), 5);
        let entries = ring.read_from(3, 10).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(ring.read_from(1, 2).unwrap().len(), 2);
        assert_eq!(ring.read_from(6, 10).unwrap().len(), 0);
        assert_eq!(ring.bytes_from(4), 2 * 110);
    }

    #[test]
    fn oldest_events_go_when_the_bound_is_reached() {
        let mut ring = Stream::new(3 * 110, "e".into());
        for d in 0..5 {
            ring.append(status(d));
        }
        assert_eq!(ring.bytes(), 3 * 110);
        assert_eq!(ring.read_from(2, 10).unwrap_err(), Gone { oldest: 3 });
        assert_eq!(ring.read_from(3, 10).unwrap().len(), 3);
    }

    #[test]
    fn one_event_larger_than_the_bound_is_still_kept() {
        let mut ring = Stream::new(10, "e".into());
        ring.append(status(1));
        assert_eq!(ring.read_from(1, 10).unwrap().len(), 1);
    }

    #[test]
    fn positions_given_from_outside_may_leave_gaps() {
        let mut ring = Stream::new(10_000, "e".into());
        ring.append_at(5, status(1)).unwrap();
        ring.append_at(9, status(2)).unwrap();
        assert_eq!(
            ring.append_at(9, status(3)),
            Err(NotAfterHead {
                position: 9,
                head: 9
            })
        );
        assert_eq!(ring.head(), 9);
        // A cursor inside a gap reads what follows it.
        let seqs: Vec<u64> = ring
            .read_from(6, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [9]);
        // Nothing was dropped: a cursor before the first entry is fine.
        assert_eq!(ring.read_from(1, 10).unwrap().len(), 2);
        assert_eq!(ring.append(status(4)), 10);
    }

    #[test]
    fn a_reset_starts_a_new_epoch_at_the_given_position() {
        let mut ring = Stream::new(10_000, "one".into());
        for d in 0..3 {
            ring.append(status(d));
        }
        ring.reset("two".into(), 100, false);
        assert_eq!(&**ring.epoch(), "two");
        assert_eq!(ring.head(), 99);
        assert_eq!(ring.bytes(), 0);
        // Cursors of the old numbering before the new start are gone.
        assert_eq!(ring.read_from(2, 10).unwrap_err(), Gone { oldest: 100 });
        // But what they had not read of the old ring is still there.
        let one: Arc<str> = "one".into();
        assert!(
            ring.read_previous(&one, 2, 10).is_empty(),
            "another allocation"
        );
        assert!(ring.read_from(100, 10).unwrap().is_empty());
        assert_eq!(ring.append(status(9)), 100);
    }

    #[test]
    fn the_previous_ring_stays_readable_until_the_next_reset() {
        let first: Arc<str> = "one".into();
        let mut ring = Stream::new(10_000, first.clone());
        for d in 0..3 {
            ring.append(status(d));
        }
        ring.reset("two".into(), 4, true);
        let seqs: Vec<u64> = ring
            .read_previous(&first, 2, 10)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(ring.continues(&first), Some(3));
        let second = ring.epoch().clone();
        ring.reset("three".into(), 4, false);
        assert_eq!(ring.continues(&second), None, "not continuous");
        assert!(ring.read_previous(&first, 1, 10).is_empty());
        assert!(
            ring.read_previous(&second, 1, 10).is_empty(),
            "it held nothing"
        );
    }
}
