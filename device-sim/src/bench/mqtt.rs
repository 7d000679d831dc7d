//! The MQTT scenario (`bench --only mqtt`): what the hub's MQTT bridge
//! (docs/MQTT.md) costs and how much it delivers, against a real Mosquitto
//! broker that this module starts on 127.0.0.1 for the scenario and kills
//! at its end. Each repetition runs three fresh hubs in turn, every one
//! with the same adopted devices sending for a warm-up (the bridge's
//! discovery burst at start) and then a measurement window:
//!
//! * the bridge off, devices at 1 Hz;
//! * the bridge on (defaults, so `min_interval_ms` = 1000), at 1 Hz;
//! * the bridge on with `min_interval_ms` = 0 and the devices at
//!   [`MqttPlan::sustained_hz`]: every state is published unless the
//!   bridge falls behind and coalesces, so its rate is what it sustains.
//!
//! In the window it measures the hub's CPU (and the broker's), the
//! datagrams the hub accepted, the messages the bridge handed to its
//! client and the states it coalesced (`/api/hub` `mqtt`), and the
//! messages the broker delivered to a subscriber of `sensor-hub/#` at
//! QoS 0. Discovery configs go to `homeassistant/…`, outside that filter;
//! a warm-up long enough leaves none of them in the window.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::hub::{cpu_percent, Adoption, HubProcess, ProcSample};
use super::report::{median, MqttResult, MqttSustained};
use super::scenarios::blocking;
use super::server::{LocalServer, ServerSpec};
use super::udp::{send, SendPlan};
use super::BenchConfig;

/// What the MQTT scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct MqttPlan {
    /// Devices (adopted, ids 1..=devices), each at 1 Hz in the runs with
    /// the bridge off and on.
    pub devices: u32,
    /// Their rate in the sustained run (bridge on, `min_interval_ms` 0).
    pub sustained_hz: u32,
    /// Sending before the window: the bridge connects and publishes its
    /// discovery configs, availability and first states.
    pub warm_up: Duration,
    /// The measurement window.
    pub duration: Duration,
}

/// How long the broker may take to accept connections.
const BROKER_START: Duration = Duration::from_secs(10);

/// The topics the subscriber counts: everything the hub publishes under
/// its own base topic (states, availability, intervals, its figures).
const SUBSCRIBE: &str = "sensor-hub/#";

/// The bridge's `mqtt.node_id` in the bench.
const NODE_ID: &str = "bench";

/// The sender keeps sending this long after the window closes, so the
/// window is under load to its end.
const SEND_TAIL: Duration = Duration::from_millis(200);

/// Debian's Mosquitto, as [`LocalServer`] runs it.
const MOSQUITTO: ServerSpec = ServerSpec {
    name: "mosquitto",
    path: "/usr/sbin/mosquitto",
    install_hint: "the MQTT scenario runs a real Mosquitto broker: install \
     Debian's `mosquitto` package (`apt-get install mosquitto`), or leave the \
     scenario out with --only",
    tag: "mqtt",
    ready: "accept connections",
    start_timeout: BROKER_START,
    logs: &[("mosquitto.log", ""), ("stderr.log", "stderr")],
};

/// A Mosquitto broker on 127.0.0.1: anonymous, nothing persisted, its
/// configuration and log in a temporary directory. Killed, and the
/// directory removed, on drop.
#[derive(Debug)]
pub struct Broker {
    server: LocalServer,
}

impl Broker {
    /// Starts a broker on a free port (a few tries, in case another
    /// program takes the port between the probe and the broker's bind) and
    /// waits until it accepts connections.
    pub fn start() -> anyhow::Result<Broker> {
        let (server, ()) = LocalServer::start(MOSQUITTO, configure, |broker, ()| {
            // "running" is logged once its listener is open, so the
            // connection is to it, not to another program on the port.
            let addr = SocketAddr::from(([127, 0, 0, 1], broker.port()));
            Ok(broker.log().contains(" running")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        })?;
        Ok(Broker { server })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Its CPU and memory now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        self.server.sample()
    }

    /// Fails, with its log, if it is no longer running.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.server.check()
    }

