//! `device-sim`: runs a simulated fleet against a hub.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec,
    DEFAULT_BOOT_PAUSE_MS,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Simulated sensor devices for the sensor hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a fleet's readings to a hub until interrupted (or for --duration-s).
    Run {
        /// Hub UDP address.
        #[arg(long, default_value = "127.0.0.1:47100")]
        hub: SocketAddr,
        /// Number of devices.
        #[arg(long, default_value_t = 5)]
        devices: u32,
        /// Id of the first device.
        #[arg(long, default_value_t = 1)]
        first_id: u32,
        /// Report interval of each device, in milliseconds.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
        interval_ms: u64,
        /// Seed for names, phases and noise.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this many seconds.
        #[arg(long)]
        duration_s: Option<u64>,
        /// Hub control (TCP) address, HOST:PORT; each device then keeps a
        /// control session (hello, heartbeats, commands).
        #[arg(long, value_name = "HOST:PORT")]
        control: Option<String>,
        /// Token the devices present in their hello.
        #[arg(long, default_value = "", requires = "control")]
        token: String,
        /// How long a rebooted device sends nothing, in milliseconds.
        #[arg(long, default_value_t = DEFAULT_BOOT_PAUSE_MS)]
        boot_pause_ms: u64,
        /// Probability (0..=1) that a datagram is lost.
        #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
        loss: f64,
        /// Probability (0..=1) that a datagram is held back and sent after
        /// the device's next one.
        #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
        reorder: f64,
        /// Probability (0..=1) that a datagram is sent twice.
        #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
        duplicate: f64,
    },
}

/// Parses a probability, refusing anything outside 0..=1 (or NaN).
fn probability(text: &str) -> Result<f64, String> {
    let p: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability within 0..=1"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run {
            hub,
            devices,
            first_id,
            interval_ms,
            seed,
            duration_s,
            control,
            token,
            boot_pause_ms,
            loss,
            reorder,
            duplicate,
        } => {
            let faults = FaultSpec::new(loss, reorder, duplicate)?;
            let control = match control {
                Some(addr) => Some(ControlTarget {
                    addr: resolve(&addr).await?,
                    token,
                }),
                None => None,
            };
            let fleet = build_fleet(&FleetSpec {
                devices,
                first_id,
                interval_ms,
                seed,
            });
            let cancel = CancellationToken::new();
            let stopper = cancel.clone();
            tokio::spawn(async move {
                match duration_s {
                    Some(s) => {
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_secs(s)) => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                stopper.cancel();
            });
            let control_addr = control.as_ref().map(|c| c.addr);
            tracing::info!(devices, interval_ms, %hub, control = ?control_addr, "sending");
            let options = FleetOptions {
                udp: hub,
                control,
                boot_pause_ms,
                faults,
            };
            let stats = run_fleet(fleet, options, cancel)
                .await
                .context("simulator failed")?;
            println!(
                "sent {} datagrams ({} bytes), {} send errors; control: {} sessions, {} rejects, {} commands, {} reboots, {} failed connection attempts",
                stats.datagrams_sent,
                stats.bytes_sent,
                stats.send_errors,
                stats.sessions_opened,
                stats.rejects,
                stats.commands_received,
                stats.reboots,
                stats.connect_failures,
            );
            if !faults.is_none() {
                let injected = stats.injected;
                println!(
                    "injected faults: {} datagrams on the wire, {} lost, {} reordered, {} duplicated",
                    injected.sent, injected.lost, injected.reordered, injected.duplicated,
                );
            }
            Ok(())
        }
    }
}

/// The first address `host_port` resolves to.
async fn resolve(host_port: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(host_port)
        .await
        .with_context(|| format!("resolving the control address {host_port}"))?
        .next()
        .with_context(|| format!("the control address {host_port} resolves to nothing"))
}
