//! sensor-hub: devices send compact UDP datagrams and keep a TCP control
//! channel; the hub keeps the latest state of every device and sensor,
//! counts every datagram it reads, keeps history, and streams live readings
//! as JSON over WebSocket to the dashboard it serves.
//!
//! # Map
//!
//! Layers, bottom first: a module depends only on modules listed before
//! it, never on one listed after it, so there is no cycle
//! (`tests/layers.rs` checks every `crate::` path in `src/` against this
//! order).
//!
//! 1. Leaves — no dependency on the rest of the crate, but for leaves
//!    listed before them:
//!    * [`clock`]: the one injected clock: monotonic time for durations and
//!      deadlines, wall time for timestamps.
//!    * [`config`]: typed configuration and its layered loading.
//!    * [`metrics`]: helpers over `prometheus-client`; each subsystem
//!      writes its own families.
//!    * [`response`]: HTTP responses and JSON errors.
//!    * [`secret_file`]: JSON files of secrets shared with the command
//!      line (locked, atomic, mode 0600).
//!    * [`device_file`]: the adopted devices and their keys (uses
//!      `secret_file`).
//!    * [`net`]: socket options and kernel counters.
//!    * [`connection`]: what the HTTP listener tells the application about
//!      a connection (peer, TLS, authenticated).
//!    * [`per_address`]: caps per client address (WebSocket clients,
//!      history queries).
//!    * [`assets`]: the embedded dashboard files.
//!    * [`command_json`]: commands as clients write them in JSON.
//!    * [`aggregate`]: rolling windows, sequence accounting, latency.
//! 2. Pure core state (no I/O; time passed in):
//!    * [`registry`]: devices, control sessions, liveness and the command
//!      lifecycle, as a state machine that returns effects.
//!    * [`state`]: the data plane: per-device and per-sensor state, ingest
//!      counters, drop reasons (admission is the registry's).
//!    * [`json`]: JSON forms of values and datagrams (uses `state`).
//!    * [`stream`]: the numbered event stream and its replay ring,
//!      subscriptions and conflation (uses `state`, `registry`).
//!    * [`outbox`]: a cluster hub's own events waiting to be shared, and
//!      its link mode (uses `stream`).
//!    * [`remote`]: the devices other hubs of a cluster hold, as the
//!      shared stream describes them (uses `stream`, `registry`, `outbox`).
//!    * [`views`]: owned JSON views of devices (uses the above).
//! 3. Storage: [`history`]: tiers, rollups and reduction (pure), and the
//!    SQLite store with its writer thread (uses `state`, `registry`,
//!    `config`, `clock`, `metrics`).
//! 4. [`core`]: [`core::Core`] owns state, registry and stream behind one
//!    private lock and applies every effect in one place.
//! 5. Shell — I/O, each task given only what it needs:
//!    * [`supervisor`]: supervised tasks and health.
//!    * [`systemd`]: readiness, stopping and watchdog pings to systemd
//!      (uses `core`).
//!    * [`auth`]: who may use the web side: the credentials file,
//!      sessions, the slowdown of guesses, the Host/Origin policy.
//!    * [`ingest`]: the UDP receive loop.
//!    * [`control`]: the TCP control channel: listener, sessions, tokens.
//!    * [`ticker`]: wakes the core at its next deadline.
//!    * [`stats`]: publishes per-device statistics periodically.
//!    * [`history_api`]: history queries of HTTP and WebSocket clients.
//!    * [`ws`]: the `/ws` endpoint; [`ws::client`] is the sans-IO
//!      per-client logic, [`ws::session`] its socket driver.
//!    * [`mqtt`]: the MQTT bridge for Home Assistant: [`mqtt::bridge`] is
//!      its sans-IO state machine, [`mqtt::discovery`] the discovery
//!      messages, the module itself drives the broker connection.
//!    * [`cluster`]: several hubs, one fleet: the link to the other hubs
//!      through Redis ([`cluster::wire`] is the shared stream's entry
//!      format).
//!    * [`http`]: the HTTP application (uses `ws` for `/ws`, `mqtt` for
//!      the bridge's status).
//!    * [`http_server`]: the HTTP listener: accept loop, TLS, timeouts and
//!      the connection cap; [`http_server::table`] is its sans-IO
//!      connection table.
//!    * [`server`]: binds the sockets ([`server::Listeners`]), wires and
//!      runs the hub ([`server::run`]) until a shutdown future completes.
//!
//! `sensor-hub demo` (a hub plus simulated devices in one process) is the
//! binary's (src/bin/sensor-hub/), behind the cargo feature `demo`: the
//! library never depends on device-sim, so a build without that feature
//! contains no simulator.
//!
//! The wire format is in the `sensor-hub-protocol` crate and
//! docs/PROTOCOL.md; the HTTP API in docs/openapi.yaml; the WebSocket API
//! in docs/WEBSOCKET.md; every metric in docs/METRICS.md.

pub mod aggregate;
pub mod assets;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod command_json;
pub mod config;
pub mod connection;
pub mod control;
pub mod core;
pub mod device_file;
pub mod history;
pub mod history_api;
pub mod http;
pub mod http_server;
pub mod ingest;
pub mod json;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod outbox;
pub mod per_address;
pub mod registry;
pub mod remote;
pub mod response;
pub mod secret_file;
pub mod server;
pub mod state;
pub mod stats;
pub mod stream;
pub mod supervisor;
pub mod systemd;
pub mod ticker;
pub mod views;
pub mod ws;
