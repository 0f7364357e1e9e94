//! Real containers for end-to-end tests: a private containerd per test
//! (its own root, sockets, bridge and subnet), images built from
//! busybox-static, a local registry, and the checks that a test left
//! nothing behind (containers, sandboxes, shims, netns, veths, nat rules,
//! the bridge).
//!
//! These tests need root, containerd, runc, ctr, the CNI plugins and
//! busybox-static. Where they are missing a test skips with a message, or
//! fails when `CORRAL_REQUIRE_ROOT_TESTS=1` (scripts/test sets it: a skip must
//! never look like a pass there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corral_agent::containerd::images::CRI_NAMESPACE;
use corral_agent::containerd::{ContainerdConfig, PrivateContainerd, import_image};
use corral_agent::driver::cri::client::CriClient;
use corral_agent::driver::cri::sandbox::{LABEL_ALLOC, LABEL_TASK};
use corral_agent::driver::cri::{CriConfig, CriDriver};
use corral_agent::image::{BUSYBOX, ImageSpec, PAUSE_IMAGE, build_into, busybox_files, demo_image};
use k8s_cri::v1 as cri;

use crate::eventually;

/// Set to 1 to make a missing prerequisite fail the container tests.
pub use crate::prereq::REQUIRE_ENV;

/// A plain busybox image for tests that bring their own command.
pub const BUSYBOX_IMAGE: &str = "corral.local/busybox:e2e";

/// Subnets of the private containerds: `10.78.<n>.0/24` (the driver tests
/// of crates/runtime use 10.77, `corral dev` its own).
const SUBNET_PREFIX: &str = "10.78";

/// What this machine lacks to run real containers (empty: nothing).
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = vec![];
    if !crate::procs::is_root() {
        missing.push("root (cgroups, network namespaces, iptables)".to_string());
    }
    for bin in ["containerd", "runc", "ctr", "ip", "iptables"] {
        if find_bin(bin).is_none() {
            missing.push(format!("the `{bin}` binary"));
        }
    }
    for (what, path) in [
        (
            "the CNI plugins (containernetworking-plugins)",
            "/usr/lib/cni/bridge",
        ),
        ("busybox-static", BUSYBOX),
    ] {
        if !Path::new(path).exists() {
            missing.push(format!("{what} ({path})"));
        }
    }
    missing
}

/// Whether the container tests can run here. When they cannot: `false`
/// with a message on stderr, or a panic when [`REQUIRE_ENV`] is 1.
pub fn can_run(test: &str) -> bool {
    crate::prereq::can_run(test, "run real containers", &missing_prerequisites())
}

use crate::prereq::find_bin;

