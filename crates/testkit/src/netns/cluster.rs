//! A cluster of real `corral` processes: one server in the root namespace,
//! one agent per host namespace; fault helpers and invariant checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_types::ClientStatus;
use corral_types::api::NodeView;
use rustix::process::Signal;

use super::corral_bin;
use super::host::{self, Cut, Host};
use super::procs::{self, TaskProc};
use super::slot::{self, NET_PREFIX, Slot};
use crate::eventually;

/// The server's port on the bridge address.
pub const SERVER_PORT: u16 = 7070;
/// Each agent's HTTP port on its host address.
pub const AGENT_PORT: u16 = 7071;

/// How to build a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: usize,
    /// `zone` label per host, cycled (default a, b, c).
    pub zones: Vec<String>,
    /// `CORRAL_LOG` of the server and agents (default: `$CORRAL_LOG`, else
    /// `info`). Logs go to files in the cluster dir; their tail is printed
    /// when a test fails, all of them with `CORRAL_TEST_LOGS=1`.
    pub log: String,
    /// Extra environment of every agent process (e.g. a kill point).
    pub agent_env: Vec<(String, String)>,
    /// The server's config file (TOML), if any (`corral server --config`).
    pub server_config: Option<String>,
}

impl ClusterOptions {
    pub fn new(hosts: usize) -> Self {
        ClusterOptions {
            hosts,
            zones: ["a", "b", "c"].map(String::from).to_vec(),
            log: std::env::var("CORRAL_LOG").unwrap_or_else(|_| "info".into()),
            agent_env: Vec::new(),
            server_config: None,
        }
    }
}

/// A server and `hosts` agents, each agent in its own network namespace.
/// Dropping it removes everything it made (see the module docs).
pub struct Cluster {
    /// For messages.
    pub name: String,
    slot: Slot,
    pub hosts: Vec<Host>,
    pub client: Client,
    server: Option<Child>,
    log: String,
    /// Extra environment of the agents started from now on.
    pub agent_env: Vec<(String, String)>,
    server_config: Option<String>,
    /// Allocation ids seen by [`Cluster::no_duplicates`]: their cgroups
    /// are removed on drop even when no agent recorded them.
    seen_allocs: std::sync::Mutex<BTreeSet<String>>,
}

impl Cluster {
    /// A 3-host cluster with the default options, every node ready.
    pub async fn start(name: &str) -> Cluster {
        Self::start_with(name, ClusterOptions::new(3)).await
    }

    pub async fn start_with(name: &str, opts: ClusterOptions) -> Cluster {
        let bin = corral_bin();
        assert!(bin.is_file(), "no corral binary at {}", bin.display());
        let slot = slot::claim();
        let n = slot.n;
        let url = format!("http://{NET_PREFIX}.{n}.1:{SERVER_PORT}");
        let mut cluster = Cluster {
            name: name.to_string(),
            client: Client::new(&url, None),
            hosts: vec![],
            server: None,
            log: opts.log.clone(),
            agent_env: opts.agent_env.clone(),
            server_config: opts.server_config.clone(),
            seen_allocs: Default::default(),
            slot,
        };
        // From here on a panic drops `cluster`, which cleans up.
        for i in 0..opts.hosts {
            if let Err(e) = slot::create_host(n, i) {
                panic!("{name}: cannot create host {i}: {e}");
            }
            let dir = cluster.slot.dir.join(format!("host-{i}"));
            std::fs::create_dir_all(dir.join("agent")).expect("host dir");
            cluster.hosts.push(Host {
                index: i,
                netns: slot::netns_name(n, i),
                node_name: format!("host-{i}"),
                ip: Ipv4Addr::new(10, 79, n, i as u8 + 2),
                zone: match opts.zones.len() {
                    0 => "a".to_string(),
                    z => opts.zones[i % z].clone(),
                },
                dir,
                veth: slot::veth_name(n, i),
                agent: None,
                cut: None,
                paused: false,
            });
        }
        cluster.spawn_server();
        cluster.wait_server().await;
        for i in 0..opts.hosts {
            cluster.spawn_agent(i);
        }
        cluster.wait_all_ready(Duration::from_secs(30)).await;
        eprintln!(
            "{name}: cluster up in slot {n} (server {url}, {} hosts, dir {})",
            opts.hosts,
            cluster.slot.dir.display()
        );
        cluster
    }

