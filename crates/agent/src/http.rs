//! The agent's own HTTP endpoint: task logs, read from this node's files
//! and streamed to the server (which proxies them to the CLI).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;

use crate::agent::Shared;
use crate::logs;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/agent/allocations/{id}/logs", get(alloc_logs))
        .route("/v1/agent/health", get(|| async { "ok" }))
        .with_state(shared)
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    #[serde(default)]
    task: Option<String>,
    /// stdout (default) or stderr.
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    tail: Option<usize>,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn alloc_logs(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> Response {
    // Ids are uuids chosen by the server; refuse anything that could walk
    // out of the allocations directory.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return error(StatusCode::BAD_REQUEST, format!("bad allocation id {id:?}"));
    }
    let alloc_dir = shared.alloc_dir(&id);
    let dir = logs::log_dir(&alloc_dir);
    let stream = p.stream.as_deref().unwrap_or("stdout");
    if stream != "stdout" && stream != "stderr" {
        return error(
            StatusCode::BAD_REQUEST,
            format!("stream must be stdout or stderr, not {stream:?}"),
        );
    }
    let mut tasks: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".stdout"))
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("allocation {id} has no logs on this node (not started yet?)"),
            );
        }
    };
    // Container tasks log through CRI, both streams in one file.
    if let Ok(rd) = std::fs::read_dir(dir.join("cri")) {
        tasks.extend(rd.filter_map(|e| e.ok()).filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(str::to_string)
        }));
    }
    tasks.dedup();
    tasks.sort();
    let task = match p.task {
        Some(t) => {
            if !tasks.contains(&t) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "allocation {id} has no task {t:?}; its tasks: {}",
                        tasks.join(", ")
                    ),
                );
            }
            t
        }
        None if tasks.len() == 1 => tasks.remove(0),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "allocation {id} has several tasks ({}): pick one with --task",
                    tasks.join(", ")
                ),
            );
        }
    };
    let s2 = shared.clone();
    let id2 = id.clone();
    let done = move || !s2.is_active(&id2);
    let cri = logs::cri_log_path(&alloc_dir, &task);
    let body = if cri.exists() {
        match logs::stream_cri(cri, stream.to_string(), p.tail, p.follow, done).await {
            Ok(s) => Body::from_stream(s.map(|r| r.map(axum::body::Bytes::from))),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read the log of task {task}: {e}"),
                );
            }
        }
    } else {
        let path = logs::log_path(&alloc_dir, &task, stream);
        let offset = match p.tail {
            Some(n) => logs::tail_offset(&path, n).await.unwrap_or(0),
            None => 0,
        };
        Body::from_stream(
            logs::stream_file(path, offset, p.follow, done).map(|r| r.map(axum::body::Bytes::from)),
        )
    };
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
