//! Caps on open connections of one kind, in total and per IP address: a gateway's client
//! sockets, the handshakes pending on an internal listener, the HTTP API's connections.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Counts connections against a total and a per-address cap. Share it behind an `Arc`.
#[derive(Debug)]
pub struct ConnLimits {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_ip: usize,
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total cap is reached.
    Total,
    /// The cap for the connection's address is reached.
    PerIp,
}

impl ConnLimits {
    /// At most `max_total` connections, `max_per_ip` of them from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { total: AtomicUsize::new(0), per_ip: DashMap::new(), max_total, max_per_ip }
    }

    /// Takes a slot for a new connection from `ip`, released when the returned guard drops.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let ip = ip.to_canonical();
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(ConnSlot { limits: self.clone(), ip })
    }

    /// Slots taken now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The total cap.
    pub fn max_total(&self) -> usize {
        self.max_total
    }
}

/// A connection counted against its [`ConnLimits`] until dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        let remove = match self.limits.per_ip.get_mut(&self.ip) {
            Some(mut n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if remove {
            self.limits.per_ip.remove_if(&self.ip, |_, n| *n == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_address_and_gives_slots_back() {
        let limits = Arc::new(ConnLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), Refusal::PerIp);
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).unwrap_err(), Refusal::Total);
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _b2 = limits.acquire(b).unwrap();
    }
}
