//! The registry on a virtual clock: sessions, liveness transitions and the
//! command lifecycle, with no sockets and no sleeps.

use super::*;
use sensor_hub_protocol::control::{Name, Text};

const T0: u64 = 1_700_000_000_000;

/// A moment where monotonic and wall time read the same (tests that step
/// only one of them build their `Now` by hand).
fn at(ms: u64) -> Now {
    Now::at(ms, ms)
}

fn config() -> RegistryConfig {
    RegistryConfig {
        max_devices: 3,
        default_interval_ms: 1_000,
        late_after_intervals: 3,
        offline_after_intervals: 10,
        command_ttl_ms: 10_000,
        queue_per_device: 2,
        max_in_flight: 1,
        retain_finished: 4,
        trust: Default::default(),
    }
}

fn hello(device_id: u32, interval_ms: u32) -> Hello {
    Hello {
        device_id,
        name: Name::try_from("dev").unwrap(),
        firmware: Name::try_from("1.0").unwrap(),
        token: Text::new(),
        interval_ms,
        device_time_ms: T0 - 250,
        sensors: Default::default(),
    }
}

fn set_interval(ms: u32) -> CommandBody {
    CommandBody::SetInterval { ms }
}

fn states(effects: &[Effect], id: CommandId) -> Vec<CommandState> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Command(c) if c.id == id => Some(c.state),
            _ => None,
        })
        .collect()
}

