//! One host: a network namespace with one veth into the cluster's bridge.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::procs;

/// How a host was cut off, to undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// DROP rules in the host's own iptables (gone with the namespace).
    Iptables,
    /// The root side of its veth set down.
    LinkDown,
}

/// One host of a [`super::Cluster`].
#[derive(Debug)]
pub struct Host {
    pub index: usize,
    /// The network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The node name its agent registers (`host-<index>`).
    pub node_name: String,
    pub ip: Ipv4Addr,
    /// The `zone` label of its node.
    pub zone: String,
    /// Everything of this host on disk: `agent/` (the agent's data dir)
    /// and `agent.log`.
    pub dir: PathBuf,
    /// The root side of its veth pair.
    pub veth: String,
    pub(crate) agent: Option<Child>,
    pub(crate) cut: Option<Cut>,
    pub(crate) paused: bool,
}

impl Host {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The agent's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The namespace's inode (what `/proc/PID/ns/net` of its processes
    /// points to).
    pub fn netns_inode(&self) -> Option<u64> {
        procs::netns_inode(&self.netns_path())
    }

    /// A command that runs `program` inside this host (its network
    /// namespace only: the mounts, `/sys/fs/cgroup` included, stay the
    /// machine's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Starts `program args...` inside this host.
    pub fn spawn(&self, program: &str, args: &[&str]) -> std::io::Result<Child> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
    }

    /// Runs `program args...` inside this host; its stdout, or why it
    /// failed.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        output(
            self.command(program).args(args),
            &format!("{program} {args:?}"),
        )
    }

    /// The agent's pid, while one runs.
    pub fn agent_pid(&self) -> Option<i32> {
        self.agent.as_ref().map(|c| c.id() as i32)
    }

    /// Every live process in this host.
    pub fn pids(&self) -> Vec<i32> {
        let Some(ino) = self.netns_inode() else {
            return vec![];
        };
        procs::pids_by_netns(&[ino])
            .remove(&ino)
            .unwrap_or_default()
    }

    pub fn is_cut_off(&self) -> bool {
        self.cut.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// Runs a command to completion; its stdout, or its stderr as the error.
pub(crate) fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).to_string()),
        Ok(o) => Err(format!(
            "{what}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Runs `program args...` in the root namespace.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    output(
        Command::new(program).args(args),
        &format!("{program} {}", args.join(" ")),
    )
}
