use std::sync::Arc;

use crate::error::Resource;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::Response;
use corral_types::NodeStatus;
use corral_types::api::AllocView;
use serde::Deserialize;

use super::by_prefix;
use crate::ServerError;
use crate::core::Core;
use crate::views;

/// How long after its creation an allocation the server forgot may still
/// have logs on a node (agents keep them `log_retention`, 7 days by
/// default, after the allocation stopped).
const GONE_LOGS_KEPT: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);

/// How long an agent may take to start answering a log request.
const AGENT_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    node: Option<String>,
}

/// The allocation `id` names: its full id or a unique prefix.
fn find<'s>(
    s: &'s corral_store::State,
    id: &str,
) -> Result<&'s Arc<corral_types::Allocation>, ServerError> {
    by_prefix(
        Resource::Allocation,
        id,
        s.alloc(id),
        s.allocs().map(|a| (a.id.as_str(), a)),
    )
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
    let a = find(&s, &id)?;
    Ok(Json(views::alloc_view(&s, a)))
}

/// `POST /v1/allocations/{id}/stop`: stop one allocation; the scheduler
/// fills its slot again (as `nomad alloc stop`). The id may be a prefix.
pub async fn stop(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<AllocView>, ServerError> {
    let full = {
        let s = core.store.snapshot();
        find(&s, &id)?.id.clone()
    };
    let now = crate::core::now_ms();
    let (_, eval) = core
        .write(move |state, _| {
            let a = state
                .alloc(&full)
                .ok_or_else(|| ServerError::not_found(Resource::Allocation, &full))?;
            if !a.is_live() {
                return Err(ServerError::Conflict(format!(
                    "allocation {} ({}) is not running ({}, desired {}); nothing to stop",
                    a.name(),
                    &a.id[..8.min(a.id.len())],
                    a.client.as_str(),
                    if a.desired == corral_types::DesiredStatus::Run {
                        "run"
                    } else {
                        "stop"
                    }
                )));
            }
            let mut a = (**a).clone();
            a.desired = corral_types::DesiredStatus::Stop;
            a.desired_reason =
                "stopped by a user (corral alloc stop); its slot is filled again".into();
            a.modified_at = now;
            let eval = Core::new_eval(&a.job, corral_types::EvalTrigger::AllocStopped, now);
            Ok((
                vec![
                    corral_store::Write::Alloc(a),
                    corral_store::Write::Eval(eval.clone()),
                ],
                eval,
            ))
        })
        .await?;
    core.enqueue([eval]);
    let s = core.store.snapshot();
    let a = s
        .alloc(&id)
        .or_else(|| s.allocs().find(|a| a.id.starts_with(&id)))
        .ok_or_else(|| ServerError::not_found(Resource::Allocation, &id))?;
    Ok(Json(views::alloc_view(&s, a)))
}

#[derive(Debug, Deserialize, Default)]
pub struct RestartBody {
    #[serde(default)]
    task: Option<String>,
}

/// `POST /v1/allocations/{id}/restart` with `{"task": T}` (optional): the
/// allocation's node restarts the task (every task) in place, at once;
/// counted in its restarts, not against its restart policy.
pub async fn restart(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<RestartBody>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let (a, node) = {
        let s = core.store.snapshot();
        let a = find(&s, &id)?;
        let node = s
            .node_by_id(&a.node_id)
            .map(|n| (**n).clone())
            .ok_or_else(|| ServerError::not_found(Resource::Node, &a.node_id))?;
        ((**a).clone(), node)
    };
    if !a.is_live() || a.client != corral_types::ClientStatus::Running {
        return Err(ServerError::Conflict(format!(
            "allocation {} is not running ({}); only a running allocation restarts in place (`corral alloc stop` replaces one)",
            a.name(),
            a.client.as_str()
        )));
    }
    if node.status == NodeStatus::Down {
        return Err(ServerError::Conflict(format!(
            "allocation {} is on node {}, which is down",
            a.name(),
            node.name
        )));
    }
    let path = format!("/v1/agent/allocations/{}/restart", a.id);
    let answer = crate::ops::volumes::agent_request(
        &core,
        &node,
        reqwest::Method::POST,
        &path,
        &[],
        Some(serde_json::json!({ "task": body.task })),
        AGENT_ANSWER,
    )
    .await?;
    Ok(Json(answer))
}

/// `GET /v1/allocations/{id}/logs`: streamed from the agent that runs (or
/// ran) the allocation: its files live on that node. An allocation the
/// server no longer knows (its job purged) may still have logs on a node
/// until their retention passes: given its full id, every node is asked.
pub async fn logs(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ServerError> {
    let query = query.unwrap_or_default();
    let s = core.store.snapshot();
    let found = by_prefix(
        Resource::Allocation,
        &id,
        s.alloc(&id),
        s.allocs().map(|a| (a.id.as_str(), a)),
    );
    let (alloc_id, nodes) = match found {
        Ok(a) => {
            let node = s
                .node_by_id(&a.node_id)
                .ok_or_else(|| ServerError::not_found(Resource::Node, &a.node_id))?;
            (a.id.clone(), vec![node.clone()])
        }
        Err(e @ ServerError::NotFound { .. }) => {
            // Only an id this server could have made for an allocation
            // whose logs may still be kept is worth asking every node
            // about: anything else (a typo, a made-up id) would cost one
            // request per node and time out on unreachable ones.
            let now = crate::core::now_ms();
            let recent = crate::core::id_time(&id).is_some_and(|t| {
                t <= now.saturating_add(60_000)
                    && t >= now.saturating_sub(GONE_LOGS_KEPT.as_millis() as u64)
            });
            if !recent {
                return Err(e);
            }
            let nodes: Vec<_> = s
                .nodes_iter()
                .filter(|n| n.status != NodeStatus::Down)
                .cloned()
                .collect();
            (id.clone(), nodes)
        }
        Err(e) => return Err(e),
    };
    if nodes.is_empty() {
        return Err(ServerError::not_found(Resource::Allocation, &id));
    }
    let several = nodes.len() > 1;
    let asks = nodes.iter().map(|node| {
        let url = format!(
            "{}/v1/agent/allocations/{alloc_id}/logs?{query}",
            node.address.trim_end_matches('/'),
        );
        let mut req = core.http.get(&url);
        // Agents started with the cluster's token require it.
        if let Some(t) = &core.config.api_token {
            req = req.bearer_auth(t);
        }
        let req = req.send();
        async move {
            // Only the answer's head is awaited here: a followed log
            // streams for as long as it likes.
            let resp = tokio::time::timeout(AGENT_ANSWER, req)
                .await
                .map_err(|_| (node, "no answer in time".to_string()))?
                .map_err(|e| {
                    (
                        node,
                        format!("cannot reach the agent at {}: {e}", node.address),
                    )
                })?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND && several {
                return Err((node, "not there".to_string()));
            }
            Ok(resp)
        }
    });
    let resp = match futures::future::select_ok(asks.map(Box::pin)).await {
        Ok((resp, _)) => resp,
        Err((node, message)) if !several => {
            return Err(ServerError::Agent {
                node: node.name.clone(),
                message,
            });
        }
        Err(_) => return Err(ServerError::not_found(Resource::Allocation, &id)),
    };
    let status = resp.status();
    let mut builder = Response::builder().status(status.as_u16());
    if let Some(ct) = resp.headers().get(reqwest::header::CONTENT_TYPE) {
        builder = builder.header("content-type", ct.as_bytes());
    }
    // A followed log ends with the server: graceful shutdown waits for
    // open responses.
    let stop = core.shutdown.clone().cancelled_owned();
    let stream = futures::StreamExt::take_until(resp.bytes_stream(), stop);
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ServerError::Internal(e.to_string()))
}
