//! The agent's own HTTP endpoint: task logs, read from this node's files
//! ([`crate::logs::read`]) and streamed to the server (which proxies them
//! to the CLI).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;

use crate::logs;
use crate::node::Shared;

/// With `token`, logs and metrics need `Authorization: Bearer <token>`
/// (the server forwards its API token); the health probe stays open.
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    let guarded = Router::new()
        .route("/v1/agent/allocations/{id}/logs", get(alloc_logs))
        .route(
            "/v1/agent/allocations/{id}/restart",
            axum::routing::post(alloc_restart),
        )
        .route("/metrics", get(crate::metrics::serve))
        .route(
            "/v1/agent/volumes/quarantined",
            get(crate::volumes::endpoints::quarantined),
        )
        .route(
            "/v1/agent/volumes/{id}",
            axum::routing::delete(crate::volumes::endpoints::delete),
        )
        .route(
            "/v1/agent/volumes/{id}/export",
            get(crate::volumes::endpoints::export),
        )
        .route(
            "/v1/agent/volumes/{id}/snapshot",
            axum::routing::post(crate::volumes::endpoints::snapshot),
        )
        .route(
            "/v1/agent/volumes/{id}/backup",
            axum::routing::post(crate::volumes::endpoints::backup),
        )
        .route(
            "/v1/agent/volumes/{id}/restore",
            axum::routing::post(crate::volumes::endpoints::restore),
        )
        .route(
            "/v1/agent/volumes/{id}/restore-new",
            axum::routing::post(crate::volumes::endpoints::restore_new),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(shared);
    Router::new()
        .route("/v1/agent/health", get(|| async { "ok" }))
        .merge(guarded)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = token.as_ref() {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !corral_types::api::bearer_matches(given, token) {
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send the cluster's API token as a bearer token\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    #[serde(default)]
    task: Option<String>,
    /// `stdout`, `stderr` or `both` (default).
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    tail: Option<usize>,
    /// A duration back from now (`10m`) or a time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only the run before the task's last start.
    #[serde(default)]
    previous: bool,
    /// Prefix each line with the time it was written.
    #[serde(default)]
    timestamps: bool,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

fn log_error(e: &logs::LogError) -> Response {
    use logs::LogError as E;
    let status = match e {
        E::BadQuery(_) | E::WhichTask { .. } => StatusCode::BAD_REQUEST,
        E::NoAlloc(_) | E::NoTask { .. } | E::NoPrevious { .. } => StatusCode::NOT_FOUND,
        E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// `GET /v1/agent/allocations/{id}/logs`: one task's log, also of an
/// allocation that stopped (until the retention deletes it).
async fn alloc_logs(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> Response {
    match open_logs(&shared, &id, p) {
        Ok(rx) => Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|r| r.map(axum::body::Bytes::from)),
            ))
            .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => log_error(&e),
    }
}

fn open_logs(
    shared: &Arc<Shared>,
    id: &str,
    p: LogParams,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>, logs::LogError> {
    use logs::LogError;
    // Ids are uuids chosen by the server; refuse anything that could walk
    // out of the allocations directory.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(LogError::BadQuery(format!("bad allocation id {id:?}")));
    }
    let streams = match p.stream.as_deref() {
        None => logs::read::Streams::Both,
        Some(s) => logs::read::Streams::parse(s).ok_or_else(|| {
            LogError::BadQuery(format!("stream must be stdout, stderr or both, not {s:?}"))
        })?,
    };
    let since = p
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| logs::read::parse_since(s, logs::Timestamp::now()))
        .transpose()
        .map_err(LogError::BadQuery)?;
    let alloc_dir = shared.alloc_dir(id).path().to_path_buf();
    if !logs::log_dir(&alloc_dir).is_dir() {
        return Err(LogError::NoAlloc(id.to_string()));
    }
    let mut tasks = logs::tasks(&alloc_dir);
    let task = match p.task {
        Some(t) if tasks.contains(&t) => t,
        Some(t) => {
            return Err(LogError::NoTask {
                alloc: id.to_string(),
                task: t,
                tasks: tasks.join(", "),
            });
        }
        None if tasks.len() == 1 => tasks.remove(0),
        None if tasks.is_empty() => {
            return Err(LogError::NoAlloc(id.to_string()));
        }
        None => {
            return Err(LogError::WhichTask {
                alloc: id.to_string(),
                tasks: tasks.join(", "),
            });
        }
    };
    let q = logs::read::Query {
        streams,
        tail: p.tail,
        since,
        previous: p.previous,
        follow: p.follow,
        timestamps: p.timestamps,
    };
    let s2 = shared.clone();
    let id2 = id.to_string();
    logs::read::stream(&alloc_dir, &task, &q, Arc::new(move || !s2.is_active(&id2)))
}

#[derive(Debug, Deserialize)]
struct RestartBody {
    #[serde(default)]
    task: Option<String>,
}

/// Restart one task of a running allocation (every task without `task`)
/// in place, as a user asked: `corral alloc restart`.
async fn alloc_restart(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<RestartBody>,
) -> Response {
    match shared.request_restart(&id, body.task.as_deref()) {
        Ok(tasks) => {
            axum::Json(serde_json::json!({"alloc": id, "restarted": tasks})).into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}
