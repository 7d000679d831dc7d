//! One device as the UDP sender sees it (a *lane*): its schedule, its
//! clock, its fault injector, its jitter delay line and its odds of a
//! random reboot, and the steps that turn "this device is due" into the
//! bytes to put on the wire, tagged with the session key of a keyed device
//! (a new session is told to the injector). Pure: the caller passes the
//! time in and owns the socket.

use std::time::Duration;

use anyhow::Context as _;
use sensor_hub_protocol::{encode_datagram, Datagram};
use tokio::time::Instant;

use crate::device::SimDevice;
use crate::device_control::SessionKey;
use crate::faults::jitter::DelayLine;
use crate::faults::odds::{stream_seed, Odds, Stream};
use crate::faults::{injector_seed, DatagramClock, FaultInjector, FaultSpec, Outgoing};
use crate::schedule::SendSlot;

/// A device and everything the sender keeps about it.
#[derive(Debug)]
pub(crate) struct Lane {
    pub device: SimDevice,
    pub slot: SendSlot,
    injector: FaultInjector,
    clock: DatagramClock,
    /// Datagrams waiting out their jitter.
    pub delay: DelayLine,
    reboots: Odds,
    /// When the sender's release timer for this lane fires, if one is set
    /// (at most one per lane).
    pub armed: Option<Instant>,
    /// Datagram faults already counted in the live figures.
    faults_shown: u64,
    /// The keyed session the last datagram was tagged in.
    session: Option<u64>,
}

impl Lane {
    /// `device`, first sending at `first_due`, with `faults` injected;
    /// `keyed` if it tags its datagrams.
    pub fn new(device: SimDevice, faults: FaultSpec, first_due: Instant, keyed: bool) -> Lane {
        let seed = injector_seed(device.seed(), device.id);
        let injector = if keyed {
            FaultInjector::keyed(faults, seed)
        } else {
            FaultInjector::new(faults, seed)
        };
        Lane {
            slot: SendSlot::new(first_due),
            injector,
            clock: DatagramClock::new(faults.clock_skew_ms),
            delay: DelayLine::new(faults.jitter_ms, stream_seed(seed, Stream::Jitter)),
            reboots: Odds::new(faults.reboot, stream_seed(seed, Stream::Reboot)),
            armed: None,
            faults_shown: 0,
            session: None,
            device,
        }
    }

    /// The device sends the datagram due at `now` (`now_ms` on the real
    /// clock): schedules its next send, then stamps, encodes (into `buf`,
    /// tagged with `key` if given) and passes the datagram through the
    /// injector.
    pub fn produce<'b>(
        &mut self,
        now: Instant,
        now_ms: u64,
        key: Option<&SessionKey>,
        buf: &'b mut [u8],
    ) -> anyhow::Result<Outgoing<'b>> {
        let rebooted = self.advance(now);
        let stamp = self.clock.stamp(now_ms, rebooted);
        let datagram = self.device.next_datagram(stamp);
        self.note_session(key);
        let bytes = encode(&datagram, key, buf)?;
        Ok(self.injector.push(datagram.seq, bytes))
    }

    /// Tells the injector when the datagrams' session key changed.
    fn note_session(&mut self, key: Option<&SessionKey>) {
        let Some(key) = key else {
            return;
        };
        if self.session.replace(key.session) != Some(key.session) {
            self.injector.new_session();
        }
    }

    /// The device's slot came but it sends nothing (a keyed device waiting
    /// for its session): only its schedule moves on.
    pub fn hold(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Moves the schedule past the slot due at `now`; returns whether the
    /// device rebooted since its last send (its sequence restarts at 0).
    fn advance(&mut self, now: Instant) -> bool {
        let interval = Duration::from_millis(self.device.interval_ms.max(1));
        let rebooted = self.slot.send_now(interval, now);
        if rebooted {
            self.device.reset_seq();
        }
        rebooted
    }

    /// The datagram that ends the run, if the injector needs one to make
    /// its report exact (see [`FaultInjector::needs_final`]).
    pub fn finish<'b>(
        &mut self,
        now_ms: u64,
        key: Option<&SessionKey>,
        buf: &'b mut [u8],
    ) -> anyhow::Result<Option<Outgoing<'b>>> {
        self.note_session(key);
        if !self.injector.needs_final() {
            return Ok(None);
        }
        let stamp = self.clock.stamp(now_ms, false);
        let datagram = self.device.next_datagram(stamp);
        let bytes = encode(&datagram, key, buf)?;
        Ok(Some(self.injector.finish(datagram.seq, bytes)))
    }

    /// Whether the device reboots now, after the datagram just produced.
    pub fn reboots_now(&mut self) -> bool {
        self.reboots.happens()
    }

    /// Datagram faults injected since the last call (for live figures).
    pub fn new_faults(&mut self) -> u64 {
        let faults = self.injector.report().faults();
        let new = faults.saturating_sub(self.faults_shown);
        self.faults_shown = faults;
        new
    }

    /// What the injector did.
    pub fn injected(&self) -> crate::faults::InjectedFaults {
        self.injector.report()
    }
}

