//! `device-sim`: runs a simulated fleet against a hub.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Simulated sensor devices for the sensor hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark a hub binary: ingest against a raw UDP sink, latency, fan-out,
    /// the MQTT bridge against a local Mosquitto (see BENCHMARKS.md). Prints a
    /// table, then one JSON line.
    Bench {
        /// The sensor-hub binary to start (default: the one beside this binary).
        #[arg(long)]
        hub_bin: Option<std::path::PathBuf>,
        /// A run of seconds with small figures, to check the bench works.
        #[arg(long)]
        quick: bool,
        /// Repetitions of every measurement (the median is reported).
        #[arg(long)]
        runs: Option<usize>,
        /// Print only the JSON line.
        #[arg(long)]
        json: bool,
        /// Run only these scenarios (comma-separated: ingest, auth, latency,
        /// fanout, mqtt, cluster, memory; mqtt starts a Mosquitto broker,
        /// cluster a Redis).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run the hub without its history database (storage.enabled =
        /// false), to compare with the default.
        #[arg(long)]
        no_storage: bool,
    },
    /// Send a fleet's readings to a hub until interrupted (or for
    /// --duration-s), with faults injected if asked.
    Run(device_sim::run_command::RunArgs),
    /// Print a keyed fleet's devices and keys for `sensor-hub device import`.
    Keys(device_sim::run_command::KeysArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    init_logging(&command);
    match command {
        Command::Bench {
            hub_bin,
            quick,
            runs,
            json,
            only,
            no_storage,
        } => bench(hub_bin, quick, runs, json, only, no_storage).await,
        Command::Run(args) => device_sim::run_command::run(args).await,
        Command::Keys(args) => device_sim::run_command::keys(&args),
    }
}

/// Logs to standard error: `RUST_LOG`, or the command's default filter
/// (`run` quietens per-device logs under a live line, `--json` and
/// `--quiet`; `--quiet` ignores `RUST_LOG`: errors only).
fn init_logging(command: &Command) {
    let (default, honour_rust_log) = match command {
        Command::Run(args) => {
            let mode = args.output_mode();
            (mode.default_log_filter(), mode.honours_rust_log())
        }
        _ => ("info", true),
    };
    let from_env = honour_rust_log
        .then(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .flatten();
    tracing_subscriber::fmt()
        .with_env_filter(from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `device-sim bench`.
async fn bench(
    hub_bin: Option<std::path::PathBuf>,
    quick: bool,
    runs: Option<usize>,
    json: bool,
    only: Vec<String>,
    no_storage: bool,
) -> anyhow::Result<()> {
    let hub_bin = match hub_bin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("sensor-hub"),
    };
    anyhow::ensure!(
        hub_bin.exists(),
        "no hub binary at {}: build it (cargo build --release) or pass --hub-bin",
        hub_bin.display()
    );
    let mut config = if quick {
        device_sim::bench::BenchConfig::quick(hub_bin)
    } else {
        device_sim::bench::BenchConfig::full(hub_bin)
    };
    if let Some(runs) = runs {
        config.runs = runs.max(1);
    }
    config.storage = !no_storage;
    if !only.is_empty() {
        for name in &only {
            anyhow::ensure!(
                ["ingest", "auth", "latency", "fanout", "mqtt", "cluster", "memory"]
                    .contains(&name.as_str()),
                "unknown scenario `{name}`: choose from ingest, auth, latency, fanout, mqtt, cluster, memory"
            );
        }
        let wants = |s: &str| only.iter().any(|o| o == s);
        if !wants("ingest") {
            config.ingest_rates.clear();
        }
        if !wants("auth") {
            config.auth_rates.clear();
        }
        if !wants("latency") {
            config.latency_rates.clear();
        }
        if !wants("fanout") {
            config.fanout_clients.clear();
        }
        if !wants("mqtt") {
            config.mqtt = None;
        }
        if !wants("cluster") {
            config.cluster = None;
        }
        if !wants("memory") {
            config.memory = None;
        }
    }
    let report = device_sim::bench::run(&config).await?;
    if !json {
        println!("{}", report.table());
    }
    println!("{}", report.json());
    Ok(())
}
