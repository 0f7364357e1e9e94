use std::path::PathBuf;
use std::time::Duration;

/// Server settings. Defaults are documented in docs/CONFIG.md.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Scheduler workers. One per core: measured with the simulator, 8
    /// workers made bin-packing plans collide on the same nodes (3.5x more
    /// refused plans) and placed 30% fewer allocations per second than 2.
    pub workers: usize,
    /// Smallest heartbeat TTL handed to agents.
    pub heartbeat_min_ttl: Duration,
    /// The TTL grows so the whole cluster sends at most this many
    /// heartbeats per second (Nomad's max_heartbeats_per_second).
    pub max_heartbeats_per_second: f64,
    /// Extra time after a missed TTL before a node is marked down.
    pub heartbeat_grace: Duration,
    /// After a server start, how long every node gets before it can be
    /// marked down (agents need time to notice and reconnect).
    pub failover_grace: Duration,
    /// Longest wait a blocking query may ask for.
    pub max_query_wait: Duration,
    /// When set, every API request must carry `Authorization: Bearer T`.
    pub api_token: Option<String>,
    /// How long events are kept; `maintenance` prunes older ones.
    pub event_retention: Duration,
    /// At most this many events are kept, whatever their age (a busy
    /// cluster writes tens of thousands a minute; each is ~200 bytes).
    pub event_max: u64,
    /// Built-in alert rules and where alerts go.
    pub alerts: crate::alerts::AlertsConfig,
    /// When finished records are garbage collected.
    pub gc: GcConfig,
    /// Every HTTP service gets the host name `<service>.<domain>`.
    pub domain: String,
    /// Where volume backups go (`[server.backup_targets.NAME]`); a volume's
    /// `backup.to` names one.
    pub backup_targets: corral_volumes::backup::BackupTargets,
}

/// How old finished records must be before garbage collection deletes
/// them (Nomad's thresholds and defaults). `corral system gc` uses zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcConfig {
    /// Terminal allocations of jobs that still exist.
    pub alloc: Duration,
    /// Evaluations that are complete, failed or cancelled.
    pub eval: Duration,
    /// Deployments that ended.
    pub deployment: Duration,
    /// Nodes down this long (with their terminal allocations).
    pub node: Duration,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            alloc: Duration::from_secs(3600),
            eval: Duration::from_secs(3600),
            deployment: Duration::from_secs(3600),
            node: Duration::from_secs(24 * 3600),
        }
    }
}

impl GcConfig {
    /// Everything finished, whatever its age (`corral system gc`).
    pub const FORCE: GcConfig = GcConfig {
        alloc: Duration::ZERO,
        eval: Duration::ZERO,
        deployment: Duration::ZERO,
        node: Duration::ZERO,
    };
}

/// `localhost`: browsers resolve `*.localhost` to the loopback address
/// with no DNS set-up, so `http://web.localhost:7080/` works out of the box.
pub const DEFAULT_DOMAIN: &str = "localhost";

impl ServerConfig {
    /// Settings no server should start with.
    pub fn validate(&self) -> Result<(), crate::ServerError> {
        // An empty token would be required, yet no client can send one
        // (an empty `CORRAL_TOKEN` sends none): every request would fail.
        if self
            .api_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(crate::ServerError::Config(
                "api_token is empty: set a token, or remove the key to run without one".into(),
            ));
        }
        // Agents beat every TTL/2, no faster than every 100 ms: a shorter
        // TTL marks healthy nodes down between two beats.
        if self.heartbeat_min_ttl < std::time::Duration::from_secs(1) {
            return Err(crate::ServerError::Config(format!(
                "heartbeat_min_ttl is {:?}: it must be at least 1s (the default is 5s)",
                self.heartbeat_min_ttl
            )));
        }
        if let Some(problem) = corral_types::spec::host_problem(&self.domain) {
            return Err(crate::ServerError::Config(format!("domain: {problem}")));
        }
        let r = self.max_heartbeats_per_second;
        if !(r.is_finite() && r > 0.0) {
            return Err(crate::ServerError::Config(format!(
                "max_heartbeats_per_second is {r}: it must be a number above 0 (the default is 50)"
            )));
        }
        Ok(())
    }

    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            workers: 2,
            heartbeat_min_ttl: Duration::from_secs(5),
            max_heartbeats_per_second: 50.0,
            heartbeat_grace: Duration::from_secs(5),
            failover_grace: Duration::from_secs(15),
            max_query_wait: Duration::from_secs(60),
            api_token: None,
            event_retention: Duration::from_secs(24 * 3600),
            event_max: 500_000,
            alerts: crate::alerts::AlertsConfig::default(),
            gc: GcConfig::default(),
            domain: DEFAULT_DOMAIN.to_owned(),
            backup_targets: Default::default(),
        }
    }
}
