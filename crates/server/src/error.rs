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
    #[error("{} {id:?} not found", what.noun())]
    NotFound { what: Resource, id: String },
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

/// The kinds of things the API looks up: what a "not found" names, and
/// the command that lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Job,
    Allocation,
    Node,
    Evaluation,
    /// The deployments of a job (it has none yet).
    DeploymentOfJob,
    Service,
    Volume,
}

impl Resource {
    pub fn noun(self) -> &'static str {
        match self {
            Resource::Job => "job",
            Resource::Allocation => "allocation",
            Resource::Node => "node",
            Resource::Evaluation => "evaluation",
            Resource::DeploymentOfJob => "deployment for job",
            Resource::Service => "service",
            Resource::Volume => "volume",
        }
    }

    /// What to do next.
    pub fn hint(self) -> String {
        match self {
            Resource::Job | Resource::Evaluation => "list them with `corral status`".into(),
            Resource::Allocation => "list them with `corral alloc ls`".into(),
            Resource::Node => "list them with `corral node ls`".into(),
            Resource::Volume => "list them with `corral volume ls`".into(),
            Resource::Service => {
                "list them with `corral service ls`; a service exists while its job runs".into()
            }
            Resource::DeploymentOfJob => {
                "a job gets a deployment when `corral run` rolls out a new version; \
                 see `corral status`"
                    .into()
            }
        }
    }
}

impl ServerError {
    pub fn not_found(what: Resource, id: impl Into<String>) -> ServerError {
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
            ServerError::NotFound { what, .. } => (StatusCode::NOT_FOUND, Some(what.hint())),
            ServerError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                Some("set CORRAL_TOKEN to the server's API token".into()),
            ),
            ServerError::Agent { .. } => (StatusCode::BAD_GATEWAY, None),
            ServerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, None),
            ServerError::Store(e) if e.retryable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("nothing was written; send the request again".into()),
            ),
            ServerError::Store(
                corral_store::StoreError::Fatal | corral_store::StoreError::Closed { .. },
            ) => {
                tracing::error!(error = %self, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some("restart the server to reload its state".into()),
                )
            }
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
