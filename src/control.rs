//! The TCP control channel's listener. In this version it accepts, counts
//! and logs connections and closes them: the control protocol (hello/auth,
//! heartbeats, commands) is not implemented yet.

use tokio::net::TcpListener;

use crate::hub::Hub;
use crate::metrics::bump;

/// Accepts control connections until the hub shuts down.
pub async fn run(hub: Hub, listener: TcpListener) {
    let cancel = hub.cancel_token();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    bump(&hub.metrics().control_connections);
                    tracing::info!(%peer, "control connection accepted and closed: this hub version does not speak the control protocol yet");
                    drop(stream);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
