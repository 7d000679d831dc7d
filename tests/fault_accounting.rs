//! Faults injected by device-sim (loss, reordering, duplicates, corruption,
//! jitter, clock skew, random reboots, control-session drops) are counted
//! by the hub exactly as injected; so, for a keyed fleet, are the copies
//! its replay window refuses and an attacker's forgeries, replays (within
//! a session and across reboots) and spoofs, which leave the devices'
//! own figures alone; and so is a phantom-id flood against the bound on
//! discovered devices.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use device_sim::keys::{device_key, KeySeed};
use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec, FleetStats,
    InjectedFaults, SimDevice,
};
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

/// The key seed of the keyed fleets here.
const KEY_SEED: KeySeed = [0x5A; 32];

/// A hub without a fleet token whose device file gives each of `fleet`'s
/// devices its key (`device_key(KEY_SEED, id)`), plus `overrides`; and the
/// directory holding that file.
async fn keyed_hub(fleet: &[SimDevice], overrides: &[(&str, &str)]) -> (TestHub, TempDir) {
    let dir = TempDir::new("keyed-fleet");
    let path = dir.path().join("devices.json");
    let keyed: Vec<(u32, [u8; 32])> = fleet
        .iter()
        .map(|d| (d.id, device_key(&KEY_SEED, d.id)))
        .collect();
    adopt(&path, &[], &keyed);
    let path = path.display().to_string();
    let mut all = vec![("SENSOR_HUB__DEVICES__KEYS_PATH", path.as_str())];
    all.extend_from_slice(overrides);
    (start_hub(&all).await, dir)
}

/// Runs `fleet` against `hub` with `options` for `run_ms`, then stops it.
async fn run_for(fleet: Vec<SimDevice>, options: FleetOptions, run_ms: u64) -> FleetStats {
    let cancel = CancellationToken::new();
    let sim = tokio::spawn(run_fleet(fleet, options, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(run_ms)).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), sim)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Options for a fleet at `hub` whose keys come from [`KEY_SEED`], with
/// `faults` and a 100 ms boot pause.
fn keyed_options(hub: &TestHub, faults: FaultSpec) -> FleetOptions {
    FleetOptions {
        control: Some(ControlTarget {
            addr: hub.control,
            token: String::new(),
            key_seed: Some(KEY_SEED),
        }),
        boot_pause_ms: 100,
        faults,
        ..FleetOptions::udp_only(hub.udp)
    }
}

/// Datagrams the hub dropped under `reason`.
async fn dropped(hub: &TestHub, reason: &str) -> u64 {
    hub.metric(&format!(
        "sensor_hub_udp_datagrams_dropped_total{{reason=\"{reason}\"}}"
    ))
    .await
}

/// The hub's sequence count of `kind`, summed over devices.
async fn sequence(hub: &TestHub, kind: &str) -> u64 {
    hub.metric(&format!("sensor_hub_sequence_total{{kind=\"{kind}\"}}"))
        .await
}

/// Waits until the hub has read every datagram the fleet put on the wire,
/// then checks every drop reason against the report: each one injected is
/// counted exactly, and nothing else is dropped.
async fn assert_drops_exact(hub: &TestHub, stats: &FleetStats) {
    let injected = stats.injected;
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    assert_eq!(stats.datagrams_sent, injected.on_wire(), "{stats:?}");
    eventually("every datagram read", || async {
        hub.metric("sensor_hub_udp_datagrams_received_total").await == injected.on_wire()
    })
    .await;
    assert_eq!(hub.metric("sensor_hub_udp_kernel_drops_total").await, 0);
    let (_, metrics) = hub.get("/metrics").await;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sensor_hub_udp_datagrams_dropped_total"))
        .collect();
    let c = injected.corrupted;
    for (reason, expected) in [
        ("truncated", c.truncated),
        ("bad_magic", c.bad_magic),
        ("bad_version", c.bad_version),
        ("undecodable", c.undecodable),
        ("replayed", injected.replayed),
        ("bad_tag", injected.bad_tag),
        ("unauthenticated", injected.unauthenticated),
        ("oversized", 0),
        ("no_session", 0),
        ("unknown_device", 0),
        ("device_limit", 0),
        ("over_budget", 0),
    ] {
        assert_eq!(
            dropped(hub, reason).await,
            expected,
            "{reason}: {stats:?}\n{counted:#?}"
        );
    }
}

