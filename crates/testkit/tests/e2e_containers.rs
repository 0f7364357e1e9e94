//! End to end through corral with real containers: a real server, a real
//! agent with the container driver, and a private containerd per test
//! (runc, CNI bridge + portmap). Each test starts its own containerd and
//! cluster and checks at the end that nothing is left: no container, no
//! sandbox, no shim, no netns, no veth, no nat rule, no bridge.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, busybox-static (and
//! docker-registry + skopeo for the registry test). Skipped with a message
//! when missing, a failure with `CORRAL_REQUIRE_ROOT_TESTS=1`.
//! `CORRAL_LOG=info` shows the agent's log; `CORRAL_TEST_KEEP=1` keeps the
//! containerd directories (their containerd.log).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_agent::containerd::register_insecure_registry;
use corral_agent::image::{BUSYBOX, DEMO_IMAGE, demo_image};
use corral_client::Client;
use corral_testkit::containers::{
    BUSYBOX_IMAGE, ContainerNode, LocalRegistry, REQUIRE_ENV, busybox_image, can_run,
    restore_leases, restore_nat,
};
use corral_testkit::jobs::{self, log_text, running, summary};
use corral_testkit::{TestCluster, eventually};
use corral_types::api::{AllocView, JobView};
use corral_types::{ClientStatus, TaskLifecycle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Deadline of every wait (stretched by CORRAL_TEST_PATIENCE).
const D: Duration = Duration::from_secs(60);

/// The latency test runs alone (write lock); the others share (read).
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// One test's world: a private containerd and a cluster whose one agent
/// (`node-0`) runs containers on it.
struct World {
    // Dropped first on a failure: the agent stops before the node is
    // cleaned up.
    cluster: TestCluster,
    node: ContainerNode,
    test: String,
    started: Instant,
    _shared: RwLockReadGuard<'static, ()>,
}

impl World {
    /// `None` when the machine cannot run containers (and the
    /// environment allows skipping).
    async fn start(test: &str) -> Option<World> {
        Self::start_with(test, true).await
    }

    /// With `agent` false, no agent yet.
    async fn start_with(test: &str, agent: bool) -> Option<World> {
        Self::start_configured(test, agent, false).await
    }

    /// With `patient`, the server waits 30 s before it marks a silent
    /// node down: an agent may be away a while without its allocations
    /// being replaced.
    async fn start_configured(test: &str, agent: bool, patient: bool) -> Option<World> {
        if !can_run(test) {
            return None;
        }
        let shared = EXCLUSIVE.read().await;
        let started = Instant::now();
        let node = ContainerNode::start(test).await;
        let mut cluster = if patient {
            TestCluster::start_with(|c| {
                c.heartbeat_min_ttl = Duration::from_secs(30);
                c.heartbeat_grace = Duration::from_secs(30);
            })
            .await
        } else {
            TestCluster::start().await
        };
        if agent {
            cluster.add_container_agent("node-0", node.socket()).await;
        }
        Some(World {
            node,
            cluster,
            test: test.to_string(),
            started,
            _shared: shared,
        })
    }

    fn client(&self) -> &Client {
        &self.cluster.client
    }

    /// Stops `jobs`, waits until the node is clean, shuts the cluster
    /// down and checks that nothing is left.
    async fn finish(self, jobs: &[&str]) {
        for j in jobs {
            stop_and_wait(self.client(), j).await;
        }
        self.node.wait_clean(D).await;
        self.cluster.shutdown().await;
        self.node.finish().await;
        eprintln!(
            "[{}] done in {} ms",
            self.test,
            self.started.elapsed().as_millis()
        );
    }
}

async fn wait_running(c: &Client, name: &str, n: usize) -> JobView {
    jobs::wait_running(c, name, n, D).await
}

async fn wait_alloc(c: &Client, name: &str, status: ClientStatus) -> AllocView {
    jobs::wait_alloc(c, name, status, D).await
}

async fn stop_and_wait(c: &Client, name: &str) {
    jobs::stop_and_wait(c, name, D).await
}

async fn log_containing(c: &Client, alloc: &str, stream: &str, want: &str) -> String {
    jobs::log_containing(c, alloc, stream, want, D).await
}

/// `GET /` on `addr` (`host:port`) over HTTP/1.0: status line and body.
async fn http_get(addr: &str) -> Result<String, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn ids(allocs: &[&AllocView]) -> BTreeSet<String> {
    allocs.iter().map(|a| a.id.clone()).collect()
}

/// 1. The seed spec of the talk runs three containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_spec_runs_three_containers() {
    let Some(w) = World::start("seed").await else {
        return;
    };
    let c = w.client();
    w.node.import_demo().await;
    c.submit(
        &format!("image: {DEMO_IMAGE}\nenv: {{FOO: bar}}\ncount: 3\n"),
        "demo.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "demo", 3).await;
    let allocs = ids(&running(&j));
    for a in &allocs {
        log_containing(c, a, "stdout", "FOO=bar").await;
    }

    // The runtime's view: three running task containers, one per
    // allocation, each in its own ready sandbox.
    let containers = w.node.running_containers().await;
    assert_eq!(containers.len(), 3, "{containers:?}");
    let by_alloc: BTreeSet<String> = containers.iter().map(|c| c.alloc_id.clone()).collect();
    assert_eq!(by_alloc, allocs);
    assert!(
        containers
            .iter()
            .all(|c| c.task == "demo" && c.name == "demo")
    );
    let sandboxes = w.node.sandboxes().await;
    assert_eq!(sandboxes.len(), 3, "{sandboxes:?}");
    assert!(sandboxes.values().all(|ready| *ready));
    let pods: BTreeSet<&String> = containers.iter().map(|c| &c.sandbox_id).collect();
    assert_eq!(pods, sandboxes.keys().collect());
    // ctr sees the same: three task containers and three pause containers.
    let ctr = w.node.ctr_containers().await;
    assert_eq!(ctr.len(), 6, "{ctr:?}");
    for c in &containers {
        assert!(ctr.contains(&c.id), "{} not in {ctr:?}", c.id);
    }
    for s in sandboxes.keys() {
        assert!(ctr.contains(s), "sandbox {s} not in {ctr:?}");
    }
    assert_eq!(w.node.ctr_tasks().await.len(), 6);
    // One shim per pod.
    assert_eq!(w.node.shims().len(), 3, "{:?}", w.node.shims());

    w.finish(&["demo"]).await;
}

/// 2. An image from a registry (pushed with skopeo) is pulled and runs; a
/// missing tag fails the allocation with "image not found", and the agent
/// goes on running other jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_image_is_pulled_and_a_missing_tag_fails_clearly() {
    for bin in ["/usr/bin/docker-registry", "/usr/bin/skopeo"] {
        if !Path::new(bin).exists() {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{bin} is missing");
            }
            eprintln!("SKIPPED: {bin} is missing");
            return;
        }
    }
    let Some(w) = World::start("registry").await else {
        return;
    };
    let c = w.client();
    let registry = LocalRegistry::start(w.node.dir.path()).await;
    let archive = w.node.build(&demo_image(Path::new(BUSYBOX)));
    let image = registry.push(&archive, "corral/demo:1").await;
    register_insecure_registry(&w.node.containerd.paths().certs_dir, &registry.host_port())
        .unwrap();
    let images = w.node.ctr(&["images", "ls", "-q"]).await;
    assert!(!images.contains(&image), "already there: {images}");

    c.submit(
        &format!("name: pulled\nimage: {image}\nenv: {{FOO: pulled}}\n"),
        "pulled.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "pulled", 1).await;
    log_containing(c, &running(&j)[0].id, "stdout", "FOO=pulled").await;
    let images = w.node.ctr(&["images", "ls", "-q"]).await;
    assert!(images.contains(&image), "not pulled: {images}");

    // A tag the registry does not have.
    let missing = format!("{}/corral/demo:nope", registry.host_port());
    c.submit(
        &format!("name: missing\nimage: {missing}\nrestart: {{attempts: 0, mode: fail}}\n"),
        "missing.yaml",
    )
    .await
    .unwrap();
    let a = wait_alloc(c, "missing", ClientStatus::Failed).await;
    let t = &a.tasks["missing"];
    let reasons = format!("{} | {}", a.message, t.message);
    assert!(reasons.contains("image not found"), "{reasons}");
    assert!(reasons.contains(&missing), "{reasons}");
    assert_eq!(t.state, TaskLifecycle::Dead, "{t:?}");
    assert!(t.failed, "{t:?}");
    eprintln!("missing tag: {reasons}");

    // The agent still works: another job from the registry runs.
    c.submit(
        &format!("name: after\nimage: {image}\nenv: {{FOO: after}}\n"),
        "after.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "after", 1).await;
    log_containing(c, &running(&j)[0].id, "stdout", "FOO=after").await;
    // The first job was not disturbed.
    assert_eq!(running(&c.job("pulled", None).await.unwrap()).len(), 1);

    w.finish(&["pulled", "missing", "after"]).await;
    registry.stop().await;
}

/// Issue 14, case 2: an image that cannot be pulled runs nothing. The task
/// waits out its restart delay; the allocation and the job say
/// restarting, with the pull's error, never running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_restarting_not_running() {
    let Some(w) = World::start("unpullable").await else {
        return;
    };
    let c = w.client();
    // A registry address nothing listens on.
    let image = format!(
        "127.0.0.1:{}/corral/none:1",
        corral_testkit::containers::free_port()
    );
    c.submit(
        &format!(
            "name: unpullable\nimage: {image}\nrestart: {{attempts: 1, interval: 24h, delay: 1h, mode: fail}}\n"
        ),
        "unpullable.yaml",
    )
    .await
    .unwrap();
    let j = eventually("the allocation restarting", D, || async {
        let j = c.job("unpullable", None).await.map_err(|e| e.to_string())?;
        match j.allocations.first() {
            Some(a) if a.state == corral_types::AllocState::Restarting => Ok(j),
            _ => Err(summary(&j)),
        }
    })
    .await;
    let a = &j.allocations[0];
    assert_eq!(a.status, ClientStatus::Pending, "{}", summary(&j));
    assert!(
        a.reason.starts_with("task unpullable: failed to start: ")
            && a.reason.contains(&image)
            && a.reason.ends_with("; restarting in 1h"),
        "{}",
        a.reason
    );
    assert_eq!(j.status, corral_types::JobStatus::Restarting);
    assert_eq!(j.reason, format!("unpullable.unpullable[0]: {}", a.reason));
    let listed = c.jobs().await.unwrap();
    let l = listed.iter().find(|l| l.name == "unpullable").unwrap();
    assert_eq!(l.status, corral_types::JobStatus::Restarting);
    assert_eq!(l.groups[0].running, 0);
    w.finish(&["unpullable"]).await;
}

