//! The real `corral dev` process with its private containerd (issue 13):
//! killed and started again on the same data dir, with containerd living
//! on (adopted) or killed with everything else (a host reboot), and
//! stopped with SIGTERM while an image pull hangs. Each test gives its
//! `corral dev` a pod bridge and subnet of its own, and checks at the end
//! that nothing is left: no containerd, no shim, no bridge, no netns, no
//! nat rule of its subnet.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins and busybox-static;
//! skipped with a message when missing, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use corral_agent::containerd::{Paths, RunningContainerd};
use corral_agent::driver::cri::client::CriClient;
use corral_agent::driver::cri::{CriConfig, CriDriver};
use corral_agent::image::DEMO_IMAGE;
use corral_client::Client;
use corral_testkit::containers::{NetworkClaim, can_run, claim_network, free_port};
use corral_testkit::eventually;

#[path = "common/web.rs"]
mod web;
use corral_testkit::jobs::{running, summary, wait_alloc, wait_running};
use corral_testkit::procs::live_with_marker;
use corral_types::{ClientStatus, TaskLifecycle};
use k8s_cri::v1 as cri;
use rustix::process::{Pid, Signal, kill_process};

const D: Duration = Duration::from_secs(90);

/// One `corral dev` data dir with its own pod network, and whatever runs
/// from it. Dropped after a failure, it kills what is left.
struct DevWorld {
    dir: tempfile::TempDir,
    addr: String,
    /// The built-in router's address (`--router-addr`).
    router: String,
    client: Client,
    network: NetworkClaim,
    /// Counted among the pod users whose last removes portmap's chains.
    portmap_user: bool,
    dev: Option<DevProcess>,
    runs: u32,
}

/// One `corral dev` process (killed if the test panics).
struct DevProcess {
    child: tokio::process::Child,
    log: PathBuf,
}

impl DevWorld {
    async fn start(test: &str) -> Option<DevWorld> {
        if !can_run(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("cd")
            .disable_cleanup(std::env::var_os("CORRAL_TEST_KEEP").is_some())
            .tempdir_in("/tmp")
            .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut w = DevWorld {
            client: Client::new(&format!("http://{addr}"), None),
            addr,
            router: format!("127.0.0.1:{}", free_port()),
            network: claim_network(),
            portmap_user: {
                corral_testkit::containers::portmap_user();
                true
            },
            dir,
            dev: None,
            runs: 0,
        };
        eprintln!(
            "[{test}] corral dev in {} (bridge {}, {})",
            w.data_dir().display(),
            w.network.bridge,
            w.network.subnet
        );
        w.spawn().await;
        Some(w)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("d")
    }

    fn paths(&self) -> Paths {
        Paths::new(&self.data_dir().join("ctrd"))
    }

    /// Starts `corral dev` and waits until its node is ready with the
    /// container driver.
    async fn spawn(&mut self) {
        self.runs += 1;
        let log = self.dir.path().join(format!("dev-{}.log", self.runs));
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("dev")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--addr", &self.addr])
            .args(["--router-addr", &self.router])
            .args(["--pod-bridge", &self.network.bridge])
            .args(["--pod-subnet", &self.network.subnet])
            .env("CORRAL_LOG", "info")
            .env_remove("CORRAL_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let dev = DevProcess { child, log };
        let c = self.client.clone();
        eventually("corral dev ready with the container driver", D, || async {
            let nodes = c.nodes().await.map_err(|e| e.to_string())?;
            match nodes.first() {
                Some(n) if n.status == "ready" && n.drivers.iter().any(|d| d == "container") => {
                    Ok(())
                }
                other => Err(format!(
                    "{:?}; log:\n{}",
                    other.map(|n| (&n.status, &n.drivers)),
                    dev.log_tail()
                )),
            }
        })
        .await;
        self.dev = Some(dev);
    }

    fn dev(&mut self) -> &mut DevProcess {
        self.dev.as_mut().unwrap()
    }

    async fn cri(&self) -> CriClient {
        CriClient::connect(&self.paths().socket)
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(30))
    }

    /// Pod sandboxes: id -> ready.
    async fn sandboxes(&self) -> Vec<(String, bool)> {
        self.cri()
            .await
            .list_pod_sandbox(Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.state == cri::PodSandboxState::SandboxReady as i32))
            .collect()
    }

