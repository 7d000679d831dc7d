//! Supervision on tokio's paused clock: failures are counted and shown,
//! restarts are bounded, and a task that cannot come back stops the hub.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[tokio::test(start_paused = true)]
async fn a_panicking_task_is_counted_restarted_and_healthy_again() {
    let health = Health::default();
    let cancel = CancellationToken::new();
    let mut supervisor = Supervisor::new(health.clone(), cancel.clone());
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    let stop = cancel.clone();
    supervisor.spawn("ingest", move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let stop = stop.clone();
        async move {
            if n == 0 {
                panic!("a bug in ingest");
            }
            stop.cancelled().await;
            Ok(())
        }
    });
    let watching = async { supervisor.watch().await };
    let stopper = async {
        // Let the first run panic and the restart begin.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted once");
        assert!(health.failed().is_empty(), "running again");
        assert_eq!(health.failures(), [("ingest", 1)]);
        cancel.cancel();
    };
    let (watched, ()) = tokio::join!(watching, stopper);
    assert_eq!(watched, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_failing_stops_the_hub_naming_it() {
    let health = Health::default();
    let mut supervisor = Supervisor::new(health.clone(), CancellationToken::new());
    supervisor.spawn("control", || async { Err("accept failed".to_string()) });
    let why = supervisor.watch().await.unwrap_err();
    assert!(
        why.contains("control") && why.contains("accept failed"),
        "{why}"
    );
    assert!(why.contains("within a minute"), "{why}");
    assert_eq!(health.failed(), ["control"]);
    assert_eq!(
        health.failures(),
        [("control", RESTARTS_PER_MINUTE as u64 + 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_without_a_factory_is_not_restarted() {
    let health = Health::default();
    let mut supervisor = Supervisor::new(health.clone(), CancellationToken::new());
    supervisor.spawn_once("http", async { Ok(()) });
    let why = supervisor.watch().await.unwrap_err();
    assert!(
        why.contains("http") && why.contains("ended unexpectedly"),
        "{why}"
    );
    assert!(why.contains("cannot be restarted"), "{why}");
    assert_eq!(health.failed(), ["http"]);
}

#[tokio::test(start_paused = true)]
async fn tasks_ending_at_shutdown_are_not_failures() {
    let health = Health::default();
    let cancel = CancellationToken::new();
    let mut supervisor = Supervisor::new(health.clone(), cancel.clone());
    let stop = cancel.clone();
    supervisor.spawn("stats", move || {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            Ok(())
        }
    });
    cancel.cancel();
    assert_eq!(supervisor.watch().await, Ok(()));
    supervisor.join_all().await;
    assert!(health.failures().is_empty());
}
