use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use corral_types::api::ApiError;
use corral_types::spec::SpecErrors;

/// Errors of the server's request handlers and background loops.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] corral_store::StoreError),
    #[error("{0}")]
    Spec(SpecErrors),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    BadRequest(String),
    /// The request does not fit the object's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("node {node}: {message}")]
    Agent { node: String, message: String },
    /// A setting the server cannot start with.
    #[error("invalid server config: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl ServerError {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> ServerError {
        ServerError::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, hint) = match &self {
            ServerError::Spec(_) => (
                StatusCode::BAD_REQUEST,
                Some("fix the fields named above and submit again; nothing was stored".into()),
            ),
            ServerError::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
            ServerError::Conflict(_) => (StatusCode::CONFLICT, None),
            ServerError::NotFound { what, .. } if *what == "deployment for job" => (
                StatusCode::NOT_FOUND,
                Some(
                    "a job gets a deployment when `corral run` rolls out a new version; \
                     see `corral status`"
                        .into(),
                ),
            ),
            ServerError::NotFound { what, .. } => (
                StatusCode::NOT_FOUND,
                Some(format!("list them with `corral {}`", list_cmd(what))),
            ),
            ServerError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                Some("set CORRAL_TOKEN to the server's API token".into()),
            ),
            ServerError::Agent { .. } => (StatusCode::BAD_GATEWAY, None),
            ServerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, None),
            ServerError::Store(_) | ServerError::Internal(_) | ServerError::Config(_) => {
                tracing::error!(error = %self, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let spec_errors = match &self {
            ServerError::Spec(e) => e.errors.clone(),
            _ => vec![],
        };
        let error = match &self {
            ServerError::Spec(e) => format!(
                "the job spec has {} error{}",
                e.errors.len(),
                if e.errors.len() == 1 { "" } else { "s" }
            ),
            other => other.to_string(),
        };
        (
            status,
            Json(ApiError {
                error,
                hint,
                spec_errors,
            }),
        )
            .into_response()
    }
}

fn list_cmd(what: &str) -> &'static str {
    match what {
        "job" => "status",
        "allocation" => "alloc ls",
        "node" => "node ls",
        _ => "status",
    }
}
