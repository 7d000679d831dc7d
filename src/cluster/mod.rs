//! Several hubs, one fleet (`[cluster]`, docs/CLUSTER.md): the shell that
//! links this hub to the others through Redis. The decisions are the
//! core's ([`Core::cluster_receive`], [`Core::cluster_lost`],
//! [`Core::cluster_linked`]) and the outbox's ([`crate::outbox`]); this
//! module only moves bytes and keeps time:
//!
//! * the **writer** appends this hub's waiting events to the shared stream
//!   (one Lua script call per batch: it numbers them with one counter for
//!   the whole cluster, and skips any event number it appended before, so
//!   a retry after a timeout never appends twice);
//! * the **reader** follows the shared stream and hands every entry to the
//!   core, which delivers it to this hub's browsers at its shared position;
//! * the **lease** keeps this hub's name and devices held (renewed every
//!   third of `lease_ttl_ms`), publishes its figures for the cluster view,
//!   and reports the devices of a hub whose lease lapsed as offline.
//!
//! Any Redis error or a reply slower than `link_timeout_ms` ends the link:
//! the hub goes on alone, and tries again with backoff. Linking again, it
//! first shares what waited, catches up with what the others shared
//! meanwhile (as far as the stream still holds it), and only then takes
//! the cluster's numbering again (its browsers resync at each switch).

pub mod adoption;
pub mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::core::Core;
use crate::core::SubmitError;
use crate::device_file::DeviceFile;
use crate::metrics::{counter, gauge, Collector, DescriptorEncoder};
use crate::outbox::LinkMode;
use crate::remote::SharedEntry;
use adoption::{AdoptionSync, SharedAdoption};
use wire::{decode_entry, RawEntry, WireEvent, WireForward};

/// Entries a hub's command stream keeps (commands are read within
/// moments; this bounds what a hub that is gone leaves behind).
const COMMAND_STREAM_LEN: u64 = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events appended per script call.
const APPEND_BATCH: usize = 256;
/// Entries read per `XREAD`.
const READ_BATCH: usize = 512;
/// How long one `XREAD` waits for new entries, ms.
const READ_BLOCK_MS: u64 = 250;
/// First and longest wait between link attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// A hub whose lease lapsed this many lease periods ago leaves the list.
const FORGET_HUB_AFTER_LEASES: u64 = 30;

/// Appends a batch of one run's events, skipping numbers it appended
/// before. KEYS: stream, position counter, the run's last number.
/// ARGV: hub, run, max length, then (number, about, payload) per event;
/// number 0 is never skipped (holdings, repeated anyway). Returns the
/// run's newest appended number, which Redis remembers for a day (no run
/// is cut off longer and still holds events to share).
const APPEND_SCRIPT: &str = r"
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local newest = last
for k = 4, #ARGV, 3 do
  local number = tonumber(ARGV[k])
  if number == 0 or number > last then
    local pos = redis.call('INCR', KEYS[2])
    local id = string.format('%d-0', pos)
    if ARGV[k + 1] == '' then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id,
        'h', ARGV[1], 'i', ARGV[2], 'n', ARGV[k], 'e', ARGV[k + 2])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id,
        'h', ARGV[1], 'i', ARGV[2], 'n', ARGV[k], 'a', ARGV[k + 1], 'e', ARGV[k + 2])
    end
    if number > newest then newest = number end
  end
end
redis.call('SET', KEYS[3], string.format('%d', newest), 'PX', 86400000)
return newest
";

/// What the cluster link needs, resolved from `[cluster]`.
#[derive(Clone)]
pub struct Settings {
    url: String,
    /// This hub's name.
    pub hub: Arc<str>,
    /// This run's id (random; a restart is a new run).
    pub run: Arc<str>,
    prefix: String,
    stream_max_len: u64,
    link_timeout: Duration,
    lease_ttl_ms: u64,
    command_ttl_ms: u64,
}

