//! The UDP side of a benchmark: a sender that offers datagrams at a fixed
//! rate (or as fast as it can) from one thread, handing the kernel up to
//! [`SEND_BATCH`] of them per `sendmmsg` call and recording when each was
//! sent, and a raw sink — a plain socket that only counts, reading up to
//! [`SINK_BATCH`] datagrams per `recvmmsg` call as the hub does — so the
//! hub's rate can be quoted as a ratio of what the same sender achieves
//! without it, and its CPU per datagram beside the sink's.
//!
//! At a fixed rate datagram `i` is due `i / rate` seconds after the start;
//! the sender sends what is due when it wakes (usually one datagram at
//! 10,000/s), sleeping through long waits and yielding through short
//! ones, so a receiver sees evenly spaced datagrams, not bursts.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders};
use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value, MAX_DATAGRAM_LEN};
use socket2::{Domain, Protocol, Socket, Type};

use crate::udp::unix_ms;

/// Receive buffer asked for by the sink: the hub's default.
const SINK_RECV_BUFFER: usize = 8 << 20;

/// Datagrams one `sendmmsg` call hands to the kernel at most.
pub const SEND_BATCH: usize = 32;

/// Datagrams one `recvmmsg` call of the sink reads at most (the hub's
/// default `udp.batch_max`).
pub const SINK_BATCH: usize = 256;

/// Sink receive slot: one byte more than the largest valid datagram, as
/// the hub's.
const SINK_SLOT: usize = MAX_DATAGRAM_LEN + 1;

/// Waits longer than this sleep (then yield for the rest); shorter ones
/// only yield, since a sleep overshoots by the timer slack (~50 µs).
const SLEEP_OVER: Duration = Duration::from_micros(200);

/// How much earlier than due a sleep asks to wake, for the timer slack.
const SLEEP_MARGIN: Duration = Duration::from_micros(100);

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    /// The first device's id: the datagrams cycle through ids
    /// `first_device..first_device + devices` (1 unless two senders share
    /// a hub's, or a cluster's, fleet and must not overlap).
    pub first_device: u32,
    /// Devices the datagrams cycle through.
    pub devices: u32,
    /// Datagrams per second; 0 = as fast as possible.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
}

impl SendPlan {
    /// Datagrams the plan sends at most (for sizing [`SendTimes`]).
    pub fn capacity(&self) -> usize {
        let rate = if self.rate == 0 { 2_000_000 } else { self.rate };
        (rate as f64 * self.duration.as_secs_f64()).ceil() as usize + 1
    }

    /// The (device, seq) of the datagram sent `index`-th: devices in turn,
    /// each one's seq counting up; none past the last seq or device id.
    pub fn datagram_at(&self, index: u64) -> Option<(u32, u32)> {
        let devices = u64::from(self.devices.max(1));
        let offset = u32::try_from(index % devices).ok()?;
        let seq = u32::try_from(index / devices).ok()?;
        Some((self.first_device.checked_add(offset)?, seq))
    }
}

/// Datagrams due `elapsed` after the start at `rate` per second (datagram
/// `i` is due at `i / rate` s, so one is due at once); `u64::MAX` at rate
/// 0 (as fast as possible).
pub fn due(rate: u64, elapsed: Duration) -> u64 {
    if rate == 0 {
        return u64::MAX;
    }
    let n = elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1)
}

