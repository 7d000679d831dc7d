//! The UDP shell: owns the data-plane socket, reads datagrams in batches
//! (at most `udp.batch_max` per cycle, then yields), hands them to the pure
//! [`HubState`](crate::state::HubState) under one lock per batch, and
//! queues what was accepted for the history and publishes it as one
//! `Readings` event.

use std::io;

use sensor_hub_protocol::MAX_DATAGRAM_LEN;
use tokio::net::UdpSocket;

use crate::dispatch::dispatch;
use crate::hub::{unix_ms, Hub};
use crate::metrics::bump;
use crate::stream::Event;

/// Receive slot size: one byte more than the largest valid datagram, so an
/// oversized datagram shows up as a read that fills the slot.
const SLOT: usize = MAX_DATAGRAM_LEN + 1;

/// Reads and ingests datagrams until the hub shuts down.
pub async fn run(hub: Hub, socket: UdpSocket) {
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
        {
            let mut state = hub.lock_state();
            let mut accepted = Vec::with_capacity(received.len());
            for (i, &(len, from)) in received.iter().enumerate() {
                let bytes = &buffer[i * SLOT..i * SLOT + len];
                if let Ok(datagram) = state.ingest(bytes, from, now) {
                    accepted.push(datagram);
                }
            }
            // Devices that appeared or came back online, then the readings:
            // published under the lock, so snapshots stay consistent.
            dispatch(&hub, &mut state.registry);
            if !accepted.is_empty() {
                if let Some(history) = hub.history() {
                    history.record(&accepted);
                }
                hub.publish(Event::Readings(accepted));
            }
        }
        let full_cycle = received.len() == batch_max;
        received.clear();
        if full_cycle {
            // More may be waiting; let other tasks run first.
            tokio::task::yield_now().await;
        }
    }
}
