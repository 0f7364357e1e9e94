//! The routing table, built from one service catalog and swapped in whole.
//!
//! A request goes to the rule whose host equals the request's host (case
//! and a trailing dot ignored, the port dropped) and whose path prefix is
//! the longest that matches at a segment boundary (`/api` matches `/api`,
//! `/api/` and `/api/x`, never `/apix`; `/` matches everything). Rules with
//! a host come before rules without one (any host). The automatic host
//! (`<service>.<domain>`) is among the routes the server computed; the
//! table adds nothing of its own. Only healthy endpoints are listed.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use corral_types::catalog::ServiceCatalog;
use corral_types::spec::ServiceKind;

use crate::health::EndpointState;
use crate::metrics::{Metrics, RouteMetrics, ServiceMetrics};

/// A service and the endpoints that get its traffic.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub endpoints: Vec<Arc<EndpointState>>,
    /// Round-robin position.
    pub next: AtomicUsize,
    pub metrics: ServiceMetrics,
}

#[derive(Debug)]
pub struct Rule {
    /// The path prefix without a trailing `/` (`""` for `/`).
    prefix: String,
    strip: bool,
    pub service: Arc<Service>,
    /// Counted under `route="host/path"` (`*` for any host).
    pub metrics: RouteMetrics,
}

impl Rule {
    fn matches(&self, path: &str) -> bool {
        let p = &self.prefix;
        p.is_empty()
            || (path.starts_with(p.as_str())
                && (path.len() == p.len() || path.as_bytes().get(p.len()) == Some(&b'/')))
    }

    /// The path to send upstream: the prefix removed when the rule strips
    /// it (never empty).
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip {
            return path;
        }
        match path.get(self.prefix.len()..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => "/",
        }
    }
}

#[derive(Debug, Default)]
pub struct Table {
    /// False until the first catalog arrives (requests get 503, not 404).
    pub loaded: bool,
    hosts: HashMap<String, Vec<Rule>>,
    any_host: Vec<Rule>,
    tcp: HashMap<u16, Arc<Service>>,
}

/// Endpoint states by `address:port`, carried from one table to the next.
pub type Endpoints = HashMap<String, Arc<EndpointState>>;

impl Table {
    /// Builds a table from `catalog`, reusing the states in `endpoints`
    /// (and leaving there only those still listed as healthy).
    pub fn build(catalog: &ServiceCatalog, endpoints: &mut Endpoints, metrics: &Metrics) -> Table {
        let mut kept = Endpoints::new();
        let mut table = Table {
            loaded: true,
            ..Table::default()
        };
        for entry in &catalog.services {
            let mut eps = Vec::new();
            for e in entry.healthy() {
                let Some(fresh) = EndpointState::new(&e.address, e.port) else {
                    tracing::warn!(service = %entry.name, address = %e.address, port = e.port, "skipping an endpoint whose address is not a host name or IP address");
                    continue;
                };
                let state = match kept.entry(fresh.name.clone()) {
                    Entry::Occupied(o) => o.get().clone(),
                    Entry::Vacant(v) => v
                        .insert(endpoints.get(&fresh.name).cloned().unwrap_or(fresh))
                        .clone(),
                };
                eps.push(state);
            }
            let service = Arc::new(Service {
                name: entry.name.clone(),
                endpoints: eps,
                next: AtomicUsize::new(0),
                metrics: metrics.service(&entry.name),
            });
            match entry.kind {
                ServiceKind::Tcp => {
                    if let Some(port) = entry.tcp_port {
                        table.tcp.entry(port).or_insert(service);
                    }
                }
                ServiceKind::Http => {
                    for r in &entry.routes {
                        let host = r.host.as_deref().map(normalize_host);
                        let prefix = r.path_prefix.trim_end_matches('/').to_string();
                        let label = format!("{}{}", host.as_deref().unwrap_or("*"), r.path_prefix);
                        let rules = match &host {
                            Some(h) => table.hosts.entry(h.clone()).or_default(),
                            None => &mut table.any_host,
                        };
                        if rules.iter().any(|x| x.prefix == prefix) {
                            tracing::warn!(service = %entry.name, route = %label, "route claimed twice; the first service keeps it");
                            continue;
                        }
                        rules.push(Rule {
                            prefix,
                            strip: r.strip_prefix,
                            metrics: metrics.route(&entry.name, &label),
                            service: service.clone(),
                        });
                    }
                }
            }
        }
        for rules in table.hosts.values_mut().chain([&mut table.any_host]) {
            rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        }
        *endpoints = kept;
        table
    }

    /// The rule for a request to `host` (as the client wrote it, with or
    /// without a port) and `path` (without the query).
    pub fn route(&self, host: &str, path: &str) -> Option<&Rule> {
        let host = normalize_host(strip_port(host));
        self.hosts
            .get(&host)
            .and_then(|rules| rules.iter().find(|r| r.matches(path)))
            .or_else(|| self.any_host.iter().find(|r| r.matches(path)))
    }

    pub fn tcp(&self, port: u16) -> Option<&Arc<Service>> {
        self.tcp.get(&port)
    }

    pub fn tcp_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.tcp.keys().copied()
    }
}

fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `example.com:80` → `example.com`, `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests;
