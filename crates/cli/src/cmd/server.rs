use std::net::SocketAddr;

use anyhow::{Context, Result};
use corral_server::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: ServerConfig,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<()> {
    // The data dir first, the port next, the store last: a second server
    // is refused before it touches anything.
    let _lock = crate::datadir::lock(&config.data_dir, "corral server")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another corral running? pick another with --addr")
    })?;
    let server = Server::start(config, shutdown).await?;
    tracing::info!(%addr, "server listening");
    server.serve(listener).await?;
    Ok(())
}
