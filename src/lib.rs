//! sensor-hub: devices send compact UDP datagrams; the hub keeps the latest
//! state of every device and sensor, counts every datagram it reads, and
//! streams live readings as JSON over WebSocket to the dashboard it serves.
//!
//! # Layout
//!
//! Pure core (no sockets, no clocks; time is passed in):
//! * [`state`]: per-device and per-sensor state, ingest counters, drop reasons.
//! * [`registry`]: control sessions, liveness and the command lifecycle,
//!   as a state machine that returns effects.
//! * [`command_json`]: commands as clients write them in JSON.
//! * [`aggregate`]: rolling windows, sequence accounting, latency.
//! * [`history`]: reading history tiers and retention, rollups, reduction.
//! * [`stream`]: the numbered event stream, its replay ring,
//!   subscriptions and coalescing.
//! * [`views`]: JSON views of devices for the API and snapshots.
//! * [`ws::messages`]: the WebSocket JSON messages, both directions.
//! * [`config`]: typed configuration and its layered loading.
//! * [`metrics`]: counters and their Prometheus text.
//!
//! Thin I/O shell:
//! * [`server`]: binds the sockets ([`server::Listeners`]) and runs the hub
//!   ([`server::run`]) until a shutdown future completes.
//! * [`hub`]: the handle shared by all tasks.
//! * [`ingest`]: the UDP receive loop.
//! * [`stats`]: publishes per-device statistics periodically.
//! * [`ws`]: the `/ws` endpoint and per-client sessions.
//! * [`http`]: the HTTP application (dashboard files, API, metrics).
//! * [`history_api`]: history queries of HTTP and WebSocket clients.
//! * [`history::service`]: the history database, its writer thread and queue.
//! * [`control`]: the TCP control channel: listener, sessions, tokens.
//! * [`dispatch`]: applies the registry's effects (sessions, status frames).
//! * [`net`]: socket options and kernel counters.
//! * [`assets`]: the embedded dashboard files.
//!
//! `sensor-hub demo` (a hub plus simulated devices in one process) is the
//! binary's, behind the cargo feature `demo`: the library never depends on
//! device-sim, so a build without that feature contains no simulator.
//!
//! The wire format is in the `sensor-hub-protocol` crate and
//! `docs/PROTOCOL.md`.

pub mod aggregate;
pub mod assets;
pub mod command_json;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod history;
pub mod history_api;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod server;
pub mod state;
pub mod stats;
pub mod stream;
pub mod views;
pub mod ws;
