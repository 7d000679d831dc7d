//! The `sensor-hub` command line: `run`, `demo`, `check-config`, the
//! account commands (`passwd`, `login-link`, `token`, module `account`) and
//! `device` (adopting devices and making their keys, module `devices`). `demo`
//! needs the cargo feature `demo` (on by default; module `demo`); a build
//! without it keeps the subcommand, says so in `--help`, and exits non-zero
//! with a message saying how to get it.

mod account;
#[cfg(feature = "demo")]
mod demo;
mod devices;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sensor_hub::config::HubConfig;
use sensor_hub::server::{run, shutdown_signal, Listeners};

#[derive(Debug, Parser)]
#[command(version, about = "A small, fast IoT sensor hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub.
    Run {
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the hub with simulated devices, so the dashboard is live at once.
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build (built without the `demo` feature): \
                     run the hub with simulated devices")
    )]
    Demo {
        /// Number of simulated devices.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        devices: u32,
        /// Report interval of each simulated device, in milliseconds.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
        interval_ms: u64,
        /// Configuration file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration, print the result, and exit.
    CheckConfig {
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Set the owner's password (read without echo, or one line from stdin).
    Passwd {
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a one-time link that logs a browser in as the owner.
    LoginLink {
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Adopt devices and make their keys; list and forget them.
    Device {
        #[command(subcommand)]
        command: devices::DeviceCommand,
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Manage API tokens (for scripts, Prometheus, other people's browsers).
    Token {
        #[command(subcommand)]
        command: account::TokenCommand,
        /// Configuration file layered over the built-in defaults
        /// [default: /etc/sensor-hub/sensor-hub.toml if it exists].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

/// The configuration the Debian package installs: every command but `demo`
/// reads it when no `--config` is given and it exists, so `sudo sensor-hub
/// login-link` on an installed hub speaks to the service's files.
const SYSTEM_CONFIG: &str = "/etc/sensor-hub/sensor-hub.toml";

fn load(path: Option<&PathBuf>) -> anyhow::Result<HubConfig> {
    let system = PathBuf::from(SYSTEM_CONFIG);
    let path = match path {
        Some(path) => Some(path.as_path()),
        None if system.is_file() => {
            eprintln!("sensor-hub: using {SYSTEM_CONFIG} (give --config to use another file)");
            Some(system.as_path())
        }
        None => None,
    };
    Ok(HubConfig::load(path, None)?)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-hub: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let config = load(config.as_ref())?;
            println!("configuration OK");
            println!("  udp.bind     = {}", config.udp.bind);
            println!("  control.bind = {}", config.control.bind);
            println!("  http.bind    = {}", config.http.bind);
            let devices = sensor_hub::device_file::DeviceFile::new(&config.devices.keys_path);
            let (list, _) = devices.load()?;
            let keyed = list.devices.iter().filter(|d| d.key.is_some()).count();
            println!(
                "  devices.keys_path = {} ({} adopted, {keyed} with a key)",
                config.devices.keys_path.display(),
                list.devices.len()
            );
            if config.mqtt.enabled {
                // Reads the password file and the CA file, as the hub will.
                sensor_hub::mqtt::options(&config.mqtt).context("the MQTT bridge ([mqtt])")?;
                println!(
                    "  mqtt         = {}:{} as {}{}{}",
                    config.mqtt.host,
                    config.mqtt.port,
                    config.mqtt.effective_client_id(),
                    if config.mqtt.tls { ", TLS" } else { "" },
                    if config.mqtt.commands {
                        ", commands on"
                    } else {
                        ""
                    },
                );
            } else {
                println!("  mqtt         = off");
            }
            Ok(())
        }
        Command::Passwd { config } => account::passwd(&load(config.as_ref())?),
        Command::LoginLink { config } => account::login_link(&load(config.as_ref())?),
        Command::Token { command, config } => account::token(&load(config.as_ref())?, command),
        Command::Device { command, config } => devices::device(&load(config.as_ref())?, command),
        Command::Run { config } => {
            let config = load(config.as_ref())?;
            first_start(&config)?;
            runtime()?.block_on(async {
                let shutdown = shutdown_signal().context("installing signal handlers")?;
                let listeners = Listeners::bind(&config).await?;
                tracing::info!(
                    udp = %listeners.udp_addr()?,
                    control = %listeners.control_addr()?,
                    http = %listeners.http_addr()?,
                    "sensor-hub listening"
                );
                run(config, listeners, shutdown).await
            })
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            devices,
            interval_ms,
            config,
        } => {
            // Never the packaged configuration: the demo is not the service.
            let config = HubConfig::load(config.as_deref(), None)?;
            runtime()?.block_on(demo::demo(config, devices, interval_ms))
        }
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => Err(anyhow::anyhow!(NO_DEMO)),
    }
}

/// On the first start (no credentials file yet) in a terminal, makes a
/// one-time login link and prints it. Elsewhere (a service: its output goes
/// to the journal) no secret is printed; the hub logs how to get a link.
fn first_start(config: &HubConfig) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let file = sensor_hub::auth::store::CredentialFile::new(&config.auth.credentials_path);
    if file.stamp()?.is_some() || !std::io::stderr().is_terminal() {
        return Ok(());
    }
    let url = account::new_login_url(config, config.http.bind)?;
    eprintln!(
        "First start: open this link to log in as the owner (it works once, for {} minutes):",
        config.auth.login_link_ttl_ms / 60_000
    );
    eprintln!("  {url}");
    eprintln!("Then set a password with `sensor-hub passwd`, or get a new link with `sensor-hub login-link`.");
    Ok(())
}

/// What `sensor-hub demo` says in a build without the `demo` feature.
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "this build has no simulated devices (built without the `demo` \
                       feature); rebuild with `cargo build --release --features demo` \
                       or run devices of your own";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
