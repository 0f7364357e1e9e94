//! The job spec: the validated form every other crate uses. Parsing and
//! validation (with file:line:column and field paths) live in [`parse`].
//!
//! The seed form (top-level `image`, `env`, `count`, ...) is turned into one
//! group named after the job with one task of the same name, so the rest of
//! corral only ever sees the full form.

pub(crate) mod claims;
mod error;
mod parse;
pub mod render;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{Bytes, MilliCpu, Millis};

pub use claims::{
    Claim, ServiceClaim, SpecLocation, clash_error, clashes, route_claims, spec_claims,
};
pub use error::{SpecError, SpecErrors};
pub use parse::{
    LocatedJob, MAX_COUNT, NOT_YET_FIELDS, SEED_GROUP_FIELDS, SEED_TASK_FIELDS, SPEC_BLOCKS,
    STDIN_NAME, SourceFormat, SpecBlock, host_problem, name_problem, parse_jobs,
    parse_jobs_located,
};

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
    /// What happens once the restart policy gave up on an allocation.
    #[serde(default)]
    pub reschedule: ReschedulePolicy,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    #[serde(default)]
    pub update: UpdatePolicy,
    #[serde(default)]
    pub network: NetworkMode,
    /// Endpoints of this group, each with its health checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Storage of the group, mounted into every task (docs/VOLUMES.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
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
        r.disk.0 = self.volumes.iter().map(|v| v.size.0).sum();
        r
    }

    /// The id of volume `v` as allocation `index` of `job` uses it:
    /// `<job>.<volume>` or, with `per_alloc`, `<job>.<volume>.<index>`.
    /// Names hold no `.` (nor `/`), so ids are unique and file-system safe.
    pub fn volume_id(job: &str, v: &VolumeSpec, index: u32) -> String {
        if v.per_alloc {
            format!("{job}.{}.{index}", v.name)
        } else {
            format!("{job}.{}", v.name)
        }
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
        // Routes are the routers' business: the tasks run as they were.
        for s in a.services.iter_mut().chain(b.services.iter_mut()) {
            s.route = None;
        }
        // A volume grows under a running task, and its snapshot schedule
        // is the agent's business: neither restarts anything.
        for v in a.volumes.iter_mut().chain(b.volumes.iter_mut()) {
            v.size = Bytes(0);
            v.snapshots = None;
            v.backup = None;
            v.on_node_loss = OnNodeLoss::default();
            v.node_loss_grace = Millis(0);
            v.hooks = None;
        }
        a != b
    }

    /// The environment variable telling a task its port `name`
    /// (`web-ui` → `CORRAL_PORT_WEB_UI`). Names that give the same variable
    /// are refused in one group.
    pub fn port_env_var(name: &str) -> String {
        format!("CORRAL_PORT_{}", name.to_uppercase().replace('-', "_"))
    }

    /// The key of a task's port in `Allocation::ports`: `<task>.<name>`.
    pub fn port_key(task: &str, name: &str) -> String {
        format!("{task}.{name}")
    }

    /// Named ports of every task, in a stable order.
    pub fn ports(&self) -> impl Iterator<Item = (&str, &str, u16)> {
        self.tasks.iter().flat_map(|t| {
            t.ports
                .iter()
                .map(move |(name, port)| (t.name.as_str(), name.as_str(), *port))
        })
    }

    /// Every check of the group with the task it belongs to: service
    /// checks first (in spec order), then task checks.
    pub fn checks(&self) -> Vec<(&ServiceSpec, &CheckSpec)> {
        self.services
            .iter()
            .flat_map(|s| s.checks.iter().map(move |c| (s, c)))
            .collect()
    }

    /// Whether any service or task of the group declares a check.
    pub fn has_checks(&self) -> bool {
        self.services.iter().any(|s| !s.checks.is_empty())
            || self.tasks.iter().any(|t| !t.checks.is_empty())
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
    /// Checks declared on the task itself (`check:` / `checks:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// How much of the task's stdout and stderr its node keeps.
    #[serde(default, skip_serializing_if = "LogPolicy::is_default")]
    pub logs: LogPolicy,
}

/// Rotation of a task's log on its node: the file is rotated when it
/// reaches `max_size`, and at most `max_files` files (the current one
/// included) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    pub max_size: Bytes,
    pub max_files: u32,
}

impl LogPolicy {
    /// The smallest `max_size` a spec may ask for.
    pub const MIN_SIZE: Bytes = Bytes(1000);

