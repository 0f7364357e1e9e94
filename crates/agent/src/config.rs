use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where Debian's containerd listens.
pub const DEFAULT_CRI_SOCKET: &str = "/run/containerd/containerd.sock";

/// Agent settings. Defaults are documented in docs/CONFIG.md.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's API address, `http://host:port`.
    pub server: String,
    pub token: Option<String>,
    pub data_dir: PathBuf,
    /// Node name; defaults to the hostname.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the agent's own HTTP endpoint (logs) listens.
    pub http_addr: SocketAddr,
    /// The address the server uses to reach this agent; defaults to the
    /// bound `http_addr`.
    pub advertise: Option<String>,
    /// Host ports the scheduler may assign here (inclusive).
    pub port_range: (u16, u16),
    /// Kept back from the node's capacity for the OS and the agent.
    pub reserved_cpu_millis: u64,
    pub reserved_memory_bytes: u64,
    /// Drivers to try; each is advertised only if its fingerprint passes.
    pub drivers: Vec<String>,
    /// The CRI socket of the node's containerd (the `container` driver).
    pub cri_socket: PathBuf,
    /// The pod sandbox image; built from busybox-static and imported when
    /// missing, since nothing can be pulled without internet.
    pub sandbox_image: String,
    /// How long a blocking query for allocations waits.
    pub watch_wait: Duration,
    /// Stop every task when the agent shuts down (`corral dev`); otherwise
    /// tasks keep running and the next agent process adopts them.
    pub stop_on_shutdown: bool,
    /// How long the logs of a stopped allocation are kept (`log_retention`).
    pub log_retention: Duration,
    /// How often container logs are checked for rotation.
    pub log_check_interval: Duration,
    /// How often running tasks' usage is pushed to the server.
    pub stats_interval: Duration,
    /// The `corral` binary, which the exec driver starts as each run's
    /// capture process (`corral logmon`), so that task output survives an
    /// agent restart. Unset (a library user without the binary: tests),
    /// the agent copies the output itself, and loses what is in flight
    /// when it dies.
    pub capture_exe: Option<PathBuf>,
    /// The node DNS (`<service>.service.corral`, other names forwarded),
    /// given to the container driver's pods as their nameserver; `None`:
    /// off. See docs/SERVICES.md, "DNS".
    pub dns: Option<crate::dns::DnsConfig>,
    /// The node's volumes; `None`: off (allocations with volumes fail here,
    /// and the node offers no volume space to the scheduler).
    pub volumes: Option<crate::volumes::VolumesConfig>,
}

impl AgentConfig {
    pub fn new(server: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            server: server.to_string(),
            token: None,
            data_dir: data_dir.clone(),
            name: None,
            labels: BTreeMap::new(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            port_range: corral_types::DEFAULT_PORT_RANGE,
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 0,
            drivers: vec!["exec".into(), "container".into()],
            cri_socket: PathBuf::from(DEFAULT_CRI_SOCKET),
            sandbox_image: crate::image::PAUSE_IMAGE.into(),
            watch_wait: Duration::from_secs(30),
            stop_on_shutdown: false,
            log_retention: crate::logs::DEFAULT_RETENTION,
            log_check_interval: crate::logs::DEFAULT_CHECK_INTERVAL,
            stats_interval: Duration::from_secs(10),
            capture_exe: None,
            dns: None,
            volumes: Some(crate::volumes::VolumesConfig {
                dir: data_dir.join("volumes"),
                provider: None,
                reserved_bytes: 0,
            }),
        }
    }
}
