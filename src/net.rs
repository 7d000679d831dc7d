//! Socket set-up the standard library does not offer: the UDP socket's
//! kernel receive buffer (SO_RCVBUF, with a warning when the kernel caps
//! it), several UDP sockets sharing one port (SO_REUSEPORT, Linux), and
//! reading the kernel's per-socket drop counter on Linux.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// How the kernel answered the receive-buffer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBuffer {
    /// Bytes asked for (`udp.recv_buffer_bytes`).
    pub requested: usize,
    /// What the kernel reports back (Linux reports twice the usable size).
    pub reported: usize,
}

/// Linux doubles the requested SO_RCVBUF to leave room for bookkeeping and
/// reports the doubled value.
const KERNEL_REPORT_FACTOR: usize = if cfg!(target_os = "linux") { 2 } else { 1 };

impl RecvBuffer {
    /// True when the kernel granted less than asked (net.core.rmem_max).
    pub fn capped(&self) -> bool {
        self.reported < self.requested.saturating_mul(KERNEL_REPORT_FACTOR)
    }

    /// Usable bytes the kernel granted.
    pub fn granted(&self) -> usize {
        self.reported / KERNEL_REPORT_FACTOR
    }
}

/// Binds a non-blocking UDP socket with the requested receive buffer.
pub fn bind_udp(
    addr: SocketAddr,
    recv_buffer_bytes: usize,
) -> io::Result<(std::net::UdpSocket, RecvBuffer)> {
    bind_udp_one(addr, recv_buffer_bytes, false)
}

/// Binds `count` non-blocking UDP sockets on `addr`, each with the
/// requested receive buffer. With `count` > 1 every one of them is bound
/// with SO_REUSEPORT (it must be set before `bind` on each socket sharing
/// the port), and the kernel spreads incoming datagrams across them by a
/// hash of the flow (source and destination address and port): every
/// datagram of one sender lands on the same socket, so one device's
/// datagrams are still read in the order they arrived.
///
/// When `addr` has port 0, the first socket gets a port from the OS and
/// the others are bound to that port. With SO_REUSEPORT another process
/// could bind the same port too, but Linux allows that only to a process
/// of the same effective user that also sets SO_REUSEPORT — a second
/// hub of the same user with `udp.receive_sockets` > 1 would share the
/// datagrams instead of failing to bind. SO_REUSEPORT spreads datagrams
/// this way on Linux only: elsewhere `count` > 1 is `Unsupported`.
pub fn bind_udp_group(
    addr: SocketAddr,
    recv_buffer_bytes: usize,
    count: usize,
) -> io::Result<Vec<(std::net::UdpSocket, RecvBuffer)>> {
    let count = count.max(1);
    let reuse_port = count > 1;
    let first = bind_udp_one(addr, recv_buffer_bytes, reuse_port)?;
    let bound = first.0.local_addr()?;
    let mut sockets = Vec::with_capacity(count);
    sockets.push(first);
    for _ in 1..count {
        sockets.push(bind_udp_one(bound, recv_buffer_bytes, reuse_port)?);
    }
    Ok(sockets)
}

fn bind_udp_one(
    addr: SocketAddr,
    recv_buffer_bytes: usize,
    reuse_port: bool,
) -> io::Result<(std::net::UdpSocket, RecvBuffer)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(recv_buffer_bytes)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let reported = socket.recv_buffer_size()?;
    Ok((
        socket.into(),
        RecvBuffer {
            requested: recv_buffer_bytes,
            reported,
        },
    ))
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "several UDP receive sockets need Linux's SO_REUSEPORT",
    ))
}

/// A non-blocking TCP listener with SO_REUSEADDR (a restarted hub can bind
/// its port again at once) and TCP_NODELAY, which accepted connections
/// inherit on Linux: small WebSocket messages and control frames go out
/// without waiting on Nagle's algorithm and the peer's delayed ACK.
pub fn listen_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Kernel-side counters of one UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelUdpStats {
    /// Datagrams the kernel dropped because the receive buffer was full.
    pub drops: u64,
    /// Bytes waiting in the receive queue right now.
    pub rx_queue_bytes: u64,
}

