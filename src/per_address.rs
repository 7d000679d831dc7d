//! Per-address caps: how many of something (WebSocket clients, running
//! history queries) one client address holds at once. [`AddressLimit`]
//! hands out an [`AddressSlot`] while the address is under its cap and
//! takes it back when the slot is dropped, so a count can never leak. It
//! remembers only addresses that hold a slot, so its size is bounded by
//! the slots out. An IPv6 client counts by its /64 network (one host
//! usually owns a whole /64), an IPv4-mapped IPv6 address as its IPv4
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A cap per client address.
#[derive(Debug)]
pub struct AddressLimit {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One of an address's places under an [`AddressLimit`], given back when
/// dropped.
#[derive(Debug)]
pub struct AddressSlot {
    limit: Arc<AddressLimit>,
    key: IpAddr,
}

/// The key an address counts under: IPv4 as it is, IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AddressLimit {
    /// At most `max` slots per address.
    pub fn new(max: usize) -> Arc<AddressLimit> {
        Arc::new(AddressLimit {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map stays consistent whatever panicked while it was held.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `ip`, or `None` when its address holds `max` already.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut held = self.held();
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            limit: self.clone(),
            key,
        })
    }

    /// Slots `ip`'s address holds.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held().get(&address_key(ip)).copied().unwrap_or(0)
    }

    /// Addresses that hold at least one slot.
    pub fn addresses(&self) -> usize {
        self.held().len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.limit.held();
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_max_slots_and_others_are_not_affected() {
        let limit = AddressLimit::new(2);
        let a = [
            limit.try_acquire(ip("10.0.0.1")),
            limit.try_acquire(ip("10.0.0.1")),
        ];
        assert!(a.iter().all(Option::is_some));
        assert!(limit.try_acquire(ip("10.0.0.1")).is_none());
        assert!(limit.try_acquire(ip("10.0.0.2")).is_some());
        assert_eq!(limit.held_by(ip("10.0.0.1")), 2);
    }

    #[test]
    fn a_dropped_slot_is_given_back_and_empty_addresses_are_forgotten() {
        let limit = AddressLimit::new(1);
        let slot = limit.try_acquire(ip("10.0.0.1"));
        assert!(limit.try_acquire(ip("10.0.0.1")).is_none());
        drop(slot);
        assert_eq!(limit.addresses(), 0);
        assert!(limit.try_acquire(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let limit = AddressLimit::new(1);
        let _a = limit.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(limit.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limit.try_acquire(ip("2001:db8:1:3::1")).is_some());
        let _b = limit.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(limit.try_acquire(ip("::ffff:192.0.2.7")).is_none());
    }
}