// Manual: the URL may hold the Redis password.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("hub", &self.hub)
            .field("run", &self.run)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Resolves `[cluster]`: reads the URL file, names the hub after the
    /// machine when no name is set, and checks the URL parses. Commands
    /// handed over by other hubs older than `command_ttl_ms` are not run.
    pub fn from_config(config: &ClusterConfig, command_ttl_ms: u64) -> anyhow::Result<Settings> {
        let url = if config.redis_url_file.as_os_str().is_empty() {
            config.redis_url.clone()
        } else {
            read_url_file(&config.redis_url_file)?
        };
        // Checked here so a typo is a clear error at start; the error
        // never shows the URL (it may hold the password).
        redis::Client::open(url.as_str()).map_err(|e| {
            anyhow::anyhow!(
                "cluster.redis_url is not a Redis URL ({}): write it as redis://[:password@]host:port/[db]",
                e.category()
            )
        })?;
        let hub: Arc<str> = if config.hub_name.is_empty() {
            host_name().into()
        } else {
            config.hub_name.as_str().into()
        };
        Ok(Settings {
            url,
            hub,
            run: format!("{:016x}", fastrand::u64(..)).into(),
            prefix: config.key_prefix.clone(),
            stream_max_len: config.stream_max_len,
            link_timeout: Duration::from_millis(config.link_timeout_ms),
            lease_ttl_ms: config.lease_ttl_ms,
            command_ttl_ms,
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }
}

fn read_url_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading cluster.redis_url_file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !line.is_empty(),
        "cluster.redis_url_file {} is empty: its first line must be the redis:// URL",
        path.display()
    );
    Ok(line)
}

/// The machine's name, cut to what a hub name may hold.
fn host_name() -> String {
    let name: String = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    if name.is_empty() {
        "hub".into()
    } else {
        name
    }
}

/// The link's state, as `/healthz` and the hub view show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Not linked yet since start.
    Connecting,
    /// Linked: this hub's stream is the cluster's.
    Up,
    /// Lost: the hub goes on alone and tries again.
    Down,
}

/// One hub of the cluster, as it describes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubView {
    /// Its name.
    pub name: String,
    /// Its run.
    pub run: String,
    /// Wall time of its latest renewal, Unix ms.
    pub seen_ms: u64,
    /// Devices it holds.
    pub devices: u64,
    /// WebSocket clients connected to it.
    pub clients: u64,
    /// Its lease is current.
    #[serde(default)]
    pub alive: bool,
}

/// The link as shown: state, since when, the last error, the hubs.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// This hub's name.
    pub hub: String,
    /// Link state.
    pub link: LinkState,
    /// Since when, Unix ms.
    pub since_ms: u64,
    /// Why the link is down (no secrets).
    pub error: Option<String>,
    /// The hubs, this one included, by name.
    pub hubs: Vec<HubView>,
}

/// Counters of the link.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Links lost.
    pub link_losses: AtomicU64,
    /// Other hubs' entries applied.
    pub events_received: AtomicU64,
    /// Entries that did not decode.
    pub entries_invalid: AtomicU64,
    /// Shared positions trimmed before this hub read them.
    pub positions_missed: AtomicU64,
    /// Append script calls.
    pub appends: AtomicU64,
    /// Hubs whose devices this hub reported offline.
    pub hubs_lost_reported: AtomicU64,
    /// Commands handed to the hubs holding their devices.
    pub commands_handed_over: AtomicU64,
    /// Commands other hubs handed to this one, submitted here.
    pub commands_taken_over: AtomicU64,
    /// Commands handed to this hub and not run: too old, or for a device
    /// it does not know (or an entry that did not decode).
    pub commands_dropped: AtomicU64,
}

/// The link's state and counters, shared with `/healthz`, `/api/hub` and
/// `/metrics`.
#[derive(Debug)]
pub struct ClusterStatus {
    view: Mutex<StatusView>,
    /// Counters.
    pub counters: LinkCounters,
}

