//! An in-process cluster: one server, any number of agents (the exec
//! driver, and the container driver on a given CRI socket), each with its
//! own data dir, all on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use corral_agent::{Agent, AgentConfig};
use corral_client::Client;
use corral_server::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Changes the harness's server settings (see [`TestCluster::start_with`]).
pub type ConfigureServer = std::sync::Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    configure: Option<ConfigureServer>,
    pub addr: SocketAddr,
    pub client: Client,
    server_stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    pub agents: Vec<TestAgent>,
}

pub struct TestAgent {
    pub name: String,
    pub node_id: String,
    pub data_dir: PathBuf,
    stop: CancellationToken,
    agent: Option<Agent>,
}

impl TestAgent {
    /// Stop the agent; with `stop_tasks` its tasks go too.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(a) = self.agent.take() {
            a.wait().await;
        }
    }
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

impl TestCluster {
    /// A server with fast heartbeats; no agents yet.
    pub async fn start() -> TestCluster {
        Self::start_configured(None).await
    }

    /// A server with the harness defaults changed by `configure` (it is
    /// applied again when the server restarts); no agents yet.
    pub async fn start_with(
        configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> TestCluster {
        Self::start_configured(Some(std::sync::Arc::new(configure))).await
    }

    async fn start_configured(configure: Option<ConfigureServer>) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, stop, handle) =
            start_server(dir.path().join("server"), None, configure.as_ref()).await;
        TestCluster {
            client: Client::new(&format!("http://{addr}"), None),
            configure,
            dir,
            addr,
            server_stop: stop,
            server: Some(handle),
            agents: Vec::new(),
        }
    }

    /// A server and one exec agent.
    pub async fn with_agent() -> TestCluster {
        let mut c = Self::start().await;
        c.add_agent("node-0", BTreeMap::new()).await;
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn add_agent(&mut self, name: &str, labels: BTreeMap<String, String>) -> &TestAgent {
        self.add_agent_with(name, |c| c.labels = labels).await
    }

    /// The data dir of the agent called `name` (the same name gives the
    /// same dir, hence the same node id: a restarted agent).
    pub fn agent_data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{name}"))
    }

    /// An agent with the harness defaults (exec only, tasks stopped on
    /// shutdown) changed by `configure`; waits until its node is ready.
    pub async fn add_agent_with(
        &mut self,
        name: &str,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> &TestAgent {
        let mut config = agent_config(
            &self.url(),
            self.agent_data_dir(name),
            name,
            BTreeMap::new(),
            true,
        );
        configure(&mut config);
        let agent = start_agent_with(config).await;
        let id = agent.node_id.clone();
        let c = self.client.clone();
        crate::eventually(
            &format!("node {name} ready"),
            Duration::from_secs(20),
            || {
                let c = c.clone();
                let id = id.clone();
                async move {
                    match c.node(&id).await {
                        Ok(n) if n.status == "ready" => Ok(()),
                        Ok(n) => Err(n.status),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        self.agents.push(agent);
        self.agents.last().expect("just pushed")
    }

    /// An agent with the exec and container drivers, the latter on the
    /// containerd at `cri_socket`; its tasks stop when it shuts down.
    /// Panics when the node does not advertise the container driver.
    pub async fn add_container_agent(&mut self, name: &str, cri_socket: &Path) -> &TestAgent {
        self.add_container_agent_with(name, cri_socket, true).await
    }

    /// Like [`Self::add_container_agent`]; with `stop_on_shutdown` false
    /// the agent's shutdown leaves its containers running, as a killed
    /// agent process would, for the next agent on the same data dir to
    /// adopt.
    pub async fn add_container_agent_with(
        &mut self,
        name: &str,
        cri_socket: &Path,
        stop_on_shutdown: bool,
    ) -> &TestAgent {
        let socket = cri_socket.to_path_buf();
        let c = self.client.clone();
        let agent = self
            .add_agent_with(name, move |config| {
                config.drivers = vec!["exec".into(), "container".into()];
                config.cri_socket = socket;
                config.stop_on_shutdown = stop_on_shutdown;
            })
            .await;
        let node = c.node(&agent.node_id).await.expect("node view");
        assert!(
            node.drivers.iter().any(|d| d == "container"),
            "node {name} has no container driver (drivers: {:?}); see the agent's warnings (CORRAL_LOG=warn)",
            node.drivers
        );
        agent
    }

    /// Takes the agent called `name` out of the cluster (to shut it down
    /// and start another on its data dir).
    pub fn take_agent(&mut self, name: &str) -> Option<TestAgent> {
        let i = self.agents.iter().position(|a| a.name == name)?;
        Some(self.agents.remove(i))
    }

    /// Restart the server on the same port and data dir (its state comes
    /// back from SQLite).
    pub async fn restart_server(&mut self) {
        self.server_stop.cancel();
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        let (_, stop, handle) = start_server(
            self.dir.path().join("server"),
            Some(self.addr),
            self.configure.as_ref(),
        )
        .await;
        self.server_stop = stop;
        self.server = Some(handle);
    }

    /// Stop everything; agents stop their tasks.
    pub async fn shutdown(mut self) {
        for a in self.agents.drain(..) {
            a.shutdown().await;
        }
        self.server_stop.cancel();
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }
}

/// A cluster dropped without [`TestCluster::shutdown`] (a failed test)
/// tells its agents and server to stop, so that no agent starts anything
/// while the test's other resources are cleaned up.
impl Drop for TestCluster {
    fn drop(&mut self) {
        for a in &self.agents {
            a.stop.cancel();
        }
        self.server_stop.cancel();
    }
}

pub async fn start_agent(
    server: &str,
    data_dir: PathBuf,
    name: &str,
    labels: BTreeMap<String, String>,
    stop_on_shutdown: bool,
) -> TestAgent {
    start_agent_with(agent_config(
        server,
        data_dir,
        name,
        labels,
        stop_on_shutdown,
    ))
    .await
}

/// The harness's agent settings: fast watches, the exec driver only
/// (container tests bring their own private containerd and add the
/// container driver with its socket).
pub fn agent_config(
    server: &str,
    data_dir: PathBuf,
    name: &str,
    labels: BTreeMap<String, String>,
    stop_on_shutdown: bool,
) -> AgentConfig {
    let mut config = AgentConfig::new(server, data_dir);
    config.name = Some(name.to_string());
    config.labels = labels;
    config.stop_on_shutdown = stop_on_shutdown;
    config.watch_wait = Duration::from_secs(5);
    config.drivers = vec!["exec".into()];
    config
}

pub async fn start_agent_with(config: AgentConfig) -> TestAgent {
    init_tracing();
    let name = config.name.clone().unwrap_or_default();
    let data_dir = config.data_dir.clone();
    let stop = CancellationToken::new();
    let agent = Agent::start(config, stop.clone())
        .await
        .expect("agent starts");
    TestAgent {
        name,
        node_id: agent.node_id.clone(),
        data_dir,
        stop,
        agent: Some(agent),
    }
}

async fn start_server(
    data_dir: PathBuf,
    addr: Option<SocketAddr>,
    configure: Option<&ConfigureServer>,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut config = ServerConfig::new(data_dir);
    config.heartbeat_min_ttl = Duration::from_secs(2);
    config.heartbeat_grace = Duration::from_secs(2);
    config.failover_grace = Duration::from_secs(2);
    if let Some(f) = configure {
        f(&mut config);
    }
    let stop = CancellationToken::new();
    let server = Server::start(config, stop.clone())
        .await
        .expect("server starts");
    let bind = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = bind_retry(bind).await;
    let bound = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        if let Err(e) = server.serve(listener).await {
            tracing::error!(error = %e, "test server failed");
        }
    });
    (bound, stop, handle)
}

/// A port just released may linger for a moment.
async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr}");
}
