//! The HTTP application without a server, through `warp::test`.

use super::*;
use crate::config::HubConfig;
use crate::hub::UdpSocketInfo;
use crate::net::RecvBuffer;
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};

fn hub() -> Hub {
    Hub::new(
        HubConfig::defaults().unwrap(),
        UdpSocketInfo {
            inode: None,
            recv_buffer: RecvBuffer {
                requested: 1 << 20,
                reported: 2 << 20,
            },
        },
        None,
    )
}

fn ingest(hub: &Hub, device_id: u32, seq: u32) {
    let d = Datagram {
        device_id,
        seq,
        time_ms: unix_ms() as u32,
        readings: [Reading {
            channel: 2,
            value: Value::F32(19.25),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&d, &mut buf).unwrap();
    hub.lock_state()
        .ingest(bytes, "127.0.0.1:9".parse().unwrap(), unix_ms())
        .unwrap();
}

async fn get(hub: &Hub, path: &str) -> warp::http::Response<Bytes> {
    warp::test::request()
        .path(path)
        .reply(&routes(hub.clone()))
        .await
}

#[tokio::test]
async fn dashboard_files_are_served_with_their_types() {
    let hub = hub();
    for (path, ty, marker) in [
        ("/", "text/html", "<html"),
        ("/app.js", "text/javascript", "/stream.js"),
        ("/stream.js", "text/javascript", "WebSocket"),
        ("/style.css", "text/css", "{"),
    ] {
        let r = get(&hub, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(ty), "{path}: {content_type}");
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(body.contains(marker), "{path}");
    }
}

#[tokio::test]
async fn the_icon_is_served_at_both_icon_paths() {
    let hub = hub();
    for path in ["/favicon.svg", "/favicon.ico"] {
        let r = get(&hub, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("image/"), "{path}: {content_type}");
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(body.contains("<svg"), "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let r = get(&hub(), "/nope").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn api_devices_lists_devices_with_sensors() {
    let hub = hub();
    ingest(&hub, 20, 0);
    ingest(&hub, 10, 0);
    ingest(&hub, 10, 1);
    let r = get(&hub, "/api/devices").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["id"], 10);
    assert_eq!(devices[0]["datagrams"], 2);
    assert_eq!(devices[0]["last_seq"], 1);
    assert_eq!(devices[0]["addr"], "127.0.0.1:9");
    assert_eq!(devices[0]["sensors"][0]["channel"], 2);
    assert_eq!(devices[0]["sensors"][0]["value"], 19.25);
    assert_eq!(devices[1]["id"], 20);
    assert!(v["hub_time_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let hub = hub();
    ingest(&hub, 1, 0);
    hub.lock_state()
        .ingest(b"junk", "127.0.0.1:9".parse().unwrap(), unix_ms())
        .unwrap_err();
    let r = get(&hub, "/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().as_ref(), br#"{"status":"ok"}"#);

    let r = get(&hub, "/metrics").await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.body().to_vec()).unwrap();
    assert!(
        text.contains("sensor_hub_udp_datagrams_received_total 2\n"),
        "{text}"
    );
    assert!(text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"bad_magic\"} 1\n"));
    assert!(text.contains("sensor_hub_devices 1\n"));
    assert!(text.contains("sensor_hub_udp_receive_buffer_bytes 1048576\n"));
}

#[tokio::test]
async fn api_hub_has_the_metrics_figures_as_json() {
    let hub = hub();
    ingest(&hub, 1, 0);
    hub.lock_state()
        .ingest(b"junk", "127.0.0.1:9".parse().unwrap(), unix_ms())
        .unwrap_err();
    let r = get(&hub, "/api/hub").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["datagrams_received"], 2);
    assert_eq!(v["datagrams_accepted"], 1);
    assert_eq!(v["dropped"]["bad_magic"], 1);
    assert_eq!(v["devices"], 1);
    assert_eq!(v["devices_by_status"]["online"], 1);
    assert_eq!(v["sequence"]["received"], 1);
    assert_eq!(v["ws_clients"], 0);
    assert!(v["uptime_s"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn ws_without_upgrade_headers_is_a_clear_400() {
    let r = get(&hub(), "/ws").await;
    assert_eq!(r.status(), 400);
    let body = String::from_utf8(r.body().to_vec()).unwrap();
    assert!(body.contains("WebSocket upgrade"), "{body}");
}
