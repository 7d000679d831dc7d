//! `device-sim run`: its flags ([`RunArgs`]) and what it does ([`run`]):
//! raise the open-file limit, build the fleet and its fault spec, run it
//! for `--duration-s` or until Ctrl-C, and show it the way the output mode
//! says ([`crate::output`]). The binary parses the flags and sets up
//! logging with [`RunArgs::output_mode`]'s filter. `--hub` and `--control`
//! may list a cluster's hubs ([`RunArgs::hub_list`]): the first pair is the
//! primary, the others the failover hubs.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{
    FaultSpec, DEFAULT_PHANTOM_IDS, MAX_CLOCK_SKEW_MS, MAX_JITTER_MS, MAX_PHANTOM_IDS,
    MAX_PHANTOM_PER_S, MAX_REPLAY_AFTER_REBOOT,
};
use crate::fdlimit::{files_needed, raise_open_file_limit};
use crate::fleet::{build_fleet, FleetSpec};
use crate::monitor::FleetMonitor;
use crate::output::terminal::show_status_line;
use crate::output::{summary, OutputMode, RunReport};
use crate::runner::{
    run_fleet_monitored, ControlTarget, FleetOptions, HubAddrs, DEFAULT_BOOT_PAUSE_MS,
};

/// The flags of `device-sim run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Hub UDP address, IP:PORT. For a cluster, a comma-separated list of
    /// its hubs' UDP addresses: the primary first, then the hubs a device
    /// moves to, in order, when its hub fails (round robin); --control then
    /// lists their control addresses in the same order (failover needs
    /// control sessions).
    #[arg(
        long,
        value_name = "IP:PORT[,IP:PORT...]",
        value_delimiter = ',',
        default_value = "127.0.0.1:47100"
    )]
    pub hub: Vec<SocketAddr>,
    /// Number of devices.
    #[arg(long, default_value_t = 5)]
    pub devices: u32,
    /// Id of the first device.
    #[arg(long, default_value_t = 1)]
    pub first_id: u32,
    /// Report interval of each device, in milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,
    /// Seed for names, phases, noise and faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Hub control (TCP) address, HOST:PORT; each device then keeps a
    /// control session (hello, heartbeats, commands). For a cluster, a
    /// comma-separated list: one control address per --hub address, in the
    /// same order.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    pub control: Vec<String>,
    /// Token the devices present in their hello.
    #[arg(long, default_value = "", requires = "control")]
    pub token: String,
    /// A file holding the fleet's key seed (64 hex digits; `openssl rand
    /// -hex 32`): each device proves its own key, derived from it, in a
    /// keyed hello and tags its datagrams. Give the hub the keys with
    /// `device-sim keys … | sensor-hub device import -`.
    #[arg(
        long,
        value_name = "PATH",
        requires = "control",
        conflicts_with = "token"
    )]
    pub key_seed_file: Option<std::path::PathBuf>,
    /// How long a rebooted device sends nothing, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_BOOT_PAUSE_MS)]
    pub boot_pause_ms: u64,
    /// Probability (0..=1) that a datagram is lost.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub loss: f64,
    /// Probability (0..=1) that a datagram is held back and sent after
    /// the device's next one.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub reorder: f64,
    /// Probability (0..=1) that a datagram is sent twice.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub duplicate: f64,
    /// Probability (0..=1) that a datagram is sent damaged so the hub drops
    /// it (truncated, bad magic, bad version, trailing byte, in turn).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub corrupt: f64,
    /// Delay each datagram by a random 0..=N ms (each device's order kept).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(..=MAX_JITTER_MS))]
    pub jitter_ms: u64,
    /// Run every device's clock N ms ahead (negative: behind).
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-MAX_CLOCK_SKEW_MS..=MAX_CLOCK_SKEW_MS))]
    pub clock_skew_ms: i64,
    /// Probability (0..=1), per heartbeat, that a device drops its control
    /// session abruptly (no Bye) and reconnects.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability, requires = "control")]
    pub session_drop: f64,
    /// Probability (0..=1), per datagram, that the device then reboots
    /// (boot pause, sequence restart, reconnect).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub reboot: f64,
    /// Probability (0..=1), per datagram, that an attacker also sends a
    /// forged copy (one tag byte flipped; the hub drops it as bad_tag).
    /// Needs a keyed fleet.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability,
          requires = "key_seed_file")]
    pub forge: f64,
    /// Probability (0..=1), per datagram, that an attacker re-sends a
    /// datagram of the device's current session the hub accepted (dropped
    /// as replayed). Needs a keyed fleet.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability,
          requires = "key_seed_file")]
    pub replay: f64,
    /// After each reboot, once the new session is up, an attacker re-sends
    /// N datagrams of the previous session (dropped as bad_tag). Needs a
    /// keyed fleet.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "key_seed_file",
          value_parser = clap::value_parser!(u32).range(..=i64::from(MAX_REPLAY_AFTER_REBOOT)))]
    pub replay_after_reboot: u32,
    /// Probability (0..=1), per datagram, that a stranger (another source
    /// port) sends an untagged datagram in the device's name (dropped as
    /// unauthenticated). Needs a keyed fleet.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability,
          requires = "key_seed_file")]
    pub spoof: f64,
    /// Datagrams per second, fleet-wide, from phantom ids no device uses
    /// (the hub discovers them up to devices.max_discovered, then drops
    /// them as discovered_limit).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = phantom_rate)]
    pub phantom_per_s: f64,
    /// How many phantom ids take turns.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_PHANTOM_IDS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PHANTOM_IDS)))]
    pub phantom_ids: u32,
    /// Print nothing but errors.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON line with every figure at the end, nothing else.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// The output mode the flags and standard output call for.
    pub fn output_mode(&self) -> OutputMode {
        OutputMode::choose(self.quiet, self.json, std::io::stdout().is_terminal())
    }

    /// The hubs the flags name, primary first: each one's UDP address and
    /// its control address as given (`None` without `--control`). Refuses
    /// lists of different lengths, and several UDP addresses without
    /// control sessions (a device learns its hub failed from its session).
    pub fn hub_list(&self) -> anyhow::Result<Vec<(SocketAddr, Option<&str>)>> {
        let (hubs, controls) = (self.hub.len(), self.control.len());
        anyhow::ensure!(hubs > 0, "--hub names no address");
        if controls == 0 {
            anyhow::ensure!(
                hubs == 1,
                "--hub lists {hubs} addresses but there is no --control: failover between \
                 hubs needs control sessions (give one control address per hub)"
            );
            return Ok(self.hub.iter().map(|&udp| (udp, None)).collect());
        }
        anyhow::ensure!(
            hubs == controls,
            "--hub lists {} but --control {controls}: give one control address per hub",
            addresses(hubs)
        );
        Ok(self
            .hub
            .iter()
            .zip(&self.control)
            .map(|(&udp, control)| (udp, Some(control.as_str())))
            .collect())
    }

    /// [`RunArgs::hub_list`], control addresses resolved: the primary's UDP
    /// and control addresses, then the failover hubs.
    async fn hubs(&self) -> anyhow::Result<(SocketAddr, Option<SocketAddr>, Vec<HubAddrs>)> {
        let mut primary = None;
        let mut failover = Vec::new();
        for (udp, control) in self.hub_list()? {
            let control = match control {
                Some(host_port) => Some(resolve(host_port).await?),
                None => None,
            };
            match (primary, control) {
                (None, _) => primary = Some((udp, control)),
                (Some(_), Some(control)) => failover.push(HubAddrs { udp, control }),
                // hub_list gives every hub a control address, or only one hub.
                (Some(_), None) => anyhow::bail!("failover hub {udp} has no control address"),
            }
        }
        let (udp, control) = primary.context("--hub names no address")?;
        Ok((udp, control, failover))
    }

    /// The faults the flags ask for.
    pub fn faults(&self) -> Result<FaultSpec, crate::faults::InvalidFaultSpec> {
        let spec = FaultSpec {
            loss: self.loss,
            reorder: self.reorder,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            jitter_ms: self.jitter_ms,
            clock_skew_ms: self.clock_skew_ms,
            session_drop: self.session_drop,
            reboot: self.reboot,
            forge: self.forge,
            replay: self.replay,
            replay_after_reboot: self.replay_after_reboot,
            spoof: self.spoof,
            phantom_per_s: self.phantom_per_s,
            // Only a flood has ids (so that no flood is no fault at all).
            phantom_ids: if self.phantom_per_s > 0.0 {
                self.phantom_ids
            } else {
                0
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// "1 address", "2 addresses".
fn addresses(n: usize) -> String {
    if n == 1 {
        "1 address".into()
    } else {
        format!("{n} addresses")
    }
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

/// Parses a phantom rate, refusing anything outside 0..=[`MAX_PHANTOM_PER_S`]
/// (or NaN).
fn phantom_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=MAX_PHANTOM_PER_S).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{rate} is not a rate within 0..={MAX_PHANTOM_PER_S} datagrams/s"
        ))
    }
}

