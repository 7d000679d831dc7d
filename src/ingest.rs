//! The UDP shell: owns the data-plane socket, reads datagrams in batches
//! (at most `udp.batch_max` per cycle, then yields), hands them to the pure
//! [`HubState`](crate::state::HubState) under one lock per batch, and
//! passes what was accepted to the live stream.

use std::io;

use sensor_hub_protocol::MAX_DATAGRAM_LEN;
use tokio::net::UdpSocket;

use crate::dispatch::dispatch;
use crate::hub::{unix_ms, Hub};
use crate::live::LiveSender;
use crate::metrics::bump;

/// Receive slot size: one byte more than the largest valid datagram, so an
/// oversized datagram shows up as a read that fills the slot.
const SLOT: usize = MAX_DATAGRAM_LEN + 1;

/// Reads and ingests datagrams until the hub shuts down.
pub async fn run(hub: Hub, socket: UdpSocket, live: LiveSender) {
    let batch_max = hub.config().udp.batch_max;
    let mut buffer = vec![0u8; batch_max * SLOT];
    let mut received = Vec::with_capacity(batch_max);
    let cancel = hub.cancel_token();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!(error = %e, "UDP socket failed; ingest stops");
                    return;
                }
            }
        }
        for slot in buffer.chunks_mut(SLOT) {
            match socket.try_recv_from(slot) {
                Ok((len, from)) => received.push((len, from)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    bump(&hub.metrics().udp_recv_errors);
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
        if received.is_empty() {
            continue;
        }
        let now = unix_ms();
        let want_live = !live.nobody_listening();
        let mut accepted = Vec::new();
        {
            let mut state = hub.lock_state();
            for (i, &(len, from)) in received.iter().enumerate() {
                let bytes = &buffer[i * SLOT..i * SLOT + len];
                if let Ok(datagram) = state.ingest(bytes, from, now) {
                    if want_live {
                        accepted.push(datagram);
                    }
                }
            }
            // Devices that appeared or came back online.
            let effects = state.registry.take_effects();
            if !effects.is_empty() {
                dispatch(&hub, effects);
            }
        }
        let full_cycle = received.len() == batch_max;
        received.clear();
        if !accepted.is_empty() {
            live.send(accepted);
        }
        if full_cycle {
            // More may be waiting; let other tasks run first.
            tokio::task::yield_now().await;
        }
    }
}
