//! `GET /v1/alerts[?all=true]`: firing alerts (newest first); with `all`,
//! the recently resolved ones after them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use corral_types::Alert;
use serde::Deserialize;

use crate::core::Core;

#[derive(Debug, Deserialize, Default)]
pub struct AlertQuery {
    #[serde(default)]
    pub all: bool,
}

pub async fn list(State(core): State<Arc<Core>>, Query(q): Query<AlertQuery>) -> Json<Vec<Alert>> {
    Json(crate::alerts::listing(&core.store.snapshot(), q.all))
}
