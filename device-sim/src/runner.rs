//! Runs a whole simulated fleet: the UDP sender for every device (with
//! faults injected, if asked: fleet-wide or per device, plus a fleet-wide
//! phantom flood) plus, if a control address is given, one control session
//! per device, their first connections staggered, all wired to the
//! devices' shared control state; stops them together on cancel and sums
//! up what they did. With failover hubs ([`FleetOptions::failover`]) each
//! device holds one hub at a time and moves to the next when its hub
//! fails; its datagrams follow it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sensor_hub_protocol::DeviceId;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::control::{run_control_sessions, SessionContext, SessionCounters};
use crate::device::SimDevice;
use crate::device_control::FleetControls;
use crate::faults::{injector_seed, phantom_ids, FaultSpec, InjectedFaults, PhantomFlood};
use crate::hello::HelloTemplate;
use crate::keys::{device_key, KeySeed};
use crate::monitor::FleetMonitor;
use crate::udp::{send_datagrams, SendPlan, UdpStats};

/// Default time a rebooting device stays off the network, in ms.
pub const DEFAULT_BOOT_PAUSE_MS: u64 = 1_000;
/// Time between two devices' first control connections: 10 000 devices
/// connect over the first second, so the hub's accept queue keeps up.
pub const CONNECT_SPACING: Duration = Duration::from_micros(100);
/// How long sessions get to say bye after the fleet is cancelled.
const SESSION_WIND_DOWN: Duration = Duration::from_secs(2);

/// Where and how devices open control sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlTarget {
    /// The hub's control (TCP) address.
    pub addr: SocketAddr,
    /// Token every device presents in its hello (at most 128 bytes);
    /// unused when `key_seed` is set.
    pub token: String,
    /// The fleet's key seed: each device proves its key
    /// ([`crate::keys::device_key`]) in a keyed hello and tags its
    /// datagrams, instead of presenting the token.
    pub key_seed: Option<KeySeed>,
}

// Manual: the token must not end up in logs.
impl fmt::Debug for ControlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlTarget")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("key_seed", &self.key_seed.map(|_| "<redacted>"))
            .finish()
    }
}

/// One hub of a cluster: where its devices send datagrams and open control
/// sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubAddrs {
    /// The hub's UDP address, for datagrams.
    pub udp: SocketAddr,
    /// The hub's control (TCP) address.
    pub control: SocketAddr,
}

/// How to run a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOptions {
    /// The (primary) hub's UDP address, for datagrams.
    pub udp: SocketAddr,
    /// Control sessions, one per device, with the (primary) hub at
    /// `addr`; none if `None`.
    pub control: Option<ControlTarget>,
    /// Other hubs of the cluster to move to, in order, after the primary
    /// (`udp` and `control.addr`): a device whose hub cannot be reached or
    /// ends its session moves to the next one (round robin, wrapping back
    /// to the primary) and its datagrams follow. Needs control sessions
    /// (`control`), since only a session tells a device its hub failed;
    /// UDP addresses must be of the primary's IP family. Empty: one hub.
    pub failover: Vec<HubAddrs>,
    /// How long a rebooting device sends nothing, in ms.
    pub boot_pause_ms: u64,
    /// Faults injected into every device ([`FaultSpec::NONE`]: none), and
    /// the fleet's phantom flood; what was injected is reported in
    /// [`FleetStats`]. Impersonations (forge, replay, spoof) need a keyed
    /// fleet.
    pub faults: FaultSpec,
    /// Devices whose faults differ from `faults`: each listed device gets
    /// its spec instead (the last entry for a device wins). Every id must
    /// be in the fleet; a phantom flood is fleet-wide, not set here.
    pub device_faults: Vec<(DeviceId, FaultSpec)>,
}

impl FleetOptions {
    /// Datagrams to `udp`, no control sessions, default boot pause, no
    /// faults.
    pub fn udp_only(udp: SocketAddr) -> FleetOptions {
        FleetOptions {
            udp,
            control: None,
            failover: Vec::new(),
            boot_pause_ms: DEFAULT_BOOT_PAUSE_MS,
            faults: FaultSpec::NONE,
            device_faults: Vec::new(),
        }
    }
}

