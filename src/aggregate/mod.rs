//! Statistics the hub derives from the data plane, as plain types with a
//! time passed in: rolling-window sensor statistics ([`window`]), per-device
//! sequence accounting — received, lost, reordered, duplicated, restarts
//! ([`sequence`]) — and latency histograms ([`latency`]).

pub mod latency;
pub mod sequence;
pub mod window;
