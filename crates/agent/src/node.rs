//! What the agent's parts share about this node: its data dir, its task
//! metrics, which allocations have a runner, and its drivers. A leaf
//! module: runners, logs and the HTTP endpoint use it without importing
//! the agent loop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use corral_types::DriverKind;

use crate::driver::Driver;
use crate::layout::{AllocDir, NodeDir};
use crate::metrics::TaskMetrics;

/// The drivers that work on this node.
pub type Drivers = HashMap<DriverKind, Arc<dyn Driver>>;

/// State shared by the agent loop, the alloc runners and the HTTP endpoint.
pub struct Shared {
    pub dirs: NodeDir,
    /// Every task runner's task, for `/metrics` and usage pushes.
    pub metrics: Arc<TaskMetrics>,
    /// The node's volumes (`None`: volumes are off on this node).
    pub volumes: Option<Arc<crate::volumes::NodeVolumes>>,
    active: Mutex<HashSet<String>>,
    /// Each running allocation's tasks, to restart on request.
    restarts: Mutex<HashMap<String, TaskRestarts>>,
}

type TaskRestarts = std::collections::BTreeMap<
    String,
    tokio::sync::mpsc::UnboundedSender<crate::task_runner::RestartRequest>,
>;

impl Shared {
    pub fn new(dirs: NodeDir, metrics: Arc<TaskMetrics>) -> Shared {
        Shared {
            dirs,
            metrics,
            volumes: None,
            active: Mutex::new(HashSet::new()),
            restarts: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_volumes(mut self, v: Option<Arc<crate::volumes::NodeVolumes>>) -> Shared {
        self.volumes = v;
        self
    }

    pub fn alloc_dir(&self, id: &str) -> AllocDir {
        self.dirs.alloc(id)
    }

    /// The restart senders of allocation `id`'s tasks (its runner built
    /// them); gone when the runner ends.
    pub(crate) fn set_restarts(&self, id: &str, tasks: TaskRestarts) {
        if let Ok(mut r) = self.restarts.lock() {
            r.insert(id.to_owned(), tasks);
        }
    }

    /// Restart `task` of allocation `id` (every task when `None`) in
    /// place, as a user asked; the tasks asked, or why not.
    pub fn request_restart(&self, id: &str, task: Option<&str>) -> Result<Vec<String>, String> {
        let r = self.restarts.lock().map_err(|_| "poisoned".to_string())?;
        let tasks = r
            .get(id)
            .ok_or_else(|| format!("allocation {id} does not run on this node"))?;
        if let Some(t) = task
            && !tasks.contains_key(t)
        {
            return Err(format!(
                "allocation {id} has no task `{t}`; its tasks are {}",
                tasks.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut asked = Vec::new();
        for (name, tx) in tasks.iter().filter(|(n, _)| task.is_none_or(|t| t == *n)) {
            let req = crate::task_runner::RestartRequest {
                reason: "restarted by a user (corral alloc restart)".into(),
                by_user: true,
            };
            if tx.send(req).is_ok() {
                asked.push(name.clone());
            }
        }
        Ok(asked)
    }

    /// Whether an allocation still has a runner on this node.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.lock().map(|a| a.contains(id)).unwrap_or(false)
    }

    pub(crate) fn set_active(&self, id: &str, on: bool) {
        if !on && let Ok(mut r) = self.restarts.lock() {
            r.remove(id);
        }
        if let Ok(mut a) = self.active.lock() {
            if on {
                a.insert(id.to_string());
            } else {
                a.remove(id);
            }
        }
    }
}