    /// Live processes of this world's containerd and its shims.
    fn runtime_processes(&self) -> Vec<u32> {
        let root = self.data_dir().join("ctrd");
        live_with_marker(&format!("{}/", root.display()))
    }

    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net")
            .join(&self.network.bridge)
            .exists()
    }

    /// nat rules that mention this world's subnet.
    fn nat_rules(&self) -> Vec<String> {
        let prefix = self.network.subnet.trim_end_matches("0/24").to_string();
        let out = std::process::Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// What a stopped `corral dev` must not leave, one line per kind.
    fn leftovers(&self) -> Vec<String> {
        let mut left = vec![];
        let procs = self.runtime_processes();
        if !procs.is_empty() {
            left.push(format!("containerd or shims: {procs:?}"));
        }
        if self.bridge_exists() {
            left.push(format!("bridge {}", self.network.bridge));
        }
        let nat = self.nat_rules();
        if !nat.is_empty() {
            left.push(format!("nat rules: {nat:?}"));
        }
        let netns = netns_mounts(&self.paths().state);
        if !netns.is_empty() {
            left.push(format!("netns: {netns:?}"));
        }
        left
    }

    /// SIGTERM to `corral dev`; waits for it (at most `within`) and checks
    /// that it exited cleanly and left nothing.
    async fn stop(&mut self, within: Duration) -> Duration {
        let mut dev = self.dev.take().unwrap();
        let t = Instant::now();
        let pid = Pid::from_raw(dev.child.id().unwrap() as i32).unwrap();
        kill_process(pid, Signal::TERM).unwrap();
        let status = tokio::time::timeout(within, dev.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "corral dev still runs {within:?} after SIGTERM; log:\n{}",
                    dev.log_tail()
                )
            })
            .unwrap();
        let took = t.elapsed();
        assert!(status.success(), "{status}; log:\n{}", dev.log_tail());
        let left = self.leftovers();
        assert!(
            left.is_empty(),
            "left after corral dev exited: {left:?}; log:\n{}",
            dev.log_tail()
        );
        took
    }
}

impl DevProcess {
    fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }

    async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for DevWorld {
    /// After a failure: `corral dev` goes (kill_on_drop), then its pods,
    /// containerd, shims, bridge and portmap chains.
    fn drop(&mut self) {
        if let Some(mut d) = self.dev.take() {
            let _ = d.child.start_kill();
        }
        let root = self.data_dir().join("ctrd");
        let socket = self.paths().socket;
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                if let Ok(d) = CriDriver::connect(CriConfig::new(&socket)).await
                    && let Ok(all) = d.client().list_pod_sandbox(Default::default()).await
                {
                    for sb in all {
                        let _ = d.remove_sandbox(&sb.id).await;
                    }
                }
                if let Some(rc) = RunningContainerd::find(&root) {
                    rc.stop(Duration::from_secs(10)).await;
                }
                Some(())
            })
        });
        let _ = cleanup.join();
        for pid in self.runtime_processes() {
            if let Some(p) = Pid::from_raw(pid as i32) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
        let _ = corral_agent::containerd::remove_bridge(&self.network.bridge);
        if self.portmap_user {
            corral_testkit::containers::portmap_user_done();
        }
    }
}

fn netns_mounts(state: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let state = state.display().to_string();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&state) && m.contains("netns"))
        .map(str::to_string)
        .collect()
}

/// SIGKILLs every process in the pod cgroups of these allocations (the
/// pause processes and the containers' processes).
fn kill_pods(allocs: &BTreeSet<String>) -> usize {
    let mut pids = BTreeSet::new();
    for a in allocs {
        collect_procs(
            &Path::new("/sys/fs/cgroup/pids/corral").join(format!("pod{a}")),
            &mut pids,
        );
    }
    for pid in &pids {
        if let Some(p) = Pid::from_raw(*pid) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
    pids.len()
}

fn collect_procs(dir: &Path, out: &mut BTreeSet<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), out);
        }
    }
}

