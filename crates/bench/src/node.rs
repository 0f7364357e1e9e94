//! Real node latency: real containers on this machine, corral against a
//! bare CRI call sequence and against Docker Swarm, in the same run.
//!
//! - one container, submit to running (image cached): a corral job of one
//!   against RunPodSandbox + CreateContainer + StartContainer of the same
//!   image through the same driver code ([`Node::bare_start`]), at the
//!   benchmark's cpu and at a cpu large enough not to throttle the start
//!   (corral's cpu is also a CFS quota, and a 10m quota makes runc's
//!   container setup take seconds); and the Swarm service create to its
//!   first running task;
//! - scaling 1 -> 10 -> 50 -> 100 replicas;
//! - a rolling update of 100 replicas, 10 at a time (an env change; corral
//!   `update: {max_parallel: 10}`, Swarm `UpdateConfig.Parallelism: 10`).
//!
//! Each step is timed from the request to the poll (every `poll`) that
//! sees the target: N allocations (tasks) running, all of the new version
//! for the update. The servers' own timestamps (last placement, last
//! running recorded) are kept beside it to show where the time goes.
//! Swarm is driven through the Engine API on the daemon's Unix socket, as
//! the docker CLI does it, without the CLI's process start and without
//! resolving the image in a registry (`--no-resolve-image`), twice: with
//! the same cpu limit and reservation as corral's (like for like), and
//! with the reservation only (no CPU quota). Rounds alternate the order of
//! the systems, so that load drifting on a shared machine hits all alike.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_types::api::AllocView;
use corral_types::{ClientStatus, DesiredStatus};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum NodeBenchError {
    #[error("corral: {0}")]
    Corral(#[from] corral_client::ClientError),
    #[error("swarm: {0}")]
    Docker(String),
    #[error("bare CRI: {0}")]
    Bare(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// What the benchmark needs from corral's node besides its API: the bare
/// CRI baseline and a look at the runtime.
pub trait Node {
    /// RunPodSandbox + CreateContainer + StartContainer of the image once,
    /// through the driver corral's agent uses; returns how long those took
    /// and removes everything again before it returns.
    fn bare_start(
        &self,
        i: usize,
        cpu_millis: u64,
    ) -> impl Future<Output = Result<Duration, String>>;
    /// The same for `n` pods at once: how long until all run; everything
    /// removed again before it returns.
    fn bare_burst(
        &self,
        n: usize,
        cpu_millis: u64,
    ) -> impl Future<Output = Result<Duration, String>>;
    /// CPU seconds used so far by corral's processes (corral dev and its
    /// containerd).
    fn cpu_seconds(&self) -> f64;
    /// Pod sandboxes alive in corral's container runtime.
    fn pods(&self) -> impl Future<Output = Result<usize, String>>;
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds of the scaling sequence and the update, per system.
    pub rounds: usize,
    /// Single-container samples per system (after one warm-up each).
    pub single_reps: usize,
    pub poll: Duration,
    /// Replica counts, in order; the first is the starting point.
    pub replicas: Vec<u32>,
    pub max_parallel: u32,
    pub image: String,
    /// CPU of each replica, in millicores (a reservation and a CFS quota
    /// in corral; the same limit and reservation in Swarm).
    pub cpu_millis: u64,
    /// Also measure one container at this cpu (millicores), which does not
    /// throttle the container's start.
    pub fast_cpu_millis: Option<u64>,
    /// Also run Swarm with the cpu reservation only (no CPU limit).
    pub swarm_without_cpu_limit: bool,
    /// Longest wait for any one step.
    pub patience: Duration,
    /// A dockerd in swarm mode with `image` loaded; `None`: corral only.
    pub docker_socket: Option<PathBuf>,
    /// dockerd and its containerd, for their CPU use.
    pub docker_pids: Vec<u32>,
    /// How long the idle CPU of each system is measured with all replicas
    /// running (zero: not measured).
    pub idle_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 2,
            single_reps: 5,
            poll: Duration::from_millis(25),
            replicas: vec![1, 10, 50, 100],
            max_parallel: 10,
            image: "corral.local/demo:1".into(),
            cpu_millis: 10,
            fast_cpu_millis: Some(1000),
            swarm_without_cpu_limit: true,
            patience: Duration::from_secs(300),
            docker_socket: None,
            docker_pids: vec![],
            idle_window: Duration::from_secs(5),
        }
    }
}

/// One timed step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    /// Request to the poll that saw the target.
    pub seconds: f64,
    /// Request to the last placement the server recorded (corral: the
    /// allocation's creation; Swarm: the task's).
    pub placed_s: Option<f64>,
    /// Request to the last container start (corral: the task's
    /// `started_at`, when StartContainer returned on the node).
    pub started_s: Option<f64>,
    /// Request to the last "running" the server recorded.
    pub running_s: Option<f64>,
    /// Mean over the replicas placed in this step of placement to running
    /// recorded: the node's share, replica by replica.
    pub per_replica_s: Option<f64>,
    /// 1-minute load average when the step began.
    pub load1: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Step {
    pub name: String,
    pub corral: Vec<Timing>,
    /// Swarm with corral's cpu as limit and reservation.
    pub swarm: Vec<Timing>,
    /// Swarm with the cpu reservation only.
    pub swarm_no_cpu_limit: Vec<Timing>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub poll_ms: u64,
    pub rounds: usize,
    pub max_parallel: u32,
    pub cpu_millis: u64,
    /// One container: corral submit to running.
    pub single_corral: Vec<Timing>,
    /// One container: RunPodSandbox + CreateContainer + StartContainer.
    pub single_bare_s: Vec<f64>,
    /// One container at `fast_cpu_millis`: corral submit to running.
    pub single_corral_fast: Vec<Timing>,
    /// One container at `fast_cpu_millis`: bare CRI.
    pub single_bare_fast_s: Vec<f64>,
    pub fast_cpu_millis: Option<u64>,
    /// One container: Swarm service create to running (one per round).
    pub single_swarm: Vec<Timing>,
    pub single_swarm_no_cpu_limit: Vec<Timing>,
    pub steps: Vec<Step>,
    /// Bare CRI, the pods each scale step adds started at once: (pods,
    /// seconds at `cpu_millis`, seconds at `fast_cpu_millis`).
    pub bare_bursts: Vec<(usize, f64, Option<f64>)>,
    /// With all replicas running and nothing asked: CPU of corral dev and
    /// its containerd, as a share of one core (one per round).
    pub idle_corral: Vec<f64>,
    /// The same for dockerd and its containerd (Swarm with the cpu limit).
    pub idle_swarm: Vec<f64>,
    pub idle_window_s: f64,
    pub swarm: bool,
}

const CORRAL_JOB: &str = "bench-node";
const SWARM_SERVICE: &str = "corral-bench-node";

/// Runs everything against a `corral dev` (its API in `client`) and,
/// with `opts.docker_socket`, a Swarm manager on the same machine.
pub async fn run(
    client: &Client,
    node: &impl Node,
    opts: Options,
) -> Result<Report, NodeBenchError> {
    let docker = opts.docker_socket.clone().map(Docker::new);
    let mut report = Report {
        poll_ms: opts.poll.as_millis() as u64,
        rounds: opts.rounds,
        max_parallel: opts.max_parallel,
        cpu_millis: opts.cpu_millis,
        fast_cpu_millis: opts.fast_cpu_millis,
        idle_window_s: opts.idle_window.as_secs_f64(),
        swarm: docker.is_some(),
        ..Default::default()
    };
    for w in opts.replicas.windows(2) {
        report.steps.push(Step {
            name: format!("scale {} → {}", w[0], w[1]),
            ..Default::default()
        });
    }
    let top = opts.replicas.last().copied().unwrap_or(1);
    report.steps.push(Step {
        name: format!("rolling update of {top}, {} at a time", opts.max_parallel),
        ..Default::default()
    });
    if let Some(d) = &docker {
        d.remove_service(SWARM_SERVICE, opts.patience).await?;
    }

    eprintln!("== one container: corral submit -> running against bare CRI");
    corral_one(client, node, &opts, opts.cpu_millis, "bench-one-warmup").await?;
    node.bare_start(0, opts.cpu_millis)
        .await
        .map_err(NodeBenchError::Bare)?;
    let mut n = 0;
    for _ in 0..opts.single_reps {
        let mut cpus = vec![opts.cpu_millis];
        cpus.extend(opts.fast_cpu_millis);
        for (k, &cpu) in cpus.iter().enumerate() {
            n += 1;
            let t = corral_one(client, node, &opts, cpu, &format!("bench-one-{n}")).await?;
            let b = node
                .bare_start(n, cpu)
                .await
                .map_err(NodeBenchError::Bare)?;
            eprintln!(
                "   cpu {cpu}m: corral {:.3} s (placed +{:.3}, started +{:.3}, running recorded +{:.3}); bare CRI {:.3} s",
                t.seconds,
                t.placed_s.unwrap_or(f64::NAN),
                t.started_s.unwrap_or(f64::NAN),
                t.running_s.unwrap_or(f64::NAN),
                b.as_secs_f64()
            );
            if k == 0 {
                report.single_corral.push(t);
                report.single_bare_s.push(b.as_secs_f64());
            } else {
                report.single_corral_fast.push(t);
                report.single_bare_fast_s.push(b.as_secs_f64());
            }
        }
    }

    eprintln!("== bare CRI: the pods of each scale step started at once (the node's floor)");
    for w in opts.replicas.windows(2) {
        let n = w[1].saturating_sub(w[0]) as usize;
        let slow = node
            .bare_burst(n, opts.cpu_millis)
            .await
            .map_err(NodeBenchError::Bare)?;
        let fast = match opts.fast_cpu_millis {
            Some(cpu) => Some(
                node.bare_burst(n, cpu)
                    .await
                    .map_err(NodeBenchError::Bare)?
                    .as_secs_f64(),
            ),
            None => None,
        };
        eprintln!(
            "   {n} pods: {:.3} s at cpu {}m{}",
            slow.as_secs_f64(),
            opts.cpu_millis,
            match (fast, opts.fast_cpu_millis) {
                (Some(f), Some(c)) => format!(", {f:.3} s at cpu {c}m"),
                _ => String::new(),
            }
        );
        report.bare_bursts.push((n, slow.as_secs_f64(), fast));
    }

    #[derive(Clone, Copy)]
    enum Who {
        Corral,
        Swarm { cpu_limit: bool },
    }
    let mut order = vec![Who::Corral];
    if docker.is_some() {
        order.push(Who::Swarm { cpu_limit: true });
        if opts.swarm_without_cpu_limit {
            order.push(Who::Swarm { cpu_limit: false });
        }
    }
    for round in 0..opts.rounds {
        for &who in &order {
            match (who, &docker) {
                (Who::Corral, _) => corral_round(client, node, &opts, &mut report, round).await?,
                (Who::Swarm { cpu_limit }, Some(d)) => {
                    swarm_round(d, &opts, &mut report, round, cpu_limit).await?
                }
                (Who::Swarm { .. }, None) => {}
            }
        }
        order.reverse();
    }
    Ok(report)
}

/// Mean of `to - from` in seconds, over the pairs that have both.
fn mean_gap(pairs: impl Iterator<Item = (u64, Option<u64>)>) -> Option<f64> {
    let gaps: Vec<f64> = pairs
        .filter_map(|(from, to)| Some((to? as f64 - from as f64) / 1000.0))
        .collect();
    (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
}

use corral_types::model::now_ms;

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The start of a timed step: monotonic and wall clock.
#[derive(Clone, Copy)]
struct Start {
    at: Instant,
    ms: u64,
    load1: f64,
}

impl Start {
    fn now() -> Start {
        let load1 = load1();
        Start {
            at: Instant::now(),
            ms: now_ms(),
            load1,
        }
    }

    /// Seconds from the start to a server timestamp (ms).
    fn to(self, ms: Option<u64>) -> Option<f64> {
        ms.map(|m| (m as f64 - self.ms as f64) / 1000.0)
    }
}

// ---------------------------------------------------------------- corral

/// `min_healthy_time: 0s` like Swarm's updater, which starts the next
/// batch once a batch runs (its `Monitor` only watches for failures);
/// corral's default of 10 s (Nomad's) would add 10 s per batch.
fn corral_spec(opts: &Options, cpu_millis: u64, name: &str, count: u32, version: &str) -> String {
    format!(
        "name: {name}\nimage: {}\nenv:\n  FOO: {version}\ncount: {count}\n\
         resources: {{cpu: {cpu_millis}m, memory: 32Mi}}\n\
         update: {{max_parallel: {}, min_healthy_time: 0s}}\n",
        opts.image, opts.max_parallel
    )
}

async fn submit(client: &Client, spec: &str, name: &str) -> Result<u64, NodeBenchError> {
    let r = client.submit(spec, &format!("{name}.yaml")).await?;
    Ok(r.jobs.iter().map(|j| j.version).max().unwrap_or(0))
}

/// Polls until `want` allocations of the job run (of `version`, when
/// given).
async fn corral_wait(
    client: &Client,
    opts: &Options,
    job: &str,
    want: usize,
    version: Option<u64>,
    start: Start,
) -> Result<Timing, NodeBenchError> {
    loop {
        let allocs = client.allocs(Some(job)).await?;
        let seen = start.at.elapsed();
        let ok: Vec<&AllocView> = allocs
            .iter()
            .filter(|a| {
                a.desired == DesiredStatus::Run
                    && a.status == ClientStatus::Running
                    && version.is_none_or(|v| a.job_version == v)
            })
            .collect();
        if ok.len() >= want {
            let fresh: Vec<&&AllocView> = ok.iter().filter(|a| a.created_at >= start.ms).collect();
            let started = fresh
                .iter()
                .filter_map(|a| a.tasks.values().filter_map(|t| t.started_at).max())
                .max();
            return Ok(Timing {
                seconds: seen.as_secs_f64(),
                placed_s: start.to(fresh.iter().map(|a| a.created_at).max()),
                started_s: start.to(started),
                running_s: start.to(fresh.iter().map(|a| a.modified_at).max()),
                per_replica_s: mean_gap(fresh.iter().map(|a| (a.created_at, Some(a.modified_at)))),
                load1: start.load1,
            });
        }
        if seen > opts.patience {
            return Err(NodeBenchError::Timeout(
                opts.patience,
                format!(
                    "{want} running allocations of {job}{}; have {}",
                    version.map(|v| format!(" v{v}")).unwrap_or_default(),
                    describe_allocs(&allocs)
                ),
            ));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

fn describe_allocs(allocs: &[AllocView]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for a in allocs {
        *counts
            .entry(format!("v{} {:?}/{:?}", a.job_version, a.desired, a.status))
            .or_default() += 1;
    }
    let mut s: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if let Some(m) = allocs.iter().find(|a| !a.message.is_empty()) {
        s.push(format!("e.g. {}: {}", m.name, m.message));
    }
    s.join(", ")
}

/// Stops and purges a job, then waits until no pod is left on the node.
async fn corral_clear(
    client: &Client,
    node: &impl Node,
    opts: &Options,
    job: &str,
) -> Result<(), NodeBenchError> {
    match client.stop(job, true).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let t = Instant::now();
    loop {
        let n = node.pods().await.map_err(NodeBenchError::Bare)?;
        if n == 0 {
            return Ok(());
        }
        if t.elapsed() > opts.patience {
            return Err(NodeBenchError::Timeout(
                opts.patience,
                format!("the pods of {job} to go ({n} left)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn corral_one(
    client: &Client,
    node: &impl Node,
    opts: &Options,
    cpu_millis: u64,
    name: &str,
) -> Result<Timing, NodeBenchError> {
    let spec = corral_spec(opts, cpu_millis, name, 1, "v1");
    let start = Start::now();
    let v = submit(client, &spec, name).await?;
    let t = corral_wait(client, opts, name, 1, Some(v), start).await?;
    corral_clear(client, node, opts, name).await?;
    Ok(t)
}

async fn corral_round(
    client: &Client,
    node: &impl Node,
    opts: &Options,
    report: &mut Report,
    round: usize,
) -> Result<(), NodeBenchError> {
    eprintln!("== round {}: corral", round + 1);
    corral_clear(client, node, opts, CORRAL_JOB).await?;
    let first = opts.replicas.first().copied().unwrap_or(1);
    let spec = corral_spec(opts, opts.cpu_millis, CORRAL_JOB, first, "v1");
    let start = Start::now();
    submit(client, &spec, CORRAL_JOB).await?;
    corral_wait(client, opts, CORRAL_JOB, first as usize, None, start).await?;
    let mut step = 0;
    for &n in opts.replicas.iter().skip(1) {
        let spec = corral_spec(opts, opts.cpu_millis, CORRAL_JOB, n, "v1");
        let start = Start::now();
        submit(client, &spec, CORRAL_JOB).await?;
        let t = corral_wait(client, opts, CORRAL_JOB, n as usize, None, start).await?;
        log_step("corral", &report.steps[step].name, &t);
        report.steps[step].corral.push(t);
        step += 1;
    }
    if let Some(share) = idle_share(opts, || node.cpu_seconds()).await {
        eprintln!(
            "   corral idle with all replicas running: {:.1}% of a core",
            share * 100.0
        );
        report.idle_corral.push(share);
    }
    let top = opts.replicas.last().copied().unwrap_or(1);
    let spec = corral_spec(opts, opts.cpu_millis, CORRAL_JOB, top, "v2");
    let start = Start::now();
    let v = submit(client, &spec, CORRAL_JOB).await?;
    let t = corral_wait(client, opts, CORRAL_JOB, top as usize, Some(v), start).await?;
    log_step("corral", &report.steps[step].name, &t);
    report.steps[step].corral.push(t);
    corral_clear(client, node, opts, CORRAL_JOB).await?;
    Ok(())
}

/// CPU used over `opts.idle_window` (after a second to settle), as a
/// share of one core.
async fn idle_share(opts: &Options, cpu: impl Fn() -> f64) -> Option<f64> {
    if opts.idle_window.is_zero() {
        return None;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c0, t0) = (cpu(), Instant::now());
    tokio::time::sleep(opts.idle_window).await;
    Some((cpu() - c0) / t0.elapsed().as_secs_f64())
}

fn log_step(who: &str, step: &str, t: &Timing) {
    eprintln!(
        "   {who:6} {step}: {:.3} s (last placed +{:.3}, last running recorded +{:.3}, {:.3} s per replica; load {:.1})",
        t.seconds,
        t.placed_s.unwrap_or(f64::NAN),
        t.running_s.unwrap_or(f64::NAN),
        t.per_replica_s.unwrap_or(f64::NAN),
        t.load1
    );
}

// ---------------------------------------------------------------- Swarm

/// The Engine API over the daemon's Unix socket: one HTTP/1.0 request per
/// connection, which keeps the answers unchunked.
pub struct Docker {
    socket: PathBuf,
}

const API: &str = "/v1.41";

impl Docker {
    pub fn new(socket: PathBuf) -> Docker {
        Docker { socket }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), NodeBenchError> {
        let err = |what: &str, e: std::io::Error| {
            NodeBenchError::Docker(format!(
                "{what} {} ({method} {path}): {e}",
                self.socket.display()
            ))
        };
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| err("cannot connect to", e))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {API}{path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| err("cannot write to", e))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| err("cannot read from", e))?;
        parse_http(&buf).ok_or_else(|| {
            NodeBenchError::Docker(format!(
                "{method} {path}: unreadable answer: {}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ))
        })
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, NodeBenchError> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(NodeBenchError::Docker(format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| NodeBenchError::Docker(format!("{method} {path}: {e}")))
    }

    async fn create_service(&self, spec: &Value) -> Result<(), NodeBenchError> {
        self.json("POST", "/services/create", Some(spec)).await?;
        Ok(())
    }

    /// Reads the service, changes its spec with `f`, and sends it back
    /// (what `docker service update` and `docker service scale` do).
    async fn update_service(
        &self,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Start, NodeBenchError> {
        let svc = self.json("GET", &format!("/services/{name}"), None).await?;
        let id = svc["ID"].as_str().unwrap_or(name).to_string();
        let version = svc["Version"]["Index"].as_u64().unwrap_or(0);
        let mut spec = svc["Spec"].clone();
        f(&mut spec);
        let start = Start::now();
        self.json(
            "POST",
            &format!("/services/{id}/update?version={version}"),
            Some(&spec),
        )
        .await?;
        Ok(start)
    }

    /// Removes the service if it exists and waits until its containers
    /// are gone.
    async fn remove_service(&self, name: &str, patience: Duration) -> Result<(), NodeBenchError> {
        let (status, bytes) = self
            .call("DELETE", &format!("/services/{name}"), None)
            .await?;
        if status != 404 && !(200..300).contains(&status) {
            return Err(NodeBenchError::Docker(format!(
                "DELETE /services/{name}: {status} {}",
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        let filters = json!({"label": [format!("com.docker.swarm.service.name={name}")]});
        let path = format!(
            "/containers/json?all=1&filters={}",
            percent_encode(&filters.to_string())
        );
        let t = Instant::now();
        loop {
            let left = self.json("GET", &path, None).await?;
            let n = left.as_array().map(Vec::len).unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
            if t.elapsed() > patience {
                return Err(NodeBenchError::Timeout(
                    patience,
                    format!("the containers of service {name} to go ({n} left)"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Tasks of the service the orchestrator wants running.
    async fn tasks(&self, name: &str) -> Result<Vec<Value>, NodeBenchError> {
        let filters = json!({"service": [name], "desired-state": ["running"]});
        let v = self
            .json(
                "GET",
                &format!("/tasks?filters={}", percent_encode(&filters.to_string())),
                None,
            )
            .await?;
        Ok(match v {
            Value::Array(a) => a,
            _ => vec![],
        })
    }
}

/// Status code and body of an HTTP/1.x answer (chunked or not).
fn parse_http(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &buf[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What `docker service create --no-resolve-image --replicas N
/// [--limit-cpu 0.01] --reserve-cpu 0.01 --limit-memory 32M
/// --reserve-memory 32M --update-parallelism P -e FOO=...` sends.
fn swarm_spec(opts: &Options, replicas: u32, version: &str, cpu_limit: bool) -> Value {
    let cpu = opts.cpu_millis * 1_000_000; // NanoCPUs
    let limit_cpu = if cpu_limit { cpu } else { 0 };
    let mem = 32u64 << 20;
    json!({
        "Name": SWARM_SERVICE,
        "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": opts.image,
                "Env": [format!("FOO={version}")],
                "Init": false,
                "StopGracePeriod": 10_000_000_000u64,
                "DNSConfig": {},
                "Isolation": "default"
            },
            "Resources": {
                "Limits": {"NanoCPUs": limit_cpu, "MemoryBytes": mem},
                "Reservations": {"NanoCPUs": cpu, "MemoryBytes": mem}
            },
            "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0},
            "Placement": {},
            "ForceUpdate": 0,
            "Runtime": "container"
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {
            "Parallelism": opts.max_parallel,
            "Delay": 0,
            "FailureAction": "pause",
            "Monitor": 5_000_000_000u64,
            "MaxFailureRatio": 0,
            "Order": "stop-first"
        },
        "RollbackConfig": {
            "Parallelism": 1,
            "FailureAction": "pause",
            "Monitor": 5_000_000_000u64,
            "MaxFailureRatio": 0,
            "Order": "stop-first"
        },
        "EndpointSpec": {"Mode": "vip"}
    })
}

fn task_env_has(task: &Value, kv: &str) -> bool {
    task["Spec"]["ContainerSpec"]["Env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x.as_str() == Some(kv)))
}

/// Polls until `want` tasks run (with `env` in their environment, when
/// given).
async fn swarm_wait(
    d: &Docker,
    opts: &Options,
    want: usize,
    env: Option<&str>,
    start: Start,
) -> Result<Timing, NodeBenchError> {
    loop {
        let tasks = d.tasks(SWARM_SERVICE).await?;
        let seen = start.at.elapsed();
        let ok: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["Status"]["State"] == "running" && env.is_none_or(|e| task_env_has(t, e)))
            .collect();
        if ok.len() >= want {
            let fresh: Vec<(u64, Option<u64>)> = ok
                .iter()
                .filter_map(|t| {
                    let created = rfc3339_ms(t["CreatedAt"].as_str()?)?;
                    (created >= start.ms).then(|| {
                        (
                            created,
                            t["Status"]["Timestamp"].as_str().and_then(rfc3339_ms),
                        )
                    })
                })
                .collect();
            return Ok(Timing {
                seconds: seen.as_secs_f64(),
                placed_s: start.to(fresh.iter().map(|f| f.0).max()),
                started_s: None,
                running_s: start.to(fresh.iter().filter_map(|f| f.1).max()),
                per_replica_s: mean_gap(fresh.iter().copied()),
                load1: start.load1,
            });
        }
        if seen > opts.patience {
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for t in &tasks {
                *states
                    .entry(t["Status"]["State"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            let err = tasks
                .iter()
                .find_map(|t| t["Status"]["Err"].as_str().filter(|e| !e.is_empty()))
                .unwrap_or("");
            return Err(NodeBenchError::Timeout(
                opts.patience,
                format!("{want} running Swarm tasks; have {states:?} {err}"),
            ));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

async fn swarm_round(
    d: &Docker,
    opts: &Options,
    report: &mut Report,
    round: usize,
    cpu_limit: bool,
) -> Result<(), NodeBenchError> {
    let who = if cpu_limit { "swarm" } else { "swarm*" };
    eprintln!(
        "== round {}: swarm{}",
        round + 1,
        if cpu_limit {
            " (cpu limit = reservation, like corral)"
        } else {
            "* (cpu reservation only, no CPU limit)"
        }
    );
    d.remove_service(SWARM_SERVICE, opts.patience).await?;
    let first = opts.replicas.first().copied().unwrap_or(1);
    let start = Start::now();
    d.create_service(&swarm_spec(opts, first, "v1", cpu_limit))
        .await?;
    let t = swarm_wait(d, opts, first as usize, None, start).await?;
    log_step(who, "service create", &t);
    if cpu_limit {
        report.single_swarm.push(t);
    } else {
        report.single_swarm_no_cpu_limit.push(t);
    }
    let mut step = 0;
    let record = |report: &mut Report, step: usize, t: Timing| {
        let st = &mut report.steps[step];
        log_step(who, &st.name, &t);
        if cpu_limit {
            st.swarm.push(t);
        } else {
            st.swarm_no_cpu_limit.push(t);
        }
    };
    for &n in opts.replicas.iter().skip(1) {
        let start = d
            .update_service(SWARM_SERVICE, |s| {
                s["Mode"]["Replicated"]["Replicas"] = json!(n);
            })
            .await?;
        let t = swarm_wait(d, opts, n as usize, None, start).await?;
        record(report, step, t);
        step += 1;
    }
    if cpu_limit && !opts.docker_pids.is_empty() {
        let pids = opts.docker_pids.clone();
        let cpu = move || {
            pids.iter()
                .filter_map(|&p| crate::proc::cpu_seconds(p))
                .sum::<f64>()
        };
        if let Some(share) = idle_share(opts, cpu).await {
            eprintln!(
                "   swarm idle with all replicas running: {:.1}% of a core",
                share * 100.0
            );
            report.idle_swarm.push(share);
        }
    }
    let top = opts.replicas.last().copied().unwrap_or(1);
    let start = d
        .update_service(SWARM_SERVICE, |s| {
            s["TaskTemplate"]["ContainerSpec"]["Env"] = json!(["FOO=v2"]);
        })
        .await?;
    let t = swarm_wait(d, opts, top as usize, Some("FOO=v2"), start).await?;
    record(report, step, t);
    d.remove_service(SWARM_SERVICE, opts.patience).await?;
    Ok(())
}

/// `2026-11-25T22:04:30.536702233Z` (UTC, as the Engine API writes
/// times) in Unix milliseconds.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?;
    let (frac, tz) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    if tz != "Z" && tz != "+00:00" {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = corral_types::civil::days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs * 1000 + ms).ok()
}

// ---------------------------------------------------------------- report

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn secs_cell(ts: &[Timing]) -> String {
    let all: Vec<f64> = ts.iter().map(|t| t.seconds).collect();
    match median(&all) {
        None => "-".into(),
        Some(m) if all.len() == 1 => format!("{m:.2}"),
        Some(m) => format!(
            "{m:.2} ({})",
            all.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn med_of(ts: &[Timing], f: impl Fn(&Timing) -> Option<f64>) -> String {
    let v: Vec<f64> = ts.iter().filter_map(f).collect();
    median(&v)
        .map(|m| format!("+{m:.2}"))
        .unwrap_or_else(|| "?".into())
}

fn seconds(ts: &[Timing]) -> Vec<f64> {
    ts.iter().map(|t| t.seconds).collect()
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.1}x", n / d),
        _ => "-".into(),
    }
}

impl Report {
    /// Markdown: the table, the single-container lines, where the time
    /// goes.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let runs = if self.rounds == 1 {
            "one round".to_string()
        } else {
            format!("{} rounds: median (each round)", self.rounds)
        };
        s.push_str(&format!(
            "Real node latency: 2-core VM, real containers (the busybox httpd demo image, cached), cpu {}m / memory 32Mi per replica; {runs}; APIs polled every {} ms.\n\n",
            self.cpu_millis, self.poll_ms
        ));
        let free = self
            .steps
            .iter()
            .any(|st| !st.swarm_no_cpu_limit.is_empty());
        s.push_str(&format!(
            "| step | corral s | swarm s, same cpu limit | ratio (swarm/corral) |{}\n|---|---:|---:|---:|{}\n",
            if free {
                " swarm s, no cpu limit | ratio (swarm/corral) |"
            } else {
                ""
            },
            if free { "---:|---:|" } else { "" }
        ));
        for st in &self.steps {
            let c = median(&seconds(&st.corral));
            let w = median(&seconds(&st.swarm));
            s.push_str(&format!(
                "| {} | {} | {} | {} |",
                st.name,
                secs_cell(&st.corral),
                secs_cell(&st.swarm),
                ratio(w, c)
            ));
            if free {
                let f = median(&seconds(&st.swarm_no_cpu_limit));
                s.push_str(&format!(
                    " {} | {} |",
                    secs_cell(&st.swarm_no_cpu_limit),
                    ratio(f, c)
                ));
            }
            s.push('\n');
        }

        s.push_str("\nOne container, submit → running (medians):\n\n");
        let single = |s: &mut String, cpu: u64, c: &[Timing], b: &[f64]| {
            if let (Some(cm), Some(bm)) = (median(&seconds(c)), median(b)) {
                s.push_str(&format!(
                    "- cpu {cpu}m: corral {cm:.3} s, bare CRI RunPodSandbox + CreateContainer + StartContainer {bm:.3} s: corral/bare {:.2}x ({:+.0} ms; {} samples each). corral's own timestamps: placed {}, StartContainer returned {}, running recorded {}.\n",
                    cm / bm.max(1e-9),
                    (cm - bm) * 1000.0,
                    c.len(),
                    med_of(c, |t| t.placed_s),
                    med_of(c, |t| t.started_s),
                    med_of(c, |t| t.running_s),
                ));
            }
        };
        single(
            &mut s,
            self.cpu_millis,
            &self.single_corral,
            &self.single_bare_s,
        );
        if let Some(fast) = self.fast_cpu_millis {
            single(
                &mut s,
                fast,
                &self.single_corral_fast,
                &self.single_bare_fast_s,
            );
        }
        if let Some(w) = median(&seconds(&self.single_swarm)) {
            s.push_str(&format!(
                "- Swarm service create → its task running, cpu {}m: {w:.3} s with the cpu limit",
                self.cpu_millis
            ));
            if let Some(f) = median(&seconds(&self.single_swarm_no_cpu_limit)) {
                s.push_str(&format!(", {f:.3} s without"));
            }
            s.push_str(&format!(" ({} samples).\n", self.single_swarm.len()));
        }

        if !self.bare_bursts.is_empty() {
            s.push_str("\nThe node's floor: bare CRI starting the pods a scale step adds, all at once (one sample):\n\n");
            let fast = self.fast_cpu_millis.unwrap_or(0);
            s.push_str(&format!(
                "| pods | bare CRI s, cpu {}m | bare CRI s, cpu {fast}m |\n|---:|---:|---:|\n",
                self.cpu_millis
            ));
            for (n, slow, fast) in &self.bare_bursts {
                s.push_str(&format!(
                    "| {n} | {slow:.2} | {} |\n",
                    fast.map(|f| format!("{f:.2}"))
                        .unwrap_or_else(|| "-".into())
                ));
            }
        }

        if let Some(c) = median(&self.idle_corral) {
            s.push_str(&format!(
                "\nIdle with all replicas running ({:.0} s window): corral dev + its containerd {:.1}% of one core",
                self.idle_window_s,
                c * 100.0
            ));
            if let Some(w) = median(&self.idle_swarm) {
                s.push_str(&format!(", dockerd + its containerd {:.1}%", w * 100.0));
            }
            s.push_str(".\n");
        }

        s.push_str("\nWhere the time goes (medians; seconds after the request by the servers' own clocks):\n\n");
        s.push_str("| step | corral: last placed | corral: last running recorded | corral: placed → running, mean per replica | swarm (same limit): last task created | swarm: last running recorded | swarm: created → running, mean per replica |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for st in &self.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                st.name,
                med_of(&st.corral, |t| t.placed_s),
                med_of(&st.corral, |t| t.running_s),
                med_of(&st.corral, |t| t.per_replica_s).replace('+', ""),
                med_of(&st.swarm, |t| t.placed_s),
                med_of(&st.swarm, |t| t.running_s),
                med_of(&st.swarm, |t| t.per_replica_s).replace('+', ""),
            ));
        }
        let loads: Vec<f64> = self
            .steps
            .iter()
            .flat_map(|st| {
                st.corral
                    .iter()
                    .chain(&st.swarm)
                    .chain(&st.swarm_no_cpu_limit)
            })
            .map(|t| t.load1)
            .filter(|l| l.is_finite())
            .collect();
        if let (Some(lo), Some(hi)) = (
            loads.iter().copied().reduce(f64::min),
            loads.iter().copied().reduce(f64::max),
        ) {
            s.push_str(&format!(
                "\n1-minute load average when the steps began: {lo:.1} to {hi:.1} (2 cores).\n"
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_ms("2026-11-25T22:04:30.536702233Z"),
            Some(1_795_644_270_536)
        );
        assert_eq!(
            rfc3339_ms("2000-03-01T00:00:00+00:00"),
            Some(951_868_800_000)
        );
        assert_eq!(rfc3339_ms("2026-11-25T22:04:30+01:00"), None);
    }

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[1]";
        assert_eq!(parse_http(plain), Some((200, b"[1]".to_vec())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http(chunked), Some((404, b"abcde".to_vec())));
    }

    #[test]
    fn encodes_filters() {
        assert_eq!(
            percent_encode("{\"a\":[\"b c\"]}"),
            "%7B%22a%22%3A%5B%22b%20c%22%5D%7D"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