/// A claimed network: a bridge name and a /24 no other test (in any
/// process) uses while the claim is held. The claim is a bound abstract
/// Unix socket (`@corral-e2e-net-<n>`): released when dropped or when the
/// process dies, and no file is left behind.
pub struct NetworkClaim {
    pub bridge: String,
    pub subnet: String,
    _claim: std::os::unix::net::UnixListener,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Claims `10.78.<n>.0/24` (and bridge `ce2e<n>`) for a `n` that no other
/// test holds and no address or route of this machine is in.
pub fn claim_network() -> NetworkClaim {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let used = command_stdout("ip", &["-o", "-4", "addr"]) + &command_stdout("ip", &["route"]);
    let start = std::process::id()
        .wrapping_mul(7)
        .wrapping_add(NEXT.fetch_add(13, Ordering::SeqCst));
    for i in 0..250u32 {
        let n = start.wrapping_add(i) % 250 + 1;
        if used.contains(&format!("{SUBNET_PREFIX}.{n}.")) {
            continue;
        }
        let Ok(addr) = SocketAddr::from_abstract_name(format!("corral-e2e-net-{n}")) else {
            continue;
        };
        // Taken by another test when the name is bound already.
        let Ok(claim) = UnixListener::bind_addr(&addr) else {
            continue;
        };
        return NetworkClaim {
            bridge: format!("ce2e{n}"),
            subnet: format!("{SUBNET_PREFIX}.{n}.0/24"),
            _claim: claim,
        };
    }
    panic!("no free {SUBNET_PREFIX}.x.0/24 subnet on this machine");
}

fn command_stdout(bin: &str, args: &[&str]) -> String {
    std::process::Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// A busybox image running `entrypoint` (default: sleep).
pub fn busybox_image(name: &str, entrypoint: &[&str]) -> ImageSpec {
    ImageSpec {
        name: name.to_string(),
        entrypoint: if entrypoint.is_empty() {
            vec!["/bin/sleep".into(), "3600".into()]
        } else {
            entrypoint.iter().map(|s| s.to_string()).collect()
        },
        cmd: vec![],
        env: vec!["PATH=/bin".into()],
        workdir: Some("/".into()),
        files: busybox_files(Path::new(BUSYBOX)),
    }
}

/// A task container as the CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub sandbox_id: String,
    /// The container's name (the task's).
    pub name: String,
    pub attempt: u32,
    pub running: bool,
    pub alloc_id: String,
    pub task: String,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// One test's containerd: started under a short directory in /tmp, with
/// its own bridge and subnet. [`ContainerNode::finish`] checks that
/// nothing is left and stops it; dropped without `finish` (a failed test),
/// it removes every sandbox, stops containerd, kills leftover shims and
/// deletes the bridge.
pub struct ContainerNode {
    // Fields drop in order: containerd stops before its directory goes.
    pub containerd: PrivateContainerd,
    pub cri: CriClient,
    pub dir: tempfile::TempDir,
    finished: bool,
    // Last: the bridge and subnet stay claimed until everything is gone.
    _network: NetworkClaim,
}

impl ContainerNode {
    /// Starts a private containerd whose sandbox image is corral's pause
    /// image (the agent imports it when it connects).
    pub async fn start(test: &str) -> ContainerNode {
        let dir = tempfile::Builder::new()
            .prefix("ct")
            // CORRAL_TEST_KEEP=1 keeps the directory (containerd.log) for
            // a look after a failure.
            .disable_cleanup(std::env::var_os("CORRAL_TEST_KEEP").is_some())
            .tempdir_in("/tmp")
            .expect("tempdir in /tmp");
        let network = claim_network();
        let (bridge, subnet) = (network.bridge.clone(), network.subnet.clone());
        portmap_user();
        let cfg = ContainerdConfig::new(dir.path().join("c"), &bridge, &subnet, PAUSE_IMAGE);
        let t = std::time::Instant::now();
        let containerd = PrivateContainerd::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("{test}: private containerd: {e}"));
        let cri = CriClient::connect(containerd.socket_path())
            .await
            .expect("CRI client")
            .with_timeout(Duration::from_secs(30));
        eprintln!(
            "[{test}] containerd {} up in {} ms (bridge {bridge}, {subnet})",
            dir.path().display(),
            t.elapsed().as_millis()
        );
        ContainerNode {
            dir,
            containerd,
            cri,
            finished: false,
            _network: network,
        }
    }

    pub fn socket(&self) -> &Path {
        self.containerd.socket_path()
    }

    pub fn bridge(&self) -> &str {
        &self.containerd.config().bridge_name
    }

    pub fn subnet(&self) -> &str {
        &self.containerd.config().subnet
    }

    /// Builds `spec` as an OCI archive in the node's dir; returns the file.
    pub fn build(&self, spec: &ImageSpec) -> PathBuf {
        let dir = self.dir.path().join("images");
        std::fs::create_dir_all(&dir).expect("images dir");
        build_into(spec, &dir).unwrap_or_else(|e| panic!("building {}: {e}", spec.name))
    }

    /// Builds and imports `spec`; returns its name.
    pub async fn import(&self, spec: &ImageSpec) -> String {
        let tar = self.build(spec);
        let names = import_image(self.socket(), &tar)
            .await
            .unwrap_or_else(|e| panic!("importing {}: {e}", spec.name));
        assert!(names.contains(&spec.name), "{names:?}");
        spec.name.clone()
    }

    /// The demo image (`corral.local/demo:1`).
    pub async fn import_demo(&self) -> String {
        self.import(&demo_image(Path::new(BUSYBOX))).await
    }

    /// `ctr --address SOCK -n k8s.io ARGS`: its stdout, or a panic with
    /// its stderr.
    pub async fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args).await;
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub async fn ctr_output(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", CRI_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("ctr runs")
    }

    /// Ids of the containerd containers (task containers and sandboxes'
    /// pause containers alike), from `ctr containers ls -q`.
    pub async fn ctr_containers(&self) -> Vec<String> {
        lines(&self.ctr(&["containers", "ls", "-q"]).await)
    }

