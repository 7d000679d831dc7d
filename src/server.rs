//! Starting and stopping a hub: [`Listeners::bind`] binds the sockets
//! from the configuration (tests bind port 0): the UDP data plane (one
//! socket, or `udp.receive_sockets` sharing the port), the control channel
//! and HTTP; and [`run`] wires the core
//! to its shell — each task gets exactly what it needs — starts every task
//! under the [`Supervisor`], serves until the `shutdown` future completes,
//! then drains within `shutdown.drain_timeout_ms`.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, AuthCollector};
use crate::clock::Clock;
use crate::cluster::{self, ClusterCollector, ClusterStatus};
use crate::config::{HubConfig, MAX_RECEIVE_SOCKETS};
use crate::control::auth::Tokens;
use crate::control::{ControlCollector, ControlContext, ControlMetrics};
use crate::core::{Core, CoreMetrics};
use crate::device_file::{DeviceDirectory, DeviceFile};
use crate::history::metrics::HistoryCollector;
use crate::history::{History, StoredDevice};
use crate::history_api::HistoryGateCollector;
use crate::http::HttpContext;
use crate::http_server::{Connections, HttpCollector, ListenerContext};
use crate::ingest::{IngestCollector, IngestMetrics};
use crate::metrics::{self, gauge, Collector, DescriptorEncoder};
use crate::mqtt::{self, MqttCollector, MqttStatus};
use crate::net::{bind_udp_group, socket_inode, RecvBuffer};
use crate::supervisor::{Health, HealthCollector, Supervisor};
use crate::ws::client::WsMetrics;
use crate::ws::{WsCollector, WsContext};
use crate::{control, http_server, ingest, stats, systemd, ticker};

/// The hub's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// Data plane: one socket, or `udp.receive_sockets` sharing one port
    /// (SO_REUSEPORT); never empty.
    pub udp: Vec<UdpSocket>,
    /// Control channel.
    pub control: TcpListener,
    /// HTTP and WebSocket.
    pub http: TcpListener,
    udp_inodes: Vec<Option<u64>>,
    udp_recv_buffer: RecvBuffer,
}

impl Listeners {
    /// Binds `udp.bind` (`udp.receive_sockets` times), `control.bind` and
    /// `http.bind`. Must run inside a tokio runtime.
    pub async fn bind(config: &HubConfig) -> anyhow::Result<Listeners> {
        let count = receive_sockets(config.udp.receive_sockets);
        let group = bind_udp_group(config.udp.bind, config.udp.recv_buffer_bytes, count)
            .with_context(|| {
                format!(
                    "cannot bind {count} UDP socket(s) to {} (udp.bind, udp.receive_sockets); is another hub running? choose another address or port 0",
                    config.udp.bind
                )
            })?;
        let recv_buffer = group
            .first()
            .map(|(_, b)| *b)
            .context("no UDP socket bound")?;
        if recv_buffer.capped() {
            tracing::warn!(
                requested = recv_buffer.requested,
                granted = recv_buffer.granted(),
                "the kernel capped the UDP receive buffer (udp.recv_buffer_bytes); bursts may be dropped. \
                 Raise the cap with: sysctl -w net.core.rmem_max={}",
                recv_buffer.requested
            );
        }
        let mut udp = Vec::with_capacity(group.len());
        let mut inodes = Vec::with_capacity(group.len());
        for (socket, _) in group {
            inodes.push(socket_inode(socket.as_raw_fd()));
            udp.push(UdpSocket::from_std(socket).context("registering the UDP socket with tokio")?);
        }
        let control = bind_tcp(config.control.bind, "control.bind").await?;
        let http = bind_tcp(config.http.bind, "http.bind").await?;
        Ok(Listeners {
            udp,
            control,
            http,
            udp_inodes: inodes,
            udp_recv_buffer: recv_buffer,
        })
    }