fn statuses(effects: &[Effect]) -> Vec<(DeviceId, Option<DeviceStatus>, DeviceStatus)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::DeviceStatus {
                device,
                status,
                previous,
                ..
            } => Some((*device, *previous, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_opens_a_session_and_announces_the_device() {
    let mut r = Registry::new(config());
    let session = r.open_session(&hello(7, 1_000), at(T0)).unwrap();
    let effects = r.take_effects();
    assert_eq!(statuses(&effects), [(7, None, DeviceStatus::Online)]);
    let d = r.device(7).unwrap();
    assert_eq!(d.session, Some(session));
    assert_eq!(d.info.as_ref().unwrap().interval_ms, 1_000);
    assert_eq!(d.clock_offset_ms, Some(250));
    assert_eq!(r.sessions(), 1);
}

#[test]
fn command_round_trip_goes_through_every_state() {
    let mut r = Registry::new(config());
    let session = r.open_session(&hello(7, 1_000), at(T0)).unwrap();
    r.take_effects();
    let id = r.submit(7, set_interval(500), true, Origin::default(), at(T0 + 1));
    let effects = r.take_effects();
    assert_eq!(
        states(&effects, id),
        [CommandState::Queued, CommandState::Sent]
    );
    assert!(effects.contains(&Effect::Send {
        session,
        id,
        body: set_interval(500)
    }));
    r.command_acked(7, id, at(T0 + 2));
    r.command_result(
        7,
        id,
        Outcome::Succeeded,
        Some("interval 500 ms".into()),
        at(T0 + 3),
    );
    let effects = r.take_effects();
    assert_eq!(
        states(&effects, id),
        [CommandState::Acked, CommandState::Succeeded]
    );
    let c = r.command(id).unwrap();
    assert_eq!(c.detail.as_deref(), Some("interval 500 ms"));
    assert_eq!(c.updated_ms, T0 + 3);
    assert_eq!(
        r.counters().commands_final[CommandState::Succeeded.index()],
        1
    );
}

#[test]
fn unknown_device_is_rejected_at_once() {
    let mut r = Registry::new(config());
    let id = r.submit(99, CommandBody::Identify, true, Origin::default(), at(T0));
    assert_eq!(states(&r.take_effects(), id), [CommandState::Rejected]);
    assert!(r
        .command(id)
        .unwrap()
        .detail
        .as_ref()
        .unwrap()
        .contains("unknown device 99"));
}

#[test]
fn offline_device_rejects_or_queues_as_the_command_says() {
    let mut r = Registry::new(config());
    r.data_seen(5, at(T0)).unwrap(); // known from data only: no session
    r.take_effects();
    let no_wait = r.submit(5, CommandBody::Identify, false, Origin::default(), at(T0));
    assert_eq!(states(&r.take_effects(), no_wait), [CommandState::Rejected]);

    let waits = r.submit(5, CommandBody::Identify, true, Origin::default(), at(T0));
    assert_eq!(states(&r.take_effects(), waits), [CommandState::Queued]);
    // The device connects: the queued command goes out.
    let session = r.open_session(&hello(5, 1_000), at(T0 + 2_000)).unwrap();
    let effects = r.take_effects();
    assert_eq!(states(&effects, waits), [CommandState::Sent]);
    assert!(effects.contains(&Effect::Send {
        session,
        id: waits,
        body: CommandBody::Identify
    }));
}

#[test]
fn command_times_out_at_its_ttl_and_not_before() {
    let mut r = Registry::new(config());
    r.data_seen(5, at(T0)).unwrap();
    let id = r.submit(5, CommandBody::Reboot, true, Origin::default(), at(T0));
    r.take_effects();
    r.tick(at(T0 + 9_999));
    assert_eq!(states(&r.take_effects(), id), []);
    r.tick(at(T0 + 10_000));
    assert_eq!(states(&r.take_effects(), id), [CommandState::TimedOut]);
    // A late result changes nothing and is counted.
    r.command_result(5, id, Outcome::Succeeded, None, at(T0 + 10_001));
    assert_eq!(r.command(id).unwrap().state, CommandState::TimedOut);
    assert_eq!(r.counters().unmatched_replies, 1);
}

#[test]
fn sent_commands_time_out_too_and_free_the_way() {
    let mut r = Registry::new(config());
    r.open_session(&hello(5, 1_000), at(T0)).unwrap();
    let first = r.submit(5, CommandBody::Identify, true, Origin::default(), at(T0));
    let second = r.submit(
        5,
        CommandBody::Reboot,
        true,
        Origin::default(),
        at(T0 + 5_000),
    );
    let effects = r.take_effects();
    // One in flight at a time: the second waits.
    assert_eq!(
        states(&effects, first),
        [CommandState::Queued, CommandState::Sent]
    );
    assert_eq!(states(&effects, second), [CommandState::Queued]);
    r.tick(at(T0 + 10_000));
    let effects = r.take_effects();
    assert_eq!(states(&effects, first), [CommandState::TimedOut]);
    assert_eq!(states(&effects, second), [CommandState::Sent]);
}

#[test]
fn next_command_is_sent_when_the_previous_finishes() {
    let mut r = Registry::new(config());
    r.open_session(&hello(5, 1_000), at(T0)).unwrap();
    let a = r.submit(5, set_interval(100), true, Origin::default(), at(T0));
    let b = r.submit(5, set_interval(200), true, Origin::default(), at(T0));
    r.take_effects();
    r.command_acked(5, a, at(T0 + 1));
    r.command_result(5, a, Outcome::Failed, Some("nope".into()), at(T0 + 2));
    let effects = r.take_effects();
    assert_eq!(
        states(&effects, a),
        [CommandState::Acked, CommandState::Failed]
    );
    assert_eq!(states(&effects, b), [CommandState::Sent]);
}

#[test]
fn full_queue_rejects() {
    let mut r = Registry::new(config());
    r.data_seen(5, at(T0)).unwrap();
    r.submit(5, CommandBody::Identify, true, Origin::default(), at(T0));
    r.submit(5, CommandBody::Identify, true, Origin::default(), at(T0));
    let third = r.submit(5, CommandBody::Identify, true, Origin::default(), at(T0));
    let effects = r.take_effects();
    assert_eq!(states(&effects, third), [CommandState::Rejected]);
    assert!(r
        .command(third)
        .unwrap()
        .detail
        .as_ref()
        .unwrap()
        .contains("queue_per_device"));
}

#[test]
fn a_second_hello_replaces_the_session() {
    let mut r = Registry::new(config());
    let old = r.open_session(&hello(7, 1_000), at(T0)).unwrap();
    let new = r.open_session(&hello(7, 1_000), at(T0 + 1_000)).unwrap();
    assert_ne!(old, new);
    let effects = r.take_effects();
    assert!(effects.contains(&Effect::CloseSession {
        session: old,
        reason: RejectReason::Replaced
    }));
    assert_eq!(r.counters().sessions_replaced, 1);
    // The old session's end does not disturb the new one.
    r.close_session(7, old, at(T0 + 20));
    assert_eq!(r.device(7).unwrap().session, Some(new));
}

#[test]
fn silent_device_goes_late_then_offline_then_back_online() {
    let mut r = Registry::new(config());
    r.data_seen(3, at(T0)).unwrap(); // data-only device, default interval 1 s
    r.take_effects();
    r.tick(at(T0 + 2_999));
    assert_eq!(statuses(&r.take_effects()), []);
    r.tick(at(T0 + 3_000));
    assert_eq!(
        statuses(&r.take_effects()),
        [(3, Some(DeviceStatus::Online), DeviceStatus::Late)]
    );
    r.tick(at(T0 + 9_999));
    assert_eq!(statuses(&r.take_effects()), []);
    r.tick(at(T0 + 10_000));
    assert_eq!(
        statuses(&r.take_effects()),
        [(3, Some(DeviceStatus::Late), DeviceStatus::Offline)]
    );
    r.data_seen(3, at(T0 + 20_000)).unwrap();
    assert_eq!(
        statuses(&r.take_effects()),
        [(3, Some(DeviceStatus::Offline), DeviceStatus::Online)]
    );
    assert_eq!(r.status_counts(), [1, 0, 0]);
}

#[test]
fn declared_interval_sets_the_cadence() {
    let mut r = Registry::new(config());
    r.open_session(&hello(4, 10_000), at(T0)).unwrap();
    r.data_seen(4, at(T0)).unwrap();
    r.take_effects();
    r.tick(at(T0 + 29_999));
    assert_eq!(r.device(4).unwrap().status, DeviceStatus::Online);
    r.tick(at(T0 + 30_000));
    assert_eq!(r.device(4).unwrap().status, DeviceStatus::Late);
}

#[test]
fn connected_device_without_data_is_late_not_offline() {
    let mut r = Registry::new(config());
    r.open_session(&hello(4, 1_000), at(T0)).unwrap();
    r.tick(at(T0 + 60_000));
    assert_eq!(r.device(4).unwrap().status, DeviceStatus::Late);
}

#[test]
fn lost_session_and_no_data_is_offline_at_the_late_threshold() {
    let mut r = Registry::new(config());
    let s = r.open_session(&hello(4, 1_000), at(T0)).unwrap();
    r.data_seen(4, at(T0)).unwrap();
    r.close_session(4, s, at(T0 + 500));
    r.take_effects();
    r.tick(at(T0 + 2_999));
    assert_eq!(r.device(4).unwrap().status, DeviceStatus::Online);
    r.tick(at(T0 + 3_000));
    assert_eq!(
        statuses(&r.take_effects()),
        [(4, Some(DeviceStatus::Online), DeviceStatus::Offline)]
    );
}

#[test]
fn data_less_device_is_online_exactly_while_connected() {
    let mut r = Registry::new(config());
    let s = r.open_session(&hello(6, 0), at(T0)).unwrap();
    r.tick(at(T0 + 1_000_000));
    assert_eq!(r.device(6).unwrap().status, DeviceStatus::Online);
    r.close_session(6, s, at(T0 + 1_000_001));
    assert_eq!(r.device(6).unwrap().status, DeviceStatus::Offline);
}

#[test]
fn replies_for_other_devices_or_unknown_ids_are_counted_not_applied() {
    let mut r = Registry::new(config());
    r.open_session(&hello(1, 1_000), at(T0)).unwrap();
    r.open_session(&hello(2, 1_000), at(T0)).unwrap();
    let id = r.submit(1, CommandBody::Identify, true, Origin::default(), at(T0));
    r.command_acked(2, id, at(T0));
    r.command_result(2, id, Outcome::Succeeded, None, at(T0));
    r.command_acked(1, 4_000, at(T0));
    assert_eq!(r.command(id).unwrap().state, CommandState::Sent);
    assert_eq!(r.counters().unmatched_replies, 3);
}

#[test]
fn finished_commands_are_retained_up_to_the_bound() {
    let mut r = Registry::new(config());
    let ids: Vec<CommandId> = (0..6)
        .map(|_| r.submit(42, CommandBody::Identify, true, Origin::default(), at(T0)))
        .collect();
    assert!(r.command(ids[0]).is_none());
    assert!(r.command(ids[1]).is_none());
    assert!(r.command(ids[2]).is_some());
    assert!(r.command(ids[5]).is_some());
}

#[test]
fn device_limit_refuses_new_devices() {
    let mut r = Registry::new(config());
    for id in 1..=3 {
        r.open_session(&hello(id, 1_000), at(T0)).unwrap();
    }
    assert_eq!(
        r.open_session(&hello(4, 1_000), at(T0)),
        Err(RejectReason::TooManyDevices)
    );
    // An unknown id's datagram is only discovered: not adopted, not
    // counted against max_devices.
    assert!(r.data_seen(5, at(T0)).is_ok());
    assert!(!r.device(5).unwrap().adopted);
    assert!(
        r.take_changed().iter().all(|d| d.id != 5),
        "never persisted"
    );
    // Known devices still reconnect.
    assert!(r.open_session(&hello(2, 1_000), at(T0 + 1_000)).is_ok());
    assert_eq!(r.counters().rejected_too_many_devices, 1);
}

#[test]
fn records_change_on_hello_and_status_not_on_every_datagram() {
    let mut r = Registry::new(config());
    assert!(r.set_listed([1], at(T0)).is_empty());
    r.data_seen(1, at(T0)).unwrap();
    let first = r.take_changed();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, 1);
    assert_eq!(first[0].info, None);
    assert_eq!(first[0].status, DeviceStatus::Online);
    for i in 1..=3 {
        r.data_seen(1, at(T0 + i * 500)).unwrap();
    }
    assert!(
        r.take_changed().is_empty(),
        "datagrams alone change nothing"
    );
    r.open_session(&hello(1, 1_000), at(T0 + 2_000)).unwrap();
    let after_hello = r.take_changed();
    assert_eq!(after_hello.len(), 1);
    assert_eq!(
        after_hello[0].info.as_ref().map(|i| i.name.as_str()),
        Some("dev")
    );
    assert_eq!(after_hello[0].last_seen_ms, Some(T0 + 2_000));
    r.tick(at(T0 + 6_000)); // silent 4 intervals with a session: late
    let late = r.take_changed();
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].status, late[0].status_since_ms),
        (DeviceStatus::Late, T0 + 6_000)
    );
    r.tick(at(T0 + 6_100));
    assert!(r.take_changed().is_empty());
}

