//! The allocation's health checks: one loop per check while the tasks
//! run, their states published on the view, and each tracker persisted
//! (`checks.json`) when its status changes, so that an agent restart that
//! re-attaches to the same run carries the status on.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::{AllocHook, AllocView, HookError};
use corral_types::CheckStatus;

use crate::checks::{self, CheckStates, SavedChecks};
use crate::layout::AllocDir;

#[derive(Default)]
pub struct Checks {
    running: Option<checks::Running>,
    saver: Option<JoinHandle<()>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        if let Some(s) = self.saver.take() {
            s.abort();
        }
    }
}

/// What decides a check's future: its run, status and the failures
/// counted towards `failure_threshold` and `check_restart` (a passing
/// probe that changes none of it is not worth a write).
type Counted = Vec<(String, checks::RunId, CheckStatus, u32, u32)>;

fn counted(saved: &SavedChecks) -> Counted {
    saved
        .iter()
        .map(|(k, s)| (k.clone(), s.run, s.status, s.failures, s.restart_failures))
        .collect()
}

/// Persists the trackers whenever what they count changes.
async fn keep_saving(
    dir: AllocDir,
    mut states: tokio::sync::watch::Receiver<CheckStates>,
    saved: Arc<Mutex<SavedChecks>>,
) {
    let mut last: Option<Counted> = None;
    loop {
        states.borrow_and_update();
        let snapshot = saved.lock().map(|s| s.clone()).unwrap_or_default();
        let now = counted(&snapshot);
        if last.as_ref() != Some(&now) {
            if let Err(e) = dir.save_checks(&snapshot) {
                tracing::warn!(dir = %dir.path().display(), error = %e, "cannot persist the checks' status");
            }
            last = Some(now);
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl AllocHook for Checks {
    fn name(&self) -> &'static str {
        "checks"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        let plan = checks::plan(&view.group);
        if plan.is_empty() {
            return Ok(());
        }
        let previous: SavedChecks = if view.recovering {
            view.dir.load_checks().unwrap_or_default()
        } else {
            SavedChecks::new()
        };
        let saved = Arc::new(Mutex::new(previous));
        let ports = view.alloc.borrow().ports.clone();
        self.running = Some(checks::spawn_into(
            plan,
            &view.tasks,
            view.group.network,
            ports,
            view.checks.clone(),
            saved.clone(),
        ));
        self.saver = Some(tokio::spawn(keep_saving(
            view.dir.clone(),
            view.checks.subscribe(),
            saved,
        )));
        Ok(())
    }

    async fn postrun(&mut self, _view: &AllocView) {
        self.running = None;
        if let Some(s) = self.saver.take() {
            s.abort();
        }
    }
}
