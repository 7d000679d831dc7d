//! The UDP side of a benchmark: a sender that offers datagrams at a fixed
//! rate (or as fast as it can) from one thread, recording when each was
//! sent, and a raw sink — a plain socket that only counts — so the hub's
//! rate can be quoted as a ratio of what the same sender achieves without
//! it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value, MAX_DATAGRAM_LEN};
use socket2::{Domain, Protocol, Socket, Type};

use crate::udp::unix_ms;

/// Receive buffer asked for by the sink: the hub's default.
const SINK_RECV_BUFFER: usize = 8 << 20;

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
}

/// What a send did.
#[derive(Debug, Clone, Copy)]
pub struct SendResult {
    /// Datagrams handed to the kernel.
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
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    let devices = u64::from(plan.devices.max(1));
    let start = Instant::now();
    let mut sent: u64 = 0;
    let limit = times.map_or(u64::MAX, |t| t.times.len() as u64);
    while start.elapsed() < plan.duration && sent < limit {
        let time_ms = unix_ms() as u32;
        for _ in 0..32 {
            datagram.device_id = plan.first_device + (sent % devices) as u32;
            datagram.seq = (sent / devices) as u32;
            datagram.time_ms = time_ms;
            let key = keys.and_then(|k| k.get(datagram.device_id as usize - 1));
            let encoded = match key {
                Some(key) => key.seal(&datagram, &mut buf),
                None => encode_datagram(&datagram, &mut buf),
            };
            let Ok(bytes) = encoded else {
                continue;
            };
            if let Some(t) = times {
                let ns = t.epoch.elapsed().as_nanos() as u64;
                if let Some(slot) = t.times.get(sent as usize) {
                    slot.store(ns.max(1), Ordering::Release);
                }
            }
            // A full socket buffer or ICMP error is the receiver's problem.
            let _ = socket.send(bytes);
            sent += 1;
        }
        if plan.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.rate as f64);
            let now = start.elapsed();
            if due > now {
                let ahead = due - now;
                if ahead > Duration::from_micros(200) {
                    std::thread::sleep(ahead);
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    Ok(SendResult {
        sent,
        elapsed: start.elapsed(),
    })
}

/// A plain UDP socket that counts what arrives until stopped.
#[derive(Debug)]
pub struct Sink {
    /// Its address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Sink {
    /// Binds on loopback with the hub's receive buffer and starts counting.
    pub fn start() -> std::io::Result<Sink> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_recv_buffer_size(SINK_RECV_BUFFER)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (stop2, count2) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        count2.fetch_add(1, Ordering::Relaxed);
                    }
                    // Idle for 100 ms: stop if asked (everything sent has arrived).
                    Err(_) if stop2.load(Ordering::Acquire) => return,
                    Err(_) => {}
                }
            }
        });
        Ok(Sink {
            addr,
            stop,
            count,
            thread,
        })
    }

    /// Stops once the socket is drained; returns datagrams received.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
        self.count.load(Ordering::Relaxed)
    }
}