/// When datagram `index` is due at `rate` per second (0: at once).
pub fn due_at(rate: u64, index: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    // Rounded up: due at this instant, not a nanosecond before.
    let ns = (u128::from(index) * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Datagrams to hand the kernel in the next call: what is due and not yet
/// sent, at most [`SEND_BATCH`] and at most what `limit` leaves.
pub fn batch_len(rate: u64, elapsed: Duration, sent: u64, limit: u64) -> usize {
    let want = due(rate, elapsed)
        .saturating_sub(sent)
        .min(limit.saturating_sub(sent));
    usize::try_from(want).map_or(SEND_BATCH, |n| n.min(SEND_BATCH))
}

/// When each datagram was sent, by index
/// `seq * devices + (device - first_device)`, in nanoseconds since `epoch`
/// (0: not sent).
#[derive(Debug)]
pub struct SendTimes {
    /// Time base shared with the receivers.
    pub epoch: Instant,
    first_device: u32,
    devices: u32,
    times: Vec<AtomicU64>,
}

impl SendTimes {
    /// Room for `capacity` datagrams of `plan`'s devices.
    pub fn new(plan: &SendPlan, capacity: usize) -> SendTimes {
        SendTimes {
            epoch: Instant::now(),
            first_device: plan.first_device,
            devices: plan.devices.max(1),
            times: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Datagrams it has room for.
    pub fn capacity(&self) -> usize {
        self.times.len()
    }

    /// The index of datagram (device, seq), if the device is the plan's and
    /// there is room for it.
    pub fn index(&self, device: u32, seq: u32) -> Option<usize> {
        let offset = device.checked_sub(self.first_device)?;
        (offset < self.devices)
            .then(|| seq as usize * self.devices as usize + offset as usize)
            .filter(|&i| i < self.times.len())
    }

    /// Nanoseconds from send to `now` of the datagram at `index`, if recorded.
    pub fn latency_ns_at(&self, index: usize, now: Instant) -> Option<u64> {
        let sent = self.times.get(index)?.load(Ordering::Acquire);
        (sent > 0).then(|| (now.duration_since(self.epoch).as_nanos() as u64).saturating_sub(sent))
    }

    /// Nanoseconds from send to now for datagram (device, seq), if recorded.
    pub fn latency_ns(&self, device: u32, seq: u32, now: Instant) -> Option<u64> {
        self.latency_ns_at(self.index(device, seq)?, now)
    }

    /// Records `ns` as the send time of the datagrams at `indices`.
    fn record(&self, indices: std::ops::Range<u64>, ns: u64) {
        self.store(indices, ns.max(1));
    }

    /// Clears the send time of the datagrams at `indices` (not sent).
    fn forget(&self, indices: std::ops::Range<u64>) {
        self.store(indices, 0);
    }

    fn store(&self, indices: std::ops::Range<u64>, value: u64) {
        let (Ok(start), Ok(end)) = (usize::try_from(indices.start), usize::try_from(indices.end))
        else {
            return;
        };
        for slot in self
            .times
            .get(start..end.min(self.times.len()))
            .unwrap_or(&[])
        {
            slot.store(value, Ordering::Release);
        }
    }
}

/// What a send did.
#[derive(Debug, Clone, Copy)]
pub struct SendResult {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Time it took.
    pub elapsed: Duration,
}

/// Sends `plan` to `target` from the calling thread.
pub fn send(
    target: SocketAddr,
    plan: SendPlan,
    times: Option<&SendTimes>,
) -> std::io::Result<SendResult> {
    send_with(target, plan, times, None)
}

/// [`send`], each datagram tagged with its device's session key when
/// `keys` holds them (device `id` uses `keys[id - 1]`).
///
/// Each `sendmmsg` call carries the datagrams due (at most
/// [`SEND_BATCH`]); their send time is taken and recorded just before the
/// call (a receiver may see a datagram before the call returns), and only
/// those the kernel accepted are counted and keep it. Those it did not
/// take (a full buffer: `EAGAIN`, `ENOBUFS`; a refusal reported from an
/// earlier datagram: `ECONNREFUSED`) are offered again, so datagram `i`
/// of the plan is always the `i`-th sent.
pub fn send_with(
    target: SocketAddr,
    plan: SendPlan,
    times: Option<&SendTimes>,
    keys: Option<&[DatagramKey]>,
) -> std::io::Result<SendResult> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(target)?;
    let mut datagram = Datagram {
        device_id: plan.first_device,
        seq: 0,
        time_ms: 0,
        readings: [
            Reading {
                channel: 0,
                value: Value::F32(21.5),
            },
            Reading {
                channel: 1,
                value: Value::F32(48.25),
            },
            Reading {
                channel: 2,
                value: Value::I32(1013),
            },
        ]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut bufs = [[0u8; MAX_DATAGRAM_LEN]; SEND_BATCH];
    let mut lens = [0usize; SEND_BATCH];
    // A connected socket: no per-message address.
    let no_addrs = [None::<()>; SEND_BATCH];
    let mut headers = MultiHeaders::<()>::preallocate(SEND_BATCH, None);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let limit = times.map_or(u64::MAX, |t| t.times.len() as u64);
    'sending: while sent < limit {
        let elapsed = start.elapsed();
        if elapsed >= plan.duration {
            break;
        }
        let n = batch_len(plan.rate, elapsed, sent, limit);
        if n == 0 {
            wait_until(start, due_at(plan.rate, sent).min(plan.duration));
            continue;
        }
        let time_ms = unix_ms() as u32;
        let mut built = 0;
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).take(n).enumerate() {
            let Some((device, seq)) = plan.datagram_at(sent + i as u64) else {
                break;
            };
            datagram.device_id = device;
            datagram.seq = seq;
            datagram.time_ms = time_ms;
            let key = keys.and_then(|k| k.get(device.checked_sub(1)? as usize));
            let encoded = match key {
                Some(key) => key.seal(&datagram, buf),
                None => encode_datagram(&datagram, buf),
            }
            .map_err(|e| std::io::Error::other(format!("encoding a bench datagram: {e}")))?;
            *len = encoded.len();
            built += 1;
        }
        if built == 0 {
            // Past the last seq of every device: nothing more to send.
            break;
        }
        let iovs: [[IoSlice<'_>; 1]; SEND_BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&bufs[i][..lens[i]])]);
        let mut done = 0;
        while done < built {
            let first = sent;
            let pending = first..first + (built - done) as u64;
            // Recorded before the call: the hub may deliver a datagram to a
            // WebSocket client before the call returns.
            if let Some(t) = times {
                t.record(pending.clone(), t.epoch.elapsed().as_nanos() as u64);
            }
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &iovs[done..built],
                &no_addrs[done..built],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let accepted = results.count();
                    sent += accepted as u64;
                    done += accepted;
                }
                Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR | Errno::ECONNREFUSED) => {}
                Err(e) => {
                    if let Some(t) = times {
                        t.forget(pending);
                    }
                    return Err(std::io::Error::from(e));
                }
            }
            if done < built {
                // Not taken: not sent (stamped again when offered again).
                if let Some(t) = times {
                    t.forget(sent..pending.end);
                }
                if start.elapsed() >= plan.duration {
                    break 'sending;
                }
                std::thread::yield_now();
            }
        }
    }
    Ok(SendResult {
        sent,
        elapsed: start.elapsed(),
    })
}

/// Waits until `at` after `start`: sleeps through most of a long wait,
/// yields through a short one (and the end of a long one).
fn wait_until(start: Instant, at: Duration) {
    loop {
        let now = start.elapsed();
        let Some(ahead) = at.checked_sub(now).filter(|a| !a.is_zero()) else {
            return;
        };
        if ahead > SLEEP_OVER {
            std::thread::sleep(ahead - SLEEP_MARGIN);
        } else {
            std::thread::yield_now();
        }
    }
}

/// What the sink counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkResult {
    /// Datagrams received.
    pub datagrams: u64,
    /// CPU time of the sink's thread from its start to its end, ns (none
    /// if `/proc` could not tell).
    pub cpu_ns: Option<u64>,
}

