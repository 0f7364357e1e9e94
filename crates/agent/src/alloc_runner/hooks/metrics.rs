//! Every task's metrics, from its first state to the end of its runner
//! (the metrics table follows the task's state channel until it closes).

use async_trait::async_trait;

use super::{AllocHook, AllocView, HookError};

pub struct Metrics;

#[async_trait]
impl AllocHook for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        for spec in &view.group.tasks {
            if let Some(t) = view.tasks.get(&spec.name) {
                view.env.shared.metrics.track(
                    &view.ctx,
                    spec,
                    t.driver.clone(),
                    t.state.clone(),
                    t.handle.clone(),
                );
            }
        }
        Ok(())
    }
}
