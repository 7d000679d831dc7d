//! The benchmark scenarios. Each point starts a fresh hub process, so its
//! peak RSS belongs to that point alone, and runs `runs` times; the report
//! keeps the median of every figure. The MQTT scenario is in
//! [`super::mqtt`], the cluster scenario in [`super::cluster`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::hub::Adoption;
use super::hub::{cpu_percent, ticks_per_second, HubProcess};
use super::keyed;
use super::report::AuthResult;
use super::report::{
    median, quantile, BenchReport, FanoutResult, IdleResult, IngestResult, LatencyResult, Machine,
};
use super::udp::{send, send_with, SendPlan, SendResult, SendTimes, Sink};
use super::ws::Client;
use super::BenchConfig;
use crate::keys::KeySeed;
use sensor_hub_protocol::auth::DatagramKey;

/// Time a fresh hub gets before a measurement starts.
const WARM_UP: Duration = Duration::from_millis(300);

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn start_hub(config: &BenchConfig) -> anyhow::Result<Arc<HubProcess>> {
    start_hub_keyed(config, None).await
}

/// A hub whose device file adopts every bench device, with keys from
/// `key_seed` if given.
async fn start_hub_keyed(
    config: &BenchConfig,
    key_seed: Option<KeySeed>,
) -> anyhow::Result<Arc<HubProcess>> {
    let bin = config.hub_bin.clone();
    let storage = config.storage;
    let adoption = Adoption {
        devices: config.devices.max(config.fanout_devices),
        key_seed,
    };
    let hub = Arc::new(blocking(move || HubProcess::start(&bin, storage, adoption)).await?);
    tokio::time::sleep(WARM_UP).await;
    Ok(hub)
}

async fn send_to(
    target: std::net::SocketAddr,
    plan: SendPlan,
    times: Option<Arc<SendTimes>>,
) -> anyhow::Result<SendResult> {
    blocking(move || Ok(send(target, plan, times.as_deref())?)).await
}

async fn send_sealed(
    target: std::net::SocketAddr,
    plan: SendPlan,
    keys: Option<Arc<Vec<DatagramKey>>>,
) -> anyhow::Result<SendResult> {
    blocking(move || {
        Ok(send_with(
            target,
            plan,
            None,
            keys.as_deref().map(Vec::as_slice),
        )?)
    })
    .await
}

async fn api_counter(hub: &Arc<HubProcess>, key: &'static str) -> anyhow::Result<u64> {
    let hub = hub.clone();
    blocking(move || hub.counter(key)).await
}

async fn settle(hub: &Arc<HubProcess>) -> anyhow::Result<()> {
    let hub = hub.clone();
    blocking(move || hub.settle()).await
}

fn machine() -> Machine {
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        rmem_max: std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    }
}

