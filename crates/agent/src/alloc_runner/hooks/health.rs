//! The deployment health verdict, decided on this node (see
//! [`crate::health`]); the record hook persists it.

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::{AllocHook, AllocView, HookError};

#[derive(Default)]
pub struct Health {
    watch: Option<JoinHandle<()>>,
}

impl Drop for Health {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

#[async_trait]
impl AllocHook for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        let states = view
            .tasks
            .iter()
            .map(|(k, t)| (k.clone(), t.state.clone()))
            .collect();
        self.watch = Some(tokio::spawn(crate::health::watch(
            view.alloc.clone(),
            view.group.update,
            states,
            view.checks.subscribe(),
            view.group.has_checks(),
            crate::health::Outputs {
                verdict: view.health.clone(),
                started: view.health_watch.clone(),
            },
            view.stop.clone(),
        )));
        Ok(())
    }

    async fn postrun(&mut self, _view: &AllocView) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}