    pub fn is_default(&self) -> bool {
        *self == LogPolicy::default()
    }
}

impl Default for LogPolicy {
    /// 10 MB per file, 5 files.
    fn default() -> Self {
        LogPolicy {
            max_size: Bytes(10_000_000),
            max_files: 5,
        }
    }
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
    pub const ALL: [DriverKind; 2] = [DriverKind::Container, DriverKind::Exec];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Container => "container",
            DriverKind::Exec => "exec",
        }
    }

    /// The driver named `name`, as written in specs and configs.
    pub fn parse(name: &str) -> Option<DriverKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
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
    /// Volume space: an allocation reserves the size of its volumes, a
    /// node offers what its volumes directory holds (0 when it offers none).
    #[serde(default, skip_serializing_if = "Bytes::is_zero")]
    pub disk: Bytes,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: MilliCpu(100),
            memory: Bytes(256 << 20),
            disk: Bytes(0),
        }
    }
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: MilliCpu(0),
        memory: Bytes(0),
        disk: Bytes(0),
    };
}

/// Storage of a group (`volume:` / `volumes:`): made on first placement,
/// kept when the job stops, moved with its allocation to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    /// The limit, enforced by the provider where it can (see docs/VOLUMES.md).
    pub size: Bytes,
    /// Where every task of the group sees it (absolute, inside the container).
    pub mount: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// One volume per slot (`data-0`, `data-1`, ...) instead of one for the group.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_alloc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotPolicy>,
    /// Scheduled restic backups to a target of the server config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupPolicy>,
    /// When the node holding it is lost: restore the newest backup on
    /// another node after `node_loss_grace`, or wait for the node.
    #[serde(default, skip_serializing_if = "OnNodeLoss::is_default")]
    pub on_node_loss: OnNodeLoss,
    #[serde(default = "default_node_loss_grace")]
    pub node_loss_grace: Millis,
    /// Commands run in a task around each snapshot (and the snapshot a
    /// backup is made from), for application-level consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<SnapshotHooks>,
}

/// `hooks: {pre_snapshot: [...], post_snapshot: [...], timeout: 30s, task: db}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_snapshot: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_snapshot: Vec<String>,
    pub timeout: Millis,
    /// The task they run in (the group's first task when not given).
    pub task: String,
}

pub fn default_node_loss_grace() -> Millis {
    Millis(10 * 60_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNodeLoss {
    #[default]
    Restore,
    Wait,
}

impl OnNodeLoss {
    pub fn is_default(&self) -> bool {
        *self == OnNodeLoss::Restore
    }
}

/// `backup: {every: 24h, keep: {daily: 7, weekly: 4}, to: nas}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    pub every: Millis,
    #[serde(default)]
    pub keep: BackupKeep,
    /// A backup target named in the server config (`[backup_targets.NAME]`).
    pub to: String,
}

/// restic's retention (`forget --keep-*`); none given keeps the last 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackupKeep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
}

impl BackupKeep {
    pub fn is_empty(&self) -> bool {
        *self == BackupKeep::default()
    }
}

impl VolumeSpec {
    /// The smallest volume: the btrfs image provider cannot format less.
    pub const MIN_SIZE: Bytes = Bytes(128 << 20);
}

/// Scheduled snapshots: one every `every`, the newest `keep` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    pub every: Millis,
    pub keep: u32,
}

/// What happens when a task exits. Nomad's semantics: up to `attempts`
/// restarts within `interval`, the first after `delay` and each next one
/// after twice the last (capped; see `corral_agent::restart`); then `fail`
/// marks the allocation failed, `delay` waits for the rest of the interval
/// and starts counting again.
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

/// Once the restart policy gave up on an allocation (it failed), a
/// replacement is placed after `delay` (growing by `delay_function` up to
/// `max_delay` with each reschedule), preferring another node; without
/// `unlimited`, at most `attempts` times within `interval`. Nomad's
/// semantics and its service-job defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReschedulePolicy {
    pub attempts: u32,
    pub interval: Millis,
    pub delay: Millis,
    pub delay_function: DelayFunction,
    pub max_delay: Millis,
    pub unlimited: bool,
}

impl Default for ReschedulePolicy {
    fn default() -> Self {
        ReschedulePolicy {
            attempts: 0,
            interval: Millis(0),
            delay: Millis::from_secs(30),
            delay_function: DelayFunction::Exponential,
            max_delay: Millis::from_secs(3600),
            unlimited: true,
        }
    }
}

