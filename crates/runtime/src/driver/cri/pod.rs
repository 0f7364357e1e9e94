//! What the pod sandbox of an allocation needs to know about its group:
//! the container port behind each assigned host port, the network mode and
//! whether any task is privileged; and of its node: the DNS its containers
//! use.
//!
//! The driver's [`AllocContext`](crate::driver::AllocContext) carries the
//! host ports and these options (its `pod`): whoever runs the allocation
//! builds them from its group with [`PodOptions::from_group`].

use std::collections::BTreeMap;

use corral_types::{GroupSpec, NetworkMode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodOptions {
    /// Port each task listens on, keyed like the allocation's host ports
    /// (`"<task>.<port name>"`).
    pub group_ports: BTreeMap<String, u16>,
    /// The pod uses the node's network namespace (no port mappings).
    pub network_host: bool,
    /// Some task of the group runs privileged (the sandbox must be too).
    pub privileged: bool,
    /// The containers' resolver (their `/etc/resolv.conf`); `None`: the
    /// runtime's default (a copy of the host's). The node's, not the
    /// group's: whoever runs the allocation sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<PodDns>,
}

/// What the runtime writes into the pod's `/etc/resolv.conf` (CRI
/// `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDns {
    /// `nameserver` lines (IP addresses; port 53 is implied).
    pub servers: Vec<String>,
    /// The `search` line.
    #[serde(default)]
    pub searches: Vec<String>,
    /// The `options` line (`ndots:2`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

impl PodOptions {
    pub fn from_group(group: &GroupSpec) -> PodOptions {
        PodOptions {
            group_ports: group
                .ports()
                .map(|(task, name, port)| (GroupSpec::port_key(task, name), port))
                .collect(),
            network_host: group.network == NetworkMode::Host,
            privileged: group.tasks.iter().any(|t| t.security.privileged),
            dns: None,
        }
    }

    /// With the node's DNS for the pod's containers.
    pub fn with_dns(mut self, dns: Option<PodDns>) -> PodOptions {
        self.dns = dns;
        self
    }

    /// The container port behind the named host port.
    pub fn container_port(&self, key: &str, host_port: u16) -> u16 {
        self.group_ports.get(key).copied().unwrap_or(host_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::TaskSpec;

    fn task(name: &str, ports: &[(&str, u16)], privileged: bool) -> TaskSpec {
        let mut t: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": name, "driver": "container", "image": "x:1"
        }))
        .expect("task spec");
        t.ports = ports.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        t.security.privileged = privileged;
        t
    }

    #[test]
    fn from_group_keys_ports_like_the_alloc() {
        let group: GroupSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "count": 1, "network": "host",
            "tasks": [serde_json::to_value(task("app", &[("http", 8080)], false)).expect("json"),
                      serde_json::to_value(task("side", &[("metrics", 9100)], true)).expect("json")]
        }))
        .expect("group");
        let o = PodOptions::from_group(&group);
        assert_eq!(o.group_ports.get("app.http"), Some(&8080));
        assert_eq!(o.group_ports.get("side.metrics"), Some(&9100));
        assert!(o.network_host);
        assert!(o.privileged);
        assert_eq!(o.container_port("app.http", 20001), 8080);
        assert_eq!(o.container_port("other.x", 20002), 20002);
    }
}
