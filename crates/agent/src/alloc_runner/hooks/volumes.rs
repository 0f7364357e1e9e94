//! Hook `volumes`: before any task runs, every volume of the group is made
//! ready on this node (created, taken over, or moved here: see
//! [`crate::volumes`]) and mounted where the tasks' mounts point; while
//! the allocation runs, its scheduled snapshots are taken; at the end the
//! volume is unmounted (the data stays).

use std::sync::Arc;

use async_trait::async_trait;
use corral_types::{AllocUpdate, ClientStatus, GroupSpec, VolumeSync};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{AllocHook, AllocView, HookError};
use crate::volumes::{NodeVolumes, Progress};

#[derive(Default)]
pub struct Volumes {
    held: Vec<String>,
    schedules: Option<CancellationToken>,
    /// The job version the volumes were made ready for.
    version: u64,
}

/// Reports a move's progress with the allocation (its tasks still pending).
struct Reporter {
    alloc: String,
    tasks: Vec<(String, watch::Receiver<corral_types::TaskState>)>,
    updates: mpsc::UnboundedSender<AllocUpdate>,
    sync: Arc<watch::Sender<Option<VolumeSync>>>,
}

impl Progress for Reporter {
    fn report(&self, sync: VolumeSync, message: String) {
        self.sync.send_replace(Some(sync.clone()));
        let _ = self.updates.send(AllocUpdate {
            id: self.alloc.clone(),
            client: ClientStatus::Pending,
            tasks: self
                .tasks
                .iter()
                .map(|(k, v)| (k.clone(), v.borrow().clone()))
                .collect(),
            message,
            checks: Default::default(),
            health: None,
            volume_sync: Some(sync),
        });
    }
}

#[async_trait]
impl AllocHook for Volumes {
    fn name(&self) -> &'static str {
        "volumes"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        if view.group.volumes.is_empty() {
            return Ok(());
        }
        let err = |message: String| HookError {
            hook: "volumes",
            message,
        };
        let Some(vols) = view.env.shared.volumes.clone() else {
            return Err(err(
                "this node has no volumes (its agent runs with volumes off); the allocation needs one".into(),
            ));
        };
        let alloc = view.alloc.borrow().clone();
        self.version = alloc.job_version;
        let reporter = Reporter {
            alloc: alloc.id.clone(),
            tasks: view
                .tasks
                .iter()
                .map(|(k, t)| (k.clone(), t.state.clone()))
                .collect(),
            updates: view.env.updates.clone(),
            sync: view.volume_sync.clone(),
        };
        for spec in &view.group.volumes {
            let id = GroupSpec::volume_id(&alloc.job, spec, alloc.index);
            // Adopted only to be stopped: its tasks may still run on the
            // volume and must stop before anything else touches it; the
            // runner stops them, the volume is only unmounted after.
            if view.recovering && view.stop.is_cancelled() {
                vols.mounted_for(&id, &alloc.id);
                self.held.push(id);
                continue;
            }
            if let Err(e) = vols.acquire(&alloc, spec, &id, &reporter, &view.stop).await {
                if !view.recovering {
                    return Err(err(e.to_string()));
                }
                // Adopted tasks may be running on a copy this node may not
                // write any more (or the allocation is being stopped):
                // failing here would leave them running unwatched. They
                // are stopped instead.
                tracing::warn!(alloc = %alloc.id, volume = %id, error = %e, "an adopted allocation cannot keep its volume; its tasks are stopped");
                view.stop.cancel();
                vols.mounted_for(&id, &alloc.id);
                self.held.push(id);
                continue;
            }
            self.held.push(id.clone());
            vols.set_hooks(&id, task_hooks(view, spec, &alloc.id));
            if let Err(e) = vols.report(&id).await {
                tracing::debug!(volume = %id, error = %e, "cannot report the volume");
            }
        }
        if !view.stop.is_cancelled() {
            self.schedule(view, &vols, &alloc, &view.group.volumes);
        }
        Ok(())
    }

    /// A new job version in place (a volume's size, snapshot schedule or
    /// hooks changed, nothing that needs a restart): grow what grew, and
    /// take the new schedule and hooks.
    async fn update(&mut self, view: &AllocView, alloc: &corral_types::Allocation) {
        if self.held.is_empty() || alloc.job_version == self.version {
            return;
        }
        self.version = alloc.job_version;
        let Some(vols) = view.env.shared.volumes.clone() else {
            return;
        };
        let Some(group) = vols.group_of(alloc).await else {
            return;
        };
        vols.grow_to(alloc, &group).await;
        for spec in &group.volumes {
            let id = GroupSpec::volume_id(&alloc.job, spec, alloc.index);
            if self.held.contains(&id) {
                vols.set_hooks(&id, task_hooks(view, spec, &alloc.id));
            }
        }
        if !view.stop.is_cancelled() {
            self.schedule(view, &vols, alloc, &group.volumes);
        }
    }

    async fn destroy(&mut self, view: &AllocView) {
        if let Some(t) = self.schedules.take() {
            t.cancel();
        }
        let Some(vols) = view.env.shared.volumes.clone() else {
            return;
        };
        for id in self.held.drain(..) {
            vols.set_hooks(&id, None);
            if let Err(e) = vols.unmount(&id, &view.ctx.alloc_id).await {
                tracing::warn!(volume = %id, error = %e, "cannot unmount the volume");
            }
        }
    }
}