impl SinkResult {
    /// The sink thread's CPU per datagram received, µs (none without a CPU
    /// time or a datagram).
    pub fn cpu_us_per_datagram(&self) -> Option<f64> {
        let ns = self.cpu_ns?;
        (self.datagrams > 0).then(|| ns as f64 / 1_000.0 / self.datagrams as f64)
    }
}

/// A plain UDP socket that counts what arrives until stopped.
#[derive(Debug)]
pub struct Sink {
    /// Its address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<SinkResult>,
}

impl Sink {
    /// Binds on loopback with the hub's receive buffer and starts counting.
    pub fn start() -> std::io::Result<Sink> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_recv_buffer_size(SINK_RECV_BUFFER)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        // The first datagram of a batch is waited for this long at most.
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || sink_loop(&socket, &stop2))?;
        Ok(Sink { addr, stop, thread })
    }

    /// Stops once the socket is drained; returns what it counted.
    pub fn finish(self) -> SinkResult {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or_default()
    }
}

/// The sink's thread: batches of up to [`SINK_BATCH`] datagrams, counted,
/// until idle for the read timeout after `stop`.
fn sink_loop(socket: &UdpSocket, stop: &AtomicBool) -> SinkResult {
    let cpu0 = thread_cpu_ns();
    let mut buffer = vec![0u8; SINK_BATCH * SINK_SLOT];
    let mut datagrams = 0u64;
    loop {
        match recv_batch(socket, &mut buffer) {
            Ok(n) => datagrams += n as u64,
            Err(Errno::EINTR) => {}
            // Idle for the read timeout (or a receive error): stop if asked
            // (everything sent has arrived).
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(_) => {}
        }
    }
    let cpu_ns = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
    SinkResult { datagrams, cpu_ns }
}

/// One `recvmmsg` call: waits (up to the read timeout) for the first
/// datagram, then takes what else is waiting, one per slot of `buffer`.
fn recv_batch(socket: &UdpSocket, buffer: &mut [u8]) -> nix::Result<usize> {
    let mut slots: Vec<[std::io::IoSliceMut<'_>; 1]> = buffer
        .chunks_mut(SINK_SLOT)
        .map(|slot| [std::io::IoSliceMut::new(slot)])
        .collect();
    // No sender address wanted: `()`.
    let mut headers = MultiHeaders::<()>::preallocate(slots.len(), None);
    let messages = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slots.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )?;
    Ok(messages.count())
}

/// The calling thread's CPU time so far, ns: `/proc/thread-self/schedstat`
/// (time on a CPU, ns), else `/proc/thread-self/stat` (utime + stime, in
/// clock ticks of 1/100 s).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| schedstat_ns(&s))
        .or_else(|| {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
            let ticks = stat_cpu_ticks(&stat)?;
            ticks.checked_mul(1_000_000_000 / super::hub::ticks_per_second().max(1))
        })
}

