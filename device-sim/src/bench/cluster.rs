//! The cluster scenario (`bench --only cluster`): three hubs sharing one
//! fleet through Redis (`[cluster]`, docs/CLUSTER.md) against a single hub
//! at the same total rate, in the same run. Debian's `redis-server` is
//! started on 127.0.0.1 for the scenario (its own port and directory,
//! nothing persisted) and killed at its end; every repetition empties it
//! (`FLUSHALL`) and gives its cluster a key prefix of its own.
//!
//! At each offered rate, one repetition runs, in turn:
//!
//! * **single**: one hub (cluster off), the devices sending to it, one
//!   WebSocket client subscribed to everything;
//! * **cluster**: hubs "a", "b" and "c" linked through Redis; half the
//!   devices send to A and half to B (each at half the rate, ids that do
//!   not overlap), a client on C and a client on A subscribed to
//!   everything. Every hub's events reach every client only through the
//!   shared stream, so the client on A sees A's own devices after a round
//!   trip through Redis, and the client on C sees every device across
//!   hubs.
//!
//! The clients count what they receive (each datagram once: delivered =
//! distinct datagrams received / sent) and time it as the latency scenario
//! does: the sender records when it sent each datagram (device, seq) and
//! the client looks it up when the message arrives (one clock, loopback).
//! While the devices send, it measures every hub's CPU and Redis's (user +
//! system time of its pid from /proc), and before and after, Redis's
//! `INFO memory` `used_memory` and the shared stream's position (entries
//! appended). The hubs' own figures (`/api/hub`, `/metrics`
//! `sensor_hub_cluster_*`) show what each hub accepted, how many append
//! calls carried its events and whether its link held.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::StreamExt as _;
use serde::Serialize;
use std::fmt::Write as _;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::hub::{cpu_percent, sample_pid, Adoption, HubProcess, ProcSample};
use super::report::{median, quantile};
use super::scenarios::blocking;
use super::server::{LocalServer, ServerSpec};
use super::udp::{send, SendPlan, SendResult, SendTimes};
use super::ws::{subscribe_all, ReadingsMessage, Socket};
use super::BenchConfig;

/// What the cluster scenario runs.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Offered rates, datagrams/s in total (the cluster's devices send
    /// half to hub A and half to hub B), in ascending order.
    pub rates: Vec<u64>,
    /// How long the devices send at each rate.
    pub duration: Duration,
    /// Devices (ids 1..=devices; in the cluster the first half send to A,
    /// the rest to B).
    pub devices: u32,
}

/// How long Redis may take to answer PING.
const REDIS_START: Duration = Duration::from_secs(10);

/// How long the three hubs may take to link to Redis.
const LINK_DEADLINE: Duration = Duration::from_secs(20);

/// Time fresh hubs get (after linking) before the clients connect.
const WARM_UP: Duration = Duration::from_millis(300);

/// After the devices stop, the clients get this long without receiving
/// anything new before they are stopped…
const TAIL_QUIET: Duration = Duration::from_secs(1);
/// …and at most this long in all.
const TAIL_MAX: Duration = Duration::from_secs(10);

/// The share of the sent datagrams the client on C must receive for a
/// rate to count as sustained.
const COMPLETE: f64 = 0.999;

/// Readings in every datagram the sender sends.
const READINGS_PER_DATAGRAM: u64 = 3;

// --- Redis ---------------------------------------------------------------

/// Where a Redis answers, and its password.
#[derive(Debug, Clone)]
struct RedisAddr {
    port: u16,
    password: String,
}

/// A reply of Redis (RESP2).
#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A plain RESP connection to the bench's Redis (a few commands: PING,
/// FLUSHALL, INFO, GET), authenticated.
#[derive(Debug)]
struct RedisConn {
    reader: BufReader<TcpStream>,
}

impl RedisConn {
    fn open(addr: &RedisAddr) -> anyhow::Result<RedisConn> {
        let to = SocketAddr::from(([127, 0, 0, 1], addr.port));
        let stream = TcpStream::connect_timeout(&to, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut conn = RedisConn {
            reader: BufReader::new(stream),
        };
        match conn.cmd(&["AUTH", &addr.password])? {
            Resp::Simple(ok) if ok == "OK" => Ok(conn),
            other => bail!(
                "AUTH answered {other:?} (another server on port {}?)",
                addr.port
            ),
        }
    }

    fn cmd(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        read_reply(&mut self.reader)
    }

    /// `INFO memory` `used_memory`, bytes.
    fn used_memory(&mut self) -> anyhow::Result<u64> {
        let info = self
            .cmd(&["INFO", "memory"])?
            .text()
            .ok_or_else(|| anyhow!("INFO memory did not answer text"))?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no used_memory in INFO memory"))
    }

    /// A key holding an integer (0 when missing).
    fn get_u64(&mut self, key: &str) -> anyhow::Result<u64> {
        match self.cmd(&["GET", key])? {
            Resp::Bulk(None) => Ok(0),
            reply => reply
                .text()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| anyhow!("GET {key} answered {reply:?}")),
        }
    }
}

fn read_reply(r: &mut BufReader<TcpStream>) -> anyhow::Result<Resp> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        bail!("Redis closed the connection");
    }
    let line = String::from_utf8_lossy(&line);
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(kind) = line.chars().next() else {
        bail!("an empty RESP line");
    };
    let rest = &line[1..];
    let int = || -> anyhow::Result<i64> {
        rest.parse()
            .map_err(|_| anyhow!("bad RESP length or integer {rest:?}"))
    };
    Ok(match kind {
        '+' => Resp::Simple(rest.to_string()),
        '-' => Resp::Error(rest.to_string()),
        ':' => Resp::Int(int()?),
        '$' => match usize::try_from(int()?) {
            Err(_) => Resp::Bulk(None),
            Ok(n) => {
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                Resp::Bulk(Some(buf))
            }
        },
        '*' => match usize::try_from(int()?) {
            Err(_) => Resp::Array(None),
            Ok(n) => Resp::Array(Some(
                (0..n)
                    .map(|_| read_reply(r))
                    .collect::<anyhow::Result<_>>()?,
            )),
        },
        other => bail!("unexpected RESP type {other:?}"),
    })
}

