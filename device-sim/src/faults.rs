//! UDP fault injection with an exact account: [`FaultInjector`] decides,
//! per device and per datagram, whether a datagram is lost, corrupted, held
//! back and sent late (reordered) or sent twice, and keeps an
//! [`InjectedFaults`] report equal to what the hub's sequence accounting
//! (highest number plus a window below it; restarts told apart by a newer
//! device clock) and its drop reasons will count. Pure: datagrams go in as
//! bytes and come out as the bytes to put on the wire now, in order; the
//! caller owns the socket.
//!
//! The other kinds of fault live beside it: what to inject ([`FaultSpec`],
//! in `spec`), how a corrupted datagram is damaged ([`Corruption`]), the
//! device's skewed clock (`clock`), jitter (`jitter`), and random reboots
//! and control-session drops (`odds`).
//!
//! # Rules (what keeps the report exact)
//!
//! * An *epoch* is a run of consecutive sequence numbers; a number that is
//!   not the last one plus 1 (a reboot restarted the sequence) starts a new
//!   one, which the hub counts as a restart. The first datagram of an epoch
//!   is always sent, once, intact and in order: the hub begins the epoch
//!   with it, and a drop or hold there would move the epoch's start instead
//!   of counting as a fault.
//! * At most one fault per datagram, drawn in order: lost with probability
//!   `loss`, else corrupted with probability `corrupt`, else held back with
//!   probability `reorder`, else sent twice with probability `duplicate`.
//! * A corrupted datagram goes on the wire damaged so that the hub drops it
//!   under a known reason; the kinds of damage take turns ([`Corruption::ALL`],
//!   each device starting at a kind its seed picks).
//!   It is counted under its reason at once. Its sequence number never
//!   reaches the hub's accounting, so for loss it is a drop like any other.
//! * At most one datagram is held at a time. The datagram after it is sent
//!   clean, immediately followed by the held one (the hub sees `n+1, n`: a
//!   late arrival one below the highest, well inside its window). A held
//!   datagram is never lost, corrupted or duplicated.
//! * A drop counts as `lost` only once a higher number of the same epoch is
//!   on the wire intact; until then the hub cannot see it. Drops still
//!   unseen when a new epoch begins are forgotten, as the hub forgets them.
//!   At most [`MAX_LOSS_RUN`] datagrams in a row are dropped or corrupted,
//!   so a gap never looks like a counter reset to the hub.
//! * If a new epoch begins while a datagram is held, the held one is sent
//!   first, in order (a plain send, not reordered).
//! * At the end of a run, [`FaultInjector::needs_final`] says whether one
//!   more clean datagram is needed to make trailing drops visible and
//!   release a held datagram; [`FaultInjector::finish`] sends it (then the
//!   held one, late, counted as reordered).
//!
//! Exact as long as the network delivers what is put on the wire in the
//! order sent (true on loopback; jitter keeps each device's order), every
//! send succeeds, and a rebooted device's clock is strictly ahead of its
//! last datagram before the reboot (the sender's clock sees to that).

use std::iter;

mod clock;
mod corrupt;
pub(crate) mod jitter;
pub(crate) mod odds;
mod report;
mod spec;

pub use clock::skewed_ms;
pub(crate) use clock::DatagramClock;
pub use corrupt::{CorruptedCounts, Corruption, BAD_VERSION, TRUNCATED_BYTES};
pub use jitter::DELAY_LINE_CAPACITY;
pub use report::InjectedFaults;
pub use spec::{FaultSpec, InvalidFaultSpec, MAX_CLOCK_SKEW_MS, MAX_JITTER_MS};

/// Most datagrams dropped or corrupted in a row; the next one is sent.
pub const MAX_LOSS_RUN: u32 = 1_000;

/// The fault injector of one device. See the module doc for its rules.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    spec: FaultSpec,
    rng: fastrand::Rng,
    /// Sequence number of the last datagram passed in.
    last_seq: Option<u32>,
    /// A datagram held back, to go out after the next one.
    held: Option<Vec<u8>>,
    /// Drops of this epoch the hub cannot see yet.
    unseen_lost: u64,
    /// Drops (and corruptions) in a row, up to [`MAX_LOSS_RUN`].
    loss_run: u32,
    /// Index in [`Corruption::ALL`] of the next corruption's damage.
    next_corruption: usize,
    report: InjectedFaults,
}

