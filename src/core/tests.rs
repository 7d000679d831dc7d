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
fn a_large_fleets_statistics_are_published_in_events_of_at_most_64_devices() {
    let mut config = HubConfig::defaults().unwrap();
    config.devices.max_discovered = 1_000;
    let core = Core::new(&config, None);
    for device in 1..=150 {
        ingest(&core, &datagram(device, 0, at(0)), at(0));
    }
    let head = core.stream_head();
    let mut published = HashMap::new();
    assert_eq!(core.publish_device_stats(&mut published, at(100)), 150);
    let sizes: Vec<usize> = core
        .read_stream(head + 1, 100)
        .unwrap()
        .iter()
        .filter_map(|e| match &e.event {
            Event::DeviceStats(stats) => Some(stats.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [64, 64, 22]);
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

// The cluster side, driven as the link would drive it: no Redis, entries
// handed in as the reader decodes them.
mod cluster {
    use super::*;
    use crate::remote::{Holding, RemoteInfo, SharedEntry, SharedItem};

    fn member() -> Core {
        let core = core_with(100);
        core.join_cluster("a".into(), 1 << 20, 100);
        core
    }

    fn remote_readings(position: u64, hub: &str, device: u32, seq: u32) -> SharedEntry {
        SharedEntry {
            position,
            hub: hub.into(),
            own: false,
            number: u64::from(seq),
            item: SharedItem::Event(Event::Readings(vec![LiveDatagram {
                device,
                seq,
                time_ms: WALL,
                received_ms: WALL,
                readings: Box::new([Reading {
                    channel: 0,
                    value: Value::F32(seq as f32),
                }]),
            }])),
        }
    }

    fn own(position: u64, number: u64) -> SharedEntry {
        SharedEntry {
            position,
            hub: "a".into(),
            own: true,
            number,
            item: SharedItem::Own,
        }
    }

    fn seqs(core: &Core, from: u64) -> Vec<u64> {
        core.read_stream(from, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn alone_until_linked_then_events_arrive_at_shared_positions() {
        let core = member();
        assert_eq!(core.cluster_mode(), Some(LinkMode::Alone));
        // Alone: its own datagram reaches its browsers at once, and waits.
        ingest(&core, &datagram(1, 1, at(0)), at(0));
        let local_epoch = core.epoch();
        assert!(core.stream_head() > 0);
        let waiting = core.cluster_pending(10);
        assert!(!waiting.is_empty());
        // Shared, and the others' events read: linked at position 40.
        core.cluster_shared(waiting.last().unwrap().number);
        core.cluster_linked("cluster".into(), 40);
        assert_eq!(&*core.epoch(), "cluster");
        assert_ne!(core.epoch(), local_epoch);
        assert_eq!(core.stream_head(), 40);
        // Its own events, read back, skip what its browsers saw.
        core.cluster_receive(
            waiting
                .iter()
                .zip(41..)
                .map(|(p, position)| own(position, p.number))
                .collect(),
            40 + waiting.len() as u64,
            at(0),
        );
        assert_eq!(core.stream_head(), 40);
        let next = 41 + waiting.len() as u64;
        // Linked: a new datagram waits in the outbox, not in the stream.
        ingest(&core, &datagram(1, 2, at(10)), at(10));
        assert_eq!(core.stream_head(), 40);
        let pending = core.cluster_pending(10);
        let number = pending[0].number;
        core.cluster_shared(number);
        // Another hub's event and its own, at their shared positions.
        let applied = core.cluster_receive(
            vec![remote_readings(next, "b", 7, 1), own(next + 1, number)],
            next + 1,
            at(0),
        );
        assert_eq!(applied, 1);
        assert_eq!(seqs(&core, 41), [next, next + 1]);
        let snapshot = core.snapshot(None, at(20));
        assert_eq!(snapshot.seq, next + 1);
        assert_eq!(&*snapshot.epoch, "cluster");
        let ids: Vec<serde_json::Value> = snapshot
            .devices
            .iter()
            .map(|d| serde_json::to_value(d).unwrap())
            .map(|v| serde_json::json!([v["id"], v["hub"]]))
            .collect();
        assert_eq!(
            ids,
            [serde_json::json!([1, "a"]), serde_json::json!([7, "b"])]
        );
        // Read again (a reconnect re-reads): nothing twice.
        core.cluster_receive(vec![remote_readings(next, "b", 7, 1)], next + 1, at(0));
        assert_eq!(seqs(&core, 41), [next, next + 1]);
    }

    #[test]
    fn losing_the_link_delivers_what_waited_and_counts_it_late_when_shared() {
        let core = member();
        core.cluster_linked("cluster".into(), 0);
        ingest(&core, &datagram(1, 1, at(0)), at(0));
        ingest(&core, &datagram(1, 2, at(1)), at(1));
        let pending = core.cluster_pending(10);
        // The first was shared but not read back; the second waits.
        core.cluster_shared(pending[0].number);
        assert_eq!(core.stream_head(), 0);
        core.cluster_lost();
        assert_eq!(core.cluster_mode(), Some(LinkMode::Alone));
        assert_ne!(&*core.epoch(), "cluster");
        // Both reach the browsers now, in order.
        let delivered = core.read_stream(1, 10).unwrap();
        let datagram_seqs: Vec<u32> = delivered
            .iter()
            .flat_map(|e| match &e.event {
                Event::Readings(b) => b.iter().map(|d| d.seq).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(datagram_seqs, [1, 2]);
        // Catching up alone: others' events at local positions, own skipped.
        let head = core.stream_head();
        core.cluster_receive(
            vec![own(1, pending[0].number), remote_readings(2, "b", 9, 5)],
            2,
            at(0),
        );
        assert_eq!(core.stream_head(), head + 1);
        // Linked again: the rest, shared late, is not delivered twice.
        let last = pending.last().unwrap().number;
        core.cluster_shared(last);
        core.cluster_linked("cluster".into(), 2);
        core.cluster_receive(vec![own(3, last)], 3, at(0));
        assert_eq!(core.stream_head(), 2);
        let f = core.cluster_figures().unwrap();
        let n = pending.len() as u64;
        assert_eq!((f.outbox.shared, f.outbox.shared_late), (n, n - 1));
        assert_eq!(f.switches, 3, "linked, alone, linked");
    }

    #[test]
    fn an_outbox_that_fills_while_linked_makes_the_hub_go_alone() {
        let core = core_with(100);
        core.join_cluster("a".into(), 300, 100);
        core.cluster_linked("cluster".into(), 0);
        for seq in 1..=5 {
            ingest(
                &core,
                &datagram(1, seq, at(u64::from(seq))),
                at(u64::from(seq)),
            );
        }
        assert_eq!(core.cluster_mode(), Some(LinkMode::Alone));
        // Nothing was lost for its browsers.
        let delivered: usize = core
            .read_stream(1, 100)
            .unwrap()
            .iter()
            .map(|e| match &e.event {
                Event::Readings(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(delivered, 5);
    }

    #[test]
    fn a_gap_restarts_the_stream_at_the_next_position() {
        let core = member();
        core.cluster_linked("cluster".into(), 10);
        let before = core.epoch();
        core.cluster_gap(20);
        assert_eq!(&*core.epoch(), "cluster");
        assert!(
            !Arc::ptr_eq(&before, &core.epoch()),
            "clients see a new stream"
        );
        assert_eq!(core.stream_head(), 19);
        assert_eq!(core.cluster_read_position(), 19);
    }

    #[test]
    fn holdings_describe_devices_and_a_lost_hub_takes_them_offline() {
        let core = member();
        core.cluster_linked("cluster".into(), 0);
        let info = RemoteInfo {
            name: "greenhouse".into(),
            firmware: "2.0".into(),
            interval_ms: 1000,
            sensors: Vec::new(),
            adopted: true,
            keyed: false,
        };
        core.cluster_receive(
            vec![
                SharedEntry {
                    position: 1,
                    hub: "b".into(),
                    own: false,
                    number: 0,
                    item: SharedItem::Holdings(vec![Holding {
                        device: 5,
                        info,
                        connected: true,
                    }]),
                },
                SharedEntry {
                    position: 2,
                    hub: "b".into(),
                    own: false,
                    number: 1,
                    item: SharedItem::Event(Event::DeviceStatus {
                        device: 5,
                        status: DeviceStatus::Online,
                        previous: None,
                        at_ms: WALL,
                    }),
                },
            ],
            2,
            at(0),
        );
        // Holdings are not shown to browsers; the status is.
        assert_eq!(seqs(&core, 1), [2]);
        let view = serde_json::to_value(&core.snapshot(None, at(0)).devices[0]).unwrap();
        assert_eq!(view["name"], "greenhouse");
        assert_eq!(view["status"], "online");
        assert_eq!(view["connected"], true);
        assert_eq!(core.cluster_hub_lost("b", at(5)), [5]);
        let view = serde_json::to_value(&core.snapshot(None, at(5)).devices[0]).unwrap();
        assert_eq!(view["status"], "offline");
        assert_eq!(view["hub"], "b");
        // The report waits to be shared, about hub b.
        let pending = core.cluster_pending(10);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].about.as_deref(), Some("b"));
        // Reported once.
        assert!(core.cluster_hub_lost("b", at(6)).is_empty());
    }

    #[test]
    fn a_device_that_opens_a_session_here_is_no_longer_remote() {
        let core = member();
        core.cluster_linked("cluster".into(), 0);
        core.cluster_receive(vec![remote_readings(1, "b", 1, 1)], 1, at(0));
        let (tx, _rx) = mpsc::channel(4);
        core.open_session(&hello(1, 1000), tx, None, at(0)).unwrap();
        let view = serde_json::to_value(&core.snapshot(None, at(0)).devices[0]).unwrap();
        assert_eq!(view["hub"], "a");
        // Its old hub's late readings are not applied here.
        assert_eq!(
            core.cluster_receive(vec![remote_readings(2, "b", 1, 2)], 2, at(0)),
            0
        );
    }

    #[test]
    fn commands_for_another_hubs_device_are_handed_over_and_bounded() {
        let core = member();
        core.cluster_linked("cluster".into(), 0);
        core.cluster_receive(vec![remote_readings(1, "b", 7, 1)], 1, at(0));
        let origin = Origin {
            client: Some(3),
            ..Default::default()
        };
        let Err(SubmitError::Forwarded { device, ticket }) =
            core.submit_command(7, CommandBody::Identify, true, origin.clone(), at(0))
        else {
            panic!("handed over");
        };
        assert_eq!(device, 7);
        let forwards = core.cluster_take_forwards();
        assert_eq!(forwards.len(), 1);
        assert_eq!(&*forwards[0].hub, "b");
        assert_eq!(forwards[0].origin.ticket, Some(ticket));
        assert_eq!(forwards[0].origin.client, Some(3));
        // A device nobody holds is unknown, as on a single hub.
        assert_eq!(
            core.submit_command(8, CommandBody::Identify, true, origin.clone(), at(0))
                .unwrap_err(),
            SubmitError::UnknownDevice(8)
        );
        // While nothing takes them, at most FORWARD_QUEUE wait.
        for _ in 0..FORWARD_QUEUE {
            assert!(matches!(
                core.submit_command(7, CommandBody::Identify, true, origin.clone(), at(0)),
                Err(SubmitError::Forwarded { .. })
            ));
        }
        assert_eq!(
            core.submit_command(7, CommandBody::Identify, true, origin, at(0))
                .unwrap_err(),
            SubmitError::ClusterBusy
        );
    }

    #[test]
    fn a_device_that_moves_takes_its_queued_commands_along() {
        let core = member();
        core.cluster_linked("cluster".into(), 0);
        let (tx, _rx) = mpsc::channel(4);
        let session = core.open_session(&hello(1, 1000), tx, None, at(0)).unwrap();
        core.close_session(1, session, at(1));
        let origin = Origin {
            client: Some(4),
            request_id: Some(serde_json::json!("c9")),
            ..Default::default()
        };
        let queued = core
            .submit_command(1, CommandBody::Identify, true, origin, at(2))
            .unwrap();
        assert_eq!(queued.state, CommandState::Queued);
        // Hub b reports it online: it reconnected there.
        core.cluster_receive(
            vec![SharedEntry {
                position: 1,
                hub: "b".into(),
                own: false,
                number: 1,
                item: SharedItem::Event(Event::DeviceStatus {
                    device: 1,
                    status: DeviceStatus::Online,
                    previous: None,
                    at_ms: WALL,
                }),
            }],
            1,
            at(3),
        );
        let here = core.command(queued.id).unwrap();
        assert_eq!(here.state, CommandState::Rejected);
        assert!(here.detail.unwrap().contains("hub b"));
        let forwards = core.cluster_take_forwards();
        assert_eq!(forwards.len(), 1);
        assert_eq!(&*forwards[0].hub, "b");
        assert_eq!(forwards[0].origin.client, Some(4));
        assert_eq!(forwards[0].origin.request_id, Some(serde_json::json!("c9")));
        // And the fleet view shows it on b.
        let view = serde_json::to_value(&core.snapshot(None, at(3)).devices[0]).unwrap();
        assert_eq!(view["hub"], "b");
        assert_eq!(view["status"], "online");
    }
}
