//! How `device-sim` shows a run: the output mode ([`OutputMode`]: a live
//! line on a terminal, plain text, nothing, or JSON), the live status line,
//! the final summary and the final JSON report. Pure: figures in, text
//! out; `output::terminal` refreshes the live line.

pub mod terminal;

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::monitor::LiveStats;
use crate::runner::FleetStats;

/// What a run prints on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A status line refreshed in place once a second, then the summary
    /// (standard output is a terminal).
    Live,
    /// The summary at the end (standard output is not a terminal).
    Plain,
    /// Nothing; errors only, on standard error.
    Quiet,
    /// One JSON line at the end with every figure.
    Json,
}

impl OutputMode {
    /// The mode for the flags given and whether standard output is a
    /// terminal (`--json` and `--quiet` win over the terminal).
    pub fn choose(quiet: bool, json: bool, stdout_is_terminal: bool) -> OutputMode {
        match (quiet, json, stdout_is_terminal) {
            (true, _, _) => OutputMode::Quiet,
            (_, true, _) => OutputMode::Json,
            (_, _, true) => OutputMode::Live,
            _ => OutputMode::Plain,
        }
    }

    /// The log filter when `RUST_LOG` says nothing: per-device logs would
    /// scroll the live line away, and quiet means errors only.
    pub fn default_log_filter(self) -> &'static str {
        match self {
            OutputMode::Plain => "info",
            OutputMode::Live | OutputMode::Json => "warn",
            OutputMode::Quiet => "error",
        }
    }

    /// Whether `RUST_LOG` may widen the log filter (not when quiet).
    pub fn honours_rust_log(self) -> bool {
        self != OutputMode::Quiet
    }
}

/// Datagrams per second between two readings of the sent count.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    last: Option<(Duration, u64)>,
}

impl RateMeter {
    /// The rate since the previous call, given the time since the start
    /// and the count now (0 on the first call).
    pub fn rate(&mut self, elapsed: Duration, count: u64) -> f64 {
        let rate = match self.last {
            Some((then, before)) if elapsed > then => {
                count.saturating_sub(before) as f64 / (elapsed - then).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((elapsed, count));
        rate
    }
}

/// The live status line: devices, sessions up, datagrams per second,
/// commands, faults injected, and time (toward `duration`, if set).
pub fn status_line(
    devices: u32,
    live: &LiveStats,
    datagrams_per_s: f64,
    elapsed: Duration,
    duration: Option<Duration>,
) -> String {
    let mut line = format!(
        "devices {devices} | sessions up {} | {datagrams_per_s:.0} datagrams/s | {} commands | {} faults injected | ",
        live.sessions_up, live.commands_received, live.faults_injected,
    );
    let secs = elapsed.as_secs();
    match duration {
        Some(total) if !total.is_zero() => {
            let done = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
            let _ = write!(
                line,
                "{secs} s / {} s ({:.0}%)",
                total.as_secs(),
                done * 100.0
            );
        }
        _ => {
            let _ = write!(line, "{secs} s");
        }
    }
    if live.send_errors > 0 {
        let _ = write!(line, " | {} send errors", live.send_errors);
    }
    line
}

/// The summary printed when a run ends; with `faults` the injected faults
/// too.
pub fn summary(stats: &FleetStats, faults: bool) -> String {
    let mut text = format!(
        "sent {} datagrams ({} bytes), {} send errors; control: {} sessions, {} rejects, {} commands, {} reboots, {} failed connection attempts, {} hub moves",
        stats.datagrams_sent,
        stats.bytes_sent,
        stats.send_errors,
        stats.sessions_opened,
        stats.rejects,
        stats.commands_received,
        stats.reboots,
        stats.connect_failures,
        stats.hub_moves,
    );
    if faults {
        let i = &stats.injected;
        let c = &i.corrupted;
        let _ = write!(
            text,
            "\ninjected faults: {} datagrams for the hub to accept, {} lost, {} reordered, {} duplicated, {} restarts; \
             corrupted {} ({} truncated, {} bad_magic, {} bad_version, {} undecodable); \
             impersonated {} ({} replayed, {} bad_tag, {} unauthenticated); \
             {} phantom datagrams from {} ids; \
             {} random reboots, {} session drops",
            i.sent,
            i.lost,
            i.reordered,
            i.duplicated,
            i.restarts,
            c.total(),
            c.truncated,
            c.bad_magic,
            c.bad_version,
            c.undecodable,
            i.impersonations(),
            i.replayed,
            i.bad_tag,
            i.unauthenticated,
            i.phantom_sent,
            i.phantom_ids,
            stats.random_reboots,
            stats.session_drops,
        );
    }
    text
}

/// Everything about a finished run, for `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunReport {
    /// Devices simulated.
    pub devices: u32,
    /// How long the run took, in seconds.
    pub elapsed_s: f64,
    /// Datagrams sent per second, over the whole run.
    pub datagrams_per_s: f64,
    /// The run's figures.
    #[serde(flatten)]
    pub stats: FleetStats,
}

impl RunReport {
    /// The report of a run of `devices` that took `elapsed`.
    pub fn new(devices: u32, elapsed: Duration, stats: FleetStats) -> RunReport {
        let elapsed_s = elapsed.as_secs_f64();
        let datagrams_per_s = if elapsed_s > 0.0 {
            stats.datagrams_sent as f64 / elapsed_s
        } else {
            0.0
        };
        RunReport {
            devices,
            elapsed_s,
            datagrams_per_s,
            stats,
        }
    }

