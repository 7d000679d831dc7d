//! Ingest state: acceptance, per-device bookkeeping and drop counting,
//! on plain byte slices and a clock passed in.

use super::*;
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, MAGIC, MAX_DATAGRAM_LEN, VERSION};

const NOW: u64 = 1_700_000_000_000;

fn state(max_devices: usize) -> HubState {
    HubState::new(
        max_devices,
        WindowConfig {
            windows_ms: vec![10_000, 60_000],
            buckets: 10,
        },
        Registry::new(crate::registry::RegistryConfig {
            max_devices,
            default_interval_ms: 1_000,
            late_after_intervals: 3,
            offline_after_intervals: 10,
            command_ttl_ms: 1_000,
            queue_per_device: 1,
            max_in_flight: 1,
            retain_finished: 1,
        }),
    )
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
        assert_eq!(DropReason::label(err.index()), reason);
    }
    let c = s.counters();
    assert_eq!(c.datagrams_received, 6);
    assert_eq!(c.datagrams_accepted, 0);
    assert_eq!(c.dropped, [1, 2, 1, 1, 1, 0]);
    assert_eq!(s.device_count(), 0, "no device is created by bad input");
    assert!(s.registry.device(1).is_none());
}

#[test]
fn new_devices_beyond_the_limit_are_dropped_but_known_ones_continue() {
    let mut s = state(2);
    s.ingest(&bytes(1, 0, NOW, &[]), addr(), NOW).unwrap();
    s.ingest(&bytes(2, 0, NOW, &[]), addr(), NOW).unwrap();
    let err = s.ingest(&bytes(3, 0, NOW, &[]), addr(), NOW).unwrap_err();
    assert_eq!(err, DropReason::DeviceLimit);
    assert_eq!(DropReason::label(err.index()), "device_limit");
    s.ingest(&bytes(1, 1, NOW, &[]), addr(), NOW).unwrap();
    assert_eq!(s.device_count(), 2);
    assert_eq!(s.counters().dropped[DropReason::DeviceLimit.index()], 1);
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
    let labels: Vec<&str> = (0..DropReason::COUNT).map(DropReason::label).collect();
    let mut sorted = labels.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), DropReason::COUNT, "{labels:?}");
}