    /// `http://10.79.<slot>.1:7070`
    pub fn server_url(&self) -> String {
        self.client.addr().to_string()
    }

    pub fn dir(&self) -> PathBuf {
        self.slot.dir.clone()
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The host whose node is called `name`.
    pub fn host_of_node(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.node_name == name)
    }

    fn log_file(&self, path: PathBuf) -> (Stdio, Stdio) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let f2 = f.try_clone().expect("dup log fd");
        (Stdio::from(f), Stdio::from(f2))
    }

    fn prepare(&self, cmd: &mut Command, log: PathBuf) {
        let (out, err) = self.log_file(log);
        cmd.env("CORRAL_LOG", &self.log)
            .env("NO_COLOR", "1")
            .env_remove("CORRAL_ADDR")
            .env_remove("CORRAL_SERVER")
            .env_remove("CORRAL_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
    }

    fn spawn_server(&mut self) {
        assert!(
            self.server.is_none(),
            "{}: the server already runs",
            self.name
        );
        let addr = format!("{NET_PREFIX}.{}.1:{SERVER_PORT}", self.slot.n);
        let mut cmd = Command::new(corral_bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.slot.dir.join("server"))
            .args(["--addr", &addr]);
        if let Some(text) = &self.server_config {
            let path = self.slot.dir.join("server.toml");
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("{}: cannot write the server config: {e}", self.name));
            cmd.arg("--config").arg(path);
        }
        self.prepare(&mut cmd, self.slot.dir.join("server.log"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start the server: {e}", self.name));
        let _ = std::fs::write(
            self.slot.dir.join("server.pid"),
            slot::pid_line(child.id() as i32),
        );
        self.server = Some(child);
    }

    async fn wait_server(&self) {
        let c = self.client.clone();
        eventually("the server answers", Duration::from_secs(20), || async {
            c.nodes().await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
    }

    fn spawn_agent(&mut self, i: usize) {
        let url = self.server_url();
        let h = &self.hosts[i];
        assert!(
            h.agent.is_none(),
            "{}: the agent of host {i} already runs",
            self.name
        );
        let mut cmd = h.command(corral_bin());
        cmd.arg("agent")
            .args(["--server", &url])
            .arg("--data-dir")
            .arg(h.data_dir())
            .args(["--name", &h.node_name])
            .args(["--label", &format!("zone={}", h.zone)])
            .args(["--http-addr", &format!("{}:{AGENT_PORT}", h.ip)])
            // Exec only: nothing answers there, so the container driver
            // is left out at once.
            .arg("--cri-socket")
            .arg(h.dir.join("no-containerd.sock"));
        self.prepare(&mut cmd, h.agent_log());
        cmd.envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start the agent of host {i}: {e}", self.name));
        self.hosts[i].agent = Some(child);
    }

    async fn wait_all_ready(&self, deadline: Duration) {
        for i in 0..self.hosts.len() {
            self.wait_node_status(i, "ready", deadline).await;
        }
    }

    // Faults.

    /// A host crash: SIGKILL its agent and every process in the host (the
    /// tasks), then remove the cgroups they were in, as a reboot would.
    /// [`Cluster::restart_agent`] brings the host back.
    pub fn kill_host(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let ino = h.netns_inode().expect("host namespace");
        let cgroups = procs::kill_netns(&[ino]);
        if let Some(mut c) = h.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        h.paused = false;
        procs::remove_cgroups(&cgroups);
    }

    /// SIGKILL the agent only; its tasks keep running.
    pub fn kill_agent(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let mut c = h
            .agent
            .take()
            .unwrap_or_else(|| panic!("host {i} runs no agent"));
        let _ = c.kill();
        let _ = c.wait();
        h.paused = false;
    }

    /// Whether host `i`'s agent process has exited (killed itself at a
    /// kill point, or crashed), and how.
    pub fn agent_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.hosts[i]
            .agent
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Starts host `i`'s agent again on the same data dir (same node id).
    pub fn restart_agent(&mut self, i: usize) {
        if let Some(c) = self.hosts[i].agent.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            eprintln!("{}: the agent of host {i} had exited: {status}", self.name);
            self.hosts[i].agent = None;
        }
        self.spawn_agent(i);
    }

    /// SIGSTOP the agent: it neither beats nor syncs; tasks run on.
    pub fn pause_host(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let pid = h
            .agent_pid()
            .unwrap_or_else(|| panic!("host {i} runs no agent"));
        procs::signal(pid, Signal::STOP);
        h.paused = true;
    }

    pub fn resume_host(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(pid) = h.agent_pid() {
            procs::signal(pid, Signal::CONT);
        }
        h.paused = false;
    }

    /// Drop every packet into and out of host `i` (loopback excepted):
    /// iptables DROP rules in the host, or its veth down when iptables
    /// cannot.
    pub fn cut_off(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        assert!(h.cut.is_none(), "host {i} is already cut off");
        let rules = h
            .run(
                "iptables",
                &["-w", "-I", "INPUT", "1", "!", "-i", "lo", "-j", "DROP"],
            )
            .and_then(|_| {
                h.run(
                    "iptables",
                    &["-w", "-I", "OUTPUT", "1", "!", "-o", "lo", "-j", "DROP"],
                )
            });
        match rules {
            Ok(_) => h.cut = Some(Cut::Iptables),
            Err(e) => {
                eprintln!(
                    "iptables in {} failed ({e}); setting its link down",
                    h.netns
                );
                host::run("ip", &["link", "set", &h.veth, "down"])
                    .unwrap_or_else(|e| panic!("cannot cut host {i} off: {e}"));
                h.cut = Some(Cut::LinkDown);
            }
        }
    }

    /// Undo [`Cluster::cut_off`].
    pub fn heal(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        match h.cut.take() {
            Some(Cut::Iptables) => {
                for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
                    h.run(
                        "iptables",
                        &["-w", "-D", chain, "!", dir, "lo", "-j", "DROP"],
                    )
                    .unwrap_or_else(|e| panic!("cannot heal host {i}: {e}"));
                }
            }
            Some(Cut::LinkDown) => {
                host::run("ip", &["link", "set", &h.veth, "up"])
                    .unwrap_or_else(|e| panic!("cannot heal host {i}: {e}"));
            }
            None => panic!("host {i} is not cut off"),
        }
    }

    /// SIGKILL the server.
    pub fn kill_server(&mut self) {
        let mut c = self.server.take().expect("the server runs");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Start the server again on its data dir and address; returns once it
    /// answers.
    pub async fn restart_server(&mut self) {
        self.spawn_server();
        self.wait_server().await;
    }

    // Looking.

    pub async fn nodes(&self) -> Result<Vec<NodeView>, String> {
        self.client.nodes().await.map_err(|e| e.to_string())
    }

    /// The node of host `i` as the server sees it.
    pub async fn node(&self, i: usize) -> Result<NodeView, String> {
        let name = &self.hosts[i].node_name;
        self.nodes()
            .await?
            .into_iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| format!("no node {name}"))
    }

    /// Waits until host `i`'s node has `status` (ready, down, ...);
    /// returns how long that took.
    pub async fn wait_node_status(&self, i: usize, status: &str, deadline: Duration) -> Duration {
        let t = Instant::now();
        let what = format!("{}: node host-{i} {status}", self.name);
        eventually(&what, deadline, || async {
            let n = self.node(i).await?;
            if n.status == status {
                Ok(())
            } else {
                Err(format!("it is {}", n.status))
            }
        })
        .await;
        t.elapsed()
    }

    /// Every task main process of the cluster's hosts.
    pub fn task_procs(&self) -> Vec<TaskProc> {
        let inodes: Vec<(usize, u64)> = self
            .hosts
            .iter()
            .filter_map(|h| h.netns_inode().map(|ino| (h.index, ino)))
            .collect();
        let by_ns = procs::pids_by_netns(&inodes.iter().map(|(_, i)| *i).collect::<Vec<_>>());
        let mut out = vec![];
        for (host, ino) in inodes {
            if let Some(pids) = by_ns.get(&ino) {
                out.extend(procs::task_procs(host, pids));
            }
        }
        out
    }

    /// The task processes of `job`.
    pub fn job_procs(&self, job: &str) -> Vec<TaskProc> {
        self.task_procs()
            .into_iter()
            .filter(|p| p.job == job)
            .collect()
    }

    /// No (group, index) of the `jobs` runs twice: at most one allocation
    /// per (job, group, index) is `running` per the server, and at most one
    /// main process per (job, group, index, task) lives on the machine.
    pub async fn no_duplicates(&self, jobs: &[&str]) -> Result<(), String> {
        let allocs = self.client.allocs(None).await.map_err(|e| e.to_string())?;
        if let Ok(mut seen) = self.seen_allocs.lock() {
            seen.extend(allocs.iter().map(|a| a.id.clone()));
        }
        let mut problems = vec![];
        let mut running: BTreeMap<(String, String, u32), Vec<String>> = BTreeMap::new();
        for a in allocs.iter().filter(|a| jobs.contains(&a.job.as_str())) {
            if a.status == ClientStatus::Running {
                running
                    .entry((a.job.clone(), a.group.clone(), a.index))
                    .or_default()
                    .push(format!("{} on {}", a.id, a.node));
            }
        }
        for (k, v) in &running {
            if v.len() > 1 {
                problems.push(format!("server: {k:?} running {} times: {v:?}", v.len()));
            }
        }
        let mut live: BTreeMap<(String, String, u32, String), Vec<String>> = BTreeMap::new();
        for p in self.task_procs() {
            if jobs.contains(&p.job.as_str()) {
                live.entry((p.job.clone(), p.group.clone(), p.index, p.task.clone()))
                    .or_default()
                    .push(format!(
                        "pid {} alloc {} on host-{}",
                        p.pid, p.alloc_id, p.host
                    ));
            }
        }
        for (k, v) in &live {
            if v.len() > 1 {
                problems.push(format!("machine: {k:?} has {} processes: {v:?}", v.len()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Panics when [`Cluster::no_duplicates`] finds a duplicate now.
    pub async fn assert_no_duplicates(&self, job: &str) {
        if let Err(e) = self.no_duplicates(&[job]).await {
            panic!("{}: job {job} runs an index twice: {e}", self.name);
        }
    }

    /// Waits until [`Cluster::no_duplicates`] holds for `jobs`.
    pub async fn wait_no_duplicates(&self, jobs: &[&str], deadline: Duration) -> Duration {
        let t = Instant::now();
        eventually(
            &format!("{}: no duplicate of {jobs:?}", self.name),
            deadline,
            || self.no_duplicates(jobs),
        )
        .await;
        t.elapsed()
    }

    /// Every job in `names` is known to the server.
    pub async fn assert_jobs_present<S: AsRef<str>>(&self, names: &[S]) {
        let jobs = self.client.jobs().await.expect("list jobs");
        let have: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        let lost: Vec<&str> = names
            .iter()
            .map(AsRef::as_ref)
            .filter(|n| !have.contains(n))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: acknowledged jobs are gone: {lost:?}",
            self.name
        );
    }

    /// The last `lines` lines of the server's and every agent's log.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut files = vec![("server".to_string(), self.slot.dir.join("server.log"))];
        files.extend(
            self.hosts
                .iter()
                .map(|h| (format!("agent host-{}", h.index), h.agent_log())),
        );
        for (what, path) in files {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("----- {what} ({}) -----\n", path.display()));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: test failed; last log lines:\n{}",
                self.name,
                self.logs_tail(60)
            );
        } else if std::env::var("CORRAL_TEST_LOGS").is_ok_and(|v| v == "1") {
            eprintln!("{}: logs:\n{}", self.name, self.logs_tail(usize::MAX));
        }
        for h in &mut self.hosts {
            if let Some(mut c) = h.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let seen = self
            .seen_allocs
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        slot::teardown(self.slot.n, &self.slot.dir, &seen);
    }
}
