//! The job spec: the validated form every other crate uses. Parsing and
//! validation (with file:line:column and field paths) live in [`parse`].
//!
//! The seed form (top-level `image`, `env`, `count`, ...) is turned into one
//! group named after the job with one task of the same name, so the rest of
//! corral only ever sees the full form.

mod error;
mod parse;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{Bytes, MilliCpu, Millis};

pub use error::{SpecError, SpecErrors};
pub use parse::{SourceFormat, parse_jobs};

/// A validated job: at least one group, every name unique, every count >= 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// `service` (default) keeps `count` copies running.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    /// Job-level default; a group's own `update` wins.
    #[serde(default)]
    pub update: UpdatePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: String,
    pub count: u32,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    #[serde(default)]
    pub update: UpdatePolicy,
    #[serde(default)]
    pub network: NetworkMode,
    pub tasks: Vec<TaskSpec>,
}

impl GroupSpec {
    /// Total resources one allocation of this group asks for.
    pub fn resources(&self) -> Resources {
        let mut r = Resources::ZERO;
        for t in &self.tasks {
            r.cpu.0 += t.resources.cpu.0;
            r.memory.0 += t.resources.memory.0;
        }
        r
    }

    /// Whether moving an allocation from `self` to `other` needs a new
    /// allocation (anything but `count` changed) or can be done in place.
    pub fn needs_replacement(&self, other: &GroupSpec) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.count = 0;
        b.count = 0;
        // The update policy shapes the rollout, not the running allocation.
        a.update = UpdatePolicy::default();
        b.update = UpdatePolicy::default();
        a != b
    }

    /// Named ports of every task, in a stable order.
    pub fn ports(&self) -> impl Iterator<Item = (&str, &str, u16)> {
        self.tasks.iter().flat_map(|t| {
            t.ports
                .iter()
                .map(move |(name, port)| (t.name.as_str(), name.as_str(), *port))
        })
    }

    pub fn distinct_hosts(&self) -> bool {
        self.constraints
            .iter()
            .any(|c| c.op == ConstraintOp::DistinctHosts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Own network namespace (a pod), ports mapped from the host range.
    #[default]
    Bridge,
    /// The node's network namespace; ports are used as written.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub driver: DriverKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replaces the image entrypoint (container) or is the program and its
    /// first arguments (exec).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    /// Port name -> port the task listens on.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default = "default_kill_timeout")]
    pub kill_timeout: Millis,
    /// Task-level override of the group's restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    #[serde(default)]
    pub security: SecuritySpec,
}

pub fn default_kill_timeout() -> Millis {
    Millis::from_secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Container,
    Exec,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Container => "container",
            DriverKind::Exec => "exec",
        }
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    #[default]
    IfNotPresent,
    Always,
}

/// Container security options. Defaults are the safe ones: RuntimeDefault
/// seccomp, the runtime's default capability set, no-new-privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SecuritySpec {
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub read_only_rootfs: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
}

/// Resources one task asks for. Defaults follow Nomad (100 MHz ~ 100m cpu,
/// 300 MB memory) so a spec without `resources` still gets a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: MilliCpu,
    pub memory: Bytes,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: MilliCpu(100),
            memory: Bytes(256 << 20),
        }
    }
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: MilliCpu(0),
        memory: Bytes(0),
    };
}

/// What happens when a task exits. Nomad's semantics: up to `attempts`
/// restarts within `interval`, each after `delay` (doubled each time in
/// `delay` mode); then `fail` marks the allocation failed, `delay` waits for
/// the rest of the interval and starts counting again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub interval: Millis,
    pub delay: Millis,
    pub mode: RestartMode,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // Nomad's service-job defaults.
        RestartPolicy {
            attempts: 2,
            interval: Millis::from_secs(30 * 60),
            delay: Millis::from_secs(15),
            mode: RestartMode::Fail,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    #[default]
    Fail,
    Delay,
}

/// A placement rule on node attributes and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `node.labels.zone`, `node.attr.os`, `node.name`, ... Empty for
    /// `distinct_hosts`.
    #[serde(default)]
    pub attr: String,
    pub op: ConstraintOp,
    /// One value; for `in`, the accepted values.
    #[serde(default)]
    pub values: Vec<String>,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.op {
            ConstraintOp::DistinctHosts => write!(f, "distinct_hosts"),
            op => write!(f, "{} {} {}", self.attr, op.as_str(), self.values.join(",")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "regexp")]
    Regexp,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "distinct_hosts")]
    DistinctHosts,
}

impl ConstraintOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintOp::Eq => "=",
            ConstraintOp::Ne => "!=",
            ConstraintOp::Regexp => "regexp",
            ConstraintOp::In => "in",
            ConstraintOp::DistinctHosts => "distinct_hosts",
        }
    }
}

/// Spread allocations evenly over the values of a node attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    pub attr: String,
}

/// Rolling update policy (Nomad's `update` block and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    pub max_parallel: u32,
    pub min_healthy_time: Millis,
    pub healthy_deadline: Millis,
    pub progress_deadline: Millis,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub canary: u32,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_parallel: 1,
            min_healthy_time: Millis::from_secs(10),
            healthy_deadline: Millis::from_secs(300),
            progress_deadline: Millis::from_secs(600),
            auto_revert: false,
            auto_promote: false,
            canary: 0,
        }
    }
}