/// What a fleet run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetStats {
    /// Datagrams handed to the kernel, corrupted ones included (hub:
    /// `udp_datagrams_received_total`, when nothing is lost on the way).
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Control sessions the hub welcomed.
    pub sessions_opened: u64,
    /// Rejects received, before or after a welcome.
    pub rejects: u64,
    /// Commands received, known or not.
    pub commands_received: u64,
    /// Reboots carried out: on the hub's command, plus `random_reboots`.
    pub reboots: u64,
    /// Reboots injected at random (included in `reboots`).
    pub random_reboots: u64,
    /// Control sessions dropped abruptly on purpose (no `Bye`), each
    /// followed by a reconnect.
    pub session_drops: u64,
    /// Control connection attempts that failed before a welcome or reject.
    pub connect_failures: u64,
    /// Moves of a device to the next of its hubs after its hub failed (0
    /// without [`FleetOptions::failover`]).
    pub hub_moves: u64,
    /// Faults injected into the datagrams, summed over devices, and the
    /// phantom flood; equal to what the hub counts as long as
    /// `send_errors` is 0.
    pub injected: InjectedFaults,
    /// The address the devices' datagrams came from.
    pub device_addr: Option<SocketAddr>,
    /// The address a stranger's spoofs and phantoms came from, if any.
    pub stranger_addr: Option<SocketAddr>,
}

impl FleetStats {
    fn new(udp: UdpStats, sessions: &SessionCounters) -> FleetStats {
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        FleetStats {
            datagrams_sent: udp.datagrams_sent,
            bytes_sent: udp.bytes_sent,
            send_errors: udp.send_errors,
            sessions_opened: read(&sessions.sessions_opened),
            rejects: read(&sessions.rejects),
            commands_received: read(&sessions.commands_received),
            reboots: read(&sessions.reboots) + udp.reboots,
            random_reboots: udp.reboots,
            session_drops: read(&sessions.session_drops),
            connect_failures: read(&sessions.connect_failures),
            hub_moves: read(&sessions.hub_moves),
            injected: udp.injected,
            device_addr: udp.device_addr,
            stranger_addr: udp.stranger_addr,
        }
    }

    /// Every fault injected: datagram faults, random reboots and session
    /// drops.
    pub fn faults_injected(&self) -> u64 {
        self.injected.faults() + self.random_reboots + self.session_drops
    }
}

/// Runs `devices` until `cancel` fires: datagrams to `options.udp`, and a
/// control session per device if `options.control` is set (with failover
/// hubs, each device's datagrams and session go to the hub it holds now).
/// Fails early on an unusable option (token too long, fault setting out of
/// range, a per-device fault for a device not in the fleet or with a
/// phantom flood, impersonations asked of a fleet without keys, failover
/// hubs without control sessions or of another IP family) or if the UDP
/// socket cannot be set up; a hub that cannot be reached is retried (or
/// left for the next one), not an error.
pub async fn run_fleet(
    devices: Vec<SimDevice>,
    options: FleetOptions,
    cancel: CancellationToken,
) -> anyhow::Result<FleetStats> {
    run_fleet_monitored(devices, options, cancel, FleetMonitor::default()).await
}

/// [`run_fleet`], keeping `monitor` up to date as it goes.
pub async fn run_fleet_monitored(
    devices: Vec<SimDevice>,
    options: FleetOptions,
    cancel: CancellationToken,
    monitor: FleetMonitor,
) -> anyhow::Result<FleetStats> {
    let faults = fault_plan(&devices, &options)?;
    let (udp_hubs, control_hubs) = hub_plan(&options)?;
    let boot_pause = Duration::from_millis(options.boot_pause_ms);
    // Only keyed devices wait for a session: without a key they could not
    // tag a datagram. Token devices send whatever their session does, as
    // before.
    let keyed = options
        .control
        .as_ref()
        .is_some_and(|t| t.key_seed.is_some());
    let controls = FleetControls::new(&devices, keyed);
    let counters = monitor.sessions.clone();
    let stop_sessions = cancel.child_token();
    let mut sessions = JoinSet::new();
    if let Some(target) = &options.control {
        let mut start_delay = Duration::ZERO;
        for ((device, control), spec) in devices.iter().zip(controls.devices()).zip(&faults) {
            let token = if target.key_seed.is_some() {
                ""
            } else {
                &target.token
            };
            let template =
                HelloTemplate::new(device, token).context("the control options are unusable")?;
            let ctx = SessionContext {
                template,
                hubs: control_hubs.clone(),
                boot_pause,
                control: control.clone(),
                counters: counters.clone(),
                start_delay,
                clock_skew_ms: spec.clock_skew_ms,
                session_drop: spec.session_drop,
                seed: injector_seed(device.seed(), device.id),
                key: target.key_seed.map(|seed| device_key(&seed, device.id)),
            };
            sessions.spawn(run_control_sessions(ctx, stop_sessions.clone()));
            start_delay += CONNECT_SPACING;
        }
    }
    let phantoms = PhantomFlood::new(
        phantom_ids(&devices, options.faults.phantom_ids),
        options.faults.phantom_per_s,
    );
    let plan = SendPlan {
        hubs: udp_hubs,
        boot_pause,
        faults,
        phantoms,
    };
    let udp = send_datagrams(devices, &controls, plan, &monitor.udp, cancel).await;
    stop_sessions.cancel();
    let wind_down = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SESSION_WIND_DOWN, wind_down)
        .await
        .is_err()
    {
        tracing::debug!("control sessions did not stop in time; aborting them");
        sessions.abort_all();
    }
    Ok(FleetStats::new(udp?, &counters))
}

