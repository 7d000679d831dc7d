//! `udp.receive_sockets = 2`: two UDP sockets share the hub's port
//! (SO_REUSEPORT, Linux) and every datagram from many senders is read and
//! accepted once, each device's in the order it sent them.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use sensor_hub_protocol::Value;
use support::*;
use tokio::net::UdpSocket;

/// Senders, each its own socket (its own flow) and its own device.
const SENDERS: u32 = 16;
/// Datagrams each sender sends.
const PER_SENDER: u32 = 60;
/// Rounds (one datagram per sender) sent before waiting for the hub to
/// read them all, so a small kernel receive buffer never drops any.
const ROUNDS_PER_WAIT: u32 = 10;

#[tokio::test]
async fn two_receive_sockets_accept_every_datagram_of_many_senders() {
    let hub = start_hub(&[("SENSOR_HUB__UDP__RECEIVE_SOCKETS", "2")]).await;
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut sent = 0u64;
    for seq in 0..PER_SENDER {
        for (i, udp) in senders.iter().enumerate() {
            let device = 100 + i as u32;
            let bytes = datagram(device, seq, &[(0, Value::I32(seq as i32))]);
            udp.send_to(&bytes, hub.udp).await.unwrap();
            sent += 1;
        }
        if (seq + 1) % ROUNDS_PER_WAIT == 0 || seq + 1 == PER_SENDER {
            eventually("the hub read every datagram sent so far", || async {
                hub.metric("sensor_hub_udp_datagrams_received_total").await == sent
            })
            .await;
        }
    }

    let expected = u64::from(SENDERS * PER_SENDER);
    assert_eq!(sent, expected);
    let (status, body) = hub.get("/api/hub").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["udp_receive_sockets"], 2, "{v}");
    assert_eq!(v["datagrams_received"], expected, "{v}");
    assert_eq!(v["datagrams_accepted"], expected, "{v}");
    assert_eq!(v["datagrams_duplicated"], 0, "{v}");
    assert_eq!(v["kernel_drops"], 0, "{v}");
    assert_eq!(hub.metric("sensor_hub_udp_receive_sockets").await, 2);

    // Each device's datagrams came in order: nothing lost or reordered.
    let (_, body) = hub.get("/api/devices").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), SENDERS as usize, "{v}");
    for d in devices {
        let stats = &d["stats"];
        assert_eq!(stats["received"], u64::from(PER_SENDER), "{d}");
        assert_eq!(stats["lost"], 0, "{d}");
        assert_eq!(stats["reordered"], 0, "{d}");
        assert_eq!(stats["duplicated"], 0, "{d}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn one_receive_socket_is_the_default() {
    let hub = start_hub(&[]).await;
    assert_eq!(hub.metric("sensor_hub_udp_receive_sockets").await, 1);
    let (_, body) = hub.get("/api/hub").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["udp_receive_sockets"], 1, "{v}");
    hub.stop().await;
}
