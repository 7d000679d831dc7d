//! Simulated sensor devices: the demo fleet, its UDP datagrams and its TCP
//! control sessions, the fault injector, and the benchmark load generator.
//!
//! # Layout
//!
//! * [`signal`]: what a sensor measures over time (daily cycles, drift,
//!   noise, spikes), as pure functions of a time passed in.
//! * [`device`]: one simulated device: its sensors and its datagram
//!   sequence. Pure: the caller says what time it is.
//! * [`fleet`]: builds a varied fleet of devices from a few parameters.
//! * `schedule`: when one device sends next (cadence, interval changes,
//!   reboot pauses). Pure.
//! * [`faults`]: what faults to inject ([`FaultSpec`]); loses, corrupts,
//!   reorders and duplicates a device's datagrams, forges, replays and
//!   spoofs a keyed device's, floods the hub with phantom ids, and reports
//!   exactly what the hub will count; skews clocks, jitters sends, draws
//!   random reboots and session drops. Pure.
//! * [`udp`]: the I/O shell that sends a fleet's datagrams on one socket,
//!   each device at its own interval, through its faults, and a
//!   stranger's spoofs and phantoms on another.
//! * `device_control`: per-device state shared by a control session (which
//!   changes the interval, asks for a reboot, brings the session key) and
//!   the UDP sender (which reports random reboots and what waits in the
//!   device's delay line).
//! * [`hello`]: the hello a device opens a control session with. Pure.
//! * [`keys`]: device keys derived from a fleet seed, and the list the
//!   hub's `sensor-hub device import` reads.
//! * [`command`]: how a device answers the hub's commands. Pure.
//! * [`backoff`]: reconnect delays with jitter. Pure.
//! * `control`: the I/O shell of one device's control sessions: hello,
//!   heartbeats, commands, reconnects, injected session drops, moves to
//!   the next hub of a cluster when its hub fails.
//! * [`runner`]: runs a fleet's UDP sender and control sessions together
//!   ([`run_fleet`]) and sums up their [`FleetStats`].
//! * [`monitor`]: a running fleet's live figures ([`FleetMonitor`]).
//! * [`output`]: how the `device-sim` binary shows a run (live line,
//!   summary, JSON).
//! * [`run_command`]: `device-sim run`, its flags and what it does.
//! * [`fdlimit`]: the open-file limit a fleet of control sessions needs.
//! * [`bench`]: `device-sim bench`, measuring a hub process.

pub mod backoff;
pub mod bench;
pub mod command;
mod control;
pub mod device;
mod device_control;
pub mod faults;
pub mod fdlimit;
pub mod fleet;
pub mod hello;
pub mod keys;
pub mod monitor;
pub mod output;
pub mod run_command;
pub mod runner;
mod schedule;
pub mod signal;
pub mod udp;

pub use device::{SimDevice, SimSensor};
pub use faults::{
    CorruptedCounts, Corruption, FaultInjector, FaultSpec, InjectedFaults, PhantomFlood,
};
pub use fleet::{build_fleet, FleetSpec};
pub use monitor::{FleetMonitor, LiveStats};
pub use runner::{
    run_fleet, run_fleet_monitored, ControlTarget, FleetOptions, FleetStats, HubAddrs,
    DEFAULT_BOOT_PAUSE_MS,
};
pub use udp::{run_udp, UdpStats};