/// The seed of a device's injector: derived from the seed the device was
/// built with and its id, and apart from the stream of its signal noise.
pub fn injector_seed(device_seed: u64, device_id: u32) -> u64 {
    // SplitMix64 finaliser over the pair.
    let mut z = device_seed ^ 0x9E37_79B9_7F4A_7C15 ^ (u64::from(device_id) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fault drawn for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Lose,
    Corrupt,
    Hold,
    Duplicate,
}

impl FaultInjector {
    /// An injector applying `spec`, drawing from a generator seeded with
    /// `seed` (see [`injector_seed`]).
    pub fn new(spec: FaultSpec, seed: u64) -> FaultInjector {
        FaultInjector {
            spec,
            rng: fastrand::Rng::with_seed(seed),
            last_seq: None,
            held: None,
            unseen_lost: 0,
            loss_run: 0,
            // Devices start their turns at different kinds, so a fleet's
            // corruptions spread over the four reasons even in short runs.
            next_corruption: (seed % Corruption::ALL.len() as u64) as usize,
            report: InjectedFaults::default(),
        }
    }

    /// What has been injected so far.
    pub fn report(&self) -> InjectedFaults {
        self.report
    }

    /// Takes the device's next datagram, numbered `seq`, and returns what
    /// to send now: nothing, it, it damaged, it twice, or it and then a
    /// held one.
    pub fn push<'a>(&mut self, seq: u32, bytes: &'a [u8]) -> Outgoing<'a> {
        self.place(seq, bytes, true)
    }

    /// Whether the run must end with one more datagram (through
    /// [`FaultInjector::finish`]) for the report to match the hub: a
    /// datagram is held, or drops are not yet visible.
    pub fn needs_final(&self) -> bool {
        self.held.is_some() || self.unseen_lost > 0
    }

    /// Takes the device's last datagram of the run and sends it clean,
    /// followed by a held datagram if there is one.
    pub fn finish<'a>(&mut self, seq: u32, bytes: &'a [u8]) -> Outgoing<'a> {
        self.place(seq, bytes, false)
    }

    fn place<'a>(&mut self, seq: u32, bytes: &'a [u8], faults: bool) -> Outgoing<'a> {
        let mut out = Outgoing {
            flushed: None,
            current: bytes,
            copies: 1,
            corrupted: None,
            late: None,
        };
        let previous = self.last_seq.replace(seq);
        let continues = previous.is_some_and(|last| seq == last.wrapping_add(1));
        if !continues {
            if previous.is_some() {
                self.report.restarts += 1;
            }
            // A new epoch: a held datagram goes out first, in order, and
            // makes the drops before it visible; other drops never will be.
            out.flushed = self.held.take();
            if out.flushed.is_some() {
                self.on_wire(1);
            }
            self.unseen_lost = 0;
            self.loss_run = 0;
        } else if let Some(held) = self.held.take() {
            out.late = Some(held);
            self.report.reordered += 1;
        } else if faults {
            match self.draw() {
                Fault::None => {}
                Fault::Lose => {
                    self.unseen_lost += 1;
                    self.loss_run += 1;
                    out.copies = 0;
                    return out;
                }
                Fault::Corrupt => {
                    let kind = Corruption::ALL[self.next_corruption % Corruption::ALL.len()];
                    self.next_corruption = self.next_corruption.wrapping_add(1);
                    self.report.corrupted.count(kind);
                    self.unseen_lost += 1;
                    self.loss_run += 1;
                    out.copies = 0;
                    out.corrupted = Some(kind.apply(bytes));
                    return out;
                }
                Fault::Hold => {
                    self.held = Some(bytes.to_vec());
                    out.copies = 0;
                    return out;
                }
                Fault::Duplicate => {
                    out.copies = 2;
                    self.report.duplicated += 1;
                }
            }
        }
        self.loss_run = 0;
        self.on_wire(u64::from(out.copies) + u64::from(out.late.is_some()));
        out
    }

    fn draw(&mut self) -> Fault {
        let spec = self.spec;
        if self.chance(spec.loss) && self.loss_run < MAX_LOSS_RUN {
            Fault::Lose
        } else if self.chance(spec.corrupt) && self.loss_run < MAX_LOSS_RUN {
            Fault::Corrupt
        } else if self.chance(spec.reorder) {
            Fault::Hold
        } else if self.chance(spec.duplicate) {
            Fault::Duplicate
        } else {
            Fault::None
        }
    }

    /// True with probability `p`; draws nothing when `p` is 0, so a spec
    /// without faults leaves the generator untouched.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    /// `n` datagrams of the current epoch went on the wire: every drop
    /// before them is now visible to the hub.
    fn on_wire(&mut self, n: u64) {
        self.report.sent += n;
        self.report.lost += std::mem::take(&mut self.unseen_lost);
    }
}

/// The datagrams to send now, in order (see [`Outgoing::datagrams`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// A held datagram of the previous epoch, sent before the current one.
    flushed: Option<Vec<u8>>,
    current: &'a [u8],
    /// How many times the current datagram is sent intact (0, 1 or 2).
    copies: u8,
    /// The current datagram, damaged, sent instead of it.
    corrupted: Option<Vec<u8>>,
    /// A held datagram, sent after the current one.
    late: Option<Vec<u8>>,
}

impl Outgoing<'_> {
    /// The datagrams to put on the wire, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.flushed
            .as_deref()
            .into_iter()
            .chain(iter::repeat_n(self.current, usize::from(self.copies)))
            .chain(self.corrupted.as_deref())
            .chain(self.late.as_deref())
    }
}

#[cfg(test)]
mod tests;
