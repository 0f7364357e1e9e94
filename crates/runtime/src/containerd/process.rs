//! Starting and stopping one private containerd process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::config::{CNI_CONFLIST, ContainerdConfig, Paths, render_cni, render_config};
use super::{ContainerdError, find_containerd_binary, probe};

/// A containerd this process started, with its own root, state, sockets
/// and CNI network. Stopped by [`PrivateContainerd::stop`], or on drop
/// (best effort). Containers it runs survive it (their shims stay).
#[derive(Debug)]
pub struct PrivateContainerd {
    cfg: ContainerdConfig,
    paths: Paths,
    child: Option<tokio::process::Child>,
    pid: i32,
}

impl PrivateContainerd {
    /// Writes the config files, spawns containerd (log:
    /// `<root_dir>/containerd.log`) and waits until its CRI answers.
    pub async fn start(cfg: ContainerdConfig) -> Result<PrivateContainerd, ContainerdError> {
        cfg.validate().map_err(|reason| ContainerdError::Config {
            root_dir: cfg.root_dir.clone(),
            reason,
        })?;
        let bin = match &cfg.containerd_bin {
            Some(b) => b.clone(),
            None => find_containerd_binary().ok_or(ContainerdError::NotInstalled)?,
        };
        let paths = cfg.paths();
        if probe(&paths.socket).await {
            return Err(ContainerdError::AlreadyRunning {
                socket: paths.socket.clone(),
            });
        }
        write_files(&cfg, &paths)?;
        // A socket left by a killed instance would make bind fail.
        for s in [&paths.socket, &paths.ttrpc_socket] {
            let _ = std::fs::remove_file(s);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(|source| io_err(&paths.log, "cannot open", source))?;
        let log2 = log
            .try_clone()
            .map_err(|source| io_err(&paths.log, "cannot open", source))?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .arg("--config")
            .arg(&paths.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Not in the agent's process group: a Ctrl-C of the terminal
            // reaches the agent, which stops containerd in order.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| ContainerdError::Spawn {
                bin: bin.clone(),
                source,
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let deadline = started + cfg.start_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ContainerdError::Exited {
                    status: status.to_string(),
                    log: paths.log.clone(),
                    tail: tail(&paths.log, 15),
                });
            }
            if probe(&paths.socket).await {
                break;
            }
            if let Some(line) = cri_load_failure(&paths.log) {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(ContainerdError::CriPlugin {
                    log: paths.log.clone(),
                    line,
                });
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(ContainerdError::StartTimeout {
                    socket: paths.socket.clone(),
                    after: cfg.start_timeout,
                    log: paths.log.clone(),
                    tail: tail(&paths.log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tracing::info!(pid, socket = %paths.socket.display(), bridge = %cfg.bridge_name,
            subnet = %cfg.subnet, ms = started.elapsed().as_millis() as u64, "private containerd is up");
        Ok(PrivateContainerd {
            cfg,
            paths,
            child: Some(child),
            pid,
        })
    }

    /// The CRI (and containerd API) socket.
    pub fn socket_path(&self) -> &Path {
        &self.paths.socket
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.cfg
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGTERM, then SIGKILL when it has not exited after the stop
    /// timeout. Idempotent.
    pub async fn stop(&mut self) -> Result<(), ContainerdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(self.pid, Signal::TERM);
        match tokio::time::timeout(self.cfg.stop_timeout, child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(ContainerdError::Stop {
                    pid: self.pid,
                    source,
                });
            }
            Err(_) => {
                tracing::warn!(pid = self.pid, after = ?self.cfg.stop_timeout,
                    "containerd ignored SIGTERM; killing it");
                let _ = child.start_kill();
                child.wait().await.map_err(|source| ContainerdError::Stop {
                    pid: self.pid,
                    source,
                })?;
            }
        }
        for s in [&self.paths.socket, &self.paths.ttrpc_socket] {
            let _ = std::fs::remove_file(s);
        }
        tracing::info!(pid = self.pid, "private containerd stopped");
        Ok(())
    }

    /// Deletes the instance's bridge when no interface is attached to it
    /// any more (the CNI plugins never delete it). Call it after every pod
    /// is gone and containerd is stopped.
    pub fn remove_bridge(&self) -> Result<bool, ContainerdError> {
        remove_bridge(&self.cfg.bridge_name)
    }
}

/// Deletes a pod bridge when no interface is attached to it any more;
/// false when it is still in use or not there.
pub fn remove_bridge(br: &str) -> Result<bool, ContainerdError> {
    let brif = Path::new("/sys/class/net").join(br).join("brif");
    let attached = match std::fs::read_dir(&brif) {
        Ok(rd) => rd.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&brif, "cannot read", e)),
    };
    if attached > 0 {
        return Ok(false);
    }
    let out = std::process::Command::new("ip")
        .args(["link", "delete", br, "type", "bridge"])
        .output()
        .map_err(|source| ContainerdError::Spawn {
            bin: PathBuf::from("ip"),
            source,
        })?;
    if !out.status.success() {
        return Err(ContainerdError::Bridge {
            bridge: br.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(true)
}

/// A private containerd this process did not start (it outlived the
/// process that did): found by the config file on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainerd {
    pub pid: i32,
    pub paths: Paths,
    /// Its pod bridge, from the CNI network list it was started with.
    pub bridge: Option<String>,
}

impl RunningContainerd {
    /// The containerd running with `<root_dir>/config.toml`, if any.
    pub fn find(root_dir: &Path) -> Option<RunningContainerd> {
        let paths = Paths::new(root_dir);
        let pid = pid_with_config(&paths.config)?;
        Some(RunningContainerd {
            pid,
            bridge: bridge_of(&paths),
            paths,
        })
    }

    /// SIGTERM, then SIGKILL after `timeout`; returns once it is gone.
    /// It is not our child: its exit is seen in /proc (a zombie counts
    /// as gone, its parent reaps it).
    pub async fn stop(&self, timeout: Duration) {
        signal(self.pid, Signal::TERM);
        if !wait_gone(self.pid, timeout).await {
            tracing::warn!(pid = self.pid, after = ?timeout, "containerd ignored SIGTERM; killing it");
            signal(self.pid, Signal::KILL);
            if !wait_gone(self.pid, Duration::from_secs(5)).await {
                tracing::warn!(pid = self.pid, "containerd survived SIGKILL");
                return;
            }
        }
        for s in [&self.paths.socket, &self.paths.ttrpc_socket] {
            let _ = std::fs::remove_file(s);
        }
        tracing::info!(pid = self.pid, "private containerd stopped");
    }
}

/// The pid of the process whose command line is `... --config <config>`.
fn pid_with_config(config: &Path) -> Option<i32> {
    let want = config.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = cmd.split(|b| *b == 0);
            args.next().is_some_and(|bin| bin.ends_with(b"containerd"))
                && args.any(|a| a == want)
                && is_alive(*pid)
        })
}

/// Whether the process is gone within `timeout`.
async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Whether a process exists and is not a zombie.
fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the last ')' (the command name may hold spaces).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The bridge named in the instance's CNI network list.
fn bridge_of(paths: &Paths) -> Option<String> {
    let file = paths.cni_conf_dir.join(CNI_CONFLIST);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    v["plugins"]
        .as_array()?
        .iter()
        .find_map(|p| p["bridge"].as_str().map(str::to_string))
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(self.pid, Signal::TERM);
        let deadline = Instant::now() + self.cfg.stop_timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.start_kill();
        let _ = child.try_wait();
    }
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn io_err(path: &Path, what: &str, source: std::io::Error) -> ContainerdError {
    ContainerdError::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

fn write_files(cfg: &ContainerdConfig, paths: &Paths) -> Result<(), ContainerdError> {
    for d in paths.dirs() {
        std::fs::create_dir_all(d).map_err(|e| io_err(d, "cannot create", e))?;
    }
    std::fs::write(&paths.config, render_config(cfg))
        .map_err(|e| io_err(&paths.config, "cannot write", e))?;
    let cni = paths.cni_conf_dir.join(CNI_CONFLIST);
    let json = serde_json::to_vec_pretty(&render_cni(cfg)).map_err(|e| ContainerdError::Io {
        what: "cannot encode the CNI config".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&cni, json).map_err(|e| io_err(&cni, "cannot write", e))?;
    Ok(())
}

/// The log line saying the CRI plugin did not load (containerd then runs
/// on without it, and the CRI socket never answers).
fn cri_load_failure(log: &Path) -> Option<String> {
    let s = std::fs::read_to_string(log).ok()?;
    s.lines()
        .rev()
        .find(|l| l.contains("failed to load plugin io.containerd.grpc.v1.cri"))
        .map(str::to_string)
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(s) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