impl ClusterStatus {
    /// Connecting, as of `now_ms`.
    pub fn new(hub: &str, now_ms: u64) -> ClusterStatus {
        ClusterStatus {
            view: Mutex::new(StatusView {
                hub: hub.to_string(),
                link: LinkState::Connecting,
                since_ms: now_ms,
                error: None,
                hubs: Vec::new(),
            }),
            counters: LinkCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StatusView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as shown.
    pub fn view(&self) -> StatusView {
        self.lock().clone()
    }

    fn set(&self, link: LinkState, error: Option<String>, now_ms: u64) {
        let mut view = self.lock();
        if view.link != link {
            view.since_ms = now_ms;
        }
        view.link = link;
        view.error = error;
    }

    fn set_hubs(&self, hubs: Vec<HubView>) {
        self.lock().hubs = hubs;
    }
}

/// Runs the link until `cancel`: links, and links again after every loss.
/// `device_file` is shared with the other hubs ([`adoption`]).
pub async fn run(
    core: Arc<Core>,
    settings: Settings,
    clock: Clock,
    status: Arc<ClusterStatus>,
    clients: Arc<dyn Fn() -> u64 + Send + Sync>,
    device_file: DeviceFile,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let client = redis::Client::open(settings.url.as_str())
        .map_err(|e| anyhow::anyhow!("cluster.redis_url: {}", e.category()))?;
    let script = redis::Script::new(APPEND_SCRIPT);
    let mut link = Link {
        core,
        settings,
        clock,
        status,
        clients,
        script,
        epoch: None,
        commands_from: Mutex::new("0-0".into()),
        first_link: true,
        device_file,
        adoption: Mutex::new(AdoptionSync::default()),
    };
    let mut backoff = BACKOFF.0;
    loop {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            outcome = link.session(&client) => outcome,
        };
        let now = link.clock.now();
        let was_up = link.status.view().link == LinkState::Up;
        link.core.cluster_lost();
        let error = match outcome {
            Ok(()) => "the link ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if was_up {
            link.status
                .counters
                .link_losses
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error, "cluster: link to Redis lost; going on alone");
            backoff = BACKOFF.0;
        } else {
            tracing::debug!(error, "cluster: cannot link to Redis");
        }
        link.status.set(LinkState::Down, Some(error), now.wall_ms);
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// One link's worth of state, kept across links.
struct Link {
    core: Arc<Core>,
    settings: Settings,
    clock: Clock,
    status: Arc<ClusterStatus>,
    clients: Arc<dyn Fn() -> u64 + Send + Sync>,
    script: redis::Script,
    /// The cluster epoch of the last link, if any.
    epoch: Option<Arc<str>>,
    /// The id of the newest entry read from this hub's command stream.
    commands_from: Mutex<String>,
    /// This link is the run's first.
    first_link: bool,
    /// The adopted devices, shared with the other hubs.
    device_file: DeviceFile,
    adoption: Mutex<AdoptionSync>,
}

/// A Redis call that takes longer than the link timeout fails.
async fn timed<T>(
    timeout: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!("{what}: {}", redis_error(&e))),
        Err(_) => anyhow::bail!("{what}: Redis did not answer within cluster.link_timeout_ms"),
    }
}

/// `GET key`, within `timeout`.
async fn get<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    timeout: Duration,
    what: &'static str,
    key: String,
) -> anyhow::Result<T> {
    timed(timeout, what, redis::cmd("GET").arg(key).query_async(con)).await
}

/// A Redis error as shown: its kind and message, never the URL.
fn redis_error(e: &redis::RedisError) -> String {
    let detail = e.detail().unwrap_or("");
    if detail.is_empty() {
        e.category().to_string()
    } else {
        format!(
            "{}: {}",
            e.category(),
            detail.chars().take(200).collect::<String>()
        )
    }
}

