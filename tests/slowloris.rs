//! Slowloris against a real hub (in this process): 2,000 connections to the
//! HTTP port that send part of a request head and never finish it. The
//! hub must stay reachable — a real client gets its page, a device gets
//! its control session — its memory must stay bounded, and `/metrics`
//! must count what the listener closed. Once at the defaults (the cap
//! evicts), once with short timeouts (the survivors time out, and so does
//! a request whose body never comes).
//!
//! Waits are bounded (`eventually`, 5 s) and nothing asserts a duration.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::device::session;
use support::{eventually, http_get, start_hub, TestHub};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TOKEN: &str = "fleet-secret-for-tests";
/// Attacking connections.
const ATTACKERS: usize = 2_000;
/// Most the process's resident memory may grow under the attack, KiB. A
/// connection the hub holds costs its task, hyper's state and a read
/// buffer of at most 8 KiB for a short head; 512 of them (the default cap)
/// come to a few MiB. The bound leaves room for allocator slack and the
/// test's own 2,000 client sockets.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// The two tests measure this process's memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's open-file limit to its hard limit: the test holds
/// 2,000 client sockets and the hub its own.
fn raise_open_file_limit() -> u64 {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 4_096,
        "the open-file hard limit ({limit}) is too low for this test; raise it (ulimit -Hn)"
    );
    limit
}

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Opens `n` connections that each send part of a request head and stop.
/// Connections the hub already closed are kept all the same (their
/// writes may fail).
async fn slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let partial = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ");
        let _ = s.write_all(partial.as_bytes()).await;
        held.push(s);
    }
    held
}

/// A path that answers 200 without a login: the login page once the hub
/// has one, else the dashboard.
fn page() -> &'static str {
    if sensor_hub::assets::find("/login.html").is_some() {
        "/login.html"
    } else {
        "/"
    }
}

async fn closed(hub: &TestHub, reason: &str) -> u64 {
    hub.metric(&format!(
        "sensor_hub_http_connections_closed_total{{reason=\"{reason}\"}}"
    ))
    .await
}

/// What every run checks once the attack is in place.
async fn hub_still_serves(hub: &TestHub, device: u32) {
    assert_eq!(hub.get("/healthz").await.0, 200);
    assert_eq!(http_get(hub.http, page()).await.0, 200);
    let _device = session(hub.control, device, TOKEN).await;
    assert_eq!(hub.metric("sensor_hub_control_sessions").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_defaults_the_cap_evicts_slow_connections_and_the_hub_stays_reachable() {
    let _serial = SERIAL.lock().await;
    raise_open_file_limit();
    let hub = start_hub(&[("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN)]).await;
    let max: u64 = 512; // http.max_connections's default
    assert_eq!(hub.get("/healthz").await.0, 200);
    let before = rss_kib();

    let held = slowloris(hub.http, ATTACKERS).await;
    let h = &hub;
    // Every attacker beyond the cap evicted an older one.
    let evicted_at_least = ATTACKERS as u64 - max;
    eventually(
        "the cap evicted the oldest slow connections",
        || async move { closed(h, "evicted").await >= evicted_at_least },
    )
    .await;
    hub_still_serves(&hub, 7).await;
    let open = hub.metric("sensor_hub_http_connections").await;
    assert!(open <= 2 * max, "{open} HTTP connections open, cap {max}");
    assert_eq!(
        closed(&hub, "refused").await,
        0,
        "slow connections make room"
    );
    let grown = rss_kib().saturating_sub(before);
    eprintln!("resident memory grew by {grown} KiB at the defaults");
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {grown} KiB under {ATTACKERS} slow connections (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    drop(held);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_short_timeouts_slow_and_idle_connections_are_closed_and_counted() {
    let _serial = SERIAL.lock().await;
    raise_open_file_limit();
    let hub = start_hub(&[
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
        ("SENSOR_HUB__HTTP__MAX_CONNECTIONS", "256"),
        ("SENSOR_HUB__WS__MAX_CLIENTS", "16"),
        ("SENSOR_HUB__HTTP__HEADER_READ_TIMEOUT_MS", "300"),
        ("SENSOR_HUB__HTTP__IDLE_TIMEOUT_MS", "600"),
    ])
    .await;
    let before = rss_kib();

    // A keep-alive client that sends one request and then nothing.
    let mut idle = TcpStream::connect(hub.http).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", hub.http);
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    let held = slowloris(hub.http, ATTACKERS).await;
    // A whole head announcing a body that never comes.
    let mut trickle = TcpStream::connect(hub.http).await.unwrap();
    let head = format!(
        "POST /api/devices/1/commands HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\"",
        hub.http, hub.token
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let h = &hub;
    eventually("the trickled body timed out", || async move {
        closed(h, "body_timeout").await >= 1
    })
    .await;
    eventually(
        "the cap evicted the oldest slow connections",
        || async move { closed(h, "evicted").await >= (ATTACKERS - 256) as u64 },
    )
    .await;
    // Those the cap left in place do not finish their heads in time.
    eventually("slow connections timed out", || async move {
        closed(h, "header_timeout").await >= 1
    })
    .await;
    hub_still_serves(&hub, 8).await;
    // The idle keep-alive connection is closed by the hub: its read ends.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the hub closes an idle connection within 5 s");
    assert!(read.is_ok() || rest.is_empty());
    eventually("the idle connection counted", || async move {
        closed(h, "idle_timeout").await >= 1
    })
    .await;
    // Once the slow connections are closed, the gauge comes down.
    eventually("slow connections all closed", || async move {
        h.metric("sensor_hub_http_connections").await <= 2
    })
    .await;
    let grown = rss_kib().saturating_sub(before);
    eprintln!("resident memory grew by {grown} KiB with short timeouts");
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {grown} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    drop(held);
    hub.stop().await;
}
