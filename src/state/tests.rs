//! Ingest state: acceptance, per-device bookkeeping and drop counting,
//! on plain byte slices and a clock passed in.

use std::ops::Deref;

use super::*;
use sensor_hub_protocol::control::{Hello, Name, Text};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, MAGIC, MAX_DATAGRAM_LEN, VERSION};

const NOW: u64 = 1_700_000_000_000;

/// The data plane with the registry that admits its devices.
struct S {
    state: HubState,
    registry: Registry,
}

impl S {
    /// Ingests `b` as read whole from the wire at `now_ms` (both clocks).
    fn ingest(
        &mut self,
        b: &[u8],
        from: SocketAddr,
        now_ms: u64,
    ) -> Result<LiveDatagram, DropReason> {
        match self.ingest_any(b, b.len(), from, now_ms)? {
            Ingested::Applied { live, .. } => Ok(live),
            Ingested::Duplicate => panic!("unexpected duplicate"),
        }
    }

    fn ingest_any(
        &mut self,
        b: &[u8],
        wire_len: usize,
        from: SocketAddr,
        now_ms: u64,
    ) -> Result<Ingested, DropReason> {
        self.state.ingest(
            &mut self.registry,
            b,
            wire_len,
            from,
            Now::at(now_ms, now_ms),
        )
    }

    fn device_count(&self) -> usize {
        self.registry.device_count()
    }
}

impl Deref for S {
    type Target = HubState;
    fn deref(&self) -> &HubState {
        &self.state
    }
}

fn state(max_devices: usize) -> S {
    S {
        state: HubState::new(
            WindowConfig {
                windows_ms: vec![10_000, 60_000],
                buckets: 10,
            },
            1_000_000,
        ),
        registry: Registry::new(crate::registry::RegistryConfig {
            max_devices,
            default_interval_ms: 1_000,
            late_after_intervals: 3,
            offline_after_intervals: 10,
            command_ttl_ms: 1_000,
            queue_per_device: 1,
            max_in_flight: 1,
            retain_finished: 1,
            trust: crate::registry::TrustConfig {
                max_discovered: max_devices,
                ..Default::default()
            },
        }),
    }
}

fn addr() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

fn bytes(device_id: u32, seq: u32, time_ms: u64, values: &[(u8, Value)]) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: time_ms as u32,
        readings: values
            .iter()
            .map(|&(channel, value)| Reading { channel, value })
            .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    encode_datagram(&d, &mut buf).unwrap().to_vec()
}

#[test]
fn accepted_datagram_updates_device_and_sensors() {
    let mut s = state(10);
    let b = bytes(
        5,
        0,
        NOW - 20,
        &[(0, Value::F32(21.5)), (1, Value::Bool(true))],
    );
    let live = s.ingest(&b, addr(), NOW).unwrap();
    assert_eq!(live.device, 5);
    assert_eq!(live.time_ms, NOW - 20);
    assert_eq!(live.received_ms, NOW);
    assert_eq!(live.readings.len(), 2);

    let b2 = bytes(5, 1, NOW + 980, &[(0, Value::F32(22.0))]);
    s.ingest(&b2, addr(), NOW + 1_000).unwrap();

    let d = s.device(5).unwrap();
    assert_eq!(d.datagrams, 2);
    assert_eq!(d.readings, 3);
    assert_eq!(d.bytes, (b.len() + b2.len()) as u64);
    assert_eq!(d.first_seen_ms, NOW);
    assert_eq!(d.last_seen_ms, NOW + 1_000);
    assert_eq!(d.last_seq, 1);
    assert_eq!(d.sensors[&0].value, Value::F32(22.0));
    assert_eq!(d.sensors[&0].time_ms, NOW + 980);
    // A channel missing from the latest datagram keeps its last value.
    assert_eq!(d.sensors[&1].value, Value::Bool(true));
    assert_eq!(d.sensors[&1].received_ms, NOW);
    // The registry heard of the data (liveness).
    assert_eq!(
        s.registry.device(5).unwrap().last_data_ms,
        Some(NOW + 1_000)
    );

    let c = s.counters();
    assert_eq!(c.datagrams_received, 2);
    assert_eq!(c.datagrams_accepted, 2);
    assert_eq!(c.readings_accepted, 3);
    assert_eq!(c.bytes_received, (b.len() + b2.len()) as u64);
    assert_eq!(c.dropped_total(), 0);
}