impl ReschedulePolicy {
    /// The wait before reschedule number `n + 1`, after `n` earlier ones:
    /// `delay`, then doubled (exponential) or the sum of the two before
    /// (fibonacci) each time, at most `max_delay`.
    pub fn delay_after(&self, n: usize) -> Millis {
        let d = self.delay.0;
        let grown = match self.delay_function {
            DelayFunction::Constant => d,
            DelayFunction::Exponential => {
                d.saturating_mul(1u64.checked_shl(n.min(63) as u32).unwrap_or(u64::MAX))
            }
            DelayFunction::Fibonacci => {
                let (mut a, mut b) = (d, d);
                for _ in 1..n.min(100) {
                    (a, b) = (b, a.saturating_add(b));
                }
                b
            }
        };
        Millis(grown.min(self.max_delay.0.max(d)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DelayFunction {
    Constant,
    #[default]
    Exponential,
    Fibonacci,
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
    #[serde(default)]
    pub health_check: HealthCheckMode,
}

/// What makes a new allocation healthy during a deployment (Nomad's
/// `health_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckMode {
    /// Every task running and every check passing (tasks running when the
    /// group has no checks) for `min_healthy_time`.
    #[default]
    Checks,
    /// Every task running for `min_healthy_time`; checks are ignored.
    TaskStates,
    /// Health is set through the API only.
    Manual,
}

impl HealthCheckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckMode::Checks => "checks",
            HealthCheckMode::TaskStates => "task_states",
            HealthCheckMode::Manual => "manual",
        }
    }
}

/// A named endpoint of a group: a task's port, with health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// A port name declared by one of the group's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// `type:` http (default) or tcp: how routers proxy it.
    #[serde(default, skip_serializing_if = "ServiceKind::is_http")]
    pub kind: ServiceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// Time between the endpoint leaving the catalog and the task's stop
    /// signal, so routers stop sending it requests first (Nomad's name).
    #[serde(default = "ServiceSpec::default_shutdown_delay")]
    pub shutdown_delay: Millis,
}

impl ServiceSpec {
    /// Long enough for every router and node DNS to see the endpoint
    /// leave (they follow the catalog with blocking queries, well under
    /// a second) and for short in-flight requests to finish.
    pub const DEFAULT_SHUTDOWN_DELAY: Millis = Millis(2_000);

    fn default_shutdown_delay() -> Millis {
        Self::DEFAULT_SHUTDOWN_DELAY
    }
}

/// How routers proxy a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// HTTP: routed by host and path, gets `<service>.<domain>`.
    #[default]
    Http,
    /// Raw TCP on a router port (`route: {port: 5432}`).
    Tcp,
}

impl ServiceKind {
    pub fn is_http(&self) -> bool {
        *self == ServiceKind::Http
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Http => "http",
            ServiceKind::Tcp => "tcp",
        }
    }
}

/// A service's `route:`. HTTP: `hosts` and path prefixes (any host when
/// `hosts` is empty and `paths` given); TCP: the router `port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One health check. Runs on the agent; its status is reported with the
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Unique within the allocation; defaults to `<service or task>-<type>`
    /// (with `-N` appended when several would clash).
    pub name: String,
    pub kind: CheckKind,
    /// Port name to probe (http, tcp); defaults to the service's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Task an `exec` check runs in (and whose port it probes); defaults to
    /// the task declaring the port, or the group's only task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub interval: Millis,
    pub timeout: Millis,
    /// Consecutive passes before the check counts as passing.
    pub success_threshold: u32,
    /// Consecutive failures before the check counts as failing.
    pub failure_threshold: u32,
    /// Time after the task starts during which failures do not count.
    pub grace: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_restart: Option<CheckRestart>,
}

impl CheckSpec {
    pub const DEFAULT_INTERVAL: Millis = Millis(10_000);
    pub const DEFAULT_TIMEOUT: Millis = Millis(2_000);
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CheckKind {
    Http {
        path: String,
        #[serde(default = "default_http_method")]
        method: String,
        /// Accepted status codes, inclusive (default 200..=399).
        status: (u16, u16),
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    Tcp,
    Exec {
        command: Vec<String>,
    },
}

fn default_http_method() -> String {
    "GET".to_string()
}

impl CheckKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// Restart the check's task after `limit` consecutive failures (counted
/// after `grace` from the task's start), as Nomad's `check_restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRestart {
    pub limit: u32,
    pub grace: Millis,
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
            health_check: HealthCheckMode::Checks,
        }
    }
}
