//! Services end to end (issue 15): a real server and container agents
//! (in-process, each on a private containerd), busybox images pushed to a
//! local registry, and the real `corral router` process in front.
//!
//! 1. Routing: host and path rules with and without prefix stripping, the
//!    automatic host name, load spread over 3 replicas, a replica whose
//!    check fails leaves the routing, an upgrade (WebSocket) echo, a TCP
//!    route, and the 404/503/504/431/400 answers.
//! 2. Zero downtime: a request loop through the router loses nothing while
//!    a 3-replica service rolls to a new version and while its node
//!    drains (requests take 3s, `shutdown_delay` is 5s); the same rollout
//!    with `shutdown_delay: 0s` loses requests
//!    (the test can fail).
//!
//! Needs root, containerd, runc, the CNI plugins, busybox-static,
//! docker-registry and skopeo; skipped with a message when missing, a
//! failure with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

#[path = "common/web.rs"]
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral_agent::containerd::registry::register_insecure_registry;
use corral_client::Client;
use corral_testkit::containers::REQUIRE_ENV;
use corral_testkit::containers::{ContainerNode, LocalRegistry, can_run, free_port};
use corral_testkit::jobs::{stop_and_wait, wait_running};
use corral_testkit::{TestCluster, eventually};
use corral_types::catalog::ServiceEntry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use web::{get, raw, silent_image, tcp_echo_image, upgrade_echo_image, web_image, web_image_slow};

const D: Duration = Duration::from_secs(120);

/// The server, `nodes` container agents, the registry with the images,
/// and a `corral router` process.
struct World {
    nodes: Vec<ContainerNode>,
    cluster: TestCluster,
    registry: LocalRegistry,
    router: Router,
}

