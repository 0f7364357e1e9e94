//! Choosing an endpoint among a service's healthy ones: power of two
//! choices on requests in flight (default), or round-robin. Ejected
//! endpoints are skipped while any other is left; a retry excludes the
//! endpoint that just failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Balance;
use crate::health::EndpointState;

/// Picks an endpoint, or `None` when there is none to pick (no healthy
/// endpoint, or only the excluded one).
pub fn pick(
    balance: Balance,
    endpoints: &[Arc<EndpointState>],
    next: &AtomicUsize,
    exclude: Option<&Arc<EndpointState>>,
    now_ms: u64,
) -> Option<Arc<EndpointState>> {
    let allowed = |e: &&Arc<EndpointState>| exclude.is_none_or(|x| !Arc::ptr_eq(x, e));
    let in_rotation = |e: &&Arc<EndpointState>| allowed(e) && !e.is_ejected(now_ms);
    let mut n = endpoints.iter().filter(in_rotation).count();
    let trust_all = n == 0;
    if trust_all {
        n = endpoints.iter().filter(allowed).count();
    }
    let nth = |i: usize| {
        if trust_all {
            endpoints.iter().filter(allowed).nth(i)
        } else {
            endpoints.iter().filter(in_rotation).nth(i)
        }
    };
    let chosen = match (n, balance) {
        (0, _) => None,
        (1, _) => nth(0),
        (_, Balance::RoundRobin) => nth(next.fetch_add(1, Ordering::Relaxed) % n),
        (_, Balance::P2c) => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            match (nth(a), nth(b)) {
                (Some(x), Some(y)) if y.in_flight() < x.in_flight() => Some(y),
                (x, _) => x,
            }
        }
    };
    chosen.cloned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| EndpointState::new("127.0.0.1", 1000 + i).expect("endpoint"))
            .collect()
    }

    #[test]
    fn round_robin_takes_turns() {
        let eps = endpoints(3);
        let next = AtomicUsize::new(0);
        let names: Vec<String> = (0..6)
            .map(|_| {
                pick(Balance::RoundRobin, &eps, &next, None, 0)
                    .expect("pick")
                    .name
                    .clone()
            })
            .collect();
        assert_eq!(names[0..3], names[3..6]);
        assert_ne!(names[0], names[1]);
        assert_ne!(names[1], names[2]);
    }

    #[test]
    fn p2c_prefers_the_less_busy() {
        let eps = endpoints(2);
        let next = AtomicUsize::new(0);
        let _busy = eps[0].start_request();
        for _ in 0..20 {
            let e = pick(Balance::P2c, &eps, &next, None, 0).expect("pick");
            assert!(Arc::ptr_eq(&e, &eps[1]));
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let eps = endpoints(2);
        let next = AtomicUsize::new(0);
        eps[0].eject(0, Duration::from_secs(10));
        for _ in 0..10 {
            let e = pick(Balance::RoundRobin, &eps, &next, None, 1).expect("pick");
            assert!(Arc::ptr_eq(&e, &eps[1]));
        }
        eps[1].eject(0, Duration::from_secs(10));
        assert!(pick(Balance::P2c, &eps, &next, None, 1).is_some());
    }

    #[test]
    fn exclusion_leaves_others_or_nothing() {
        let eps = endpoints(2);
        let next = AtomicUsize::new(0);
        for _ in 0..10 {
            let e = pick(Balance::P2c, &eps, &next, Some(&eps[0]), 0).expect("pick");
            assert!(Arc::ptr_eq(&e, &eps[1]));
        }
        assert!(pick(Balance::P2c, &eps[..1], &next, Some(&eps[0]), 0).is_none());
        assert!(pick(Balance::P2c, &[], &next, None, 0).is_none());
    }
}