/// The time on a CPU, ns, of a `schedstat` line (its first field).
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime, clock ticks, of a `stat` line (fields 14 and 15; the
/// command name, field 2, may hold spaces and parentheses).
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    let (_, after) = text.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_fall_due_evenly() {
        // One at once, then one every 100 µs at 10,000/s.
        assert_eq!(due(10_000, Duration::ZERO), 1);
        assert_eq!(due(10_000, Duration::from_micros(99)), 1);
        assert_eq!(due(10_000, Duration::from_micros(100)), 2);
        assert_eq!(due(10_000, Duration::from_secs(1)), 10_001);
        assert_eq!(due(0, Duration::ZERO), u64::MAX);
        assert_eq!(due(u64::MAX, Duration::from_secs(3600)), u64::MAX);
        assert_eq!(due_at(10_000, 0), Duration::ZERO);
        assert_eq!(due_at(10_000, 3), Duration::from_micros(300));
        assert_eq!(due_at(3, 1), Duration::from_nanos(333_333_334));
        assert_eq!(due_at(0, 5), Duration::ZERO);
        for i in [0, 1, 7, 12_345] {
            // Due at its time, not before.
            let at = due_at(7_000, i);
            assert!(due(7_000, at) > i);
            if let Some(before) = at.checked_sub(Duration::from_nanos(1)) {
                assert!(due(7_000, before) <= i, "{i}");
            }
        }
    }

    #[test]
    fn a_batch_is_what_is_due_up_to_32_and_the_limit() {
        let ms = Duration::from_millis;
        // 10,000/s: usually one at a time.
        assert_eq!(
            batch_len(10_000, Duration::from_micros(150), 1, u64::MAX),
            1
        );
        assert_eq!(
            batch_len(10_000, Duration::from_micros(150), 2, u64::MAX),
            0
        );
        // Behind: catch up 32 at a time.
        assert_eq!(batch_len(10_000, ms(100), 0, u64::MAX), SEND_BATCH);
        assert_eq!(batch_len(10_000, ms(100), 990, u64::MAX), 11);
        // As fast as possible: full batches, up to the limit.
        assert_eq!(batch_len(0, Duration::ZERO, 5, u64::MAX), SEND_BATCH);
        assert_eq!(batch_len(0, Duration::ZERO, 5, 20), 15);
        assert_eq!(batch_len(0, Duration::ZERO, 20, 20), 0);
    }

    #[test]
    fn datagrams_cycle_through_the_devices() {
        let plan = SendPlan {
            first_device: 11,
            devices: 3,
            rate: 0,
            duration: Duration::ZERO,
        };
        assert_eq!(plan.datagram_at(0), Some((11, 0)));
        assert_eq!(plan.datagram_at(2), Some((13, 0)));
        assert_eq!(plan.datagram_at(3), Some((11, 1)));
        assert_eq!(
            plan.datagram_at(3 * u64::from(u32::MAX)),
            Some((11, u32::MAX))
        );
        assert_eq!(plan.datagram_at(3 * (u64::from(u32::MAX) + 1)), None);
        let edge = SendPlan {
            first_device: u32::MAX,
            devices: 2,
            ..plan
        };
        assert_eq!(edge.datagram_at(0), Some((u32::MAX, 0)));
        assert_eq!(edge.datagram_at(1), None);
        // The send times index datagrams the same way.
        let times = SendTimes::new(&plan, 100);
        for i in [0, 1, 2, 3, 50] {
            let (device, seq) = plan.datagram_at(i).unwrap_or_default();
            assert_eq!(times.index(device, seq), Some(i as usize));
        }
    }

    #[test]
    fn thread_cpu_time_is_read_from_proc() {
        assert_eq!(schedstat_ns("123456 789 10\n"), Some(123_456));
        assert_eq!(schedstat_ns(""), None);
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(12));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
        let before = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        if let (Some(a), Some(b)) = (before, thread_cpu_ns()) {
            assert!(b >= a);
        }
    }

    #[test]
    fn the_sender_counts_what_the_sink_receives() -> std::io::Result<()> {
        let sink = Sink::start()?;
        let plan = SendPlan {
            first_device: 1,
            devices: 10,
            rate: 20_000,
            duration: Duration::from_millis(100),
        };
        let times = SendTimes::new(&plan, plan.capacity());
        let result = send(sink.addr, plan, Some(&times))?;
        let got = sink.finish();
        // Paced: about rate × duration, never more than due.
        assert!(result.sent > 0 && result.sent <= due(plan.rate, result.elapsed));
        assert_eq!(got.datagrams, result.sent);
        // Every datagram sent has its time, the next none.
        let now = Instant::now();
        assert!((0..result.sent as usize).all(|i| times.latency_ns_at(i, now).is_some()));
        assert_eq!(times.latency_ns_at(result.sent as usize, now), None);
        Ok(())
    }
}