struct Router {
    child: tokio::process::Child,
    http: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Router {
    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl World {
    /// `router_args`: extra flags of `corral router`.
    async fn start(test: &str, nodes: usize, router_args: &[&str]) -> Option<World> {
        for bin in ["/usr/bin/docker-registry", "/usr/bin/skopeo"] {
            if !Path::new(bin).exists() {
                if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                    panic!("{bin} is missing");
                }
                eprintln!("SKIPPED: {bin} is missing");
                return None;
            }
        }
        if !can_run(test) {
            return None;
        }
        let mut containerds = Vec::new();
        for _ in 0..nodes {
            containerds.push(ContainerNode::start(test).await);
        }
        let registry = LocalRegistry::start(containerds[0].dir.path()).await;
        for n in &containerds {
            register_insecure_registry(&n.containerd.paths().certs_dir, &registry.host_port())
                .unwrap();
        }
        let mut cluster = TestCluster::start().await;
        for (i, n) in containerds.iter().enumerate() {
            let socket = n.socket().to_path_buf();
            // Every agent runs on this host: their host ports must differ.
            let base = 31_000 + 1_000 * i as u16;
            cluster
                .add_agent_with(&format!("node-{i}"), move |c| {
                    c.drivers = vec!["exec".into(), "container".into()];
                    c.cri_socket = socket;
                    c.port_range = (base, base + 999);
                })
                .await;
        }
        let router = start_router(&cluster.url(), containerds[0].dir.path(), router_args).await;
        Some(World {
            nodes: containerds,
            cluster,
            registry,
            router,
        })
    }

    fn client(&self) -> &Client {
        &self.cluster.client
    }

    /// Builds `spec` and pushes it to the registry; returns its reference.
    async fn push(&self, spec: &corral_agent::image::ImageSpec) -> String {
        let archive = self.nodes[0].build(spec);
        let name = spec.name.trim_start_matches("corral.local/");
        self.registry.push(&archive, name).await
    }

    async fn finish(mut self, jobs: &[&str]) {
        for j in jobs {
            stop_and_wait(self.client(), j, D).await;
        }
        let _ = self.router.child.start_kill();
        let _ = self.router.child.wait().await;
        for n in &self.nodes {
            n.wait_clean(D).await;
        }
        self.cluster.shutdown().await;
        self.registry.stop().await;
        for n in self.nodes {
            n.finish().await;
        }
    }
}

/// The `corral` binary's standard output (it must succeed).
fn corral(addr: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", addr)
        .env_remove("CORRAL_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "corral {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn start_router(server: &str, dir: &Path, extra: &[&str]) -> Router {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = dir.join(format!("router-{}.log", http.port()));
    let out = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("router")
        .args(["--server", server])
        .args(["--http-addr", &http.to_string()])
        .args(["--metrics-addr", &metrics.to_string()])
        .args(extra)
        .env("CORRAL_LOG", "info")
        .env_remove("CORRAL_TOKEN")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the router listens", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(http)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    Router {
        child,
        http,
        metrics,
        log,
    }
}

/// Waits until service `name` has `n` healthy endpoints (and no other).
async fn wait_healthy(c: &Client, name: &str, n: usize) -> ServiceEntry {
    eventually(&format!("{n} healthy endpoints of {name}"), D, || async {
        let cat = c.service(name, None).await.map_err(|e| e.to_string())?;
        let s = cat.services.into_iter().next().ok_or("no service")?;
        if s.healthy().count() == n {
            Ok(s)
        } else {
            Err(format!("{:?}", s.endpoints))
        }
    })
    .await
}

/// Asks through the router until `host``path` answers `status` (the
/// router follows the catalog: it may take a moment).
async fn until_status(router: SocketAddr, host: &str, path: &str, status: u16) -> String {
    eventually(
        &format!("{host}{path} answers {status} through the router"),
        Duration::from_secs(30),
        || async {
            let a = get(router, host, path).await?;
            if a.status == status {
                Ok(a.body)
            } else {
                Err(format!("{} {}", a.status, a.body))
            }
        },
    )
    .await
}

/// `extra_service`: lines added to each of the three services (a stopped
/// allocation waits the longest `shutdown_delay` of its services).
fn web_job(image: &str, count: u32, extra_service: &str) -> String {
    format!(
        "name: shop
groups:
  - name: web
    count: {count}
    update: {{max_parallel: 1, min_healthy_time: 1s}}
    services:
      - name: web
        port: http
        check: {{type: http, path: /healthz, interval: 500ms, timeout: 400ms}}
{extra_service}
      - name: api
        port: http
        check: {{type: http, path: /healthz, interval: 500ms, timeout: 400ms}}
        route: {{hosts: [shop.example.com], paths: [/api], strip_prefix: true}}
{extra_service}
      - name: raw
        port: http
        route: {{hosts: [raw.example.com], paths: [/api]}}
{extra_service}
    tasks:
      - name: httpd
        image: {image}
        ports: {{http: 8080}}
        kill_timeout: 1s
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_routes_real_containers_by_host_and_path() {
    let Some(w) = World::start("router-routing", 1, &["--upstream-timeout", "3s"]).await else {
        return;
    };
    let c = w.client().clone();
    let r = w.router.http;
    let web = w.push(&web_image(1)).await;
    let echo = w.push(&upgrade_echo_image()).await;
    let tcp = w.push(&tcp_echo_image()).await;
    let silent = w.push(&silent_image()).await;

    c.submit(&web_job(&web, 3, ""), "shop.yaml").await.unwrap();
    wait_running(&c, "shop", 3, D).await;
    let svc = wait_healthy(&c, "web", 3).await;
    assert_eq!(svc.auto_host.as_deref(), Some("web.localhost"));

    // What users read: every endpoint with its health and node.
    let status = corral(&w.cluster.url(), &["service", "status", "web"]);
    for e in &svc.endpoints {
        assert!(
            status.contains(&format!("{}:{}", e.address, e.port)) && status.contains(&e.alloc_name),
            "{status}"
        );
    }
    assert_eq!(status.matches("passing").count(), 3, "{status}");
    let ls = corral(&w.cluster.url(), &["service", "ls"]);
    assert!(ls.contains("web.localhost/") && ls.contains("3/3"), "{ls}");
    assert!(ls.contains("shop.example.com/api (strip)"), "{ls}");
    let json: serde_json::Value =
        serde_json::from_str(&corral(&w.cluster.url(), &["service", "ls", "--json"])).unwrap();
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(3),
        "web, api and raw: {json}"
    );

    // The automatic host name, spread over the 3 replicas.
    until_status(r, "web.localhost", "/", 200).await;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..90 {
        let a = get(r, "web.localhost", "/").await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        *seen.entry(a.body.trim().to_owned()).or_default() += 1;
    }
    eprintln!("spread over the replicas: {seen:?}");
    assert_eq!(seen.len(), 3, "every replica gets requests: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 10),
        "each gets a share: {seen:?}"
    );
    assert!(seen.keys().all(|k| k.ends_with(" v1")), "{seen:?}");

    // Host and path, with and without stripping; the port in Host is
    // ignored; X-Forwarded-* reach the task (busybox httpd shows none,
    // the router's own tests check them).
    let a = get(r, "shop.example.com", "/api/users").await.unwrap();
    assert_eq!(
        (a.status, a.body.split(' ').next()),
        (200, Some("users")),
        "{a:?}"
    );
    let a = get(r, &format!("shop.example.com:{}", r.port()), "/api/users")
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let a = get(r, "raw.example.com", "/api/users").await.unwrap();
    assert_eq!(
        (a.status, a.body.split(' ').next()),
        (200, Some("api-users")),
        "{a:?}"
    );
    // Outside the route's prefixes: no route for that host and path.
    let a = get(r, "shop.example.com", "/apix").await.unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    let a = get(r, "nobody.example.com", "/").await.unwrap();
    assert_eq!(a.status, 404, "{a:?}");

    // A replica whose check fails gets no traffic (its endpoint leaves
    // the catalog, the router follows).
    let victim = &svc.endpoints[0];
    let direct: SocketAddr = format!("{}:{}", victim.address, victim.port)
        .parse()
        .unwrap();
    let sick = get(direct, "x", "/cgi-bin/sicken").await.unwrap();
    assert_eq!(sick.status, 200, "{sick:?}");
    let sickened = Instant::now();
    let victim_name = victim.alloc_name.clone();
    eventually(
        "the sick replica gets no traffic",
        Duration::from_secs(30),
        || {
            let name = victim_name.clone();
            async move {
                for _ in 0..15 {
                    let a = get(r, "web.localhost", "/").await?;
                    if a.body.starts_with(&name) {
                        return Err(format!("{name} still answers"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!(
        "a failing check took {} ms to leave the routing (check interval 500 ms)",
        sickened.elapsed().as_millis()
    );
    for _ in 0..30 {
        let a = get(r, "web.localhost", "/").await.unwrap();
        assert_eq!(a.status, 200);
        assert!(!a.body.starts_with(&victim_name), "{a:?}");
    }

    // No healthy endpoint: 503.
    c.submit(
        &format!(
            "name: down
groups:
  - name: down
    service: {{name: down, port: http, check: {{type: http, path: /nope, interval: 500ms, timeout: 400ms}}}}
    tasks: [{{name: httpd, image: {web}, ports: {{http: 8080}}}}]
"
        ),
        "down.yaml",
    )
    .await
    .unwrap();
    wait_running(&c, "down", 1, D).await;
    let body = until_status(r, "down.localhost", "/", 503).await;
    eprintln!("503: {body}");

    // An upstream that accepts and never answers: 504 after the router's
    // upstream timeout.
    c.submit(
        &format!(
            "name: silent
groups:
  - name: silent
    service: {{name: silent, port: http}}
    tasks: [{{name: nc, image: {silent}, ports: {{http: 8080}}}}]
"
        ),
        "silent.yaml",
    )
    .await
    .unwrap();
    wait_healthy(&c, "silent", 1).await;
    let body = until_status(r, "silent.localhost", "/", 504).await;
    eprintln!("504: {body}");

    // An upgrade (WebSocket handshake) and the bytes after it, both ways.
    c.submit(
        &format!(
            "name: ws
groups:
  - name: ws
    service: {{name: ws, port: ws}}
    tasks: [{{name: echo, image: {echo}, ports: {{ws: 9000}}}}]
"
        ),
        "ws.yaml",
    )
    .await
    .unwrap();
    wait_healthy(&c, "ws", 1).await;
    eventually(
        "an upgrade echo through the router",
        Duration::from_secs(30),
        || async { upgrade_echo(r).await },
    )
    .await;

    // A TCP route on a router port of its own.
    let tcp_port = free_port();
    c.submit(
        &format!(
            "name: tcp
groups:
  - name: tcp
    service: {{name: echo, type: tcp, port: echo, route: {{port: {tcp_port}}}}}
    tasks: [{{name: echo, image: {tcp}, ports: {{echo: 7000}}}}]
"
        ),
        "tcp.yaml",
    )
    .await
    .unwrap();
    wait_healthy(&c, "echo", 1).await;
    eventually(
        "a TCP echo through the router",
        Duration::from_secs(30),
        || async { tcp_echo(SocketAddr::from(([127, 0, 0, 1], tcp_port))).await },
    )
    .await;

    // Bad requests are answered by the router, not forwarded.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let a = raw(r, huge.as_bytes(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(a.status, 431, "{a:?}");
    for (what, req) in [
        (
            "Content-Length and Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Length",
            "POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
        ),
        (
            "obsolete line folding",
            "GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
        ),
        ("a request line that is not HTTP", "HELLO\r\n\r\n"),
    ] {
        let a = raw(r, req.as_bytes(), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{what}: {a:?}");
    }

    // The router's metrics counted what it served, by service.
    let m = get(w.router.metrics, "x", "/metrics").await.unwrap();
    assert_eq!(m.status, 200);
    assert!(m.body.contains("service=\"web\""), "{}", m.body);
    eprintln!("router log tail:\n{}", w.router.log_tail());

    w.finish(&["shop", "down", "silent", "ws", "tcp"]).await;
}

async fn upgrade_echo(router: SocketAddr) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(router)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .map_err(|_| "no 101 in 5s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&head)));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(head);
    }
    for msg in ["hello\n", "world\n"] {
        s.write_all(msg.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .map_err(|_| "no echo in 5s".to_string())?
            .map_err(|e| e.to_string())?;
        if buf != msg.as_bytes() {
            return Err(format!("echo {:?}", String::from_utf8_lossy(&buf)));
        }
    }
    Ok(())
}

async fn tcp_echo(addr: SocketAddr) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .map_err(|_| "no echo in 5s".to_string())?
        .map_err(|e| e.to_string())?;
    if &buf == b"ping\n" {
        Ok(())
    } else {
        Err(format!("{:?}", String::from_utf8_lossy(&buf)))
    }
}

/// `clients` loops of slow requests through the router until stopped;
/// counts answers and failures (anything but a 200, or no answer).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(router: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, failures) =
                    (stop.clone(), ok.clone(), failed.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match get(router, "web.localhost", "/cgi-bin/slow").await {
                            Ok(a) if a.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                failures.lock().unwrap().push(format!("{other:?}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            tasks,
        }
    }

    /// Stops the loops; returns (answered, failed, the failures).
    async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            f,
        )
    }
}

/// Waits until every allocation of `shop` runs `version` and 3 endpoints
/// of `web` are healthy.
async fn wait_rolled(c: &Client, version: u64) {
    eventually(&format!("shop rolled to version {version}"), D, || async {
        let j = c.job("shop", None).await.map_err(|e| e.to_string())?;
        let live: Vec<_> = j
            .allocations
            .iter()
            .filter(|a| !a.status.is_terminal())
            .collect();
        let cat = c.service("web", None).await.map_err(|e| e.to_string())?;
        let healthy = cat.services[0].healthy().count();
        if j.version == version
            && live.len() == 3
            && live.iter().all(|a| a.job_version == version)
            && healthy == 3
        {
            Ok(())
        } else {
            Err(format!(
                "version {} healthy {healthy} live {:?}",
                j.version,
                live.iter()
                    .map(|a| (&a.name, a.job_version, a.status))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_and_drains_lose_no_request_through_the_router() {
    let Some(w) = World::start("router-zero-downtime", 2, &[]).await else {
        return;
    };
    let c = w.client().clone();
    let r = w.router.http;
    let images = [
        w.push(&web_image(1)).await,
        w.push(&web_image(2)).await,
        // v3 is the one stopped at once under load: its requests take
        // 10s, longer than any lag between the router and the agent
        // seeing the stop, so requests in flight are surely cut.
        w.push(&web_image_slow(3, 10)).await,
    ];
    let job = |v: usize, delay: &str| {
        web_job(
            &images[v - 1],
            3,
            &format!("        shutdown_delay: {delay}"),
        )
    };
    c.submit(&job(1, "5s"), "shop.yaml").await.unwrap();
    wait_rolled(&c, 1).await;
    until_status(r, "web.localhost", "/", 200).await;

    // A rolling update under load.
    let load = Load::start(r, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.submit(&job(2, "5s"), "shop.yaml").await.unwrap();
    wait_rolled(&c, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failed, failures) = load.stop().await;
    eprintln!("rollout to v2: {ok} answered, {failed} failed");
    assert_eq!(failed, 0, "requests lost during the rollout: {failures:?}");
    assert!(ok > 10, "the loop ran: {ok}");
    let a = get(r, "web.localhost", "/").await.unwrap();
    assert!(a.body.trim().ends_with(" v2"), "{a:?}");

    // A drain of the node with the most replicas, under load.
    let j = c.job("shop", None).await.unwrap();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for a in j.allocations.iter().filter(|a| !a.status.is_terminal()) {
        *per_node.entry(a.node_id.clone()).or_default() += 1;
    }
    let (busy, _) = per_node.iter().max_by_key(|(_, n)| **n).unwrap();
    let load = Load::start(r, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.drain(busy, true, Some("10m")).await.unwrap();
    eventually("the drained node runs nothing of shop", D, || async {
        let j = c.job("shop", None).await.map_err(|e| e.to_string())?;
        let left = j
            .allocations
            .iter()
            .filter(|a| &a.node_id == busy && !a.status.is_terminal())
            .count();
        let healthy = c
            .service("web", None)
            .await
            .map_err(|e| e.to_string())?
            .services[0]
            .healthy()
            .count();
        if left == 0 && healthy == 3 {
            Ok(())
        } else {
            Err(format!("{left} left on the node, {healthy} healthy"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failed, failures) = load.stop().await;
    eprintln!("drain: {ok} answered, {failed} failed");
    assert_eq!(failed, 0, "requests lost during the drain: {failures:?}");
    assert!(ok > 10, "the loop ran: {ok}");
    c.drain(busy, false, None).await.unwrap();

    // The same rollout with no delay between leaving the catalog and the
    // stop signal (a stopped allocation keeps the delay of its own
    // version: v3 runs with 0s, then v4 replaces it): requests in flight
    // on a stopped replica are cut.
    c.submit(&job(3, "0s"), "shop.yaml").await.unwrap();
    wait_rolled(&c, 3).await;
    let load = Load::start(r, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.submit(&job(1, "0s"), "shop.yaml").await.unwrap();
    wait_rolled(&c, 4).await;
    let (ok, failed, failures) = load.stop().await;
    eprintln!(
        "rollout to v4 with shutdown_delay 0s: {ok} answered, {failed} failed: {:?}",
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        failed > 0,
        "without shutdown_delay some requests in flight must be cut (this shows the test can fail)"
    );

    w.finish(&["shop"]).await;
}
