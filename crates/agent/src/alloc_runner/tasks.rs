//! The allocation's task runners: one per task, built from the spec, or
//! continued from what the allocation's directory kept across an agent
//! restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use corral_types::{Allocation, GroupSpec, TaskLifecycle, TaskSpec};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::RunnerEnv;
use crate::driver::{AllocContext, TaskContext, TaskHandle};
use crate::layout::{AllocDir, RestartRecord};
use crate::logs;
use crate::task_runner::{TaskRunner, TaskStore, TaskView};

/// Persists a task's handle and restart record in the allocation's
/// directory.
struct DiskStore {
    dir: AllocDir,
    task: String,
}

#[async_trait]
impl TaskStore for DiskStore {
    async fn save_handle(&self, handle: &TaskHandle) -> std::io::Result<()> {
        self.dir.save_handle(&self.task, handle)
    }
    async fn remove_handle(&self, _handle: &TaskHandle) -> std::io::Result<()> {
        self.dir.remove_handle(&self.task)
    }
    async fn save_restarts(&self, record: &RestartRecord) -> std::io::Result<()> {
        self.dir.save_restarts(&self.task, record)
    }
}

/// The environment a task sees: its spec's env plus `CORRAL_*` facts.
pub fn task_env(
    alloc: &Allocation,
    group: &GroupSpec,
    task: &str,
    env: &BTreeMap<String, String>,
    alloc_dir: &Path,
) -> BTreeMap<String, String> {
    let mut out = env.clone();
    out.insert("CORRAL_JOB".into(), alloc.job.clone());
    out.insert("CORRAL_GROUP".into(), alloc.group.clone());
    out.insert("CORRAL_TASK".into(), task.to_string());
    out.insert("CORRAL_ALLOC_ID".into(), alloc.id.clone());
    out.insert("CORRAL_ALLOC_INDEX".into(), alloc.index.to_string());
    out.insert("CORRAL_ALLOC_NAME".into(), alloc.name());
    out.insert("CORRAL_NODE_ID".into(), alloc.node_id.clone());
    out.insert("CORRAL_ALLOC_DIR".into(), alloc_dir.display().to_string());
    for (t, name, _) in group.ports() {
        if let Some(p) = alloc.ports.get(&GroupSpec::port_key(t, name)) {
            out.insert(GroupSpec::port_env_var(name), p.to_string());
        }
    }
    out
}

/// What the allocation's tasks are: a runner to run, or a task that was
/// already dead when the agent went away (its view has its last state).
pub enum Task {
    Run(Box<TaskRunner>),
    Dead,
}

/// What building a task runner needs of its allocation.
pub struct Setup<'a> {
    pub env: &'a RunnerEnv,
    pub dir: &'a AllocDir,
    pub actx: &'a AllocContext,
    pub alloc: &'a Allocation,
    pub group: &'a GroupSpec,
    pub recovering: bool,
    pub stop: &'a CancellationToken,
}

/// Builds the runner of `spec` (or finds it dead) and its live view;
/// `None` when its driver is not on this node.
pub fn build(s: &Setup<'_>, spec: &TaskSpec) -> Option<(Task, TaskView)> {
    let driver = s.env.drivers.get(&spec.driver).cloned()?;
    let previous = s
        .recovering
        .then(|| s.dir.load_task_state(&spec.name))
        .flatten()
        .unwrap_or_default();
    if s.recovering && previous.state == TaskLifecycle::Dead {
        // Finished before the agent went away: nothing to run.
        let (state_tx, state) = watch::channel(previous);
        drop(state_tx);
        let view = TaskView {
            driver,
            state,
            handle: watch::channel(None).1,
            restart: mpsc::unbounded_channel().0,
        };
        return Some((Task::Dead, view));
    }
    let task_dir = s.dir.task_dir(&spec.name);
    let _ = std::fs::create_dir_all(&task_dir);
    let _ = std::fs::create_dir_all(s.dir.log_dir());
    let ctx = TaskContext {
        alloc: s.actx.clone(),
        task: spec.clone(),
        env: task_env(s.alloc, s.group, &spec.name, &spec.env, s.dir.path()),
        task_dir,
        stdout_path: logs::log_file(s.dir.path(), &spec.name),
        stderr_path: logs::log_file(s.dir.path(), &spec.name),
    };
    let store = Arc::new(DiskStore {
        dir: s.dir.clone(),
        task: spec.name.clone(),
    });
    let mut runner = TaskRunner::new(driver, ctx, s.group.restart, store, s.stop.child_token());
    if s.recovering {
        runner = match s.dir.load_handle(&spec.name) {
            Some(h) => runner.recovering(h, previous),
            None => runner.resuming(previous),
        };
        if let Some(rec) = s.dir.load_restarts(&spec.name) {
            runner = runner.with_restart_record(rec);
        }
    }
    let view = runner.view();
    Some((Task::Run(Box::new(runner)), view))
}
