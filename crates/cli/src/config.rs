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
    /// HTTP services get `<service>.<domain>`.
    pub domain: Option<String>,
    /// `[server.backup_targets.NAME]`: where volume backups go.
    #[serde(default)]
    pub backup_targets: corral_volumes::backup::BackupTargets,
    pub event_retention: Option<String>,
    pub event_max: Option<u64>,
    pub alloc_gc_threshold: Option<String>,
    pub eval_gc_threshold: Option<String>,
    pub deployment_gc_threshold: Option<String>,
    pub node_gc_threshold: Option<String>,
    #[serde(default)]
    pub alerts: AlertsFile,
}

/// `[server.alerts]` and one sub-table per rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    pub enabled: Option<bool>,
    pub eval_interval: Option<String>,
    pub webhooks: Option<Vec<String>>,
    pub webhook_retries: Option<u32>,
    pub webhook_backoff: Option<String>,
    pub webhook_timeout: Option<String>,
    pub retention: Option<String>,
    #[serde(default)]
    pub crash_loop: CrashLoopFile,
    #[serde(default)]
    pub oom_kill: OomKillFile,
    #[serde(default)]
    pub node_down: ConditionFile,
    #[serde(default)]
    pub deployment_failed: ToggleFile,
    #[serde(default)]
    pub memory: ThresholdFile,
    #[serde(default)]
    pub disk: ThresholdFile,
    #[serde(default)]
    pub volume_backup: ToggleFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashLoopFile {
    pub enabled: Option<bool>,
    pub restarts: Option<u32>,
    pub window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OomKillFile {
    pub enabled: Option<bool>,
    pub quiet: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionFile {
    pub enabled: Option<bool>,
    #[serde(rename = "for")]
    pub for_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToggleFile {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFile {
    pub enabled: Option<bool>,
    /// Percent, 1 to 100.
    pub threshold_percent: Option<f64>,
    #[serde(rename = "for")]
    pub for_duration: Option<String>,
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
    /// Where the node DNS listens, IP or IP:PORT (`--dns-addr`).
    pub dns_addr: Option<String>,
    /// `false` turns the node DNS off (`--no-dns`).
    pub dns: Option<bool>,
    /// Where volumes live (`--volumes-dir`).
    pub volumes_dir: Option<PathBuf>,
    /// `btrfs-image`, `ext4-image` or `host` (`--volume-provider`).
    pub volume_provider: Option<String>,
    /// Kept back from the volumes directory's filesystem (`100G`).
    pub volumes_reserved: Option<String>,
    /// `false` turns volumes off (`--no-volumes`).
    pub volumes: Option<bool>,
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

/// The server's settings from its `[server]` table over the defaults
/// (`corral server` and `corral dev` alike; flags are applied after).
pub fn server_config(
    file: &ServerFile,
    data_dir: std::path::PathBuf,
) -> Result<corral_server::ServerConfig> {
    let mut sc = corral_server::ServerConfig::new(data_dir);
    if let Some(w) = file.workers {
        sc.workers = w;
    }
    if let Some(d) = duration("heartbeat_min_ttl", &file.heartbeat_min_ttl)? {
        sc.heartbeat_min_ttl = d;
    }
    if let Some(d) = duration("heartbeat_grace", &file.heartbeat_grace)? {
        sc.heartbeat_grace = d;
    }
    if let Some(d) = duration("failover_grace", &file.failover_grace)? {
        sc.failover_grace = d;
    }
    if let Some(r) = file.max_heartbeats_per_second {
        sc.max_heartbeats_per_second = r;
    }
    apply_events_and_alerts(file, &mut sc)?;
    Ok(sc)
}

/// The event retention, the GC thresholds and `[server.alerts]` over the
/// defaults.
pub fn apply_events_and_alerts(
    file: &ServerFile,
    sc: &mut corral_server::ServerConfig,
) -> Result<()> {
    if let Some(d) = duration("event_retention", &file.event_retention)? {
        sc.event_retention = d;
    }
    sc.backup_targets = file.backup_targets.clone();
    if let Some(d) = &file.domain {
        sc.domain = d.trim_end_matches('.').to_owned();
    }
    if let Some(n) = file.event_max {
        anyhow::ensure!(n > 0, "config key event_max: keep at least 1 event");
        sc.event_max = n;
    }
    let gc = &mut sc.gc;
    set_duration(
        &mut gc.alloc,
        "alloc_gc_threshold",
        &file.alloc_gc_threshold,
    )?;
    set_duration(&mut gc.eval, "eval_gc_threshold", &file.eval_gc_threshold)?;
    set_duration(
        &mut gc.deployment,
        "deployment_gc_threshold",
        &file.deployment_gc_threshold,
    )?;
    set_duration(&mut gc.node, "node_gc_threshold", &file.node_gc_threshold)?;
    let f = &file.alerts;
    let c = &mut sc.alerts;
    set(&mut c.enabled, f.enabled);
    set_duration(
        &mut c.eval_interval,
        "alerts.eval_interval",
        &f.eval_interval,
    )?;
    if let Some(w) = &f.webhooks {
        for url in w {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "config key alerts.webhooks: {url:?} is not an http(s) URL"
            );
        }
        c.webhooks = w.clone();
    }
    set(&mut c.webhook_retries, f.webhook_retries);
    set_duration(
        &mut c.webhook_backoff,
        "alerts.webhook_backoff",
        &f.webhook_backoff,
    )?;
    set_duration(
        &mut c.webhook_timeout,
        "alerts.webhook_timeout",
        &f.webhook_timeout,
    )?;
    set_duration(&mut c.retention, "alerts.retention", &f.retention)?;

    set(&mut c.crash_loop.enabled, f.crash_loop.enabled);
    if let Some(n) = f.crash_loop.restarts {
        anyhow::ensure!(
            n > 0,
            "config key alerts.crash_loop.restarts: must be at least 1"
        );
        c.crash_loop.restarts = n;
    }
    set_duration(
        &mut c.crash_loop.window,
        "alerts.crash_loop.window",
        &f.crash_loop.window,
    )?;
    set(&mut c.oom_kill.enabled, f.oom_kill.enabled);
    set_duration(
        &mut c.oom_kill.quiet,
        "alerts.oom_kill.quiet",
        &f.oom_kill.quiet,
    )?;
    set(&mut c.node_down.enabled, f.node_down.enabled);
    set_duration(
        &mut c.node_down.for_duration,
        "alerts.node_down.for",
        &f.node_down.for_duration,
    )?;
    set(
        &mut c.deployment_failed.enabled,
        f.deployment_failed.enabled,
    );
    threshold(&mut c.memory, "alerts.memory", &f.memory)?;
    threshold(&mut c.disk, "alerts.disk", &f.disk)?;
    set(&mut c.volume_backup.enabled, f.volume_backup.enabled);
    Ok(())
}

fn set<T: Copy>(to: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *to = v;
    }
}

fn set_duration(to: &mut std::time::Duration, key: &str, v: &Option<String>) -> Result<()> {
    if let Some(d) = duration(key, v)? {
        *to = d;
    }
    Ok(())
}

fn threshold(
    to: &mut corral_server::alerts::config::ThresholdRule,
    key: &str,
    f: &ThresholdFile,
) -> Result<()> {
    set(&mut to.enabled, f.enabled);
    if let Some(p) = f.threshold_percent {
        anyhow::ensure!(
            p > 0.0 && p <= 100.0,
            "config key {key}.threshold_percent: {p} is not a percentage between 0 and 100"
        );
        to.threshold = p / 100.0;
    }
    set_duration(&mut to.for_duration, &format!("{key}.for"), &f.for_duration)
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

    #[test]
    fn reads_events_and_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("corral.toml");
        std::fs::write(
            &p,
            r#"
[server]
event_retention = "6h"
event_max = 1000
alloc_gc_threshold = "2h"
node_gc_threshold = "48h"
[server.alerts]
eval_interval = "1s"
webhooks = ["http://127.0.0.1:9000/hook"]
webhook_retries = 2
webhook_backoff = "500ms"
[server.alerts.crash_loop]
restarts = 5
window = "2m"
[server.alerts.oom_kill]
quiet = "30s"
[server.alerts.node_down]
for = "1m"
[server.alerts.deployment_failed]
enabled = false
[server.alerts.memory]
threshold_percent = 80
for = "10m"
[server.alerts.disk]
enabled = false
[server.alerts.volume_backup]
enabled = false
"#,
        )
        .unwrap();
        let f = load(Some(&p)).unwrap().server;
        let mut sc = corral_server::ServerConfig::new("/tmp/x".into());
        apply_events_and_alerts(&f, &mut sc).unwrap();
        let s = std::time::Duration::from_secs;
        assert_eq!((sc.event_retention, sc.event_max), (s(6 * 3600), 1000));
        assert_eq!((sc.gc.alloc, sc.gc.node), (s(2 * 3600), s(48 * 3600)));
        assert_eq!(sc.gc.eval, s(3600), "untouched keys keep their default");
        let a = &sc.alerts;
        assert!(a.enabled);
        assert_eq!(a.eval_interval, s(1));
        assert_eq!(a.webhooks, vec!["http://127.0.0.1:9000/hook".to_string()]);
        assert_eq!(a.webhook_retries, 2);
        assert_eq!(a.webhook_backoff.as_millis(), 500);
        assert_eq!((a.crash_loop.restarts, a.crash_loop.window), (5, s(120)));
        assert_eq!(a.oom_kill.quiet, s(30));
        assert_eq!(a.node_down.for_duration, s(60));
        assert!(!a.deployment_failed.enabled);
        assert_eq!((a.memory.threshold, a.memory.for_duration), (0.8, s(600)));
        assert!(!a.disk.enabled);
        assert_eq!(a.disk.threshold, 0.9, "untouched keys keep their default");
        assert!(!a.volume_backup.enabled);
        assert!(
            corral_server::alerts::AlertsConfig::default()
                .volume_backup
                .enabled,
            "on by default"
        );

        std::fs::write(&p, "[server.alerts.crash_loop]\nwindw = \"1m\"\n").unwrap();
        let e = load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown field `windw`"), "{e}");
        std::fs::write(&p, "[server.alerts.memory]\nthreshold_percent = 150\n").unwrap();
        let f = load(Some(&p)).unwrap().server;
        let e = apply_events_and_alerts(&f, &mut sc)
            .unwrap_err()
            .to_string();
        assert!(e.contains("alerts.memory.threshold_percent"), "{e}");
    }
}
