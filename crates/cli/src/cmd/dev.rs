//! `corral dev`: a server and an agent in one process, for one machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use corral_agent::{Agent, AgentConfig};
use corral_server::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;

pub async fn run(data_dir: PathBuf, addr: SocketAddr, shutdown: CancellationToken) -> Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let server = Server::start(ServerConfig::new(data_dir.join("server")), shutdown.clone())
        .await
        .context("cannot start the server")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another `corral dev` running? stop it or pick another --addr")
    })?;
    let bound = listener.local_addr()?;
    let server_task = tokio::spawn(server.serve(listener));

    let mut config = AgentConfig::new(&format!("http://{bound}"), data_dir.join("agent"));
    config.name = Some("dev".into());
    // One machine, one user: Ctrl-C takes the tasks down with it.
    config.stop_on_shutdown = true;
    let agent = Agent::start(config, shutdown.clone())
        .await
        .context("cannot start the agent")?;
    eprintln!(
        "corral dev: API on http://{bound}, data in {}",
        data_dir.display()
    );
    eprintln!(
        "corral dev: node {} ready; submit a job with `corral run FILE`",
        agent.node_id
    );
    agent.wait().await;
    server_task.await.context("server task")??;
    Ok(())
}

/// `/var/lib/corral/dev` as root, else under `$HOME/.local/share/corral`.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/corral/dev");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/corral/dev")
}