/// Runs `device-sim run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mode = args.output_mode();
    let faults = args.faults()?;
    let (udp, control_addr, failover) = args.hubs().await?;
    let control = match control_addr {
        Some(addr) => Some(ControlTarget {
            addr,
            token: args.token.clone(),
            key_seed: match &args.key_seed_file {
                Some(path) => Some(read_key_seed(path)?),
                None => None,
            },
        }),
        None => None,
    };
    ensure_open_files(args.devices, control.is_some());
    let fleet = build_fleet(&FleetSpec {
        devices: args.devices,
        first_id: args.first_id,
        interval_ms: args.interval_ms,
        seed: args.seed,
    });
    let duration = args.duration_s.map(Duration::from_secs);
    let cancel = CancellationToken::new();
    tokio::spawn(stop_after(duration, cancel.clone()));
    tracing::info!(devices = args.devices, interval_ms = args.interval_ms, hub = %udp,
        control = ?control_addr, failover = ?failover, "sending");
    let options = FleetOptions {
        udp,
        control,
        failover,
        boot_pause_ms: args.boot_pause_ms,
        faults,
        device_faults: Vec::new(),
    };
    let monitor = FleetMonitor::default();
    let started = Instant::now();
    let stop_display = CancellationToken::new();
    let display = (mode == OutputMode::Live).then(|| {
        tokio::spawn(show_status_line(
            monitor.clone(),
            args.devices,
            started,
            duration,
            stop_display.clone(),
            std::io::stdout(),
        ))
    });
    let result = run_fleet_monitored(fleet, options, cancel, monitor).await;
    stop_display.cancel();
    if let Some(display) = display {
        let _ = display.await;
    }
    let stats = result.context("simulator failed")?;
    match mode {
        OutputMode::Live | OutputMode::Plain => println!("{}", summary(&stats, !faults.is_none())),
        OutputMode::Json => {
            let report = RunReport::new(args.devices, started.elapsed(), stats);
            println!("{}", report.json_line().context("serialising the report")?);
        }
        OutputMode::Quiet => {}
    }
    Ok(())
}