impl Link {
    async fn connect(
        &self,
        client: &redis::Client,
        response: Duration,
    ) -> anyhow::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.link_timeout))
            .set_response_timeout(Some(response));
        timed(
            self.settings.link_timeout + Duration::from_millis(100),
            "connecting to Redis",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// One link: set up, catch up, then write, read and renew until
    /// something fails.
    async fn session(&mut self, client: &redis::Client) -> anyhow::Result<()> {
        let s = self.settings.clone();
        let t = s.link_timeout;
        let mut writer = self.connect(client, t).await?;
        let mut reader = self
            .connect(client, t + Duration::from_millis(READ_BLOCK_MS))
            .await?;
        self.claim_name(&mut writer).await?;
        // The cluster's epoch: made by the first hub ever to link.
        let proposed = format!("{:016x}", fastrand::u64(..));
        let _: Value = timed(
            t,
            "reading the cluster epoch",
            redis::cmd("SET")
                .arg(s.key("epoch"))
                .arg(&proposed)
                .arg("NX")
                .query_async(&mut writer),
        )
        .await?;
        let epoch: String =
            get(&mut writer, t, "reading the cluster epoch", s.key("epoch")).await?;
        let epoch: Arc<str> = epoch.into();
        match &self.epoch {
            None => {
                // A new run starts at the stream's head: the others'
                // holdings describe the fleet within a lease period.
                let head: Option<u64> = get(
                    &mut writer,
                    t,
                    "reading the stream position",
                    s.key("position"),
                )
                .await?;
                self.core.cluster_start_reading_at(head.unwrap_or(0));
            }
            Some(known) if **known != *epoch => {
                tracing::warn!(
                    "cluster: Redis lost the shared stream (new epoch); reading it from its start"
                );
                self.core.cluster_restart_reading();
            }
            Some(_) => {}
        }
        self.first_link = self.epoch.is_none();
        self.epoch = Some(epoch.clone());
        // What this run appended before is in the stream already.
        let appended: Option<u64> = get(
            &mut writer,
            t,
            "reading this hub's last append",
            s.key(&format!("run:{}", s.run)),
        )
        .await?;
        self.core.cluster_shared(appended.unwrap_or(0));
        // Commands handed over while this hub was not reading: from the
        // newest one read (a new run: from now on).
        if self.epoch_is_first_link() {
            let newest: Value = timed(
                t,
                "reading this hub's command stream",
                redis::cmd("XREVRANGE")
                    .arg(s.key(&format!("commands:{}", s.hub)))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut writer),
            )
            .await?;
            if let Some(id) = entries_of(&newest)
                .ok()
                .and_then(|e| e.first().map(|e| e.id.to_string()))
            {
                *lock(&self.commands_from) = id;
            }
        }
        // Share what waited, then read what the others shared meanwhile.
        while self.flush(&mut writer).await? == APPEND_BATCH {}
        let head: Option<u64> = get(
            &mut writer,
            t,
            "reading the stream position",
            s.key("position"),
        )
        .await?;
        let head = head.unwrap_or(0);
        while self.core.cluster_read_position() < head {
            if self.read(&mut reader, false).await? == 0 {
                break;
            }
        }
        let position = self.core.cluster_read_position();
        self.core.cluster_linked(epoch, position);
        let now = self.clock.now();
        self.status.set(LinkState::Up, None, now.wall_ms);
        tracing::info!(hub = &*s.hub, position, "cluster: linked");
        self.renew(&mut writer).await?;
        let lease_every = Duration::from_millis(s.lease_ttl_ms / 3);
        let mut lease_writer = writer.clone();
        let core = self.core.clone();
        let this = &*self;
        let write = async {
            loop {
                if this.flush(&mut writer).await? == 0 {
                    core.outbox_ready().await;
                }
                if core.cluster_mode() != Some(LinkMode::Linked) {
                    anyhow::bail!("events were not shared fast enough (the outbox filled)");
                }
            }
        };
        let read = async {
            loop {
                this.read(&mut reader, true).await?;
            }
        };
        let lease = async {
            loop {
                tokio::time::sleep(lease_every).await;
                this.renew(&mut lease_writer).await?;
            }
        };
        tokio::select! {
            r = write => r,
            r = read => r,
            r = lease => r,
        }
    }

    fn epoch_is_first_link(&self) -> bool {
        self.first_link
    }

    /// Takes this hub's name for its run (refused while another run holds
    /// it).
    async fn claim_name(&self, con: &mut MultiplexedConnection) -> anyhow::Result<()> {
        let s = &self.settings;
        let key = s.key(&format!("hub:{}", s.hub));
        let set: Value = timed(
            s.link_timeout,
            "claiming the hub name",
            redis::cmd("SET")
                .arg(&key)
                .arg(&*s.run)
                .arg("NX")
                .arg("PX")
                .arg(s.lease_ttl_ms)
                .query_async(con),
        )
        .await?;
        if matches!(set, Value::Okay | Value::SimpleString(_)) {
            return Ok(());
        }
        let holder: Option<String> = timed(
            s.link_timeout,
            "claiming the hub name",
            redis::cmd("GET").arg(&key).query_async(con),
        )
        .await?;
        match holder {
            Some(run) if run == *s.run => Ok(()),
            Some(_) => anyhow::bail!(
                "another hub is linked as {:?} (or this hub's previous run, until its lease \
                 of cluster.lease_ttl_ms lapses): give every hub its own cluster.hub_name",
                &*s.hub
            ),
            None => Ok(()),
        }
    }

    /// Hands over the commands waiting for other hubs, then appends up to
    /// one batch of waiting events; returns how many of both.
    async fn flush(&self, con: &mut MultiplexedConnection) -> anyhow::Result<usize> {
        let forwards = self.core.cluster_take_forwards();
        if !forwards.is_empty() {
            let now = self.clock.now();
            let mut pipe = redis::pipe();
            for f in &forwards {
                pipe.cmd("XADD")
                    .arg(self.settings.key(&format!("commands:{}", f.hub)))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(COMMAND_STREAM_LEN)
                    .arg("*")
                    .arg("f")
                    .arg(&*self.settings.hub)
                    .arg("e")
                    .arg(WireForward::new(f, now.wall_ms).encode())
                    .ignore();
            }
            let _: () = timed(
                self.settings.link_timeout,
                "handing commands to other hubs",
                pipe.query_async(con),
            )
            .await?;
            self.status
                .counters
                .commands_handed_over
                .fetch_add(forwards.len() as u64, Ordering::Relaxed);
        }
        let pending = self.core.cluster_pending(APPEND_BATCH);
        let Some(last) = pending.last().map(|p| p.number) else {
            return Ok(forwards.len());
        };
        let mut call = self.invocation();
        for p in &pending {
            call.arg(p.number)
                .arg(p.about.as_deref().unwrap_or(""))
                .arg(WireEvent::from_event(&p.event, &self.settings.hub).encode());
        }
        let newest: u64 = timed(
            self.settings.link_timeout,
            "appending to the shared stream",
            call.invoke_async(con),
        )
        .await?;
        self.status.counters.appends.fetch_add(1, Ordering::Relaxed);
        debug_assert!(newest >= last);
        self.core.cluster_shared(newest);
        Ok(pending.len() + forwards.len())
    }

    fn invocation(&self) -> redis::ScriptInvocation<'_> {
        let s = &self.settings;
        let mut call = self.script.prepare_invoke();
        call.key(s.key("events"))
            .key(s.key("position"))
            .key(s.key(&format!("run:{}", s.run)))
            .arg(&*s.hub)
            .arg(&*s.run)
            .arg(s.stream_max_len);
        call
    }

    /// Reads one batch after the newest position read (waiting for one if
    /// `block`) and hands it to the core; returns how many entries.
    async fn read(&self, con: &mut MultiplexedConnection, block: bool) -> anyhow::Result<usize> {
        let s = &self.settings;
        let from = self.core.cluster_read_position();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_BATCH);
        if block {
            cmd.arg("BLOCK").arg(READ_BLOCK_MS);
        }
        let commands_key = s.key(&format!("commands:{}", s.hub));
        let commands_from = lock(&self.commands_from).clone();
        cmd.arg("STREAMS")
            .arg(s.key("events"))
            .arg(&commands_key)
            .arg(format!("{from}-0"))
            .arg(&commands_from);
        let reply: Value = timed(
            s.link_timeout + Duration::from_millis(READ_BLOCK_MS),
            "reading the shared stream",
            cmd.query_async(con),
        )
        .await?;
        let streams = stream_entries(&reply).context("reading the shared stream")?;
        let mut raw: Vec<RawEntry<'_>> = Vec::new();
        for (key, entries) in streams {
            if key == commands_key.as_bytes() {
                self.take_over(&entries);
            } else {
                raw = entries;
            }
        }
        let count = raw.len();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |name: &str| -> Arc<str> {
            if name == &*s.hub {
                return s.hub.clone();
            }
            names
                .entry(name.to_string())
                .or_insert_with(|| name.into())
                .clone()
        };
        let mut entries: Vec<SharedEntry> = Vec::with_capacity(count);
        let mut up_to = from;
        let mut first = true;
        for entry in &raw {
            let position = match wire::position_of(entry.id) {
                Ok(p) => p,
                Err(e) => {
                    self.invalid(&e);
                    continue;
                }
            };
            if first {
                first = false;
                if from > 0 && position > from + 1 {
                    // Trimmed before this hub could read it.
                    let missed = position - from - 1;
                    self.status
                        .counters
                        .positions_missed
                        .fetch_add(missed, Ordering::Relaxed);
                    tracing::warn!(
                        missed,
                        "cluster: the shared stream no longer holds what this hub missed \
                         (raise cluster.stream_max_len); its browsers resync"
                    );
                    self.core.cluster_receive(
                        std::mem::take(&mut entries),
                        up_to,
                        self.clock.now(),
                    );
                    self.core.cluster_gap(position);
                }
            }
            up_to = up_to.max(position);
            match decode_entry(entry, &s.hub, &s.run, &mut intern) {
                Ok(e) => entries.push(e),
                Err(e) => self.invalid(&e),
            }
        }
        let applied = self.core.cluster_receive(entries, up_to, self.clock.now());
        self.status
            .counters
            .events_received
            .fetch_add(applied as u64, Ordering::Relaxed);
        Ok(count)
    }

    /// Submits the commands other hubs handed to this one.
    fn take_over(&self, entries: &[RawEntry<'_>]) {
        let Some(last) = entries.last() else {
            return;
        };
        *lock(&self.commands_from) = last.id.to_string();
        let now = self.clock.now();
        let c = &self.status.counters;
        for entry in entries {
            let decoded = wire::sender(entry.hub_field())
                .and_then(|from| Ok((from, WireForward::decode(entry.payload.unwrap_or(&[]))?)));
            let (from, command) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    c.commands_dropped.fetch_add(1, Ordering::Relaxed);
                    self.invalid(&e);
                    continue;
                }
            };
            if now.wall_ms.saturating_sub(command.sent_ms) > self.settings.command_ttl_ms {
                c.commands_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let origin = command.origin(from);
            match self
                .core
                .submit_command(command.device, command.body, command.wait, origin, now)
            {
                Ok(_) | Err(SubmitError::Forwarded { .. }) => {
                    c.commands_taken_over.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    c.commands_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(error = %e, from, "cluster: a command handed over was not run");
                }
            }
        }
    }

    fn invalid(&self, e: &wire::WireError) {
        let n = self
            .status
            .counters
            .entries_invalid
            .fetch_add(1, Ordering::Relaxed);
        // The first few, then every thousandth: never a log flood.
        if n < 10 || n % 1_000 == 0 {
            tracing::warn!(error = %e, "cluster: an entry of the shared stream was dropped");
        }
    }

    /// Renews the hub's lease and holdings, publishes its figures, reads
    /// the other hubs', and reports a lost hub's devices offline.
    async fn renew(&self, con: &mut MultiplexedConnection) -> anyhow::Result<()> {
        let s = &self.settings;
        let t = s.link_timeout;
        let renewed: Value = timed(
            t,
            "renewing the hub's lease",
            redis::cmd("SET")
                .arg(s.key(&format!("hub:{}", s.hub)))
                .arg(&*s.run)
                .arg("XX")
                .arg("PX")
                .arg(s.lease_ttl_ms)
                .query_async(con),
        )
        .await?;
        if matches!(renewed, Value::Nil) {
            // Lapsed (a long stall): take it again, if nobody else did.
            self.claim_name(con).await?;
        }
        let holdings = self.core.cluster_holdings();
        let now = self.clock.now();
        let me = HubView {
            name: s.hub.to_string(),
            run: s.run.to_string(),
            seen_ms: now.wall_ms,
            devices: holdings.len() as u64,
            clients: (self.clients)(),
            alive: true,
        };
        let mut call = self.invocation();
        call.arg(0u64)
            .arg("")
            .arg(WireEvent::holdings(&holdings).encode());
        let _: u64 = timed(t, "sharing the hub's holdings", call.invoke_async(con)).await?;
        let me_json = serde_json::to_string(&me).unwrap_or_default();
        let all: HashMap<String, String> = timed(
            t,
            "publishing the hub's figures",
            redis::pipe()
                .cmd("HSET")
                .arg(s.key("hubs"))
                .arg(&*s.hub)
                .arg(me_json)
                .ignore()
                .cmd("HGETALL")
                .arg(s.key("hubs"))
                .query_async::<(HashMap<String, String>,)>(con),
        )
        .await?
        .0;
        let mut hubs: Vec<HubView> = all
            .values()
            .filter_map(|json| serde_json::from_str::<HubView>(json).ok())
            .collect();
        hubs.sort_by(|a, b| a.name.cmp(&b.name));
        let others: Vec<String> = hubs
            .iter()
            .filter(|h| h.name != *s.hub)
            .map(|h| s.key(&format!("hub:{}", h.name)))
            .collect();
        let holders: Vec<Option<String>> = if others.is_empty() {
            Vec::new()
        } else {
            timed(
                t,
                "reading the other hubs' leases",
                redis::cmd("MGET").arg(&others).query_async(con),
            )
            .await?
        };
        let mut holder_of: HashMap<String, Option<String>> = HashMap::new();
        for (h, holder) in hubs.iter().filter(|h| h.name != *s.hub).zip(holders) {
            holder_of.insert(h.name.clone(), holder);
        }
        for h in &mut hubs {
            if h.name == *s.hub {
                h.alive = true;
                h.clients = me.clients;
                h.devices = me.devices;
                h.seen_ms = me.seen_ms;
                continue;
            }
            let holder = holder_of.get(&h.name).cloned().flatten();
            h.alive = holder.as_deref() == Some(h.run.as_str());
            if !h.alive {
                self.hub_lost(con, h, now).await?;
            }
        }
        let forget_after = s.lease_ttl_ms.saturating_mul(FORGET_HUB_AFTER_LEASES);
        let stale: Vec<&str> = hubs
            .iter()
            .filter(|h| !h.alive && now.wall_ms.saturating_sub(h.seen_ms) > forget_after)
            .map(|h| h.name.as_str())
            .collect();
        if !stale.is_empty() {
            let _: Value = timed(
                t,
                "forgetting long-gone hubs",
                redis::cmd("HDEL")
                    .arg(s.key("hubs"))
                    .arg(&stale)
                    .query_async(con),
            )
            .await?;
        }
        hubs.retain(|h| h.alive || now.wall_ms.saturating_sub(h.seen_ms) <= forget_after);
        self.status.set_hubs(hubs);
        self.sync_adoption(con).await
    }

    /// Shares the device file's adoptions, keys and removals with the
    /// other hubs, and takes theirs ([`adoption`]).
    async fn sync_adoption(&self, con: &mut MultiplexedConnection) -> anyhow::Result<()> {
        let s = &self.settings;
        let file = self.device_file.clone();
        let (list, _) = tokio::task::spawn_blocking(move || file.load())
            .await
            .context("reading the device file")?
            .context("reading the device file (devices.keys_path)")?;
        let raw: HashMap<String, String> = timed(
            s.link_timeout,
            "reading the shared adoptions",
            redis::cmd("HGETALL").arg(s.key("adopted")).query_async(con),
        )
        .await?;
        let mut hash = HashMap::with_capacity(raw.len());
        for (id, json) in &raw {
            match (
                id.parse::<u32>(),
                serde_json::from_str::<SharedAdoption>(json),
            ) {
                (Ok(id), Ok(entry)) if entry.is_valid() => {
                    hash.insert(id, entry);
                }
                _ => self.invalid(&wire::WireError::Field("adopted")),
            }
        }
        let now = self.clock.now();
        let plan = lock(&self.adoption).plan(&list, &hash, &s.hub, now.wall_ms);
        if plan.is_empty() {
            lock(&self.adoption).done(&list);
            return Ok(());
        }
        if !plan.to_hash.is_empty() || !plan.expired.is_empty() {
            let mut pipe = redis::pipe();
            for (id, entry) in &plan.to_hash {
                pipe.cmd("HSET")
                    .arg(s.key("adopted"))
                    .arg(id)
                    .arg(serde_json::to_string(entry).unwrap_or_default())
                    .ignore();
            }
            if !plan.expired.is_empty() {
                pipe.cmd("HDEL")
                    .arg(s.key("adopted"))
                    .arg(&plan.expired)
                    .ignore();
            }
            let _: () = timed(s.link_timeout, "sharing adoptions", pipe.query_async(con)).await?;
        }
        // What the sync knows: the file as read, with its changes (a change
        // made here meanwhile is still a change at the next sync).
        let mut synced = list;
        plan.apply_to(&mut synced);
        if !plan.adopt.is_empty() || !plan.remove.is_empty() {
            let file = self.device_file.clone();
            let changes = plan.clone();
            tokio::task::spawn_blocking(move || {
                file.update(|l| {
                    changes.apply_to(l);
                    Ok(())
                })
            })
            .await
            .context("writing the device file")?
            .context("writing the device file (devices.keys_path)")?;
            tracing::info!(
                adopted = plan.adopt.len(),
                removed = plan.remove.len(),
                "cluster: adoptions from other hubs written to the device file"
            );
        }
        lock(&self.adoption).done(&synced);
        Ok(())
    }

    /// A hub's lease lapsed: unless another hub claimed it first, report
    /// its devices offline for the whole cluster.
    async fn hub_lost(
        &self,
        con: &mut MultiplexedConnection,
        hub: &HubView,
        now: crate::clock::Now,
    ) -> anyhow::Result<()> {
        let s = &self.settings;
        let claimed: Value = timed(
            s.link_timeout,
            "claiming a lost hub's report",
            redis::cmd("SET")
                .arg(s.key(&format!("lost:{}", hub.run)))
                .arg(&*s.run)
                .arg("NX")
                .arg("PX")
                .arg(s.lease_ttl_ms.saturating_mul(FORGET_HUB_AFTER_LEASES))
                .query_async(con),
        )
        .await?;
        if !matches!(claimed, Value::Okay | Value::SimpleString(_)) {
            return Ok(());
        }
        let devices = self.core.cluster_hub_lost(&hub.name, now);
        self.status
            .counters
            .hubs_lost_reported
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            hub = hub.name,
            devices = devices.len(),
            "cluster: a hub's lease lapsed; its devices are reported offline"
        );
        Ok(())
    }
}

