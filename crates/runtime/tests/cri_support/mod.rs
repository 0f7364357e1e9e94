//! Helpers for the CRI tests: a private containerd per test, a busybox OCI
//! image built on the spot (nothing can be pulled here), contexts, waits.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::containerd::{ContainerdConfig, PrivateContainerd, import_image};
use corral_runtime::driver::cri::{CriConfig, CriDriver};
use corral_runtime::driver::{AllocContext, TaskContext};
use corral_types::TaskSpec;
use sha2::{Digest, Sha256};

pub const IMAGE: &str = "corral.local/busybox:test";

/// Whether the machine can run these tests (root, containerd, runc).
pub fn can_run() -> bool {
    let root = rustix::process::geteuid().is_root();
    let bins = ["containerd", "runc", "ctr"]
        .iter()
        .all(|b| Path::new("/usr/bin").join(b).exists() || Path::new("/usr/sbin").join(b).exists());
    let cni = Path::new("/usr/lib/cni/bridge").exists();
    if !(root && bins && cni) {
        eprintln!("skipping: needs root, containerd, runc, ctr and /usr/lib/cni");
    }
    root && bins && cni
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bridge name and a /24 no interface of this machine uses yet.
pub fn unique_network() -> (String, String) {
    let pid = std::process::id();
    let used = std::process::Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let third = (pid.wrapping_mul(7).wrapping_add(n * 13)) % 250 + 1;
        let subnet = format!("10.77.{third}.0/24");
        let prefix = format!("10.77.{third}.");
        if used.contains(&prefix) {
            continue;
        }
        let bridge = format!("ct{}x{n}", pid % 100_000);
        return (bridge, subnet);
    }
}

/// Builds an OCI layout tarball of a busybox image (every applet linked
/// into /bin; entrypoint `sleep infinity`, so it also serves as the pause
/// image).
pub fn build_busybox_image(dir: &Path, tag: &str) -> PathBuf {
    let layer = busybox_layer();
    let layer_digest = sha256_hex(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sleep"],
            "Cmd": ["infinity"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "corral test image builder"}]
    }))
    .unwrap();
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len()
        }]
    }))
    .unwrap();
    let manifest_digest = sha256_hex(&manifest);
    let ref_name = tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": tag,
                "org.opencontainers.image.ref.name": ref_name
            }
        }]
    }))
    .unwrap();

    let path = dir.join("busybox-oci.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    add_file(
        &mut b,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    add_file(&mut b, "index.json", &index, 0o644);
    for (digest, bytes) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        add_file(&mut b, &format!("blobs/sha256/{digest}"), bytes, 0o644);
    }
    b.into_inner().unwrap().flush().unwrap();
    path
}

fn busybox_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "www"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .unwrap();
    }
    let busybox = std::fs::read("/bin/busybox").unwrap();
    add_file(&mut b, "bin/busybox", &busybox, 0o755);
    add_file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    );
    add_file(&mut b, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644);
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn add_file<W: Write>(b: &mut tar::Builder<W>, path: &str, bytes: &[u8], mode: u32) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(bytes.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, path, bytes).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One test's world: a private containerd with the busybox image imported
/// (also its sandbox image) and a driver connected to it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub containerd: PrivateContainerd,
    pub driver: CriDriver,
    pub node_id: String,
    finished: bool,
}

impl Env {
    pub async fn start(name: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cri-{name}-"))
            // CRI_TEST_KEEP=1 keeps the directory (containerd's log) for
            // a look after a failure.
            .disable_cleanup(std::env::var_os("CRI_TEST_KEEP").is_some())
            .tempdir_in("/tmp")
            .unwrap();
        let (bridge, subnet) = unique_network();
        let cfg = ContainerdConfig::new(dir.path().join("ctd"), &bridge, &subnet, IMAGE);
        let t = Instant::now();
        let containerd = PrivateContainerd::start(cfg).await.unwrap();
        let boot = t.elapsed();
        let tar = build_busybox_image(dir.path(), IMAGE);
        let t = Instant::now();
        let names = import_image(containerd.socket_path(), &tar).await.unwrap();
        assert_eq!(names, vec![IMAGE.to_string()]);
        eprintln!(
            "[{name}] containerd up in {} ms (bridge {bridge}, {subnet}), image imported in {} ms",
            boot.as_millis(),
            t.elapsed().as_millis()
        );
        let mut cc = CriConfig::new(containerd.socket_path());
        cc.sandbox_image = Some(IMAGE.to_string());
        cc.pull_timeout = Duration::from_secs(30);
        let driver = CriDriver::connect(cc).await.unwrap();
        Env {
            dir,
            containerd,
            driver,
            node_id: format!("node-{name}"),
            finished: false,
        }
    }

