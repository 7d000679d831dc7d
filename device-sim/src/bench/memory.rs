//! The memory scenario: what WebSocket clients cost the hub. `clients`
//! clients connect and subscribe to everything: the hub's growth, divided
//! by their number, is the fixed cost of an idle subscribed client. Then
//! they stop reading (each with a small socket receive buffer, so the
//! kernel holds little for them) while devices send, and the hub's peak
//! resident memory is compared with a hub under the same load without
//! clients: the difference is what the stalled clients made it hold, to be
//! set against `ws.total_budget_bytes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::WebSocketStream;

use super::hub::HubProcess;
use super::udp::{send, SendPlan};

/// Receive buffer of a stalled client's socket: small, so what the hub
/// keeps for it is the hub's, not the kernel's.
const STALLED_RECV_BUFFER: u32 = 4 * 1024;
/// Time for the hub to settle after clients connect, before sampling.
const SETTLE: Duration = Duration::from_secs(1);

/// What the memory scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPlan {
    /// Clients that connect, then stop reading.
    pub clients: usize,
    /// Devices the load cycles through.
    pub devices: u32,
    /// Datagrams per second while the clients do not read.
    pub rate: u64,
    /// How long the load lasts.
    pub duration: Duration,
}

/// What one memory run measured (or the median of several).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoryResult {
    /// Clients connected.
    pub clients: usize,
    /// Datagrams per second offered while they did not read.
    pub rate: u64,
    /// Hub RSS before any client, KiB.
    pub hub_rss_kib: u64,
    /// Hub RSS with every client connected, subscribed and idle, KiB.
    pub idle_clients_rss_kib: u64,
    /// (idle_clients_rss − hub_rss) ÷ clients, KiB.
    pub per_idle_client_kib: f64,
    /// Peak RSS of a hub under the load, without clients, KiB.
    pub no_clients_peak_rss_kib: u64,
    /// Peak RSS of a hub under the same load with the stalled clients, KiB.
    pub stalled_peak_rss_kib: u64,
    /// Clients the hub closed as slow consumers.
    pub evicted: u64,
    /// The hub's `ws.total_budget_bytes`, KiB.
    pub total_budget_kib: u64,
}

/// A client's connection.
type Socket = WebSocketStream<tokio::net::TcpStream>;

/// Connects with a small receive buffer, subscribes to everything, live,
/// and waits for the snapshot.
async fn stalled_client(http: SocketAddr, token: Option<&str>) -> anyhow::Result<Socket> {
    let socket = if http.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(STALLED_RECV_BUFFER)?;
    let stream = socket.connect(http).await.context("connecting a client")?;
    let mut request = format!("ws://{http}/ws").into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    super::ws::subscribe_everything(ws).await
}

/// The hub's `name` figure from its `/metrics` text (summed over labels
/// matching `label`), 0 when absent.
fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sends `plan` to `hub` from a blocking thread.
async fn load(hub: &HubProcess, plan: SendPlan) -> anyhow::Result<()> {
    let target = hub.udp;
    tokio::task::spawn_blocking(move || send(target, plan, None)).await??;
    Ok(())
}

/// One run: a hub without clients under the load, then a fresh hub with
/// `clients` that stop reading under the same load. `start` starts a hub.
pub async fn memory_once(
    start: impl Fn() -> anyhow::Result<HubProcess>,
    memory: &MemoryPlan,
) -> anyhow::Result<MemoryResult> {
    let clients = memory.clients;
    let plan = SendPlan {
        first_device: 1,
        devices: memory.devices,
        rate: memory.rate,
        duration: memory.duration,
    };
    let alone = Arc::new(start()?);
    tokio::time::sleep(SETTLE).await;
    load(&alone, plan).await?;
    let no_clients_peak_rss_kib = alone.sample()?.peak_rss_kib;
    drop(alone);

    let hub = Arc::new(start()?);
    tokio::time::sleep(SETTLE).await;
    let hub_rss_kib = hub.sample()?.rss_kib;
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(stalled_client(hub.http, hub.token.as_deref()).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let idle_clients_rss_kib = hub.sample()?.rss_kib;
    // From now on no client reads: `connected` is only held.
    load(&hub, plan).await?;
    let stalled_peak_rss_kib = hub.sample()?.peak_rss_kib;
    let metrics = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.get("/metrics")).await??
    };
    let evicted = metric(
        &metrics,
        "sensor_hub_ws_evictions",
        r#"reason="slow_consumer""#,
    );
    drop(connected);
    let total_budget_kib = metric(&metrics, "sensor_hub_ws_total_budget_bytes", "") / 1024;
    Ok(MemoryResult {
        clients,
        rate: plan.rate,
        hub_rss_kib,
        idle_clients_rss_kib,
        per_idle_client_kib: idle_clients_rss_kib.saturating_sub(hub_rss_kib) as f64
            / clients.max(1) as f64,
        no_clients_peak_rss_kib,
        stalled_peak_rss_kib,
        evicted,
        total_budget_kib,
    })
}

/// The median of each figure of `runs`.
pub fn median_of(runs: &[MemoryResult]) -> MemoryResult {
    let med = |f: fn(&MemoryResult) -> f64| super::report::median(runs.iter().map(f).collect());
    MemoryResult {
        clients: runs.first().map_or(0, |r| r.clients),
        rate: runs.first().map_or(0, |r| r.rate),
        hub_rss_kib: med(|r| r.hub_rss_kib as f64) as u64,
        idle_clients_rss_kib: med(|r| r.idle_clients_rss_kib as f64) as u64,
        per_idle_client_kib: med(|r| r.per_idle_client_kib),
        no_clients_peak_rss_kib: med(|r| r.no_clients_peak_rss_kib as f64) as u64,
        stalled_peak_rss_kib: med(|r| r.stalled_peak_rss_kib as f64) as u64,
        evicted: med(|r| r.evicted as f64) as u64,
        total_budget_kib: runs.first().map_or(0, |r| r.total_budget_kib),
    }
}

impl MemoryResult {
    /// Its lines of the report's table.
    pub fn table(&self, o: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            o,
            "\nmemory ({} clients subscribed, then not reading while {} datagrams/s arrive)",
            self.clients, self.rate
        );
        let _ = writeln!(
            o,
            "hub RSS {} KiB; with the clients idle {} KiB ({:.1} KiB per client)",
            self.hub_rss_kib, self.idle_clients_rss_kib, self.per_idle_client_kib
        );
        let _ = writeln!(
            o,
            "peak RSS under load: {} KiB without clients, {} KiB with them not reading \
             (+{} KiB; ws.total_budget_bytes {} KiB); {} closed as slow consumers",
            self.no_clients_peak_rss_kib,
            self.stalled_peak_rss_kib,
            self.stalled_peak_rss_kib
                .saturating_sub(self.no_clients_peak_rss_kib),
            self.total_budget_kib,
            self.evicted
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_matching_series() {
        let text = "# HELP x\nsensor_hub_ws_evictions_total{reason=\"slow_consumer\"} 7\n\
                    sensor_hub_ws_evictions_total{reason=\"no_pong\"} 2\n";
        assert_eq!(
            metric(text, "sensor_hub_ws_evictions", r#"reason="slow_consumer""#),
            7
        );
        assert_eq!(metric(text, "sensor_hub_absent", ""), 0);
    }
}
