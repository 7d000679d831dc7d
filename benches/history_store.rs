//! Sustained write throughput of the history database and what it costs on
//! disk: for several fleet shapes, a simulated stream of readings (hub
//! receive times advancing in simulated time, values from device-sim's
//! drifting sensor signals) is written with `Store::write` in batches of one
//! simulated second — what the hub's writer does once per flush interval —
//! into a fresh database in the temporary directory.
//!
//! Per shape it reports the readings written per second of wall clock spent
//! inside `Store::write`, the milliseconds per 1-s batch (median, p99, max:
//! a writer that needs more than 1,000 ms per batch falls behind), database
//! bytes per reading (the `.db` file plus `-wal` after
//! `PRAGMA wal_checkpoint(TRUNCATE)`), how those bytes split between raw rows
//! (tables `journal` and `raw`) and aggregates (SQLite's `dbstat` table), and
//! the bytes the process handed to the kernel while writing (`wchar` of
//! `/proc/self/io`: WAL frames plus checkpoint copies into the database) and
//! the bytes it caused to be sent to storage (`write_bytes`). From those it
//! derives the SD-card wear of N devices × 3 sensors at 1 Hz.
//!
//! `--aged` first writes days of sparse history into each database (see
//! [`Age`]), so that the measurement sees the page layout of a hub that has
//! been running for a while rather than a fresh, densely packed file.
//!
//! ```sh
//! cargo bench --bench history_store                 # full, median of 3 runs
//! cargo bench --bench history_store -- --quick      # a few seconds
//! cargo bench --bench history_store -- --aged --only tiny,home,1k
//! cargo bench --bench history_store -- --runs 5 --json --only home,1k
//! ```
//!
//! `tests/bench_smoke.rs` includes this file as a module and runs the quick
//! configuration, so it has to compile and work as a library too.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use device_sim::bench::report::median;
use device_sim::{build_fleet, FleetSpec, SimDevice};
use rusqlite::Connection;
use sensor_hub::history::{Reading, Store};
use sensor_hub::state::numeric;
use serde::Serialize;

/// Simulated start: 5 s before a minute boundary (and 59 min 5 s before an
/// hour boundary), so even a short run crosses into a new minute.
const START_MS: u64 = 1_763_730_000_000 + 55_000;
/// One batch per simulated second, as the hub's default flush interval.
const BATCH_MS: u64 = 1_000;
/// Sensors per device (device-sim's fleet profiles all have three).
const SENSORS: u64 = 3;
/// The "late" window: the last this many batches of a run.
const LATE_BATCHES: u64 = 60;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// A fleet and how long to simulate it.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Short name (`--only`).
    pub name: &'static str,
    /// Devices, each with three sensors.
    pub devices: u32,
    /// Reports per second of every device.
    pub hz: u32,
    /// Simulated seconds, i.e. batches.
    pub sim_seconds: u64,
}

impl Shape {
    /// Readings offered per simulated second.
    pub fn readings_per_s(&self) -> u64 {
        u64::from(self.devices) * SENSORS * u64::from(self.hz)
    }

    fn label(&self) -> String {
        format!("{} × 3 @ {} Hz", group(u64::from(self.devices)), self.hz)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per shape (the median is reported).
    pub runs: usize,
    /// The fleet shapes.
    pub shapes: Vec<Shape>,
    /// Print one JSON line instead of tables.
    pub json: bool,
    /// Give each database this history before measuring (`--aged`).
    pub age: Option<Age>,
}

/// The history `--aged` writes before the measurement, per sensor: one
/// reading per hour for `hours` hours, then one per minute for `minutes`
/// minutes, up to the start of the run. A database that has run for days
/// has each sensor's raw index entries, minute rows and hour rows on pages
/// of its own; a fresh one packs many sensors into each page, so a batch
/// touches fewer pages. 100 h and 100 min give every sensor more than a
/// page of each.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Age {
    /// Hours of hourly readings.
    pub hours: u64,
    /// Minutes of per-minute readings.
    pub minutes: u64,
}

impl Age {
    /// For the full benchmark.
    pub const FULL: Age = Age {
        hours: 100,
        minutes: 100,
    };
    /// For `--quick` (enough to exercise it, not to reach steady state).
    pub const QUICK: Age = Age {
        hours: 4,
        minutes: 5,
    };

