//! The per-address cap of history queries, on a real history database:
//! an address with its share running is answered busy (429), others and
//! requests of unknown origin are not, and the refusal is counted.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};

use super::*;
use crate::clock::Clock;
use crate::config::HubConfig;
use crate::core::Received;
use crate::history::History;

/// A directory removed with what is in it when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sensor-hub-history-api-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A core with history and device 4 reporting on channel 0.
fn core_with_a_sensor(dir: &TempDir) -> (Arc<Core>, History, Clock) {
    let mut config = HubConfig::defaults().unwrap();
    config.storage.path = dir.0.join("history.db");
    let (history, _) = History::open(&config.storage).unwrap();
    let core = Arc::new(Core::new(&config, Some(history.clone())));
    let clock = Clock::system();
    let now = clock.now();
    let d = Datagram {
        device_id: 4,
        seq: 0,
        time_ms: now.wall_ms as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(21.5),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&d, &mut buf).unwrap();
    core.ingest_batch(
        &[Received {
            bytes,
            wire_len: bytes.len(),
            from: "127.0.0.1:9".parse().unwrap(),
        }],
        now,
    );
    (core, history, clock)
}

#[tokio::test]
async fn an_address_with_its_share_running_is_answered_busy() {
    let dir = TempDir::new();
    let (core, history, clock) = core_with_a_sensor(&dir);
    let gate = HistoryGate::new(2);
    let ask = |peer: Option<IpAddr>| {
        let (core, gate, now) = (core.clone(), &gate, clock.now());
        async move {
            answer(
                &core,
                gate,
                peer,
                4,
                &SensorRef::Channel(0),
                &RangeRequest::default(),
                None,
                now,
            )
            .await
        }
    };
    let busy: IpAddr = "192.0.2.1".parse().unwrap();
    // Two queries of this address are running (their slots are held).
    let running = [
        gate.per_address.try_acquire(busy).unwrap(),
        gate.per_address.try_acquire(busy).unwrap(),
    ];
    let err = ask(Some(busy)).await.unwrap_err();
    assert!(matches!(err, HistoryError::AddressBusy(2)), "{err}");
    assert_eq!(err.status(), 429);
    assert!(err.is_busy() && !err.is_client_error());
    assert!(
        err.to_string().contains("http.history_queries_per_address"),
        "{err}"
    );
    assert_eq!(gate.refused_address.get(), 1);
    // Another address, and a request whose address is unknown, are answered.
    assert!(ask(Some("192.0.2.2".parse().unwrap())).await.is_ok());
    assert!(ask(None).await.is_ok());
    // A finished query gives its place back.
    drop(running);
    assert!(ask(Some(busy)).await.is_ok());
    assert_eq!(gate.per_address.held_by(busy), 0, "slots are given back");
    assert_eq!(gate.refused_busy.get(), 0);
    history.shutdown();
}
