//! `type: exec` checks: the command runs inside the task through its
//! driver ([`Driver::exec`]); exit code 0 passes.

use std::time::Duration;

use super::tracker::Probe;
use crate::driver::{Driver, DriverError, TaskHandle};

pub async fn probe(
    driver: &dyn Driver,
    handle: &TaskHandle,
    command: &[String],
    timeout: Duration,
) -> Probe {
    match driver.exec(handle, command, timeout).await {
        Ok(out) if out.exit_code == 0 => Probe::Pass(if out.output.is_empty() {
            "exit code 0".to_string()
        } else {
            out.output
        }),
        Ok(out) => Probe::Fail(if out.output.is_empty() {
            format!("exit code {}", out.exit_code)
        } else {
            format!("exit code {}: {}", out.exit_code, out.output)
        }),
        // The task and allocation are known to whoever reads the check.
        Err(DriverError::Failed { reason, .. }) => Probe::Fail(reason),
        Err(e) => Probe::Fail(e.to_string()),
    }
}
