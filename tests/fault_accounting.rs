//! Faults injected by device-sim (loss, reordering, duplicates, corruption,
//! jitter, clock skew, random reboots, control-session drops) are counted
//! by the hub exactly as injected.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use device_sim::{build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec};
use support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn injected_loss_reorder_and_duplicates_are_counted_exactly() {
    let hub = start_hub(&[
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", "faults-fleet-token"),
        ("SENSOR_HUB__CONTROL__HEARTBEAT_INTERVAL_MS", "100"),
        ("SENSOR_HUB__CONTROL__IDLE_TIMEOUT_MS", "1000"),
    ])
    .await;
    let fleet = build_fleet(&FleetSpec {
        devices: 3,
        first_id: 1,
        interval_ms: 5,
        seed: 11,
    });
    let mut options = FleetOptions::udp_only(hub.udp);
    options.control = Some(ControlTarget {
        addr: hub.control,
        token: "faults-fleet-token".into(),
        key_seed: None,
    });
    options.boot_pause_ms = 100;
    options.faults = FaultSpec {
        corrupt: 0.05,
        jitter_ms: 3,
        clock_skew_ms: -2_000,
        session_drop: 0.2,
        reboot: 0.003,
        ..FaultSpec::new(0.1, 0.1, 0.05).unwrap()
    };
    let cancel = CancellationToken::new();
    let sim = tokio::spawn(run_fleet(fleet, options, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(10), sim)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let injected = stats.injected;
    assert_eq!(stats.send_errors, 0);
    assert!(
        injected.lost > 0 && injected.reordered > 0 && injected.duplicated > 0,
        "{injected:?}"
    );
    assert!(
        injected.corrupted.total() > 0 && injected.restarts > 0,
        "{injected:?}"
    );
    assert!(stats.session_drops > 0, "{stats:?}");

    let on_wire = injected.sent + injected.corrupted.total();
    eventually("every datagram read", || async {
        hub.metric("sensor_hub_udp_datagrams_received_total").await == on_wire
    })
    .await;
    let dropped = |reason: &'static str| {
        let hub = &hub;
        async move {
            hub.metric(&format!(
                "sensor_hub_udp_datagrams_dropped_total{{reason=\"{reason}\"}}"
            ))
            .await
        }
    };
    let c = injected.corrupted;
    assert_eq!(dropped("truncated").await, c.truncated);
    assert_eq!(dropped("bad_magic").await, c.bad_magic);
    assert_eq!(dropped("bad_version").await, c.bad_version);
    assert_eq!(dropped("undecodable").await, c.undecodable);
    // Every welcome the simulator got is a session the hub opened.
    assert_eq!(
        hub.metric("sensor_hub_control_sessions_opened_total").await,
        stats.sessions_opened
    );
    assert_eq!(hub.metric("sensor_hub_udp_kernel_drops_total").await, 0);
    let count = |kind: &'static str| {
        let hub = &hub;
        async move {
            hub.metric(&format!("sensor_hub_sequence_total{{kind=\"{kind}\"}}"))
                .await
        }
    };
    assert_eq!(count("received").await, injected.sent);
    assert_eq!(count("lost").await, injected.lost);
    assert_eq!(count("reordered").await, injected.reordered);
    assert_eq!(count("duplicated").await, injected.duplicated);
    assert_eq!(count("restarts").await, injected.restarts);

    // The same figures per device in the API add up.
    let (_, body) = hub.get("/api/devices").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sum = |field: &str| -> u64 {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["stats"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (
            sum("received"),
            sum("lost"),
            sum("reordered"),
            sum("duplicated")
        ),
        (
            injected.sent,
            injected.lost,
            injected.reordered,
            injected.duplicated
        )
    );
    hub.stop().await;
}
