//! Runs a whole simulated fleet: the UDP sender for every device (with
//! faults injected, if asked) plus, if a control address is given, one
//! control session per device, all wired to the devices' shared control
//! state; stops them together on cancel and sums up what they did.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::control::{run_control_sessions, SessionContext, SessionCounters};
use crate::device::SimDevice;
use crate::device_control::FleetControls;
use crate::faults::{FaultSpec, InjectedFaults};
use crate::hello::HelloTemplate;
use crate::udp::{send_datagrams, UdpStats};

/// Default time a rebooting device stays off the network, in ms.
pub const DEFAULT_BOOT_PAUSE_MS: u64 = 1_000;
/// How long sessions get to say bye after the fleet is cancelled.
const SESSION_WIND_DOWN: Duration = Duration::from_secs(2);

/// Where and how devices open control sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlTarget {
    /// The hub's control (TCP) address.
    pub addr: SocketAddr,
    /// Token every device presents in its hello (at most 128 bytes).
    pub token: String,
}

// Manual: the token must not end up in logs.
impl fmt::Debug for ControlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlTarget")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How to run a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOptions {
    /// The hub's UDP address, for datagrams.
    pub udp: SocketAddr,
    /// Control sessions, one per device; none if `None`.
    pub control: Option<ControlTarget>,
    /// How long a rebooting device sends nothing, in ms.
    pub boot_pause_ms: u64,
    /// Faults injected into every device's datagrams ([`FaultSpec::NONE`]:
    /// none); what was injected is reported in [`FleetStats::injected`].
    pub faults: FaultSpec,
}

impl FleetOptions {
    /// Datagrams to `udp`, no control sessions, default boot pause, no
    /// faults.
    pub fn udp_only(udp: SocketAddr) -> FleetOptions {
        FleetOptions {
            udp,
            control: None,
            boot_pause_ms: DEFAULT_BOOT_PAUSE_MS,
            faults: FaultSpec::NONE,
        }
    }
}

/// What a fleet run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Datagrams handed to the kernel.
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
    /// Reboots carried out.
    pub reboots: u64,
    /// Control connection attempts that failed before a welcome or reject.
    pub connect_failures: u64,
    /// Faults injected into the datagrams, summed over devices; equal to
    /// what the hub counts as long as `send_errors` is 0.
    pub injected: InjectedFaults,
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
            reboots: read(&sessions.reboots),
            connect_failures: read(&sessions.connect_failures),
            injected: udp.injected,
        }
    }
}

/// Runs `devices` until `cancel` fires: datagrams to `options.udp`, and a
/// control session per device if `options.control` is set. Fails early on
/// an unusable option (token too long, fault probability out of range) or
/// if the UDP socket cannot be set up; a hub that cannot be reached is
/// retried, not an error.
pub async fn run_fleet(
    devices: Vec<SimDevice>,
    options: FleetOptions,
    cancel: CancellationToken,
) -> anyhow::Result<FleetStats> {
    options
        .faults
        .validate()
        .context("the fault options are unusable")?;
    let controls = FleetControls::new(&devices);
    let counters = Arc::new(SessionCounters::default());
    let stop_sessions = cancel.child_token();
    let mut sessions = JoinSet::new();
    if let Some(target) = &options.control {
        for (device, control) in devices.iter().zip(controls.devices()) {
            let template = HelloTemplate::new(device, &target.token)
                .context("the control options are unusable")?;
            let ctx = SessionContext {
                template,
                addr: target.addr,
                boot_pause: Duration::from_millis(options.boot_pause_ms),
                control: control.clone(),
                counters: counters.clone(),
            };
            sessions.spawn(run_control_sessions(ctx, stop_sessions.clone()));
        }
    }
    let udp = send_datagrams(devices, &controls, options.udp, options.faults, cancel).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let options = FleetOptions {
            control: Some(ControlTarget {
                addr: ([127, 0, 0, 1], 47101).into(),
                token: "hunter2".into(),
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
}
