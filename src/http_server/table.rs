//! The HTTP listener's decisions, sans I/O: which connections are open and
//! in which stage, when each must be closed (header-read and idle
//! timeouts), and, when a new connection arrives at the cap, which one
//! makes room for it. Times are passed in (monotonic ms); the shell
//! ([`super`]) carries the decisions out on sockets.
//!
//! A request's body must arrive within the header timeout of its head
//! too (the hub takes only small bodies), so a client that trickles a body
//! cannot hold a connection either.
//!
//! When full, a new connection evicts, oldest first, a connection that
//! never completed a request head (a slow or silent client; the oldest has
//! had the most time); failing that, the one idle (or still sending a
//! request) the longest that never carried valid credentials; failing
//! that (every connection busy with a request, upgraded to a WebSocket, or
//! authenticated) it is refused. Every eviction, refusal and timeout is
//! counted by [`CloseReason`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use strum::{EnumCount, EnumIter, IntoEnumIterator as _};

/// The table's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Most connections open at once (`http.max_connections`).
    pub max_connections: usize,
    /// Time allowed for a whole request head, ms
    /// (`http.header_read_timeout_ms`).
    pub header_timeout_ms: u64,
    /// Time allowed between requests, ms (`http.idle_timeout_ms`).
    pub idle_timeout_ms: u64,
}

/// What to do with a connection just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve it under this id.
    Admit(u64),
    /// Serve it under `id` after closing `victim`.
    AdmitEvicting {
        /// The new connection's id.
        id: u64,
        /// The connection to close now.
        victim: u64,
    },
    /// Close it at once: the table is full of connections that must stay.
    Refuse,
}

/// Why the listener closed a connection (the peer closing is not counted
/// here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, EnumCount)]
pub enum CloseReason {
    /// No whole request head within `http.header_read_timeout_ms`.
    HeaderTimeout,
    /// No whole request body within `http.header_read_timeout_ms` of its
    /// head.
    BodyTimeout,
    /// No request within `http.idle_timeout_ms` of the last one.
    IdleTimeout,
    /// Closed to make room for a new connection.
    Evicted,
    /// A new connection refused because none could make room.
    Refused,
}

impl CloseReason {
    /// Its label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
        }
    }

    /// Its index in [`ConnectionTable::closed`]'s counts.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted (or in its TLS handshake); no request head completed yet.
    Opening,
    /// A request head was read; its body is still arriving.
    Receiving,
    /// Requests in flight.
    Busy(u32),
    /// No request in flight, nothing of the next one read.
    Idle,
    /// Part of a later request's head read.
    Reading,
    /// Handed to another protocol (a WebSocket); the listener no longer
    /// times it out or evicts it, only counts it until it closes.
    Upgraded,
    /// Told to close (evicted or timed out); still open until its task
    /// lets go of the socket.
    Closing,
}

#[derive(Debug, Clone)]
struct Entry {
    peer: SocketAddr,
    stage: Stage,
    /// When the current stage began, ms.
    since_ms: u64,
    authenticated: bool,
}

impl Entry {
    /// When it is closed unless something happens first.
    fn deadline(&self, limits: &TableLimits) -> Option<(u64, CloseReason)> {
        match self.stage {
            Stage::Opening | Stage::Reading => Some((
                self.since_ms.saturating_add(limits.header_timeout_ms),
                CloseReason::HeaderTimeout,
            )),
            Stage::Receiving => Some((
                self.since_ms.saturating_add(limits.header_timeout_ms),
                CloseReason::BodyTimeout,
            )),
            Stage::Idle => Some((
                self.since_ms.saturating_add(limits.idle_timeout_ms),
                CloseReason::IdleTimeout,
            )),
            Stage::Busy(_) | Stage::Upgraded | Stage::Closing => None,
        }
    }

    /// Its rank as a victim (lower goes first), or `None` if it must stay.
    fn victim_rank(&self) -> Option<(u8, u64)> {
        match self.stage {
            Stage::Opening => Some((0, self.since_ms)),
            Stage::Idle | Stage::Reading | Stage::Receiving if !self.authenticated => {
                Some((1, self.since_ms))
            }
            _ => None,
        }
    }
}

/// Every open HTTP connection of the listener.
#[derive(Debug)]
pub struct ConnectionTable {
    limits: TableLimits,
    /// By id; ids grow, so this is accept order.
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    /// Entries in [`Stage::Closing`].
    closing: usize,
    closed: [u64; CloseReason::COUNT],
}

impl ConnectionTable {
    /// An empty table; ids start at 1.
    pub fn new(limits: TableLimits) -> ConnectionTable {
        ConnectionTable {
            limits,
            entries: BTreeMap::new(),
            next_id: 1,
            closing: 0,
            closed: [0; CloseReason::COUNT],
        }
    }

    /// Its bounds.
    pub fn limits(&self) -> TableLimits {
        self.limits
    }

