//! The in-memory indexed state. Persistent maps make `clone()` O(1), so a
//! snapshot for a scheduler worker costs nothing and never changes under it.

use std::sync::Arc;

use corral_scheduler::StateView;
use corral_types::{Alert, Allocation, Deployment, EvalStatus, Evaluation, Index, Job, Node};
use imbl::OrdMap;

#[derive(Clone, Default)]
pub struct State {
    pub(crate) index: Index,
    /// Every stored version, by (name, version).
    pub(crate) job_versions: OrdMap<(String, u64), Arc<Job>>,
    /// Latest version per job name.
    pub(crate) jobs: OrdMap<String, Arc<Job>>,
    pub(crate) allocs: OrdMap<String, Arc<Allocation>>,
    // The secondary indexes hold the allocations themselves, not ids: the
    // scheduler reads a node's allocations for every node it considers,
    // and a second lookup per allocation was most of its time.
    pub(crate) allocs_by_job: OrdMap<String, OrdMap<String, Arc<Allocation>>>,
    pub(crate) allocs_by_node: OrdMap<String, OrdMap<String, Arc<Allocation>>>,
    pub(crate) nodes: OrdMap<String, Arc<Node>>,
    pub(crate) evals: OrdMap<String, Arc<Evaluation>>,
    pub(crate) deployments: OrdMap<String, Arc<Deployment>>,
    /// Deployment ids per job, by (create order, id).
    pub(crate) deployments_by_job: OrdMap<String, OrdMap<(Index, String), Arc<Deployment>>>,
    /// Alerts (firing and recently resolved), by id.
    pub(crate) alerts: OrdMap<String, Arc<Alert>>,
    /// Which events the store holds (see `crate::events`).
    pub(crate) events: crate::events::EventSpan,
}