    /// Readings it writes per sensor.
    pub fn readings_per_sensor(&self) -> u64 {
        self.hours.saturating_sub(self.minutes / 60) + self.minutes
    }
}

impl Config {
    /// The full benchmark: each run lasts a few seconds of wall time.
    pub fn full() -> Config {
        Config {
            runs: 3,
            shapes: vec![
                shape("tiny", 10, 1, 3_600),
                shape("home", 100, 1, 1_200),
                shape("1k", 1_000, 1, 300),
                shape("10k", 10_000, 1, 70),
                shape("fast", 100, 100, 60),
            ],
            json: false,
            age: None,
        }
    }

    /// Every shape for 15 simulated seconds (crossing one minute), one run.
    pub fn quick() -> Config {
        let mut config = Config::full();
        config.runs = 1;
        for s in &mut config.shapes {
            s.sim_seconds = 15;
        }
        config
    }

    /// Parses `--runs N`, `--quick`, `--json`, `--aged`, `--only a,b`;
    /// ignores other flags (`cargo bench` passes `--bench`).
    pub fn from_args(args: &[String]) -> Result<Config> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut config = if quick {
            Config::quick()
        } else {
            Config::full()
        };
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--json" => config.json = true,
                "--aged" => config.age = Some(if quick { Age::QUICK } else { Age::FULL }),
                "--runs" => {
                    let n = args.get(i + 1).context("--runs needs a number")?;
                    config.runs = n
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .with_context(|| format!("--runs {n}: expected a number ≥ 1"))?;
                    i += 1;
                }
                "--only" => {
                    let list = args.get(i + 1).context("--only needs shape names")?;
                    let names: Vec<&str> = list.split(',').map(str::trim).collect();
                    let known: Vec<&str> = config.shapes.iter().map(|s| s.name).collect();
                    if let Some(bad) = names.iter().find(|n| !known.contains(n)) {
                        bail!(
                            "--only {bad}: unknown shape; shapes are {}",
                            known.join(",")
                        );
                    }
                    config.shapes.retain(|s| names.contains(&s.name));
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(config)
    }
}

fn shape(name: &'static str, devices: u32, hz: u32, sim_seconds: u64) -> Shape {
    Shape {
        name,
        devices,
        hz,
        sim_seconds,
    }
}

/// The I/O counters of `/proc/self/io` (whole process).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Io {
    /// Bytes passed to write(2) and friends.
    pub wchar: u64,
    /// write(2) calls.
    pub syscw: u64,
    /// Bytes this process caused to be sent to the storage layer.
    pub write_bytes: u64,
    /// Of those, bytes that never reached storage (file truncated first).
    pub cancelled_write_bytes: u64,
}

impl Io {
    /// The counters now; `None` where `/proc/self/io` is missing.
    pub fn now() -> Option<Io> {
        let text = fs::read_to_string("/proc/self/io").ok()?;
        let mut io = Io::default();
        for line in text.lines() {
            let (key, value) = line.split_once(':')?;
            let value: u64 = value.trim().parse().ok()?;
            match key {
                "wchar" => io.wchar = value,
                "syscw" => io.syscw = value,
                "write_bytes" => io.write_bytes = value,
                "cancelled_write_bytes" => io.cancelled_write_bytes = value,
                _ => {}
            }
        }
        Some(io)
    }

    fn since(self, before: Io) -> Io {
        Io {
            wchar: self.wchar.saturating_sub(before.wchar),
            syscw: self.syscw.saturating_sub(before.syscw),
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
            cancelled_write_bytes: self
                .cancelled_write_bytes
                .saturating_sub(before.cancelled_write_bytes),
        }
    }
}

/// Bytes of the database by what they hold (from `dbstat`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Split {
    /// Raw readings: tables `journal` (the open minute) and `raw`.
    pub raw_bytes: u64,
    /// Table `agg` (minute and hour aggregates).
    pub agg_bytes: u64,
    /// Every other b-tree (schema, `meta`, devices, channels) and free
    /// pages.
    pub other_bytes: u64,
}

