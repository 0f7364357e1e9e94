use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::Response;
use corral_types::api::AllocView;
use serde::Deserialize;

use super::by_prefix;
use crate::ServerError;
use crate::core::Core;
use crate::views;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    node: Option<String>,
}

pub async fn list(
    State(core): State<Arc<Core>>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<AllocView>> {
    let s = core.store.snapshot();
    let mut out: Vec<AllocView> = match &q.job {
        Some(job) => s
            .job_allocs(job)
            .into_iter()
            .map(|a| views::alloc_view(&s, a))
            .collect(),
        None => s.allocs().map(|a| views::alloc_view(&s, a)).collect(),
    };
    if let Some(node) = &q.node {
        out.retain(|a| &a.node_id == node || &a.node == node);
    }
    out.sort_by(|a, b| {
        (&a.job, &a.group, a.index, a.created_at).cmp(&(&b.job, &b.group, b.index, b.created_at))
    });
    Json(out)
}

pub async fn get(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<AllocView>, ServerError> {
    let s = core.store.snapshot();
    let a = by_prefix(
        "allocation",
        &id,
        s.alloc(&id),
        s.allocs().map(|a| (a.id.as_str(), a)),
    )?;
    Ok(Json(views::alloc_view(&s, a)))
}

/// `GET /v1/allocations/{id}/logs`: streamed from the agent that runs the
/// allocation (its files live on that node).
pub async fn logs(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ServerError> {
    let s = core.store.snapshot();
    let a = by_prefix(
        "allocation",
        &id,
        s.alloc(&id),
        s.allocs().map(|a| (a.id.as_str(), a)),
    )?;
    let node = s
        .node_by_id(&a.node_id)
        .ok_or_else(|| ServerError::not_found("node", &a.node_id))?;
    let url = format!(
        "{}/v1/agent/allocations/{}/logs?{}",
        node.address.trim_end_matches('/'),
        a.id,
        query.unwrap_or_default()
    );
    let resp = core
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| ServerError::Agent {
            node: node.name.clone(),
            message: format!("cannot reach the agent at {}: {e}", node.address),
        })?;
    let status = resp.status();
    let mut builder = Response::builder().status(status.as_u16());
    if let Some(ct) = resp.headers().get(reqwest::header::CONTENT_TYPE) {
        builder = builder.header("content-type", ct.as_bytes());
    }
    builder
        .body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ServerError::Internal(e.to_string()))
}
