//! UDP fault injection with an exact account: [`FaultInjector`] decides,
//! per device and per datagram, whether a datagram is lost, corrupted, held
//! back and sent late (reordered) or sent twice, and, for a device with a
//! key, what an attacker adds (forged copies, replays, spoofs); it keeps an
//! [`InjectedFaults`] report equal to what the hub's sequence accounting
//! (highest number plus a window below it; restarts told apart by a newer
//! device clock), its replay window and its drop reasons will count. Pure:
//! datagrams go in as bytes and come out as the bytes to put on the wire
//! now, in order; the caller owns the socket.
//!
//! The other kinds of fault live beside it: what to inject ([`FaultSpec`],
//! in `spec`), how a corrupted datagram is damaged ([`Corruption`]), what
//! an attacker makes of a keyed device's datagrams (`attack`), the phantom
//! flood ([`PhantomFlood`]), the device's skewed clock (`clock`), jitter
//! (`jitter`), and random reboots and control-session drops (`odds`).
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
//! # Devices with a key ([`FaultInjector::keyed`])
//!
//! The hub checks a keyed device's tag with its current session key, then
//! its replay window, before any sequence accounting; a datagram failing
//! either is dropped and changes nothing. So:
//!
//! * An extra copy is `replayed`, not `duplicated`, and not `sent`.
//! * [`FaultInjector::new_session`] tells the injector that the device got
//!   a new session key (a keyed welcome: after each reboot, or a new hello).
//!   A datagram held at that moment carries the old key: it goes out with
//!   the next datagram and is counted `bad_tag`, and its number as a drop.
//! * Impersonations are drawn from a stream of their own, so asking for
//!   them moves no other fault, and never on the final datagram. Each comes
//!   on top of whatever happens to the datagram itself, after it: a forged
//!   copy of it (probability `forge`, `bad_tag`); a datagram of the current
//!   session the hub accepted (probability `replay`, `replayed`: its number
//!   was accepted, so the window refuses it wherever it lies); an untagged
//!   datagram in the device's name with its next number, for the stranger's
//!   socket (probability `spoof`, `unauthenticated`). After a new session,
//!   the first datagram is followed by `replay_after_reboot` datagrams the
//!   hub accepted in the previous session (`bad_tag` each).
//! * A device without a key gets none of these (a fleet without keys
//!   refuses to be asked for them).
//!
//! Exact as long as the network delivers what is put on the wire in the
//! order sent (true on loopback; jitter keeps each device's order), every
//! send succeeds, a rebooted device's clock is strictly ahead of its last
//! datagram before the reboot (the sender's clock sees to that), the hub
//! accepts every intact datagram of a device (it is within the device's
//! budget and admitted), and a keyed device's datagrams reach the hub
//! before it begins the device's next session (the sender sees to that: a
//! keyed device sends nothing while it says hello, and says it only once
//! its jitter delay line is empty).

use std::iter;

use sensor_hub_protocol::AUTH_TAG_LEN;

pub mod attack;
mod clock;
mod corrupt;
pub(crate) mod jitter;
pub(crate) mod odds;
pub mod phantom;
mod report;
mod spec;

use attack::AcceptedRecord;
pub use clock::skewed_ms;
pub(crate) use clock::DatagramClock;
pub use corrupt::{CorruptedCounts, Corruption, BAD_VERSION, TRUNCATED_BYTES};
pub use jitter::DELAY_LINE_CAPACITY;
use odds::{stream_seed, Stream};
pub use phantom::{phantom_ids, PhantomFlood, PHANTOM_FIRST_ID};
pub use report::InjectedFaults;
pub use spec::{
    FaultSpec, InvalidFaultSpec, DEFAULT_PHANTOM_IDS, MAX_CLOCK_SKEW_MS, MAX_JITTER_MS,
    MAX_PHANTOM_IDS, MAX_PHANTOM_PER_S, MAX_REPLAY_AFTER_REBOOT,
};

/// Most datagrams dropped or corrupted in a row; the next one is sent.
pub const MAX_LOSS_RUN: u32 = 1_000;

