//! The live stream: batches of accepted datagrams from ingest are coalesced,
//! serialized to one JSON `readings` frame, and published once to the
//! broadcast ring every WebSocket session reads from.
//!
//! Overflow policy: the queue from ingest holds `ws.live_queue_batches`
//! batches. When it is full, ingest drops the newest batch from the live
//! stream and counts its datagrams (`sensor_hub_live_datagrams_dropped_total`);
//! the hub state was already updated, and ingest never waits.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::hub::{unix_ms, Hub};
use crate::metrics::bump;
use crate::state::LiveDatagram;
use crate::ws::messages;

/// Ingest's end of the live queue.
#[derive(Debug, Clone)]
pub struct LiveSender {
    tx: mpsc::Sender<Vec<LiveDatagram>>,
    hub: Hub,
}

/// Creates the live queue.
pub fn channel(hub: &Hub) -> (LiveSender, mpsc::Receiver<Vec<LiveDatagram>>) {
    let (tx, rx) = mpsc::channel(hub.config().ws.live_queue_batches);
    (
        LiveSender {
            tx,
            hub: hub.clone(),
        },
        rx,
    )
}

impl LiveSender {
    /// True when nobody would receive live frames (no WebSocket client).
    pub fn nobody_listening(&self) -> bool {
        self.hub.metrics().ws_clients.load(Ordering::Relaxed) == 0
    }

    /// Queues a batch without waiting; counts it when the queue is full.
    pub fn send(&self, batch: Vec<LiveDatagram>) {
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => {
                self.hub
                    .metrics()
                    .live_datagrams_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {} // shutting down
        }
    }
}

/// Serializes queued batches into frames until the queue closes. Batches
/// waiting together are coalesced, up to `ws.frame_max_datagrams` per frame.
pub async fn run_serializer(hub: Hub, mut rx: mpsc::Receiver<Vec<LiveDatagram>>) {
    let max = hub.config().ws.frame_max_datagrams;
    while let Some(mut pending) = rx.recv().await {
        while pending.len() < max {
            match rx.try_recv() {
                Ok(more) => pending.extend(more),
                Err(_) => break,
            }
        }
        let now = unix_ms();
        for chunk in pending.chunks(max) {
            let frame = messages::readings(chunk, now);
            bump(&hub.metrics().live_frames);
            // No receiver means no client right now: nothing to deliver.
            let _ = hub.publish(frame.into());
        }
    }
}
