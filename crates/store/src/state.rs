//! The in-memory indexed state. Persistent maps make `clone()` O(1), so a
//! snapshot for a scheduler worker costs nothing and never changes under it.

use std::sync::Arc;

use corral_scheduler::StateView;
use corral_scheduler::usage::NodeUsage;
use corral_types::{
    Alert, Allocation, Deployment, EvalStatus, Evaluation, Index, Job, Node, Volume,
};
use imbl::OrdMap;

use crate::idkey::{Id, IdKey};

/// Map keys are shared strings: a write path-copies the map's nodes, and
/// copying a node of `Arc<str>` keys bumps counts where `String` keys
/// would allocate and copy each key.
pub(crate) type Key = Arc<str>;

#[derive(Clone, Default)]
pub struct State {
    pub(crate) index: Index,
    /// Every stored version, by (name, version).
    pub(crate) job_versions: OrdMap<(String, u64), Arc<Job>>,
    /// Latest version per job name.
    pub(crate) jobs: OrdMap<Key, Arc<Job>>,
    /// Allocations, evaluations and deployments are keyed by [`IdKey`]:
    /// ordered by when the id was made.
    pub(crate) allocs: OrdMap<IdKey, Arc<Allocation>>,
    // The secondary indexes hold the allocations themselves, not ids: the
    // scheduler reads a node's allocations for every node it considers,
    // and a second lookup per allocation was most of its time.
    pub(crate) allocs_by_job: AllocIndex,
    pub(crate) allocs_by_node: AllocIndex,
    /// What the live allocations on each node hold, kept as they change:
    /// placement reads it for every node it visits. A hash map: a b-tree
    /// lookup compared ~18 keys behind pointers each time (a third of the
    /// scheduler's time), and nothing iterates it in order.
    pub(crate) node_usage: imbl::HashMap<Key, Arc<NodeUsage>>,
    pub(crate) nodes: OrdMap<Key, Arc<Node>>,
    pub(crate) evals: OrdMap<IdKey, Arc<Evaluation>>,
    /// Evaluations per job: a job's blocking query looks at its own on
    /// every wake-up, not at every evaluation in the store.
    pub(crate) evals_by_job: OrdMap<Key, OrdMap<IdKey, Arc<Evaluation>>>,
    pub(crate) deployments: OrdMap<IdKey, Arc<Deployment>>,
    /// Deployment ids per job, by (create order, id).
    pub(crate) deployments_by_job: OrdMap<Key, OrdMap<(Index, String), Arc<Deployment>>>,
    /// Alerts (firing and recently resolved), by id.
    pub(crate) alerts: OrdMap<Key, Arc<Alert>>,
    /// Volumes, by id.
    pub(crate) volumes: OrdMap<Key, Arc<Volume>>,
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
        self.allocs.get(Id::new(id))
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
        self.evals.get(Id::new(id))
    }

    pub fn evals(&self) -> impl Iterator<Item = &Arc<Evaluation>> {
        self.evals.values()
    }

    /// A job's evaluations, oldest first.
    pub fn job_evals(&self, job: &str) -> Vec<&Arc<Evaluation>> {
        self.evals_by_job
            .get(job)
            .map(|m| m.values().collect())
            .unwrap_or_default()
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
        self.deployments.get(Id::new(id))
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

    pub fn volume(&self, id: &str) -> Option<&Arc<Volume>> {
        self.volumes.get(id)
    }

    /// Every volume, by id.
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<Volume>> {
        self.volumes.values()
    }

    /// The first and last event index the store holds (0 when none).
    pub fn event_span(&self) -> crate::events::EventSpan {
        self.events
    }

    // Mutators used by StateStore only, after the write is durable. Each
    // returns the record it replaced or removed and the one it stored, for
    // the commit's diff (`crate::changes`).

    pub(crate) fn put_volume(&mut self, v: Volume) -> Replaced<Volume> {
        let v = Arc::new(v);
        (
            self.volumes.insert(v.id.as_str().into(), v.clone()),
            Some(v),
        )
    }

    pub(crate) fn delete_volume(&mut self, id: &str) -> Replaced<Volume> {
        (self.volumes.remove(id), None)
    }

    pub(crate) fn put_alert(&mut self, a: Alert) -> Replaced<Alert> {
        let a = Arc::new(a);
        (self.alerts.insert(a.id.as_str().into(), a.clone()), Some(a))
    }

    pub(crate) fn delete_alert(&mut self, id: &str) -> Replaced<Alert> {
        (self.alerts.remove(id), None)
    }

    pub(crate) fn put_deployment(&mut self, d: Deployment) -> Replaced<Deployment> {
        let d = Arc::new(d);
        self.deployments_by_job
            .entry(d.job.as_str().into())
            .or_default()
            .insert((d.create_index, d.id.clone()), d.clone());
        (
            self.deployments.insert(d.id.as_str().into(), d.clone()),
            Some(d),
        )
    }

    pub(crate) fn delete_deployment(&mut self, id: &str) -> Replaced<Deployment> {
        let removed = self.deployments.remove(Id::new(id));
        if let Some(old) = &removed {
            let empty = match self.deployments_by_job.get_mut(old.job.as_str()) {
                Some(m) => {
                    m.remove(&(old.create_index, old.id.clone()));
                    m.is_empty()
                }
                None => false,
            };
            if empty {
                self.deployments_by_job.remove(old.job.as_str());
            }
        }
        (removed, None)
    }

    pub(crate) fn put_job(&mut self, job: Job) -> Replaced<Job> {
        let job = Arc::new(job);
        let latest = self
            .jobs
            .get(job.name.as_str())
            .is_none_or(|cur| cur.version <= job.version);
        if latest {
            self.jobs.insert(job.name.as_str().into(), job.clone());
        }
        let old = self
            .job_versions
            .insert((job.name.clone(), job.version), job.clone());
        (old, Some(job))
    }

    /// Every version removed.
    pub(crate) fn delete_job(&mut self, name: &str) -> Vec<Arc<Job>> {
        self.jobs.remove(name);
        let versions = self.job_versions(name);
        for j in &versions {
            self.job_versions.remove(&(j.name.clone(), j.version));
        }
        versions
    }

    pub(crate) fn put_alloc(&mut self, alloc: Allocation) -> Replaced<Allocation> {
        let old = self.allocs.get(Id::new(&alloc.id)).cloned();
        match &old {
            // An update in place (a report, most writes): usage moves only
            // if what counts changed.
            Some(old) if old.node_id == alloc.node_id && same_usage(old, &alloc) => {}
            _ => {
                if let Some(old) = &old {
                    if old.node_id != alloc.node_id {
                        remove_index(&mut self.allocs_by_node, &old.node_id, &old.id);
                    }
                    self.count_usage(old, false);
                }
                self.count_usage(&alloc, true);
            }
        }
        let alloc = Arc::new(alloc);
        let id = IdKey::from(alloc.id.as_str());
        index_insert(&mut self.allocs_by_job, &alloc.job, &id, &alloc);
        index_insert(&mut self.allocs_by_node, &alloc.node_id, &id, &alloc);
        (self.allocs.insert(id, alloc.clone()), Some(alloc))
    }

    pub(crate) fn delete_alloc(&mut self, id: &str) -> Replaced<Allocation> {
        let removed = self.allocs.remove(Id::new(id));
        if let Some(old) = &removed {
            self.count_usage(old, false);
            remove_index(&mut self.allocs_by_job, &old.job, id);
            remove_index(&mut self.allocs_by_node, &old.node_id, id);
        }
        (removed, None)
    }

    /// Add (or take off) a live allocation's share of its node's usage.
    fn count_usage(&mut self, a: &Allocation, add: bool) {
        if !a.is_live() {
            return;
        }
        let node = a.node_id.as_str();
        if !self.node_usage.contains_key(node) {
            if !add {
                return;
            }
            self.node_usage.insert(node.into(), Arc::default());
        }
        let Some(usage) = self.node_usage.get_mut(node).map(Arc::make_mut) else {
            return;
        };
        if add {
            usage.add(a, "");
        } else {
            usage.remove(a, "");
        }
    }

    pub(crate) fn put_node(&mut self, node: Node) -> Replaced<Node> {
        let node = Arc::new(node);
        (
            self.nodes.insert(node.id.as_str().into(), node.clone()),
            Some(node),
        )
    }

    pub(crate) fn delete_node(&mut self, id: &str) -> Replaced<Node> {
        (self.nodes.remove(id), None)
    }

    pub(crate) fn put_eval(&mut self, eval: Evaluation) {
        let eval = Arc::new(eval);
        let id = IdKey::from(eval.id.as_str());
        let old = self.evals.insert(id.clone(), eval.clone());
        // An evaluation never changes job, but stay right if one did.
        if let Some(old) = old.filter(|o| o.job != eval.job) {
            remove_eval_index(&mut self.evals_by_job, &old.job, &old.id);
        }
        match self.evals_by_job.get_mut(eval.job.as_str()) {
            Some(m) => {
                m.insert(id, eval);
            }
            None => {
                self.evals_by_job
                    .insert(eval.job.as_str().into(), OrdMap::unit(id, eval));
            }
        }
    }

    pub(crate) fn delete_eval(&mut self, id: &str) {
        if let Some(old) = self.evals.remove(Id::new(id)) {
            remove_eval_index(&mut self.evals_by_job, &old.job, id);
        }
    }
}

