//! The config file of `corral server` and `corral agent` (one TOML file,
//! a `[server]` and an `[agent]` table). Precedence: defaults, then the
//! file, then environment variables, then flags. Every key and default is
//! in docs/CONFIG.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub agent: AgentFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub data_dir: Option<PathBuf>,
    pub addr: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub heartbeat_min_ttl: Option<String>,
    pub heartbeat_grace: Option<String>,
    pub max_heartbeats_per_second: Option<f64>,
    pub failover_grace: Option<String>,
    pub api_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub server: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub http_addr: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub cri_socket: Option<PathBuf>,
    pub drivers: Option<Vec<String>>,
    pub port_range: Option<(u16, u16)>,
    pub reserved_cpu: Option<String>,
    pub reserved_memory: Option<String>,
    pub token: Option<String>,
    /// How long logs of stopped allocations are kept (`7d`).
    pub log_retention: Option<String>,
}

pub fn load(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// A duration from the file, with the key named in the error.
pub fn duration(key: &str, v: &Option<String>) -> Result<Option<std::time::Duration>> {
    v.as_deref()
        .map(|s| {
            corral_types::units::parse_duration(s)
                .map(|m| m.as_std())
                .map_err(|e| anyhow::anyhow!("config key {key}: {e}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_tables_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("corral.toml");
        std::fs::write(
            &p,
            "[server]\naddr = \"0.0.0.0:7070\"\nheartbeat_grace = \"10s\"\n[agent]\nname = \"n1\"\nlabels = { zone = \"a\" }\nport_range = [21000, 22000]\n",
        )
        .unwrap();
        let c = load(Some(&p)).unwrap();
        assert_eq!(c.server.addr.unwrap().port(), 7070);
        assert_eq!(
            duration("heartbeat_grace", &c.server.heartbeat_grace)
                .unwrap()
                .unwrap()
                .as_secs(),
            10
        );
        assert_eq!(c.agent.labels["zone"], "a");
        assert_eq!(c.agent.port_range, Some((21000, 22000)));
        std::fs::write(&p, "[server]\nadress = \"x\"\n").unwrap();
        let e = load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown field `adress`"), "{e}");
    }
}
