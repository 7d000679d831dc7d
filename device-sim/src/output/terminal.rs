//! The live status line on a terminal: once a second, the line is
//! rewritten in place (carriage return, erase line) from a
//! [`FleetMonitor`]'s snapshot; when the run stops, the line is erased so
//! the summary takes its place.

use std::io::Write;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{status_line, RateMeter};
use crate::monitor::FleetMonitor;

/// Moves to the start of the line and erases it.
const ERASE_LINE: &str = "\r\x1b[2K";

/// Rewrites the status line of a run of `devices` (started at `started`,
/// meant to last `duration`) on `out` once a second until `stop` fires,
/// then erases it. Write errors end the display, not the run.
pub async fn show_status_line(
    monitor: FleetMonitor,
    devices: u32,
    started: Instant,
    duration: Option<Duration>,
    stop: CancellationToken,
    mut out: impl Write,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut meter = RateMeter::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let live = monitor.snapshot();
        let elapsed = started.elapsed();
        let rate = meter.rate(elapsed, live.datagrams_sent);
        let line = status_line(devices, &live, rate, elapsed, duration);
        if write!(out, "{ERASE_LINE}{line}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
    let _ = write!(out, "{ERASE_LINE}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose output the test can read afterwards.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_line_is_rewritten_each_second_then_erased() {
        let screen = Screen::default();
        let stop = CancellationToken::new();
        let shown = tokio::spawn(show_status_line(
            FleetMonitor::default(),
            3,
            Instant::now(),
            Some(Duration::from_secs(10)),
            stop.clone(),
            screen.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        stop.cancel();
        shown.await.expect("no panic");
        let text = String::from_utf8(screen.0.lock().expect("lock").clone()).expect("UTF-8");
        let lines: Vec<&str> = text.split(ERASE_LINE).filter(|l| !l.is_empty()).collect();
        // At 0 s, 1 s and 2 s; then the line is erased.
        assert_eq!(lines.len(), 3, "{text:?}");
        assert!(
            lines[0].starts_with("devices 3 | sessions up 0"),
            "{text:?}"
        );
        assert!(lines[2].ends_with("2 s / 10 s (20%)"), "{text:?}");
        assert!(text.ends_with(ERASE_LINE));
    }
}
