//! What the HTTP listener knows about one accepted connection, handed to
//! the application as a request extension: the peer's address (for
//! per-address limits and login slowdown), whether it arrived over TLS
//! (for the cookie's `Secure` flag), and a flag the application sets once
//! a request on it carried valid credentials (the listener evicts
//! connections without that flag first when it is full).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One accepted HTTP connection, as a request extension.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The listener's number for it (unique while the hub runs).
    pub id: u64,
    authenticated: Arc<AtomicBool>,
}

impl ConnectionInfo {
    /// A connection from `peer`, not yet authenticated.
    pub fn new(peer: SocketAddr, tls: bool, id: u64) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            tls,
            id,
            authenticated: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A request on this connection carried valid credentials.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Whether [`ConnectionInfo::mark_authenticated`] was called (on any
    /// clone).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_shared_by_every_clone() {
        let info = ConnectionInfo::new("127.0.0.1:1".parse().unwrap(), false, 7);
        let copy = info.clone();
        assert!(!copy.is_authenticated());
        info.mark_authenticated();
        assert!(copy.is_authenticated());
    }
}
