//! The UDP shell: one task per data-plane socket (`udp.receive_sockets`
//! of them share the port), each reading datagrams in batches — one
//! `recvmmsg` system call for up to `udp.batch_max` of them, then it
//! yields — and handing each batch, stamped with the moment it was read,
//! to [`Core::ingest_batch_received`]. The kernel
//! reports each datagram's length on the wire (`MSG_TRUNC`), so an
//! oversized datagram is counted at its real size though only its first
//! bytes are read. The tasks' own counters (receive errors) and the
//! sockets' kernel figures, summed, are their [`IngestMetrics`].

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use sensor_hub_protocol::MAX_DATAGRAM_LEN;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::core::{Core, Received};
use crate::metrics::{counter, gauge, Collector, Counter, DescriptorEncoder};
use crate::net::{kernel_udp_stats, KernelUdpStats, RecvBuffer};
use crate::supervisor::TaskResult;

/// Receive slot size: one byte more than the largest valid datagram, so an
/// oversized datagram shows up as a read that fills the slot.
const SLOT: usize = MAX_DATAGRAM_LEN + 1;

/// The ingest tasks' counters and the socket facts `/metrics` shows.
#[derive(Debug)]
pub struct IngestMetrics {
    /// Errors returned by the sockets on receive.
    pub recv_errors: Counter,
    /// Inode of each receive socket, for the kernel's drop counter
    /// (Linux; `None` where it cannot be read).
    pub inodes: Vec<Option<u64>>,
    /// What the kernel granted for SO_RCVBUF, per socket (each socket asks
    /// for the same).
    pub recv_buffer: RecvBuffer,
}

impl IngestMetrics {
    /// Counters for the receive sockets with these inodes and receive
    /// buffer.
    pub fn new(inodes: Vec<Option<u64>>, recv_buffer: RecvBuffer) -> IngestMetrics {
        IngestMetrics {
            recv_errors: Counter::default(),
            inodes,
            recv_buffer,
        }
    }

    /// Receive sockets sharing the UDP port.
    pub fn sockets(&self) -> usize {
        self.inodes.len()
    }

    /// The kernel's figures summed over the sockets the OS tells about;
    /// `None` when it tells about none.
    pub fn kernel(&self) -> Option<KernelUdpStats> {
        self.inodes
            .iter()
            .filter_map(|inode| inode.and_then(kernel_udp_stats))
            .fold(None, |sum: Option<KernelUdpStats>, k| {
                let sum = sum.unwrap_or_default();
                Some(KernelUdpStats {
                    drops: sum.drops.saturating_add(k.drops),
                    rx_queue_bytes: sum.rx_queue_bytes.saturating_add(k.rx_queue_bytes),
                })
            })
    }
}

/// The ingest families on `/metrics`.
#[derive(Debug)]
pub struct IngestCollector(pub Arc<IngestMetrics>);

impl Collector for IngestCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        if let Some(k) = m.kernel() {
            counter(
                &mut e,
                "sensor_hub_udp_kernel_drops",
                "Datagrams the kernel dropped before the hub could read them (receive buffer full), over all receive sockets.",
                k.drops,
            )?;
            gauge(
                &mut e,
                "sensor_hub_udp_receive_queue_bytes",
                "Bytes waiting in the kernel receive queues of the UDP sockets.",
                k.rx_queue_bytes,
            )?;
        }
        gauge(
            &mut e,
            "sensor_hub_udp_receive_buffer_bytes",
            "Usable UDP receive buffer granted by the kernel (SO_RCVBUF), per socket.",
            m.recv_buffer.granted() as u64,
        )?;
        gauge(
            &mut e,
            "sensor_hub_udp_receive_sockets",
            "UDP sockets sharing the data-plane port, each read by its own task (udp.receive_sockets).",
            m.sockets() as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_udp_receive_errors",
            "Errors returned by the UDP sockets on receive.",
            m.recv_errors.get(),
        )
    }
}

/// Reads and ingests the datagrams of one socket until `cancel` fires.
/// Returns an error only when the socket itself fails (the supervisor
/// restarts the task on the same socket, and stops the hub if that keeps
/// failing). With several receive sockets, one such task reads each.
pub async fn run(
    core: Arc<Core>,
    socket: Arc<UdpSocket>,
    batch_max: usize,
    clock: Clock,
    metrics: Arc<IngestMetrics>,
    cancel: CancellationToken,
) -> TaskResult {
    let batch_max = batch_max.max(1);
    let mut buffer = vec![0u8; batch_max * SLOT];
    // (slot, length on the wire, sender) of each datagram read.
    let mut received: Vec<(usize, usize, SocketAddr)> = Vec::with_capacity(batch_max);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            ready = socket.readable() => ready.map_err(|e| format!("the UDP socket failed: {e}"))?,
        }
        let read = socket.try_io(Interest::READABLE, || {
            recv_batch(&socket, &mut buffer, &mut received)
        });
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                metrics.recv_errors.inc();
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        }
        let received_us = clock.mono_us();
        let batch: Vec<Received<'_>> = received
            .iter()
            .map(|&(slot, wire_len, from)| {
                let start = slot * SLOT;
                Received {
                    bytes: &buffer[start..start + wire_len.min(SLOT)],
                    wire_len,
                    from,
                }
            })
            .collect();
        if !batch.is_empty() {
            core.ingest_batch_received(&batch, clock.now(), received_us);
        }
        let full_cycle = received.len() == batch_max;
        received.clear();
        if full_cycle {
            // More may be waiting; let other tasks run first.
            tokio::task::yield_now().await;
        }
    }
}

/// Reads what is waiting, up to one datagram per slot of `buffer`, with
/// one system call; appends each datagram's slot, length on the wire (may
/// exceed the slot) and sender to `received`. `WouldBlock` when nothing was
/// waiting. (The message headers are made per call: they hold raw pointers,
/// so they cannot live in the task across an `await`.)
fn recv_batch(
    socket: &UdpSocket,
    buffer: &mut [u8],
    received: &mut Vec<(usize, usize, SocketAddr)>,
) -> io::Result<()> {
    let mut slots: Vec<[IoSliceMut<'_>; 1]> = buffer
        .chunks_mut(SLOT)
        .map(|slot| [IoSliceMut::new(slot)])
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots.len(), None);
    let messages = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slots.iter_mut(),
        MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    for (slot, message) in messages.enumerate() {
        // Not from an IP address: nothing to account it to.
        if let Some(from) = message.address.and_then(|a| socket_addr(&a)) {
            received.push((slot, message.bytes, from));
        }
    }
    Ok(())
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
    } else {
        a.as_sockaddr_in6()
            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
    }
}
