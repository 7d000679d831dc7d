//! The core on a manual clock: admission, duplicates, the command lifecycle
//! through effects, deadlines on monotonic time, snapshots consistent with
//! the stream. No sockets, no sleeps.

use super::*;
use crate::config::HubConfig;
use sensor_hub_protocol::control::{Name, Text};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};

const WALL: u64 = 1_700_000_000_000;

fn core_with(max_devices: usize) -> Core {
    let mut config = HubConfig::defaults().unwrap();
    config.limits.max_devices = max_devices;
    Core::new(&config, None)
}

fn at(mono_ms: u64) -> Now {
    Now::at(mono_ms, WALL + mono_ms)
}

fn datagram(device_id: u32, seq: u32, now: Now) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: now.wall_ms as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(seq as f32),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    encode_datagram(&d, &mut buf).unwrap().to_vec()
}

fn ingest(core: &Core, bytes: &[u8], now: Now) -> BatchOutcome {
    core.ingest_batch(
        &[Received {
            bytes,
            wire_len: bytes.len(),
            from: "192.0.2.1:5000".parse().unwrap(),
        }],
        now,
    )
}

fn hello(device_id: u32, interval_ms: u32) -> Hello {
    Hello {
        device_id,
        name: Name::try_from("dev").unwrap(),
        firmware: Name::try_from("1").unwrap(),
        token: Text::new(),
        interval_ms,
        device_time_ms: WALL,
        sensors: Default::default(),
    }
}

fn events(core: &Core) -> Vec<Event> {
    core.read_stream(1, 10_000)
        .unwrap()
        .iter()
        .map(|e| e.event.clone())
        .collect()
}

fn status_of(core: &Core, device: DeviceId, now: Now) -> Option<DeviceStatus> {
    core.snapshot(None, now)
        .devices
        .into_iter()
        .find(|d| serde_json::to_value(d).unwrap()["id"] == device)
        .and_then(|d| {
            serde_json::from_value(serde_json::to_value(d).unwrap()["status"].clone()).ok()
        })
}

#[test]
fn the_device_limit_counts_every_device_once_whichever_plane() {
    // Regression for the two ways `limits.max_devices` was counted.
    let core = core_with(3);
    let mut list = crate::device_file::DeviceList::default();
    for id in [1, 2, 3] {
        list.add(id, "", None, 0).unwrap();
    }
    core.set_device_list(&list.keyring(), at(0));
    let (tx, _rx) = mpsc::channel(4);
    core.open_session(&hello(100, 1_000), tx, None, at(0))
        .unwrap();
    for d in [1, 2] {
        assert_eq!(ingest(&core, &datagram(d, 0, at(1)), at(1)).applied, 1);
    }
    let refused = ingest(&core, &datagram(3, 0, at(2)), at(2));
    assert_eq!(
        refused.dropped, 1,
        "a 4th device is refused at a limit of 3"
    );
    // The hello'd device's own datagrams are accepted.
    assert_eq!(ingest(&core, &datagram(100, 0, at(3)), at(3)).applied, 1);
    let stats = core.stats();
    assert_eq!(stats.devices, 3);
    assert_eq!(
        core.snapshot(None, at(4)).devices.len(),
        3,
        "/api/devices agrees"
    );
    assert_eq!(stats.ingest.dropped[DropReason::DeviceLimit.index()], 1);
}

#[test]
fn a_duplicate_is_neither_streamed_nor_stored_again() {
    let core = core_with(10);
    let bytes = datagram(5, 1, at(0));
    ingest(&core, &bytes, at(0));
    let head = core.stream_head();
    let outcome = ingest(&core, &bytes, at(10));
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(core.stream_head(), head, "nothing new in the stream");
    let readings: usize = events(&core)
        .iter()
        .filter_map(|e| match e {
            Event::Readings(batch) => Some(batch.len()),
            _ => None,
        })
        .sum();
    assert_eq!(readings, 1);
    assert_eq!(core.stats().seq_totals.duplicated, 1);
}

#[test]
fn a_successful_set_interval_moves_liveness_to_the_new_cadence() {
    // Regression: after set_interval succeeded, liveness kept the hello's
    // interval, so a device told to report every 60 s went late, then
    // offline.
    let core = core_with(10);
    let (tx, mut rx) = mpsc::channel(4);
    core.open_session(&hello(7, 1_000), tx, None, at(0))
        .unwrap();
    let record = core
        .submit_command(
            7,
            CommandBody::SetInterval { ms: 60_000 },
            true,
            Origin::default(),
            at(0),
        )
        .unwrap();
    let Ok(SessionMessage::Command { id, .. }) = rx.try_recv() else {
        panic!("the command is sent to the session");
    };
    assert_eq!(id, record.id);
    core.command_acked(7, id, at(10));
    core.command_result(7, id, Outcome::Succeeded, None, at(20));
    ingest(&core, &datagram(7, 0, at(30)), at(30));
    // 20 s of silence: 3 old intervals, but not 3 new ones.
    core.tick(at(20_030));
    assert_eq!(status_of(&core, 7, at(20_030)), Some(DeviceStatus::Online));
    core.tick(at(30 + 3 * 60_000));
    assert_eq!(
        status_of(&core, 7, at(30 + 3 * 60_000)),
        Some(DeviceStatus::Late)
    );
}

