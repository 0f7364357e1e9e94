//! `GET /metrics` (Prometheus text format) and the middleware that times
//! every API request by its route template.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ServerError;
use crate::core::Core;

pub async fn metrics(State(core): State<Arc<Core>>) -> Result<Response, ServerError> {
    let text = crate::metrics::encode(&core)
        .await
        .map_err(|e| ServerError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Observe the request's latency (to the response head) under its matched
/// route template, e.g. `/v1/jobs/{name}`; installed with `route_layer`, so
/// only requests that matched a route are counted.
pub async fn track(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    core.metrics
        .api_request(method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The `method` label: any token is a valid HTTP method, so a client
/// inventing methods would add series without bound; the rest are `other`.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