/// The hubs' UDP and control addresses, primary first, then
/// `options.failover` in order (the control list empty without control
/// sessions). Failover hubs need control sessions and UDP addresses of the
/// primary's IP family (the fleet sends from one socket).
fn hub_plan(options: &FleetOptions) -> anyhow::Result<(Vec<SocketAddr>, Arc<[SocketAddr]>)> {
    let mut udp = vec![options.udp];
    let mut control = Vec::new();
    if let Some(target) = &options.control {
        control.push(target.addr);
    } else {
        anyhow::ensure!(
            options.failover.is_empty(),
            "failover hubs need control sessions (a control target): only a session tells a \
             device that its hub failed"
        );
    }
    for hub in &options.failover {
        anyhow::ensure!(
            hub.udp.is_ipv4() == options.udp.is_ipv4(),
            "the failover hub's UDP address {} is not of the primary's IP family ({}): \
             the fleet sends from one socket",
            hub.udp,
            options.udp
        );
        udp.push(hub.udp);
        control.push(hub.control);
    }
    Ok((udp, control.into()))
}

/// Each device's faults, in fleet order: `options.faults`, or the device's
/// own entry in `options.device_faults`. Every spec is validated; a fleet
/// without keys may not be asked for impersonations, and a device's own
/// spec not for phantoms.
fn fault_plan(devices: &[SimDevice], options: &FleetOptions) -> anyhow::Result<Vec<FaultSpec>> {
    let keyed = options
        .control
        .as_ref()
        .is_some_and(|t| t.key_seed.is_some());
    let impersonations_need_keys = |spec: &FaultSpec| {
        anyhow::ensure!(
            keyed || !spec.needs_keyed_fleet(),
            "forge, replay, replay_after_reboot and spoof impersonate devices with a key: \
             they need a keyed fleet (a control target with a key seed: --key-seed-file)"
        );
        Ok(())
    };
    options
        .faults
        .validate()
        .context("the fault options are unusable")?;
    impersonations_need_keys(&options.faults).context("the fault options are unusable")?;
    let mut specs = vec![options.faults; devices.len()];
    let index: HashMap<DeviceId, usize> =
        devices.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
    for (id, spec) in &options.device_faults {
        spec.validate()
            .with_context(|| format!("the fault options of device {id} are unusable"))?;
        impersonations_need_keys(spec)
            .with_context(|| format!("the fault options of device {id} are unusable"))?;
        anyhow::ensure!(
            spec.phantom_per_s == 0.0,
            "the fault options of device {id} are unusable: a phantom flood is fleet-wide \
             (set it in the fleet's faults)"
        );
        let slot = index
            .get(id)
            .and_then(|&i| specs.get_mut(i))
            .with_context(|| {
                format!("device_faults names device {id}, which is not in the fleet")
            })?;
        *slot = *spec;
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: ([127, 0, 0, 1], 47101).into(),
                token: "hunter2".into(),
                key_seed: None,
            }),
            ..FleetOptions::udp_only(([127, 0, 0, 1], 47100).into())
        };
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("47101"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_token_too_long_for_the_protocol_is_refused_up_front() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: ([127, 0, 0, 1], 9).into(),
                token: "t".repeat(129),
                key_seed: None,
            }),
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = run_fleet(devices, options, CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(format!("{err:#}").contains("129 bytes"), "{err:#}");
    }

    #[tokio::test]
    async fn a_fault_probability_out_of_range_is_refused_up_front() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let options = FleetOptions {
            faults: FaultSpec {
                loss: 1.5,
                ..FaultSpec::NONE
            },
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = run_fleet(devices, options, CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(format!("{err:#}").contains("loss probability"), "{err:#}");
    }

    #[test]
    fn per_device_faults_replace_the_fleet_wide_ones() {
        let devices = crate::build_fleet(&crate::FleetSpec {
            devices: 3,
            first_id: 10,
            ..crate::FleetSpec::default()
        });
        let flaky = FaultSpec {
            corrupt: 0.5,
            clock_skew_ms: -40,
            ..FaultSpec::NONE
        };
        let options = FleetOptions {
            faults: FaultSpec::new(0.1, 0.0, 0.0).expect("valid"),
            device_faults: vec![(12, FaultSpec::NONE), (11, FaultSpec::NONE), (11, flaky)],
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let plan = fault_plan(&devices, &options).expect("usable");
        assert_eq!(plan, [options.faults, flaky, FaultSpec::NONE]);
    }

    #[test]
    fn impersonations_need_a_keyed_fleet() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let forging = FaultSpec {
            forge: 0.1,
            ..FaultSpec::NONE
        };
        let plain = FleetOptions {
            faults: forging,
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = fault_plan(&devices, &plain).expect_err("refused");
        assert!(format!("{err:#}").contains("need a keyed fleet"), "{err:#}");
        let per_device = FleetOptions {
            device_faults: vec![(
                2,
                FaultSpec {
                    replay_after_reboot: 1,
                    ..FaultSpec::NONE
                },
            )],
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = fault_plan(&devices, &per_device).expect_err("refused");
        assert!(format!("{err:#}").contains("of device 2"), "{err:#}");
        let keyed = FleetOptions {
            control: Some(ControlTarget {
                addr: ([127, 0, 0, 1], 9).into(),
                token: String::new(),
                key_seed: Some([3; 32]),
            }),
            ..plain
        };
        assert_eq!(fault_plan(&devices, &keyed).expect("usable"), [forging; 5]);
    }

    #[test]
    fn a_phantom_flood_is_fleet_wide() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let flood = FaultSpec {
            phantom_per_s: 50.0,
            phantom_ids: 4,
            ..FaultSpec::NONE
        };
        let mut options = FleetOptions {
            faults: flood,
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        assert!(
            fault_plan(&devices, &options).is_ok(),
            "any fleet may have one"
        );
        options.device_faults = vec![(1, flood)];
        let err = fault_plan(&devices, &options).expect_err("refused");
        assert!(format!("{err:#}").contains("fleet-wide"), "{err:#}");
    }

    fn hub(udp: u16, control: u16) -> HubAddrs {
        HubAddrs {
            udp: ([127, 0, 0, 1], udp).into(),
            control: ([127, 0, 0, 1], control).into(),
        }
    }

    #[test]
    fn the_hub_plan_lists_the_primary_then_the_failover_hubs_in_order() {
        let control = ControlTarget {
            addr: ([127, 0, 0, 1], 47101).into(),
            token: String::new(),
            key_seed: None,
        };
        let single = FleetOptions {
            control: Some(control.clone()),
            ..FleetOptions::udp_only(([127, 0, 0, 1], 47100).into())
        };
        let (udp, tcp) = hub_plan(&single).expect("usable");
        assert_eq!(udp, [single.udp]);
        assert_eq!(&*tcp, [control.addr]);
        let cluster = FleetOptions {
            failover: vec![hub(47200, 47201), hub(47300, 47301)],
            ..single
        };
        let (udp, tcp) = hub_plan(&cluster).expect("usable");
        assert_eq!(udp, [cluster.udp, hub(47200, 0).udp, hub(47300, 0).udp]);
        assert_eq!(
            &*tcp,
            [control.addr, hub(0, 47201).control, hub(0, 47301).control]
        );
        let (udp, tcp) =
            hub_plan(&FleetOptions::udp_only(([127, 0, 0, 1], 9).into())).expect("usable");
        assert_eq!((udp.len(), tcp.len()), (1, 0));
    }

    #[tokio::test]
    async fn failover_needs_control_sessions_and_one_ip_family() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let udp_only = FleetOptions {
            failover: vec![hub(47200, 47201)],
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = run_fleet(devices.clone(), udp_only, CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(
            format!("{err:#}").contains("need control sessions"),
            "{err:#}"
        );
        let mixed = FleetOptions {
            control: Some(ControlTarget {
                addr: ([127, 0, 0, 1], 9).into(),
                token: String::new(),
                key_seed: None,
            }),
            failover: vec![HubAddrs {
                udp: "[::1]:47200".parse().expect("an address"),
                control: "[::1]:47201".parse().expect("an address"),
            }],
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = hub_plan(&mixed).expect_err("refused");
        assert!(format!("{err:#}").contains("IP family"), "{err:#}");
    }

    #[test]
    fn per_device_faults_must_name_a_device_of_the_fleet_and_be_valid() {
        let devices = crate::build_fleet(&crate::FleetSpec::default());
        let mut options = FleetOptions {
            device_faults: vec![(99, FaultSpec::NONE)],
            ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
        };
        let err = fault_plan(&devices, &options).expect_err("refused");
        assert!(format!("{err:#}").contains("device 99, which is not in the fleet"));
        let bad = FaultSpec {
            jitter_ms: u64::MAX,
            ..FaultSpec::NONE
        };
        options.device_faults = vec![(1, bad)];
        let err = fault_plan(&devices, &options).expect_err("refused");
        assert!(format!("{err:#}").contains("of device 1"), "{err:#}");
        assert!(format!("{err:#}").contains("jitter"), "{err:#}");
    }
}
