//! The node's own resolvers, read once at start from its resolv.conf:
//! every name outside `corral.` is forwarded to them (hickory's forwarder),
//! and their search domains follow `service.corral` in the pods'.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use hickory_resolver::config::{NameServerConfig, ResolverOpts};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::Catalog;

/// What the node's resolv.conf says.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// Name servers, without the node DNS itself (no loop).
    pub servers: Vec<IpAddr>,
    /// Search domains, in order.
    pub search: Vec<String>,
    pub options: ResolverOpts,
}

impl Upstream {
    /// Reads `path`; a missing or server-less file gives no servers (names
    /// outside the zone are then refused at once). `own` is the node DNS's
    /// address, left out.
    pub fn read(path: &Path, own: IpAddr) -> Upstream {
        match std::fs::read(path) {
            Ok(text) => Upstream::parse(&text, own),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the node's resolvers; node DNS answers only names under corral.");
                Upstream::default()
            }
        }
    }

    pub fn parse(text: &[u8], own: IpAddr) -> Upstream {
        // hickory's parser refuses a file without name servers: the search
        // domains are then lost too, which is fine (nothing to forward).
        match hickory_resolver::system_conf::parse_resolv_conf(text) {
            Ok((config, options)) => Upstream {
                servers: config
                    .name_servers()
                    .iter()
                    .map(|s| s.ip)
                    .filter(|ip| *ip != own)
                    .collect(),
                search: config
                    .search()
                    .iter()
                    .map(|n| n.to_string().trim_end_matches('.').to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                options,
            },
            Err(_) => Upstream::default(),
        }
    }

    /// A catalog that forwards every name to the servers; `None` without
    /// servers.
    pub fn forwarder(&self) -> Option<Catalog> {
        if self.servers.is_empty() {
            return None;
        }
        let config = ForwardConfig {
            name_servers: self
                .servers
                .iter()
                .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                .collect(),
            options: Some(self.options.clone()),
        };
        let handler = match ForwardZoneHandler::builder_tokio(config).build() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up forwarding; node DNS answers only names under corral.");
                return None;
            }
        };
        let mut catalog = Catalog::new();
        catalog.upsert(
            hickory_proto::rr::LowerName::new(&hickory_proto::rr::Name::root()),
            vec![Arc::new(handler)],
        );
        Some(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_servers_and_search_and_leaves_itself_out() {
        let own: IpAddr = "10.88.0.1".parse().expect("ip");
        let u = Upstream::parse(
            b"# generated\nnameserver 10.88.0.1\nnameserver 192.0.2.53\nsearch corp.example lab.example\noptions ndots:2 timeout:1\n",
            own,
        );
        assert_eq!(u.servers, ["192.0.2.53".parse::<IpAddr>().expect("ip")]);
        assert_eq!(u.search, ["corp.example", "lab.example"]);
        assert_eq!(u.options.timeout, std::time::Duration::from_secs(1));
        assert!(u.forwarder().is_some());
    }

    #[test]
    fn no_servers_means_no_forwarding() {
        let own: IpAddr = "10.88.0.1".parse().expect("ip");
        let u = Upstream::parse(b"search x.example\n", own);
        assert!(u.servers.is_empty());
        assert!(u.forwarder().is_none());
        let u = Upstream::parse(b"nameserver 10.88.0.1\n", own);
        assert!(
            u.forwarder().is_none(),
            "only itself: nothing to forward to"
        );
        let missing = Upstream::read(Path::new("/nonexistent/resolv.conf"), own);
        assert!(missing.servers.is_empty());
    }
}
