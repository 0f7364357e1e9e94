//! The service catalog: what `GET /v1/services` answers, derived by the
//! server from jobs, allocations and nodes (nothing registers itself).
//! Routers and node DNS follow it with blocking queries.

use serde::{Deserialize, Serialize};

use crate::Index;
use crate::spec::ServiceKind;

/// `GET /v1/services`: every service of every running job, with all of its
/// endpoints (healthy or not). `index` is the value to pass back as
/// `?index=` to wait for the next change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCatalog {
    pub index: Index,
    pub services: Vec<ServiceEntry>,
}

/// One service: its routes and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Unique in the cluster (the submit refuses a second job claiming it).
    pub name: String,
    pub job: String,
    pub group: String,
    pub kind: ServiceKind,
    /// `<name>.<domain>` for HTTP services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_host: Option<String>,
    /// HTTP routing rules, the automatic host's first. Empty for TCP.
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    /// The router port a TCP service is proxied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
    /// Seconds an endpoint stays reachable after it leaves the catalog
    /// (informational: the agent applies it).
    #[serde(default)]
    pub shutdown_delay_ms: u64,
    pub endpoints: Vec<Endpoint>,
}

impl ServiceEntry {
    /// The endpoints that get traffic.
    pub fn healthy(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.healthy)
    }
}

/// A request matches when its host is `host` (any host when `None`) and its
/// path starts with `path_prefix` at a segment boundary; the longest
/// matching prefix wins, rules with a host before rules without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Starts with `/`; `/` matches every path.
    pub path_prefix: String,
    /// Remove `path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
}

/// One allocation's instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub alloc_id: String,
    /// `job.group[index]`.
    pub alloc_name: String,
    pub node_id: String,
    pub node_name: String,
    /// The node's IP address (or host name), as the node registered it.
    pub address: String,
    /// The host port mapped to the service's port.
    pub port: u16,
    /// Gets traffic: the allocation should run, runs, and the service's
    /// checks pass (or it has none).
    pub healthy: bool,
    pub status: EndpointStatus,
    /// Why it is not healthy, in one line; empty when healthy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    /// Checks pass (or none): gets traffic.
    Passing,
    /// Running, a check fails.
    Failing,
    /// Not running yet, or its checks have not passed yet.
    Starting,
    /// The server stopped it: out of routing, the task ends after the
    /// service's `shutdown_delay`.
    Stopping,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Passing => "passing",
            EndpointStatus::Failing => "failing",
            EndpointStatus::Starting => "starting",
            EndpointStatus::Stopping => "stopping",
        }
    }
}
