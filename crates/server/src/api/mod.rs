//! HTTP/JSON API v1. Handlers validate, then either read a snapshot or
//! commit through `Core::write`; nothing is stored when validation fails.

mod alerts;
mod allocs;
mod deployments;
mod evals;
mod events;
mod jobs;
mod metrics;
mod nodes;
mod services;
#[cfg(test)]
#[path = "services_tests.rs"]
mod services_tests;
mod stats;
#[cfg(test)]
mod tests;
mod volumes;

use crate::error::Resource;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use corral_types::Index;
use serde::Deserialize;

use crate::ServerError;
use crate::core::Core;

pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/v1/jobs/{name}", get(jobs::get).delete(jobs::stop))
        .route("/v1/jobs/{name}/versions", get(jobs::versions))
        .route("/v1/jobs/{name}/revert", post(deployments::revert))
        .route("/v1/jobs/{name}/scale", post(jobs::scale))
        .route("/v1/jobs/{name}/deployment", get(deployments::latest))
        .route("/v1/jobs/{name}/deployments", get(deployments::list))
        .route(
            "/v1/jobs/{name}/deployment/{action}",
            post(deployments::act),
        )
        .route("/v1/allocations", get(allocs::list))
        .route("/v1/allocations/{id}", get(allocs::get))
        .route("/v1/allocations/{id}/stop", post(allocs::stop))
        .route("/v1/allocations/{id}/restart", post(allocs::restart))
        .route("/v1/allocations/{id}/health", post(deployments::set_health))
        .route("/v1/allocations/{id}/logs", get(allocs::logs))
        .route("/v1/evaluations", get(evals::list))
        .route("/v1/evaluations/{id}", get(evals::get))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/register", post(nodes::register))
        .route("/v1/nodes/{id}", get(nodes::get))
        .route("/v1/nodes/{id}/heartbeat", post(nodes::heartbeat))
        .route("/v1/nodes/{id}/eligibility", post(nodes::eligibility))
        .route("/v1/nodes/{id}/drain", post(nodes::drain))
        .route(
            "/v1/nodes/{id}/allocations",
            get(nodes::allocations).post(nodes::update_allocations),
        )
        .route("/v1/nodes/{id}/stats", post(stats::push))
        .route("/v1/services", get(services::list))
        .route("/v1/services/{service}", get(services::get))
        .route("/v1/volumes", get(volumes::list))
        .route("/v1/volumes/quarantined", get(volumes::quarantined))
        .route(
            "/v1/volumes/{id}",
            get(volumes::get).delete(volumes::delete),
        )
        .route("/v1/volumes/{id}/snapshots", get(volumes::snapshots))
        .route("/v1/volumes/{id}/snapshot", post(volumes::snapshot))
        .route("/v1/volumes/{id}/restore", post(volumes::restore))
        .route("/v1/volumes/{id}/claim", post(volumes::claim))
        .route("/v1/volumes/{id}/backup", post(volumes::backup))
        .route("/v1/volumes/{id}/recover", post(volumes::recover))
        .route("/v1/volumes/{id}/report", post(volumes::report))
        .route("/v1/events", get(events::events))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/status", get(status))
        .route("/v1/system/gc", put(system_gc))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn(valid_path))
        .route_layer(middleware::from_fn_with_state(core.clone(), metrics::track))
        .layer(middleware::from_fn_with_state(core.clone(), auth))
        .with_state(core)
}

async fn status(State(core): State<Arc<Core>>) -> axum::Json<serde_json::Value> {
    let s = core.store.snapshot();
    axum::Json(serde_json::json!({
        "index": s.index(),
        "pending_evaluations": core.broker.pending_count(),
        "blocked_evaluations": core.broker.blocked_count(),
    }))
}

/// `PUT /v1/system/gc`: collect every finished record now, whatever its
/// age (Nomad's `system gc`).
async fn system_gc(
    State(core): State<Arc<Core>>,
) -> Result<axum::Json<crate::gc::GcReport>, ServerError> {
    let now = crate::core::now_ms();
    crate::gc::collect(&core, now, crate::config::GcConfig::FORCE)
        .await
        .map(axum::Json)
}