/// 3. A container that allocates past its memory limit is reported as
/// OOM-killed with exit code 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kill_is_reported() {
    let Some(w) = World::start("oom").await else {
        return;
    };
    let c = w.client();
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    c.submit(
        &format!(
            r#"name: hog
image: {BUSYBOX_IMAGE}
command: [/bin/sh, -c, 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived']
resources: {{memory: 32M}}
restart: {{attempts: 0, mode: fail}}
"#
        ),
        "hog.yaml",
    )
    .await
    .unwrap();
    let a = wait_alloc(c, "hog", ClientStatus::Failed).await;
    let t = &a.tasks["hog"];
    assert!(t.oom_killed, "{t:?}");
    assert_eq!(t.exit_code, Some(137), "{t:?}");
    assert!(t.message.contains("oom"), "{t:?}");
    assert!(t.failed, "{t:?}");
    let out = log_text(c, &a.id, "stdout").await.unwrap();
    assert!(!out.contains("survived"), "{out}");
    w.finish(&["hog"]).await;
}

/// 4. A crashing container follows its restart policy: two restarts, then
/// the allocation fails with the last exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_follows_its_restart_policy() {
    let Some(w) = World::start("crash").await else {
        return;
    };
    let c = w.client();
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    c.submit(
        &format!(
            "name: crash
image: {BUSYBOX_IMAGE}
command: [/bin/sh, -c, 'echo crashing >&2; exit 3']
restart: {{attempts: 2, delay: 200ms, interval: 1m, mode: fail}}
"
        ),
        "crash.yaml",
    )
    .await
    .unwrap();
    let a = wait_alloc(c, "crash", ClientStatus::Failed).await;
    let t = &a.tasks["crash"];
    assert_eq!(t.restarts, 2, "attempts: 2 means two restarts: {t:?}");
    assert_eq!(t.exit_code, Some(3), "{t:?}");
    assert_eq!(t.state, TaskLifecycle::Dead, "{t:?}");
    assert!(t.failed, "the restart policy gave up: {t:?}");
    assert!(t.message.contains("restart mode is fail"), "{t:?}");
    assert!(!t.oom_killed);
    // It stays failed: no further restarts, no replacement.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = c.job("crash", None).await.unwrap();
    assert_eq!(j.allocations.len(), 1, "{}", summary(&j));
    assert_eq!(j.allocations[0].tasks["crash"].restarts, 2);
    let stderr = log_text(c, &a.id, "stderr").await.unwrap();
    assert_eq!(
        stderr.matches("crashing").count(),
        3,
        "three runs: {stderr:?}"
    );
    w.finish(&["crash"]).await;
}

