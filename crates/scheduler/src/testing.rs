//! Test support (the `testing` feature): an in-memory [`StateView`] over
//! vectors, a plan applier that behaves like the store's, and terse
//! builders for nodes, jobs, groups and allocations.

use std::collections::BTreeMap;

use corral_types::units::{Bytes, MilliCpu};
use corral_types::{
    Allocation, ClientStatus, Constraint, ConstraintOp, Deployment, DesiredStatus, DriverKind,
    EvalStatus, EvalTrigger, Evaluation, GroupSpec, Index, Job, JobSpec, NetworkMode, Node,
    NodeStatus, Plan, Resources, Spread, TaskSpec, UnixMillis, UpdatePolicy,
};

use crate::{PlanContext, SchedulerConfig, StateView};

pub const MB: u64 = 1 << 20;

/// Cluster state as plain vectors.
#[derive(Debug, Clone, Default)]
pub struct MemState {
    pub index: Index,
    /// Every version of every job.
    pub jobs: Vec<Job>,
    pub allocs: Vec<Allocation>,
    pub nodes: Vec<Node>,
    /// In creation order; the last one of a job is its latest.
    pub deployments: Vec<Deployment>,
    pub volumes: Vec<corral_types::Volume>,
}

impl StateView for MemState {
    fn index(&self) -> Index {
        self.index
    }
    fn alloc(&self, id: &str) -> Option<&Allocation> {
        MemState::alloc(self, id)
    }
    fn job(&self, name: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .filter(|j| j.name == name)
            .max_by_key(|j| j.version)
    }
    fn job_version(&self, name: &str, version: u64) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.name == name && j.version == version)
    }
    fn allocs_by_job(&self, job: &str) -> Vec<&Allocation> {
        self.allocs.iter().filter(|a| a.job == job).collect()
    }
    fn allocs_by_node(&self, node_id: &str) -> Vec<&Allocation> {
        self.allocs
            .iter()
            .filter(|a| a.node_id == node_id)
            .collect()
    }
    fn nodes(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.iter().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
    fn latest_deployment(&self, job: &str) -> Option<&Deployment> {
        self.deployments.iter().rev().find(|d| d.job == job)
    }
    fn volume(&self, id: &str) -> Option<&corral_types::Volume> {
        self.volumes.iter().find(|v| v.id == id)
    }
}

impl MemState {
    pub fn with_nodes(nodes: impl IntoIterator<Item = Node>) -> Self {
        MemState {
            index: 1,
            nodes: nodes.into_iter().collect(),
            ..MemState::default()
        }
    }

    pub fn add_job(&mut self, job: Job) {
        self.jobs.push(job);
    }

    pub fn alloc(&self, id: &str) -> Option<&Allocation> {
        self.allocs.iter().find(|a| a.id == id)
    }

