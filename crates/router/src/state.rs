//! What every connection of one router shares, and the step that turns
//! each new catalog into the routing table (swapped in whole, so a request
//! sees one catalog or the next, never a mix).

use std::sync::Arc;

use arc_swap::ArcSwap;
use corral_types::catalog::ServiceCatalog;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::RequestBody;
use crate::config::RouterConfig;
use crate::headers::RequestIds;
use crate::health::Clock;
use crate::metrics::{Metrics, RouteMetrics};
use crate::table::{Endpoints, Table};
use crate::tcp::TcpRoutes;

/// How long an unused pooled connection to an endpoint is kept.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The pooled upstream client; each serving thread has its own, so a
/// request and its upstream connection stay on one thread.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

pub fn upstream_client(config: &RouterConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.limits.connect));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(http)
}

pub struct Shared {
    pub table: ArcSwap<Table>,
    /// The client of connections served on the router's own runtime.
    pub client: UpstreamClient,
    pub config: RouterConfig,
    pub metrics: Arc<Metrics>,
    pub ids: RequestIds,
    pub clock: Clock,
    /// Upgraded (WebSocket) tunnels, waited for at shutdown.
    pub tunnels: TaskTracker,
    /// Cancelled at the drain deadline: what is still open is closed.
    pub force: CancellationToken,
    /// Requests that matched no route.
    pub unrouted: RouteMetrics,
}

impl Shared {
    pub fn new(config: RouterConfig, metrics: Arc<Metrics>) -> Self {
        let client = upstream_client(&config);
        Shared {
            table: ArcSwap::from_pointee(Table::default()),
            client,
            unrouted: metrics.route("", ""),
            config,
            metrics,
            ids: RequestIds::new(),
            clock: Clock::new(),
            tunnels: TaskTracker::new(),
            force: CancellationToken::new(),
        }
    }
}

/// Builds a table from each catalog `catalogs` receives, swaps it in and
/// opens or closes TCP listeners to match, until `shutdown`.
pub async fn apply(
    shared: Arc<Shared>,
    mut catalogs: watch::Receiver<Option<Arc<ServiceCatalog>>>,
    mut tcp: TcpRoutes,
    shutdown: CancellationToken,
) {
    let mut endpoints = Endpoints::new();
    loop {
        let catalog = catalogs.borrow_and_update().clone();
        if let Some(c) = catalog {
            let table = Arc::new(Table::build(&c, &mut endpoints, &shared.metrics));
            shared.table.store(table.clone());
            shared
                .metrics
                .catalog_index
                .set(i64::try_from(c.index).unwrap_or(i64::MAX));
            shared.metrics.catalog_updates.inc();
            tracing::debug!(
                index = c.index,
                services = c.services.len(),
                "routing table updated"
            );
            tcp.sync(&table).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = catalogs.changed() => if r.is_err() {
                // The follower is gone: keep routing with the last table.
                shutdown.cancelled().await;
                break;
            }
        }
    }
    tcp.close();
}