    /// Bound UDP address (every receive socket has the same).
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp
            .first()
            .ok_or_else(|| std::io::Error::other("no UDP socket bound"))?
            .local_addr()
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

/// The receive sockets to bind for `udp.receive_sockets`: as configured
/// on Linux, 1 elsewhere (with a warning), since only Linux's SO_REUSEPORT
/// spreads one port's datagrams over several sockets.
fn receive_sockets(configured: usize) -> usize {
    let configured = configured.clamp(1, MAX_RECEIVE_SOCKETS);
    if configured > 1 && !cfg!(target_os = "linux") {
        tracing::warn!(
            configured,
            "udp.receive_sockets > 1 needs Linux's SO_REUSEPORT; using one UDP socket"
        );
        return 1;
    }
    configured
}

/// Supervisor names of the ingest tasks: `ingest` for a single socket (as
/// before there could be several), `ingest-0`… for several.
#[rustfmt::skip]
const INGEST_TASKS: [&str; MAX_RECEIVE_SOCKETS] = [
    "ingest-0", "ingest-1", "ingest-2", "ingest-3", "ingest-4", "ingest-5", "ingest-6",
    "ingest-7", "ingest-8", "ingest-9", "ingest-10", "ingest-11", "ingest-12", "ingest-13",
    "ingest-14", "ingest-15", "ingest-16", "ingest-17", "ingest-18", "ingest-19", "ingest-20",
    "ingest-21", "ingest-22", "ingest-23", "ingest-24", "ingest-25", "ingest-26", "ingest-27",
    "ingest-28", "ingest-29", "ingest-30", "ingest-31", "ingest-32", "ingest-33", "ingest-34",
    "ingest-35", "ingest-36", "ingest-37", "ingest-38", "ingest-39", "ingest-40", "ingest-41",
    "ingest-42", "ingest-43", "ingest-44", "ingest-45", "ingest-46", "ingest-47", "ingest-48",
    "ingest-49", "ingest-50", "ingest-51", "ingest-52", "ingest-53", "ingest-54", "ingest-55",
    "ingest-56", "ingest-57", "ingest-58", "ingest-59", "ingest-60", "ingest-61", "ingest-62",
    "ingest-63",
];

/// The supervisor's name for the ingest task of socket `index` of `count`.
fn ingest_task_name(index: usize, count: usize) -> &'static str {
    if count <= 1 {
        "ingest"
    } else {
        INGEST_TASKS.get(index).copied().unwrap_or("ingest-more")
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

/// Seconds since start, on `/metrics`.
#[derive(Debug)]
struct Uptime {
    clock: Clock,
    started_mono_ms: u64,
}

impl Collector for Uptime {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let ms = self
            .clock
            .now()
            .mono_ms
            .saturating_sub(self.started_mono_ms);
        gauge(
            &mut e,
            "sensor_hub_uptime_seconds",
            "Seconds since the hub started.",
            ms as f64 / 1_000.0,
        )
    }
}

/// Serves until `shutdown` completes, then closes WebSockets with a close
/// frame, stops accepting, and waits at most `shutdown.drain_timeout_ms`.
/// Returns an error when a task failed and could not be restarted (the
/// process should exit non-zero).
pub async fn run(
    config: HubConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let udp_addr = listeners.udp_addr();
    let Listeners {
        udp,
        control: control_listener,
        http: http_listener,
        udp_inodes,
        udp_recv_buffer,
    } = listeners;
    let serving = format!(
        "serving: udp {} ({} socket{}), control {}, http {}",
        udp_addr.map_or("?".into(), |a| a.to_string()),
        udp.len(),
        if udp.len() == 1 { "" } else { "s" },
        control_listener
            .local_addr()
            .map_or("?".into(), |a| a.to_string()),
        http_listener
            .local_addr()
            .map_or("?".into(), |a| a.to_string()),
    );
    let drain = Duration::from_millis(config.shutdown.drain_timeout_ms);
    raise_open_file_limit(&config);
    let tls = match config.http.tls_paths() {
        Some((cert, key)) => Some(http_server::tls::acceptor(cert, key)?),
        None => None,
    };
    if let Some((cert, _)) = config.http.tls_paths() {
        tracing::info!(certificate = %cert.display(), "serving HTTPS");
    }
    warn_if_exposed(&config, tls.is_some());
    let clock = Clock::system();
    let started_mono_ms = clock.now().mono_ms;
    let (history, stored) = open_history(&config).await?;
    let core = Arc::new(Core::new(&config, history.clone()));
    // Before any event: in a cluster, every event is shared.
    let cluster = if config.cluster.enabled {
        let settings = cluster::Settings::from_config(&config.cluster, config.commands.ttl_ms)
            .context("the cluster ([cluster])")?;
        core.join_cluster(
            settings.hub.clone(),
            config.cluster.outage_bytes,
            config
                .limits
                .max_devices
                .saturating_add(config.devices.max_discovered),
        );
        tracing::info!(hub = &*settings.hub, "cluster: joining through Redis");
        Some(settings)
    } else {
        None
    };
    let devices = Arc::new(
        DeviceDirectory::open(
            DeviceFile::new(&config.devices.keys_path),
            DEVICE_FILE_POLL_MS,
        )
        .context("opening the device file (devices.keys_path)")?,
    );
    // Before the restore: listed devices are adopted, keyed ones must
    // authenticate from their first datagram.
    let (keyring, _) = devices.refresh(clock.now().mono_ms, true);
    core.set_device_list(&keyring, clock.now());
    if !stored.is_empty() {
        let restored = core.restore(stored);
        tracing::info!(
            devices = restored,
            "devices restored from the history database"
        );
    }
    // Validated when the configuration was loaded.
    let tokens = Arc::new(Tokens::new(
        &config.control.fleet_token,
        config.device_tokens().unwrap_or_default(),
    ));
    if tokens.is_empty() {
        tracing::warn!(
            "no device tokens configured (control.fleet_token, control.tokens): every device's hello will be rejected"
        );
    }
    let auth = Auth::open(&config.auth, &config.http).context("opening the credentials file")?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let health = Health::default();

    let ingest_metrics = Arc::new(IngestMetrics::new(udp_inodes, udp_recv_buffer));
    let control_metrics = Arc::new(ControlMetrics::default());
    let ws_metrics = Arc::new(WsMetrics::default());
    ws_metrics
        .total_budget_bytes
        .set(i64::try_from(config.ws.total_budget_bytes).unwrap_or(i64::MAX));
    let ws_ctx = WsContext::new(
        core.clone(),
        &config,
        clock.clone(),
        ws_metrics.clone(),
        cancel.clone(),
        auth.clone(),
    );
    let connections = Connections::new(&config.http, clock.clone());
    let mut registry = metrics::Registry::default();
    registry.register_collector(Box::new(CoreMetrics(core.clone())));
    registry.register_collector(Box::new(IngestCollector(ingest_metrics.clone())));
    registry.register_collector(Box::new(HttpCollector(connections.clone())));
    registry.register_collector(Box::new(WsCollector(ws_metrics.clone())));
    registry.register_collector(Box::new(ControlCollector(control_metrics.clone())));
    registry.register_collector(Box::new(HistoryCollector(history.clone())));
    registry.register_collector(Box::new(HistoryGateCollector(ws_ctx.history.clone())));
    registry.register_collector(Box::new(HealthCollector(health.clone())));
    registry.register_collector(Box::new(AuthCollector(auth.clone())));
    let mqtt_status = Arc::new(MqttStatus::new(&config.mqtt));
    registry.register_collector(Box::new(MqttCollector(mqtt_status.clone())));
    let cluster_status = cluster
        .as_ref()
        .map(|s| Arc::new(ClusterStatus::new(&s.hub, clock.now().wall_ms)));
    registry.register_collector(Box::new(ClusterCollector {
        core: core.clone(),
        status: cluster_status.clone(),
    }));
    registry.register_collector(Box::new(Uptime {
        clock: clock.clone(),
        started_mono_ms,
    }));

    let mut supervisor = Supervisor::new(health.clone(), cancel.clone());
    // One task per receive socket, each supervised on its own. The kernel
    // hashes each flow to one socket, so a device's datagrams are all read
    // by the same task, in order; tasks of different sockets interleave
    // their batches at the core's lock.
    let sockets = udp.len();
    for (index, udp) in udp.into_iter().enumerate() {
        let udp = Arc::new(udp);
        let (core, clock, metrics, cancel) = (
            core.clone(),
            clock.clone(),
            ingest_metrics.clone(),
            cancel.clone(),
        );
        let batch_max = config.udp.batch_max;
        supervisor.spawn(ingest_task_name(index, sockets), move || {
            ingest::run(
                core.clone(),
                udp.clone(),
                batch_max,
                clock.clone(),
                metrics.clone(),
                cancel.clone(),
            )
        });
    }
    let control_ctx = ControlContext {
        core: core.clone(),
        config: Arc::new(config.control.clone()),
        max_in_flight: config.commands.max_in_flight,
        tokens,
        devices: devices.clone(),
        guard: Arc::new(crate::control::guard::HelloGuard::new(&config.control)),
        clock: clock.clone(),
        metrics: control_metrics,
        cancel: cancel.clone(),
        tasks: tasks.clone(),
    };
    let control_listener = Arc::new(control_listener);
    supervisor.spawn("control", move || {
        control::run(control_ctx.clone(), control_listener.clone())
    });
    {
        let (core, clock, cancel) = (core.clone(), clock.clone(), cancel.clone());
        let every = Duration::from_millis(config.ws.stats_interval_ms);
        supervisor.spawn("stats", move || {
            let (core, clock, cancel) = (core.clone(), clock.clone(), cancel.clone());
            async move {
                stats::run(core, every, clock, cancel).await;
                Ok(())
            }
        });
    }
    {
        let (core, clock, cancel) = (core.clone(), clock.clone(), cancel.clone());
        let max_sleep = Duration::from_millis(config.liveness.tick_ms);
        supervisor.spawn("ticker", move || {
            let (core, clock, cancel) = (core.clone(), clock.clone(), cancel.clone());
            async move {
                ticker::run(core, max_sleep, clock, cancel).await;
                Ok(())
            }
        });
    }
    {
        let (devices, core, clock, cancel) =
            (devices.clone(), core.clone(), clock.clone(), cancel.clone());
        supervisor.spawn("device-file", move || {
            let (devices, core, clock, cancel) =
                (devices.clone(), core.clone(), clock.clone(), cancel.clone());
            async move {
                watch_device_file(devices, core, clock, cancel).await;
                Ok(())
            }
        });
    }
    {
        let (auth, cancel) = (auth.clone(), cancel.clone());
        supervisor.spawn("credentials", move || {
            let (auth, cancel) = (auth.clone(), cancel.clone());
            async move {
                watch_credentials(auth, cancel).await;
                Ok(())
            }
        });
    }
    if config.mqtt.enabled {
        // A configuration the bridge cannot use stops the hub here, with
        // a message, rather than failing in a loop later.
        let options = mqtt::options(&config.mqtt).context("the MQTT bridge ([mqtt])")?;
        let (core, clock, cancel, status) = (
            core.clone(),
            clock.clone(),
            cancel.clone(),
            mqtt_status.clone(),
        );
        let mqtt_config = config.mqtt.clone();
        supervisor.spawn("mqtt", move || {
            let run = mqtt::run(
                core.clone(),
                mqtt_config.clone(),
                options.clone(),
                clock.clone(),
                status.clone(),
                cancel.clone(),
            );
            async move { run.await.map_err(|e| format!("{e:#}")) }
        });
    }
    if let (Some(settings), Some(status)) = (cluster, &cluster_status) {
        let (core, clock, status, cancel) =
            (core.clone(), clock.clone(), status.clone(), cancel.clone());
        let clients_gauge = ws_metrics.clone();
        let clients: Arc<dyn Fn() -> u64 + Send + Sync> =
            Arc::new(move || clients_gauge.clients.get().max(0) as u64);
        let device_file = devices.file().clone();
        supervisor.spawn("cluster", move || {
            let run = cluster::run(
                core.clone(),
                settings.clone(),
                clock.clone(),
                status.clone(),
                clients.clone(),
                device_file.clone(),
                cancel.clone(),
            );
            async move { run.await.map_err(|e| format!("{e:#}")) }
        });
    }
    let http_ctx = HttpContext {
        core: core.clone(),
        ws: ws_ctx,
        tasks: tasks.clone(),
        metrics: Arc::new(registry),
        health,
        ingest: ingest_metrics,
        started_mono_ms,
        auth,
        metrics_open: config.metrics.open,
        devices: devices.clone(),
        mqtt: mqtt_status,
        cluster: cluster_status,
    };
    let listener_ctx = ListenerContext {
        http: http_ctx,
        connections,
        tls,
        cancel: cancel.clone(),
    };
    supervisor.spawn_once("http", async move {
        http_server::run(http_listener, listener_ctx).await;
        Ok(())
    });
    // Every listener was bound before `run` and every task is spawned.
    systemd::ready(&serving);
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(systemd::run_watchdog(
            core.clone(),
            interval,
            cancel.clone(),
        ));
    }