    /// Ids of containerd tasks (live processes), from `ctr tasks ls`.
    pub async fn ctr_tasks(&self) -> Vec<String> {
        self.ctr(&["tasks", "ls"])
            .await
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// The pid of a containerd task (a sandbox's pause process, or a
    /// container's), from `ctr tasks ls`.
    pub async fn task_pid(&self, id: &str) -> Option<i32> {
        self.ctr(&["tasks", "ls"]).await.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id)).then(|| f.next()?.parse().ok())?
        })
    }

    /// SIGKILLs the pause process of a sandbox (as the OOM killer or a
    /// stray `kill -9` would) and waits until the runtime says so.
    pub async fn kill_pause(&self, sandbox_id: &str) {
        let pid = self
            .task_pid(sandbox_id)
            .await
            .unwrap_or_else(|| panic!("no pause process for sandbox {sandbox_id}"));
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        eventually(
            "the sandbox to be not ready",
            Duration::from_secs(30),
            || async {
                match self.sandboxes().await.get(sandbox_id) {
                    Some(true) => Err("still ready".to_string()),
                    _ => Ok(()),
                }
            },
        )
        .await;
    }

    /// Runs a command in a container (CRI ExecSync); its exit code.
    pub async fn exec(&self, container_id: &str, cmd: &[&str]) -> i32 {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        self.cri
            .exec_sync(container_id, &cmd, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?} in {container_id}: {e}"))
            .exit_code
    }

    /// Task containers, as the CRI lists them.
    pub async fn containers(&self) -> Vec<ContainerInfo> {
        let list = self
            .cri
            .list_containers(cri::ContainerFilter::default())
            .await
            .expect("ListContainers");
        let mut out: Vec<ContainerInfo> = list
            .into_iter()
            .map(|c| ContainerInfo {
                name: c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                running: c.state == cri::ContainerState::ContainerRunning as i32,
                alloc_id: c.labels.get(LABEL_ALLOC).cloned().unwrap_or_default(),
                task: c.labels.get(LABEL_TASK).cloned().unwrap_or_default(),
                created_at: c.created_at,
                sandbox_id: c.pod_sandbox_id,
                id: c.id,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Running task containers.
    pub async fn running_containers(&self) -> Vec<ContainerInfo> {
        let mut c = self.containers().await;
        c.retain(|c| c.running);
        c
    }

    /// Pod sandboxes (any state): id -> ready.
    pub async fn sandboxes(&self) -> HashMap<String, bool> {
        self.cri
            .list_pod_sandbox(cri::PodSandboxFilter::default())
            .await
            .expect("ListPodSandbox")
            .into_iter()
            .map(|s| (s.id, s.state == cri::PodSandboxState::SandboxReady as i32))
            .collect()
    }

    /// When a container started (Unix ns), from ContainerStatus.
    pub async fn started_at(&self, container_id: &str) -> i64 {
        self.cri
            .container_status(container_id)
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {container_id}: {e}"))
            .started_at
    }

    /// The network namespace mounts under containerd's state dir.
    pub fn netns_left(&self) -> Vec<PathBuf> {
        let mut dirs = vec![];
        find_dirs_named(&self.containerd.paths().state, "netns", &mut dirs);
        dirs.into_iter()
            .flat_map(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
            })
            .collect()
    }

    /// Interfaces attached to this node's bridge (the pods' veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        std::fs::read_dir(Path::new("/sys/class/net").join(self.bridge()).join("brif"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// nat rules that mention this node's subnet (the bridge plugin's
    /// masquerade chains, portmap's DNAT rules).
    pub fn nat_rules(&self) -> Vec<String> {
        let prefix = self.subnet().trim_end_matches("0/24").to_string();
        command_stdout("iptables", &["-t", "nat", "-S"])
            .lines()
            .filter(|l| l.contains(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// What CNI wrote into the nat table for a sandbox: the rules whose
    /// comment names it and the chains they jump to (`-N` lines first),
    /// as `iptables -t nat -S` prints them.
    pub fn cni_nat_of(&self, sandbox_id: &str) -> Vec<String> {
        let all = command_stdout("iptables", &["-t", "nat", "-S"]);
        let owned: Vec<&str> = all
            .lines()
            .filter(|l| l.contains(&format!("id: \\\"{sandbox_id}\\\"")))
            .collect();
        let chains: Vec<&str> = owned
            .iter()
            .filter_map(|l| l.rsplit_once(" -j ").map(|(_, j)| j.trim()))
            .filter(|j| j.starts_with("CNI-") && !j.starts_with("CNI-HOSTPORT-"))
            .collect();
        let mut out: Vec<String> = chains.iter().map(|c| format!("-N {c}")).collect();
        for l in all.lines() {
            let in_chain = chains.iter().any(|c| l.starts_with(&format!("-A {c} ")));
            if in_chain || owned.contains(&l) {
                out.push(l.to_string());
            }
        }
        out.dedup();
        out
    }

    /// host-local leases that name a sandbox: (file, content).
    pub fn cni_leases_of(&self, sandbox_id: &str) -> Vec<(PathBuf, String)> {
        let mut out = vec![];
        let ipam = &self.containerd.paths().cni_ipam_dir;
        for net in std::fs::read_dir(ipam).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                if text.lines().next().map(str::trim) == Some(sandbox_id) {
                    out.push((f.path(), text));
                }
            }
        }
        out
    }

    /// Live processes of this containerd: itself and its shims (their
    /// command lines carry its root dir).
    pub fn processes(&self) -> Vec<u32> {
        let root = &self.containerd.config().root_dir;
        crate::procs::live_with_marker(&format!("{}/", root.display()))
    }

    /// Live shims of this containerd (`-address <its socket>`).
    pub fn shims(&self) -> Vec<u32> {
        crate::procs::live_with_marker(&format!("-address {}", self.socket().display()))
    }

    /// Everything that should be gone when no job runs here, one line per
    /// kind (empty: clean).
    pub async fn leftovers(&self) -> Vec<String> {
        let mut left = vec![];
        let sandboxes = self.sandboxes().await;
        if !sandboxes.is_empty() {
            left.push(format!("sandboxes: {sandboxes:?}"));
        }
        let containers = self.containers().await;
        if !containers.is_empty() {
            left.push(format!("containers: {containers:?}"));
        }
        let ctr = self.ctr_containers().await;
        if !ctr.is_empty() {
            left.push(format!("ctr containers: {ctr:?}"));
        }
        let tasks = self.ctr_tasks().await;
        if !tasks.is_empty() {
            left.push(format!("ctr tasks: {tasks:?}"));
        }
        let netns = self.netns_left();
        if !netns.is_empty() {
            left.push(format!("netns: {netns:?}"));
        }
        let veths = self.bridge_ports();
        if !veths.is_empty() {
            left.push(format!("veths on {}: {veths:?}", self.bridge()));
        }
        let nat = self.nat_rules();
        if !nat.is_empty() {
            left.push(format!("nat rules: {nat:?}"));
        }
        let shims = self.shims();
        if !shims.is_empty() {
            left.push(format!("shims: {shims:?}"));
        }
        left
    }

    /// Waits until nothing of any job is left on this node.
    pub async fn wait_clean(&self, deadline: Duration) {
        eventually("nothing left on the node", deadline, || async {
            let left = self.leftovers().await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("; "))
            }
        })
        .await;
    }

    /// Checks that nothing is left, then stops containerd and deletes its
    /// bridge (and portmap's chains when this node made them).
    pub async fn finish(mut self) {
        self.wait_clean(Duration::from_secs(30)).await;
        self.containerd.stop().await.expect("containerd stops");
        self.containerd.remove_bridge().expect("bridge removed");
        assert!(
            !Path::new("/sys/class/net").join(self.bridge()).exists(),
            "bridge {} left",
            self.bridge()
        );
        let procs = self.processes();
        assert!(procs.is_empty(), "processes left: {procs:?}");
        portmap_user_done();
        self.finished = true;
    }
}

