//! A private containerd for `corral dev` and the tests: its own root,
//! state, sockets, CNI network and registry settings, all under one
//! directory, so several can run beside each other and beside a system
//! containerd.
//!
//! - [`config`]: `config.toml` and the CNI network list;
//! - [`process`]: [`PrivateContainerd`] (start, wait for the CRI, stop);
//! - [`registry`]: `hosts.toml` for registries over plain HTTP;
//! - [`images`]: importing OCI tarballs with `ctr`.
//!
//! What a Debian machine needs, and why (written into `config.toml`, see
//! [`config::render_config`]): `restrict_oom_score_adj = true` (the CRI
//! gives sandboxes oom_score_adj -998, which root without
//! CAP_SYS_RESOURCE cannot set: runc then fails with "can't get final
//! child's PID from pipe: EOF"); the CNI plugins in `/usr/lib/cni`
//! (Debian's path, not /opt/cni/bin); netns mounts under the instance's
//! state dir; the sandbox image imported beforehand (nothing is pulled
//! from the internet). The driver side (cgroup parent, pull deadlines,
//! exit reasons) is in [`crate::driver::cri`].

pub mod config;
pub mod images;
pub mod process;
pub mod registry;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::{ContainerdConfig, DEFAULT_CNI_CONF_DIR, Paths, cni_gateway, subnet_gateway};
pub use images::import_image;
pub use process::{PrivateContainerd, RunningContainerd, remove_bridge};
pub use registry::register_insecure_registry;

use crate::driver::cri::client::CriClient;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(
        "containerd is not installed: install it with `apt-get install containerd runc containernetworking-plugins`, or point the agent at a running one with --cri-socket"
    )]
    NotInstalled,
    #[error("private containerd in {}: {reason}", root_dir.display())]
    Config { root_dir: PathBuf, reason: String },
    #[error("a CRI runtime already answers on {}: another containerd uses this directory", socket.display())]
    AlreadyRunning { socket: PathBuf },
    #[error("cannot run {}: {source}", bin.display())]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd exited at start ({status}); its log {} ends with:\n{tail}", log.display())]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd's CRI did not answer on {} within {after:?}; its log {} ends with:\n{tail}", socket.display(), log.display())]
    StartTimeout {
        socket: PathBuf,
        after: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd started without its CRI plugin (see {}): {line}", log.display())]
    CriPlugin { log: PathBuf, line: String },
    #[error("cannot stop containerd (pid {pid}): {source}")]
    Stop {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot import image {}: {detail}", tar.display())]
    Import { tar: PathBuf, detail: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("cannot delete bridge {bridge}: {detail}")]
    Bridge { bridge: String, detail: String },
}

/// The first executable `name` in the PATH (then /usr/bin, /usr/local/bin).
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// containerd, when installed.
pub fn find_containerd_binary() -> Option<PathBuf> {
    find_in_path("containerd")
}

/// Whether a CRI runtime answers (Version) on this socket, within a
/// second.
pub async fn probe(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    let fut = async {
        let c = CriClient::connect(socket).await.ok()?;
        c.version_within(Duration::from_secs(1)).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), fut).await,
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_says_how_to_fix_it() {
        assert_eq!(
            ContainerdError::NotInstalled.to_string(),
            "containerd is not installed: install it with `apt-get install containerd runc containernetworking-plugins`, or point the agent at a running one with --cri-socket"
        );
    }

    #[tokio::test]
    async fn probe_of_nothing_is_false() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(!probe(&d.path().join("x.sock")).await);
        // A file that is not a socket.
        std::fs::write(d.path().join("f.sock"), b"").expect("write");
        assert!(!probe(&d.path().join("f.sock")).await);
    }
}
