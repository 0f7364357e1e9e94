//! Rolling upgrades end to end with real containers: a real server, a real
//! agent with the container driver on a private containerd, HTTP health
//! checks against busybox httpd in each pod, and the `corral` binary for
//! what users see. While a rollout runs, a sampler reads the allocations
//! every 100 ms and records every moment the healthy floor
//! (`count - max_parallel`) or `max_parallel` was broken.
//!
//! Needs what e2e_containers needs (root, containerd, runc, CNI plugins,
//! busybox-static); skipped when missing unless CORRAL_REQUIRE_ROOT_TESTS=1.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use corral_client::Client;
use corral_testkit::containers::{ContainerNode, busybox_image, can_run};
use corral_testkit::{TestCluster, eventually};
use corral_types::api::AllocView;
use corral_types::{ClientStatus, DeploymentStatus, DesiredStatus};
use tokio::sync::Mutex as AsyncMutex;

const D: Duration = Duration::from_secs(90);

/// One rollout test at a time: each runs several containers on two cores.
static ONE: AsyncMutex<()> = AsyncMutex::const_new(());

/// An image serving `/healthz` (or not, for a bad version) on 8080.
fn web_image(tag: &str, healthy: bool) -> corral_agent::image::ImageSpec {
    let page = if healthy {
        "echo ok > /www/healthz;"
    } else {
        ""
    };
    let script = format!(
        "trap 'exit 0' TERM INT; mkdir -p /www; {page} echo {tag} > /www/version; \
         httpd -f -p 8080 -h /www & wait $!"
    );
    busybox_image(
        &format!("corral.test/web:{tag}"),
        &["/bin/sh", "-c", &script],
    )
}

struct World {
    cluster: TestCluster,
    node: ContainerNode,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

impl World {
    async fn start(test: &str) -> Option<World> {
        if !can_run(test) {
            return None;
        }
        let one = ONE.lock().await;
        let node = ContainerNode::start(test).await;
        for (tag, healthy) in [("1", true), ("2", true), ("bad", false)] {
            node.import(&web_image(tag, healthy)).await;
        }
        let mut cluster = TestCluster::start().await;
        cluster.add_container_agent("node-0", node.socket()).await;
        Some(World {
            cluster,
            node,
            _one: one,
        })
    }

    fn client(&self) -> &Client {
        &self.cluster.client
    }