#[test]
fn restored_devices_keep_their_info_and_go_offline_unless_they_return() {
    let mut before = Registry::new(config());
    before.open_session(&hello(1, 1_000), at(T0)).unwrap();
    let _ = before.set_listed([2], at(T0));
    before.data_seen(2, at(T0 + 100)).unwrap();
    let records = before.take_changed();
    assert_eq!(records.len(), 2);
    // Through JSON, as the store keeps them.
    let json = serde_json::to_string(&records).unwrap();
    let records: Vec<DeviceRecord> = serde_json::from_str(&json).unwrap();

    let mut r = Registry::new(config());
    let _ = r.set_listed([2], at(T0));
    for record in records.clone() {
        assert!(r.restore(record, vec![0, 3]));
    }
    assert!(!r.restore(records[0].clone(), vec![]), "already tracked");
    assert!(r.take_effects().is_empty(), "restoring publishes nothing");
    assert!(r.take_changed().is_empty());
    let one = r.device(1).unwrap();
    assert_eq!(one.info.as_ref().map(|i| i.interval_ms), Some(1_000));
    assert_eq!(one.known_channels, vec![0, 3]);
    assert_eq!(one.session, None);
    assert_eq!(one.last_seen_ms(), Some(T0));

    // Restarted an hour later: both are offline at the first tick (device 1
    // lost its session; device 2 is silent past offline_after_intervals).
    let later = T0 + 3_600_000;
    r.tick(at(later));
    assert_eq!(r.device(1).unwrap().status, DeviceStatus::Offline);
    assert_eq!(r.device(2).unwrap().status, DeviceStatus::Offline);
    assert_eq!(r.take_changed().len(), 2, "the new statuses are persisted");

    // Device 1 comes back: a new session, online again.
    r.open_session(&hello(1, 1_000), at(later + 10)).unwrap();
    assert_eq!(r.device(1).unwrap().status, DeviceStatus::Online);
}