    let failure = tokio::select! {
        () = shutdown => None,
        watched = supervisor.watch() => watched.err(),
    };
    match &failure {
        None => tracing::info!("shutting down"),
        Some(why) => tracing::error!("{why}"),
    }
    systemd::stopping();
    cancel.cancel();
    tasks.close();
    let drained = tokio::time::timeout(drain, async {
        supervisor.join_all().await;
        tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown.drain_timeout_ms passed with connections still open; closing them"
        );
    }
    if let Some(history) = history {
        // The last readings are written before the process ends.
        let _ = tokio::task::spawn_blocking(move || history.shutdown()).await;
    }
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}

/// How often the device file is looked at, ms: a device added or removed
/// from the command line takes effect within this.
const DEVICE_FILE_POLL_MS: u64 = 1_000;

async fn watch_device_file(
    devices: Arc<DeviceDirectory>,
    core: Arc<Core>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_millis(DEVICE_FILE_POLL_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {
                let now = clock.now();
                let (keyring, changed) = devices.refresh(now.mono_ms, false);
                if changed {
                    tracing::info!("device file changed; adopted devices and keys reloaded");
                    core.set_device_list(&keyring, now);
                }
            }
        }
    }
}

/// How often the credentials file is looked at when no request comes, so
/// a token revoked from the command line closes its WebSockets soon.
const CREDENTIALS_POLL: Duration = Duration::from_secs(1);

