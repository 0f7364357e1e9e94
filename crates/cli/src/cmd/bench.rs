//! `corral bench`: the benchmarks behind BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_agent::containerd::{ContainerdConfig, PrivateContainerd};
use corral_agent::driver::cri::{CriConfig, CriDriver};
use corral_agent::driver::{AllocContext, Driver, TaskContext, TaskHandle};
use corral_agent::image;
use corral_bench::scheduler::{Scenario, StoreKind};
use corral_client::Client;
use corral_types::units::{Bytes, MilliCpu};
use corral_types::{Resources, TaskSpec};

use crate::output::print_json;

pub async fn scheduler(s: Scenario, with_baseline: bool, json: bool) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark numbers need `cargo build --release`");
    }
    let sqlite = corral_bench::scheduler::run(Scenario {
        store: StoreKind::Sqlite,
        ..s.clone()
    })
    .await?;
    let baseline = if with_baseline {
        Some(
            corral_bench::scheduler::run(Scenario {
                store: StoreKind::Memory,
                ..s
            })
            .await?,
        )
    } else {
        None
    };
    if json {
        return print_json(&serde_json::json!({ "sqlite": sqlite, "memory": baseline }));
    }
    print!("{}", sqlite.render());
    if let Some(b) = baseline {
        println!(
            "  baseline, same scenario on an in-memory store: {:.0} placements/s (SQLite at synchronous=FULL reaches {:.2}x of it)",
            b.placements_per_second,
            sqlite.placements_per_second / b.placements_per_second.max(1e-9)
        );
    }
    Ok(())
}

pub async fn heartbeats(nodes: usize, window: Duration, json: bool) -> Result<()> {
    let bin = std::env::current_exe().context("cannot find the corral binary")?;
    let r = corral_bench::heartbeat::run(bin, nodes, window).await?;
    if json {
        return print_json(&r);
    }
    print!("{}", r.render());
    Ok(())
}

/// `corral bench node`: what it takes (see `scripts/bench-node`).
pub struct NodeArgs {
    pub docker_socket: Option<PathBuf>,
    pub docker_pids: Vec<u32>,
    pub rounds: usize,
    pub single_reps: usize,
    pub poll_ms: u64,
    pub cpu_millis: u64,
    pub work_dir: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub write_image: Option<PathBuf>,
    pub json: bool,
}