/// The fault injector of one device. See the module doc for its rules.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    spec: FaultSpec,
    rng: fastrand::Rng,
    /// Draws of the impersonations (forgeries, replays, spoofs), apart from
    /// the network's faults.
    attacker: fastrand::Rng,
    /// The device tags its datagrams with a session key.
    keyed: bool,
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
    /// Datagrams the hub accepted in the current session (kept only when
    /// replays are asked for).
    accepted: AcceptedRecord,
    /// Datagrams of the previous session, to go out after the next one.
    stale: Vec<Vec<u8>>,
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
    /// An injector for a device without a key, applying `spec` (but its
    /// impersonations, which need a key), drawing from a generator seeded
    /// with `seed` (see [`injector_seed`]).
    pub fn new(spec: FaultSpec, seed: u64) -> FaultInjector {
        FaultInjector {
            spec,
            rng: fastrand::Rng::with_seed(seed),
            attacker: fastrand::Rng::with_seed(stream_seed(seed, Stream::Attack)),
            keyed: false,
            last_seq: None,
            held: None,
            unseen_lost: 0,
            loss_run: 0,
            // Devices start their turns at different kinds, so a fleet's
            // corruptions spread over the four reasons even in short runs.
            next_corruption: (seed % Corruption::ALL.len() as u64) as usize,
            accepted: AcceptedRecord::default(),
            stale: Vec::new(),
            report: InjectedFaults::default(),
        }
    }

    /// An injector for a device that tags its datagrams with a session key
    /// (see "Devices with a key" in the module doc).
    pub fn keyed(spec: FaultSpec, seed: u64) -> FaultInjector {
        FaultInjector {
            keyed: true,
            ..FaultInjector::new(spec, seed)
        }
    }

    /// Whether the device tags its datagrams.
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// What has been injected so far.
    pub fn report(&self) -> InjectedFaults {
        self.report
    }

    /// A keyed device got a new session key: a held datagram (tagged with
    /// the old one) and `replay_after_reboot` datagrams the hub accepted in
    /// the old session go out after the next datagram, each counted as
    /// `bad_tag`. Nothing for a device without a key.
    pub fn new_session(&mut self) {
        if !self.keyed {
            return;
        }
        let replays = self.spec.replay_after_reboot as usize;
        self.stale = self.accepted.end_session(replays);
        if let Some(held) = self.held.take() {
            self.stale.insert(0, held);
            // Its number is missing now, as if it had been lost.
            self.unseen_lost += 1;
            self.loss_run = self.loss_run.saturating_add(1);
        }
    }

    /// Takes the device's next datagram, numbered `seq`, and returns what
    /// to send now: nothing, it, it damaged, it twice, or it and then a
    /// held one; and for a keyed device what an attacker adds.
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
            impersonations: Vec::new(),
            spoofed: None,
        };
        self.deliver(seq, bytes, faults, &mut out);
        if self.keyed && self.spec.replays() {
            let accepted = out.flushed.as_deref().into_iter();
            let current = (out.copies > 0).then_some(bytes);
            for datagram in accepted.chain(current).chain(out.late.as_deref()) {
                self.accepted.record(datagram);
            }
        }
        if self.keyed && faults {
            self.impersonate(bytes, &mut out);
        }
        let stale = std::mem::take(&mut self.stale);
        self.report.bad_tag += stale.len() as u64;
        out.impersonations.extend(stale);
        out
    }

    /// What the network does to the datagram: decides `out`'s flushed,
    /// copies, corrupted and late parts.
    fn deliver(&mut self, seq: u32, bytes: &[u8], faults: bool, out: &mut Outgoing<'_>) {
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
                self.reach_hub(1);
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
                    return;
                }
                Fault::Corrupt => {
                    let kind = Corruption::ALL[self.next_corruption % Corruption::ALL.len()];
                    self.next_corruption = self.next_corruption.wrapping_add(1);
                    self.report.corrupted.count(kind);
                    self.unseen_lost += 1;
                    self.loss_run += 1;
                    out.copies = 0;
                    out.corrupted = Some(kind.apply(bytes));
                    return;
                }
                Fault::Hold => {
                    self.held = Some(bytes.to_vec());
                    out.copies = 0;
                    return;
                }
                Fault::Duplicate => {
                    out.copies = 2;
                    // A keyed device's copy fails the hub's replay window.
                    if self.keyed {
                        self.report.replayed += 1;
                    } else {
                        self.report.duplicated += 1;
                    }
                }
            }
        }
        self.loss_run = 0;
        let copies_accepted = if self.keyed {
            out.copies.min(1)
        } else {
            out.copies
        };
        self.reach_hub(u64::from(copies_accepted) + u64::from(out.late.is_some()));
    }

    /// What an attacker adds to a keyed device's datagram `bytes`: a forged
    /// copy, a replay of a datagram the hub accepted in this session, a
    /// spoof for the stranger's socket.
    fn impersonate(&mut self, bytes: &[u8], out: &mut Outgoing<'_>) {
        let spec = self.spec;
        if chance(&mut self.attacker, spec.forge) {
            let index = self.attacker.usize(..AUTH_TAG_LEN);
            if let Some(forged) = attack::forged(bytes, index) {
                out.impersonations.push(forged);
                self.report.bad_tag += 1;
            }
        }
        if chance(&mut self.attacker, spec.replay) && self.accepted.len() > 0 {
            let index = self.attacker.usize(..self.accepted.len());
            if let Some(earlier) = self.accepted.get(index) {
                out.impersonations.push(earlier.to_vec());
                self.report.replayed += 1;
            }
        }
        if chance(&mut self.attacker, spec.spoof) {
            if let Some(spoofed) = attack::spoofed(bytes) {
                out.spoofed = Some(spoofed);
                self.report.unauthenticated += 1;
            }
        }
    }

    fn draw(&mut self) -> Fault {
        let spec = self.spec;
        let rng = &mut self.rng;
        if chance(rng, spec.loss) && self.loss_run < MAX_LOSS_RUN {
            Fault::Lose
        } else if chance(rng, spec.corrupt) && self.loss_run < MAX_LOSS_RUN {
            Fault::Corrupt
        } else if chance(rng, spec.reorder) {
            Fault::Hold
        } else if chance(rng, spec.duplicate) {
            Fault::Duplicate
        } else {
            Fault::None
        }
    }

    /// `n` datagrams of the current epoch reach the hub's sequence
    /// accounting: every drop before them is now visible to it.
    fn reach_hub(&mut self, n: u64) {
        self.report.sent += n;
        self.report.lost += std::mem::take(&mut self.unseen_lost);
    }
}