/// Reads a key seed file (64 hex digits).
pub fn read_key_seed(path: &std::path::Path) -> anyhow::Result<crate::keys::KeySeed> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key seed file {}", path.display()))?;
    crate::keys::parse_seed(&text).with_context(|| format!("in {}", path.display()))
}

/// The flags of `device-sim keys`: the fleet of `device-sim run` with the
/// same `--devices`, `--first-id` and `--seed`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 5)]
    pub devices: u32,
    /// Id of the first device.
    #[arg(long, default_value_t = 1)]
    pub first_id: u32,
    /// Seed for names (as in `run`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The fleet's key seed file (64 hex digits).
    #[arg(long, value_name = "PATH")]
    pub key_seed_file: std::path::PathBuf,
}

/// `device-sim keys`: prints the fleet's devices and keys as the JSON list
/// `sensor-hub device import` reads.
pub fn keys(args: &KeysArgs) -> anyhow::Result<()> {
    let seed = read_key_seed(&args.key_seed_file)?;
    let fleet = build_fleet(&FleetSpec {
        devices: args.devices,
        first_id: args.first_id,
        seed: args.seed,
        ..FleetSpec::default()
    });
    let list = crate::keys::provisioning(&fleet, &seed);
    println!(
        "{}",
        serde_json::to_string_pretty(&list).context("serialising the keys")?
    );
    Ok(())
}