/// Debian's `redis-server`, as [`LocalServer`] runs it.
const REDIS: ServerSpec = ServerSpec {
    name: "redis-server",
    path: "/usr/bin/redis-server",
    install_hint: "the cluster scenario runs a real Redis: install Debian's \
     `redis-server` package (`apt-get install redis-server`; scripts/test installs it), \
     or leave the scenario out with --only",
    tag: "redis",
    ready: "answer PING",
    start_timeout: REDIS_START,
    logs: &[("redis.log", ""), ("output.log", "output")],
};

/// Debian's `redis-server` on 127.0.0.1: a password of its own, no
/// snapshots, no append-only file, its log in a temporary directory.
/// Killed, and the directory removed, on drop.
#[derive(Debug)]
pub struct RedisServer {
    addr: RedisAddr,
    server: LocalServer,
}

impl RedisServer {
    /// Starts Redis on a free port (a few tries, in case another program
    /// takes the port between the probe and Redis's bind) and waits until
    /// it answers PING.
    pub fn start() -> anyhow::Result<RedisServer> {
        let (server, addr) = LocalServer::start(REDIS, configure_redis, |_, addr| {
            // The password makes sure the answer is this server's, not
            // another program's on the same port.
            Ok(match RedisConn::open(addr) {
                Ok(mut conn) => conn.cmd(&["PING"])? == Resp::Simple("PONG".into()),
                Err(_) => false,
            })
        })?;
        Ok(RedisServer { addr, server })
    }

    /// The URL the hubs link with.
    fn url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/",
            self.addr.password, self.addr.port
        )
    }

    /// Its CPU and memory now.
    fn sample(&self) -> anyhow::Result<ProcSample> {
        self.server.sample()
    }

    /// Fails, with its log, if it is no longer running.
    fn check(&mut self) -> anyhow::Result<()> {
        self.server.check()
    }

    /// What it logged so far.
    fn log(&self) -> String {
        self.server.log()
    }
}

/// Points `command` at `port` and `dir` with a new password, nothing
/// persisted, its log in `dir` and its standard output in a file beside
/// it; returns where it will answer.
fn configure_redis(command: &mut Command, port: u16, dir: &Path) -> anyhow::Result<RedisAddr> {
    let password = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let output = fs::File::create(dir.join("output.log"))
        .with_context(|| format!("creating {}", dir.join("output.log").display()))?;
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--protected-mode", "yes"])
        .args(["--requirepass", &password])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--daemonize", "no"])
        .args(["--supervised", "no"])
        .stdout(output)
        .stderr(Stdio::null());
    Ok(RedisAddr { port, password })
}

// --- devices ---------------------------------------------------------------

/// One sender's share of the fleet, devices `first..first + devices` at
/// `rate` for `duration`, and the table of when it sent each datagram:
/// room for every datagram of the window and more than a burst of the
/// paced sender ([`super::udp::send`]) past it, so every datagram sent is
/// timed.
fn fleet(first: u32, devices: u32, rate: u64, duration: Duration) -> (SendPlan, Arc<SendTimes>) {
    let plan = SendPlan {
        first_device: first,
        devices,
        rate,
        duration,
    };
    let capacity = (rate as f64 * duration.as_secs_f64()).ceil() as usize + 64;
    (plan, Arc::new(SendTimes::new(&plan, capacity)))
}

// --- WebSocket clients -----------------------------------------------------