#[test]
fn every_malformed_kind_is_counted_under_its_reason() {
    let mut s = state(10);
    let good = bytes(1, 0, NOW, &[(0, Value::I32(7))]);
    let mut bad_version = good.clone();
    bad_version[1] = VERSION + 1;
    let mut trailing = good.clone();
    trailing.push(0);
    let mut oversized = vec![0u8; MAX_DATAGRAM_LEN + 1];
    oversized[0] = MAGIC;
    oversized[1] = VERSION;

    let cases: [(&[u8], &str); 6] = [
        (&oversized, "oversized"),
        (&good[..good.len() - 2], "truncated"),
        (&[], "truncated"),
        (b"hello", "bad_magic"),
        (&bad_version, "bad_version"),
        (&trailing, "undecodable"),
    ];
    for (input, reason) in cases {
        let err = s.ingest(input, addr(), NOW).unwrap_err();
        assert_eq!(err.name(), reason);
    }
    let c = s.counters();
    assert_eq!(c.datagrams_received, 6);
    assert_eq!(c.datagrams_accepted, 0);
    assert_eq!(c.dropped, [1, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(s.device_count(), 0, "no device is created by bad input");
    assert!(s.registry.device(1).is_none());
}

#[test]
fn new_devices_beyond_the_limit_are_dropped_but_known_ones_continue() {
    // Unknown ids are discovered devices, bounded by max_discovered (2 here).
    let mut s = state(2);
    s.ingest(&bytes(1, 0, NOW, &[]), addr(), NOW).unwrap();
    s.ingest(&bytes(2, 0, NOW, &[]), addr(), NOW).unwrap();
    let err = s.ingest(&bytes(3, 0, NOW, &[]), addr(), NOW).unwrap_err();
    assert_eq!(err, DropReason::DiscoveredLimit);
    assert_eq!(err.name(), "discovered_limit");
    s.ingest(&bytes(1, 1, NOW, &[]), addr(), NOW).unwrap();
    assert_eq!(s.device_count(), 2);
    assert_eq!(s.counters().dropped[DropReason::DiscoveredLimit.index()], 1);
    assert_eq!(s.counters().datagrams_accepted, 3);
}

#[test]
fn device_time_is_restored_near_hub_time_across_the_32_bit_wrap() {
    let mut s = state(10);
    // Hub clock just past a 2^32 ms boundary, device 1.5 s behind it.
    let now = 0x0000_0190_0000_0200;
    let device_time = now - 1_500;
    let live = s
        .ingest(&bytes(9, 0, device_time, &[]), addr(), now)
        .unwrap();
    assert_eq!(live.time_ms, device_time);
}

#[test]
fn devices_are_listed_by_id_and_follow_their_address() {
    let mut s = state(10);
    for id in [30, 10, 20] {
        s.ingest(&bytes(id, 0, NOW, &[]), addr(), NOW).unwrap();
    }
    let other: SocketAddr = "192.0.2.8:1234".parse().unwrap();
    s.ingest(&bytes(20, 1, NOW, &[]), other, NOW).unwrap();
    let ids: Vec<u32> = s.devices_by_id().iter().map(|d| d.id).collect();
    assert_eq!(ids, [10, 20, 30]);
    assert_eq!(s.device(20).unwrap().addr, other);
}

#[test]
fn drop_labels_are_unique_and_cover_every_index() {
    use strum::{EnumCount as _, IntoEnumIterator as _};
    let labels: Vec<&str> = DropReason::iter().map(DropReason::name).collect();
    for (i, r) in DropReason::iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    let mut sorted = labels.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), DropReason::COUNT, "{labels:?}");
}