/// Every device `/api/devices` shows.
async fn api_devices(hub: &TestHub) -> Vec<serde_json::Value> {
    let (_, body) = hub.get("/api/devices").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["devices"].as_array().unwrap().clone()
}

/// The fleet's devices as `/api/devices` shows them.
async fn fleet_devices(hub: &TestHub, fleet: &[u32]) -> Vec<serde_json::Value> {
    let devices: Vec<serde_json::Value> = api_devices(hub)
        .await
        .into_iter()
        .filter(|d| fleet.contains(&(d["id"].as_u64().unwrap() as u32)))
        .collect();
    assert_eq!(devices.len(), fleet.len(), "{devices:?}");
    devices
}

fn keyed_fleet(devices: u32, seed: u64) -> Vec<SimDevice> {
    build_fleet(&FleetSpec {
        devices,
        first_id: 1,
        interval_ms: 5,
        seed,
    })
}

#[tokio::test]
async fn a_keyed_fleets_copies_are_counted_as_replays_and_its_faults_exactly() {
    let fleet = keyed_fleet(3, 21);
    let (hub, _devices) = keyed_hub(
        &fleet,
        &[
            ("SENSOR_HUB__CONTROL__HEARTBEAT_INTERVAL_MS", "100"),
            ("SENSOR_HUB__CONTROL__IDLE_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let ids: Vec<u32> = fleet.iter().map(|d| d.id).collect();
    let faults = FaultSpec {
        corrupt: 0.05,
        jitter_ms: 3,
        clock_skew_ms: -2_000,
        session_drop: 0.2,
        reboot: 0.003,
        ..FaultSpec::new(0.1, 0.1, 0.1).unwrap()
    };
    let stats = run_for(fleet, keyed_options(&hub, faults), 1_500).await;
    let injected = stats.injected;
    assert!(
        injected.lost > 0 && injected.reordered > 0 && injected.replayed > 0,
        "{injected:?}"
    );
    assert_eq!(injected.duplicated, 0, "a keyed device's copy is a replay");
    assert!(injected.corrupted.total() > 0, "{injected:?}");
    assert!(stats.session_drops > 0, "{stats:?}");

    assert_drops_exact(&hub, &stats).await;
    assert_eq!(sequence(&hub, "received").await, injected.sent);
    assert_eq!(sequence(&hub, "lost").await, injected.lost);
    assert_eq!(sequence(&hub, "reordered").await, injected.reordered);
    assert_eq!(sequence(&hub, "duplicated").await, 0);
    assert_eq!(sequence(&hub, "restarts").await, injected.restarts);
    assert_eq!(
        hub.metric("sensor_hub_control_sessions_opened_total").await,
        stats.sessions_opened
    );
    let devices = fleet_devices(&hub, &ids).await;
    let datagrams: u64 = devices
        .iter()
        .map(|d| d["datagrams"].as_u64().unwrap())
        .sum();
    assert_eq!(datagrams, injected.sent);
    assert!(devices.iter().all(|d| d["keyed"] == true), "{devices:?}");
    hub.stop().await;
}

#[tokio::test]
async fn forgeries_replays_and_spoofs_are_counted_and_change_no_devices_figures() {
    let fleet = keyed_fleet(3, 22);
    let (hub, _devices) = keyed_hub(&fleet, &[]).await;
    let ids: Vec<u32> = fleet.iter().map(|d| d.id).collect();
    let faults = FaultSpec {
        forge: 0.1,
        replay: 0.1,
        replay_after_reboot: 3,
        spoof: 0.1,
        reboot: 0.01,
        ..FaultSpec::NONE
    };
    let stats = run_for(fleet, keyed_options(&hub, faults), 1_500).await;
    let injected = stats.injected;
    assert!(
        injected.bad_tag > 0 && injected.replayed > 0 && injected.unauthenticated > 0,
        "{injected:?}"
    );
    // Reboots happened, and the devices came back under new sessions.
    assert!(
        stats.random_reboots > 0 && injected.restarts > 0,
        "{stats:?}"
    );
    assert_drops_exact(&hub, &stats).await;
    // The devices' own figures: everything they sent, nothing lost,
    // reordered or duplicated, from their own address, with their own
    // readings.
    assert_eq!(sequence(&hub, "received").await, injected.sent);
    assert_eq!(sequence(&hub, "restarts").await, injected.restarts);
    for kind in ["lost", "reordered", "duplicated"] {
        assert_eq!(sequence(&hub, kind).await, 0, "{kind}");
    }
    let (device_addr, stranger_addr) = (stats.device_addr.unwrap(), stats.stranger_addr.unwrap());
    assert_ne!(device_addr, stranger_addr);
    let devices = fleet_devices(&hub, &ids).await;
    let mut datagrams = 0;
    for device in &devices {
        assert_eq!(device["addr"], device_addr.to_string(), "{device}");
        let seq = &device["stats"];
        assert_eq!(
            (&seq["lost"], &seq["reordered"], &seq["duplicated"]),
            (&0.into(), &0.into(), &0.into()),
            "{device}"
        );
        for sensor in device["sensors"].as_array().unwrap() {
            for window in sensor["windows"].as_array().unwrap() {
                let (min, max) = (window["min"].as_f64(), window["max"].as_f64());
                assert!(
                    min.unwrap_or(0.0) > -1.0e6 && max.unwrap_or(0.0) < 1.0e6,
                    "a spoofed reading got in: {device}"
                );
            }
        }
        datagrams += device["datagrams"].as_u64().unwrap();
    }
    assert_eq!(datagrams, injected.sent);
    hub.stop().await;
}

#[tokio::test]
async fn impersonations_need_a_keyed_fleet() {
    let fleet = keyed_fleet(1, 23);
    let options = FleetOptions {
        faults: FaultSpec {
            spoof: 0.5,
            ..FaultSpec::NONE
        },
        ..FleetOptions::udp_only(([127, 0, 0, 1], 9).into())
    };
    let err = run_fleet(fleet, options, CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(format!("{err:#}").contains("need a keyed fleet"), "{err:#}");
}

#[tokio::test]
async fn a_phantom_flood_fills_the_discovered_slots_and_the_rest_is_refused() {
    const MAX_DISCOVERED: u64 = 5;
    let fleet = keyed_fleet(2, 24);
    let ids: Vec<u32> = fleet.iter().map(|d| d.id).collect();
    let phantoms = device_sim::faults::phantom_ids(&fleet, 12);
    // A UDP-only fleet, adopted in the device file: it takes no
    // discovered slot.
    let hub = start_hub_adopting(
        &[(
            "SENSOR_HUB__DEVICES__MAX_DISCOVERED",
            &MAX_DISCOVERED.to_string(),
        )],
        &ids,
    )
    .await;
    let options = FleetOptions {
        faults: FaultSpec {
            loss: 0.05,
            phantom_per_s: 300.0,
            phantom_ids: 12,
            ..FaultSpec::NONE
        },
        ..FleetOptions::udp_only(hub.udp)
    };
    let stats = run_for(fleet, options, 1_000).await;
    let injected: InjectedFaults = stats.injected;
    assert!(injected.phantom_sent > 100, "{injected:?}");
    assert_eq!(injected.phantom_ids, 12);
    assert!(stats.stranger_addr.is_some() && stats.stranger_addr != stats.device_addr);

    let (admitted, refused) = (
        injected.phantom_admitted(MAX_DISCOVERED),
        injected.phantom_refused(MAX_DISCOVERED),
    );
    assert!(admitted > 0 && refused > 0, "{injected:?}");
    eventually("every datagram read", || async {
        hub.metric("sensor_hub_udp_datagrams_received_total").await == injected.on_wire()
    })
    .await;
    assert_eq!(dropped(&hub, "discovered_limit").await, refused);
    assert_eq!(dropped(&hub, "unknown_device").await, 0);
    assert_eq!(
        hub.metric("sensor_hub_devices_discovered").await,
        MAX_DISCOVERED
    );
    // Phantoms that got a slot are devices like any other: every datagram
    // of theirs counted, none lost; the fleet's own figures unchanged.
    assert_eq!(sequence(&hub, "received").await, injected.sent + admitted);
    assert_eq!(sequence(&hub, "lost").await, injected.lost);
    // The first ids to take their turn got the slots.
    let mut discovered: Vec<u32> = api_devices(&hub)
        .await
        .iter()
        .filter(|d| d["adopted"] == false)
        .map(|d| {
            assert_eq!(d["addr"], stats.stranger_addr.unwrap().to_string(), "{d}");
            d["id"].as_u64().unwrap() as u32
        })
        .collect();
    discovered.sort_unstable();
    let mut first = phantoms[..MAX_DISCOVERED as usize].to_vec();
    first.sort_unstable();
    assert_eq!(discovered, first);
    for device in fleet_devices(&hub, &ids).await {
        assert_eq!(
            device["addr"],
            stats.device_addr.unwrap().to_string(),
            "{device}"
        );
    }
    hub.stop().await;
}