/// What one client saw of one sender's devices.
#[derive(Debug, Default)]
struct GroupStats {
    /// Distinct datagrams received.
    unique: u64,
    /// Datagrams received again.
    duplicates: u64,
    /// Send → receive, µs, of each distinct datagram.
    latencies_us: Vec<u64>,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ViewerStats {
    /// Per sender, in the order given.
    groups: Vec<GroupStats>,
    /// Datagrams of no sender's devices.
    strangers: u64,
    /// `resync` messages (the stream's numbering changed under it) and
    /// snapshots after the first.
    resyncs: u64,
    /// How the hub closed it, if it did.
    closed: Option<String>,
}

/// A WebSocket client subscribed to everything, live, that times every
/// datagram of the given senders' devices.
#[derive(Debug)]
struct Viewer {
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<ViewerStats>>,
}

impl Viewer {
    /// Connects, subscribes, waits for the snapshot, then counts in the
    /// background until `stop` turns true (as [`super::ws::Client`]).
    async fn connect(
        hub: &HubProcess,
        logs: Vec<Arc<SendTimes>>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Viewer> {
        let ws = subscribe_all(hub.http, hub.token.as_deref()).await?;
        let received = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(watch_stream(ws, logs, received.clone(), stop));
        Ok(Viewer { received, task })
    }

    /// Datagrams received so far (repeats included).
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    async fn finish(self) -> anyhow::Result<ViewerStats> {
        self.task.await?
    }
}

async fn watch_stream(
    mut ws: Socket,
    logs: Vec<Arc<SendTimes>>,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ViewerStats> {
    let mut stats = ViewerStats {
        groups: logs.iter().map(|_| GroupStats::default()).collect(),
        ..ViewerStats::default()
    };
    let mut seen: Vec<Vec<bool>> = logs.iter().map(|l| vec![false; l.capacity()]).collect();
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            msg = ws.next() => match msg {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    stats.closed = Some(format!("error: {e}"));
                    break;
                }
                None => break,
            },
        };
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(frame) => {
                stats.closed = Some(frame.map_or("closed".into(), |f| {
                    format!("closed {} {}", f.code, f.reason)
                }));
                break;
            }
            _ => continue,
        };
        if text.starts_with(r#"{"type":"resync""#) || text.starts_with(r#"{"type":"snapshot""#) {
            stats.resyncs += 1;
            continue;
        }
        if !text.starts_with(r#"{"type":"readings""#) {
            continue;
        }
        let now = Instant::now();
        let message: ReadingsMessage = serde_json::from_str(&text)?;
        received.fetch_add(message.datagrams.len() as u64, Ordering::Relaxed);
        for d in &message.datagrams {
            let found = logs
                .iter()
                .enumerate()
                .find_map(|(g, l)| l.index(d.device, d.seq).map(|i| (g, i)));
            let Some((g, i)) = found else {
                stats.strangers += 1;
                continue;
            };
            let group = &mut stats.groups[g];
            if std::mem::replace(&mut seen[g][i], true) {
                group.duplicates += 1;
                continue;
            }
            group.unique += 1;
            if let Some(ns) = logs[g].latency_ns_at(i, now) {
                group.latencies_us.push(ns / 1_000);
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(stats)
}

// --- the hubs' figures -----------------------------------------------------

/// The sum of a `/metrics` family's samples (every label set).
fn family(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let key = key.split('{').next()?;
            (key == name).then(|| value.parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

/// A hub's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    accepted: u64,
    readings: u64,
    appends: u64,
    events_shared: u64,
    events_received: u64,
    link_losses: u64,
    evictions: u64,
}

impl Counters {
    fn read(hub: &HubProcess) -> anyhow::Result<Counters> {
        let v = hub.api_hub()?;
        let metrics = hub.get("/metrics")?;
        Ok(Counters {
            accepted: v["datagrams_accepted"].as_u64().unwrap_or(0),
            readings: v["readings_accepted"].as_u64().unwrap_or(0),
            appends: family(&metrics, "sensor_hub_cluster_appends_total"),
            events_shared: family(&metrics, "sensor_hub_cluster_events_shared_total"),
            events_received: family(&metrics, "sensor_hub_cluster_events_received_total"),
            link_losses: family(&metrics, "sensor_hub_cluster_link_losses_total"),
            evictions: family(&metrics, "sensor_hub_ws_evictions_total"),
        })
    }

    fn since(&self, before: &Counters) -> Counters {
        Counters {
            accepted: self.accepted.saturating_sub(before.accepted),
            readings: self.readings.saturating_sub(before.readings),
            appends: self.appends.saturating_sub(before.appends),
            events_shared: self.events_shared.saturating_sub(before.events_shared),
            events_received: self.events_received.saturating_sub(before.events_received),
            link_losses: self.link_losses.saturating_sub(before.link_losses),
            evictions: self.evictions.saturating_sub(before.evictions),
        }
    }
}

async fn counters(hubs: &[Arc<HubProcess>]) -> anyhow::Result<Vec<Counters>> {
    let hubs = hubs.to_vec();
    blocking(move || hubs.iter().map(|h| Counters::read(h)).collect()).await
}

/// Waits until every hub's cluster link is up.
async fn linked(hubs: &[Arc<HubProcess>], redis: &RedisServer) -> anyhow::Result<()> {
    let deadline = Instant::now() + LINK_DEADLINE;
    loop {
        let all = hubs.to_vec();
        let states: Vec<serde_json::Value> = blocking(move || {
            all.iter()
                .map(|h| Ok(h.api_hub()?["cluster"].clone()))
                .collect()
        })
        .await?;
        if states.iter().all(|c| c["link"] == "up") {
            return Ok(());
        }
        if let Some(c) = states.iter().find(|c| c.is_null()) {
            bail!("a hub's /api/hub has no `cluster` ({c}): this hub has no cluster mode");
        }
        if Instant::now() > deadline {
            let states: Vec<String> = states
                .iter()
                .map(|c| format!("{}: {} ({})", c["hub"], c["link"], c["error"]))
                .collect();
            bail!(
                "the hubs did not link to Redis within {LINK_DEADLINE:?}: {}; Redis's log:\n{}",
                states.join(", "),
                redis.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After the devices stopped: the hubs' sockets drained, then the clients
/// get what is on its way (until each has everything sent, or nothing new
/// came for [`TAIL_QUIET`], at most [`TAIL_MAX`]).
async fn tail(hubs: &[Arc<HubProcess>], viewers: &[&Viewer], sent: u64) -> anyhow::Result<()> {
    for hub in hubs {
        let hub = hub.clone();
        blocking(move || hub.settle()).await?;
    }
    let start = Instant::now();
    let mut last: Vec<u64> = viewers.iter().map(|v| v.received()).collect();
    let mut quiet_since = Instant::now();
    loop {
        if last.iter().all(|&n| n >= sent) || start.elapsed() > TAIL_MAX {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: Vec<u64> = viewers.iter().map(|v| v.received()).collect();
        if now != last {
            quiet_since = Instant::now();
            last = now;
        } else if quiet_since.elapsed() >= TAIL_QUIET {
            return Ok(());
        }
    }
}

fn percentiles(mut latencies: Vec<u64>) -> (u64, u64) {
    latencies.sort_unstable();
    (quantile(&latencies, 0.5), quantile(&latencies, 0.99))
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Percent of one core per 1,000 readings/s.
fn per_1k(cpu_pct: f64, readings_per_s: f64) -> f64 {
    if readings_per_s > 0.0 {
        cpu_pct / (readings_per_s / 1_000.0)
    } else {
        0.0
    }
}

/// The whole machine's CPU time (all cores), busy and in all, in ticks
/// (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    fn now() -> anyhow::Result<MachineCpu> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // inside user already).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok(MachineCpu {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Percent of all cores busy since `before`.
    fn busy_pct(&self, before: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            0.0
        } else {
            self.busy.saturating_sub(before.busy) as f64 * 100.0 / total as f64
        }
    }
}

/// The machine's and this process's (senders and clients) CPU at one
/// moment.
#[derive(Debug, Clone, Copy)]
struct Load {
    machine: MachineCpu,
    bench: ProcSample,
}

impl Load {
    fn now() -> anyhow::Result<Load> {
        Ok(Load {
            machine: MachineCpu::now()?,
            bench: sample_pid(std::process::id())?,
        })
    }

    /// Machine busy (% of all cores) and bench CPU (% of one core) since
    /// `before`.
    fn since(&self, before: &Load, ticks: u64) -> (f64, f64) {
        (
            self.machine.busy_pct(&before.machine),
            cpu_percent(&before.bench, &self.bench, ticks),
        )
    }
}

async fn start_hub(
    config: &BenchConfig,
    plan: &ClusterPlan,
    env: Vec<(String, String)>,
) -> anyhow::Result<Arc<HubProcess>> {
    let bin = config.hub_bin.clone();
    let storage = config.storage;
    let adoption = Adoption {
        devices: plan.devices,
        key_seed: None,
    };
    Ok(Arc::new(
        blocking(move || HubProcess::start_with_env(&bin, storage, adoption, &env)).await?,
    ))
}

// --- one repetition --------------------------------------------------------

/// What the single hub did in one repetition.
#[derive(Debug, Clone)]
struct SingleRun {
    sent_per_s: f64,
    accepted_per_s: f64,
    readings_per_s: f64,
    delivered: f64,
    p50_us: u64,
    p99_us: u64,
    hub_cpu_pct: f64,
    machine_busy_pct: f64,
    bench_cpu_pct: f64,
}

async fn single_once(
    config: &BenchConfig,
    plan: &ClusterPlan,
    rate: u64,
    ticks: u64,
) -> anyhow::Result<SingleRun> {
    let env = vec![("SENSOR_HUB__CLUSTER__ENABLED".into(), "false".into())];
    let hub = start_hub(config, plan, env).await?;
    tokio::time::sleep(WARM_UP).await;
    let (send_plan, log) = fleet(1, plan.devices, rate, plan.duration);
    let (stop, stopped) = watch::channel(false);
    let viewer = Viewer::connect(&hub, vec![log.clone()], stopped).await?;
    let c0 = counters(std::slice::from_ref(&hub)).await?[0];
    let s0 = hub.sample()?;
    let l0 = Load::now()?;
    let (udp, times) = (hub.udp, log.clone());
    let SendResult { sent, elapsed } =
        blocking(move || Ok(send(udp, send_plan, Some(&times))?)).await?;
    let s1 = hub.sample()?;
    let (machine_busy_pct, bench_cpu_pct) = Load::now()?.since(&l0, ticks);
    tail(std::slice::from_ref(&hub), &[&viewer], sent).await?;
    let c = counters(std::slice::from_ref(&hub)).await?[0].since(&c0);
    let _ = stop.send(true);
    let mut stats = viewer.finish().await?;
    let group = std::mem::take(&mut stats.groups[0]);
    let (p50_us, p99_us) = percentiles(group.latencies_us);
    let secs = elapsed.as_secs_f64();
    Ok(SingleRun {
        sent_per_s: sent as f64 / secs,
        accepted_per_s: c.accepted as f64 / secs,
        readings_per_s: c.readings as f64 / secs,
        delivered: fraction(group.unique, sent),
        p50_us,
        p99_us,
        hub_cpu_pct: cpu_percent(&s0, &s1, ticks),
        machine_busy_pct,
        bench_cpu_pct,
    })
}

/// What the cluster did in one repetition.
#[derive(Debug, Clone)]
struct ClusterRun {
    sent_per_s: f64,
    accepted_per_s: f64,
    readings_per_s: f64,
    c_delivered: f64,
    c_of_accepted: f64,
    c_p50_us: u64,
    c_p99_us: u64,
    a_delivered: f64,
    a_own_p50_us: u64,
    a_own_p99_us: u64,
    a_cross_p50_us: u64,
    a_cross_p99_us: u64,
    hub_cpu_pct: [f64; 3],
    redis_cpu_pct: f64,
    machine_busy_pct: f64,
    bench_cpu_pct: f64,
    redis_used_memory: u64,
    redis_growth: i64,
    entries: u64,
    appends: u64,
    events_shared: u64,
    events_received_c: u64,
    secs: f64,
    link_losses: u64,
    evictions: u64,
    resyncs: u64,
    closed: Option<String>,
}

async fn cluster_once(
    config: &BenchConfig,
    plan: &ClusterPlan,
    rate: u64,
    ticks: u64,
    redis: &mut RedisServer,
    run: usize,
) -> anyhow::Result<ClusterRun> {
    redis.check()?;
    let addr = redis.addr.clone();
    blocking(move || {
        let mut conn = RedisConn::open(&addr)?;
        match conn.cmd(&["FLUSHALL"])? {
            Resp::Simple(ok) if ok == "OK" => Ok(()),
            other => bail!("FLUSHALL answered {other:?}"),
        }
    })
    .await?;
    let prefix = format!("device-sim-bench-{}-{rate}-{run}", std::process::id());
    let env = |name: &str| -> Vec<(String, String)> {
        [
            ("ENABLED", "true".to_string()),
            ("REDIS_URL", redis.url()),
            ("HUB_NAME", name.to_string()),
            ("KEY_PREFIX", prefix.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SENSOR_HUB__CLUSTER__{k}"), v))
        .collect()
    };
    let (a, b, c) = tokio::join!(
        start_hub(config, plan, env("a")),
        start_hub(config, plan, env("b")),
        start_hub(config, plan, env("c")),
    );
    let hubs = [a?, b?, c?];
    linked(&hubs, redis).await?;
    tokio::time::sleep(WARM_UP).await;
    let half = (plan.devices / 2).max(1);
    let fleets = [
        fleet(1, half, rate / 2, plan.duration),
        fleet(
            half + 1,
            plan.devices.saturating_sub(half).max(1),
            rate - rate / 2,
            plan.duration,
        ),
    ];
    let logs = fleets.clone().map(|(_, log)| log);
    let (stop, stopped) = watch::channel(false);
    let on_c = Viewer::connect(&hubs[2], logs.to_vec(), stopped.clone())
        .await
        .context("the client on hub C")?;
    let on_a = Viewer::connect(&hubs[0], logs.to_vec(), stopped)
        .await
        .context("the client on hub A")?;
    let addr = redis.addr.clone();
    let position_key = format!("{prefix}:position");
    let redis_figures = move || -> anyhow::Result<(u64, u64)> {
        let mut conn = RedisConn::open(&addr)?;
        Ok((conn.used_memory()?, conn.get_u64(&position_key)?))
    };
    let (memory0, position0) = blocking(redis_figures.clone()).await?;
    let c0 = counters(&hubs).await?;
    let h0 = hubs
        .iter()
        .map(|h| h.sample())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r0 = redis.sample()?;
    let l0 = Load::now()?;
    let senders: Vec<_> = fleets
        .into_iter()
        .zip(&hubs)
        .map(|((send_plan, log), hub)| {
            let udp = hub.udp;
            tokio::task::spawn_blocking(move || send(udp, send_plan, Some(&log)))
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender
            .await?
            .context("sending the devices' datagrams")?
            .sent;
    }
    let h1 = hubs
        .iter()
        .map(|h| h.sample())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r1 = redis.sample()?;
    let (machine_busy_pct, bench_cpu_pct) = Load::now()?.since(&l0, ticks);
    tail(&hubs[..2], &[&on_c, &on_a], sent).await?;
    let (memory1, position1) = blocking(redis_figures).await?;
    let c1 = counters(&hubs).await?;
    let d: Vec<Counters> = c1.iter().zip(&c0).map(|(n, o)| n.since(o)).collect();
    let _ = stop.send(true);
    let on_c = on_c.finish().await?;
    let mut on_a = on_a.finish().await?;
    redis.check()?;
    let secs = h1[0].at.duration_since(h0[0].at).as_secs_f64();
    let unique = |s: &ViewerStats| s.groups.iter().map(|g| g.unique).sum::<u64>();
    let all_latencies = |s: &ViewerStats| -> Vec<u64> {
        s.groups
            .iter()
            .flat_map(|g| g.latencies_us.iter().copied())
            .collect()
    };
    let (c_p50_us, c_p99_us) = percentiles(all_latencies(&on_c));
    let (a_own_p50_us, a_own_p99_us) =
        percentiles(std::mem::take(&mut on_a.groups[0].latencies_us));
    let (a_cross_p50_us, a_cross_p99_us) =
        percentiles(std::mem::take(&mut on_a.groups[1].latencies_us));
    let cpu = |i: usize| cpu_percent(&h0[i], &h1[i], ticks);
    Ok(ClusterRun {
        sent_per_s: sent as f64 / secs,
        accepted_per_s: (d[0].accepted + d[1].accepted) as f64 / secs,
        readings_per_s: (d[0].readings + d[1].readings) as f64 / secs,
        c_delivered: fraction(unique(&on_c), sent),
        c_of_accepted: fraction(unique(&on_c), d[0].accepted + d[1].accepted),
        c_p50_us,
        c_p99_us,
        a_delivered: fraction(unique(&on_a), sent),
        a_own_p50_us,
        a_own_p99_us,
        a_cross_p50_us,
        a_cross_p99_us,
        hub_cpu_pct: [cpu(0), cpu(1), cpu(2)],
        redis_cpu_pct: cpu_percent(&r0, &r1, ticks),
        machine_busy_pct,
        bench_cpu_pct,
        redis_used_memory: memory1,
        redis_growth: memory1 as i64 - memory0 as i64,
        entries: position1.saturating_sub(position0),
        appends: d.iter().map(|c| c.appends).sum(),
        events_shared: d.iter().map(|c| c.events_shared).sum(),
        events_received_c: d[2].events_received,
        secs,
        link_losses: d.iter().map(|c| c.link_losses).sum(),
        evictions: d.iter().map(|c| c.evictions).sum(),
        resyncs: on_c.resyncs + on_a.resyncs,
        closed: on_c
            .closed
            .map(|c| format!("client on C: {c}"))
            .or(on_a.closed.map(|c| format!("client on A: {c}"))),
    })
}

// --- results -----------------------------------------------------------------

/// The cluster scenario's results (medians of the repetitions).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterResult {
    /// Devices (in the cluster, half send to hub A, half to hub B).
    pub devices: u32,
    /// How long the devices sent at each rate, s.
    pub window_s: f64,
    /// One entry per offered rate.
    pub points: Vec<ClusterPoint>,
    /// The highest offered rate (datagrams/s) at which the client on hub C
    /// received at least 99.9 % of the datagrams sent, at it and at every
    /// lower rate measured; none: not even at the lowest.
    pub max_complete_per_s: Option<u64>,
}

/// One offered rate: the single hub and the cluster, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPoint {
    /// Offered datagrams/s in total.
    pub offered_per_s: u64,
    /// Offered readings/s (three per datagram).
    pub offered_readings_per_s: u64,
    /// One hub, cluster off, one client.
    pub single: SingleHubFigures,
    /// Three hubs through Redis.
    pub cluster: ClusterFigures,
    /// Every repetition's main figures, in order.
    pub runs: Vec<RunSummary>,
}

/// One repetition at one rate, the figures behind the medians.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Single hub: share of the sent datagrams its client received.
    pub single_delivered: f64,
    /// Single hub: latency, 99th percentile, µs.
    pub single_p99_us: u64,
    /// Single hub: machine busy, percent of all cores.
    pub single_machine_busy_pct: f64,
    /// Cluster: datagrams/s sent.
    pub sent_per_s: f64,
    /// Cluster: datagrams/s hubs A and B accepted.
    pub accepted_per_s: f64,
    /// Cluster: share of the sent datagrams the client on C received.
    pub c_delivered: f64,
    /// Cluster: the same of the accepted datagrams.
    pub c_of_accepted: f64,
    /// Cluster: latency on C, median, µs.
    pub c_p50_us: u64,
    /// Cluster: latency on C, 99th percentile, µs.
    pub c_p99_us: u64,
    /// Cluster: machine busy, percent of all cores.
    pub machine_busy_pct: f64,
}

/// The single hub at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct SingleHubFigures {
    /// Datagrams/s the sender achieved.
    pub sent_per_s: f64,
    /// Datagrams/s the hub accepted.
    pub accepted_per_s: f64,
    /// Readings/s the hub accepted.
    pub readings_per_s: f64,
    /// Share of the sent datagrams its client received.
    pub delivered: f64,
    /// Device → client latency, median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Hub CPU, percent of one core.
    pub hub_cpu_pct: f64,
    /// Hub CPU per 1,000 readings/s accepted, percent of one core.
    pub hub_cpu_pct_per_1k_readings: f64,
    /// The whole machine busy while sending, percent of all cores.
    pub machine_busy_pct: f64,
    /// The bench process (sender, client) CPU, percent of one core.
    pub bench_cpu_pct: f64,
}

/// The cluster at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    /// Datagrams/s the two senders achieved together.
    pub sent_per_s: f64,
    /// Datagrams/s hubs A and B accepted.
    pub accepted_per_s: f64,
    /// Readings/s hubs A and B accepted.
    pub readings_per_s: f64,
    /// Share of the sent datagrams (both hubs' devices) the client on C
    /// received.
    pub c_delivered: f64,
    /// The same of the datagrams hubs A and B accepted (what the cluster
    /// itself lost: the rest never got past a hub's UDP socket).
    pub c_of_accepted: f64,
    /// Latency on C (every datagram crossed hubs), median, µs.
    pub c_p50_us: u64,
    /// 99th percentile, µs.
    pub c_p99_us: u64,
    /// Share of the sent datagrams the client on A received.
    pub a_delivered: f64,
    /// Latency on A of A's own devices (the round trip through Redis),
    /// median, µs.
    pub a_own_p50_us: u64,
    /// 99th percentile, µs.
    pub a_own_p99_us: u64,
    /// Latency on A of B's devices (across hubs), median, µs.
    pub a_cross_p50_us: u64,
    /// 99th percentile, µs.
    pub a_cross_p99_us: u64,
    /// CPU of hubs A, B and C, percent of one core.
    pub hub_cpu_pct: [f64; 3],
    /// The three hubs' CPU together per 1,000 readings/s accepted.
    pub hubs_cpu_pct_per_1k_readings: f64,
    /// redis-server CPU (user + system), percent of one core.
    pub redis_cpu_pct: f64,
    /// The same per 1,000 readings/s accepted.
    pub redis_cpu_pct_per_1k_readings: f64,
    /// The whole machine busy while sending, percent of all cores.
    pub machine_busy_pct: f64,
    /// The bench process (senders, clients) CPU, percent of one core.
    pub bench_cpu_pct: f64,
    /// Redis `used_memory` at the end, bytes.
    pub redis_used_memory_bytes: u64,
    /// Redis `used_memory` gained over the run per 1,000 readings
    /// accepted, bytes (what 1,000 readings/s add per second until the
    /// stream reaches `cluster.stream_max_len`).
    pub redis_bytes_per_1k_readings: f64,
    /// Entries appended to the shared stream per second (events: a batch
    /// of datagrams each, plus the hubs' holdings).
    pub entries_per_s: f64,
    /// Datagrams accepted per entry appended.
    pub datagrams_per_entry: f64,
    /// Append calls (script calls, a batch of events each) per second,
    /// hubs together.
    pub appends_per_s: f64,
    /// Events per append call.
    pub events_per_append: f64,
    /// Entries hub C applied per second (`events_received`).
    pub c_events_received_per_s: f64,
    /// Links to Redis lost, hubs together (largest of the runs).
    pub link_losses: u64,
    /// WebSocket clients the hubs closed (largest of the runs).
    pub ws_evictions: u64,
    /// Resyncs and extra snapshots the clients got (largest of the runs).
    pub resyncs: u64,
    /// How a client was closed, in a run where one was.
    pub client_closed: Option<String>,
}

impl ClusterPoint {
    fn from_runs(rate: u64, single: &[SingleRun], cluster: &[ClusterRun]) -> ClusterPoint {
        let s = |f: fn(&SingleRun) -> f64| median(single.iter().map(f).collect());
        let c = |f: &dyn Fn(&ClusterRun) -> f64| median(cluster.iter().map(f).collect());
        let max = |f: fn(&ClusterRun) -> u64| cluster.iter().map(f).max().unwrap_or(0);
        let per_run = |r: &ClusterRun, n: u64| n as f64 / r.secs.max(1e-9);
        let single_cpu = s(|r| r.hub_cpu_pct);
        let single_readings = s(|r| r.readings_per_s);
        let readings = c(&|r| r.readings_per_s);
        let hubs_cpu = c(&|r| r.hub_cpu_pct.iter().sum());
        let redis_cpu = c(&|r| r.redis_cpu_pct);
        ClusterPoint {
            offered_per_s: rate,
            offered_readings_per_s: rate * READINGS_PER_DATAGRAM,
            single: SingleHubFigures {
                sent_per_s: s(|r| r.sent_per_s),
                accepted_per_s: s(|r| r.accepted_per_s),
                readings_per_s: single_readings,
                delivered: s(|r| r.delivered),
                p50_us: s(|r| r.p50_us as f64) as u64,
                p99_us: s(|r| r.p99_us as f64) as u64,
                hub_cpu_pct: single_cpu,
                hub_cpu_pct_per_1k_readings: per_1k(single_cpu, single_readings),
                machine_busy_pct: s(|r| r.machine_busy_pct),
                bench_cpu_pct: s(|r| r.bench_cpu_pct),
            },
            cluster: ClusterFigures {
                sent_per_s: c(&|r| r.sent_per_s),
                accepted_per_s: c(&|r| r.accepted_per_s),
                readings_per_s: readings,
                c_delivered: c(&|r| r.c_delivered),
                c_of_accepted: c(&|r| r.c_of_accepted),
                c_p50_us: c(&|r| r.c_p50_us as f64) as u64,
                c_p99_us: c(&|r| r.c_p99_us as f64) as u64,
                a_delivered: c(&|r| r.a_delivered),
                a_own_p50_us: c(&|r| r.a_own_p50_us as f64) as u64,
                a_own_p99_us: c(&|r| r.a_own_p99_us as f64) as u64,
                a_cross_p50_us: c(&|r| r.a_cross_p50_us as f64) as u64,
                a_cross_p99_us: c(&|r| r.a_cross_p99_us as f64) as u64,
                hub_cpu_pct: [
                    c(&|r| r.hub_cpu_pct[0]),
                    c(&|r| r.hub_cpu_pct[1]),
                    c(&|r| r.hub_cpu_pct[2]),
                ],
                hubs_cpu_pct_per_1k_readings: per_1k(hubs_cpu, readings),
                redis_cpu_pct: redis_cpu,
                redis_cpu_pct_per_1k_readings: per_1k(redis_cpu, readings),
                machine_busy_pct: c(&|r| r.machine_busy_pct),
                bench_cpu_pct: c(&|r| r.bench_cpu_pct),
                redis_used_memory_bytes: c(&|r| r.redis_used_memory as f64) as u64,
                redis_bytes_per_1k_readings: c(&|r| {
                    let readings = r.readings_per_s * r.secs;
                    if readings > 0.0 {
                        r.redis_growth as f64 / readings * 1_000.0
                    } else {
                        0.0
                    }
                }),
                entries_per_s: c(&|r| per_run(r, r.entries)),
                datagrams_per_entry: c(&|r| {
                    if r.entries > 0 {
                        r.accepted_per_s * r.secs / r.entries as f64
                    } else {
                        0.0
                    }
                }),
                appends_per_s: c(&|r| per_run(r, r.appends)),
                events_per_append: c(&|r| fraction(r.events_shared, r.appends)),
                c_events_received_per_s: c(&|r| per_run(r, r.events_received_c)),
                link_losses: max(|r| r.link_losses),
                ws_evictions: max(|r| r.evictions),
                resyncs: max(|r| r.resyncs),
                client_closed: cluster.iter().find_map(|r| r.closed.clone()),
            },
            runs: single
                .iter()
                .zip(cluster)
                .map(|(s, c)| RunSummary {
                    single_delivered: s.delivered,
                    single_p99_us: s.p99_us,
                    single_machine_busy_pct: s.machine_busy_pct,
                    sent_per_s: c.sent_per_s,
                    accepted_per_s: c.accepted_per_s,
                    c_delivered: c.c_delivered,
                    c_of_accepted: c.c_of_accepted,
                    c_p50_us: c.c_p50_us,
                    c_p99_us: c.c_p99_us,
                    machine_busy_pct: c.machine_busy_pct,
                })
                .collect(),
        }
    }
}

/// The highest offered rate at which the client on C received at least
/// [`COMPLETE`] of the sent datagrams (median of the runs), there and at
/// every lower rate.
fn max_complete(points: &[ClusterPoint]) -> Option<u64> {
    points
        .iter()
        .take_while(|p| p.cluster.c_delivered >= COMPLETE)
        .map(|p| p.offered_per_s)
        .last()
}

/// Runs the scenario: at every rate, `runs` repetitions of the single hub
/// and the cluster in turn (so both see the same machine), against one
/// Redis; medians.
pub async fn run(
    config: &BenchConfig,
    plan: &ClusterPlan,
    ticks: u64,
) -> anyhow::Result<ClusterResult> {
    let mut redis = blocking(RedisServer::start)
        .await
        .context("starting redis-server for the cluster scenario")?;
    let mut points = Vec::new();
    for &rate in &plan.rates {
        let (mut single, mut cluster) = (Vec::new(), Vec::new());
        for run in 0..config.runs {
            single.push(
                single_once(config, plan, rate, ticks)
                    .await
                    .with_context(|| format!("cluster scenario, single hub at {rate}/s"))?,
            );
            cluster.push(
                cluster_once(config, plan, rate, ticks, &mut redis, run)
                    .await
                    .with_context(|| format!("cluster scenario, three hubs at {rate}/s"))?,
            );
        }
        points.push(ClusterPoint::from_runs(rate, &single, &cluster));
    }
    let max_complete_per_s = max_complete(&points);
    Ok(ClusterResult {
        devices: plan.devices,
        window_s: plan.duration.as_secs_f64(),
        points,
        max_complete_per_s,
    })
}

impl ClusterResult {
    /// Its part of the report's tables.
    pub(super) fn table(&self, o: &mut String) {
        let pct = |f: f64| format!("{:.2}%", f * 100.0);
        let _ = writeln!(
            o,
            "\ncluster: 3 hubs through a local Redis vs 1 hub ({} devices, {:.0} s per rate; \
             devices -> hubs A and B, half each)",
            self.devices, self.window_s
        );
        let _ = writeln!(
            o,
            "delivered = distinct datagrams received / sent (of acc.: / accepted by the hubs); \
             latency device -> client, µs"
        );
        let _ = writeln!(
            o,
            "{:>18} | {:>24} | {:>33} | {:>24} {:>13}",
            "offered",
            "single hub, 1 client",
            "client on C (cross-hub)",
            "client on A, A's devices",
            "B's devices"
        );
        let _ = writeln!(
            o,
            "{:>7} {:>10} | {:>8} {:>7} {:>7} | {:>8} {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} {:>6} {:>6}",
            "dg/s",
            "readings/s",
            "deliv.",
            "p50",
            "p99",
            "deliv.",
            "of acc.",
            "p50",
            "p99",
            "deliv.",
            "p50",
            "p99",
            "p50",
            "p99"
        );
        for p in &self.points {
            let (s, c) = (&p.single, &p.cluster);
            let _ = writeln!(
                o,
                "{:>7} {:>10} | {:>8} {:>7} {:>7} | {:>8} {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} {:>6} {:>6}",
                p.offered_per_s,
                p.offered_readings_per_s,
                pct(s.delivered),
                s.p50_us,
                s.p99_us,
                pct(c.c_delivered),
                pct(c.c_of_accepted),
                c.c_p50_us,
                c.c_p99_us,
                pct(c.a_delivered),
                c.a_own_p50_us,
                c.a_own_p99_us,
                c.a_cross_p50_us,
                c.a_cross_p99_us
            );
        }
        let _ = writeln!(
            o,
            "\nCPU while sending, % of one core (/1k: per 1,000 readings/s accepted; \
             machine: % of all cores busy; bench: this process, senders and clients)"
        );
        let _ = writeln!(
            o,
            "{:>7} | {:>6} {:>6} {:>7} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6}",
            "dg/s",
            "1 hub",
            "/1k",
            "machine",
            "bench",
            "hub a",
            "hub b",
            "hub c",
            "/1k",
            "redis",
            "/1k",
            "machine",
            "bench"
        );
        for p in &self.points {
            let (s, c) = (&p.single, &p.cluster);
            let _ = writeln!(
                o,
                "{:>7} | {:>5.1}% {:>6.3} {:>6.0}% {:>5.0}% | {:>5.1}% {:>5.1}% {:>5.1}% {:>6.3} {:>5.1}% {:>6.3} {:>6.0}% {:>5.0}%",
                p.offered_per_s,
                s.hub_cpu_pct,
                s.hub_cpu_pct_per_1k_readings,
                s.machine_busy_pct,
                s.bench_cpu_pct,
                c.hub_cpu_pct[0],
                c.hub_cpu_pct[1],
                c.hub_cpu_pct[2],
                c.hubs_cpu_pct_per_1k_readings,
                c.redis_cpu_pct,
                c.redis_cpu_pct_per_1k_readings,
                c.machine_busy_pct,
                c.bench_cpu_pct
            );
        }
        let _ = writeln!(
            o,
            "\nthe cluster's traffic (sent, accepted: datagrams/s; redis mem: used_memory at the end; \
             B/1k: bytes it gained per 1,000 readings; entries: stream entries appended)"
        );
        let _ = writeln!(
            o,
            "{:>7} | {:>7} {:>8} | {:>9} {:>6} | {:>9} {:>8} {:>9} {:>7} {:>6}",
            "dg/s",
            "sent",
            "accepted",
            "redis mem",
            "B/1k",
            "entries/s",
            "dg/entry",
            "appends/s",
            "ev/app",
            "losses"
        );
        for p in &self.points {
            let c = &p.cluster;
            let _ = writeln!(
                o,
                "{:>7} | {:>7.0} {:>8.0} | {:>5.1} MiB {:>6.0} | {:>9.0} {:>8.1} {:>9.0} {:>7.2} {:>6}",
                p.offered_per_s,
                c.sent_per_s,
                c.accepted_per_s,
                c.redis_used_memory_bytes as f64 / (1024.0 * 1024.0),
                c.redis_bytes_per_1k_readings,
                c.entries_per_s,
                c.datagrams_per_entry,
                c.appends_per_s,
                c.events_per_append,
                c.link_losses
            );
        }
        let _ = writeln!(
            o,
            "\neach run (single hub: delivered, p99 µs, machine busy | cluster: sent/s, accepted/s, \
             on C delivered, of accepted, p50 µs, p99 µs, machine busy)"
        );
        for p in &self.points {
            for (i, r) in p.runs.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{:>7} #{} | {:>8} {:>7} {:>4.0}% | {:>7.0} {:>7.0} {:>8} {:>8} {:>7} {:>7} {:>4.0}%",
                    p.offered_per_s,
                    i + 1,
                    pct(r.single_delivered),
                    r.single_p99_us,
                    r.single_machine_busy_pct,
                    r.sent_per_s,
                    r.accepted_per_s,
                    pct(r.c_delivered),
                    pct(r.c_of_accepted),
                    r.c_p50_us,
                    r.c_p99_us,
                    r.machine_busy_pct
                );
            }
        }
        for p in &self.points {
            let c = &p.cluster;
            if c.ws_evictions > 0 || c.resyncs > 0 || c.client_closed.is_some() {
                let _ = writeln!(
                    o,
                    "at {}/s: {} WebSocket eviction(s), {} resync(s){}",
                    p.offered_per_s,
                    c.ws_evictions,
                    c.resyncs,
                    c.client_closed
                        .as_ref()
                        .map_or(String::new(), |w| format!("; {w}"))
                );
            }
        }
        let _ = match self.max_complete_per_s {
            Some(rate) => writeln!(
                o,
                "highest offered rate with >= 99.9 % of the sent datagrams on C: \
                 {rate} datagrams/s ({} readings/s)",
                rate * READINGS_PER_DATAGRAM
            ),
            None => writeln!(
                o,
                "the client on C received < 99.9 % of the sent datagrams even at the lowest rate"
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_send_log_indexes_only_its_own_devices() {
        let (_, log) = fleet(51, 50, 1_000, Duration::from_secs(1));
        assert_eq!(log.index(50, 0), None);
        assert_eq!(log.index(51, 0), Some(0));
        assert_eq!(log.index(100, 0), Some(49));
        assert_eq!(log.index(101, 0), None);
        assert_eq!(log.index(52, 2), Some(101));
        assert_eq!(log.index(51, 1_000), None, "beyond what it can send");
    }

    fn point(rate: u64, c_delivered: f64) -> ClusterPoint {
        let single = SingleRun {
            sent_per_s: rate as f64,
            accepted_per_s: rate as f64,
            readings_per_s: 3.0 * rate as f64,
            delivered: 1.0,
            p50_us: 300,
            p99_us: 1_000,
            hub_cpu_pct: 10.0,
            machine_busy_pct: 20.0,
            bench_cpu_pct: 5.0,
        };
        let cluster = ClusterRun {
            sent_per_s: rate as f64,
            accepted_per_s: rate as f64,
            readings_per_s: 3.0 * rate as f64,
            c_delivered,
            c_of_accepted: 1.0,
            c_p50_us: 1_200,
            c_p99_us: 5_000,
            a_delivered: c_delivered,
            a_own_p50_us: 1_100,
            a_own_p99_us: 4_000,
            a_cross_p50_us: 1_300,
            a_cross_p99_us: 6_000,
            hub_cpu_pct: [12.0, 10.0, 8.0],
            redis_cpu_pct: 4.0,
            machine_busy_pct: 40.0,
            bench_cpu_pct: 9.0,
            redis_used_memory: 4 << 20,
            redis_growth: 3 << 20,
            entries: 7_000,
            appends: 4_000,
            events_shared: 7_000,
            events_received_c: 7_000,
            secs: 10.0,
            link_losses: 0,
            evictions: 0,
            resyncs: 0,
            closed: None,
        };
        ClusterPoint::from_runs(rate, &[single], &[cluster])
    }

    #[test]
    fn the_highest_complete_rate_and_the_tables() {
        let points = vec![
            point(1_000, 1.0),
            point(10_000, 0.9995),
            point(50_000, 0.98),
        ];
        let max_complete_per_s = max_complete(&points);
        assert_eq!(max_complete_per_s, Some(10_000));
        let result = ClusterResult {
            devices: 1_000,
            window_s: 10.0,
            points,
            max_complete_per_s,
        };
        let mut table = String::new();
        result.table(&mut table);
        for row in [
            "cluster: 3 hubs",
            "98.00%",
            "99.95%",
            "10000 datagrams/s",
            "  50000 #1",
        ] {
            assert!(table.contains(row), "{row} in:\n{table}");
        }
        let v = serde_json::to_value(&result).unwrap_or_default();
        let c = &v["points"][0]["cluster"];
        for key in [
            "c_delivered",
            "c_p99_us",
            "a_own_p50_us",
            "redis_cpu_pct_per_1k_readings",
            "redis_bytes_per_1k_readings",
        ] {
            assert!(c[key].is_number(), "cluster.{key}");
        }
        assert_eq!(c["hub_cpu_pct"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["points"][0]["runs"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["max_complete_per_s"], 10_000);
    }

    #[test]
    fn metrics_families_sum_their_samples() {
        let text = "# HELP x\n# TYPE x counter\n\
                    sensor_hub_ws_evictions_total{reason=\"slow\"} 2\n\
                    sensor_hub_ws_evictions_total{reason=\"ping\"} 3\n\
                    sensor_hub_cluster_appends_total 17\n";
        assert_eq!(family(text, "sensor_hub_ws_evictions_total"), 5);
        assert_eq!(family(text, "sensor_hub_cluster_appends_total"), 17);
        assert_eq!(family(text, "sensor_hub_cluster_link_up"), 0);
    }

    #[test]
    fn resp_replies_parse() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"+OK\r\n$5\r\nhello\r\n$-1\r\n*2\r\n:7\r\n-ERR no\r\n");
            }
        });
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut r = BufReader::new(stream);
        let mut next = || read_reply(&mut r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next(), Resp::Simple("OK".into()));
        assert_eq!(next(), Resp::Bulk(Some(b"hello".to_vec())));
        assert_eq!(next(), Resp::Bulk(None));
        assert_eq!(
            next(),
            Resp::Array(Some(vec![Resp::Int(7), Resp::Error("ERR no".into())]))
        );
        let _ = server.join();
    }
}