/// One run of one shape.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Readings written (and measured).
    pub readings: u64,
    /// Readings written by `--aged` before the measurement.
    pub aged_readings: u64,
    /// `Store::write` calls.
    pub batches: u64,
    /// Wall time inside `Store::write`, s.
    pub write_s: f64,
    /// Readings per second of `write_s`.
    pub readings_per_s: f64,
    /// Median ms per batch.
    pub batch_ms_p50: f64,
    /// 99th percentile ms per batch (nearest rank).
    pub batch_ms_p99: f64,
    /// Slowest batch, ms.
    pub batch_ms_max: f64,
    /// Median ms per batch over the last minute of the run.
    pub late_batch_ms_p50: f64,
    /// `.db` plus `-wal` after a TRUNCATE checkpoint, before the
    /// measurement (0 unless aged).
    pub db_bytes_before: u64,
    /// Growth of `.db` plus `-wal` (after TRUNCATE checkpoints) during the
    /// measurement.
    pub db_bytes: u64,
    /// `db_bytes` per reading.
    pub db_bytes_per_reading: f64,
    /// Database page size.
    pub page_size: u64,
    /// Growth by content; `None` if `dbstat` is not compiled in.
    pub split: Option<Split>,
    /// I/O from before the first write to after the final checkpoint;
    /// `None` without `/proc/self/io`.
    pub io: Option<Io>,
    /// `io.wchar` per reading.
    pub wchar_per_reading: Option<f64>,
    /// `io.write_bytes` per reading.
    pub write_bytes_per_reading: Option<f64>,
    /// `wchar` per reading over the last minute of the run (including the
    /// final checkpoint), when the database is largest.
    pub late_wchar_per_reading: Option<f64>,
}

/// The runs of one shape and their medians.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeResult {
    /// Short name.
    pub name: &'static str,
    /// Devices.
    pub devices: u32,
    /// Sensors per device.
    pub sensors: u64,
    /// Reports per second per device.
    pub hz: u32,
    /// Simulated seconds (batches).
    pub sim_seconds: u64,
    /// Median over runs of every field, each on its own.
    pub median: Median,
    /// Every run.
    pub runs: Vec<RunResult>,
}

/// Medians over runs.
#[derive(Debug, Clone, Serialize)]
pub struct Median {
    /// Readings per run.
    pub readings: f64,
    /// Readings per second of `Store::write` wall time.
    pub readings_per_s: f64,
    /// ms per batch: median.
    pub batch_ms_p50: f64,
    /// ms per batch: 99th percentile.
    pub batch_ms_p99: f64,
    /// ms per batch: slowest.
    pub batch_ms_max: f64,
    /// ms per batch: median over the last minute.
    pub late_batch_ms_p50: f64,
    /// Database bytes per reading.
    pub db_bytes_per_reading: f64,
    /// Raw table and indexes, bytes per reading.
    pub raw_bytes_per_reading: Option<f64>,
    /// Aggregates, bytes per reading.
    pub agg_bytes_per_reading: Option<f64>,
    /// Bytes passed to write(2) per reading.
    pub wchar_per_reading: Option<f64>,
    /// Bytes sent to storage per reading.
    pub write_bytes_per_reading: Option<f64>,
    /// `wchar` per reading over the last minute.
    pub late_wchar_per_reading: Option<f64>,
}

/// SD-card wear of one fleet size, from a measured 1 Hz shape.
#[derive(Debug, Clone, Serialize)]
pub struct Wear {
    /// Devices (× 3 sensors at 1 Hz).
    pub devices: u32,
    /// Readings per day.
    pub readings_per_day: f64,
    /// Database bytes per reading × readings per day: what a day of raw
    /// rows (the default raw retention) and their aggregates occupy.
    pub db_growth_per_day: f64,
    /// The naive estimate: every byte of growth written twice (WAL +
    /// checkpoint).
    pub naive_card_bytes_per_day: f64,
    /// Measured: `wchar` per reading × readings per day.
    pub wchar_per_day: Option<f64>,
    /// The same as an average rate, bytes/s.
    pub wchar_per_s: Option<f64>,
    /// Measured over the last minute of the runs, per day.
    pub late_wchar_per_day: Option<f64>,
    /// Measured: `write_bytes` per reading × readings per day.
    pub write_bytes_per_day: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Runs per shape.
    pub runs: usize,
    /// The history each database was given first (`--aged`), if any.
    pub age: Option<Age>,
    /// The directory the databases were created in.
    pub temp_dir: String,
    /// Its filesystem type (from `/proc/self/mounts`), if known.
    pub filesystem: Option<String>,
    /// SQLite version.
    pub sqlite: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Per shape.
    pub shapes: Vec<ShapeResult>,
    /// SD-card wear for 10, 100, 1,000 devices × 3 sensors at 1 Hz.
    pub wear: Vec<Wear>,
}