/// Every path parameter must be a valid name (`{name}`: a job's) or id,
/// before any handler looks it up.
async fn valid_path(params: RawPathParams, req: Request, next: Next) -> Response {
    for (key, value) in &params {
        let checked = match key {
            "name" => valid_job_name(value),
            other => valid_id(other, value),
        };
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Require the API token when one is configured.
async fn auth(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    if let Some(token) = &core.config.api_token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !corral_types::api::bearer_matches(given, token) {
            return ServerError::Unauthorized("missing or wrong API token".into()).into_response();
        }
    }
    next.run(req).await
}

/// `?index=N&wait=30s`: Nomad-style blocking query parameters.
#[derive(Debug, Deserialize, Default)]
pub struct Blocking {
    #[serde(default)]
    pub index: Option<Index>,
    #[serde(default)]
    pub wait: Option<String>,
}

impl Blocking {
    /// The wait asked for (default 30s), at most `max`. A `wait` that is
    /// not a duration is refused, as a bad `index` is: silently waiting
    /// the default would hide the caller's mistake.
    fn wait(&self, max: Duration) -> Result<Duration, ServerError> {
        let asked = match self.wait.as_deref() {
            None => Duration::from_secs(30),
            Some(w) => corral_types::units::parse_duration(w)
                .map_err(|e| ServerError::BadRequest(format!("wait: {e}")))?
                .as_std(),
        };
        Ok(asked.min(max))
    }
}

/// Wait until `changed(snapshot_index)` reports an index above the one the
/// caller has seen, or the wait runs out. Returns the last seen index.
pub async fn block_until<F>(
    core: &Arc<Core>,
    q: &Blocking,
    mut current: F,
) -> Result<Index, ServerError>
where
    F: FnMut() -> Index,
{
    let wait = q.wait(core.config.max_query_wait)?;
    let Some(seen) = q.index else {
        return Ok(current());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = core.index.subscribe();
    loop {
        let idx = current();
        if idx > seen {
            return Ok(idx);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(idx) },
            _ = tokio::time::sleep_until(deadline) => return Ok(idx),
            _ = core.shutdown.cancelled() => return Ok(idx),
        }
    }
}

/// Find a record by exact id, else by a unique id prefix (as Nomad's CLI
/// accepts short ids).
pub fn by_prefix<'a, T>(
    kind: Resource,
    id: &str,
    exact: Option<&'a T>,
    all: impl Iterator<Item = (&'a str, &'a T)>,
) -> Result<&'a T, ServerError> {
    if let Some(t) = exact {
        return Ok(t);
    }
    let matches: Vec<&T> = all
        .filter(|(k, _)| k.starts_with(id))
        .map(|(_, t)| t)
        .collect();
    let what = kind.noun();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(ServerError::not_found(kind, id)),
        n => Err(ServerError::BadRequest(format!(
            "{what} id prefix {id:?} matches {n} {what}s; give more characters"
        ))),
    }
}

/// Refuse a `{name}` path parameter that no job can carry: such a request
/// comes from a client that built its URL without escaping, and must not
/// reach a job by accident.
pub fn valid_job_name(name: &str) -> Result<(), ServerError> {
    match corral_types::spec::name_problem(name) {
        None => Ok(()),
        Some(p) => Err(ServerError::BadRequest(format!("job name: {p}"))),
    }
}

/// Refuse an id (or id prefix, or node name) path parameter with
/// characters no id or node name has: `/`, `?`, `%`, spaces and the like,
/// or a `.`/`..` segment.
pub fn valid_id(field: &str, id: &str) -> Result<(), ServerError> {
    let ok = !id.is_empty()
        && id.len() <= 253
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServerError::BadRequest(format!(
            "{field}: {id:?} is not a valid id or name; use letters, digits, `-`, `_` and `.`"
        )))
    }
}
