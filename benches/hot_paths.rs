//! Criterion benchmarks of the per-datagram hot paths: decoding, the whole
//! ingest step (decode, device and sensor state, rolling windows, sequence
//! accounting, latency), and the aggregation pieces on their own.
//!
//! Run with `cargo bench --bench hot_paths`.

#![allow(clippy::unwrap_used)] // benchmark set-up

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensor_hub::aggregate::sequence::SeqTracker;
use sensor_hub::aggregate::window::Window;
use sensor_hub::clock::Now;
use sensor_hub::registry::{Registry, RegistryConfig};
use sensor_hub::state::{HubState, SessionAuth, WindowConfig};
use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::{decode_datagram, encode_datagram, Datagram, Reading, Value};

const NOW: u64 = 1_763_731_200_000;

fn datagram(device_id: u32, seq: u32) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: NOW as u32,
        readings: [
            Reading {
                channel: 0,
                value: Value::F32(21.5),
            },
            Reading {
                channel: 1,
                value: Value::F32(48.2),
            },
            Reading {
                channel: 2,
                value: Value::I32(1013),
            },
        ]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    encode_datagram(&d, &mut buf).unwrap().to_vec()
}

fn state(devices: usize) -> (HubState, Registry) {
    let registry = Registry::new(RegistryConfig {
        max_devices: devices,
        default_interval_ms: 1_000,
        late_after_intervals: 3,
        offline_after_intervals: 10,
        command_ttl_ms: 30_000,
        queue_per_device: 16,
        max_in_flight: 4,
        retain_finished: 1_024,
        trust: Default::default(),
    });
    let windows = WindowConfig {
        windows_ms: vec![10_000, 60_000],
        buckets: 10,
    };
    let mut registry = registry;
    // Adopted (listed), as a real fleet is.
    let _ = registry.set_listed(0..devices as u32, Now::at(NOW, NOW));
    (HubState::new(windows, 1_000_000), registry)
}

const KEY: [u8; 32] = [0x5a; 32];

fn session_key(device: u32) -> DatagramKey {
    DatagramKey::derive(
        &KEY,
        &[1; 16],
        &device.to_le_bytes().repeat(4).try_into().unwrap(),
    )
}

/// Every device keyed, with a fresh session (and replay window).
fn start_sessions(s: &mut HubState, devices: u32) {
    let key = KEY;
    s.set_keyed((0..devices).map(|id| (id, &key)));
    for id in 0..devices {
        s.start_session(id, SessionAuth::new(session_key(id)));
    }
}

fn decode(c: &mut Criterion) {
    let bytes = datagram(1_000, 42);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("three_readings", |b| {
        b.iter(|| decode_datagram(black_box(&bytes)))
    });
    g.bench_function("foreign_traffic", |b| {
        b.iter(|| decode_datagram(black_box(b"GET / HTTP/1.1\r\n")))
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    const DEVICES: u32 = 1_000;
    let packets: Vec<Vec<u8>> = (0..DEVICES * 16)
        .map(|i| datagram(i % DEVICES, i / DEVICES))
        .collect();
    let from = "127.0.0.1:9".parse().unwrap();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1000_devices_three_readings", |b| {
        let (mut s, mut registry) = state(DEVICES as usize);
        let mut i = 0usize;
        let mut now = NOW;
        b.iter(|| {
            let bytes = black_box(&packets[i]);
            let r = s.ingest(&mut registry, bytes, bytes.len(), from, Now::at(now, now));
            i = (i + 1) % packets.len();
            if i == 0 {
                now += 16_000; // keep sequence numbers moving forward in time
            }
            let _ = registry.take_effects();
            r
        })
    });
    // The same with every device keyed: tags verified, replay window kept.
    let keys: Vec<DatagramKey> = (0..DEVICES).map(session_key).collect();
    let sealed: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let d = decode_datagram(p).unwrap();
            let mut buf = [0u8; 512];
            keys[d.device_id as usize]
                .seal(&d, &mut buf)
                .unwrap()
                .to_vec()
        })
        .collect();
    g.bench_function("1000_devices_three_readings_authenticated", |b| {
        let (mut s, mut registry) = state(DEVICES as usize);
        start_sessions(&mut s, DEVICES);
        let mut i = 0usize;
        let mut now = NOW;
        b.iter(|| {
            let bytes = black_box(&sealed[i]);
            let r = s.ingest(&mut registry, bytes, bytes.len(), from, Now::at(now, now));
            i = (i + 1) % sealed.len();
            if i == 0 {
                now += 16_000;
                // The packets come round again: new sessions, so they are
                // fresh rather than replays.
                start_sessions(&mut s, DEVICES);
            }
            let _ = registry.take_effects();
            r
        })
    });
    g.finish();
}

fn aggregation(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregation");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequence_in_order", |b| {
        let mut t = SeqTracker::default();
        let mut seq = 0u32;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            t.observe(black_box(seq), NOW + u64::from(seq))
        })
    });
    g.bench_function("window_add", |b| {
        let mut w = Window::new(10_000, 10, NOW);
        let mut now = NOW;
        b.iter(|| {
            now += 1;
            w.add(now, black_box(21.5))
        })
    });
    g.finish();
}

criterion_group!(benches, decode, ingest, aggregation);
criterion_main!(benches);
