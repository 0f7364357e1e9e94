use std::sync::Arc;

use crate::error::Resource;
use axum::Json;
use axum::extract::{Path, Query, State};
use corral_types::api::EvalView;
use serde::Deserialize;

use super::by_prefix;
use crate::ServerError;
use crate::core::Core;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    job: Option<String>,
}

pub async fn list(
    State(core): State<Arc<Core>>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<EvalView>> {
    let s = core.store.snapshot();
    let mut evals: Vec<_> = match &q.job {
        Some(j) => s.job_evals(j),
        None => s.evals().collect(),
    };
    evals.sort_by_key(|e| e.create_index);
    Json(
        evals
            .into_iter()
            .map(|e| EvalView::from(e.as_ref()))
            .collect(),
    )
}

pub async fn get(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<EvalView>, ServerError> {
    let s = core.store.snapshot();
    let e = by_prefix(
        Resource::Evaluation,
        &id,
        s.eval(&id),
        s.evals().map(|e| (e.id.as_str(), e)),
    )?;
    Ok(Json(EvalView::from(e.as_ref())))
}
