//! The drivers' per-allocation setup: `prepare_alloc` of each driver the
//! group's tasks use before they start (CRI: the pod sandbox), and
//! `cleanup_alloc` once they are all dead.

use std::sync::Arc;

use async_trait::async_trait;
use corral_types::DriverKind;

use super::{AllocHook, AllocView, HookError};
use crate::driver::Driver;

#[derive(Default)]
pub struct Drivers {
    prepared: Vec<Arc<dyn Driver>>,
}

#[async_trait]
impl AllocHook for Drivers {
    fn name(&self) -> &'static str {
        "drivers"
    }

    async fn prerun(&mut self, view: &AllocView) -> Result<(), HookError> {
        let mut kinds: Vec<DriverKind> = view.group.tasks.iter().map(|t| t.driver).collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        for k in kinds {
            let Some(driver) = view.env.drivers.get(&k).cloned() else {
                return Err(HookError {
                    hook: self.name(),
                    message: format!("driver {k} is not available on this node"),
                });
            };
            self.prepared.push(driver.clone());
            if !view.recovering {
                if let Err(e) = driver.prepare_alloc(&view.ctx).await {
                    let _ = driver.cleanup_alloc(&view.ctx).await;
                    return Err(HookError {
                        hook: self.name(),
                        message: format!("cannot prepare the allocation: {e}"),
                    });
                }
                continue;
            }
            // Adopted: the setup may have died with the node (a reboot)
            // and is made again, or adopted when it is ready. Not for an
            // allocation adopted only to be stopped, and a failure here
            // must not fail (and tear down) what was just adopted: a
            // task's start makes the setup again when it is missing.
            if view.stop.is_cancelled() {
                continue;
            }
            if let Err(e) = driver.prepare_alloc(&view.ctx).await {
                tracing::warn!(alloc = %view.ctx.alloc_id, error = %e,
                    "cannot prepare an adopted allocation again; its tasks' starts will retry");
            }
        }
        Ok(())
    }

    async fn destroy(&mut self, view: &AllocView) {
        for d in self.prepared.drain(..) {
            if let Err(e) = d.cleanup_alloc(&view.ctx).await {
                tracing::warn!(alloc = %view.ctx.alloc_id, error = %e, "allocation cleanup failed");
            }
        }
    }
}
