//! The allocation's record on disk (`alloc.json`): written before any
//! task starts, rewritten when the server changes the allocation or the
//! health verdict is decided, removed when the allocation is over. A
//! restarted agent adopts what has a record. One task writes it, so two
//! writes never race.

use async_trait::async_trait;
use corral_types::{AllocHealth, Allocation};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{AllocHook, AllocView, HookError};
use crate::health::WatchStart;
use crate::layout::{AllocDir, AllocRecord};

#[derive(Default)]
pub struct Record {
    writer: Option<JoinHandle<()>>,
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// The allocation to keep: the server's, with the verdict this node
/// decided when the server's copy does not have it yet (a kill in that
/// window must not make a restarted agent decide again).
fn merged(server: &Allocation, local: Option<&AllocHealth>) -> Allocation {
    let mut a = server.clone();
    if a.health.is_none() && a.deployment_id.is_some() {
        a.health = local.cloned();
    }
    a
}

/// What the record follows.
struct Sources {
    alloc: watch::Receiver<Allocation>,
    health: watch::Receiver<Option<AllocHealth>>,
    watch: watch::Receiver<Option<WatchStart>>,
}

async fn keep_writing(dir: AllocDir, group: corral_types::GroupSpec, mut s: Sources) {
    let (mut alloc_open, mut health_open, mut watch_open) = (true, true, true);
    while alloc_open || health_open || watch_open {
        tokio::select! {
            r = s.alloc.changed(), if alloc_open => alloc_open = r.is_ok(),
            r = s.health.changed(), if health_open => health_open = r.is_ok(),
            r = s.watch.changed(), if watch_open => watch_open = r.is_ok(),
        }
        let a = merged(
            &s.alloc.borrow_and_update(),
            s.health.borrow_and_update().as_ref(),
        );
        let rec = AllocRecord {
            alloc: a,
            group: group.clone(),
            health_watch: s.watch.borrow_and_update().clone(),
        };
        if let Err(e) = dir.save_record(&rec) {
            tracing::warn!(alloc = %rec.alloc.id, error = %e, "cannot update the allocation record");
        }
    }
}

#[async_trait]
impl AllocHook for Record {
    fn name(&self) -> &'static str {
        "record"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        let alloc = view.alloc.borrow().clone();
        let rec = AllocRecord {
            alloc,
            group: view.group.clone(),
            health_watch: view.health_watch.borrow().clone(),
        };
        view.dir.save_record(&rec).map_err(|e| HookError {
            hook: self.name(),
            message: format!(
                "cannot write the allocation directory {}: {e}",
                view.dir.path().display()
            ),
        })?;
        let sources = Sources {
            alloc: view.alloc.clone(),
            health: view.health.subscribe(),
            watch: view.health_watch.subscribe(),
        };
        self.writer = Some(tokio::spawn(keep_writing(
            view.dir.clone(),
            view.group.clone(),
            sources,
        )));
        Ok(())
    }

    async fn postrun(&mut self, _view: &AllocView) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }

    async fn destroy(&mut self, view: &AllocView) {
        if let Err(e) = view.dir.forget() {
            tracing::warn!(alloc = %view.ctx.alloc_id, error = %e, "cannot remove the allocation record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_verdict_is_kept_until_the_server_has_one() {
        let mut server: Allocation = serde_json::from_value(serde_json::json!({
            "id": "a1", "job": "shop", "job_version": 1, "group": "web", "index": 0,
            "node_id": "n1", "desired": "run", "client": "running",
            "resources": {"cpu": 100, "memory": 1000000},
            "created_at": 0, "modified_at": 0, "create_index": 0, "modify_index": 0
        }))
        .expect("allocation");
        let local = AllocHealth {
            healthy: true,
            at: 5,
            message: String::new(),
        };
        // Not in a deployment: no verdict to keep.
        assert_eq!(merged(&server, Some(&local)).health, None);
        server.deployment_id = Some("d1".into());
        assert_eq!(merged(&server, Some(&local)).health, Some(local.clone()));
        let theirs = AllocHealth {
            healthy: false,
            at: 9,
            message: "manual".into(),
        };
        server.health = Some(theirs.clone());
        assert_eq!(merged(&server, Some(&local)).health, Some(theirs));
    }
}
