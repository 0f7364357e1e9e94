//! What heartbeats cost: a real `corral server` process, N nodes
//! registered over HTTP, then each node beating at the interval the server
//! hands out (TTL/2) for a window; the server's CPU time in that window
//! against the same window idle.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_types::units::{Bytes, MilliCpu};
use corral_types::{NodeRegistration, Resources};
use futures::StreamExt;
use serde::Serialize;

use crate::proc::cpu_seconds;
use crate::scheduler::BenchError;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub window_seconds: f64,
    pub ttl_seconds: f64,
    pub heartbeats: u64,
    pub heartbeats_per_second: f64,
    /// Server CPU while idle, as a share of one core.
    pub idle_core_share: f64,
    /// Server CPU while the fleet beats, as a share of one core.
    pub busy_core_share: f64,
}

impl Report {
    pub fn render(&self) -> String {
        format!(
            "{:.2}% of one core for {} nodes heartbeating\n  TTL {:.0}s -> {:.0} heartbeats/s over {:.0}s ({} heartbeats); idle server {:.2}% of one core in the same window length\n",
            self.busy_core_share * 100.0,
            self.nodes,
            self.ttl_seconds,
            self.heartbeats_per_second,
            self.window_seconds,
            self.heartbeats,
            self.idle_core_share * 100.0,
        )
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(
    server_bin: PathBuf,
    nodes: usize,
    window: Duration,
) -> Result<Report, BenchError> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(&server_bin)
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env("CORRAL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _guard = Killed(child);
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None);
    let up = Instant::now();
    while client.nodes().await.is_err() {
        if up.elapsed() > Duration::from_secs(20) {
            return Err(BenchError::Timeout(
                Duration::from_secs(20),
                "server did not start".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let regs = futures::stream::iter((0..nodes).map(|i| {
        let c = client.clone();
        async move {
            c.register(&NodeRegistration {
                id: format!("hb-{i:06}"),
                name: format!("hb-{i}"),
                address: "sim://".into(),
                resources: Resources {
                    disk: Default::default(),
                    cpu: MilliCpu(4000),
                    memory: Bytes(16 << 30),
                },
                attributes: Default::default(),
                labels: Default::default(),
                drivers: vec!["exec".into()],
                port_range: (20000, 32000),
            })
            .await
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let mut ttl = Duration::from_secs(5);
    for r in regs {
        let r = r.map_err(|e| BenchError::Timeout(Duration::ZERO, e.to_string()))?;
        ttl = Duration::from_millis(r.heartbeat_ttl_ms);
    }
    // The TTL the last registration got reflects the whole fleet.
    let ttl = Duration::from_millis(
        client
            .heartbeat("hb-000000")
            .await
            .map(|r| r.heartbeat_ttl_ms)
            .unwrap_or(ttl.as_millis() as u64),
    );

    // Idle window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c0 = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(window).await;
    let idle = (cpu_seconds(pid).unwrap_or(0.0) - c0) / window.as_secs_f64();

    // Busy window: each node beats every TTL/2, spread evenly.
    let period = ttl / 2;
    let rate = nodes as f64 / period.as_secs_f64();
    let tick = Duration::from_millis(20);
    let c1 = cpu_seconds(pid).unwrap_or(0.0);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while start.elapsed() < window {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        let batch: Vec<String> = (sent..due)
            .map(|_| {
                let id = format!("hb-{:06}", next % nodes);
                next += 1;
                id
            })
            .collect();
        sent = due;
        futures::stream::iter(batch.into_iter().map(|id| {
            let c = client.clone();
            async move { c.heartbeat(&id).await }
        }))
        .buffer_unordered(32)
        .for_each(|_| async {})
        .await;
        tokio::time::sleep(tick).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let busy = (cpu_seconds(pid).unwrap_or(0.0) - c1) / elapsed;
    Ok(Report {
        nodes,
        window_seconds: elapsed,
        ttl_seconds: ttl.as_secs_f64(),
        heartbeats: sent,
        heartbeats_per_second: sent as f64 / elapsed,
        idle_core_share: idle,
        busy_core_share: busy,
    })
}