/// Real containers on this node: a private containerd and a `corral dev`
/// on it, corral against bare CRI (same containerd, same driver code) and,
/// with a Swarm manager's socket, against Docker Swarm.
pub async fn node(a: NodeArgs) -> Result<()> {
    if let Some(dir) = &a.write_image {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = image::build_into(&image::demo_image(Path::new(image::BUSYBOX)), dir)
            .context("cannot build the demo image")?;
        println!("{}", file.display());
        return Ok(());
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the node benchmark runs real containers: run it as root (scripts/bench-node)");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark numbers need `cargo build --release`");
    }
    let work = a
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/cbn-{}", std::process::id())));
    let world = NodeWorld::start(&work).await?;
    let opts = corral_bench::node::Options {
        rounds: a.rounds,
        single_reps: a.single_reps,
        poll: Duration::from_millis(a.poll_ms),
        cpu_millis: a.cpu_millis,
        docker_socket: a.docker_socket.clone(),
        docker_pids: a.docker_pids.clone(),
        ..Default::default()
    };
    let shutdown = crate::shutdown::on_signals();
    let r = tokio::select! {
        r = corral_bench::node::run(&world.client, &world, opts) => r.map_err(anyhow::Error::from),
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    world.stop().await;
    let report = r?;
    let text = report.render();
    if let Some(out) = &a.out {
        if let Some(parent) = out.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if a.json {
        return print_json(&report);
    }
    print!("{text}");
    Ok(())
}

/// The corral side of the node benchmark: a private containerd with its
/// own bridge and subnet, a `corral dev` process on it, and a CRI driver
/// of its own on the same containerd for the bare baseline.
struct NodeWorld {
    dir: PathBuf,
    containerd: PrivateContainerd,
    dev: tokio::process::Child,
    client: Client,
    driver: CriDriver,
}

impl NodeWorld {
    async fn start(dir: &Path) -> Result<NodeWorld> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (bridge, subnet) = free_network()?;
        let cfg = ContainerdConfig::new(dir.join("c"), &bridge, &subnet, image::PAUSE_IMAGE);
        let containerd = PrivateContainerd::start(cfg)
            .await
            .context("cannot start the private containerd")?;
        let socket = containerd.socket_path().to_path_buf();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("dev.log"))?;
        let dev = tokio::process::Command::new(
            std::env::current_exe().context("cannot find the corral binary")?,
        )
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.join("dev"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .arg("--cri-socket")
        .arg(&socket)
        .env("CORRAL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Stopped in order by us, not by the terminal's Ctrl-C.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start corral dev")?;
        // For the script's cleanup, should this process die first.
        let _ = std::fs::write(
            dir.join("pids"),
            format!("{} {}\n", dev.id().unwrap_or(0), containerd.pid()),
        );
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let mut cc = CriConfig::new(&socket);
        cc.sandbox_image = Some(image::PAUSE_IMAGE.to_string());
        let driver = CriDriver::connect(cc)
            .await
            .context("cannot connect to the private containerd")?;
        let mut world = NodeWorld {
            dir: dir.to_path_buf(),
            containerd,
            dev,
            client,
            driver,
        };
        let t = Instant::now();
        loop {
            let ready = world.client.nodes().await.is_ok_and(|ns| {
                ns.iter()
                    .any(|n| n.status == "ready" && n.drivers.iter().any(|d| d == "container"))
            });
            if ready {
                break;
            }
            let exited = world.dev.try_wait().ok().flatten().is_some();
            if exited || t.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default();
                world.stop().await;
                bail!("corral dev did not come up with the container driver; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "corral dev on {} (containerd {}, bridge {bridge}, {subnet}; log {})",
            world.client.addr(),
            socket.display(),
            dir.join("dev.log").display()
        );
        Ok(world)
    }

    /// Stops corral dev, removes whatever pod is left, stops containerd,
    /// deletes the bridge and the work directory.
    async fn stop(mut self) {
        if let Some(pid) = self
            .dev
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(60), self.dev.wait())
            .await
            .is_err()
        {
            eprintln!("corral dev did not stop within 60 s: killing it");
            let _ = self.dev.kill().await;
        }
        match self
            .driver
            .client()
            .list_pod_sandbox(Default::default())
            .await
        {
            Ok(left) => {
                for sb in left {
                    if let Err(e) = self.driver.remove_sandbox(&sb.id).await {
                        eprintln!("cannot remove pod sandbox {}: {e}", sb.id);
                    }
                }
            }
            Err(e) => eprintln!("cannot list the pod sandboxes left: {e}"),
        }
        if let Err(e) = self.containerd.stop().await {
            eprintln!("cannot stop the private containerd: {e}");
        }
        if let Err(e) = self.containerd.remove_bridge() {
            eprintln!("{e}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        if mounts.lines().any(|l| l.contains(&prefix)) {
            eprintln!(
                "something is still mounted under {}: leaving it in place",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl NodeWorld {
    /// A one-task allocation of the demo image, as the agent would hand
    /// it to the driver, outside corral.
    fn bare_task(&self, alloc_id: &str, cpu_millis: u64) -> Result<TaskContext, String> {
        let alloc_dir = self.dir.join("bare").join(alloc_id);
        std::fs::create_dir_all(&alloc_dir).map_err(|e| e.to_string())?;
        let alloc = AllocContext {
            alloc_id: alloc_id.to_string(),
            job: "bare".into(),
            group: "web".into(),
            index: 0,
            node_id: "bench-bare".into(),
            alloc_dir: alloc_dir.clone(),
            ports: Default::default(),
            pod: Default::default(),
        };
        let mut task: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": "web",
            "driver": "container",
            "image": image::DEMO_IMAGE,
        }))
        .map_err(|e| e.to_string())?;
        task.env.insert("FOO".into(), "v1".into());
        task.resources = Resources {
            disk: Default::default(),
            cpu: MilliCpu(cpu_millis),
            memory: Bytes(32 << 20),
        };
        let mut env = task.env.clone();
        env.insert("CORRAL_TASK".into(), task.name.clone());
        env.insert("CORRAL_ALLOC_ID".into(), alloc_id.to_string());
        Ok(TaskContext {
            mounts: Default::default(),
            task_dir: alloc_dir.join("web"),
            stdout_path: alloc_dir.join("logs/web.stdout"),
            stderr_path: alloc_dir.join("logs/web.stderr"),
            alloc,
            task,
            env,
        })
    }

    /// RunPodSandbox (prepare_alloc) + CreateContainer + StartContainer
    /// (start).
    async fn bare_up(&self, ctx: &TaskContext) -> Result<TaskHandle, String> {
        self.driver
            .prepare_alloc(&ctx.alloc)
            .await
            .map_err(|e| e.to_string())?;
        self.driver.start(ctx).await.map_err(|e| e.to_string())
    }

    /// Stops and removes the container (when there is one) and the pod.
    async fn bare_down(&self, ctx: &TaskContext, h: Option<&TaskHandle>) -> Result<(), String> {
        if let Some(h) = h {
            let _ = self.driver.stop(h, Duration::from_secs(5)).await;
            self.driver.destroy(h).await.map_err(|e| e.to_string())?;
        }
        self.driver
            .cleanup_alloc(&ctx.alloc)
            .await
            .map_err(|e| e.to_string())
    }
}

impl corral_bench::node::Node for NodeWorld {
    async fn bare_start(&self, i: usize, cpu_millis: u64) -> Result<Duration, String> {
        let ctx = self.bare_task(&format!("bare{}x{i}", std::process::id()), cpu_millis)?;
        let t = Instant::now();
        let h = self.bare_up(&ctx).await;
        let took = t.elapsed();
        self.bare_down(&ctx, h.as_ref().ok()).await?;
        h.map(|_| took)
    }

    async fn bare_burst(&self, n: usize, cpu_millis: u64) -> Result<Duration, String> {
        let pid = std::process::id();
        let ctxs = (0..n)
            .map(|k| self.bare_task(&format!("burst{pid}x{cpu_millis}x{n}x{k}"), cpu_millis))
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let handles = futures::future::join_all(ctxs.iter().map(|c| self.bare_up(c))).await;
        let took = t.elapsed();
        let downs = futures::future::join_all(
            ctxs.iter()
                .zip(&handles)
                .map(|(c, h)| self.bare_down(c, h.as_ref().ok())),
        )
        .await;
        for r in handles.into_iter().map(|h| h.map(|_| ())).chain(downs) {
            r?;
        }
        Ok(took)
    }

    fn cpu_seconds(&self) -> f64 {
        let dev = self
            .dev
            .id()
            .and_then(corral_bench::proc::cpu_seconds)
            .unwrap_or(0.0);
        let ctrd = u32::try_from(self.containerd.pid())
            .ok()
            .and_then(corral_bench::proc::cpu_seconds)
            .unwrap_or(0.0);
        dev + ctrd
    }

    async fn pods(&self) -> Result<usize, String> {
        self.driver
            .client()
            .list_pod_sandbox(Default::default())
            .await
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    }
}

/// A bridge name and a /23 that no interface of this machine uses.
fn free_network() -> Result<(String, String)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .context("cannot run `ip -o -4 addr`")?;
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    let bridge = format!("cbn{}", std::process::id() % 100_000);
    for third in (0..=254u32).step_by(2) {
        let taken = [third, third + 1]
            .iter()
            .any(|t| used.contains(&format!(" 10.196.{t}.")));
        if !taken {
            return Ok((bridge, format!("10.196.{third}.0/23")));
        }
    }
    bail!("no free /23 in 10.196.0.0/16 for the pods' bridge")
}
