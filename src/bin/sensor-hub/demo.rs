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
use sensor_hub::device_file::DeviceFile;
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

/// Removes the demo's device file when the demo ends.
struct DemoKeys(std::path::PathBuf);

impl Drop for DemoKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut lock = self.0.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

/// Runs the hub with `devices` simulated devices until SIGINT/SIGTERM. The
/// simulated devices are provisioned automatically: each gets a key
/// (derived from a random seed made for this run) in a device file of the
/// run's own, removed when it ends, so the user's device file is left as
/// it was and no key outlives the demo.
pub async fn demo(mut config: HubConfig, devices: u32, interval_ms: u64) -> anyhow::Result<()> {
    let fleet = build_fleet(&FleetSpec {
        devices,
        interval_ms,
        ..FleetSpec::default()
    });
    let key_seed = device_sim::keys::random_seed()?;
    let keys_path = std::env::temp_dir().join(format!(
        "sensor-hub-demo-devices-{}.json",
        std::process::id()
    ));
    let _cleanup = DemoKeys(keys_path.clone());
    let now = sensor_hub::clock::Clock::system().now().wall_ms;
    DeviceFile::new(&keys_path)
        .update(|list| {
            for d in &fleet {
                let key = device_sim::keys::device_key(&key_seed, d.id);
                list.add(d.id, &d.name, Some(key), now)?;
            }
            Ok(())
        })
        .context("writing the demo's device keys")?;
    config.devices.keys_path = keys_path;
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

    let stop_fleet = CancellationToken::new();
    let options = FleetOptions {
        udp,
        control: Some(ControlTarget {
            addr: control,
            token: String::new(),
            key_seed: Some(key_seed),
        }),
        boot_pause_ms: DEFAULT_BOOT_PAUSE_MS,
        faults: FaultSpec::NONE,
        device_faults: Vec::new(),
        failover: Vec::new(),
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