#[test]
fn a_duplicate_is_counted_but_not_applied_again() {
    // Regression: a duplicated datagram was counted as duplicated but its
    // readings were applied, streamed and stored a second time.
    let mut s = state(10);
    let b = bytes(4, 7, NOW, &[(0, Value::F32(1.0)), (1, Value::I32(2))]);
    s.ingest(&b, addr(), NOW).unwrap();
    let again = s.ingest_any(&b, b.len(), addr(), NOW + 5).unwrap();
    assert_eq!(again, Ingested::Duplicate);
    let d = s.device(4).unwrap();
    assert_eq!(d.sensors[&0].count, 1, "the reading is not counted twice");
    assert_eq!(d.readings, 2);
    assert_eq!(d.datagrams, 2, "the copy was received");
    assert_eq!(d.seq.counts().duplicated, 1);
    let c = s.counters();
    assert_eq!(c.datagrams_accepted, 2);
    assert_eq!(c.datagrams_duplicated, 1);
    assert_eq!(c.readings_accepted, 2);
}

#[test]
fn a_device_known_from_its_hello_counts_against_the_limit() {
    // Regression: a device that had said hello but sent no datagram was not
    // counted for UDP admission, so a 4th device's datagrams got in at a
    // limit of 3, and the hello'd device's own datagrams were then dropped.
    let mut s = state(3);
    let hello = Hello {
        device_id: 100,
        name: Name::try_from("controlled").unwrap(),
        firmware: Name::try_from("1").unwrap(),
        token: Text::new(),
        interval_ms: 1_000,
        device_time_ms: NOW,
        sensors: Default::default(),
    };
    s.registry.open_session(&hello, Now::at(NOW, NOW)).unwrap();
    // Listed (adopted) devices count against max_devices with it.
    let _ = s.registry.set_listed([1, 2, 3], Now::at(NOW, NOW));
    s.ingest(&bytes(1, 0, NOW, &[]), addr(), NOW).unwrap();
    s.ingest(&bytes(2, 0, NOW, &[]), addr(), NOW).unwrap();
    let err = s.ingest(&bytes(3, 0, NOW, &[]), addr(), NOW).unwrap_err();
    assert_eq!(err, DropReason::DeviceLimit);
    // The hello'd device's own data is admitted.
    s.ingest(&bytes(100, 0, NOW, &[]), addr(), NOW).unwrap();
    assert_eq!(s.device_count(), 3);
    assert!(s.registry.device(3).is_none());
}

#[test]
fn an_oversized_datagram_counts_its_bytes_on_the_wire() {
    // Regression: a 1,400-byte datagram counted as the 513 bytes read of it.
    let mut s = state(10);
    let read = vec![MAGIC; MAX_DATAGRAM_LEN + 1];
    let err = s.ingest_any(&read, 1_400, addr(), NOW).unwrap_err();
    assert_eq!(err, DropReason::Oversized);
    assert_eq!(s.counters().bytes_received, 1_400);
}

#[test]
fn a_one_byte_datagram_is_truncated_whatever_the_byte() {
    let mut s = state(10);
    assert_eq!(s.ingest(&[0x00], addr(), NOW), Err(DropReason::Truncated));
    assert_eq!(s.ingest(&[MAGIC], addr(), NOW), Err(DropReason::Truncated));
}