/// A directory removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "sensor-hub-history-bench-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The simulated fleet: device-sim's devices, each reporting every
/// `interval_ms` from its own phase; readings reach the hub 0–3 ms after
/// they are sent and are batched by hub receive time, in arrival order.
#[derive(Debug)]
struct Stream {
    devices: Vec<SimDevice>,
    next_send_ms: Vec<u64>,
    rng: fastrand::Rng,
    /// Received after the end of the batch being built.
    pending: Vec<Reading>,
}

impl Stream {
    fn new(shape: &Shape, seed: u64) -> Stream {
        let interval_ms = (1_000 / u64::from(shape.hz.max(1))).max(1);
        let devices = build_fleet(&FleetSpec {
            devices: shape.devices,
            first_id: 1,
            interval_ms,
            seed,
        });
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        let next_send_ms = devices
            .iter()
            .map(|_| START_MS + rng.u64(0..interval_ms))
            .collect();
        Stream {
            devices,
            next_send_ms,
            rng,
            pending: Vec::new(),
        }
    }

    /// The readings received in `[start_ms, start_ms + BATCH_MS)`.
    fn batch(&mut self, start_ms: u64, out: &mut Vec<Reading>) {
        let end_ms = start_ms + BATCH_MS;
        for (device, next) in self.devices.iter_mut().zip(&mut self.next_send_ms) {
            while *next < end_ms {
                let datagram = device.next_datagram(*next);
                let received_ms = *next + self.rng.u64(0..=3);
                for r in &datagram.readings {
                    self.pending.push(Reading {
                        device: datagram.device_id,
                        channel: r.channel,
                        t_ms: received_ms,
                        value: numeric(r.value),
                    });
                }
                *next += device.interval_ms;
            }
        }
        // Arrival order; stable, so a datagram's readings stay together.
        self.pending.sort_by_key(|r| r.t_ms);
        let split = self.pending.partition_point(|r| r.t_ms < end_ms);
        out.clear();
        out.extend(self.pending.drain(..split));
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    values.map(median)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes per b-tree from `dbstat`; `None` when it is not compiled in.
fn split(conn: &Connection, db_bytes: u64) -> Option<Split> {
    let mut stmt = conn
        .prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        .ok()?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .ok()?;
    let mut s = Split::default();
    let mut counted = 0u64;
    for row in rows {
        let (name, bytes) = row.ok()?;
        let bytes = u64::try_from(bytes).ok()?;
        match name.as_str() {
            "raw" | "journal" => s.raw_bytes += bytes,
            "agg" => s.agg_bytes += bytes,
            _ => s.other_bytes += bytes,
        }
        counted += bytes;
    }
    // Free pages are in no b-tree.
    s.other_bytes += db_bytes.saturating_sub(counted);
    Some(s)
}

impl Split {
    fn since(self, before: Split) -> Split {
        Split {
            raw_bytes: self.raw_bytes.saturating_sub(before.raw_bytes),
            agg_bytes: self.agg_bytes.saturating_sub(before.agg_bytes),
            other_bytes: self.other_bytes.saturating_sub(before.other_bytes),
        }
    }
}

/// The size of the database and what it holds.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    /// `.db` plus `-wal`.
    bytes: u64,
    split: Option<Split>,
    page_size: u64,
}

/// Checkpoints the WAL into the database file and truncates it, from a
/// second connection (the store holds no transaction open between
/// writes), then measures the files.
fn checkpoint_and_measure(path: &Path, with_split: bool) -> Result<Footprint> {
    let conn = Connection::open(path).context("opening a second connection")?;
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .context("checkpoint")?;
    if busy != 0 {
        bail!("the TRUNCATE checkpoint was blocked");
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = file_len(path) + file_len(Path::new(&wal));
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .context("page_size")?;
    Ok(Footprint {
        bytes,
        split: if with_split {
            split(&conn, bytes)
        } else {
            None
        },
        page_size: u64::try_from(page_size).unwrap_or(0),
    })
}

/// Writes `age` for every sensor of `shape` through `Store::write`, in
/// large batches, oldest first. Returns the readings written.
fn write_history(store: &mut Store, shape: &Shape, age: Age) -> Result<u64> {
    const HOUR_MS: u64 = 3_600_000;
    const MINUTE_MS: u64 = 60_000;
    // Hourly readings end where the per-minute ones begin.
    let hours = (age.minutes / 60 + 1..=age.hours)
        .rev()
        .map(|h| START_MS - h * HOUR_MS);
    let minutes = (1..=age.minutes).rev().map(|m| START_MS - m * MINUTE_MS);
    let mut batch = Vec::new();
    let mut written = 0u64;
    for t_ms in hours.chain(minutes) {
        for device in 1..=shape.devices {
            for channel in 0..SENSORS as u8 {
                let phase = f64::from(device) + f64::from(channel) * 0.3;
                let value = 20.0 + 5.0 * (t_ms as f64 / 3.6e6 + phase).sin();
                batch.push(Reading {
                    device,
                    channel,
                    t_ms,
                    value: f64::from(value as f32),
                });
            }
        }
        if batch.len() >= 100_000 {
            written += store.write(&batch).context("Store::write (ageing)")? as u64;
            batch.clear();
        }
    }
    written += store.write(&batch).context("Store::write (ageing)")? as u64;
    Ok(written)
}

/// Writes one shape's stream into a fresh database (given `age` first, if
/// any) and measures it.
pub fn run_once(shape: &Shape, run: usize, age: Option<Age>) -> Result<RunResult> {
    let dir = TempDir::new(&format!("{}-{run}", shape.name))?;
    let path = dir.0.join("history.db");
    let mut store = Store::open(&path).context("opening the history database")?;
    let (aged_readings, before) = match age {
        Some(age) => {
            let n = write_history(&mut store, shape, age)?;
            (n, checkpoint_and_measure(&path, true)?)
        }
        None => (0, Footprint::default()),
    };
    let mut stream = Stream::new(shape, 1 + run as u64);
    let mut batch = Vec::with_capacity(shape.readings_per_s() as usize * 2);
    let mut times_ms = Vec::with_capacity(shape.sim_seconds as usize);
    let mut readings = 0u64;
    let mut late_readings = 0u64;
    let late_from = shape.sim_seconds.saturating_sub(LATE_BATCHES);
    let mut late_io = None;

    let io_before = Io::now();
    for second in 0..shape.sim_seconds {
        stream.batch(START_MS + second * BATCH_MS, &mut batch);
        if second == late_from {
            late_io = Io::now();
        }
        let started = Instant::now();
        let written = store.write(&batch).context("Store::write")?;
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if written != batch.len() {
            bail!("Store::write wrote {written} of {} readings", batch.len());
        }
        readings += written as u64;
        if second >= late_from {
            late_readings += written as u64;
        }
    }
    // Every WAL frame gets its copy into the database file, as the
    // auto-checkpoints of a running hub would eventually do. (`dbstat`
    // only reads.)
    let after = checkpoint_and_measure(&path, true)?;
    let io_after = Io::now();
    drop(store);

    let write_s = times_ms.iter().sum::<f64>() / 1e3;
    let late_p50 = median(times_ms[late_from as usize..].to_vec());
    times_ms.sort_by(f64::total_cmp);
    let io = io_before.zip(io_after).map(|(b, a)| a.since(b));
    let per_reading = |bytes: u64, n: u64| bytes as f64 / n.max(1) as f64;
    let db_bytes = after.bytes.saturating_sub(before.bytes);
    Ok(RunResult {
        readings,
        aged_readings,
        batches: shape.sim_seconds,
        write_s,
        readings_per_s: readings as f64 / write_s.max(1e-9),
        batch_ms_p50: percentile(&times_ms, 0.5),
        batch_ms_p99: percentile(&times_ms, 0.99),
        batch_ms_max: times_ms.last().copied().unwrap_or(0.0),
        late_batch_ms_p50: late_p50,
        db_bytes_before: before.bytes,
        db_bytes,
        db_bytes_per_reading: per_reading(db_bytes, readings),
        page_size: after.page_size,
        split: match (after.split, before.split) {
            (Some(after), Some(before)) => Some(after.since(before)),
            (after, _) => after,
        },
        io,
        wchar_per_reading: io.map(|io| per_reading(io.wchar, readings)),
        write_bytes_per_reading: io.map(|io| per_reading(io.write_bytes, readings)),
        late_wchar_per_reading: late_io
            .zip(io_after)
            .map(|(b, a)| per_reading(a.since(b).wchar, late_readings)),
    })
}

/// Runs every shape `config.runs` times.
pub fn run(config: &Config) -> Result<Report> {
    let mut shapes = Vec::new();
    for shape in &config.shapes {
        let mut runs = Vec::new();
        for run in 0..config.runs {
            eprint!(
                "history_store: {} ({}, {} s simulated), run {}/{} … ",
                shape.name,
                shape.label(),
                shape.sim_seconds,
                run + 1,
                config.runs
            );
            let _ = std::io::stderr().flush();
            let r = run_once(shape, run, config.age)?;
            eprintln!(
                "{} readings/s, {:.1} B/reading",
                group(r.readings_per_s as u64),
                r.db_bytes_per_reading
            );
            runs.push(r);
        }
        let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
        let per = |r: &RunResult, bytes: fn(&Split) -> u64| {
            r.split.map(|s| bytes(&s) as f64 / r.readings.max(1) as f64)
        };
        let median = Median {
            readings: m(|r| r.readings as f64),
            readings_per_s: m(|r| r.readings_per_s),
            batch_ms_p50: m(|r| r.batch_ms_p50),
            batch_ms_p99: m(|r| r.batch_ms_p99),
            batch_ms_max: m(|r| r.batch_ms_max),
            late_batch_ms_p50: m(|r| r.late_batch_ms_p50),
            db_bytes_per_reading: m(|r| r.db_bytes_per_reading),
            raw_bytes_per_reading: median_of(runs.iter().map(|r| per(r, |s| s.raw_bytes))),
            agg_bytes_per_reading: median_of(runs.iter().map(|r| per(r, |s| s.agg_bytes))),
            wchar_per_reading: median_of(runs.iter().map(|r| r.wchar_per_reading)),
            write_bytes_per_reading: median_of(runs.iter().map(|r| r.write_bytes_per_reading)),
            late_wchar_per_reading: median_of(runs.iter().map(|r| r.late_wchar_per_reading)),
        };
        shapes.push(ShapeResult {
            name: shape.name,
            devices: shape.devices,
            sensors: SENSORS,
            hz: shape.hz,
            sim_seconds: shape.sim_seconds,
            median,
            runs,
        });
    }
    let wear = [10, 100, 1_000]
        .into_iter()
        .filter_map(|n| {
            let s = shapes.iter().find(|s| s.devices == n && s.hz == 1)?;
            Some(wear(n, &s.median))
        })
        .collect();
    let temp_dir = std::env::temp_dir();
    Ok(Report {
        runs: config.runs,
        age: config.age,
        filesystem: filesystem_of(&temp_dir),
        temp_dir: temp_dir.display().to_string(),
        sqlite: rusqlite::version().to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        shapes,
        wear,
    })
}

fn wear(devices: u32, m: &Median) -> Wear {
    let readings_per_day = f64::from(devices) * SENSORS as f64 * SECONDS_PER_DAY;
    let db_growth_per_day = m.db_bytes_per_reading * readings_per_day;
    let wchar_per_day = m.wchar_per_reading.map(|b| b * readings_per_day);
    let write_bytes = m
        .write_bytes_per_reading
        .filter(|&b| b > 0.0)
        .map(|b| b * readings_per_day);
    Wear {
        devices,
        readings_per_day,
        db_growth_per_day,
        naive_card_bytes_per_day: 2.0 * db_growth_per_day,
        wchar_per_day,
        wchar_per_s: wchar_per_day.map(|b| b / SECONDS_PER_DAY),
        late_wchar_per_day: m.late_wchar_per_reading.map(|b| b * readings_per_day),
        write_bytes_per_day: write_bytes,
    }
}

/// The type of the filesystem holding `dir`: the longest mount point in
/// `/proc/self/mounts` that contains it.
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{kind} ({device} on {point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units.
fn size(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn opt(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "n/a".to_string(), f)
}

impl Report {
    /// One line of JSON.
    pub fn json(&self) -> Result<String> {
        serde_json::to_string(self).context("serialising the report")
    }

    /// Markdown tables for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let fs = self.filesystem.as_deref().unwrap_or("unknown filesystem");
        let db = match self.age {
            Some(age) => format!(
                "a database aged with {} h of hourly and {} min of per-minute readings per sensor \
                 (per-reading sizes are its growth)",
                age.hours, age.minutes
            ),
            None => "a fresh database".to_string(),
        };
        t += &format!(
            "History writes: Store::write of 1-s batches into {db} in {} [{fs}], \
             SQLite {}, {} cores; medians of {} run(s)\n\n",
            self.temp_dir, self.sqlite, self.cores, self.runs
        );
        t += "| fleet | readings/s offered | simulated | readings | written/s | ms/batch p50 | p99 | max | last-minute p50 | DB B/reading | raw | agg | wchar B/reading | last-minute wchar | write_bytes B/reading |\n";
        t += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for s in &self.shapes {
            let m = &s.median;
            let offered = u64::from(s.devices) * s.sensors * u64::from(s.hz);
            t += &format!(
                "| {} × 3 @ {} Hz | {} | {} s | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} |\n",
                group(u64::from(s.devices)),
                s.hz,
                group(offered),
                group(s.sim_seconds),
                group(m.readings as u64),
                group(m.readings_per_s as u64),
                m.batch_ms_p50,
                m.batch_ms_p99,
                m.batch_ms_max,
                m.late_batch_ms_p50,
                m.db_bytes_per_reading,
                opt(m.raw_bytes_per_reading, |b| format!("{b:.1}")),
                opt(m.agg_bytes_per_reading, |b| format!("{b:.1}")),
                opt(m.wchar_per_reading, |b| format!("{b:.0}")),
                opt(m.late_wchar_per_reading, |b| format!("{b:.0}")),
                opt(m.write_bytes_per_reading, |b| format!("{b:.0}")),
            );
        }
        t += "\nAll runs (written/s; ms/batch p50 / max; DB B/reading; wchar B/reading):\n\n";
        for s in &self.shapes {
            let runs: Vec<String> = s
                .runs
                .iter()
                .map(|r| {
                    format!(
                        "{}/s {:.2}/{:.2} ms {:.1} B {}",
                        group(r.readings_per_s as u64),
                        r.batch_ms_p50,
                        r.batch_ms_max,
                        r.db_bytes_per_reading,
                        opt(r.wchar_per_reading, |b| format!("{b:.0} B")),
                    )
                })
                .collect();
            t += &format!("- {}: {}\n", s.name, runs.join(" · "));
        }
        if !self.wear.is_empty() {
            t += "\nSD-card wear, N devices × 3 sensors at 1 Hz (from the measured per-reading figures):\n\n";
            t += "| devices | readings/day | DB growth/day | naive card writes/day (2 × growth) | measured wchar/day | average write rate | last-minute wchar/day | write_bytes/day |\n";
            t += "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
            for w in &self.wear {
                t += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    group(u64::from(w.devices)),
                    group(w.readings_per_day as u64),
                    size(w.db_growth_per_day),
                    size(w.naive_card_bytes_per_day),
                    opt(w.wchar_per_day, size),
                    opt(w.wchar_per_s, |b| format!("{}/s", size(b))),
                    opt(w.late_wchar_per_day, size),
                    opt(w.write_bytes_per_day, size),
                );
            }
        }
        t
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_args(&args)?;
    let report = run(&config)?;
    if config.json {
        println!("{}", report.json()?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