/// True with probability `p`; draws nothing when `p` is 0, so a spec
/// without a fault leaves the generator untouched.
fn chance(rng: &mut fastrand::Rng, p: f64) -> bool {
    p > 0.0 && rng.f64() < p
}

/// The datagrams to send now, in order (see [`Outgoing::datagrams`]), and
/// one for the stranger's socket (see [`Outgoing::spoofed`]).
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
    /// Sent last, each dropped by the hub: forged copies, replays, and
    /// datagrams of the previous session.
    impersonations: Vec<Vec<u8>>,
    /// An untagged datagram in the device's name, for another socket.
    spoofed: Option<Vec<u8>>,
}

impl Outgoing<'_> {
    /// The datagrams to put on the wire from the device's socket, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.flushed
            .as_deref()
            .into_iter()
            .chain(iter::repeat_n(self.current, usize::from(self.copies)))
            .chain(self.corrupted.as_deref())
            .chain(self.late.as_deref())
            .chain(self.impersonations.iter().map(Vec::as_slice))
    }

    /// A datagram a stranger sends in the device's name, from a socket of
    /// its own (another source address than the device's).
    pub fn spoofed(&self) -> Option<&[u8]> {
        self.spoofed.as_deref()
    }
}

#[cfg(test)]
mod tests;