/// What a mutator replaced (or removed) and what it stored (`None`: a
/// removal).
pub(crate) type Replaced<T> = (Option<Arc<T>>, Option<Arc<T>>);

/// Whether two versions of an allocation hold the same on their node.
fn same_usage(a: &Allocation, b: &Allocation) -> bool {
    a.is_live() == b.is_live() && a.resources == b.resources && a.ports == b.ports
}

pub(crate) type AllocIndex = OrdMap<Key, OrdMap<IdKey, Arc<Allocation>>>;

/// Add an allocation to a secondary index; the outer key is only
/// allocated when the entry is new.
fn index_insert(index: &mut AllocIndex, key: &str, id: &IdKey, alloc: &Arc<Allocation>) {
    match index.get_mut(key) {
        Some(set) => {
            set.insert(id.clone(), alloc.clone());
        }
        None => {
            index.insert(key.into(), OrdMap::unit(id.clone(), alloc.clone()));
        }
    }
}

fn remove_index(index: &mut AllocIndex, key: &str, id: &str) {
    let empty = match index.get_mut(key) {
        Some(set) => {
            set.remove(Id::new(id));
            set.is_empty()
        }
        None => false,
    };
    if empty {
        index.remove(key);
    }
}

fn remove_eval_index(index: &mut OrdMap<Key, OrdMap<IdKey, Arc<Evaluation>>>, job: &str, id: &str) {
    let empty = match index.get_mut(job) {
        Some(m) => {
            m.remove(Id::new(id));
            m.is_empty()
        }
        None => false,
    };
    if empty {
        index.remove(job);
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

    fn alloc(&self, id: &str) -> Option<&Allocation> {
        self.allocs.get(Id::new(id)).map(|a| a.as_ref())
    }

    fn node_usage(&self, node_id: &str) -> NodeUsage {
        self.node_usage
            .get(node_id)
            .map(|u| (**u).clone())
            .unwrap_or_default()
    }

    fn nodes(&self) -> Vec<&Node> {
        self.nodes.values().map(|n| n.as_ref()).collect()
    }

    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id).map(|n| n.as_ref())
    }

    fn volume(&self, id: &str) -> Option<&Volume> {
        self.volumes.get(id).map(|v| v.as_ref())
    }

    fn latest_deployment(&self, job: &str) -> Option<&Deployment> {
        State::latest_deployment(self, job).map(|d| d.as_ref())
    }
}