#[test]
fn extreme_clock_offsets_cannot_overflow_latency() {
    // Regression: a device time near u64::MAX in a hello drove the clock
    // offset to i64::MIN, and receive - time - offset overflowed.
    let mut s = state(10);
    let hello = Hello {
        device_id: 9,
        name: Name::try_from("skewed").unwrap(),
        firmware: Name::try_from("1").unwrap(),
        token: Text::new(),
        interval_ms: 1_000,
        device_time_ms: u64::MAX,
        sensors: Default::default(),
    };
    s.registry.open_session(&hello, Now::at(NOW, NOW)).unwrap();
    let offset = s.registry.device(9).unwrap().clock_offset_ms.unwrap();
    assert_eq!(offset, -crate::registry::MAX_CLOCK_OFFSET_MS);
    s.ingest(&bytes(9, 0, NOW, &[]), addr(), NOW).unwrap();
    let latency = &s.device(9).unwrap().latency;
    assert_eq!(latency.count(), 1);
    assert_eq!(
        latency.quantile_ms(0.5),
        Some(u64::MAX),
        "the overflow bucket"
    );
}

// --- Keyed devices: tags, replays, budgets --------------------------------

use sensor_hub_protocol::auth::DatagramKey;

const KEY: [u8; 32] = [0x42; 32];

fn session_key(round: u8) -> DatagramKey {
    DatagramKey::derive(&KEY, &[round; 16], &[0xd0; 16])
}

fn sealed(key: &DatagramKey, device_id: u32, seq: u32, value: f32) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: NOW as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(value),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    key.seal(&d, &mut buf).unwrap().to_vec()
}

/// Device 17 keyed and listed, with a session whose key is `session_key(1)`,
/// and one accepted datagram (seq 10, value 20.0) from `addr()`.
fn keyed() -> S {
    let mut s = state(10);
    let _ = s.registry.set_listed([17], Now::at(NOW, NOW));
    s.state.set_keyed([(17, &KEY)]);
    s.state.start_session(17, SessionAuth::new(session_key(1)));
    s.ingest(&sealed(&session_key(1), 17, 10, 20.0), addr(), NOW)
        .unwrap();
    s
}

#[test]
fn a_keyed_device_s_tagged_datagrams_are_accepted_once() {
    let mut s = keyed();
    let d = s.device(17).unwrap();
    assert_eq!((d.datagrams, d.last_seq), (1, 10));
    assert!(s.registry.device(17).unwrap().adopted);
    s.ingest(&sealed(&session_key(1), 17, 11, 21.0), addr(), NOW + 1)
        .unwrap();
    let replay = sealed(&session_key(1), 17, 11, 21.0);
    assert_eq!(
        s.ingest(&replay, addr(), NOW + 2).unwrap_err(),
        DropReason::Replayed
    );
    // Late but inside the window: accepted once.
    s.ingest(&sealed(&session_key(1), 17, 9, 19.0), addr(), NOW + 3)
        .unwrap();
    assert_eq!(
        s.ingest(&sealed(&session_key(1), 17, 9, 19.0), addr(), NOW + 4)
            .unwrap_err(),
        DropReason::Replayed
    );
    assert_eq!(s.counters().dropped[DropReason::Replayed.index()], 2);
}

