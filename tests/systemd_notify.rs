//! The hub as a systemd `Type=notify` service sees it, with the real
//! binary: `READY=1` only once it serves (its `/healthz` answers at once),
//! a status line naming its addresses, `WATCHDOG=1` pings at half the
//! `WatchdogSec=` period, and `STOPPING=1` on SIGTERM. The notification
//! socket is a datagram socket this test binds, as systemd does.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sensor-hub");

/// Datagrams on `socket` until one contains `wanted` (or 15 s pass).
fn until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = text.contains(wanted);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted:?} within 15 s; got {seen:?}");
}

fn healthz(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_hub_tells_systemd_when_it_serves_pings_the_watchdog_and_says_it_stops() {
    let dir = std::env::temp_dir().join(format!("sensor-hub-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("SENSOR_HUB__STORAGE__PATH", dir.join("history.db"))
        .env(
            "SENSOR_HUB__AUTH__CREDENTIALS_PATH",
            dir.join("credentials.json"),
        )
        .env("SENSOR_HUB__DEVICES__KEYS_PATH", dir.join("devices.json"))
        .env("SENSOR_HUB__UDP__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = until(&socket, "READY=1");
    let ready = ready.last().unwrap();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("a status line: {ready}"));
    assert!(status.starts_with("serving: udp 127.0.0.1:"), "{status}");
    let http = status
        .split_once("http ")
        .map(|(_, a)| a.trim())
        .unwrap_or_else(|| panic!("the HTTP address: {status}"));
    // Ready means serving: the first request after READY is answered.
    let answer = healthz(http);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Pings at half of WATCHDOG_USEC (200 ms): two within a second or so.
    until(&socket, "WATCHDOG=1");
    until(&socket, "WATCHDOG=1");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    until(&socket, "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