    /// What it logged so far (and wrote to standard error).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Writes the broker's configuration for `port` into `dir` and points
/// `command` at it, its standard error to a file beside it.
fn configure(command: &mut Command, port: u16, dir: &Path) -> anyhow::Result<()> {
    let config = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    fs::write(
        &config,
        format!(
            "# The broker of device-sim bench's MQTT scenario.\n\
             # Started as root, Mosquitto 2.0 switches to the user named here\n\
             # (default `mosquitto`, who may not write this directory); run as\n\
             # any other user it ignores this.\n\
             user root\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             log_dest file {log}\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             # The subscriber counts everything it is sent: a burst must not\n\
             # overflow its queue (default 1000) and be dropped by the broker.\n\
             max_queued_messages 100000\n",
            log = log.display(),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let stderr = fs::File::create(dir.join("stderr.log"))
        .with_context(|| format!("creating {}", dir.join("stderr.log").display()))?;
    command
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(stderr);
    Ok(())
}

/// An MQTT client subscribed to [`SUBSCRIBE`] at QoS 0 that counts the
/// PUBLISHes the broker delivers; its event loop runs in a task, aborted
/// on drop.
#[derive(Debug)]
struct Subscriber {
    received: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    // Kept so the event loop has a live client (its requests end with it).
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to the broker on `port` and returns once it has
    /// subscribed.
    async fn connect(port: u16) -> anyhow::Result<Subscriber> {
        let id = format!(
            "device-sim-bench-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let received = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + BROKER_START;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let polled = tokio::time::timeout(left, eventloop.poll())
                .await
                .map_err(|_| {
                    anyhow!("the subscriber got no CONNACK and SUBACK within {BROKER_START:?}")
                })?
                .context("the subscriber's connection to the broker")?;
            match polled {
                Event::Incoming(Packet::ConnAck(_)) => client
                    .subscribe(SUBSCRIBE, QoS::AtMostOnce)
                    .await
                    .context("queueing the subscriber's subscription")?,
                Event::Incoming(Packet::SubAck(_)) => break,
                Event::Incoming(Packet::Publish(_)) => {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let error = Arc::new(Mutex::new(None));
        let (count, failed) = (received.clone(), error.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Ok(mut slot) = failed.lock() {
                            *slot = Some(e.to_string());
                        }
                        return;
                    }
                }
            }
        });
        Ok(Subscriber {
            received,
            error,
            _client: client,
            task,
        })
    }

    /// PUBLISHes received so far.
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Fails if its connection broke (its count would be short).
    fn check(&self) -> anyhow::Result<()> {
        let error = self.error.lock().ok().and_then(|e| e.clone());
        match error {
            Some(e) => bail!("the subscriber lost its connection to the broker: {e}"),
            None => Ok(()),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bridge in one run.
#[derive(Debug, Clone, Copy)]
enum Bridge {
    Off,
    /// On, at these devices' rate, with `min_interval_ms` set if given
    /// (default otherwise).
    On {
        hz: u32,
        min_interval_ms: Option<u64>,
    },
}

/// What one run measured in its window.
#[derive(Debug, Clone, Copy)]
pub struct MqttRun {
    /// Datagrams/s the hub accepted.
    pub accepted_per_s: f64,
    /// Hub CPU, percent of one core.
    pub hub_cpu_pct: f64,
    /// Hub CPU per accepted datagram, µs.
    pub cpu_us_per_datagram: f64,
    /// Messages/s the bridge handed to its client (every kind).
    pub published_per_s: f64,
    /// Messages/s the subscriber received.
    pub received_per_s: f64,
    /// States/s superseded before they were published.
    pub coalesced_per_s: f64,
    /// Broker CPU, percent of one core.
    pub broker_cpu_pct: f64,
}

/// The hub's figures at one end of the window.
#[derive(Debug, Clone, Copy)]
struct Point {
    received: u64,
    hub: ProcSample,
    broker: ProcSample,
    accepted: u64,
    published: u64,
    discovery: u64,
    coalesced: u64,
}

async fn point(
    hub: &Arc<HubProcess>,
    broker: &Broker,
    subscriber: Option<&Subscriber>,
    bridge: Bridge,
) -> anyhow::Result<Point> {
    let received = subscriber.map_or(0, Subscriber::received);
    let hub_sample = hub.sample()?;
    let broker_sample = broker.sample()?;
    let api = hub.clone();
    let v = blocking(move || api.api_hub()).await?;
    let mqtt = &v["mqtt"];
    if let Bridge::Off = bridge {
        // E.g. a configuration file the hub read turned it on.
        if mqtt["enabled"] == true {
            bail!("the hub's MQTT bridge is on in a run that wants it off");
        }
    } else {
        if mqtt.is_null() {
            bail!("this hub's /api/hub has no `mqtt`: it has no MQTT bridge");
        }
        if mqtt["state"] != "connected" {
            bail!(
                "the hub's MQTT bridge is {} (last error: {}); the broker's log:\n{}",
                mqtt["state"],
                mqtt["last_error"],
                broker.log()
            );
        }
    }
    let published = &mqtt["published"];
    Ok(Point {
        received,
        hub: hub_sample,
        broker: broker_sample,
        accepted: v["datagrams_accepted"].as_u64().unwrap_or(0),
        published: published
            .as_object()
            .map_or(0, |kinds| kinds.values().filter_map(|n| n.as_u64()).sum()),
        discovery: published["discovery"].as_u64().unwrap_or(0),
        coalesced: mqtt["states_coalesced"].as_u64().unwrap_or(0),
    })
}

/// One run: a fresh hub (with the bridge as `bridge` says) and, with the
/// bridge on, a fresh subscriber, connected first so nothing the hub
/// publishes is missed.
async fn run_once(
    config: &BenchConfig,
    plan: &MqttPlan,
    broker: &mut Broker,
    bridge: Bridge,
    ticks: u64,
) -> anyhow::Result<MqttRun> {
    broker.check()?;
    let mut env = vec![(
        "SENSOR_HUB__MQTT__ENABLED".to_string(),
        matches!(bridge, Bridge::On { .. }).to_string(),
    )];
    let (hz, subscriber) = match bridge {
        Bridge::Off => (1, None),
        Bridge::On {
            hz,
            min_interval_ms,
        } => {
            for (key, value) in [
                ("HOST", "127.0.0.1".to_string()),
                ("PORT", broker.port().to_string()),
                ("NODE_ID", NODE_ID.to_string()),
            ] {
                env.push((format!("SENSOR_HUB__MQTT__{key}"), value));
            }
            if let Some(ms) = min_interval_ms {
                env.push(("SENSOR_HUB__MQTT__MIN_INTERVAL_MS".into(), ms.to_string()));
            }
            let subscriber = Subscriber::connect(broker.port())
                .await
                .with_context(|| format!("subscribing to {SUBSCRIBE} on the bench's broker"))?;
            (hz, Some(subscriber))
        }
    };
    let bin = config.hub_bin.clone();
    let storage = config.storage;
    let adoption = Adoption {
        devices: plan.devices,
        key_seed: None,
    };
    let hub = Arc::new(
        blocking(move || HubProcess::start_with_env(&bin, storage, adoption, &env)).await?,
    );
    let rate = u64::from(plan.devices) * u64::from(hz);
    let send_plan = SendPlan {
        first_device: 1,
        devices: plan.devices,
        rate,
        duration: plan.warm_up + plan.duration + SEND_TAIL,
    };
    let udp = hub.udp;
    let sender = tokio::task::spawn_blocking(move || send(udp, send_plan, None));
    tokio::time::sleep(plan.warm_up).await;
    let p0 = point(&hub, broker, subscriber.as_ref(), bridge).await?;
    tokio::time::sleep(plan.duration).await;
    let p1 = point(&hub, broker, subscriber.as_ref(), bridge).await?;
    sender.await?.context("sending the devices' datagrams")?;
    if let Some(s) = &subscriber {
        s.check()?;
    }
    broker.check()?;
    if p1.discovery > p0.discovery {
        tracing::warn!(
            configs = p1.discovery - p0.discovery,
            warm_up = ?plan.warm_up,
            "the bridge published discovery configs in the MQTT window: the warm-up was too short"
        );
    }
    let secs = p1.hub.at.duration_since(p0.hub.at).as_secs_f64();
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let accepted_per_s = per_s(p0.accepted, p1.accepted);
    let hub_cpu_pct = cpu_percent(&p0.hub, &p1.hub, ticks);
    Ok(MqttRun {
        accepted_per_s,
        hub_cpu_pct,
        cpu_us_per_datagram: if accepted_per_s > 0.0 {
            hub_cpu_pct / 100.0 * 1e6 / accepted_per_s
        } else {
            0.0
        },
        published_per_s: per_s(p0.published, p1.published),
        received_per_s: per_s(p0.received, p1.received),
        coalesced_per_s: per_s(p0.coalesced, p1.coalesced),
        broker_cpu_pct: cpu_percent(&p0.broker, &p1.broker, ticks),
    })
}

/// Runs the scenario `runs` times (bridge off, on, sustained in turn, so
/// all three see the same machine) against one broker; medians.
pub async fn run(config: &BenchConfig, plan: &MqttPlan, ticks: u64) -> anyhow::Result<MqttResult> {
    let mut broker = blocking(Broker::start)
        .await
        .context("starting Mosquitto for the MQTT scenario")?;
    let (mut off, mut on, mut sustained) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..config.runs {
        off.push(
            run_once(config, plan, &mut broker, Bridge::Off, ticks)
                .await
                .context("MQTT scenario, bridge off")?,
        );
        on.push(
            run_once(
                config,
                plan,
                &mut broker,
                Bridge::On {
                    hz: 1,
                    min_interval_ms: None,
                },
                ticks,
            )
            .await
            .context("MQTT scenario, bridge on")?,
        );
        sustained.push(
            run_once(
                config,
                plan,
                &mut broker,
                Bridge::On {
                    hz: plan.sustained_hz,
                    min_interval_ms: Some(0),
                },
                ticks,
            )
            .await
            .context("MQTT scenario, sustained rate")?,
        );
    }
    let med = |runs: &[MqttRun], f: fn(&MqttRun) -> f64| median(runs.iter().map(f).collect());
    let off_us = med(&off, |r| r.cpu_us_per_datagram);
    let on_us = med(&on, |r| r.cpu_us_per_datagram);
    Ok(MqttResult {
        devices: plan.devices,
        window_s: plan.duration.as_secs_f64(),
        off_cpu_pct: med(&off, |r| r.hub_cpu_pct),
        on_cpu_pct: med(&on, |r| r.hub_cpu_pct),
        off_accepted_per_s: med(&off, |r| r.accepted_per_s),
        on_accepted_per_s: med(&on, |r| r.accepted_per_s),
        off_cpu_us_per_datagram: off_us,
        on_cpu_us_per_datagram: on_us,
        extra_cpu_us_per_datagram: on_us - off_us,
        msgs_per_s_1hz: med(&on, |r| r.received_per_s),
        published_per_s_1hz: med(&on, |r| r.published_per_s),
        coalesced_per_s_1hz: med(&on, |r| r.coalesced_per_s),
        broker_cpu_pct_1hz: med(&on, |r| r.broker_cpu_pct),
        sustained: MqttSustained {
            hz: plan.sustained_hz,
            offered_datagrams_per_s: u64::from(plan.devices) * u64::from(plan.sustained_hz),
            accepted_per_s: med(&sustained, |r| r.accepted_per_s),
            published_per_s: med(&sustained, |r| r.published_per_s),
            received_per_s: med(&sustained, |r| r.received_per_s),
            coalesced_per_s: med(&sustained, |r| r.coalesced_per_s),
            cpu_pct: med(&sustained, |r| r.hub_cpu_pct),
            cpu_us_per_datagram: med(&sustained, |r| r.cpu_us_per_datagram),
            broker_cpu_pct: med(&sustained, |r| r.broker_cpu_pct),
        },
    })
}