#[test]
fn forged_unsigned_and_stale_datagrams_change_nothing() {
    let mut s = keyed();
    let before = s.device(17).unwrap().clone();
    let spoofer: SocketAddr = "198.51.100.9:5555".parse().unwrap();
    // Unsigned, with seq + 1.
    assert_eq!(
        s.ingest(
            &bytes(17, 11, NOW, &[(0, Value::F32(99.0))]),
            spoofer,
            NOW + 1
        )
        .unwrap_err(),
        DropReason::Unauthenticated
    );
    // Signed with a wrong key; a far sequence number (poisoning).
    let forged = sealed(&DatagramKey::new(&[9; 32]), 17, 1_000_010, 99.0);
    assert_eq!(
        s.ingest(&forged, spoofer, NOW + 2).unwrap_err(),
        DropReason::BadTag
    );
    // The real tag on altered bytes (the value's last byte flipped).
    let mut altered = sealed(&session_key(1), 17, 12, 21.0);
    let at = altered.len() - 18; // the value's last byte, before `01` and the tag
    altered[at] ^= 0x40;
    assert_eq!(
        s.ingest(&altered, spoofer, NOW + 3).unwrap_err(),
        DropReason::BadTag
    );
    // A datagram of an earlier session (a replay across a reboot).
    let old = sealed(&session_key(0), 17, 11, 99.0);
    assert_eq!(
        s.ingest(&old, spoofer, NOW + 4).unwrap_err(),
        DropReason::BadTag
    );
    let after = s.device(17).unwrap();
    assert_eq!(after.addr, before.addr, "address unchanged");
    assert_eq!(after.datagrams, before.datagrams);
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.seq.counts(), before.seq.counts());
    assert_eq!(after.sensors[&0].value, Value::F32(20.0));
    assert_eq!(
        s.registry.device(17).unwrap().last_data_ms,
        Some(NOW),
        "liveness unchanged"
    );
    // The real next datagram still counts as the next one: no loss.
    s.ingest(&sealed(&session_key(1), 17, 11, 21.0), addr(), NOW + 5)
        .unwrap();
    assert_eq!(s.device(17).unwrap().seq.counts().lost, 0);
}

#[test]
fn a_new_session_replaces_the_key_and_restarts_the_window() {
    let mut s = keyed();
    s.state.start_session(17, SessionAuth::new(session_key(2)));
    // After a reboot the device restarts at 0 under its new key.
    s.ingest(&sealed(&session_key(2), 17, 0, 1.0), addr(), NOW + 1)
        .unwrap();
    assert_eq!(
        s.ingest(&sealed(&session_key(1), 17, 11, 1.0), addr(), NOW + 2)
            .unwrap_err(),
        DropReason::BadTag
    );
}

#[test]
fn a_keyed_device_without_a_session_is_dropped_as_no_session() {
    let mut s = state(10);
    s.state.set_keyed([(5, &KEY)]);
    assert_eq!(
        s.ingest(&sealed(&session_key(1), 5, 0, 1.0), addr(), NOW)
            .unwrap_err(),
        DropReason::NoSession
    );
    assert!(s.registry.device(5).is_none());
    // Sessions survive a reload of the device file that keeps the key...
    s.state.start_session(5, SessionAuth::new(session_key(1)));
    assert!(s.state.set_keyed([(5, &KEY), (6, &[6; 32])]).is_empty());
    s.ingest(&sealed(&session_key(1), 5, 0, 1.0), addr(), NOW)
        .unwrap();
    // ...but not a new key: the session made with the old one is void.
    assert_eq!(s.state.set_keyed([(5, &[5; 32])]), [5]);
    assert_eq!(
        s.ingest(&sealed(&session_key(1), 5, 1, 1.0), addr(), NOW)
            .unwrap_err(),
        DropReason::NoSession
    );
}

#[test]
fn a_device_over_its_budget_is_dropped_and_counted() {
    let mut s = S {
        state: HubState::new(
            WindowConfig {
                windows_ms: vec![10_000],
                buckets: 10,
            },
            32,
        ),
        ..state(10)
    };
    let three: Vec<(u8, Value)> = (0..3).map(|c| (c, Value::I32(1))).collect();
    // 64 readings' worth at once (two seconds of 32/s), then nothing.
    let accepted = (0..30)
        .filter(|&seq| s.ingest(&bytes(1, seq, NOW, &three), addr(), NOW).is_ok())
        .count();
    assert_eq!(accepted, 21);
    assert_eq!(s.counters().dropped[DropReason::OverBudget.index()], 9);
    // A second later, 32 more readings.
    let later = (30..50)
        .filter(|&seq| {
            s.ingest(&bytes(1, seq, NOW + 1_000, &three), addr(), NOW + 1_000)
                .is_ok()
        })
        .count();
    assert_eq!(later, 11);
}