/// Runs every scenario of `config`.
pub async fn run_all(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let ticks = ticks_per_second();
    let mut idle = Vec::new();
    for _ in 0..config.runs {
        let hub = start_hub(config).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(hub.sample()?.rss_kib as f64);
    }
    let mut ingest = Vec::new();
    for &rate in &config.ingest_rates {
        let mut runs = Vec::new();
        for _ in 0..config.runs {
            runs.push(
                ingest_once(config, rate, ticks)
                    .await
                    .context("ingest scenario")?,
            );
        }
        ingest.push(IngestResult {
            offered_per_s: rate,
            sent_per_s: median(runs.iter().map(|r| r.sent_per_s).collect()),
            sink_per_s: median(runs.iter().map(|r| r.sink_per_s).collect()),
            hub_per_s: median(runs.iter().map(|r| r.hub_per_s).collect()),
            ratio: median(runs.iter().map(|r| r.ratio).collect()),
            hub_readings_per_s: median(runs.iter().map(|r| r.hub_readings_per_s).collect()),
            history_stored_pct: config
                .storage
                .then(|| median(runs.iter().filter_map(|r| r.history_stored_pct).collect())),
            history_dropped: config.storage.then(|| {
                median(
                    runs.iter()
                        .filter_map(|r| r.history_dropped)
                        .map(|d| d as f64)
                        .collect(),
                ) as u64
            }),
            kernel_drops: median(runs.iter().map(|r| r.kernel_drops as f64).collect()) as u64,
            hub_cpu_pct: median(runs.iter().map(|r| r.hub_cpu_pct).collect()),
            hub_cpu_us_per_datagram: median(
                runs.iter().map(|r| r.hub_cpu_us_per_datagram).collect(),
            ),
            sink_cpu_us_per_datagram: runs
                .iter()
                .all(|r| r.sink_cpu_us_per_datagram.is_some())
                .then(|| {
                    median(
                        runs.iter()
                            .filter_map(|r| r.sink_cpu_us_per_datagram)
                            .collect(),
                    )
                }),
            hub_peak_rss_kib: median(runs.iter().map(|r| r.hub_peak_rss_kib as f64).collect())
                as u64,
        });
    }
    let mut auth = Vec::new();
    for &rate in &config.auth_rates {
        let (mut plain, mut keyed) = (Vec::new(), Vec::new());
        for _ in 0..config.runs {
            // In turn, so both see the same machine.
            plain.push(
                ingest_auth_once(config, rate, ticks, false)
                    .await
                    .context("ingest scenario without keys")?,
            );
            keyed.push(
                ingest_auth_once(config, rate, ticks, true)
                    .await
                    .context("ingest scenario with keys")?,
            );
        }
        auth.push(AuthResult::from_runs(rate, &plain, &keyed));
    }
    let mut latency = Vec::new();
    for &rate in &config.latency_rates {
        let mut runs = Vec::new();
        for _ in 0..config.runs {
            runs.push(
                latency_once(config, rate, ticks)
                    .await
                    .context("latency scenario")?,
            );
        }
        latency.push(LatencyResult {
            offered_per_s: rate,
            p50_us: median(runs.iter().map(|r| r.p50_us as f64).collect()) as u64,
            p99_us: median(runs.iter().map(|r| r.p99_us as f64).collect()) as u64,
            p999_us: median(runs.iter().map(|r| r.p999_us as f64).collect()) as u64,
            samples: median(runs.iter().map(|r| r.samples as f64).collect()) as u64,
            missing: median(runs.iter().map(|r| r.missing as f64).collect()) as u64,
            hub_cpu_pct: median(runs.iter().map(|r| r.hub_cpu_pct).collect()),
            hub_write_p50_le_us: median_bound(runs.iter().map(|r| r.hub_write_p50_le_us)),
            hub_write_p99_le_us: median_bound(runs.iter().map(|r| r.hub_write_p99_le_us)),
        });
    }
    let mut fanout = Vec::new();
    for &clients in &config.fanout_clients {
        let mut runs = Vec::new();
        for _ in 0..config.runs {
            runs.push(
                fanout_once(config, clients, ticks)
                    .await
                    .context("fan-out scenario")?,
            );
        }
        let med = |f: fn(&FanoutResult) -> f64| median(runs.iter().map(f).collect());
        fanout.push(FanoutResult {
            clients,
            devices: config.fanout_devices,
            updates_per_s: med(|r| r.updates_per_s),
            delivered_per_s: med(|r| r.delivered_per_s),
            messages_per_s: med(|r| r.messages_per_s),
            complete_clients: med(|r| r.complete_clients as f64) as usize,
            min_fraction: med(|r| r.min_fraction),
            p50_us: med(|r| r.p50_us as f64) as u64,
            p99_us: med(|r| r.p99_us as f64) as u64,
            hub_cpu_pct: med(|r| r.hub_cpu_pct),
            hub_peak_rss_kib: med(|r| r.hub_peak_rss_kib as f64) as u64,
        });
    }
    let mqtt = match &config.mqtt {
        Some(plan) => Some(
            super::mqtt::run(config, plan, ticks)
                .await
                .context("MQTT scenario")?,
        ),
        None => None,
    };
    let cluster = match &config.cluster {
        Some(plan) => Some(
            super::cluster::run(config, plan, ticks)
                .await
                .context("cluster scenario")?,
        ),
        None => None,
    };
    let memory = match &config.memory {
        Some(plan) => {
            let mut runs = Vec::new();
            for _ in 0..config.runs {
                let (bin, storage) = (config.hub_bin.clone(), config.storage);
                let adoption = Adoption {
                    devices: config.devices.max(plan.devices),
                    key_seed: None,
                };
                let start = move || HubProcess::start(&bin, storage, adoption);
                runs.push(
                    super::memory::memory_once(start, plan)
                        .await
                        .context("memory scenario")?,
                );
            }
            Some(super::memory::median_of(&runs))
        }
        None => None,
    };
    Ok(BenchReport {
        machine: machine(),
        runs: config.runs,
        idle: IdleResult {
            rss_kib: median(idle) as u64,
        },
        ingest,
        auth,
        latency,
        fanout,
        mqtt,
        cluster,
        memory,
    })
}