async fn watch_credentials(auth: Auth, cancel: CancellationToken) {
    let mut every = tokio::time::interval(CREDENTIALS_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => auth.refresh(),
        }
    }
}

/// Raises the soft open-file limit to the hard one (every connection is an
/// open file; systemd's default soft limit is 1,024), logs the limit, and
/// warns when it is below what the configured connection caps may need.
fn raise_open_file_limit(config: &HubConfig) {
    let needed = config.open_files_needed();
    let limit = match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match rlimit::increase_nofile_limit(hard) {
            Ok(raised) => {
                tracing::info!(
                    from = soft,
                    to = raised,
                    needed,
                    "open-file limit raised to the hard limit"
                );
                raised
            }
            Err(e) => {
                tracing::warn!(error = %e, limit = soft, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => {
            tracing::info!(
                limit = soft,
                needed,
                "open-file limit (already the hard limit)"
            );
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-file limit is below what the connection caps may need \
             (http.max_connections + control.max_connections + {} for the hub's own files): \
             when they fill up, new connections of every kind, the control channel's too, fail. \
             Lower http.max_connections or control.max_connections, or raise the limit \
             (LimitNOFILE= in the systemd unit, ulimit -n in a shell)",
            crate::config::RESERVED_FILES
        );
    }
}

/// Warns when the dashboard is served in clear to the network.
fn warn_if_exposed(config: &HubConfig, tls: bool) {
    if !tls && !config.http.bind.ip().is_loopback() {
        tracing::warn!(
            bind = %config.http.bind,
            "the dashboard is reachable from the network over plain HTTP; passwords and session \
             cookies cross it in clear — set http.tls_cert_path/http.tls_key_path, see SECURITY.md"
        );
    }
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