/// The datagram's bytes: tagged with `key` when the device has one.
fn encode<'b>(
    datagram: &Datagram,
    key: Option<&SessionKey>,
    buf: &'b mut [u8],
) -> anyhow::Result<&'b mut [u8]> {
    let bytes = match key {
        Some(session) => session.key.seal(datagram, buf),
        None => encode_datagram(datagram, buf),
    };
    bytes.context("a simulated datagram exceeded the v1 size limit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{build_fleet, FleetSpec};
    use sensor_hub_protocol::{decode_datagram, MAX_DATAGRAM_LEN};

    fn lane(faults: FaultSpec) -> (Lane, Instant) {
        let device = build_fleet(&FleetSpec {
            devices: 1,
            interval_ms: 10,
            ..FleetSpec::default()
        })
        .remove(0);
        let t0 = Instant::now();
        (Lane::new(device, faults, t0, false), t0)
    }

    fn decoded(out: &Outgoing<'_>) -> Vec<(u32, u32)> {
        out.datagrams()
            .map(|bytes| decode_datagram(bytes).expect("intact"))
            .map(|d| (d.seq, d.time_ms))
            .collect()
    }

    #[test]
    fn datagrams_carry_the_skewed_clock() {
        let now_ms = 1_700_000_000_000u64;
        let (mut lane, t0) = lane(FaultSpec {
            clock_skew_ms: -90_000,
            ..FaultSpec::NONE
        });
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let out = lane.produce(t0, now_ms, None, &mut buf).expect("encodes");
        assert_eq!(decoded(&out), [(0, (now_ms - 90_000) as u32)]);
        assert_eq!(lane.slot.due().0, t0 + Duration::from_millis(10));
    }

    #[test]
    fn after_a_reboot_the_sequence_restarts_with_a_newer_stamp() {
        let now_ms = 1_700_000_000_000u64;
        let (mut lane, t0) = lane(FaultSpec::NONE);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        lane.produce(t0, now_ms, None, &mut buf).expect("encodes");
        lane.produce(t0, now_ms, None, &mut buf).expect("encodes");
        lane.slot.reboot(t0);
        // Same real millisecond: the new sequence is still stamped later.
        let out = lane.produce(t0, now_ms, None, &mut buf).expect("encodes");
        assert_eq!(decoded(&out), [(0, (now_ms + 1) as u32)]);
        assert_eq!(lane.injected().restarts, 1);
    }

    #[test]
    fn a_final_datagram_only_when_the_injector_needs_one() {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let (mut clean, t0) = lane(FaultSpec::NONE);
        clean.produce(t0, 5, None, &mut buf).expect("encodes");
        assert!(clean.finish(6, None, &mut buf).expect("encodes").is_none());

        let (mut lossy, t0) = lane(FaultSpec {
            loss: 1.0,
            ..FaultSpec::NONE
        });
        for _ in 0..3 {
            lossy.produce(t0, 5, None, &mut buf).expect("encodes");
        }
        assert_eq!(lossy.new_faults(), 0, "drops are not visible yet");
        let last = lossy
            .finish(6, None, &mut buf)
            .expect("encodes")
            .expect("needed");
        assert_eq!(decoded(&last).first().map(|&(seq, _)| seq), Some(3));
        assert_eq!(lossy.injected().lost, 2);
        assert_eq!(lossy.new_faults(), 2);
        assert_eq!(lossy.new_faults(), 0);
    }

    #[test]
    fn a_keyed_lane_tags_with_its_session_key_and_tells_the_injector_of_a_new_one() {
        let device = build_fleet(&FleetSpec::default()).remove(0);
        let t0 = Instant::now();
        let holding = FaultSpec {
            reorder: 1.0,
            ..FaultSpec::NONE
        };
        let mut lane = Lane::new(device, holding, t0, true);
        let session = |n: u8| SessionKey {
            key: sensor_hub_protocol::auth::DatagramKey::new(&[n; 32]),
            session: u64::from(n),
        };
        let (first, second) = (session(1), session(2));
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let out = lane
            .produce(t0, 5, Some(&first), &mut buf)
            .expect("encodes");
        let sent: Vec<&[u8]> = out.datagrams().collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(first.key.verify(sent[0], true), Ok(()));
        // 1 is held; then a new session: it goes out, tagged with the old
        // key, while 2 is held in turn.
        let out = lane
            .produce(t0, 6, Some(&first), &mut buf)
            .expect("encodes");
        assert_eq!(out.datagrams().count(), 0);
        let out = lane
            .produce(t0, 7, Some(&second), &mut buf)
            .expect("encodes");
        assert_eq!(decoded(&out), [(1, 6)]);
        let stale: Vec<&[u8]> = out.datagrams().collect();
        assert_eq!(first.key.verify(stale[0], true), Ok(()));
        assert!(second.key.verify(stale[0], true).is_err());
        let report = lane.injected();
        assert_eq!((report.bad_tag, report.sent), (1, 1));
        // The same session again is no news.
        lane.produce(t0, 8, Some(&second), &mut buf)
            .expect("encodes");
        assert_eq!(lane.injected().bad_tag, 1);
    }

    #[test]
    fn reboot_odds_follow_the_spec() {
        let (mut never, _) = lane(FaultSpec::NONE);
        let (mut always, _) = lane(FaultSpec {
            reboot: 1.0,
            ..FaultSpec::NONE
        });
        assert!((0..100).all(|_| !never.reboots_now() && always.reboots_now()));
    }
}
