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
}

impl Shared {
    pub fn new(dirs: NodeDir, metrics: Arc<TaskMetrics>) -> Shared {
        Shared {
            dirs,
            metrics,
            volumes: None,
            active: Mutex::new(HashSet::new()),
        }
    }

    pub fn with_volumes(mut self, v: Option<Arc<crate::volumes::NodeVolumes>>) -> Shared {
        self.volumes = v;
        self
    }

    pub fn alloc_dir(&self, id: &str) -> AllocDir {
        self.dirs.alloc(id)
    }

    /// Whether an allocation still has a runner on this node.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.lock().map(|a| a.contains(id)).unwrap_or(false)
    }

    pub(crate) fn set_active(&self, id: &str, on: bool) {
        if let Ok(mut a) = self.active.lock() {
            if on {
                a.insert(id.to_string());
            } else {
                a.remove(id);
            }
        }
    }
}
