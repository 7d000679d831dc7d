//! Starting and stopping a hub: [`Listeners::bind`] binds the three sockets
//! from the configuration (tests bind port 0), and [`run`] serves them until
//! the `shutdown` future completes, then drains within
//! `shutdown.drain_timeout_ms`.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::HubConfig;
use crate::history::{History, StoredDevice};
use crate::hub::{Hub, UdpSocketInfo};
use crate::net::{bind_udp, socket_inode};
use crate::{control, http, ingest, stats};

/// The hub's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// Data plane.
    pub udp: UdpSocket,
    /// Control channel.
    pub control: TcpListener,
    /// HTTP and WebSocket.
    pub http: TcpListener,
    udp_info: UdpSocketInfo,
}

impl Listeners {
    /// Binds `udp.bind`, `control.bind` and `http.bind`. Must run inside a
    /// tokio runtime.
    pub async fn bind(config: &HubConfig) -> anyhow::Result<Listeners> {
        let (udp, recv_buffer) = bind_udp(config.udp.bind, config.udp.recv_buffer_bytes)
            .with_context(|| {
                format!(
                    "cannot bind the UDP socket to {} (udp.bind); is another hub running? choose another address or port 0",
                    config.udp.bind
                )
            })?;
        if recv_buffer.capped() {
            tracing::warn!(
                requested = recv_buffer.requested,
                granted = recv_buffer.granted(),
                "the kernel capped the UDP receive buffer (udp.recv_buffer_bytes); bursts may be dropped. \
                 Raise the cap with: sysctl -w net.core.rmem_max={}",
                recv_buffer.requested
            );
        }
        let inode = socket_inode(udp.as_raw_fd());
        let udp = UdpSocket::from_std(udp).context("registering the UDP socket with tokio")?;
        let control = bind_tcp(config.control.bind, "control.bind").await?;
        let http = bind_tcp(config.http.bind, "http.bind").await?;
        Ok(Listeners {
            udp,
            control,
            http,
            udp_info: UdpSocketInfo { inode, recv_buffer },
        })
    }

    /// Bound UDP address.
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Bound control-channel address.
    pub fn control_addr(&self) -> std::io::Result<SocketAddr> {
        self.control.local_addr()
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

async fn bind_tcp(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    let listener = crate::net::listen_tcp(addr).with_context(|| {
        format!(
            "cannot listen on {addr} ({key}); is the port in use? choose another address or port 0"
        )
    })?;
    Ok(TcpListener::from_std(listener)?)
}

/// Serves until `shutdown` completes, then closes WebSockets with a close
/// frame, stops accepting, and waits at most `shutdown.drain_timeout_ms`.
pub async fn run(
    config: HubConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Listeners {
        udp,
        control,
        http: http_listener,
        udp_info,
    } = listeners;
    let drain = Duration::from_millis(config.shutdown.drain_timeout_ms);
    let (history, stored) = open_history(&config).await?;
    let hub = Hub::new(config, udp_info, history);
    if !stored.is_empty() {
        let mut state = hub.lock_state();
        let restored = stored
            .into_iter()
            .filter(|d| state.registry.restore(d.record.clone(), d.channels.clone()))
            .count();
        tracing::info!(
            devices = restored,
            "devices restored from the history database"
        );
    }
    let cancel = hub.cancel_token();

    let ingest = tokio::spawn(ingest::run(hub.clone(), udp));
    let stats = tokio::spawn(stats::run(hub.clone()));
    let control = tokio::spawn(control::run(hub.clone(), control));
    let ticker = tokio::spawn(run_ticker(hub.clone()));
    if hub.tokens().is_empty() {
        tracing::warn!(
            "no device tokens configured (control.fleet_token, control.tokens): every device's hello will be rejected"
        );
    }
    let server_cancel = cancel.clone();
    let server = tokio::spawn(
        warp::serve(http::routes(hub.clone()))
            .incoming(http_listener)
            .graceful(async move { server_cancel.cancelled().await })
            .run(),
    );

    shutdown.await;
    tracing::info!("shutting down");
    cancel.cancel();
    hub.tasks().close();

    let drained = tokio::time::timeout(drain, async {
        let _ = ingest.await;
        let _ = control.await;
        let _ = ticker.await;
        let _ = stats.await;
        hub.tasks().wait().await;
        let _ = server.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown.drain_timeout_ms passed with connections still open; closing them"
        );
    }
    if let Some(history) = hub.history().cloned() {
        // The last readings are written before the process ends.
        let _ = tokio::task::spawn_blocking(move || history.shutdown()).await;
    }
    Ok(())
}

/// Opens the history database, unless `storage.enabled` is false; also
/// returns the devices it remembers.
async fn open_history(config: &HubConfig) -> anyhow::Result<(Option<History>, Vec<StoredDevice>)> {
    if !config.storage.enabled {
        tracing::info!("storage.enabled = false: no history, nothing is written to disk");
        return Ok((None, Vec::new()));
    }
    let storage = config.storage.clone();
    let started = std::time::Instant::now();
    let (history, devices) = tokio::task::spawn_blocking(move || History::open(&storage))
        .await
        .context("opening the history database")??;
    tracing::info!(
        path = %config.storage.path.display(),
        // Mostly the integrity check, which reads the whole file.
        took_ms = started.elapsed().as_millis() as u64,
        "history database open"
    );
    Ok((Some(history), devices))
}

/// Re-evaluates liveness and command timeouts every `liveness.tick_ms`.
async fn run_ticker(hub: Hub) {
    let cancel = hub.cancel_token();
    let mut interval = tokio::time::interval(Duration::from_millis(hub.config().liveness.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => hub.control(|registry, now| registry.tick(now)),
        }
    }
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed when this is called, so a signal that arrives before the
/// future is first polled is not lost (nor does it kill the process).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