#[test]
fn a_command_to_an_unknown_device_is_not_submitted() {
    let core = core_with(10);
    let e = core
        .submit_command(9, CommandBody::Identify, true, Origin::default(), at(0))
        .unwrap_err();
    assert_eq!(e, SubmitError::UnknownDevice(9));
    assert_eq!(core.stream_head(), 0);
    assert!(core.command(1).is_none());
}

#[test]
fn a_wall_clock_step_neither_expires_commands_nor_freezes_liveness() {
    let core = core_with(10);
    ingest(&core, &datagram(1, 0, at(0)), at(0));
    let record = core
        .submit_command(1, CommandBody::Identify, true, Origin::default(), at(0))
        .unwrap();
    // NTP steps the wall clock a day forward; monotonic time moved 1 s.
    let stepped = Now::at(1_000, WALL + 86_400_000);
    core.tick(stepped);
    assert_eq!(core.command(record.id).unwrap().state, CommandState::Queued);
    // ... and a day back: liveness still follows monotonic silence.
    let back = Now::at(5_000, WALL - 86_400_000);
    core.tick(back);
    assert_eq!(status_of(&core, 1, back), Some(DeviceStatus::Late));
    // The TTL passes on the monotonic clock.
    let ttl = HubConfig::defaults().unwrap().commands.ttl_ms;
    core.tick(Now::at(ttl, WALL));
    assert_eq!(
        core.command(record.id).unwrap().state,
        CommandState::TimedOut
    );
}

#[test]
fn tick_says_when_it_next_has_work() {
    let core = core_with(10);
    assert_eq!(core.tick(at(0)), None, "nothing to watch");
    ingest(&core, &datagram(1, 0, at(100)), at(100));
    let config = HubConfig::defaults().unwrap();
    let interval = config.liveness.default_interval_ms;
    let late_at = 100 + interval * u64::from(config.liveness.late_after_intervals);
    assert_eq!(core.tick(at(200)), Some(late_at));
    // A command's deadline comes earlier than that only if its TTL is shorter.
    core.submit_command(1, CommandBody::Identify, true, Origin::default(), at(200))
        .unwrap();
    let next = core.tick(at(300)).unwrap();
    assert_eq!(next, late_at.min(200 + config.commands.ttl_ms));
    // At the deadline the device goes late, and the next deadline is later.
    let after = core.tick(at(late_at)).unwrap();
    assert!(after > late_at);
    assert_eq!(status_of(&core, 1, at(late_at)), Some(DeviceStatus::Late));
}

#[test]
fn a_snapshot_is_consistent_with_the_stream_position() {
    let core = core_with(10);
    ingest(&core, &datagram(1, 0, at(0)), at(0));
    let snapshot = core.snapshot(None, at(1));
    assert_eq!(snapshot.seq, core.stream_head());
    ingest(&core, &datagram(2, 0, at(2)), at(2));
    // What follows the snapshot is exactly device 2's arrival.
    let after = core.read_stream(snapshot.seq + 1, 100).unwrap();
    assert!(after.iter().any(|e| matches!(
        &e.event,
        Event::DeviceStatus {
            device: 2,
            previous: None,
            ..
        }
    )));
    assert!(after.iter().all(|e| match &e.event {
        Event::Readings(batch) => batch.iter().all(|d| d.device == 2),
        Event::DeviceStatus { device, .. } => *device == 2,
        _ => true,
    }));
}

#[test]
fn a_replaced_session_is_told_to_close() {
    let core = core_with(10);
    let (tx1, mut rx1) = mpsc::channel(4);
    let (tx2, _rx2) = mpsc::channel(4);
    let first = core
        .open_session(&hello(3, 1_000), tx1, None, at(0))
        .unwrap();
    let second = core
        .open_session(&hello(3, 1_000), tx2, None, at(1_000))
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        rx1.try_recv().unwrap(),
        SessionMessage::Close(RejectReason::Replaced)
    );
    // The old session's close does not close the new one.
    core.close_session(3, first, at(2));
    assert_eq!(core.stats().control_sessions, 1);
}

#[test]
fn device_stats_are_published_only_when_they_change() {
    let core = core_with(10);
    ingest(&core, &datagram(1, 0, at(0)), at(0));
    let mut published = HashMap::new();
    assert_eq!(core.publish_device_stats(&mut published, at(100)), 1);
    assert_eq!(core.publish_device_stats(&mut published, at(100)), 0);
    ingest(&core, &datagram(1, 1, at(200)), at(200));
    assert_eq!(core.publish_device_stats(&mut published, at(300)), 1);
}

#[test]
fn metrics_are_rendered_from_one_consistent_read() {
    let core = Arc::new(core_with(10));
    ingest(&core, &datagram(1, 0, at(0)), at(0));
    ingest(&core, b"junk", at(0));
    let mut registry = crate::metrics::Registry::default();
    registry.register_collector(Box::new(CoreMetrics(core.clone())));
    let text = crate::metrics::render(&registry);
    for line in [
        "sensor_hub_udp_datagrams_received_total 2",
        "sensor_hub_udp_datagrams_dropped_total{reason=\"bad_magic\"} 1",
        "sensor_hub_devices 1",
        "sensor_hub_devices_by_status{status=\"online\"} 1",
        "sensor_hub_sequence_total{kind=\"received\"} 1",
        "sensor_hub_latency_ms_count 1",
        "sensor_hub_device_sequence_total{device=\"1\",kind=\"lost\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}