    async fn finish(self) {
        corral_testkit::jobs::stop_and_wait(self.client(), "web", D).await;
        self.node.wait_clean(D).await;
        self.cluster.shutdown().await;
        self.node.finish().await;
    }
}

/// The job: `count` web servers with an HTTP check, rolling `max_parallel`
/// at a time, healthy after 1 s of passing checks.
fn spec(tag: &str, count: u32, update: &str) -> String {
    // Defaults for the tests, overridden by `update` ("key: value, ...").
    let mut fields: Vec<(String, String)> = [
        ("max_parallel", "1"),
        ("min_healthy_time", "1s"),
        ("healthy_deadline", "20s"),
        ("progress_deadline", "60s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for kv in update.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once(':').unwrap();
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match fields.iter_mut().find(|(x, _)| *x == k) {
            Some(f) => f.1 = v,
            None => fields.push((k, v)),
        }
    }
    let update = fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"name: web
groups:
  - name: web
    count: {count}
    update: {{{update}}}
    restart: {{attempts: 0, mode: fail}}
    service:
      name: web
      port: http
      check: {{type: http, path: /healthz, interval: 300ms, timeout: 250ms}}
    tasks:
      - name: app
        image: corral.test/web:{tag}
        ports: {{http: 8080}}
        resources: {{cpu: 50m, memory: 32M}}
"#
    )
}

async fn submit(c: &Client, text: &str) -> u64 {
    let r = c.submit(text, "web.yaml").await.unwrap();
    r.jobs[0].version
}

/// Waits for the deployment of `version` to reach `status`.
async fn wait_deployment(
    c: &Client,
    version: u64,
    status: DeploymentStatus,
) -> corral_types::Deployment {
    eventually(
        &format!("deployment of version {version} {status}"),
        D,
        || async {
            let ds = c.deployments("web").await.map_err(|e| e.to_string())?;
            match ds.iter().find(|d| d.job_version == version) {
                Some(d) if d.status == status => Ok(d.clone()),
                Some(d) => Err(format!("{} ({}): {:?}", d.status, d.description, d.groups)),
                None => Err(format!("no deployment yet: {ds:?}")),
            }
        },
    )
    .await
}

fn live(allocs: &[AllocView]) -> Vec<&AllocView> {
    allocs
        .iter()
        .filter(|a| a.desired == DesiredStatus::Run && !a.status.is_terminal())
        .collect()
}

/// Samples the allocations until stopped; returns every violation seen.
struct Sampler {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Sampler {
    fn start(c: Client, count: usize, max_parallel: usize) -> Sampler {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = 0;
            let mut bad = Vec::new();
            while !s.is_cancelled() {
                if let Ok(allocs) = c.allocs(Some("web")).await {
                    samples += 1;
                    let live = live(&allocs);
                    let healthy = live
                        .iter()
                        .filter(|a| {
                            a.status == ClientStatus::Running
                                && a.health.as_ref().is_some_and(|h| h.healthy)
                        })
                        .count();
                    let starting = live.iter().filter(|a| a.health.is_none()).count();
                    if healthy < count - max_parallel {
                        bad.push(format!("{healthy} healthy < floor: {}", describe(&live)));
                    }
                    if starting > max_parallel {
                        bad.push(format!(
                            "{starting} starting > max_parallel: {}",
                            describe(&live)
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (samples, bad)
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

fn describe(allocs: &[&AllocView]) -> String {
    allocs
        .iter()
        .map(|a| {
            format!(
                "{}@v{}:{}:{:?}",
                a.name,
                a.job_version,
                a.status,
                a.health.as_ref().map(|h| h.healthy)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The image tag each live allocation runs, read over HTTP from the pod.
async fn versions_served(c: &Client) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in live(&c.allocs(Some("web")).await.unwrap()) {
        let addr = a.ports.get("app.http").cloned().unwrap_or_default();
        let body = reqwest::get(format!("http://{addr}/version"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        *out.entry(body.trim().to_string()).or_default() += 1;
    }
    out
}

/// Runs the `corral` binary against the cluster.
fn corral(w: &World, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(corral_testkit::netns::corral_bin())
        .args(["--api", &w.cluster.url()])
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_update_rolls_through_keeping_the_floor() {
    let Some(w) = World::start("a_good_update_rolls_through_keeping_the_floor").await else {
        return;
    };
    let c = w.client().clone();
    let v1 = submit(&c, &spec("1", 4, "auto_revert: true")).await;
    wait_deployment(&c, v1, DeploymentStatus::Successful).await;
    assert!(
        c.job_versions("web").await.unwrap()[0].stable,
        "v1 is stable"
    );

    let sampler = Sampler::start(c.clone(), 4, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        spec("2", 4, "auto_revert: true"),
    )
    .unwrap();
    let out = corral(&w, &["run", "web.yaml"], dir.path());
    let (samples, bad) = sampler.finish().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("corral run:\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "corral run exits 0 when the deployment succeeds"
    );
    assert!(samples > 10, "sampled {samples} times");
    assert!(bad.is_empty(), "{} violations: {:#?}", bad.len(), bad);
    let d = wait_deployment(&c, 2, DeploymentStatus::Successful).await;
    assert_eq!(d.groups["web"].healthy, 4);
    assert_eq!(
        versions_served(&c).await,
        BTreeMap::from([("2".to_string(), 4)])
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_version_is_reverted_automatically() {
    let Some(w) = World::start("a_bad_version_is_reverted_automatically").await else {
        return;
    };
    let c = w.client().clone();
    let update = "auto_revert: true, healthy_deadline: 4s";
    let v1 = submit(&c, &spec("1", 3, update)).await;
    wait_deployment(&c, v1, DeploymentStatus::Successful).await;

    let sampler = Sampler::start(c.clone(), 3, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), spec("bad", 3, update)).unwrap();
    let out = corral(&w, &["run", "web.yaml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("corral run:\n{stdout}\n{stderr}");
    assert!(
        !out.status.success(),
        "corral run fails when its version is reverted"
    );
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("rolled back to version 1"), "{text}");

    let failed = wait_deployment(&c, 2, DeploymentStatus::Failed).await;
    assert!(
        failed.description.contains("unhealthy"),
        "{}",
        failed.description
    );
    assert!(
        failed.description.contains("rolling back to version 1"),
        "{}",
        failed.description
    );
    let revert = wait_deployment(&c, 3, DeploymentStatus::Successful).await;
    assert_eq!(revert.reverts_to, Some(1));
    let (samples, bad) = sampler.finish().await;
    assert!(samples > 10);
    assert!(bad.is_empty(), "{} violations: {:#?}", bad.len(), bad);
    let job = c.job("web", None).await.unwrap();
    assert_eq!(job.version, 3, "a new version number");
    assert_eq!(
        versions_served(&c).await,
        BTreeMap::from([("1".to_string(), 3)])
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canaries_then_promote_or_fail() {
    let Some(w) = World::start("canaries_then_promote_or_fail").await else {
        return;
    };
    let c = w.client().clone();
    let v1 = submit(&c, &spec("1", 3, "canary: 1")).await;
    wait_deployment(&c, v1, DeploymentStatus::Successful).await;

    // Canary, then promote: the rest rolls.
    let v2 = submit(&c, &spec("2", 3, "canary: 1")).await;
    let d = eventually("the canary healthy", D, || async {
        let d = c.deployment("web", None).await.map_err(|e| e.to_string())?;
        let g = &d.groups["web"];
        if d.job_version == v2 && g.healthy == 1 && g.placed_canaries.len() == 1 {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert!(!d.groups["web"].promoted);
    assert!(
        d.description.contains("corral deploy promote web"),
        "{}",
        d.description
    );
    // Beside the old version: four live, three of them v1.
    let served = versions_served(&c).await;
    assert_eq!(served, BTreeMap::from([("1".into(), 3), ("2".into(), 1)]));
    let dir = tempfile::tempdir().unwrap();
    let out = corral(&w, &["deploy", "promote", "web"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_deployment(&c, v2, DeploymentStatus::Successful).await;
    assert_eq!(versions_served(&c).await, BTreeMap::from([("2".into(), 3)]));

    // Canary, then fail: the canary goes, the old version stays.
    let v3 = submit(&c, &spec("1", 3, "canary: 1")).await;
    eventually("the second canary healthy", D, || async {
        let d = c.deployment("web", None).await.map_err(|e| e.to_string())?;
        if d.job_version == v3 && d.groups["web"].healthy == 1 {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    let out = corral(&w, &["deploy", "fail", "web"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_deployment(&c, v3, DeploymentStatus::Failed).await;
    eventually("the canary stopped", D, || async {
        let served = versions_served(&c).await;
        if served == BTreeMap::from([("2".to_string(), 3)]) {
            Ok(())
        } else {
            Err(format!("{served:?}"))
        }
    })
    .await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_progress_within_the_deadline_fails_the_deployment() {
    let Some(w) = World::start("no_progress_within_the_deadline_fails_the_deployment").await else {
        return;
    };
    let c = w.client().clone();
    let v1 = submit(&c, &spec("1", 2, "")).await;
    wait_deployment(&c, v1, DeploymentStatus::Successful).await;
    // Health is manual here and nobody sets it: no allocation is ever
    // decided unhealthy, so only the progress deadline can end it.
    let v2 = submit(
        &c,
        &spec(
            "2",
            2,
            "health_check: manual, healthy_deadline: 5s, progress_deadline: 5s",
        ),
    )
    .await;
    let d = wait_deployment(&c, v2, DeploymentStatus::Failed).await;
    assert!(
        d.description.contains("progress deadline (5s)"),
        "{}",
        d.description
    );
    // Without auto_revert the job stays where it is: one new (never
    // judged), one old, and nothing more is replaced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.job("web", None).await.unwrap().version, v2);
    let live_versions: Vec<u64> = live(&c.allocs(Some("web")).await.unwrap())
        .iter()
        .map(|a| a.job_version)
        .collect();
    assert_eq!(live_versions.len(), 2);
    assert_eq!(
        live_versions.iter().filter(|v| **v == v2).count(),
        1,
        "{live_versions:?}"
    );

    // Manual health, set by hand with `corral deploy health`: the next
    // version rolls through as each new allocation is marked healthy.
    let v3 = submit(
        &c,
        &spec(
            "1",
            2,
            "health_check: manual, healthy_deadline: 60s, progress_deadline: 60s",
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let marked = std::sync::atomic::AtomicUsize::new(0);
    eventually("version 3 rolled out by hand", D, || {
        let c = c.clone();
        let w = &w;
        let dir = dir.path().to_path_buf();
        let marked = &marked;
        async move {
            let d = c.deployment("web", None).await.map_err(|e| e.to_string())?;
            if d.job_version == v3 && d.status == DeploymentStatus::Successful {
                return Ok(());
            }
            for a in live(&c.allocs(Some("web")).await.map_err(|e| e.to_string())?) {
                if a.job_version == v3 && a.health.is_none() && a.status == ClientStatus::Running {
                    let out = corral(w, &["deploy", "health", &a.id[..8], "--healthy"], &dir);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    marked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Err(format!("{} {:?}", d.status, d.groups))
        }
    })
    .await;
    assert_eq!(
        marked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one new allocation (the v2 one replaced); the v1 one moves to v3 in place"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_restarts_none_of_the_survivors() {
    let Some(w) = World::start("scaling_restarts_none_of_the_survivors").await else {
        return;
    };
    let c = w.client().clone();
    let v1 = submit(&c, &spec("1", 3, "")).await;
    wait_deployment(&c, v1, DeploymentStatus::Successful).await;
    let before: BTreeMap<String, i64> = w
        .node
        .running_containers()
        .await
        .into_iter()
        .map(|x| (x.id, x.created_at))
        .collect();
    assert_eq!(before.len(), 3);
    submit(&c, &spec("1", 6, "")).await;
    corral_testkit::jobs::wait_running(&c, "web", 6, D).await;
    submit(&c, &spec("1", 2, "")).await;
    let job = corral_testkit::jobs::wait_running(&c, "web", 2, D).await;
    let after: BTreeMap<String, i64> = eventually("two containers left", D, || async {
        let after: BTreeMap<String, i64> = w
            .node
            .running_containers()
            .await
            .into_iter()
            .map(|x| (x.id, x.created_at))
            .collect();
        if after.len() == 2 {
            Ok(after)
        } else {
            Err(format!("{after:?}"))
        }
    })
    .await;
    for (id, created) in &after {
        assert_eq!(
            before.get(id),
            Some(created),
            "survivor {id} is one of the first three, never restarted"
        );
    }
    for a in &job.allocations {
        if a.desired == DesiredStatus::Run {
            assert!(a.tasks.values().all(|t| t.restarts == 0), "{a:?}");
        }
    }
    // Each count change is a version of its own, rolled out under a
    // deployment (issue 12, case 6: stable only through health); the
    // survivors join it with the health they proved, restarting nothing.
    let ds = c.deployments("web").await.unwrap();
    assert_eq!(ds.len(), 3, "{ds:?}");
    wait_deployment(&c, job.version, DeploymentStatus::Successful).await;
    w.finish().await;
}