#[test]
fn restore_respects_max_devices() {
    let mut r = Registry::new(config()); // max_devices 3
    let record = |id| DeviceRecord {
        id,
        info: None,
        status: DeviceStatus::Offline,
        status_since_ms: T0,
        last_seen_ms: None,
    };
    let _ = r.set_listed(1..=5, at(T0));
    let added: Vec<bool> = (1..=4).map(|id| r.restore(record(id), vec![])).collect();
    assert_eq!(added, [true, true, true, false]);
    // A record without a hello is restored only while listed.
    let mut unlisted = Registry::new(config());
    assert!(!unlisted.restore(record(1), vec![]));
}

// --- Adopted and discovered devices ---------------------------------------

fn trusting(trust: TrustConfig) -> Registry {
    Registry::new(RegistryConfig { trust, ..config() })
}

fn removed(effects: &[Effect]) -> Vec<DeviceId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::DeviceRemoved { device, .. } => Some(*device),
            _ => None,
        })
        .collect()
}

#[test]
fn discovered_devices_are_bounded_apart_and_never_lock_out_adopted_ones() {
    let mut r = trusting(TrustConfig {
        max_discovered: 2,
        ..Default::default()
    });
    for id in 100..102 {
        assert!(r.data_seen(id, at(T0)).is_ok());
    }
    assert_eq!(r.data_seen(102, at(T0)), Err(Refusal::DiscoveredLimit));
    assert_eq!(r.discovered_count(), 2);
    // All three adopted slots are still free.
    for id in 1..=3 {
        r.open_session(&hello(id, 1_000), at(T0)).unwrap();
    }
    assert_eq!(r.device_count(), 5);
    assert!(r.take_changed().iter().all(|d| d.id < 100));
}

