//! The router's settings: where it listens, how it balances, and its
//! limits and timeouts (each with the answer a client gets when it is hit,
//! listed in docs/ROUTER.md).

use std::net::SocketAddr;
use std::time::Duration;

/// How a service's healthy endpoints share its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Power of two choices: two endpoints at random, the one with fewer
    /// requests in flight wins. Adapts to slow endpoints without a global
    /// view; the default.
    #[default]
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::P2c => "p2c",
            Balance::RoundRobin => "round-robin",
        }
    }
}

impl std::str::FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "p2c" => Ok(Balance::P2c),
            "round-robin" | "rr" => Ok(Balance::RoundRobin),
            other => Err(format!(
                "unknown balancing {other:?}: use p2c or round-robin"
            )),
        }
    }
}

/// Timeouts and sizes. Defaults are nginx's and Envoy's orders of
/// magnitude, chosen so a slow client cannot hold a connection forever
/// and a dead endpoint is noticed within seconds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connecting to an endpoint (then: 504, the endpoint is ejected).
    pub connect: Duration,
    /// From a request's first byte to the end of its head (then: the
    /// connection is closed). Also applies to a new connection's first
    /// request.
    pub header_read: Duration,
    /// A keep-alive connection with no request in flight is closed after
    /// this long.
    pub idle: Duration,
    /// From sending a request to the endpoint's response head (then:
    /// 504, the endpoint is ejected). Bodies stream without a deadline.
    pub upstream_response: Duration,
    /// Request line plus headers, in bytes (then: 431).
    pub max_header_bytes: usize,
    /// How long an ejected endpoint gets no traffic.
    pub eject_cooldown: Duration,
    /// How long a graceful shutdown waits for in-flight requests and
    /// tunnels before it closes them.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(3),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            upstream_response: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            eject_cooldown: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Where HTTP (1.1 and h2c) is served. TCP routes listen on the same
    /// IP address, on the port each service names.
    pub http_addr: SocketAddr,
    pub balance: Balance,
    pub limits: Limits,
    /// Threads serving HTTP connections, each with its own single-threaded
    /// runtime and upstream pool (nginx's worker processes); 0: on the
    /// caller's runtime.
    pub workers: usize,
}

impl RouterConfig {
    pub fn new(http_addr: SocketAddr) -> Self {
        RouterConfig {
            http_addr,
            balance: Balance::default(),
            limits: Limits::default(),
            workers: 0,
        }
    }
}
