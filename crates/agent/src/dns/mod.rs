//! Node DNS: `<service>.service.corral` answered from the service catalog
//! on every node, every other name forwarded to the node's resolvers, and
//! given to the node's pods as their nameserver (docs/SERVICES.md, "DNS").
//!
//! - [`table`]: the names and their records, made from the catalog (pure).
//! - [`handler`]: hickory's request handler: the zone `corral.` from the
//!   table, the rest forwarded.
//! - [`upstream`]: the node's resolv.conf, read once at start.
//! - [`follow`]: the catalog followed with blocking queries, the table
//!   swapped whole.
//! - [`listen`]: UDP and TCP sockets on the pod bridge's gateway, bound
//!   before the bridge exists.

pub mod follow;
pub mod handler;
pub mod listen;
pub mod table;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::PodDns;
pub use follow::{CatalogSource, FixedCatalog};
pub use table::{SERVICE_DOMAIN, Table};

/// Where the node's own resolvers are listed.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How long a TCP client may stay silent before its connection is closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// The node DNS's settings (the agent's `dns_addr`; `None` there: off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Where it listens, UDP and TCP. Pods get its IP as their nameserver,
    /// so for them it must be a specific address they reach (the pod
    /// bridge's gateway) on port 53.
    pub addr: SocketAddr,
    /// The node's resolvers, to forward other names to (read at start).
    pub resolv_conf: PathBuf,
    /// A default address rather than one the user set: when it cannot be
    /// bound the agent runs without node DNS (and says so) instead of
    /// refusing to start.
    pub optional: bool,
}

impl DnsConfig {
    pub fn new(addr: SocketAddr) -> DnsConfig {
        DnsConfig {
            addr,
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            optional: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot listen on {addr} for the node DNS: {source} (change --dns-addr, or turn it off with --no-dns)"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running node DNS.
pub struct NodeDns {
    /// The bound address (UDP and TCP).
    pub addr: SocketAddr,
    /// What the node's pods get as their resolver; `None` when pods cannot
    /// use this address (not port 53, or no specific IP).
    pub pod_dns: Option<PodDns>,
    /// The current table (tests look at it).
    pub table: Arc<ArcSwap<Table>>,
}

impl NodeDns {
    /// Binds, reads the node's resolvers, and serves until `shutdown`;
    /// the server and the catalog follower run on `tasks`.
    pub fn start(
        config: &DnsConfig,
        source: Arc<dyn CatalogSource>,
        wait: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<NodeDns, DnsError> {
        let (udp, tcp) = listen::bind(config.addr).map_err(|source| DnsError::Listen {
            addr: config.addr,
            source,
        })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Listen {
            addr: config.addr,
            source,
        })?;
        let upstream = upstream::Upstream::read(&config.resolv_conf, addr.ip());
        if upstream.servers.is_empty() {
            tracing::warn!(resolv_conf = %config.resolv_conf.display(),
                "the node has no resolvers: node DNS refuses names outside corral.");
        }
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let handler = handler::DnsHandler::new(table.clone(), upstream.forwarder());
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        let sd = shutdown.clone();
        tasks.spawn(async move {
            sd.cancelled().await;
            if let Err(e) = server.shutdown_gracefully().await {
                tracing::debug!(error = %e, "node DNS stopped with an error");
            }
        });
        tasks.spawn(follow::follow(
            source,
            table.clone(),
            addr.ip(),
            wait,
            shutdown,
        ));
        let pod_dns = pod_dns(addr, &upstream.search);
        tracing::info!(%addr, forwards_to = ?upstream.servers, pods = pod_dns.is_some(), "node DNS listening");
        Ok(NodeDns {
            addr,
            pod_dns,
            table,
        })
    }
}

/// `--dns-addr`: an IP (port 53) or `IP:PORT` (`[v6]:PORT`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// The pods' resolver: this node DNS, `service.corral` first in the search
/// list (so `web` alone resolves), then the node's own search domains.
/// The resolver's default `ndots:1` is kept: a name with a dot is asked as
/// it is first, so external names cost one query, not one per search
/// domain.
pub fn pod_dns(addr: SocketAddr, node_search: &[String]) -> Option<PodDns> {
    let ip = addr.ip();
    if addr.port() != 53 || ip.is_unspecified() {
        tracing::warn!(%addr, "pods cannot use a node DNS that is not on port 53 of a specific address; they keep the runtime's default resolver");
        return None;
    }
    let mut searches = vec![SERVICE_DOMAIN.to_string()];
    searches.extend(
        node_search
            .iter()
            .filter(|s| s.as_str() != SERVICE_DOMAIN)
            .cloned(),
    );
    Some(PodDns {
        servers: vec![ip.to_string()],
        searches,
        options: vec![],
    })
}

#[cfg(test)]
mod tests;
