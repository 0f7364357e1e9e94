//! Registries spoken to over plain HTTP: one `hosts.toml` per registry in
//! the directory the CRI's `registry.config_path` points at. containerd
//! reads it at every pull, so no restart is needed.

use std::path::{Path, PathBuf};

use super::ContainerdError;

/// The `hosts.toml` of an insecure registry at `host:port`.
pub fn insecure_hosts_toml(host_port: &str) -> String {
    format!(
        "server = \"http://{host_port}\"\n\n[host.\"http://{host_port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
    )
}

/// Writes `<certs_dir>/<host:port>/hosts.toml`; returns its path.
pub fn register_insecure_registry(
    certs_dir: &Path,
    host_port: &str,
) -> Result<PathBuf, ContainerdError> {
    let valid = !host_port.is_empty()
        && host_port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        && !host_port.starts_with('.');
    if !valid {
        return Err(ContainerdError::Registry {
            registry: host_port.to_string(),
            reason: "expected host:port".into(),
        });
    }
    let dir = certs_dir.join(host_port);
    let file = dir.join("hosts.toml");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, insecure_hosts_toml(host_port)))
        .map_err(|source| ContainerdError::Io {
            what: format!("cannot write {}", file.display()),
            source,
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_for_plain_http() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = register_insecure_registry(d.path(), "10.0.0.5:5000").expect("written");
        assert_eq!(f, d.path().join("10.0.0.5:5000/hosts.toml"));
        let s = std::fs::read_to_string(f).expect("read");
        assert!(s.starts_with("server = \"http://10.0.0.5:5000\"\n"), "{s}");
        assert!(s.contains("[host.\"http://10.0.0.5:5000\"]"));
        assert!(s.contains("capabilities = [\"pull\", \"resolve\"]"));
        assert!(s.contains("skip_verify = true"));
        assert!(register_insecure_registry(d.path(), "../etc").is_err());
        assert!(register_insecure_registry(d.path(), "a/b:1").is_err());
    }
}
