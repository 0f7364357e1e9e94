//! The server's own measurements and its Prometheus endpoint.
//!
//! Two kinds of metrics: those the server counts as things happen (the
//! latency [`Histogram`]s, counters of evaluations, placements and API
//! requests, all in [`Metrics`]), and those derived from state at scrape
//! time (node capacity, allocated and used resources, volumes, blocked
//! evaluations, deployments by status), computed by the collector in
//! [`collect`] from a store snapshot, the broker and [`crate::usage`].
//! The names are listed in docs/METRICS.md.
//!
//! The histograms stay lock-free log-linear ones rather than
//! prometheus-client's: the benchmark reads p50/p99 from them at ~13%
//! precision, which a classic Prometheus bucket layout cannot give, and an
//! observation is two relaxed atomic adds (no lock on the scheduler's hot
//! path). They implement prometheus-client's `EncodeMetric`, with bounds
//! on exact internal bucket edges.

mod collect;
mod histogram;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use collect::{CONTENT_TYPE, encode};
pub use histogram::Histogram;

/// How an evaluation ended, for `corral_scheduler_evaluations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalOutcome {
    /// Every placement it needed was committed.
    Complete,
    /// Some placements found no room: blocked until capacity changes.
    Blocked,
    /// The state kept moving under it: a fresh evaluation took over.
    Retried,
    /// An error (the store, shutdown) ended it.
    Failed,
}

impl EvalOutcome {
    pub const ALL: [EvalOutcome; 4] = [
        EvalOutcome::Complete,
        EvalOutcome::Blocked,
        EvalOutcome::Retried,
        EvalOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvalOutcome::Complete => "complete",
            EvalOutcome::Blocked => "blocked",
            EvalOutcome::Retried => "retried",
            EvalOutcome::Failed => "failed",
        }
    }
}

/// Labels of the API latency histogram: the matched route template (never
/// the raw path, so ids do not explode the series) and the method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Labels of the API request counter: route, method and status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCodeLabels {
    pub method: String,
    pub route: String,
    pub code: String,
}

/// Another part of the process that exposes metrics on the server's
/// `/metrics` (the agent in `corral dev`): returns its text exposition.
pub type Source = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

#[derive(Default)]
pub struct Metrics {
    /// From an evaluation entering the broker to its plan committed
    /// (queueing included): how long a placement takes.
    pub eval_latency: Histogram,
    /// From a worker taking an evaluation to its plan committed.
    pub eval_processing: Histogram,
    /// One plan's re-check and commit in the applier.
    pub plan_apply: Histogram,
    pub evals_processed: AtomicU64,
    pub placements: AtomicU64,
    pub plans_refused: AtomicU64,
    evals: [AtomicU64; EvalOutcome::ALL.len()],
    /// Time to the response's head, by route (a streamed body, such as
    /// `logs -f`, is not waited for).
    pub api_latency: Family<RouteLabels, Histogram>,
    pub api_requests: Family<RouteCodeLabels, Counter>,
    sources: RwLock<Vec<Source>>,
}

impl Metrics {
    pub fn eval_done(&self, outcome: EvalOutcome) {
        self.evals[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn evals_by_outcome(&self, outcome: EvalOutcome) -> u64 {
        self.evals[outcome as usize].load(Ordering::Relaxed)
    }

    pub fn api_request(&self, method: &str, route: &str, code: u16, took: Duration) {
        self.api_latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(took);
        self.api_requests
            .get_or_create(&RouteCodeLabels {
                method: method.to_string(),
                route: route.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Serve the metrics `source` returns (Prometheus text) on this
    /// server's `/metrics` as well, after the server's own.
    pub fn add_source<F, Fut>(&self, source: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let source: Source = Arc::new(move || Box::pin(source()));
        if let Ok(mut s) = self.sources.write() {
            s.push(source);
        }
    }

    pub(crate) fn sources(&self) -> Vec<Source> {
        self.sources.read().map(|s| s.clone()).unwrap_or_default()
    }
}