impl State {
    pub fn index(&self) -> Index {
        self.index
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Arc<Job>> {
        self.jobs.values()
    }

    pub fn job(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.get(name)
    }

    /// Every version of a job, oldest first.
    pub fn job_versions(&self, name: &str) -> Vec<Arc<Job>> {
        self.job_versions
            .range((name.to_string(), 0)..=(name.to_string(), u64::MAX))
            .map(|(_, j)| j.clone())
            .collect()
    }

    pub fn alloc(&self, id: &str) -> Option<&Arc<Allocation>> {
        self.allocs.get(id)
    }

    pub fn allocs(&self) -> impl Iterator<Item = &Arc<Allocation>> {
        self.allocs.values()
    }

    pub fn job_allocs(&self, job: &str) -> Vec<&Arc<Allocation>> {
        self.allocs_by_job
            .get(job)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    pub fn node_allocs(&self, node: &str) -> Vec<&Arc<Allocation>> {
        self.allocs_by_node
            .get(node)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    pub fn nodes_iter(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    pub fn node_by_id(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.get(id)
    }

    pub fn eval(&self, id: &str) -> Option<&Arc<Evaluation>> {
        self.evals.get(id)
    }

    pub fn evals(&self) -> impl Iterator<Item = &Arc<Evaluation>> {
        self.evals.values()
    }

    /// Evaluations that still need a worker (pending) or capacity (blocked).
    pub fn open_evals(&self) -> Vec<Arc<Evaluation>> {
        self.evals
            .values()
            .filter(|e| matches!(e.status, EvalStatus::Pending | EvalStatus::Blocked))
            .cloned()
            .collect()
    }

    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.get(id)
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.deployments.values()
    }

    /// A job's deployments, oldest first.
    pub fn job_deployments(&self, job: &str) -> Vec<&Arc<Deployment>> {
        self.deployments_by_job
            .get(job)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// A job's newest deployment.
    pub fn latest_deployment(&self, job: &str) -> Option<&Arc<Deployment>> {
        self.deployments_by_job
            .get(job)
            .and_then(|m| m.values().next_back())
    }

    pub fn alert(&self, id: &str) -> Option<&Arc<Alert>> {
        self.alerts.get(id)
    }

    /// Every stored alert (firing and recently resolved), by id.
    pub fn alerts(&self) -> impl Iterator<Item = &Arc<Alert>> {
        self.alerts.values()
    }

    /// The first and last event index the store holds (0 when none).
    pub fn event_span(&self) -> crate::events::EventSpan {
        self.events
    }

    // Mutators used by StateStore only, after the write is durable.

    pub(crate) fn put_alert(&mut self, a: Alert) {
        self.alerts.insert(a.id.clone(), Arc::new(a));
    }

    pub(crate) fn delete_alert(&mut self, id: &str) {
        self.alerts.remove(id);
    }

    pub(crate) fn put_deployment(&mut self, d: Deployment) {
        let d = Arc::new(d);
        self.deployments_by_job
            .entry(d.job.clone())
            .or_default()
            .insert((d.create_index, d.id.clone()), d.clone());
        self.deployments.insert(d.id.clone(), d);
    }

    pub(crate) fn delete_deployment(&mut self, id: &str) {
        if let Some(old) = self.deployments.remove(id) {
            let empty = match self.deployments_by_job.get_mut(&old.job) {
                Some(m) => {
                    m.remove(&(old.create_index, old.id.clone()));
                    m.is_empty()
                }
                None => false,
            };
            if empty {
                self.deployments_by_job.remove(&old.job);
            }
        }
    }

    pub(crate) fn put_job(&mut self, job: Job) {
        let job = Arc::new(job);
        let latest = self
            .jobs
            .get(&job.name)
            .is_none_or(|cur| cur.version <= job.version);
        if latest {
            self.jobs.insert(job.name.clone(), job.clone());
        }
        self.job_versions
            .insert((job.name.clone(), job.version), job);
    }

    pub(crate) fn delete_job(&mut self, name: &str) {
        self.jobs.remove(name);
        for j in self.job_versions(name) {
            self.job_versions.remove(&(j.name.clone(), j.version));
        }
    }

    pub(crate) fn put_alloc(&mut self, alloc: Allocation) {
        if let Some(old) = self.allocs.get(&alloc.id).cloned()
            && old.node_id != alloc.node_id
        {
            remove_index(&mut self.allocs_by_node, &old.node_id, &old.id);
        }
        let alloc = Arc::new(alloc);
        self.allocs_by_job
            .entry(alloc.job.clone())
            .or_default()
            .insert(alloc.id.clone(), alloc.clone());
        self.allocs_by_node
            .entry(alloc.node_id.clone())
            .or_default()
            .insert(alloc.id.clone(), alloc.clone());
        self.allocs.insert(alloc.id.clone(), alloc);
    }

    pub(crate) fn delete_alloc(&mut self, id: &str) {
        if let Some(old) = self.allocs.remove(id) {
            remove_index(&mut self.allocs_by_job, &old.job, id);
            remove_index(&mut self.allocs_by_node, &old.node_id, id);
        }
    }

    pub(crate) fn put_node(&mut self, node: Node) {
        self.nodes.insert(node.id.clone(), Arc::new(node));
    }

    pub(crate) fn delete_node(&mut self, id: &str) {
        self.nodes.remove(id);
    }

    pub(crate) fn put_eval(&mut self, eval: Evaluation) {
        self.evals.insert(eval.id.clone(), Arc::new(eval));
    }

    pub(crate) fn delete_eval(&mut self, id: &str) {
        self.evals.remove(id);
    }
}

fn remove_index(index: &mut OrdMap<String, OrdMap<String, Arc<Allocation>>>, key: &str, id: &str) {
    let empty = match index.get_mut(key) {
        Some(set) => {
            set.remove(id);
            set.is_empty()
        }
        None => false,
    };
    if empty {
        index.remove(key);
    }
}

impl StateView for State {
    fn index(&self) -> Index {
        self.index
    }

    fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.get(name).map(|j| j.as_ref())
    }

    fn job_version(&self, name: &str, version: u64) -> Option<&Job> {
        self.job_versions
            .get(&(name.to_string(), version))
            .map(|j| j.as_ref())
    }

    fn allocs_by_job(&self, job: &str) -> Vec<&Allocation> {
        self.job_allocs(job)
            .into_iter()
            .map(|a| a.as_ref())
            .collect()
    }

    fn allocs_by_node(&self, node_id: &str) -> Vec<&Allocation> {
        self.node_allocs(node_id)
            .into_iter()
            .map(|a| a.as_ref())
            .collect()
    }

    fn nodes(&self) -> Vec<&Node> {
        self.nodes.values().map(|n| n.as_ref()).collect()
    }

    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id).map(|n| n.as_ref())
    }

    fn latest_deployment(&self, job: &str) -> Option<&Deployment> {
        State::latest_deployment(self, job).map(|d| d.as_ref())
    }
}