#[test]
fn a_silent_discovered_device_expires_and_an_adopted_one_does_not() {
    let mut r = trusting(TrustConfig {
        discovered_ttl_ms: 60_000,
        ..Default::default()
    });
    r.data_seen(100, at(T0)).unwrap();
    let _ = r.set_listed([1], at(T0));
    r.data_seen(1, at(T0)).unwrap();
    r.take_effects();
    assert_eq!(
        r.next_deadline(at(T0 + 50_000)).map(|t| t <= T0 + 60_000),
        Some(true)
    );
    r.tick(at(T0 + 59_999));
    assert!(r.device(100).is_some());
    r.tick(at(T0 + 60_000));
    assert!(r.device(100).is_none());
    assert!(r.device(1).is_some());
    assert_eq!(removed(&r.take_effects()), [100]);
    assert_eq!(r.counters().discovered_expired, 1);
    assert_eq!(r.discovered_count(), 0);
}

#[test]
fn listing_or_a_hello_adopts_a_discovered_device() {
    let mut r = Registry::new(config());
    r.data_seen(7, at(T0)).unwrap();
    r.data_seen(8, at(T0)).unwrap();
    assert_eq!(r.discovered_count(), 2);
    let _ = r.set_listed([7], at(T0 + 1));
    assert!(r.device(7).unwrap().adopted);
    r.open_session(&hello(8, 1_000), at(T0 + 2)).unwrap();
    assert!(r.device(8).unwrap().adopted);
    assert_eq!(r.discovered_count(), 0);
    let persisted: Vec<DeviceId> = r.take_changed().iter().map(|d| d.id).collect();
    assert_eq!(persisted, [7, 8]);
    // Unlisting returns the ids to forget.
    assert_eq!(r.set_listed([], at(T0 + 3)), [7]);
}

#[test]
fn unknown_devices_can_be_refused_outright() {
    let mut r = trusting(TrustConfig {
        accept_unknown: false,
        ..Default::default()
    });
    assert_eq!(r.data_seen(9, at(T0)), Err(Refusal::UnknownDevice));
    let _ = r.set_listed([9], at(T0));
    assert!(r.data_seen(9, at(T0)).is_ok(), "a listed device is known");
}

#[test]
fn forgetting_a_device_closes_its_session_and_fails_its_commands() {
    let mut r = Registry::new(config());
    let session = r.open_session(&hello(4, 1_000), at(T0)).unwrap();
    let id = r.submit(4, set_interval(10), true, Origin::default(), at(T0));
    r.take_effects();
    assert!(r.forget(4, at(T0 + 1)));
    assert!(!r.forget(4, at(T0 + 2)));
    assert!(r.device(4).is_none());
    let effects = r.take_effects();
    assert_eq!(states(&effects, id), [CommandState::Failed]);
    assert!(effects.contains(&Effect::CloseSession {
        session,
        reason: RejectReason::BadToken
    }));
    assert_eq!(removed(&effects), [4]);
    assert!(r.take_changed().is_empty());
}

#[test]
fn a_session_is_not_replaced_within_the_minimum_interval() {
    let mut r = Registry::new(config()); // min_replace_interval_ms 1000
    r.open_session(&hello(7, 1_000), at(T0)).unwrap();
    assert_eq!(
        r.open_session(&hello(7, 1_000), at(T0 + 999)),
        Err(RejectReason::TooSoon)
    );
    assert_eq!(r.counters().rejected_too_soon, 1);
    assert!(r.open_session(&hello(7, 1_000), at(T0 + 1_000)).is_ok());
    // Without a session, a hello is never too soon.
    let mut r = Registry::new(config());
    let s = r.open_session(&hello(8, 1_000), at(T0)).unwrap();
    r.close_session(8, s, at(T0 + 1));
    assert!(r.open_session(&hello(8, 1_000), at(T0 + 2)).is_ok());
}