impl Drop for ContainerNode {
    /// A test that failed half-way: remove its sandboxes (containers,
    /// netns, veths, nat rules, cgroups) before containerd stops, so that
    /// nothing outlives the test.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let socket = self.containerd.socket_path().to_path_buf();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let d = CriDriver::connect(CriConfig::new(&socket)).await.ok()?;
                let all = d
                    .client()
                    .list_pod_sandbox(cri::PodSandboxFilter::default())
                    .await
                    .ok()?;
                for sb in all {
                    if let Err(e) = d.remove_sandbox(&sb.id).await {
                        eprintln!("cleanup after a failure: {e}");
                    }
                }
                Some(())
            })
        });
        let _ = cleanup.join();
        // PrivateContainerd's own drop stops containerd afterwards; shims
        // of containers that could not be removed go now (by pid: they
        // carry this containerd's socket in their command line).
        for pid in self.shims() {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let _ = self.containerd.remove_bridge();
        portmap_user_done();
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn find_dirs_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name() == name {
                out.push(e.path());
            } else {
                find_dirs_named(&e.path(), name, out);
            }
        }
    }
}

/// Puts nat lines (as [`ContainerNode::cni_nat_of`] returned them) back
/// into the table, as an interrupted teardown leaves them. Idempotent: a
/// chain or rule already there (a sweep running at the same time may have
/// removed only part of them) is left as it is.
pub fn restore_nat(lines: &[String]) -> Result<(), String> {
    let iptables = |args: &[String]| {
        std::process::Command::new("iptables")
            .args(["-w", "5", "-t", "nat"])
            .args(args)
            .output()
            .expect("iptables runs")
    };
    for l in lines {
        let mut args = corral_agent::driver::cri::cni::split_words(l)
            .unwrap_or_else(|| panic!("cannot split {l:?}"));
        match args.first().map(String::as_str) {
            Some("-N")
                if iptables(&["-S".to_string(), args[1].clone()])
                    .status
                    .success() =>
            {
                continue;
            }
            Some("-A") => {
                args[0] = "-C".into();
                let there = iptables(&args).status.success();
                args[0] = "-A".into();
                if there {
                    continue;
                }
            }
            _ => {}
        }
        let out = iptables(&args);
        if !out.status.success() {
            return Err(format!(
                "iptables {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Puts lease files back, changed `age` ago (the agent leaves leases
/// younger than a minute alone: they may be a sandbox in creation).
pub fn restore_leases(leases: &[(PathBuf, String)], age: Duration) {
    for (path, text) in leases {
        std::fs::write(path, text).expect("lease written");
        let when = std::time::SystemTime::now() - age;
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("lease opened");
        f.set_modified(when).expect("lease backdated");
    }
}

/// The container nodes alive in this test process (tests of one binary
/// run in parallel; binaries one after another), and whether portmap's
/// chains were there before the first of them. Only the last node removes
/// the chains, under this lock: one removed while another node's portmap
/// was adding to them failed that pod ("No chain/target/match").
static PORTMAP_USERS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// A test that starts pods (and so portmap) says so; see [`portmap_user_done`].
pub fn portmap_user() {
    let mut u = PORTMAP_USERS.lock().unwrap_or_else(|e| e.into_inner());
    if u.0 == 0 {
        u.1 = hostport_chains_present();
    }
    u.0 += 1;
}

/// The last one in this process removes portmap's chains when they were
/// not there before the first.
pub fn portmap_user_done() {
    let mut u = PORTMAP_USERS.lock().unwrap_or_else(|e| e.into_inner());
    u.0 = u.0.saturating_sub(1);
    if u.0 == 0 && !u.1 {
        remove_portmap_chains();
    }
}

/// Whether portmap's `CNI-HOSTPORT-*` nat chains exist.
pub fn hostport_chains_present() -> bool {
    command_stdout("iptables", &["-t", "nat", "-S"])
        .lines()
        .any(|l| l.starts_with("-N CNI-HOSTPORT-"))
}

/// Removes the nat chains portmap creates once and never deletes
/// (`CNI-HOSTPORT-*` and the jumps to them), unless a pod on this machine
/// still maps a port (a `CNI-DN-*` chain exists).
pub fn remove_portmap_chains() {
    let rules = command_stdout("iptables", &["-t", "nat", "-S"]);
    if rules.lines().any(|r| r.starts_with("-N CNI-DN-")) {
        return;
    }
    let ipt = |args: &[&str]| {
        let _ = std::process::Command::new("iptables")
            .args(["-t", "nat"])
            .args(args)
            .output();
    };
    let dnat_jump = [
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ];
    let masq_jump = [
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ];
    for (chain, rule) in [
        ("PREROUTING", &dnat_jump[..]),
        ("OUTPUT", &dnat_jump[..]),
        ("POSTROUTING", &masq_jump[..]),
    ] {
        let mut args = vec!["-D", chain];
        args.extend_from_slice(rule);
        ipt(&args);
    }
    for c in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        ipt(&["-F", c]);
        ipt(&["-X", c]);
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Debian's `docker-registry` on a free loopback port, storing under a
/// directory of its own.
pub struct LocalRegistry {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl LocalRegistry {
    pub async fn start(dir: &Path) -> LocalRegistry {
        let root = dir.join("registry");
        std::fs::create_dir_all(&root).expect("registry dir");
        let port = free_port();
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(root.join("registry.log")).expect("registry log");
        let child = tokio::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        let mut reg = LocalRegistry {
            port,
            dir: root,
            child: Some(child),
        };
        let log_path = reg.dir.join("registry.log");
        eventually("the registry to listen", Duration::from_secs(15), || {
            let exited = reg.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let log_path = log_path.clone();
            async move {
                if let Some(status) = exited {
                    panic!(
                        "docker-registry exited ({status}): {}",
                        std::fs::read_to_string(log_path).unwrap_or_default()
                    );
                }
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        reg
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy` of an OCI archive to `<registry>/<name_tag>`; returns
    /// the full reference.
    pub async fn push(&self, archive: &Path, name_tag: &str) -> String {
        let reference = format!("{}/{name_tag}", self.host_port());
        let out = tokio::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo copy to {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }

    /// Kills the registry and waits for it.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
            let _ = c.try_wait();
        }
    }
}
