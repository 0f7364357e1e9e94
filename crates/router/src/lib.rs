//! corral's edge router: routes HTTP by host and path, and TCP by port, to
//! the healthy endpoints of the server's service catalog (docs/ROUTER.md).
//!
//! [`Router::start`] serves one catalog channel: [`follow`] fills it from a
//! server (`corral router`, `corral dev`), tests fill it by hand; either
//! way each catalog becomes a routing table swapped in whole.
//!
//! - `table`: catalog → routing table (host, longest path prefix).
//! - `balance`, `health`: picking an endpoint; passive ejection.
//! - `listen`, `guard`: client connections, timeouts, framing guard.
//! - `proxy`, `headers`, `body`: one request, forwarded and streamed.
//! - `tcp`: TCP routes. `follow`: the catalog. `metrics`: Prometheus.

mod balance;
mod body;
pub mod config;
pub mod error;
pub mod follow;
mod guard;
mod headers;
mod health;
mod listen;
pub mod metrics;
mod proxy;
mod state;
mod table;
mod tcp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use corral_types::catalog::ServiceCatalog;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Balance, Limits, RouterConfig};
pub use error::{ProxyError, RouterError};
pub use follow::follow;
pub use metrics::Metrics;

/// The channel a router reads catalogs from (`None` until the first).
pub type CatalogSender = watch::Sender<Option<Arc<ServiceCatalog>>>;
pub type CatalogReceiver = watch::Receiver<Option<Arc<ServiceCatalog>>>;

pub fn catalog_channel() -> (CatalogSender, CatalogReceiver) {
    watch::channel(None)
}

/// A running router.
pub struct Router {
    http_addr: SocketAddr,
    metrics: Arc<Metrics>,
    done: JoinHandle<()>,
}

impl Router {
    /// Binds `config.http_addr` and serves until `shutdown`, routing with
    /// each catalog `catalogs` receives.
    pub async fn start(
        config: RouterConfig,
        catalogs: CatalogReceiver,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Router, RouterError> {
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| RouterError::Bind {
                addr: config.http_addr,
                what: "router HTTP",
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| RouterError::Bind {
            addr: config.http_addr,
            what: "router HTTP",
            source,
        })?;
        let shared = Arc::new(state::Shared::new(config, metrics.clone()));
        let conns = TaskTracker::new();
        let tcp = tcp::TcpRoutes::new(http_addr.ip(), shared.clone(), conns.clone());
        let applier = tokio::spawn(state::apply(
            shared.clone(),
            catalogs,
            tcp,
            shutdown.clone(),
        ));
        let workers = listen::Worker::start(shared.config.workers, &shared, &conns, &shutdown)
            .map_err(RouterError::Workers)?;
        let accept = tokio::spawn(listen::serve(
            listener,
            shared.clone(),
            conns.clone(),
            shutdown.clone(),
            workers,
        ));
        let done = tokio::spawn(async move {
            // The accept loop owns the workers' channels: they close here.
            let _ = accept.await;
            let _ = applier.await;
            drain(&shared, &conns).await;
        });
        Ok(Router {
            http_addr,
            metrics,
            done,
        })
    }

    /// Where HTTP is served (the bound port when the config said 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Returns once the router has shut down: listeners closed, in-flight
    /// requests finished or the drain deadline passed.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// After the listeners closed: waits for connections and tunnels, then
/// closes what is left at the deadline.
async fn drain(shared: &state::Shared, conns: &TaskTracker) {
    conns.close();
    shared.tunnels.close();
    let all = async {
        conns.wait().await;
        shared.tunnels.wait().await;
    };
    if tokio::time::timeout(shared.config.limits.drain, all)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            tunnels = shared.tunnels.len(),
            "drain deadline passed; closing what is left"
        );
        shared.force.cancel();
        conns.wait().await;
        shared.tunnels.wait().await;
    }
}

/// Serves `GET /metrics` (anything else: 404) on `listener` until
/// `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(metrics_response(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn metrics_response(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, ctype, body) = if req.uri().path() == "/metrics" {
        (200, metrics::CONTENT_TYPE, metrics.encode())
    } else {
        (
            404,
            "text/plain; charset=utf-8",
            "not found: the router serves /metrics here\n".to_string(),
        )
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
