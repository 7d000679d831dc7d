//! `sensor-hub demo`: a hub plus a simulated fleet in one process, so a new
//! user sees live data in the dashboard at once. Part of the binary only,
//! compiled with the cargo feature `demo` (on by default); it is the one
//! place that uses device-sim outside tests and benches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec,
    DEFAULT_BOOT_PAUSE_MS,
};
use tokio_util::sync::CancellationToken;

use sensor_hub::config::HubConfig;
use sensor_hub::server::{run, shutdown_signal, Listeners};

/// Replaces an unspecified address (0.0.0.0 or ::) by loopback, so it can
/// be sent to or opened in a browser.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// A fresh random fleet token (128 bits, hex).
fn random_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// Runs the hub with `devices` simulated devices until SIGINT/SIGTERM. The
/// simulated devices are provisioned automatically: they use the configured
/// fleet token, or a random one made for this run.
pub async fn demo(mut config: HubConfig, devices: u32, interval_ms: u64) -> anyhow::Result<()> {
    if config.control.fleet_token.is_empty() {
        config.control.fleet_token = random_token();
    }
    let token = config.control.fleet_token.clone();
    let shutdown = shutdown_signal().context("installing signal handlers")?;
    let listeners = Listeners::bind(&config).await?;
    let udp = reachable(listeners.udp_addr()?);
    let control = reachable(listeners.control_addr()?);
    let http = reachable(listeners.http_addr()?);
    let login = crate::account::new_login_url(&config, http)?;
    println!("sensor-hub demo: {devices} simulated devices sending to {udp}");
    println!("Dashboard: {login}");
    println!(
        "  (the link logs this browser in; it works once, within {} minutes. \
         Later: http://{http}/, with a new link from `sensor-hub login-link`)",
        config.auth.login_link_ttl_ms / 60_000
    );
    println!("Press Ctrl-C to stop.");

    let fleet = build_fleet(&FleetSpec {
        devices,
        interval_ms,
        ..FleetSpec::default()
    });
    let stop_fleet = CancellationToken::new();
    let options = FleetOptions {
        udp,
        control: Some(ControlTarget {
            addr: control,
            token,
        }),
        boot_pause_ms: DEFAULT_BOOT_PAUSE_MS,
        faults: FaultSpec::NONE,
        device_faults: Vec::new(),
    };
    let sim = tokio::spawn(run_fleet(fleet, options, stop_fleet.clone()));
    let result = run(config, listeners, shutdown).await;
    stop_fleet.cancel();
    let stats = sim
        .await
        .context("the simulated fleet task failed")?
        .context("the simulated fleet stopped with an error")?;
    tracing::info!(
        datagrams = stats.datagrams_sent,
        errors = stats.send_errors,
        sessions = stats.sessions_opened,
        commands = stats.commands_received,
        "simulated fleet stopped"
    );
    result
}
