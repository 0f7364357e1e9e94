//! One endpoint as the router sees it: its address, the requests it has in
//! flight (for least-request balancing) and passive health. An endpoint
//! that refuses a connection or times out is ejected for a cool-down: it
//! gets no traffic until then, unless every endpoint of its service is
//! ejected (then the catalog, which says they are healthy, is trusted over
//! one router's guess, as Envoy's panic threshold does).
//!
//! The state outlives routing-table rebuilds: the table is rebuilt from
//! each catalog, and an endpoint present in both keeps its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;

/// Milliseconds since the router started: cheap to store in an atomic.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[derive(Debug)]
pub struct EndpointState {
    /// `address:port` as the catalog lists it, for messages and TCP.
    pub name: String,
    /// The same, as an HTTP authority for upstream URIs.
    pub authority: Authority,
    in_flight: AtomicUsize,
    /// `Clock::now_ms` until which the endpoint is ejected; 0 when not.
    ejected_until: AtomicU64,
}

impl EndpointState {
    /// `None` when the address cannot be an authority (the catalog listed
    /// something odd; the endpoint is skipped with a log line).
    pub fn new(address: &str, port: u16) -> Option<Arc<Self>> {
        let name = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let authority = name.parse::<Authority>().ok()?;
        Some(Arc::new(EndpointState {
            name,
            authority,
            in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
        }))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Takes the endpoint out of rotation for `cooldown`. Returns whether
    /// it was in rotation (so an ejection is counted once).
    pub fn eject(&self, now_ms: u64, cooldown: Duration) -> bool {
        let was = self.is_ejected(now_ms);
        let until = now_ms
            .saturating_add(u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until.store(until, Ordering::Relaxed);
        !was
    }
}

/// A request in flight to one endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_lasts_the_cooldown() {
        let e = EndpointState::new("127.0.0.1", 80).expect("endpoint");
        assert!(!e.is_ejected(5));
        assert!(e.eject(5, Duration::from_millis(100)));
        assert!(e.is_ejected(104));
        assert!(!e.eject(50, Duration::from_millis(100)), "already ejected");
        assert!(!e.is_ejected(151));
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        let e = EndpointState::new("::1", 8080).expect("endpoint");
        assert_eq!(e.name, "[::1]:8080");
        assert!(EndpointState::new("bad host", 1).is_none());
    }

    #[test]
    fn in_flight_counts_until_drop() {
        let e = EndpointState::new("10.0.0.1", 1).expect("endpoint");
        let a = e.start_request();
        let b = e.start_request();
        assert_eq!(e.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(e.in_flight(), 0);
    }
}
