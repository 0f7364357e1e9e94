//! Following the service catalog with blocking queries, as agents follow
//! their allocations: each answer becomes a new table, swapped in whole.
//! On errors the last table keeps being served and the query is retried
//! with a growing delay.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use corral_types::Index;
use corral_types::catalog::ServiceCatalog;
use tokio_util::sync::CancellationToken;

use super::table::Table;

/// Where the catalog comes from: the server (`corral_client::Client`), or
/// a fixed one in tests.
#[async_trait::async_trait]
pub trait CatalogSource: Send + Sync + 'static {
    /// The catalog; with `after`, once it changed past that index (or the
    /// wait ran out).
    async fn catalog(&self, after: Option<(Index, Duration)>) -> Result<ServiceCatalog, String>;
}

#[async_trait::async_trait]
impl CatalogSource for corral_client::Client {
    async fn catalog(&self, after: Option<(Index, Duration)>) -> Result<ServiceCatalog, String> {
        self.services(after).await.map_err(|e| e.to_string())
    }
}

/// A catalog that never changes (tests, and nodes without a server).
pub struct FixedCatalog(pub ServiceCatalog);

#[async_trait::async_trait]
impl CatalogSource for FixedCatalog {
    async fn catalog(&self, after: Option<(Index, Duration)>) -> Result<ServiceCatalog, String> {
        if let Some((_, wait)) = after {
            tokio::time::sleep(wait).await;
        }
        Ok(self.0.clone())
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Keeps `table` up to date with `source` until `shutdown`. `own`: the
/// address the node DNS listens on, given for loopback endpoints.
pub async fn follow(
    source: Arc<dyn CatalogSource>,
    table: Arc<ArcSwap<Table>>,
    own: std::net::IpAddr,
    wait: Duration,
    shutdown: CancellationToken,
) {
    let mut index: Option<Index> = None;
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let asked = source.catalog(index.map(|i| (i, wait)));
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = asked => r,
        };
        match got {
            Ok(catalog) => {
                if failing {
                    tracing::info!(
                        index = catalog.index,
                        "node DNS follows the service catalog again"
                    );
                    failing = false;
                }
                backoff = BACKOFF_MIN;
                let next = Table::from_catalog(&catalog).loopback_as(own);
                if **table.load() != next {
                    tracing::debug!(
                        index = catalog.index,
                        services = next.services.len(),
                        "node DNS table updated"
                    );
                    table.store(Arc::new(next));
                }
                // An index that went back (a new server store) starts over
                // from there instead of waiting for it to catch up.
                index = Some(catalog.index);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "node DNS cannot read the service catalog; answering from the last one read, retrying");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, retry_in = ?backoff, "service catalog still unreadable");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