    /// The report as one line of JSON.
    pub fn json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{CorruptedCounts, InjectedFaults};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn flags_win_over_the_terminal() {
        assert_eq!(OutputMode::choose(false, false, true), OutputMode::Live);
        assert_eq!(OutputMode::choose(false, false, false), OutputMode::Plain);
        assert_eq!(OutputMode::choose(true, false, true), OutputMode::Quiet);
        assert_eq!(OutputMode::choose(false, true, true), OutputMode::Json);
        assert_eq!(OutputMode::Quiet.default_log_filter(), "error");
        assert!(!OutputMode::Quiet.honours_rust_log() && OutputMode::Json.honours_rust_log());
    }

    #[test]
    fn the_rate_is_taken_between_readings() {
        let mut meter = RateMeter::default();
        assert_eq!(meter.rate(S, 500), 0.0);
        assert_eq!(meter.rate(2 * S, 10_500), 10_000.0);
        assert_eq!(meter.rate(2 * S + S / 2, 11_500), 2_000.0);
        // The same instant again: no rate rather than a division by zero.
        assert_eq!(meter.rate(2 * S + S / 2, 11_600), 0.0);
    }

    #[test]
    fn the_status_line_shows_progress_toward_the_duration() {
        let live = LiveStats {
            sessions_up: 9_998,
            commands_received: 3,
            faults_injected: 120,
            ..LiveStats::default()
        };
        assert_eq!(
            status_line(10_000, &live, 10_012.4, 4 * S, Some(10 * S)),
            "devices 10000 | sessions up 9998 | 10012 datagrams/s | 3 commands | 120 faults injected | 4 s / 10 s (40%)"
        );
        let line = status_line(5, &live, 5.0, 12 * S, None);
        assert!(line.ends_with("| 12 s"), "{line}");
        let late = status_line(5, &live, 5.0, 12 * S, Some(10 * S));
        assert!(late.ends_with("(100%)"), "{late}");
        let failing = LiveStats {
            send_errors: 7,
            ..live
        };
        assert!(status_line(5, &failing, 0.0, S, None).ends_with("| 7 send errors"));
    }

    #[test]
    fn the_summary_names_every_fault_when_asked() {
        let stats = FleetStats {
            datagrams_sent: 10,
            random_reboots: 2,
            session_drops: 1,
            injected: InjectedFaults {
                corrupted: CorruptedCounts {
                    bad_magic: 4,
                    ..CorruptedCounts::default()
                },
                replayed: 1,
                bad_tag: 2,
                unauthenticated: 3,
                phantom_sent: 40,
                phantom_ids: 8,
                ..InjectedFaults::default()
            },
            ..FleetStats::default()
        };
        assert!(!summary(&stats, false).contains("injected"));
        let moved = FleetStats {
            hub_moves: 3,
            ..stats
        };
        assert!(
            summary(&moved, false).ends_with("failed connection attempts, 3 hub moves"),
            "{}",
            summary(&moved, false)
        );
        let text = summary(&stats, true);
        assert!(text.starts_with("sent 10 datagrams"), "{text}");
        assert!(
            text.contains("corrupted 4 (0 truncated, 4 bad_magic"),
            "{text}"
        );
        assert!(
            text.contains("impersonated 6 (1 replayed, 2 bad_tag, 3 unauthenticated)"),
            "{text}"
        );
        assert!(
            text.contains("; 40 phantom datagrams from 8 ids; "),
            "{text}"
        );
        assert!(
            text.ends_with("2 random reboots, 1 session drops"),
            "{text}"
        );
    }

    #[test]
    fn the_json_report_is_one_line_with_every_figure() {
        let stats = FleetStats {
            datagrams_sent: 20_000,
            session_drops: 3,
            injected: InjectedFaults {
                lost: 5,
                corrupted: CorruptedCounts {
                    undecodable: 2,
                    ..CorruptedCounts::default()
                },
                bad_tag: 7,
                phantom_sent: 30,
                phantom_ids: 3,
                ..InjectedFaults::default()
            },
            device_addr: Some(([127, 0, 0, 1], 40_000).into()),
            ..FleetStats::default()
        };
        let line = RunReport::new(100, 2 * S, stats)
            .json_line()
            .expect("serialises");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["devices"], 100);
        assert_eq!(v["elapsed_s"], 2.0);
        assert_eq!(v["datagrams_per_s"], 10_000.0);
        assert_eq!(v["datagrams_sent"], 20_000);
        assert_eq!(v["session_drops"], 3);
        assert_eq!(v["hub_moves"], 0);
        assert_eq!(v["injected"]["lost"], 5);
        assert_eq!(v["injected"]["corrupted"]["undecodable"], 2);
        assert_eq!(v["injected"]["restarts"], 0);
        assert_eq!(v["injected"]["bad_tag"], 7);
        assert_eq!(v["injected"]["replayed"], 0);
        assert_eq!(v["injected"]["unauthenticated"], 0);
        assert_eq!(v["injected"]["phantom_sent"], 30);
        assert_eq!(v["injected"]["phantom_ids"], 3);
        assert_eq!(v["device_addr"], "127.0.0.1:40000");
        assert_eq!(v["stranger_addr"], serde_json::Value::Null);
        assert_eq!(
            RunReport::new(1, Duration::ZERO, stats).datagrams_per_s,
            0.0
        );
    }
}