/// The socket inode of a file descriptor, from `/proc/self/fd` (Linux).
pub fn socket_inode(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Reads the kernel counters of the UDP socket with `inode` from
/// `/proc/self/net/udp` and `udp6` (the same tables as `/proc/net/…`, but
/// still visible under systemd's `ProcSubset=pid`). `None` where those do
/// not exist.
pub fn kernel_udp_stats(inode: u64) -> Option<KernelUdpStats> {
    ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            parse_proc_net_udp(&text, inode)
        })
}

/// Finds the row of `inode` in the text of `/proc/net/udp{,6}`.
///
/// Columns: `sl local rem st tx_queue:rx_queue tr:tm->when retrnsmt uid
/// timeout inode ref pointer drops`.
pub fn parse_proc_net_udp(text: &str, inode: u64) -> Option<KernelUdpStats> {
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 13 || cols[9].parse::<u64>().ok()? != inode {
            return None;
        }
        let rx_queue = cols[4].split(':').nth(1)?;
        Some(KernelUdpStats {
            drops: cols[12].parse().ok()?,
            rx_queue_bytes: u64::from_str_radix(rx_queue, 16).ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  508: 00000000:B7DC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 31337 2 0000000000000000 0
  740: 0100007F:9C44 00000000:0000 07 00000000:00000A80 00:00000000 00000000     0        0 424242 2 0000000000000000 17
";

    #[test]
    fn finds_drops_and_queue_of_the_right_socket() {
        assert_eq!(
            parse_proc_net_udp(SAMPLE, 424242),
            Some(KernelUdpStats {
                drops: 17,
                rx_queue_bytes: 0xA80
            })
        );
        assert_eq!(
            parse_proc_net_udp(SAMPLE, 31337),
            Some(KernelUdpStats::default())
        );
        assert_eq!(parse_proc_net_udp(SAMPLE, 1), None);
        assert_eq!(parse_proc_net_udp("garbage\nmore garbage", 1), None);
    }

    #[test]
    fn capped_buffer_is_detected() {
        let f = KERNEL_REPORT_FACTOR;
        let ok = RecvBuffer {
            requested: 8 << 20,
            reported: (8 << 20) * f,
        };
        assert!(!ok.capped());
        assert_eq!(ok.granted(), 8 << 20);
        let capped = RecvBuffer {
            requested: 8 << 20,
            reported: 416 * 1024,
        };
        assert!(capped.capped());
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let listener = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_shares_the_port_the_first_socket_got() {
        let group = bind_udp_group("127.0.0.1:0".parse().unwrap(), 1 << 20, 3).unwrap();
        assert_eq!(group.len(), 3);
        let port = group[0].0.local_addr().unwrap().port();
        assert_ne!(port, 0);
        for (socket, _) in &group {
            assert_eq!(socket.local_addr().unwrap().port(), port);
        }
        // A socket without SO_REUSEPORT cannot join them.
        assert!(bind_udp(group[0].0.local_addr().unwrap(), 1 << 20).is_err());
        // One socket: no SO_REUSEPORT, so the port stays exclusive.
        let single = bind_udp_group("127.0.0.1:0".parse().unwrap(), 1 << 20, 1).unwrap();
        assert_eq!(single.len(), 1);
        let addr = single[0].0.local_addr().unwrap();
        assert!(bind_udp_group(addr, 1 << 20, 2).is_err());
    }

    #[test]
    fn bound_socket_is_found_in_proc_on_linux() {
        let (socket, buffer) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(buffer.reported > 0);
        if cfg!(target_os = "linux") {
            use std::os::fd::AsRawFd as _;
            let inode = socket_inode(socket.as_raw_fd()).expect("socket inode");
            let stats = kernel_udp_stats(inode).expect("row in /proc/net/udp");
            assert_eq!(stats.drops, 0);
        }
    }
}