    pub fn alloc(&self, id: &str, ports: &[(&str, u16)]) -> AllocContext {
        let alloc_dir = self.dir.path().join("allocs").join(id);
        std::fs::create_dir_all(&alloc_dir).unwrap();
        AllocContext {
            alloc_id: id.to_string(),
            job: "job".into(),
            group: "web".into(),
            index: 0,
            node_id: self.node_id.clone(),
            alloc_dir,
            ports: ports.iter().map(|(k, p)| (k.to_string(), *p)).collect(),
            pod: Default::default(),
        }
    }

    pub fn bridge(&self) -> &str {
        &self.containerd.config().bridge_name
    }

    /// Interfaces attached to this instance's bridge (the pods' veths).
    pub fn bridge_ports(&self) -> usize {
        std::fs::read_dir(Path::new("/sys/class/net").join(self.bridge()).join("brif"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Network namespace mounts left under the state dir.
    pub fn netns_left(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        find_dirs_named(&self.containerd.paths().state, "netns", &mut out);
        out.into_iter()
            .flat_map(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
            })
            .collect()
    }

    /// The pid of a containerd task (a sandbox's pause process, or a
    /// container's), from `ctr tasks ls`.
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(self.containerd.socket_path())
            .args(["-n", "k8s.io", "tasks", "ls"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id)).then(|| f.next()?.parse().ok())?
        })
    }

    /// SIGKILLs a sandbox's pause process, as the OOM killer or a stray
    /// `kill -9` would, and waits until the runtime says it is not ready.
    pub async fn kill_pause(&self, sandbox_id: &str) {
        let pid = self.task_pid(sandbox_id).expect("the pause process");
        let p = rustix::process::Pid::from_raw(pid).unwrap();
        rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
        let c = self.driver.client();
        let t = Instant::now();
        loop {
            let st = c.pod_sandbox_status(sandbox_id).await.unwrap();
            if st.status.unwrap().state != k8s_cri::v1::PodSandboxState::SandboxReady as i32 {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "sandbox still ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The state of a container (running, exited, ...), `None` when the
    /// runtime does not know it.
    pub async fn container_state(&self, id: &str) -> Option<k8s_cri::v1::ContainerState> {
        let st = self.driver.client().container_status(id).await.ok()?;
        k8s_cri::v1::ContainerState::try_from(st.state).ok()
    }

    /// Waits until the container exited.
    pub async fn wait_exited(&self, id: &str) {
        let t = Instant::now();
        while self.container_state(id).await != Some(k8s_cri::v1::ContainerState::ContainerExited) {
            assert!(t.elapsed() < Duration::from_secs(30), "{id} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A second driver on the same containerd, as a restarted agent has.
    pub async fn fresh_driver(&self) -> CriDriver {
        let mut cc = CriConfig::new(self.containerd.socket_path());
        cc.sandbox_image = Some(IMAGE.to_string());
        cc.pull_timeout = Duration::from_secs(30);
        CriDriver::connect(cc).await.unwrap()
    }

    /// Checks that no sandbox, container, netns or veth is left, then
    /// stops containerd and deletes its bridge.
    pub async fn finish(mut self) {
        let c = self.driver.client();
        let sandboxes = c.list_pod_sandbox(Default::default()).await.unwrap();
        assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
        let containers = c.list_containers(Default::default()).await.unwrap();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        assert!(
            self.netns_left().is_empty(),
            "netns left: {:?}",
            self.netns_left()
        );
        assert_eq!(self.bridge_ports(), 0, "veths left on {}", self.bridge());
        self.containerd.stop().await.unwrap();
        self.containerd.remove_bridge().unwrap();
        assert!(!Path::new("/sys/class/net").join(self.bridge()).exists());
        self.finished = true;
    }
}

impl Drop for Env {
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
                let all = d.client().list_pod_sandbox(Default::default()).await.ok()?;
                for sb in all {
                    if let Err(e) = d.remove_sandbox(&sb.id).await {
                        eprintln!("cleanup after a failure: {e}");
                    }
                }
                Some(())
            })
        });
        let _ = cleanup.join();
        let _ = self.containerd.remove_bridge();
    }
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

/// A container task running `sh -c script`.
pub fn task(name: &str, script: &str) -> TaskSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "driver": "container",
        "image": IMAGE,
        "command": ["/bin/sh", "-c"],
        "args": [script],
    }))
    .unwrap()
}

