//! A real server on an in-memory store for the crate's async tests (no
//! alerts), and its orderly stop.

use std::sync::Arc;

use corral_store::{MemoryStore, StateStore};
use tokio_util::sync::CancellationToken;

use crate::{Core, Server, ServerConfig};

pub struct TestServer {
    pub core: Arc<Core>,
    server: Server,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `tune` adjusted first.
    pub async fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
        Self::start_on(store, tune).await
    }

    /// A server on an existing store: what a restarted server finds.
    pub async fn start_on(store: StateStore, tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let mut config = ServerConfig::new(dir.path().to_path_buf());
        config.alerts.enabled = false;
        tune(&mut config);
        let server = Server::start_with(config, store, stop.clone())
            .await
            .expect("server");
        TestServer {
            core: server.core.clone(),
            server,
            stop,
            _dir: dir,
        }
    }

    /// Serve the API on a loopback port until the server stops; returns
    /// its base URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = self.server.router();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        format!("http://{addr}")
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.server.wait().await;
    }
}

/// Wait (up to 10s) until `check` holds.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