/// The entries of an `XREAD` reply, per stream key (none on a timeout).
fn stream_entries(reply: &Value) -> anyhow::Result<Vec<(&[u8], Vec<RawEntry<'_>>)>> {
    let mut out = Vec::new();
    match reply {
        Value::Nil => {}
        Value::Array(streams) => {
            for stream in streams {
                let Value::Array(parts) = stream else {
                    anyhow::bail!("an XREAD stream is not an array");
                };
                let (Some(Value::BulkString(key)), Some(entries)) = (parts.first(), parts.get(1))
                else {
                    anyhow::bail!("an XREAD stream lacks its key or entries");
                };
                out.push((key.as_slice(), entries_of(entries)?));
            }
        }
        Value::Map(pairs) => {
            // RESP3: stream key → entries.
            for (key, entries) in pairs {
                let Value::BulkString(key) = key else {
                    anyhow::bail!("an XREAD stream key is not a string");
                };
                out.push((key.as_slice(), entries_of(entries)?));
            }
        }
        other => anyhow::bail!("unexpected XREAD reply {other:?}"),
    }
    Ok(out)
}

fn entries_of(entries: &Value) -> anyhow::Result<Vec<RawEntry<'_>>> {
    let Value::Array(entries) = entries else {
        anyhow::bail!("XREAD entries are not an array");
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            anyhow::bail!("an XREAD entry is not an array");
        };
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
            (parts.first(), parts.get(1))
        else {
            anyhow::bail!("an XREAD entry lacks its id or fields");
        };
        let mut raw = RawEntry {
            id: std::str::from_utf8(id).unwrap_or(""),
            ..RawEntry::default()
        };
        for pair in fields.chunks(2) {
            let [Value::BulkString(name), Value::BulkString(value)] = pair else {
                continue;
            };
            let value = Some(value.as_slice());
            match name.as_slice() {
                b"h" | b"f" => raw.hub = value,
                b"i" => raw.run = value,
                b"n" => raw.number = value,
                b"a" => raw.about = value,
                b"e" => raw.payload = value,
                _ => {}
            }
        }
        out.push(raw);
    }
    Ok(out)
}