/// One run of the authenticated-ingest scenario: the hub's device file
/// adopts the devices, with keys when `keyed` (each then says a keyed
/// hello first, and every datagram is tagged), without otherwise. Returns
/// what the hub accepted, its CPU, and the datagrams it dropped for
/// authentication (bad tag, replayed, unauthenticated, no session).
pub(super) async fn ingest_auth_once(
    config: &BenchConfig,
    rate: u64,
    ticks: u64,
    keyed: bool,
) -> anyhow::Result<AuthRun> {
    let plan = SendPlan {
        first_device: 1,
        devices: config.devices,
        rate,
        duration: config.ingest_duration,
    };
    let seed = if keyed {
        Some(crate::keys::random_seed()?)
    } else {
        None
    };
    let hub = start_hub_keyed(config, seed).await?;
    let keys = match &seed {
        Some(seed) => Some(Arc::new(
            keyed::sessions(hub.control, config.devices, seed).await?,
        )),
        None => None,
    };
    let counters = |v: &serde_json::Value| -> (u64, u64) {
        let dropped = ["unauthenticated", "bad_tag", "replayed", "no_session"]
            .iter()
            .filter_map(|r| v["dropped"][r].as_u64())
            .sum();
        (v["datagrams_accepted"].as_u64().unwrap_or(0), dropped)
    };
    let before = hub.clone();
    let (accepted0, refused0) = blocking(move || Ok(counters(&before.api_hub()?))).await?;
    let s0 = hub.sample()?;
    let sent = send_sealed(hub.udp, plan, keys).await?;
    let s1 = hub.sample()?;
    settle(&hub).await?;
    let after = hub.clone();
    let (accepted1, refused1) = blocking(move || Ok(counters(&after.api_hub()?))).await?;
    let secs = sent.elapsed.as_secs_f64();
    Ok(AuthRun {
        sent_per_s: sent.sent as f64 / secs,
        hub_per_s: (accepted1 - accepted0) as f64 / secs,
        hub_cpu_pct: cpu_percent(&s0, &s1, ticks),
        refused: refused1 - refused0,
    })
}

/// What one authenticated-ingest run measured.
#[derive(Debug, Clone, Copy)]
pub struct AuthRun {
    /// Datagrams/s the sender achieved.
    pub sent_per_s: f64,
    /// Datagrams/s the hub accepted.
    pub hub_per_s: f64,
    /// Hub CPU, percent of one core, while sending.
    pub hub_cpu_pct: f64,
    /// Datagrams dropped for authentication (should be none).
    pub refused: u64,
}

async fn ingest_once(config: &BenchConfig, rate: u64, ticks: u64) -> anyhow::Result<IngestResult> {
    let plan = SendPlan {
        first_device: 1,
        devices: config.devices,
        rate,
        duration: config.ingest_duration,
    };
    // The same sender against a plain socket.
    let sink = Sink::start()?;
    let to_sink = send_to(sink.addr, plan, None).await?;
    let sink_result = blocking(move || Ok(sink.finish())).await?;
    let sink_per_s = sink_result.datagrams as f64 / to_sink.elapsed.as_secs_f64();

    let hub = start_hub(config).await?;
    let before = hub.clone();
    let (accepted0, readings0, drops0) = blocking(move || {
        let v = before.api_hub()?;
        Ok((
            v["datagrams_accepted"].as_u64().unwrap_or(0),
            v["readings_accepted"].as_u64().unwrap_or(0),
            v["kernel_drops"].as_u64().unwrap_or(0),
        ))
    })
    .await?;
    let s0 = hub.sample()?;
    let sent = send_to(hub.udp, plan, None).await?;
    let s1 = hub.sample()?;
    settle(&hub).await?;
    // CPU from the start of sending until the hub had taken everything
    // (it may still be working through its socket buffer when the sender
    // stops), for its CPU per datagram.
    let s2 = hub.sample()?;
    let after = hub.clone();
    let (accepted1, readings1, drops1) = blocking(move || {
        let v = after.api_hub()?;
        Ok((
            v["datagrams_accepted"].as_u64().unwrap_or(0),
            v["readings_accepted"].as_u64().unwrap_or(0),
            v["kernel_drops"].as_u64().unwrap_or(0),
        ))
    })
    .await?;
    let drained = hub.clone();
    let history = blocking(move || drained.history_drained(Duration::from_secs(60))).await?;
    let readings = readings1.saturating_sub(readings0);
    let (history_stored_pct, history_dropped) = if history.is_null() {
        (None, None)
    } else {
        let written = history["written"].as_u64().unwrap_or(0);
        let dropped = history["dropped"]
            .as_object()
            .map_or(0, |d| d.values().filter_map(|v| v.as_u64()).sum());
        (
            Some(written as f64 * 100.0 / readings.max(1) as f64),
            Some(dropped),
        )
    };
    let secs = sent.elapsed.as_secs_f64();
    let accepted = accepted1.saturating_sub(accepted0);
    let hub_per_s = accepted as f64 / secs;
    let hub_cpu_s = s2.cpu_ticks.saturating_sub(s0.cpu_ticks) as f64 / ticks.max(1) as f64;
    Ok(IngestResult {
        offered_per_s: rate,
        sent_per_s: sent.sent as f64 / secs,
        sink_per_s,
        hub_per_s,
        ratio: if sink_per_s > 0.0 {
            hub_per_s / sink_per_s
        } else {
            0.0
        },
        hub_readings_per_s: readings as f64 / secs,
        history_stored_pct,
        history_dropped,
        kernel_drops: drops1.saturating_sub(drops0),
        hub_cpu_pct: cpu_percent(&s0, &s1, ticks),
        hub_cpu_us_per_datagram: if accepted > 0 {
            hub_cpu_s * 1e6 / accepted as f64
        } else {
            0.0
        },
        sink_cpu_us_per_datagram: sink_result.cpu_us_per_datagram(),
        hub_peak_rss_kib: hub.sample()?.peak_rss_kib,
    })
}

