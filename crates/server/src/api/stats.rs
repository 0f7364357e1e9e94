//! `POST /v1/nodes/{id}/stats`: an agent's usage sample of its running
//! tasks, kept in memory by [`crate::usage::Usage`] (never in the store).

use crate::error::Resource;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use corral_types::api::NodeStats;

use crate::ServerError;
use crate::core::{Core, now_ms};

pub async fn push(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<NodeStats>,
) -> Result<StatusCode, ServerError> {
    if core.store.snapshot().node_by_id(&id).is_none() {
        return Err(ServerError::not_found(Resource::Node, &id));
    }
    core.usage.record(&id, body.tasks, now_ms());
    Ok(StatusCode::NO_CONTENT)
}
