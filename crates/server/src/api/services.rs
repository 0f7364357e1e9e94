//! `GET /v1/services` and `GET /v1/services/{service}`: the catalog, as
//! blocking queries (routers and node DNS follow it).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_types::catalog::ServiceCatalog;

use super::{Blocking, block_until};
use crate::ServerError;
use crate::catalog;
use crate::core::Core;
use crate::error::Resource;

pub async fn list(
    State(core): State<Arc<Core>>,
    Query(q): Query<Blocking>,
) -> Result<Json<ServiceCatalog>, ServerError> {
    let c = core.clone();
    block_until(&core, &q, move || catalog::index(&c.store.snapshot())).await?;
    Ok(Json(catalog::catalog(
        &core.store.snapshot(),
        &core.config.domain,
    )))
}

/// One service, in the catalog's shape (its `services` holds it alone).
pub async fn get(
    State(core): State<Arc<Core>>,
    Path(service): Path<String>,
    Query(q): Query<Blocking>,
) -> Result<Json<ServiceCatalog>, ServerError> {
    let c = core.clone();
    block_until(&core, &q, move || catalog::index(&c.store.snapshot())).await?;
    let mut all = catalog::catalog(&core.store.snapshot(), &core.config.domain);
    all.services.retain(|s| s.name == service);
    if all.services.is_empty() {
        return Err(ServerError::not_found(Resource::Service, &service));
    }
    Ok(Json(all))
}