/// The median of bucket bounds, when every run had one.
fn median_bound(bounds: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let bounds: Option<Vec<f64>> = bounds.map(|b| b.map(|b| b as f64)).collect();
    bounds.filter(|b| !b.is_empty()).map(|b| median(b) as u64)
}

async fn latency_once(
    config: &BenchConfig,
    rate: u64,
    ticks: u64,
) -> anyhow::Result<LatencyResult> {
    let hub = start_hub(config).await?;
    let plan = SendPlan {
        first_device: 1,
        devices: config.devices,
        rate,
        duration: config.latency_duration,
    };
    let times = Arc::new(SendTimes::new(&plan, plan.capacity()));
    let (stop, stopped) = watch::channel(false);
    let client =
        Client::connect(hub.http, hub.token.as_deref(), Some(times.clone()), stopped).await?;
    let s0 = hub.sample()?;
    let sent = send_to(hub.udp, plan, Some(times)).await?;
    let s1 = hub.sample()?;
    settle(&hub).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    let mut stats = client.finish().await?;
    stats.latencies_us.sort_unstable();
    let l = &stats.latencies_us;
    let metrics = {
        let hub = hub.clone();
        blocking(move || hub.get("/metrics"))
            .await
            .unwrap_or_default()
    };
    let hub_write = |q| {
        super::report::histogram_quantile_le_us(&metrics, "sensor_hub_ws_write_latency_seconds", q)
    };
    Ok(LatencyResult {
        offered_per_s: rate,
        p50_us: quantile(l, 0.5),
        p99_us: quantile(l, 0.99),
        p999_us: quantile(l, 0.999),
        samples: l.len() as u64,
        missing: sent.sent.saturating_sub(stats.datagrams),
        hub_cpu_pct: cpu_percent(&s0, &s1, ticks),
        hub_write_p50_le_us: hub_write(0.5),
        hub_write_p99_le_us: hub_write(0.99),
    })
}

async fn fanout_once(
    config: &BenchConfig,
    clients: usize,
    ticks: u64,
) -> anyhow::Result<FanoutResult> {
    let hub = start_hub(config).await?;
    let plan = SendPlan {
        first_device: 1,
        devices: config.fanout_devices,
        rate: u64::from(config.fanout_devices),
        duration: config.fanout_duration,
    };
    let times = Arc::new(SendTimes::new(&plan, plan.capacity()));
    let (stop, stopped) = watch::channel(false);
    let mut connected = Vec::with_capacity(clients);
    for i in 0..clients {
        // The first client times what it receives; the others only count.
        let timed = (i == 0).then(|| times.clone());
        connected
            .push(Client::connect(hub.http, hub.token.as_deref(), timed, stopped.clone()).await?);
    }
    let accepted0 = api_counter(&hub, "datagrams_accepted").await?;
    let s0 = hub.sample()?;
    let sent = send_to(hub.udp, plan, Some(times)).await?;
    let s1 = hub.sample()?;
    settle(&hub).await?;
    // Let every client take what is on its way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = api_counter(&hub, "datagrams_accepted").await? - accepted0;
    let _ = stop.send(true);
    let mut all = Vec::with_capacity(clients);
    for c in connected {
        all.push(c.finish().await?);
    }
    let secs = sent.elapsed.as_secs_f64();
    let mut timed = std::mem::take(&mut all[0].latencies_us);
    timed.sort_unstable();
    Ok(FanoutResult {
        clients,
        devices: config.fanout_devices,
        updates_per_s: accepted as f64 / secs,
        delivered_per_s: all.iter().map(|c| c.datagrams).sum::<u64>() as f64 / secs,
        messages_per_s: all.iter().map(|c| c.messages).sum::<u64>() as f64 / secs,
        complete_clients: all.iter().filter(|c| c.datagrams >= accepted).count(),
        min_fraction: all
            .iter()
            .map(|c| c.datagrams as f64 / accepted.max(1) as f64)
            .fold(f64::MAX, f64::min),
        p50_us: quantile(&timed, 0.5),
        p99_us: quantile(&timed, 0.99),
        hub_cpu_pct: cpu_percent(&s0, &s1, ticks),
        hub_peak_rss_kib: hub.sample()?.peak_rss_kib,
    })
}
