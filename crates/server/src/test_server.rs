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
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let mut config = ServerConfig::new(dir.path().to_path_buf());
        config.alerts.enabled = false;
        let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
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

    pub async fn stop(self) {
        self.stop.cancel();
        self.server.wait().await;
    }
}
