use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};
use crate::spec::Resources;

/// The host ports an agent hands to tasks unless configured otherwise
/// (inclusive).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 32000);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// Where the server reaches the agent (logs), `http://host:port`.
    pub address: String,
    pub status: NodeStatus,
    /// Operator's switch: an ineligible node keeps its allocations but gets
    /// no new ones.
    pub eligible: bool,
    pub draining: bool,
    /// While draining: when the remaining allocations are stopped whether
    /// or not their replacements run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<UnixMillis>,
    /// What the node offers to allocations.
    pub resources: Resources,
    /// Detected facts: `os`, `arch`, `hostname`, `kernel`, `cores`.
    pub attributes: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Drivers that work on this node (`exec`, `container`).
    pub drivers: Vec<String>,
    /// Host ports the scheduler may hand out (inclusive).
    pub port_range: (u16, u16),
    pub last_heartbeat: UnixMillis,
    pub registered_at: UnixMillis,
    /// When the server marked it down (garbage collection counts from
    /// there); `None` while it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<UnixMillis>,
    /// Hash of what placement constraints look at, minus what is unique to
    /// the node (Nomad's computed class): nodes with the same class pass
    /// or fail the same constraints, so the scheduler checks one per class.
    /// 0 = unknown.
    #[serde(default)]
    pub class: u64,
    pub create_index: Index,
    pub modify_index: Index,
}

/// Attributes unique to a node; they stay out of its class.
pub const UNIQUE_ATTRIBUTES: &[&str] = &["hostname"];

impl Node {
    /// The node's class (see [`Node::class`]); never 0.
    pub fn computed_class(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: &str| {
            for b in s.bytes().chain(std::iter::once(0xff)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        for d in &self.drivers {
            eat(d);
        }
        eat("\u{1}");
        for (k, v) in &self.attributes {
            if !UNIQUE_ATTRIBUTES.contains(&k.as_str()) {
                eat(k);
                eat(v);
            }
        }
        eat("\u{2}");
        for (k, v) in &self.labels {
            eat(k);
            eat(v);
        }
        h.max(1)
    }

    /// Where a constraint's `attr` points: `node.name`, `node.id`,
    /// `node.labels.X`, `node.attr.X` (and `node.X` as a short form of
    /// `node.attr.X`).
    pub fn lookup(&self, attr: &str) -> Option<&str> {
        let rest = attr.strip_prefix("node.").unwrap_or(attr);
        match rest {
            "name" => Some(&self.name),
            "id" => Some(&self.id),
            _ => {
                if let Some(l) = rest.strip_prefix("labels.") {
                    self.labels.get(l).map(String::as_str)
                } else if let Some(a) = rest.strip_prefix("attr.") {
                    self.attributes.get(a).map(String::as_str)
                } else {
                    self.attributes.get(rest).map(String::as_str)
                }
            }
        }
    }

    /// Whether new allocations may be placed here.
    pub fn schedulable(&self) -> bool {
        self.status == NodeStatus::Ready && self.eligible && !self.draining
    }

    /// Status as users see it (`ready|down|draining|ineligible`).
    pub fn display_status(&self) -> &'static str {
        match (self.status, self.draining, self.eligible) {
            (NodeStatus::Down, _, _) => "down",
            (NodeStatus::Initializing, _, _) => "initializing",
            (NodeStatus::Ready, true, _) => "draining",
            (NodeStatus::Ready, false, false) => "ineligible",
            (NodeStatus::Ready, false, true) => "ready",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Initializing,
    Ready,
    Down,
}

/// What an agent sends when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// Kept in the agent's data dir so a restarted agent is the same node.
    pub id: String,
    pub name: String,
    pub address: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub drivers: Vec<String>,
    pub port_range: (u16, u16),
}

/// The server's answer to a registration or heartbeat: when to beat next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub heartbeat_ttl_ms: u64,
    pub index: Index,
}
