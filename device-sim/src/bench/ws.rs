//! WebSocket clients of a benchmark: each subscribes to everything, live,
//! and counts the datagrams it receives; a timed client also parses them
//! and measures send → receive latency against the sender's [`SendTimes`].
//! Counting clients only scan for `"device":` so that the benchmark process
//! does not need a core per thousand clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::udp::SendTimes;

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    /// Datagrams received in `readings` messages.
    pub datagrams: u64,
    /// Messages received.
    pub messages: u64,
    /// Latencies in microseconds (timed clients only).
    pub latencies_us: Vec<u64>,
}

/// A connected, subscribed client.
#[derive(Debug)]
pub struct Client {
    task: tokio::task::JoinHandle<anyhow::Result<ClientStats>>,
}

impl Client {
    /// Connects, subscribes, waits for the snapshot, then counts in the
    /// background until `stop` turns true.
    pub async fn connect(
        http: SocketAddr,
        token: Option<&str>,
        times: Option<Arc<SendTimes>>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Client> {
        let ws = subscribe_all(http, token).await?;
        let task = tokio::spawn(count(ws, times, stop));
        Ok(Client { task })
    }

    /// Waits for the client to stop and returns what it saw.
    pub async fn finish(self) -> anyhow::Result<ClientStats> {
        self.task.await?
    }
}

/// A client's connection to the hub.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the hub at `http` (with `token` as its bearer token, if
/// any), subscribes to everything, live, and waits for the snapshot: the
/// stream then carries what the hub receives from now on.
pub async fn subscribe_all(http: SocketAddr, token: Option<&str>) -> anyhow::Result<Socket> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://{http}/ws").into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("connecting a WebSocket client")?;
    ws.send(Message::text(
        r#"{"type":"subscribe","devices":"all","sensors":"all","mode":"live"}"#,
    ))
    .await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| anyhow!("no snapshot within 10 s"))?
            .ok_or_else(|| anyhow!("closed before the snapshot"))??;
        if msg
            .to_text()
            .is_ok_and(|t| t.starts_with(r#"{"type":"snapshot""#))
        {
            break;
        }
    }
    Ok(ws)
}

async fn count(
    mut ws: Socket,
    times: Option<Arc<SendTimes>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::default();
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            msg = ws.next() => match msg {
                Some(msg) => msg?,
                None => break,
            },
        };
        let Message::Text(text) = msg else { continue };
        stats.messages += 1;
        if !text.starts_with(r#"{"type":"readings""#) {
            continue;
        }
        match &times {
            None => stats.datagrams += text.matches(r#""device":"#).count() as u64,
            Some(times) => {
                let now = Instant::now();
                let v: serde_json::Value = serde_json::from_str(&text)?;
                for d in v["datagrams"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    stats.datagrams += 1;
                    let device = d["device"].as_u64().unwrap_or(0) as u32;
                    let seq = d["seq"].as_u64().unwrap_or(0) as u32;
                    if let Some(ns) = times.latency_ns(device, seq, now) {
                        stats.latencies_us.push(ns / 1_000);
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(stats)
}