    /// Decides about a connection from `peer` accepted at `now_ms`. An
    /// evicted victim is [`Stage::Closing`] from now on. While as many
    /// connections are still closing as the cap allows, new ones are
    /// refused, so open sockets stay bounded even when closing lags.
    pub fn admit(&mut self, peer: SocketAddr, now_ms: u64) -> Admission {
        let live = self.entries.len() - self.closing;
        let victim = if live < self.limits.max_connections {
            None
        } else {
            let victim = (self.closing < self.limits.max_connections)
                .then(|| self.victim())
                .flatten();
            match victim {
                Some(v) => Some(v),
                None => {
                    self.closed[CloseReason::Refused.index()] += 1;
                    return Admission::Refuse;
                }
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                peer,
                stage: Stage::Opening,
                since_ms: now_ms,
                authenticated: false,
            },
        );
        match victim {
            None => Admission::Admit(id),
            Some(victim) => {
                self.close(victim, CloseReason::Evicted);
                Admission::AdmitEvicting { id, victim }
            }
        }
    }

    /// The connection that goes first to make room, if any may.
    fn victim(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|(&id, e)| e.victim_rank().map(|rank| (rank, id)))
            .min()
            .map(|(_, id)| id)
    }

    fn close(&mut self, id: u64, reason: CloseReason) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage != Stage::Closing {
                e.stage = Stage::Closing;
                self.closing += 1;
                self.closed[reason.index()] += 1;
            }
        }
    }

    /// A request head was read whole on `id`: a request is in flight,
    /// still receiving its body when `body_pending`.
    pub fn headers_complete(&mut self, id: u64, body_pending: bool, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.stage = match e.stage {
                Stage::Busy(n) => Stage::Busy(n.saturating_add(1)),
                Stage::Opening | Stage::Idle | Stage::Reading if body_pending => Stage::Receiving,
                Stage::Opening | Stage::Idle | Stage::Reading => Stage::Busy(1),
                other => other,
            };
            e.since_ms = now_ms;
        }
    }

    /// The body of `id`'s request has arrived whole.
    pub fn body_done(&mut self, id: u64, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage == Stage::Receiving {
                e.stage = Stage::Busy(1);
                e.since_ms = now_ms;
            }
        }
    }

    /// A request on `id` was answered; `authenticated` when it carried
    /// valid credentials (read from the connection's
    /// [`crate::connection::ConnectionInfo`]), which stays true for the
    /// connection. Returns whether it is now idle.
    pub fn request_done(&mut self, id: u64, authenticated: bool, now_ms: u64) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        e.authenticated |= authenticated;
        match e.stage {
            Stage::Busy(n) if n > 1 => {
                e.stage = Stage::Busy(n - 1);
                false
            }
            // Answered without reading all of its body (refused early).
            Stage::Busy(_) | Stage::Receiving => {
                e.stage = Stage::Idle;
                e.since_ms = now_ms;
                true
            }
            _ => false,
        }
    }

    /// A request on `id` carried valid credentials.
    pub fn authenticated(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.authenticated = true;
        }
    }

    /// Bytes of a next request arrived on idle `id`: its head must be
    /// whole within the header timeout from now.
    pub fn bytes_arrived(&mut self, id: u64, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage == Stage::Idle {
                e.stage = Stage::Reading;
                e.since_ms = now_ms;
            }
        }
    }

    /// `id` now speaks another protocol (its answer was `101`).
    pub fn upgraded(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage != Stage::Closing {
                e.stage = Stage::Upgraded;
            }
        }
    }

    /// `id`'s socket is closed.
    pub fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            if e.stage == Stage::Closing {
                self.closing -= 1;
            }
        }
    }

    /// Connections whose deadline has passed at `now_ms`, with why; they
    /// are [`Stage::Closing`] from now on.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(u64, CloseReason)> {
        let limits = self.limits;
        let due: Vec<(u64, CloseReason)> = self
            .entries
            .iter()
            .filter_map(|(&id, e)| match e.deadline(&limits) {
                Some((at, reason)) if at <= now_ms => Some((id, reason)),
                _ => None,
            })
            .collect();
        for &(id, reason) in &due {
            self.close(id, reason);
        }
        due
    }

    /// The earliest deadline, ms, if any connection has one.
    pub fn next_deadline(&self) -> Option<u64> {
        let limits = self.limits;
        self.entries
            .values()
            .filter_map(|e| e.deadline(&limits).map(|(at, _)| at))
            .min()
    }

    /// `id`'s stage, if it is open.
    pub fn stage(&self, id: u64) -> Option<Stage> {
        self.entries.get(&id).map(|e| e.stage)
    }

    /// `id`'s peer, if it is open.
    pub fn peer(&self, id: u64) -> Option<SocketAddr> {
        self.entries.get(&id).map(|e| e.peer)
    }

    /// Connections open, those told to close included.
    pub fn open(&self) -> usize {
        self.entries.len()
    }

    /// Connections the listener closed since start, by reason.
    pub fn closed(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::iter().map(|r| (r, self.closed[r.index()]))
    }

    /// Connections the listener closed for `reason` since start.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }
}

#[cfg(test)]
mod tests;
