use anyhow::{Context, Result};
use corral_agent::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    // Before anything: two agents on one data dir adopt the same tasks and
    // kill each other's runs.
    let _lock = crate::datadir::lock(&config.data_dir, "corral agent")?;
    let agent = Agent::start(config, shutdown)
        .await
        .context("cannot start the agent")?;
    tracing::info!(node = %agent.node_id, address = %agent.address, "agent running");
    agent.wait().await;
    Ok(())
}