/// Cancels `cancel` after `duration` (if any) or on Ctrl-C.
async fn stop_after(duration: Option<Duration>, cancel: CancellationToken) {
    match duration {
        Some(duration) => {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    cancel.cancel();
}

/// Raises the open-file limit, warning if a fleet of `devices` will still
/// run out of descriptors.
fn ensure_open_files(devices: u32, control: bool) {
    let needed = files_needed(devices, control);
    match raise_open_file_limit() {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open-file limit is too low for a control session per device; \
             some devices will fail to connect (raise the hard limit: ulimit -Hn)"
        ),
        Ok(limit) => tracing::debug!(limit, needed, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = std::iter::once("device-sim-run").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.run)
    }

    #[test]
    fn every_fault_flag_reaches_the_spec() {
        let args = parse(&[
            "--control=127.0.0.1:9",
            "--loss=0.1",
            "--reorder=0.2",
            "--duplicate=0.3",
            "--corrupt=0.4",
            "--jitter-ms=25",
            "--clock-skew-ms",
            "-1500",
            "--session-drop=0.05",
            "--reboot=0.01",
        ])
        .expect("parses");
        let spec = args.faults().expect("valid");
        assert_eq!(
            spec,
            FaultSpec {
                loss: 0.1,
                reorder: 0.2,
                duplicate: 0.3,
                corrupt: 0.4,
                jitter_ms: 25,
                clock_skew_ms: -1_500,
                session_drop: 0.05,
                reboot: 0.01,
                ..FaultSpec::NONE
            }
        );
        assert!(parse(&[])
            .expect("parses")
            .faults()
            .expect("valid")
            .is_none());
    }

    #[test]
    fn impersonation_and_phantom_flags_reach_the_spec() {
        let args = parse(&[
            "--control=127.0.0.1:9",
            "--key-seed-file=seed.hex",
            "--forge=0.1",
            "--replay=0.2",
            "--replay-after-reboot=3",
            "--spoof=0.3",
            "--phantom-per-s=250",
            "--phantom-ids=12",
        ])
        .expect("parses");
        assert_eq!(
            args.faults().expect("valid"),
            FaultSpec {
                forge: 0.1,
                replay: 0.2,
                replay_after_reboot: 3,
                spoof: 0.3,
                phantom_per_s: 250.0,
                phantom_ids: 12,
                ..FaultSpec::NONE
            }
        );
        // Phantoms alone need no keys; without a rate the ids are unused.
        let phantoms = parse(&["--phantom-per-s=5"]).expect("parses");
        let spec = phantoms.faults().expect("valid");
        assert_eq!(
            (spec.phantom_ids, spec.phantom_per_s),
            (DEFAULT_PHANTOM_IDS, 5.0)
        );
        let idle = parse(&["--phantom-ids=7"]).expect("parses");
        assert!(idle.faults().expect("valid").is_none());
    }

    #[test]
    fn impersonations_need_a_key_seed_and_values_in_range() {
        for flag in [
            "--forge=0.1",
            "--replay=0.1",
            "--replay-after-reboot=1",
            "--spoof=0.1",
        ] {
            // (With --token, which excludes a key seed, clap lets them
            // through; `run_fleet` refuses them then.)
            let err = parse(&["--control=127.0.0.1:9", flag]).expect_err(flag);
            assert!(err.to_string().contains("--key-seed-file"), "{flag}: {err}");
            assert!(parse(&["--control=127.0.0.1:9", "--key-seed-file=s", flag]).is_ok());
        }
        let keyed = ["--control=127.0.0.1:9", "--key-seed-file=s"];
        for bad in [
            "--forge=1.5",
            "--replay=-0.1",
            "--spoof=nan",
            "--replay-after-reboot=9",
        ] {
            assert!(parse(&[keyed[0], keyed[1], bad]).is_err(), "{bad}");
        }
        for bad in [
            "--phantom-per-s=10001",
            "--phantom-per-s=-1",
            "--phantom-ids=0",
            "--phantom-ids=4097",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--corrupt=1.5"]).is_err());
        assert!(parse(&["--jitter-ms=60001"]).is_err());
        assert!(parse(&["--clock-skew-ms=-1728000001"]).is_err());
        // Session drops need control sessions; quiet and JSON exclude each other.
        assert!(parse(&["--session-drop=0.1"]).is_err());
        assert!(parse(&["--quiet", "--json"]).is_err());
    }

    #[test]
    fn one_hub_works_as_before_with_or_without_control() {
        let udp_only = parse(&["--hub=10.0.0.2:5000"]).expect("parses");
        let hubs = udp_only.hub_list().expect("usable");
        assert_eq!(hubs, [(([10, 0, 0, 2], 5000).into(), None)]);
        let default = parse(&["--control=hub.local:47101"]).expect("parses");
        let hubs = default.hub_list().expect("usable");
        assert_eq!(
            hubs,
            [(([127, 0, 0, 1], 47100).into(), Some("hub.local:47101"))]
        );
    }

    #[tokio::test]
    async fn comma_separated_lists_name_the_primary_then_the_failover_hubs() {
        let args = parse(&[
            "--hub",
            "127.0.0.1:47100,127.0.0.1:47200,127.0.0.1:47300",
            "--control",
            "127.0.0.1:47101,127.0.0.1:47201,127.0.0.1:47301",
        ])
        .expect("parses");
        let hubs = args.hub_list().expect("usable");
        assert_eq!(hubs.len(), 3);
        assert_eq!(
            hubs[1],
            (([127, 0, 0, 1], 47200).into(), Some("127.0.0.1:47201"))
        );
        let (udp, control, failover) = args.hubs().await.expect("resolves");
        assert_eq!(udp, ([127, 0, 0, 1], 47100).into());
        assert_eq!(control, Some(([127, 0, 0, 1], 47101).into()));
        let hub = |udp: u16, control: u16| HubAddrs {
            udp: ([127, 0, 0, 1], udp).into(),
            control: ([127, 0, 0, 1], control).into(),
        };
        assert_eq!(failover, [hub(47200, 47201), hub(47300, 47301)]);
        // A single pair: no failover.
        let single = parse(&["--hub=127.0.0.1:1", "--control=127.0.0.1:2"]).expect("parses");
        let (_, control, failover) = single.hubs().await.expect("resolves");
        assert_eq!((control.is_some(), failover.len()), (true, 0));
    }

    #[test]
    fn hub_lists_must_pair_up_and_failover_needs_control() {
        let mismatch = parse(&[
            "--hub",
            "127.0.0.1:47100,127.0.0.1:47200",
            "--control",
            "127.0.0.1:47101,127.0.0.1:47201,127.0.0.1:47301",
        ])
        .expect("parses");
        let err = mismatch.hub_list().expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--hub lists 2 addresses but --control 3: give one control address per hub"
        );
        // The default --hub is one address.
        let two_controls = parse(&["--control=127.0.0.1:47101,127.0.0.1:47201"]).expect("parses");
        let err = two_controls.hub_list().expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("--hub lists 1 address but --control 2"),
            "{err}"
        );
        let udp_only = parse(&["--hub=127.0.0.1:47100,127.0.0.1:47200"]).expect("parses");
        let err = udp_only.hub_list().expect_err("refused");
        assert!(
            err.to_string()
                .contains("failover between hubs needs control sessions"),
            "{err}"
        );
        // An address that is not IP:PORT is a parse error.
        assert!(parse(&["--hub=127.0.0.1:47100,hub.local:47200"]).is_err());
        assert!(parse(&["--hub=127.0.0.1:47100,"]).is_err());
    }

    #[test]
    fn output_flags_choose_the_mode() {
        let quiet = parse(&["--quiet"]).expect("parses");
        assert_eq!(quiet.output_mode(), OutputMode::Quiet);
        let json = parse(&["--json"]).expect("parses");
        assert_eq!(json.output_mode(), OutputMode::Json);
    }
}