    pub fn node_mut(&mut self, id: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Live allocations of a job's group.
    pub fn live(&self, job: &str, group: &str) -> Vec<&Allocation> {
        let mut v: Vec<&Allocation> = self
            .allocs
            .iter()
            .filter(|a| a.job == job && a.group == group && a.is_live())
            .collect();
        v.sort_by_key(|a| a.index);
        v
    }

    /// Commit a plan as the store would, new allocations getting `status`
    /// (and, when running under a deployment, reported healthy at once).
    pub fn apply(&mut self, plan: &Plan, status: ClientStatus) {
        self.index += 1;
        for d in &plan.deployments {
            let mut d = d.clone();
            d.modify_index = self.index;
            match self.deployments.iter_mut().find(|x| x.id == d.id) {
                Some(x) => *x = d,
                None => {
                    d.create_index = self.index;
                    self.deployments.push(d);
                }
            }
        }
        for s in &plan.stop {
            if let Some(a) = self.allocs.iter_mut().find(|a| a.id == s.id) {
                a.desired = DesiredStatus::Stop;
                a.desired_reason = s.reason.clone();
                if let Some(c) = s.client {
                    a.client = c;
                }
                a.modify_index = self.index;
            }
        }
        for u in &plan.in_place {
            if let Some(a) = self.allocs.iter_mut().find(|a| a.id == u.id) {
                u.apply_to(a);
                a.modify_index = self.index;
            }
        }
        for a in &plan.place {
            let mut a = a.clone();
            a.client = status;
            if status == ClientStatus::Running && a.deployment_id.is_some() {
                a.health = Some(corral_types::AllocHealth {
                    healthy: true,
                    at: 1_000,
                    message: String::new(),
                });
            }
            a.create_index = self.index;
            a.modify_index = self.index;
            self.allocs.push(a);
        }
    }

    /// Schedule `job` with the default config, ids `<eval>-1`, `<eval>-2`...
    pub fn schedule(&self, eval_id: &str, job: &str) -> Plan {
        self.schedule_with(&SchedulerConfig::default(), eval_id, job)
    }

    pub fn schedule_with(&self, config: &SchedulerConfig, eval_id: &str, job: &str) -> Plan {
        self.schedule_full(config, eval_id, job, 1_000)
    }

    /// Schedule `job` at time `now`.
    pub fn schedule_at(&self, eval_id: &str, job: &str, now: UnixMillis) -> Plan {
        self.schedule_full(&SchedulerConfig::default(), eval_id, job, now)
    }

    fn schedule_full(
        &self,
        config: &SchedulerConfig,
        eval_id: &str,
        job: &str,
        now: UnixMillis,
    ) -> Plan {
        let mut next = ids(eval_id);
        let mut ctx = PlanContext {
            new_id: &mut next,
            now,
        };
        crate::schedule_with(config, self, &eval(eval_id, job), &mut ctx)
    }
}

/// Sequential ids `<prefix>-1`, `<prefix>-2`, ...
pub fn ids(prefix: &str) -> impl FnMut() -> String + use<> {
    let prefix = prefix.to_owned();
    let mut n = 0u64;
    move || {
        n += 1;
        format!("{prefix}-{n}")
    }
}

pub fn eval(id: &str, job: &str) -> Evaluation {
    Evaluation {
        wait_until: None,
        id: id.to_owned(),
        job: job.to_owned(),
        trigger: EvalTrigger::JobRegister,
        status: EvalStatus::Pending,
        status_description: String::new(),
        failed_placements: Vec::new(),
        snapshot_index: 0,
        created_at: 0,
        modified_at: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// A ready, eligible node with 4 cores, 8 GiB, both drivers and ports
/// 20000-20099.
pub fn node(id: &str) -> NodeBuilder {
    NodeBuilder(Node {
        id: id.to_owned(),
        name: id.to_owned(),
        address: format!("http://{id}:7071"),
        status: NodeStatus::Ready,
        eligible: true,
        draining: false,
        drain_deadline: None,
        resources: Resources {
            disk: Default::default(),
            cpu: MilliCpu(4000),
            memory: Bytes(8192 * MB),
        },
        attributes: BTreeMap::from([("os".to_owned(), "linux".to_owned())]),
        labels: BTreeMap::new(),
        drivers: vec!["container".to_owned(), "exec".to_owned()],
        port_range: (20000, 20099),
        last_heartbeat: 0,
        registered_at: 0,
        down_since: None,
        class: 0,
        create_index: 0,
        modify_index: 0,
    })
}

pub struct NodeBuilder(pub Node);

impl NodeBuilder {
    pub fn cpu(mut self, millicores: u64) -> Self {
        self.0.resources.cpu = MilliCpu(millicores);
        self
    }
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.0.resources.memory = Bytes(mb * MB);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.labels.insert(k.to_owned(), v.to_owned());
        self
    }
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.0.attributes.insert(k.to_owned(), v.to_owned());
        self
    }
    pub fn status(mut self, s: NodeStatus) -> Self {
        self.0.status = s;
        self
    }
    pub fn eligible(mut self, e: bool) -> Self {
        self.0.eligible = e;
        self
    }
    pub fn draining(mut self, d: bool) -> Self {
        self.0.draining = d;
        self
    }
    pub fn drivers(mut self, d: &[&str]) -> Self {
        self.0.drivers = d.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    pub fn ports(mut self, lo: u16, hi: u16) -> Self {
        self.0.port_range = (lo, hi);
        self
    }
    /// Volume space the node offers.
    pub fn disk_mb(mut self, mb: u64) -> Self {
        self.0.resources.disk = Bytes(mb * MB);
        self
    }
    pub fn build(mut self) -> Node {
        self.0.class = self.0.computed_class();
        self.0
    }
}

/// A container task with 100m cpu and 256 MiB.
pub fn task(name: &str) -> TaskSpec {
    TaskSpec {
        name: name.to_owned(),
        driver: DriverKind::Container,
        image: Some("org/app:1.0".to_owned()),
        command: Vec::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        workdir: None,
        resources: Resources {
            disk: Default::default(),
            cpu: MilliCpu(100),
            memory: Bytes(256 * MB),
        },
        ports: BTreeMap::new(),
        kill_timeout: corral_types::spec::default_kill_timeout(),
        restart: None,
        pull_policy: Default::default(),
        security: Default::default(),
        checks: Vec::new(),
        logs: Default::default(),
    }
}

/// A group with one task named like the group.
pub fn group(name: &str, count: u32) -> GroupBuilder {
    GroupBuilder(GroupSpec {
        reschedule: Default::default(),
        volumes: Default::default(),
        name: name.to_owned(),
        count,
        restart: Default::default(),
        constraints: Vec::new(),
        spread: None,
        update: UpdatePolicy::default(),
        network: NetworkMode::Bridge,
        services: Vec::new(),
        tasks: vec![task(name)],
    })
}

/// Edits apply to the first task unless said otherwise.
pub struct GroupBuilder(pub GroupSpec);

impl GroupBuilder {
    fn first(&mut self) -> &mut TaskSpec {
        if self.0.tasks.is_empty() {
            self.0.tasks.push(task(&self.0.name));
        }
        &mut self.0.tasks[0]
    }
    pub fn cpu(mut self, millicores: u64) -> Self {
        self.first().resources.cpu = MilliCpu(millicores);
        self
    }
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.first().resources.memory = Bytes(mb * MB);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.first().env.insert(k.to_owned(), v.to_owned());
        self
    }
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.first().ports.insert(name.to_owned(), port);
        self
    }
    pub fn driver(mut self, d: DriverKind) -> Self {
        self.first().driver = d;
        self
    }
    pub fn task(mut self, t: TaskSpec) -> Self {
        self.0.tasks.push(t);
        self
    }
    pub fn constraint(mut self, attr: &str, op: ConstraintOp, values: &[&str]) -> Self {
        self.0.constraints.push(Constraint {
            attr: attr.to_owned(),
            op,
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }
    pub fn distinct_hosts(self) -> Self {
        self.constraint("", ConstraintOp::DistinctHosts, &[])
    }
    pub fn spread(mut self, attr: &str) -> Self {
        self.0.spread = Some(Spread {
            attr: attr.to_owned(),
        });
        self
    }
    pub fn network(mut self, mode: NetworkMode) -> Self {
        self.0.network = mode;
        self
    }
    /// A volume `name` of `mb` MiB mounted at `/name`.
    pub fn volume(mut self, name: &str, mb: u64, per_alloc: bool) -> Self {
        self.0.volumes.push(corral_types::VolumeSpec {
            hooks: Default::default(),
            name: name.to_owned(),
            size: Bytes(mb * MB),
            mount: format!("/{name}"),
            read_only: false,
            per_alloc,
            snapshots: None,
            backup: None,
            on_node_loss: Default::default(),
            node_loss_grace: corral_types::spec::default_node_loss_grace(),
        });
        self
    }
    pub fn build(self) -> GroupSpec {
        self.0
    }
}

pub fn job(name: &str, version: u64, groups: Vec<GroupSpec>) -> Job {
    Job {
        name: name.to_owned(),
        version,
        spec: JobSpec {
            name: name.to_owned(),
            groups,
            update: UpdatePolicy::default(),
        },
        stopped: false,
        stable: false,
        reverts_to: None,
        submitted_at: 0,
        claims: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// A running allocation of `job`'s group on `node`.
pub fn alloc(id: &str, job: &Job, group: &str, index: u32, node: &str) -> Allocation {
    let resources = job
        .spec
        .groups
        .iter()
        .find(|g| g.name == group)
        .map(crate::feasible::group_need)
        .unwrap_or(Resources::ZERO);
    Allocation {
        volume_sync: Default::default(),
        reschedules: Default::default(),
        id: id.to_owned(),
        job: job.name.clone(),
        job_version: job.version,
        group: group.to_owned(),
        index,
        node_id: node.to_owned(),
        resources,
        ports: BTreeMap::new(),
        previous: None,
        deployment_id: None,
        canary: false,
        desired: DesiredStatus::Run,
        desired_reason: String::new(),
        client: ClientStatus::Running,
        tasks: BTreeMap::new(),
        client_message: String::new(),
        checks: BTreeMap::new(),
        health: None,
        created_at: 0,
        modified_at: 0,
        create_index: 1,
        modify_index: 1,
    }
}

/// The record of volume `id` held by `node` (as the server keeps it once
/// an agent created it there).
pub fn volume_on(id: &str, node: &str) -> corral_types::Volume {
    corral_types::Volume {
        origin: None,
        id: id.to_owned(),
        job: String::new(),
        group: String::new(),
        name: String::new(),
        slot: None,
        size: Bytes(0),
        provider: "btrfs-image".to_owned(),
        node_id: node.to_owned(),
        generation: 1,
        alloc_id: None,
        moved_from: None,
        last_move_downtime_ms: None,
        snapshots: Vec::new(),
        backups: Vec::new(),
        backup_error: None,
        restored_from: None,
        used: None,
        created_at: 0,
        modified_at: 0,
        create_index: 0,
        modify_index: 0,
    }
}
