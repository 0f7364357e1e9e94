//! A real Prometheus (Debian's `prometheus`) scrapes a real server and a
//! real agent; a task that fails a known number of times and then holds a
//! known amount of memory must show up in Prometheus's answers with those
//! numbers. Needs root (the exec driver's cgroups) and `prometheus`.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_testkit::procs::is_root;
use corral_testkit::{TestCluster, eventually, jobs, prereq};
use corral_types::TaskLifecycle;

const D: Duration = Duration::from_secs(60);
const RESTARTS: u32 = 3;
/// What the task holds once it stops failing.
const HELD: u64 = 50_000_000;
const LIMIT: u64 = 256_000_000; // `256M` is decimal

/// Fails `RESTARTS` times (counting its runs in the allocation's dir),
/// then holds ~50 MB in a shell variable and sleeps.
fn job(marker: &str) -> String {
    format!(
        r#"name: memhog
driver: exec
command:
  - /bin/sh
  - -c
  - |
    f="$CORRAL_ALLOC_DIR/runs"
    n=$(cat "$f" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "$f"
    if [ "$n" -le {RESTARTS} ]; then echo "run $n fails"; exit 1; fi
    x=$(head -c {HELD} /dev/zero | tr '\0' x)
    echo "run $n holds ${{#x}} bytes"
    while true; do sleep 1; done
  - {marker}
count: 1
resources: {{cpu: 100m, memory: 256M}}
restart: {{attempts: 10, interval: 30m, delay: 0s, mode: fail}}
kill_timeout: 1s
"#
    )
}

/// A running Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `host:port` of an `http://host:port` address.
fn target(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

fn start_prometheus(bin: &Path, dir: &Path, server: &str, agent: &str) -> Prometheus {
    // honor_labels: corral's own `job` label (the corral job) wins over
    // the scrape job's name, as the README's scrape config says.
    let config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: corral-server
    honor_labels: true
    static_configs: [{{targets: ['{server}']}}]
  - job_name: corral-agent
    honor_labels: true
    static_configs: [{{targets: ['{agent}']}}]
",
        server = target(server),
        agent = target(agent),
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write the prometheus config");
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// One instant query; the samples as (labels, value).
async fn query(
    http: &reqwest::Client,
    prom: &str,
    q: &str,
) -> Result<Vec<(serde_json::Value, f64)>, String> {
    let body: serde_json::Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{q}: {body}"));
    }
    let result = body["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("{q}: no result in {body}"))?;
    result
        .iter()
        .map(|r| {
            let v = r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("{q}: bad value in {r}"))?;
            Ok((r["metric"].clone(), v))
        })
        .collect()
}

/// The single sample `q` returns, once there is one.
async fn one(
    http: &reqwest::Client,
    prom: &str,
    q: &str,
) -> Result<(serde_json::Value, f64), String> {
    let mut r = query(http, prom, q).await?;
    match r.len() {
        1 => Ok(r.remove(0)),
        n => Err(format!("{q}: {n} samples: {r:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_task_memory_and_restarts() {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (the exec driver's cgroups)".to_string());
    }
    let bin = prereq::find_bin("prometheus");
    if bin.is_none() {
        missing.push("prometheus (apt-get install prometheus)".to_string());
    }
    if !prereq::can_run(
        "e2e_metrics",
        "scrape corral with a real Prometheus",
        &missing,
    ) {
        return;
    }
    let Some(bin) = bin else { return };

    let mut cluster = TestCluster::start().await;
    cluster
        .add_agent_with("node-0", |c| c.stats_interval = Duration::from_secs(1))
        .await;
    let c = cluster.client.clone();
    let node_id = cluster.agents[0].node_id.clone();
    let agent_url = c.node(&node_id).await.expect("node view").address;
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = start_prometheus(&bin, dir.path(), &cluster.url(), &agent_url);
    let http = reqwest::Client::new();
    let prom_log = dir.path().join("prometheus.log");
    let log_tail = || {
        let l = std::fs::read_to_string(&prom_log).unwrap_or_default();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };

    // Both targets up.
    eventually("prometheus scrapes both targets", D, || async {
        let r = query(&http, &prom.url, "up")
            .await
            .map_err(|e| format!("{e}\n{}", log_tail()))?;
        let up: Vec<_> = r.iter().filter(|(_, v)| *v == 1.0).collect();
        if up.len() == 2 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    let marker = format!("metrics-{}", std::process::id());
    c.submit(&job(&marker), "memhog.yaml")
        .await
        .expect("submit");
    // Each failing run shows as running for a moment: wait for the run
    // that holds, after exactly RESTARTS restarts.
    let view = jobs::wait_running(&c, "memhog", 1, D).await;
    let alloc = view.allocations[0].id.clone();
    // More restarts than RESTARTS never match, and this times out.
    eventually("the task holds after its restarts", D, || async {
        let v = c.job("memhog", None).await.map_err(|e| e.to_string())?;
        let t = v
            .allocations
            .iter()
            .find(|a| a.id == alloc)
            .and_then(|a| a.tasks.get("memhog").cloned())
            .ok_or("no task state yet")?;
        match (t.restarts, t.state) {
            (RESTARTS, TaskLifecycle::Running) => Ok(()),
            _ => Err(format!("{t:?}")),
        }
    })
    .await;

    // Restarts: exact.
    let (labels, restarts) = eventually("restarts in prometheus", D, || async {
        let (l, v) = one(
            &http,
            &prom.url,
            "corral_task_restarts_total{job=\"memhog\"}",
        )
        .await?;
        if v == f64::from(RESTARTS) {
            Ok((l, v))
        } else {
            Err(format!("{v} restarts: {l}"))
        }
    })
    .await;
    assert_eq!(restarts, f64::from(RESTARTS));
    assert_eq!(labels["alloc"], alloc.as_str(), "{labels}");
    assert_eq!(labels["group"], "memhog", "{labels}");
    assert_eq!(labels["task"], "memhog", "{labels}");
    assert_eq!(labels["node"], "node-0", "{labels}");

    // Memory: what the shell holds, with room for the shell and sleep.
    let mem = eventually("memory usage in prometheus", D, || async {
        let (l, v) = one(
            &http,
            &prom.url,
            &format!("corral_task_memory_usage_bytes{{job=\"memhog\",alloc=\"{alloc}\"}}"),
        )
        .await?;
        if (HELD as f64 * 0.9..=HELD as f64 * 3.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} bytes: {l}"))
        }
    })
    .await;
    eprintln!("task memory in prometheus: {mem} bytes");
    let (_, limit) = one(
        &http,
        &prom.url,
        "corral_task_memory_limit_bytes{job=\"memhog\"}",
    )
    .await
    .expect("memory limit");
    assert_eq!(limit, LIMIT as f64);
    let (_, ooms) = one(
        &http,
        &prom.url,
        "corral_task_oom_kills_total{job=\"memhog\"}",
    )
    .await
    .expect("oom kills");
    assert_eq!(ooms, 0.0);
    eventually("cpu seconds in prometheus", D, || async {
        let (l, v) = one(
            &http,
            &prom.url,
            "corral_task_cpu_seconds_total{job=\"memhog\"}",
        )
        .await?;
        if v > 0.0 {
            Ok(())
        } else {
            Err(format!("{v}: {l}"))
        }
    })
    .await;

    // The server side: the node's memory used comes from the agent's
    // usage pushes; its allocation from the state; API latency by route
    // template.
    eventually("node memory used in prometheus", D, || async {
        let (l, v) = one(
            &http,
            &prom.url,
            &format!("corral_node_memory_used_bytes{{node_id=\"{node_id}\"}}"),
        )
        .await?;
        if v >= HELD as f64 * 0.9 {
            Ok(())
        } else {
            Err(format!("{v}: {l}"))
        }
    })
    .await;
    let (_, allocated) = one(
        &http,
        &prom.url,
        &format!("corral_node_memory_allocated_bytes{{node_id=\"{node_id}\"}}"),
    )
    .await
    .expect("allocated");
    assert_eq!(allocated, LIMIT as f64);
    eventually("api latency by route in prometheus", D, || async {
        let r = query(
            &http,
            &prom.url,
            "corral_api_request_duration_seconds_count{route=\"/v1/jobs/{name}\",method=\"GET\"}",
        )
        .await?;
        if r.len() == 1 && r[0].1 > 0.0 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let (_, ready) = one(&http, &prom.url, "corral_nodes{status=\"ready\"}")
        .await
        .expect("nodes");
    assert_eq!(ready, 1.0);

    jobs::stop_and_wait(&c, "memhog", D).await;
    drop(prom);
    cluster.shutdown().await;
}
