use anyhow::{Context, Result};
use corral_agent::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    let agent = Agent::start(config, shutdown)
        .await
        .context("cannot start the agent")?;
    tracing::info!(node = %agent.node_id, address = %agent.address, "agent running");
    agent.wait().await;
    Ok(())
}
