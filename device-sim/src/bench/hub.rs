//! The hub under test: a separate `sensor-hub run` process on loopback
//! port-0 addresses with its history database in a temporary directory
//! (storage on, as the hub ships), its CPU time and resident memory from
//! `/proc`, and its own counters from `GET /api/hub`; a scenario may add
//! environment (e.g. the MQTT bridge's `SENSOR_HUB__MQTT__…`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::keys::{device_key, KeySeed};

/// Fleet token the benchmarked hub accepts.
pub const TOKEN: &str = "bench-fleet-token-0000";

/// A running hub process, killed on drop (and its database removed).
#[derive(Debug)]
pub struct HubProcess {
    child: Child,
    storage_dir: PathBuf,
    /// Its UDP address.
    pub udp: SocketAddr,
    /// Its control address.
    pub control: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// A viewer API token the bench made for it (`None` for a hub from
    /// before access control, which needs none).
    pub token: Option<String>,
}

/// Which devices the hub's device file adopts before it starts.
#[derive(Debug, Clone, Copy)]
pub struct Adoption {
    /// Devices 1..=devices are adopted (the senders' ids).
    pub devices: u32,
    /// With keys derived from this seed (see [`crate::keys`]); none:
    /// adopted without keys, their datagrams untagged.
    pub key_seed: Option<KeySeed>,
}

/// Writes the device file with `bin device import`; false for a hub from
/// before device adoption (no `device` command), which needs none.
fn adopt(bin: &Path, file: &Path, adoption: Adoption) -> anyhow::Result<bool> {
    let list: Vec<serde_json::Value> = (1..=adoption.devices)
        .map(|id| {
            serde_json::json!({
                "id": id,
                "name": format!("bench-{id}"),
                "key": adoption.key_seed.map(|seed| crate::keys::hex(&device_key(&seed, id))),
            })
        })
        .collect();
    let mut child = Command::new(bin)
        .args(["device", "import", "-"])
        .env("SENSOR_HUB__DEVICES__KEYS_PATH", file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {} device import", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(serde_json::to_string(&list)?.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() && adoption.key_seed.is_some() {
        bail!(
            "{} device import failed: this hub cannot adopt devices with keys",
            bin.display()
        );
    }
    Ok(status.success())
}

/// CPU time and memory of a process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was taken.
    pub at: Instant,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// Peak resident memory since start, KiB.
    pub peak_rss_kib: u64,
}

impl HubProcess {
    /// Starts `bin run` with loopback port-0 binds and the limits a
    /// benchmark needs (history on or off as `storage` says), and waits for
    /// it to report its addresses.
    pub fn start(bin: &Path, storage: bool, adoption: Adoption) -> anyhow::Result<HubProcess> {
        HubProcess::start_with_env(bin, storage, adoption, &[])
    }

    /// [`HubProcess::start`] with `env` (e.g. `SENSOR_HUB__MQTT__…`
    /// overrides) added to the hub's environment, after the bench's own.
    pub fn start_with_env(
        bin: &Path,
        storage: bool,
        adoption: Adoption,
        env: &[(String, String)],
    ) -> anyhow::Result<HubProcess> {
        let storage_dir = std::env::temp_dir().join(format!(
            "device-sim-bench-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&storage_dir)
            .with_context(|| format!("creating {}", storage_dir.display()))?;
        let credentials = storage_dir.join("credentials.json");
        // The bench reads like a dashboard would: with a viewer token, made
        // the way a user makes one. A hub from before access control has no
        // `token` command and needs none.
        let made = Command::new(bin)
            .args(["token", "create", "--name", "bench", "--role", "viewer"])
            .env("SENSOR_HUB__AUTH__CREDENTIALS_PATH", &credentials)
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {} token create", bin.display()))?;
        let token = made
            .status
            .success()
            .then(|| String::from_utf8_lossy(&made.stdout).trim().to_string())
            .filter(|t| !t.is_empty());
        let devices = storage_dir.join("devices.json");
        let mut command = Command::new(bin);
        // A hub from before device adoption knows no `[devices]`.
        if adopt(bin, &devices, adoption)? {
            command.env("SENSOR_HUB__DEVICES__KEYS_PATH", &devices);
        }
        let mut child = command
            .arg("run")
            .env("SENSOR_HUB__AUTH__CREDENTIALS_PATH", &credentials)
            .env("SENSOR_HUB__STORAGE__PATH", storage_dir.join("history.db"))
            .env("SENSOR_HUB__STORAGE__ENABLED", storage.to_string())
            .env("SENSOR_HUB__UDP__BIND", "127.0.0.1:0")
            .env("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0")
            .env("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0")
            .env("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN)
            .env("SENSOR_HUB__WS__MAX_CLIENTS", "4000")
            // Every client of the benchmark comes from loopback.
            .env("SENSOR_HUB__WS__MAX_CLIENTS_PER_ADDRESS", "4000")
            .env("SENSOR_HUB__HTTP__MAX_CONNECTIONS", "5000")
            .env("SENSOR_HUB__CONTROL__MAX_CONNECTIONS", "20000")
            .env("SENSOR_HUB__LIMITS__MAX_DEVICES", "20000")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the hub {}", bin.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no hub stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("sensor-hub listening"))
            .ok_or_else(|| {
                anyhow!(
                    "the hub exited before listening (is {} a sensor-hub binary?)",
                    bin.display()
                )
            })?;
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            let start = line
                .find(&format!("{key}="))
                .ok_or_else(|| anyhow!("no {key} in {line}"))?
                + key.len()
                + 1;
            let rest = &line[start..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            Ok(rest[..end].parse()?)
        };
        Ok(HubProcess {
            udp: addr("udp")?,
            control: addr("control")?,
            http: addr("http")?,
            token,
            child,
            storage_dir,
        })
    }

    /// CPU and memory now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        sample_pid(self.child.id())
    }

    /// `GET /api/hub`, parsed.
    pub fn api_hub(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.get("/api/hub")?)?)
    }

    /// `GET path` with the bench's viewer token; the body (an error unless
    /// the answer is 200).
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.http
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("bad HTTP answer"))?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    /// A counter of `/api/hub` (e.g. "datagrams_accepted").
    pub fn counter(&self, key: &str) -> anyhow::Result<u64> {
        let v = self.api_hub()?;
        Ok(v[key].as_u64().unwrap_or(0))
    }

    /// Waits until the history has written everything queued (nothing
    /// waiting, and the written count stable over one flush interval), at
    /// most `limit`. Returns `/api/hub`'s `history` object then (null when
    /// storage is off).
    pub fn history_drained(&self, limit: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        let mut last = self.api_hub()?["history"].clone();
        loop {
            if last.is_null() || Instant::now() >= deadline {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(1_100));
            let now = self.api_hub()?["history"].clone();
            if now["waiting"] == 0 && now["written"] == last["written"] {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Waits until `datagrams_received` stops growing (the socket is drained).
    pub fn settle(&self) -> anyhow::Result<()> {
        let mut last = self.counter("datagrams_received")?;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.counter("datagrams_received")?;
            if now == last {
                return Ok(());
            }
            last = now;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

/// CPU and memory of process `pid` now (the hub, or another process a
/// scenario runs beside it, e.g. its MQTT broker).
pub fn sample_pid(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces).
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc stat"))?
            .parse()?)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let cpu_ticks = field(11)? + field(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        at: Instant::now(),
        cpu_ticks,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

/// Clock ticks per second for `/proc` CPU times.
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(a: &ProcSample, b: &ProcSample, ticks_per_s: u64) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / ticks_per_s as f64 / secs * 100.0
}