/// 5. An agent that goes away without stopping its tasks (as a killed
/// agent process) leaves its containers running; the next agent on the
/// same data dir adopts them: same containers, same start times, same
/// allocations, no restart, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_adopts_running_containers() {
    let Some(mut w) = World::start_with("adopt", false).await else {
        return;
    };
    w.node.import_demo().await;
    let socket = w.node.socket().to_path_buf();
    let node_id = w
        .cluster
        .add_container_agent_with("node-0", &socket, false)
        .await
        .node_id
        .clone();
    let c = w.client().clone();
    c.submit(
        &format!("name: adopt\nimage: {DEMO_IMAGE}\nenv: {{FOO: adopt}}\ncount: 2\n"),
        "adopt.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(&c, "adopt", 2).await;
    let allocs = ids(&running(&j));
    let before = w.node.running_containers().await;
    assert_eq!(before.len(), 2, "{before:?}");
    let mut started = BTreeMap::new();
    for k in &before {
        started.insert(k.id.clone(), w.node.started_at(&k.id).await);
    }
    let ctr_before: BTreeSet<String> = w.node.ctr_containers().await.into_iter().collect();

    // The agent goes; its containers stay.
    let t = Instant::now();
    w.cluster.take_agent("node-0").unwrap().shutdown().await;
    assert_eq!(w.node.running_containers().await, before);

    // A new agent on the same data dir: the same node, adopting.
    let again = w
        .cluster
        .add_container_agent_with("node-0", &socket, true)
        .await
        .node_id
        .clone();
    assert_eq!(again, node_id, "same data dir, same node");
    eprintln!("agent away and back in {} ms", t.elapsed().as_millis());
    eventually("tasks re-attached by the new agent", D, || async {
        let j = c.job("adopt", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        let reattached = r.iter().all(|a| {
            a.tasks
                .values()
                .all(|t| t.state == TaskLifecycle::Running && t.message.contains("re-attached"))
        });
        if ids(&r) == allocs && reattached {
            Ok(())
        } else {
            Err(summary(&j))
        }
    })
    .await;
    // Give a wrong restart or a second container time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = c.job("adopt", None).await.unwrap();
    assert_eq!(j.allocations.len(), 2, "no replacement: {}", summary(&j));
    assert_eq!(ids(&running(&j)), allocs, "{}", summary(&j));
    for a in running(&j) {
        assert_eq!(a.tasks["adopt"].restarts, 0, "{:?}", a.tasks);
    }
    let after = w.node.running_containers().await;
    assert_eq!(after, before, "the same containers, nothing new");
    assert!(after.iter().all(|k| k.attempt == 0));
    for k in &after {
        assert_eq!(
            w.node.started_at(&k.id).await,
            started[&k.id],
            "container {} restarted",
            k.id
        );
    }
    let ctr_after: BTreeSet<String> = w.node.ctr_containers().await.into_iter().collect();
    assert_eq!(
        ctr_after, ctr_before,
        "no duplicate containers or sandboxes"
    );
    assert_eq!(ctr_after.len(), 4);
    w.finish(&["adopt"]).await;
}

/// 6. Stopping a job leaves nothing: no container, no sandbox, no task, no
/// shim, no netns, no veth, no nat rule (a host port included), no pod
/// cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_nothing_behind() {
    let Some(w) = World::start("stop").await else {
        return;
    };
    let c = w.client();
    w.node.import_demo().await;
    c.submit(
        &format!(
            "name: gone\nimage: {DEMO_IMAGE}\ncount: 2\nports: {{http: 8080}}\nkill_timeout: 2s\n"
        ),
        "gone.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "gone", 2).await;
    let allocs = ids(&running(&j));
    // While running: all of it exists.
    assert_eq!(w.node.running_containers().await.len(), 2);
    assert_eq!(w.node.sandboxes().await.len(), 2);
    assert_eq!(w.node.netns_left().len(), 2, "{:?}", w.node.netns_left());
    assert_eq!(w.node.bridge_ports().len(), 2);
    assert!(!w.node.nat_rules().is_empty());
    let cgroups = |allocs: &BTreeSet<String>| -> Vec<String> {
        allocs
            .iter()
            .map(|a| format!("/sys/fs/cgroup/memory/corral/pod{a}"))
            .filter(|p| Path::new(p).exists())
            .collect()
    };
    assert_eq!(cgroups(&allocs).len(), 2, "pod cgroups while running");

    let t = Instant::now();
    stop_and_wait(c, "gone").await;
    w.node.wait_clean(D).await;
    eprintln!("stop to clean node: {} ms", t.elapsed().as_millis());
    let j = c.job("gone", None).await.unwrap();
    assert!(
        j.allocations
            .iter()
            .all(|a| a.status == ClientStatus::Complete),
        "{}",
        summary(&j)
    );
    eventually("pod cgroups removed", D, || async {
        let left = cgroups(&allocs);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    w.finish(&[]).await;
}

/// 7. What a process inside a container sees: no new privileges, seccomp
/// filtering, not every capability; and the spec's security settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_defaults_seen_from_inside() {
    let Some(w) = World::start("security").await else {
        return;
    };
    let c = w.client();
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    let probe = "grep -E 'CapEff|NoNewPrivs|Seccomp' /proc/self/status; id -u; touch /x 2>/dev/null && echo writable || echo read-only; trap 'exit 0' TERM; while :; do sleep 1; done";
    c.submit(
        &format!(
            "name: probe\nimage: {BUSYBOX_IMAGE}\ncommand: [/bin/sh, -c, \"{probe}\"]\nkill_timeout: 2s\n"
        ),
        "probe.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &format!(
            "name: locked\nimage: {BUSYBOX_IMAGE}\ncommand: [/bin/sh, -c, \"{probe}\"]\nkill_timeout: 2s\nsecurity: {{read_only_rootfs: true, user: 65534, cap_drop: [ALL]}}\n"
        ),
        "locked.yaml",
    )
    .await
    .unwrap();
    let field = |out: &str, name: &str| -> String {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in {out:?}"))
    };

    let j = wait_running(c, "probe", 1).await;
    let out = log_containing(c, &running(&j)[0].id, "stdout", "Seccomp").await;
    let out = if out.contains("writable") || out.contains("read-only") {
        out
    } else {
        log_containing(c, &running(&j)[0].id, "stdout", "writ").await
    };
    eprintln!("default container:\n{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out:?}");
    assert!(out.contains("Seccomp:\t2"), "{out:?}");
    let cap_eff = u64::from_str_radix(&field(&out, "CapEff"), 16).unwrap();
    assert_ne!(cap_eff, 0, "{out:?}");
    for full in [0x1ff_ffff_ffffu64, 0x3f_ffff_ffff, 0x1ff_feff_ffff] {
        assert_ne!(cap_eff, full, "every capability: {out:?}");
    }
    assert_eq!(cap_eff & (1 << 21), 0, "CAP_SYS_ADMIN in {cap_eff:x}");
    assert!(
        out.lines().any(|l| l.trim() == "0"),
        "runs as root by default: {out:?}"
    );
    assert!(out.contains("writable"), "{out:?}");

    let j = wait_running(c, "locked", 1).await;
    let out = log_containing(c, &running(&j)[0].id, "stdout", "read-only").await;
    eprintln!("locked container:\n{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out:?}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out:?}");
    assert!(out.lines().any(|l| l.trim() == "65534"), "{out:?}");
    w.finish(&["probe", "locked"]).await;
}

/// 8. The mapped host port answers HTTP from the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_host_port_answers_http() {
    let Some(w) = World::start("port").await else {
        return;
    };
    let c = w.client();
    w.node.import_demo().await;
    c.submit(
        &format!("name: web\nimage: {DEMO_IMAGE}\nenv: {{FOO: bar}}\nports: {{http: 8080}}\n"),
        "web.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "web", 1).await;
    let a = running(&j)[0].clone();
    let addr = a
        .ports
        .get("web.http")
        .cloned()
        .unwrap_or_else(|| panic!("no web.http in {:?}", a.ports));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let page = eventually(&format!("HTTP on {addr}"), D, || async {
        let r = http_get(&addr).await?;
        if r.contains("FOO=bar") {
            Ok(r)
        } else {
            Err(format!("answer: {r:?}"))
        }
    })
    .await;
    assert!(page.starts_with("HTTP/1."), "{page}");
    assert!(page.contains(" 200 "), "{page}");
    eprintln!(
        "GET http://{addr}/ -> {}",
        page.lines().last().unwrap_or("")
    );
    w.finish(&["web"]).await;
}

/// 9. Submit-to-running of one container (image cached) beside a bare
/// `ctr run --rm` of the same image. Prints the numbers; asserts nothing
/// about them (shared machines are noisy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_start_latency_vs_ctr_run() {
    if !can_run("latency") {
        return;
    }
    // Alone: no other container test runs meanwhile.
    let exclusive = EXCLUSIVE.write().await;
    let node = ContainerNode::start("latency").await;
    let mut cluster = TestCluster::start().await;
    cluster.add_container_agent("node-0", node.socket()).await;
    let c = cluster.client.clone();
    let image = node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    const RUNS: usize = 5;

    // corral: submit until the allocation is reported running.
    let mut corral_ms = vec![];
    for i in 0..RUNS {
        let name = format!("lat{i}");
        let spec = format!(
            "name: {name}\nimage: {image}\ncommand: [/bin/sh, -c, \"trap 'exit 0' TERM; while :; do sleep 1; done\"]\nresources: {{cpu: 50m, memory: 32M}}\nkill_timeout: 2s\n"
        );
        let t = Instant::now();
        c.submit(&spec, &format!("{name}.yaml")).await.unwrap();
        loop {
            let j = c.job(&name, None).await.unwrap();
            if running(&j).len() == 1 {
                break;
            }
            assert!(t.elapsed() < D, "{name} not running: {}", summary(&j));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        corral_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        stop_and_wait(&c, &name).await;
        node.wait_clean(D).await;
    }

    // ctr: create, start, wait and remove a container running /bin/true;
    // then the same with the runtime's default seccomp profile (which
    // corral's containers get and plain `ctr run` does not).
    let mut ctr_ms = vec![];
    let mut ctr_seccomp_ms = vec![];
    // Everything in the node's own dirs (runc state, fifos), with ids no
    // other test process uses.
    let runc_root = node.containerd.paths().runc_root.display().to_string();
    let fifo_dir = node.dir.path().join("fifo").display().to_string();
    let pid = std::process::id();
    for (n, (series, extra)) in [
        (&mut ctr_ms, None),
        (&mut ctr_seccomp_ms, Some("--seccomp")),
    ]
    .into_iter()
    .enumerate()
    {
        for i in 0..RUNS {
            let id = format!("ctr-latency-{pid}-{n}-{i}");
            let mut args = vec![
                "run",
                "--rm",
                "--net-host",
                "--runc-root",
                &runc_root,
                "--fifo-dir",
                &fifo_dir,
            ];
            args.extend(extra);
            args.extend([image.as_str(), id.as_str(), "/bin/true"]);
            let t = Instant::now();
            let out = node.ctr_output(&args).await;
            series.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(
                out.status.success(),
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let corral = median(&mut corral_ms);
    let ctr = median(&mut ctr_ms);
    let ctr_seccomp = median(&mut ctr_seccomp_ms);
    let line = format!(
        "container start latency (median of {RUNS}): corral submit->running {corral:.0} ms, ctr run --rm {ctr:.0} ms, ratio {:.2} (corral runs: {}; ctr runs: {}; ctr run --rm --seccomp: {ctr_seccomp:.0} ms)",
        corral / ctr,
        fmt_ms(&corral_ms),
        fmt_ms(&ctr_ms),
    );
    eprintln!("{line}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    if let Err(e) = std::fs::write(target.join("container-latency.txt"), format!("{line}\n")) {
        eprintln!("cannot write {}: {e}", target.display());
    }
    cluster.shutdown().await;
    node.finish().await;
    drop(exclusive);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_ms(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The allocation of a job (it has one), as the server shows it.
async fn only_alloc(c: &Client, job: &str) -> AllocView {
    let j = c.job(job, None).await.unwrap();
    assert_eq!(j.allocations.len(), 1, "{}", summary(&j));
    j.allocations[0].clone()
}

/// 10. Issue 13, case 8 (a): the pause process of a pod is killed; the
/// task's next restart gets a new sandbox (with its network and host
/// port) instead of failing for good with "no running task found", and
/// the restart is counted as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pause_process_gets_a_new_sandbox() {
    let Some(w) = World::start("pause").await else {
        return;
    };
    let c = w.client();
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    c.submit(
        &format!(
            "name: pod
image: {BUSYBOX_IMAGE}
command: [/bin/sh, -c, 'echo hello-from-$(hostname) > /tmp/index.html; httpd -p 8080 -h /tmp; sleep 6; exit 1']
ports: {{http: 8080}}
restart: {{attempts: 3, delay: 1s, interval: 10m, mode: fail}}
kill_timeout: 1s
"
        ),
        "pod.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "pod", 1).await;
    let addr = running(&j)[0].ports["pod.http"].clone();
    let get = |want: &'static str| {
        let addr = addr.clone();
        async move {
            eventually(&format!("HTTP on {addr}"), D, || async {
                let r = http_get(&addr).await?;
                if r.contains(want) {
                    Ok(())
                } else {
                    Err(format!("answer: {r:?}"))
                }
            })
            .await
        }
    };
    get("hello-from-pod-0").await;
    let before = w.node.running_containers().await;
    assert_eq!(before.len(), 1, "{before:?}");
    let old = before[0].sandbox_id.clone();
    w.node.kill_pause(&old).await;

    // The task exits after 6 s and restarts in a new, ready sandbox.
    let a = eventually("a restart in a new sandbox", D, || async {
        let a = only_alloc(c, "pod").await;
        let t = &a.tasks["pod"];
        let now = w.node.running_containers().await;
        let sandboxes = w.node.sandboxes().await;
        match now.first() {
            Some(k)
                if k.sandbox_id != old
                    && t.restarts >= 1
                    && sandboxes.get(&k.sandbox_id) == Some(&true) =>
            {
                Ok((a.clone(), k.clone(), sandboxes))
            }
            _ => Err(format!("{:?} {:?}; containers {now:?}", a.status, t)),
        }
    })
    .await;
    let (a, k, sandboxes) = a;
    assert!(
        !sandboxes.contains_key(&old),
        "the dead sandbox is removed: {sandboxes:?}"
    );
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let t = &a.tasks["pod"];
    assert!(!t.failed, "{t:?}");
    assert!(!t.message.contains("failed to start"), "{t:?}");
    assert_eq!(k.attempt, t.restarts, "one container per run: {k:?} {t:?}");
    // The host port reaches the task in its new network namespace.
    get("hello-from-pod-0").await;
    w.finish(&["pod"]).await;
}

/// 11. Issue 13, case 11: containers that exit while the agent is away
/// (one with a code, one OOM-killed) are reported with their exit code
/// and OOM flag once the next agent adopts them, not as "exited while the
/// agent was away" with no code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_while_the_agent_is_away_keep_their_code() {
    let Some(mut w) = World::start_configured("away", false, true).await else {
        return;
    };
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    let socket = w.node.socket().to_path_buf();
    w.cluster
        .add_container_agent_with("node-0", &socket, false)
        .await;
    let c = w.client().clone();
    // Each waits for /tmp/go, which the test creates while the agent is
    // away.
    let wait_go = "until [ -e /tmp/go ]; do sleep 0.1; done";
    c.submit(
        &format!(
            "name: code\nimage: {BUSYBOX_IMAGE}\ncommand: [/bin/sh, -c, '{wait_go}; exit 5']\nrestart: {{attempts: 0, mode: fail}}\n"
        ),
        "code.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &format!(
            "name: hog\nimage: {BUSYBOX_IMAGE}\ncommand: [/bin/sh, -c, '{wait_go}; x=$(head -c 200000000 /dev/zero | tr \"\\0\" a)']\nresources: {{memory: 32M}}\nrestart: {{attempts: 0, mode: fail}}\n"
        ),
        "hog.yaml",
    )
    .await
    .unwrap();
    wait_running(&c, "code", 1).await;
    wait_running(&c, "hog", 1).await;
    let containers = w.node.running_containers().await;
    assert_eq!(containers.len(), 2, "{containers:?}");

    w.cluster.take_agent("node-0").unwrap().shutdown().await;
    for k in &containers {
        assert_eq!(
            w.node.exec(&k.id, &["/bin/sh", "-c", ": > /tmp/go"]).await,
            0
        );
    }
    eventually("both containers to exit", D, || async {
        let r = w.node.running_containers().await;
        if r.is_empty() {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    w.cluster
        .add_container_agent_with("node-0", &socket, true)
        .await;
    let a = wait_alloc(&c, "code", ClientStatus::Failed).await;
    let t = &a.tasks["code"];
    assert_eq!(t.exit_code, Some(5), "{t:?}");
    assert!(!t.oom_killed, "{t:?}");
    assert!(!t.message.contains("away"), "{t:?}");
    let a = wait_alloc(&c, "hog", ClientStatus::Failed).await;
    let t = &a.tasks["hog"];
    assert!(t.oom_killed, "{t:?}");
    assert_eq!(t.exit_code, Some(137), "{t:?}");
    assert!(t.message.contains("oom"), "{t:?}");
    w.finish(&["code", "hog"]).await;
}

/// The sandbox of a job's (only) allocation.
async fn sandbox_of_job(c: &Client, node: &ContainerNode, job: &str) -> String {
    let a = only_alloc(c, job).await;
    node.containers()
        .await
        .into_iter()
        .find(|k| k.alloc_id == a.id)
        .map(|k| k.sandbox_id)
        .unwrap_or_else(|| panic!("no container of {job}"))
}

/// 12. Issue 13, case 13: an agent killed during a stop can leave a pod's
/// CNI masquerade chain, portmap DNAT chain and lease behind (the
/// runtime's retry skips them). The next agent sweeps the leftovers of
/// sandboxes the runtime no longer has, and leaves a live pod's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_leftovers_of_vanished_sandboxes_are_swept_at_agent_start() {
    let Some(mut w) = World::start_configured("cnisweep", false, true).await else {
        return;
    };
    w.node.import_demo().await;
    let socket = w.node.socket().to_path_buf();
    w.cluster
        .add_container_agent_with("node-0", &socket, false)
        .await;
    let c = w.client().clone();
    for name in ["live", "gone"] {
        c.submit(
            &format!("name: {name}\nimage: {DEMO_IMAGE}\nenv: {{FOO: {name}}}\nports: {{http: 8080}}\nkill_timeout: 2s\n"),
            &format!("{name}.yaml"),
        )
        .await
        .unwrap();
    }
    let live = wait_running(&c, "live", 1).await;
    let live_alloc = running(&live)[0].clone();
    wait_running(&c, "gone", 1).await;
    let (live_sb, gone_sb) = (
        sandbox_of_job(&c, &w.node, "live").await,
        sandbox_of_job(&c, &w.node, "gone").await,
    );
    let live_rules = w.node.cni_nat_of(&live_sb);
    let leftovers = w.node.cni_nat_of(&gone_sb);
    let leases = w.node.cni_leases_of(&gone_sb);
    assert!(
        leftovers.iter().any(|l| l.contains("MASQUERADE"))
            && leftovers.iter().any(|l| l.contains("DNAT")),
        "{leftovers:?}"
    );
    assert_eq!(leases.len(), 1, "{leases:?}");

    // As a kill during the stop leaves them: the sandbox is gone, its
    // rules and lease are not.
    stop_and_wait(&c, "gone").await;
    eventually("the stopped pod's rules removed", D, || async {
        let left = w.node.cni_nat_of(&gone_sb);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    restore_leases(&leases, Duration::from_secs(120));
    // The stop's own sweep may still be running (it removed rules once
    // already in CI): restore until the leftovers stay put for a second.
    eventually("the leftovers restored", D, || async {
        let now = w.node.cni_nat_of(&gone_sb);
        let missing: Vec<String> = leftovers
            .iter()
            .filter(|l| !now.contains(l))
            .cloned()
            .collect();
        if !missing.is_empty() {
            // All of them, in order (a chain before its rules): the stop's
            // sweep may remove a chain between the listing and the restore.
            restore_nat(&leftovers)?;
            return Err(format!("restored {} rules", missing.len()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = w.node.cni_nat_of(&gone_sb);
        if after.len() == leftovers.len() {
            Ok(())
        } else {
            Err(format!("{} of {} left", after.len(), leftovers.len()))
        }
    })
    .await;

    // The agent goes and comes back.
    w.cluster.take_agent("node-0").unwrap().shutdown().await;
    w.cluster
        .add_container_agent_with("node-0", &socket, true)
        .await;
    eventually("the leftovers swept", D, || async {
        let left = w.node.cni_nat_of(&gone_sb);
        let leases: Vec<_> = leases.iter().filter(|(p, _)| p.exists()).collect();
        if left.is_empty() && leases.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?} {leases:?}"))
        }
    })
    .await;
    // The live pod's rules are untouched and it still answers.
    assert_eq!(w.node.cni_nat_of(&live_sb), live_rules);
    let addr = live_alloc.ports["live.http"].clone();
    eventually(&format!("HTTP on {addr}"), D, || async {
        let r = http_get(&addr).await?;
        if r.contains("FOO=live") {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    w.finish(&["live"]).await;
}

/// 13. Issue 13 (suspected): a plain agent (tasks kept on shutdown) shut
/// down while an allocation stops finishes that stop: the runner is not
/// dropped in the middle of StopContainer or StopPodSandbox, so nothing of
/// the stopped allocation is left for the next agent (or nobody) to find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_shutdown_finishes_a_stop_in_progress() {
    let Some(mut w) = World::start_configured("shutstop", false, true).await else {
        return;
    };
    w.node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
    let socket = w.node.socket().to_path_buf();
    w.cluster
        .add_container_agent_with("node-0", &socket, false)
        .await;
    let c = w.client().clone();
    c.submit(
        &format!(
            "name: slow\nimage: {BUSYBOX_IMAGE}\ncommand: [/bin/sh, -c, \"trap '' TERM; while :; do sleep 1; done\"]\nports: {{http: 8080}}\nkill_timeout: 3s\n"
        ),
        "slow.yaml",
    )
    .await
    .unwrap();
    wait_running(&c, "slow", 1).await;
    c.stop("slow", false).await.unwrap();
    // The agent is in the task's 3 s kill timeout when it is shut down.
    eventually("the stop to begin", D, || async {
        let a = only_alloc(&c, "slow").await;
        if a.desired == corral_types::DesiredStatus::Stop {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    w.cluster.take_agent("node-0").unwrap().shutdown().await;
    eprintln!("agent shut down in {} ms", t.elapsed().as_millis());
    let left = w.node.leftovers().await;
    assert!(left.is_empty(), "left by the stop: {left:?}");
    w.finish(&[]).await;
}