async fn http_get(addr: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn wait_http(addr: &str, want: &str) {
    eventually(&format!("HTTP on {addr}"), D, || async {
        let r = http_get(addr).await?;
        if r.contains(want) {
            Ok(())
        } else {
            Err(format!("answer: {r:?}"))
        }
    })
    .await;
}

const DEMO_JOB: &str = "name: web\nimage: corral.local/demo:1\nenv: {FOO: bar}\ncount: 2\nports: {http: 8080}\nkill_timeout: 2s\n";

/// Issue 13, case 12: `corral dev` killed (its containerd lives on), then
/// started again: it adopts containerd and the containers; a SIGTERM then
/// stops the tasks, waits for containerd to exit and removes the pod
/// bridge, as it does for a containerd it started itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_an_adopt_stops_containerd_and_removes_the_bridge() {
    let Some(mut w) = DevWorld::start("dev-adopt").await else {
        return;
    };
    assert_eq!(DEMO_IMAGE, "corral.local/demo:1");
    w.client.submit(DEMO_JOB, "web.yaml").await.unwrap();
    let j = wait_running(&w.client, "web", 2, D).await;
    let allocs: BTreeSet<String> = running(&j).iter().map(|a| a.id.clone()).collect();

    let pid = w.dev().pid();
    w.dev().kill9().await;
    eprintln!("corral dev {pid} killed with SIGKILL");
    assert!(
        RunningContainerd::find(&w.data_dir().join("ctrd")).is_some(),
        "containerd lives on"
    );

    w.spawn().await;
    let c = w.client.clone();
    eventually("tasks re-attached by the new corral dev", D, || async {
        let j = c.job("web", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        let ids: BTreeSet<String> = r.iter().map(|a| a.id.clone()).collect();
        let reattached = r.iter().all(|a| {
            a.tasks
                .values()
                .all(|t| t.state == TaskLifecycle::Running && t.message.contains("re-attached"))
        });
        if ids == allocs && reattached {
            Ok(())
        } else {
            Err(summary(&j))
        }
    })
    .await;

    let took = w.stop(Duration::from_secs(30)).await;
    eprintln!(
        "corral dev stopped after an adopt in {} ms",
        took.as_millis()
    );
}

/// Issue 13, case 8 (b): like a host reboot, `corral dev`, containerd,
/// the shims and every pod process are SIGKILLed; `corral dev` started
/// again brings every allocation back, each in a new sandbox (with its
/// host port), the restart counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allocation_comes_back_after_a_reboot() {
    let Some(mut w) = DevWorld::start("dev-reboot").await else {
        return;
    };
    w.client.submit(DEMO_JOB, "web.yaml").await.unwrap();
    let j = wait_running(&w.client, "web", 2, D).await;
    let allocs: BTreeSet<String> = running(&j).iter().map(|a| a.id.clone()).collect();
    let old: BTreeSet<String> = w.sandboxes().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(old.len(), 2, "{old:?}");

    // Everything dies at once.
    w.dev().kill9().await;
    for pid in w.runtime_processes() {
        if let Some(p) = Pid::from_raw(pid as i32) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
    let killed = kill_pods(&allocs);
    assert!(killed >= 4, "pause and demo processes of 2 pods: {killed}");
    eventually("nothing of the runtime lives", D, || async {
        let p = w.runtime_processes();
        if p.is_empty() && kill_pods(&allocs) == 0 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;

    w.spawn().await;
    let c = w.client.clone();
    let j = eventually("both allocations back, restarted once", D, || async {
        let j = c.job("web", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        let ids: BTreeSet<String> = r.iter().map(|a| a.id.clone()).collect();
        let restarted = r.iter().all(|a| {
            let t = &a.tasks["web"];
            t.state == TaskLifecycle::Running && t.restarts == 1
        });
        if ids == allocs && restarted {
            Ok(j)
        } else {
            Err(summary(&j))
        }
    })
    .await;
    let now = w.sandboxes().await;
    assert_eq!(now.len(), 2, "{now:?}");
    for (id, ready) in &now {
        assert!(ready, "{now:?}");
        assert!(!old.contains(id), "a new sandbox: {now:?} (old {old:?})");
    }
    for a in running(&j) {
        wait_http(&a.ports["web.http"], "FOO=bar").await;
    }
    w.stop(Duration::from_secs(30)).await;
}

/// Issue 13, case 9: SIGTERM while an image pull hangs (a registry that
/// accepts connections and never answers) stops `corral dev` at once, not
/// when the pull gives up (300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_hanging_pull() {
    let Some(mut w) = DevWorld::start("dev-pull").await else {
        return;
    };
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registry.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = registry.accept().await {
            let _ = accepted_tx.send(s);
        }
    });
    w.client
        .submit(
            &format!("name: slow\nimage: 127.0.0.1:{port}/never/answers:1\n"),
            "slow.yaml",
        )
        .await
        .unwrap();
    let _conn = tokio::time::timeout(D, accepted.recv())
        .await
        .expect("containerd asks the registry")
        .unwrap();
    let a = wait_alloc(&w.client, "slow", ClientStatus::Pending, D).await;
    eprintln!("pull in flight for alloc {}", a.id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let took = w.stop(Duration::from_secs(30)).await;
    eprintln!(
        "corral dev stopped during a pull in {} ms",
        took.as_millis()
    );
}

/// Issue 15, "done when": a new user runs `corral dev`, `corral run` of a
/// 3-replica web service with a check (examples/web-service.yaml), and
/// `http://web.localhost:<router>/` answers from all three; `corral
/// service status web` lists them. After a kill -9 and a restart of
/// `corral dev`, the router serves the adopted replicas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_router_serves_a_service_by_its_host_name() {
    let Some(mut w) = DevWorld::start("dev-router").await else {
        return;
    };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/web-service.yaml"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["run", example])
        .env("CORRAL_ADDR", format!("http://{}", w.addr))
        .env_remove("CORRAL_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "corral run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let router: std::net::SocketAddr = w.router.parse().unwrap();
    let spread = || async move {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            let a = web::get(router, "web.localhost", "/").await?;
            if a.status != 200 {
                return Err(format!("{} {}", a.status, a.body));
            }
            seen.insert(a.body);
        }
        if seen.len() == 3 {
            Ok(seen)
        } else {
            Err(format!("answers from {} copies: {seen:?}", seen.len()))
        }
    };
    let seen = eventually("web.localhost answered by the 3 copies", D, spread).await;
    eprintln!("answers: {seen:?}");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["service", "status", "web"])
        .env("CORRAL_ADDR", format!("http://{}", w.addr))
        .env_remove("CORRAL_TOKEN")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.matches("passing").count(), 3, "{status}");

    w.dev().kill9().await;
    w.spawn().await;
    let seen = eventually("the router serves the adopted copies again", D, spread).await;
    eprintln!("after kill -9 and restart: {seen:?}");
    w.stop(Duration::from_secs(30)).await;
}
