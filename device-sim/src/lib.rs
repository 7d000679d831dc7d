//! Simulated sensor devices: the demo fleet, and (later) the fault injector
//! and load generator.
//!
//! # Layout
//!
//! * [`signal`]: what a sensor measures over time (daily cycles, drift,
//!   noise, spikes), as pure functions of a time passed in.
//! * [`device`]: one simulated device: its sensors and its datagram
//!   sequence. Pure: the caller says what time it is.
//! * [`fleet`]: builds a varied fleet of devices from a few parameters.
//! * [`udp`]: the I/O shell that sends a fleet's datagrams on one socket,
//!   each device at its own interval.

pub mod device;
pub mod fleet;
pub mod signal;
pub mod udp;

pub use device::{SimDevice, SimSensor};
pub use fleet::{build_fleet, FleetSpec};
pub use udp::{run_udp, UdpStats};