impl Volumes {
    /// One task per volume with `snapshots`: take one every `every`
    /// (counted from the newest scheduled one, so an agent restart does
    /// not reset the clock), keep the newest `keep`, report.
    /// Replaces the schedules running.
    fn schedule(
        &mut self,
        view: &AllocView,
        vols: &Arc<NodeVolumes>,
        alloc: &corral_types::Allocation,
        specs: &[corral_types::VolumeSpec],
    ) {
        if let Some(old) = self.schedules.take() {
            old.cancel();
        }
        let cancel = view.stop.child_token();
        for spec in specs {
            let Some(policy) = spec.snapshots else {
                continue;
            };
            if !vols.provider.capabilities().snapshots {
                tracing::warn!(volume = %spec.name, provider = %vols.kind_name(), "the node's volume provider takes no snapshots; the schedule is skipped");
                continue;
            }
            let id = GroupSpec::volume_id(&alloc.job, spec, alloc.index);
            let vols = vols.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let last = vols.newest_scheduled(&id).await.unwrap_or(0);
                    let due = last.saturating_add(policy.every.0);
                    let wait = due.saturating_sub(corral_types::now_ms());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                    }
                    match vols.snapshot_now(&id, true).await {
                        Ok(s) => {
                            tracing::info!(volume = %id, snapshot = %s.name, took_ms = s.took_ms, "scheduled snapshot taken")
                        }
                        Err(e) => {
                            tracing::warn!(volume = %id, error = %e, "scheduled snapshot failed");
                            tokio::select! {
                                _ = cancel.cancelled() => return,
                                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                            }
                        }
                    }
                    if let Err(e) = vols.prune(&id, policy.keep).await {
                        tracing::warn!(volume = %id, error = %e, "cannot prune old snapshots");
                    }
                    if let Err(e) = vols.report(&id).await {
                        tracing::debug!(volume = %id, error = %e, "cannot report the volume");
                    }
                }
            });
        }
        self.schedules = Some(cancel);
    }
}

/// The runner of `spec`'s hooks in its task, if it has hooks.
fn task_hooks(
    view: &AllocView,
    spec: &corral_types::VolumeSpec,
    alloc: &str,
) -> Option<Arc<dyn crate::volumes::SnapshotHookRunner>> {
    let h = spec.hooks.as_ref()?;
    let task = view.tasks.get(&h.task)?;
    Some(Arc::new(TaskHooks {
        driver: task.driver.clone(),
        handle: task.handle.clone(),
        spec: h.clone(),
        alloc: alloc.to_owned(),
    }))
}

/// A volume's `hooks`, run in its task through the task's driver.
struct TaskHooks {
    driver: Arc<dyn crate::driver::Driver>,
    handle: watch::Receiver<Option<crate::driver::TaskHandle>>,
    spec: corral_types::SnapshotHooks,
    alloc: String,
}

impl TaskHooks {
    async fn run(&self, which: &str, command: &[String]) -> Result<(), String> {
        if command.is_empty() {
            return Ok(());
        }
        // The task does not run: nothing to quiesce.
        let Some(handle) = self.handle.borrow().clone() else {
            return Ok(());
        };
        match self
            .driver
            .exec(&handle, command, self.spec.timeout.as_std())
            .await
        {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(format!(
                "{which} in task {} exited {}: {}",
                self.spec.task,
                out.exit_code,
                out.output.trim()
            )),
            Err(e) => Err(format!("{which} in task {}: {e}", self.spec.task)),
        }
    }
}

#[async_trait]
impl crate::volumes::SnapshotHookRunner for TaskHooks {
    async fn pre(&self) -> Result<(), String> {
        self.run("pre_snapshot", &self.spec.pre_snapshot).await
    }

    async fn post(&self) {
        if let Err(e) = self.run("post_snapshot", &self.spec.post_snapshot).await {
            tracing::warn!(alloc = %self.alloc, error = %e, "the post_snapshot hook failed");
        }
    }
}
