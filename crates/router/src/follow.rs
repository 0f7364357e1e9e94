//! Following the server's service catalog with blocking queries, as agents
//! follow their allocations: each answer that changed goes into a watch
//! channel, from which `state::apply` builds the routing table. A blocking
//! query returns as soon as the catalog changes, so a health change
//! reaches routing in the time of one round trip. Errors are retried with
//! a backoff of 200 ms doubling to 5 s; routing goes on with the last
//! catalog meanwhile.

use std::sync::Arc;
use std::time::Duration;

use corral_client::Client;
use corral_types::catalog::ServiceCatalog;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long one blocking query waits for a change.
pub const WAIT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until `shutdown`.
pub async fn follow(
    client: Client,
    catalogs: watch::Sender<Option<Arc<ServiceCatalog>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut index = None;
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let query = index.map(|i| (i, WAIT));
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = client.services(query) => a,
        };
        match answer {
            Ok(catalog) => {
                if failing {
                    tracing::info!(server = %client.addr(), "service catalog reachable again");
                    failing = false;
                }
                backoff = BACKOFF_MIN;
                index = Some(catalog.index);
                catalogs.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&catalog) {
                        return false;
                    }
                    *cur = Some(Arc::new(catalog));
                    true
                });
            }
            Err(e) => {
                metrics.catalog_errors.inc();
                if !failing {
                    tracing::warn!(error = %e, "cannot read the service catalog; routing with the last one, retrying");
                    failing = true;
                }
                // A server that restarted may be behind our index: start
                // again from its current catalog.
                index = None;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