/// The cluster's families on `/metrics` (docs/METRICS.md): served by
/// every hub, zero when it is not in a cluster.
#[derive(Debug)]
pub struct ClusterCollector {
    /// The core (for the outbox and the other hubs' devices).
    pub core: Arc<Core>,
    /// The link, if the hub is in a cluster.
    pub status: Option<Arc<ClusterStatus>>,
}

impl Collector for ClusterCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let figures = self.core.cluster_figures();
        let zero = LinkCounters::default();
        let c = self.status.as_ref().map_or(&zero, |s| &s.counters);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let up = self
            .status
            .as_ref()
            .is_some_and(|s| s.view().link == LinkState::Up)
            && figures.as_ref().is_some_and(|f| f.mode == LinkMode::Linked);
        let f = figures.unwrap_or_else(|| self.core.cluster_figures_idle());
        gauge(
            &mut e,
            "sensor_hub_cluster_enabled",
            "1 when the hub is in a cluster (cluster.enabled, docs/CLUSTER.md); the other sensor_hub_cluster_ families stay 0 while it is 0.",
            u64::from(self.status.is_some()),
        )?;
        gauge(
            &mut e,
            "sensor_hub_cluster_link_up",
            "1 while this hub's stream is the cluster's shared stream, 0 while it goes on alone.",
            u64::from(up),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_link_losses",
            "Links to Redis lost (the hub went on alone).",
            load(&c.link_losses),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_epoch_switches",
            "Changes of the stream's numbering (alone, linked, or a gap): each makes browsers resync.",
            f.switches,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_events_shared",
            "This hub's events appended to the shared stream.",
            f.outbox.shared,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_events_shared_late",
            "Of which shared after an outage (this hub's browsers had them already).",
            f.outbox.shared_late,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_events_unshared",
            "This hub's events never shared: dropped, oldest first, when more than cluster.outage_bytes waited.",
            f.outbox.unshared,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_datagrams_unshared",
            "Datagrams inside the events never shared.",
            f.outbox.unshared_datagrams,
        )?;
        gauge(
            &mut e,
            "sensor_hub_cluster_outbox_events",
            "This hub's events waiting to be shared (or read back).",
            f.outbox_events as u64,
        )?;
        gauge(
            &mut e,
            "sensor_hub_cluster_outbox_bytes",
            "Their estimated size (at most cluster.outage_bytes).",
            f.outbox_bytes as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_events_received",
            "Other hubs' entries of the shared stream applied here.",
            load(&c.events_received),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_entries_invalid",
            "Entries of the shared stream that did not decode (dropped).",
            load(&c.entries_invalid),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_entries_out_of_order",
            "Shared entries not delivered because they came out of order (never expected).",
            f.out_of_order,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_positions_missed",
            "Shared positions the stream no longer held when this hub read (raise cluster.stream_max_len).",
            load(&c.positions_missed),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_appends",
            "Append calls to Redis (each a batch of events).",
            load(&c.appends),
        )?;
        gauge(
            &mut e,
            "sensor_hub_cluster_remote_devices",
            "Devices other hubs hold, as this hub knows them.",
            f.remote_devices as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_remote_untracked",
            "Events about other hubs' devices not tracked because limits.max_devices were known.",
            f.remote_untracked,
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_hubs_lost_reported",
            "Hubs whose lease lapsed and whose devices this hub reported offline.",
            load(&c.hubs_lost_reported),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_commands_handed_over",
            "Commands for devices other hubs hold, handed to those hubs.",
            load(&c.commands_handed_over),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_commands_taken_over",
            "Commands other hubs handed to this one, submitted here.",
            load(&c.commands_taken_over),
        )?;
        counter(
            &mut e,
            "sensor_hub_cluster_commands_dropped",
            "Commands handed to this hub and not run: older than commands.ttl_ms, for a device it does not hold, or undecodable.",
            load(&c.commands_dropped),
        )
    }
}
