//! Backends that record what reached them, a router on an ephemeral port,
//! catalogs, and clients (hyper's, and raw bytes over a TcpStream).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corral_router::{Balance, CatalogSender, Limits, Metrics, Router, RouterConfig};
use corral_types::catalog::{Endpoint, EndpointStatus, RouteRule, ServiceCatalog, ServiceEntry};
use corral_types::spec::ServiceKind;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A generous deadline for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP backend on 127.0.0.1. Paths: `/slow` answers after 5 s,
/// `/hold` signals `arrived` and answers after 300 ms, `/stream` sends a
/// first chunk and the second once `release` is notified, `/ws` upgrades
/// (`Upgrade: echo`) and echoes bytes; anything else answers
/// `<name> <uri> <body>`.
#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub arrived: Arc<Notify>,
    pub release: Arc<Notify>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let b = Backend {
            name: name.to_string(),
            addr: listener.local_addr().expect("addr"),
            seen: Arc::default(),
            arrived: Arc::default(),
            release: Arc::default(),
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        b
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
    ) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
        let uri = req.uri().to_string();
        let ws = req.uri().path() == "/ws";
        let on_upgrade = ws.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let body = if ws {
            Bytes::new()
        } else {
            body.collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default()
        };
        self.seen.lock().expect("lock").push(Seen {
            method: parts.method.to_string(),
            uri: uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let full = |s: String| Full::new(Bytes::from(s)).map_err(|e| match e {}).boxed();
        match parts.uri.path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Response::new(full("slow".into()))
            }
            "/hold" => {
                self.arrived.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::new(full("held".into()))
            }
            "/stream" => {
                let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
                let release = self.release.clone();
                tokio::spawn(async move {
                    let _ = tx.send_data(Bytes::from_static(b"first;")).await;
                    release.notified().await;
                    let _ = tx.send_data(Bytes::from_static(b"second")).await;
                });
                Response::new(body.boxed())
            }
            "/ws" => {
                if let Some(up) = on_upgrade {
                    tokio::spawn(async move {
                        let Ok(up) = up.await else { return };
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 1024];
                        loop {
                            match io.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if io.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
                let mut r = Response::new(full(String::new()));
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                r.headers_mut()
                    .insert("connection", "upgrade".parse().expect("hv"));
                r.headers_mut()
                    .insert("upgrade", "echo".parse().expect("hv"));
                r
            }
            _ => Response::new(full(format!(
                "{} {} {}",
                self.name,
                uri,
                String::from_utf8_lossy(&body)
            ))),
        }
    }
}

/// A port nothing listens on (bound, then closed).
pub async fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

pub fn endpoint(addr: SocketAddr, healthy: bool) -> Endpoint {
    Endpoint {
        alloc_id: format!("alloc-{}", addr.port()),
        alloc_name: format!("job.group[{}]", addr.port()),
        node_id: "node-1".into(),
        node_name: "node1".into(),
        address: addr.ip().to_string(),
        port: addr.port(),
        healthy,
        status: if healthy {
            EndpointStatus::Passing
        } else {
            EndpointStatus::Failing
        },
        reason: if healthy {
            String::new()
        } else {
            "check failing".into()
        },
    }
}

/// An HTTP service; routes as `(host, path_prefix, strip_prefix)`.
pub fn http_service(
    name: &str,
    routes: &[(Option<&str>, &str, bool)],
    endpoints: Vec<Endpoint>,
) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        job: name.into(),
        group: name.into(),
        kind: ServiceKind::Http,
        auto_host: Some(format!("{name}.localhost")),
        routes: routes
            .iter()
            .map(|(h, p, s)| RouteRule {
                host: h.map(str::to_string),
                path_prefix: p.to_string(),
                strip_prefix: *s,
            })
            .collect(),
        tcp_port: None,
        shutdown_delay_ms: 0,
        endpoints,
    }
}

/// A service reached on `<name>.localhost` at every path, as the server
/// lists a service with no route of its own.
pub fn web(name: &str, backends: &[&Backend]) -> ServiceEntry {
    let host = format!("{name}.localhost");
    http_service(
        name,
        &[(Some(host.as_str()), "/", false)],
        backends.iter().map(|b| endpoint(b.addr, true)).collect(),
    )
}

pub struct TestRouter {
    pub router: Option<Router>,
    pub addr: SocketAddr,
    pub catalogs: CatalogSender,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    index: u64,
}

impl TestRouter {
    pub async fn start(services: Vec<ServiceEntry>) -> TestRouter {
        TestRouter::with(services, Balance::P2c, Limits::default()).await
    }

    pub async fn with(services: Vec<ServiceEntry>, balance: Balance, limits: Limits) -> TestRouter {
        let mut config = RouterConfig::new("127.0.0.1:0".parse().expect("addr"));
        config.balance = balance;
        config.limits = limits;
        // As `corral router` serves: on worker threads of their own.
        config.workers = 2;
        let (tx, rx) = corral_router::catalog_channel();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let router = Router::start(config, rx, metrics.clone(), shutdown.clone())
            .await
            .expect("router starts");
        let mut r = TestRouter {
            addr: router.http_addr(),
            router: Some(router),
            catalogs: tx,
            shutdown,
            metrics,
            index: 0,
        };
        r.publish(services).await;
        r
    }

    /// Sends a new catalog and waits until the router routes with it.
    pub async fn publish(&mut self, services: Vec<ServiceEntry>) {
        self.index += 1;
        let index = self.index;
        self.catalogs
            .send_replace(Some(Arc::new(ServiceCatalog { index, services })));
        let line = format!("corral_router_catalog_index {index}\n");
        eventually("the router loads the catalog", || {
            self.metrics.encode().contains(&line)
        })
        .await;
    }

    /// One metric's value (0 when absent), matched by its line's start.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a client got.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(
    c: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    router: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{router}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, c.request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(router: SocketAddr, host: &str, path: &str) -> Got {
    request(&client(), router, "GET", host, path, &[], "").await
}

/// Writes raw bytes and reads everything until the router closes the
/// connection (or PATIENCE runs out).
pub async fn raw(router: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(router).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
