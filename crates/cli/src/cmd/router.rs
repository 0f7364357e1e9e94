//! `corral router`: the edge role. Follows the server's service catalog
//! and routes to its healthy endpoints (crates/router, docs/ROUTER.md).

use std::sync::Arc;

use anyhow::{Context, Result};
use corral_client::{Client, normalize_addr};
use corral_router::{Metrics, Router, RouterConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::args::RouterArgs;

/// Loopback: the router faces clients, and its metrics name every
/// service; next to `corral dev`'s router port (7080).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:7081";

/// How a router's user points it at the server (named in its errors).
pub const SERVER_ADDR_SETTING: &str = "set --server or CORRAL_SERVER to the server's address";

pub async fn run(a: RouterArgs, shutdown: CancellationToken) -> Result<()> {
    anyhow::ensure!(
        a.http_addr != a.metrics_addr,
        "--http-addr and --metrics-addr are both {}: give them different ports",
        a.http_addr
    );
    raise_open_files_limit();
    let server = a.server.as_deref().unwrap_or(crate::conn::DEFAULT_API);
    let server = normalize_addr(server, SERVER_ADDR_SETTING)?;
    let client = Client::new(&server, a.token).with_addr_setting(SERVER_ADDR_SETTING);
    let metrics = Arc::new(Metrics::new());
    let metrics_listener = TcpListener::bind(a.metrics_addr).await.with_context(|| {
        format!(
            "cannot listen on {} for metrics: pick another --metrics-addr",
            a.metrics_addr
        )
    })?;
    let mut config = RouterConfig::new(a.http_addr);
    config.balance = a.balance;
    config.limits.drain = a.drain_timeout;
    config.limits.connect = a.connect_timeout;
    config.limits.upstream_response = a.upstream_timeout;
    config.workers = match a.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let (catalogs_tx, catalogs) = corral_router::catalog_channel();
    let router = Router::start(config, catalogs, metrics.clone(), shutdown.clone())
        .await
        .with_context(|| {
            if a.http_addr.port() < 1024 {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another --http-addr"
                    .to_string()
            } else {
                "pick another --http-addr".to_string()
            }
        })?;
    tokio::spawn(corral_router::follow(
        client,
        catalogs_tx,
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(corral_router::serve_metrics(
        metrics_listener,
        metrics,
        shutdown.clone(),
    ));
    tracing::info!(
        http = %router.http_addr(),
        metrics = %a.metrics_addr,
        server = %server,
        balance = a.balance.as_str(),
        "router running"
    );
    router.wait().await;
    Ok(())
}

/// Each client connection is a file descriptor: lift the soft limit to the
/// hard one (often 1024 → 524288), as nginx's worker_rlimit_nofile does.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.maximum.is_some() && l.current != l.maximum {
        let raised = Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open files limit");
        }
    }
}
