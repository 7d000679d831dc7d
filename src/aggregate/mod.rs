//! Statistics the hub derives from the data plane, as plain types with a
//! time passed in: rolling-window sensor statistics ([`window`]), per-device
//! sequence accounting — received, lost, reordered, duplicated, restarts
//! ([`sequence`]) — latency histograms ([`latency`]), the replay window of
//! authenticated datagrams ([`replay`]) and the per-device ingest budget
//! ([`budget`]).

pub mod budget;
pub mod latency;
pub mod replay;
pub mod sequence;
pub mod window;
