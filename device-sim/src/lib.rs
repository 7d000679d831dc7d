//! Simulated sensor devices: the demo fleet, its UDP datagrams and its TCP
//! control sessions, the UDP fault injector, and (later) the load generator.
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
//! * [`faults`]: loses, reorders and duplicates a device's datagrams and
//!   reports exactly what the hub will count. Pure.
//! * [`udp`]: the I/O shell that sends a fleet's datagrams on one socket,
//!   each device at its own interval.
//! * `device_control`: per-device state shared by a control session (which
//!   changes the interval or asks for a reboot) and the UDP sender.
//! * [`hello`]: the hello a device opens a control session with. Pure.
//! * [`command`]: how a device answers the hub's commands. Pure.
//! * [`backoff`]: reconnect delays with jitter. Pure.
//! * `control`: the I/O shell of one device's control sessions: hello,
//!   heartbeats, commands, reconnects.
//! * [`runner`]: runs a fleet's UDP sender and control sessions together
//!   ([`run_fleet`]) and sums up their [`FleetStats`].

pub mod backoff;
pub mod command;
mod control;
pub mod device;
mod device_control;
pub mod faults;
pub mod fleet;
pub mod hello;
pub mod runner;
mod schedule;
pub mod signal;
pub mod udp;

pub use device::{SimDevice, SimSensor};
pub use faults::{FaultInjector, FaultSpec, InjectedFaults};
pub use fleet::{build_fleet, FleetSpec};
pub use runner::{run_fleet, ControlTarget, FleetOptions, FleetStats, DEFAULT_BOOT_PAUSE_MS};
pub use udp::{run_udp, UdpStats};