pub fn task_ctx(alloc: &AllocContext, task: TaskSpec) -> TaskContext {
    let mut env: BTreeMap<String, String> = task.env.clone();
    env.insert("CORRAL_TASK".into(), task.name.clone());
    env.insert("CORRAL_ALLOC_ID".into(), alloc.alloc_id.clone());
    TaskContext {
        mounts: Default::default(),
        task_dir: alloc.alloc_dir.join(&task.name),
        stdout_path: alloc
            .alloc_dir
            .join("logs")
            .join(format!("{}.stdout", task.name)),
        stderr_path: alloc
            .alloc_dir
            .join("logs")
            .join(format!("{}.stderr", task.name)),
        alloc: alloc.clone(),
        task,
        env,
    }
}

/// The messages of a CRI log file (`<time> <stream> <P|F> <message>`).
pub fn log_messages(path: &Path) -> Vec<(String, String)> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let _time = it.next()?;
            let stream = it.next()?.to_string();
            let _tag = it.next()?;
            Some((stream, it.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// Polls `f` until it is true or the patience runs out.
pub async fn eventually(what: &str, patience: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < patience, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Removes the nat chains portmap creates once and never deletes
/// (`CNI-HOSTPORT-*` and the jumps to them), when no pod on this machine
/// maps a port any more (no `CNI-DN-*` chain). Call it only when the
/// chains were not there before the test.
pub fn remove_portmap_chains() {
    let rules = cni_nat_rules();
    if rules.iter().any(|r| r.starts_with("-N CNI-DN-")) {
        return;
    }
    let ipt = |args: &[&str]| {
        let _ = std::process::Command::new("iptables")
            .args(["-t", "nat"])
            .args(args)
            .output();
    };
    ipt(&[
        "-D",
        "PREROUTING",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ]);
    ipt(&[
        "-D",
        "OUTPUT",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ]);
    ipt(&[
        "-D",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ]);
    for c in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        ipt(&["-F", c]);
        ipt(&["-X", c]);
    }
}

/// `iptables -t nat -S` lines that mention a CNI chain.
pub fn cni_nat_rules() -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains("CNI-"))
        .map(str::to_string)
        .collect()
}

/// What CNI wrote into the nat table for a sandbox: the rules whose
/// comment names it and the chains they jump to (`-N` lines first).
pub fn cni_nat_of(sandbox_id: &str) -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
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
        if chains.iter().any(|c| l.starts_with(&format!("-A {c} "))) || owned.contains(&l) {
            out.push(l.to_string());
        }
    }
    out.dedup();
    out
}

/// Puts nat lines (from [`cni_nat_of`]) back, as an interrupted teardown
/// leaves them.
pub fn restore_nat(lines: &[String]) {
    for l in lines {
        let args = corral_runtime::driver::cri::cni::split_words(l).unwrap();
        let out = std::process::Command::new("iptables")
            .args(["-w", "5", "-t", "nat"])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's docker-registry on a free loopback port, storing under `dir`.
pub struct LocalRegistry {
    pub port: u16,
    child: tokio::process::Child,
}

impl LocalRegistry {
    pub async fn start(dir: &Path) -> LocalRegistry {
        let port = free_port();
        let root = dir.join("registry");
        std::fs::create_dir_all(&root).unwrap();
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.join("data").display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.join("registry.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually("the registry to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        LocalRegistry { port, child }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
