//! WebSocket clients of a benchmark: each subscribes to everything, live,
//! and counts the datagrams it receives; a timed client also reads each
//! datagram's (device, seq) and measures send → receive latency against
//! the sender's [`SendTimes`]. Counting clients only scan for `"device":`
//! so that the benchmark process does not need a core per thousand
//! clients. The timed client runs on a thread of its own with a
//! current-thread runtime, takes the receive time as soon as a message is
//! read, and parses only the fields it needs, so what it measures is not
//! time spent waiting behind counting clients on a shared runtime. Both
//! read every datagram of a message, whatever the message's `seq` (one
//! message may carry the datagrams of several stream events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
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
    running: Running,
}

/// Where a client runs.
#[derive(Debug)]
enum Running {
    /// A counting client: a task on the caller's runtime.
    Task(tokio::task::JoinHandle<anyhow::Result<ClientStats>>),
    /// The timed client: a thread of its own.
    Thread(std::thread::JoinHandle<anyhow::Result<ClientStats>>),
}

impl Client {
    /// Connects, subscribes, waits for the snapshot, then counts in the
    /// background until `stop` turns true; with `times`, on a thread of its
    /// own, timing every datagram.
    pub async fn connect(
        http: SocketAddr,
        token: Option<&str>,
        times: Option<Arc<SendTimes>>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Client> {
        let running = match times {
            None => {
                let ws = subscribe_all(http, token).await?;
                Running::Task(tokio::spawn(count(ws, stop)))
            }
            Some(times) => {
                let token = token.map(str::to_owned);
                let (ready, subscribed) = oneshot::channel();
                let thread = std::thread::Builder::new()
                    .name("bench-timed-client".into())
                    .spawn(move || timed_thread(http, token, times, stop, ready))
                    .context("starting the timed client's thread")?;
                subscribed
                    .await
                    .map_err(|_| anyhow!("the timed client's thread ended before subscribing"))??;
                Running::Thread(thread)
            }
        };
        Ok(Client { running })
    }

    /// Waits for the client to stop and returns what it saw.
    pub async fn finish(self) -> anyhow::Result<ClientStats> {
        match self.running {
            Running::Task(task) => task.await?,
            Running::Thread(thread) => {
                tokio::task::spawn_blocking(move || {
                    thread
                        .join()
                        .map_err(|_| anyhow!("the timed client's thread panicked"))?
                })
                .await?
            }
        }
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
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("connecting a WebSocket client")?;
    subscribe_everything(ws).await
}

/// Subscribes a connected client to everything, live, and waits for the
/// snapshot.
pub async fn subscribe_everything<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
            return Ok(ws);
        }
    }
}

/// Counts datagrams (`"device":` occurrences) until `stop`.
async fn count(mut ws: Socket, mut stop: watch::Receiver<bool>) -> anyhow::Result<ClientStats> {
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
        if text.starts_with(r#"{"type":"readings""#) {
            stats.datagrams += text.matches(r#""device":"#).count() as u64;
        }
    }
    let _ = ws.close(None).await;
    Ok(stats)
}

/// The timed client's thread: its own current-thread runtime, subscribed
/// (`ready` says so, or why not), then timing until `stop`.
fn timed_thread(
    http: SocketAddr,
    token: Option<String>,
    times: Arc<SendTimes>,
    stop: watch::Receiver<bool>,
    ready: oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<ClientStats> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(anyhow!("the timed client's runtime: {e}")));
            return Err(e.into());
        }
    };
    runtime.block_on(async move {
        let ws = match subscribe_all(http, token.as_deref()).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ready.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let _ = ready.send(Ok(()));
        timed(ws, &times, stop).await
    })
}

/// The part of a `readings` message the timed clients read.
#[derive(Debug, Deserialize)]
pub(super) struct ReadingsMessage {
    /// Its datagrams.
    pub(super) datagrams: Vec<DatagramRef>,
}

/// A datagram's identity in a `readings` message.
#[derive(Debug, Deserialize)]
pub(super) struct DatagramRef {
    /// Its device.
    pub(super) device: u32,
    /// Its sequence number.
    pub(super) seq: u32,
}

/// Times every datagram received until `stop`: receive time (taken as the
/// message is read) − send time.
async fn timed(
    mut ws: Socket,
    times: &SendTimes,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::default();
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(msg) => msg?,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let now = Instant::now();
        let Message::Text(text) = msg else { continue };
        stats.messages += 1;
        if !text.starts_with(r#"{"type":"readings""#) {
            continue;
        }
        let readings = parse_readings(&text)?;
        for d in readings.datagrams {
            stats.datagrams += 1;
            if let Some(ns) = times.latency_ns(d.device, d.seq, now) {
                stats.latencies_us.push(ns / 1_000);
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(stats)
}

/// The datagrams of a `readings` message (other fields skipped).
fn parse_readings(text: &str) -> anyhow::Result<ReadingsMessage> {
    serde_json::from_str(text).context("a readings message the timed client cannot read")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timed_client_reads_every_datagram_of_a_message() -> anyhow::Result<()> {
        let text = r#"{"type":"readings","seq":9,"hub_time_ms":5000,"datagrams":[
            {"device":3,"seq":9,"time_ms":1000,"received_ms":1004,"readings":[{"channel":0,"value":42}]},
            {"device":4,"seq":2,"time_ms":1000,"received_ms":1004,"readings":[{"channel":1,"value":true}]}]}"#;
        let m = parse_readings(text)?;
        let ids: Vec<(u32, u32)> = m.datagrams.iter().map(|d| (d.device, d.seq)).collect();
        assert_eq!(ids, [(3, 9), (4, 2)]);
        assert!(
            parse_readings(r#"{"type":"readings","datagrams":[{"device":-1,"seq":0}]}"#).is_err()
        );
        Ok(())
    }
}
