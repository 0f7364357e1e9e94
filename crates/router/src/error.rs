//! Errors: [`RouterError`] for starting the router, [`ProxyError`] for
//! what went wrong with one request. A proxy error says where it came from
//! (the client's request, the routing, or the endpoint) and maps to the
//! status and the one-line body the client gets.

use std::net::SocketAddr;

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the router's worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// Why a request got no answer from an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The client's request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request headers too large: {size} bytes, the limit is {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("the router does not forward CONNECT")]
    Connect,
    // Routing.
    #[error("the router has not loaded the service catalog yet")]
    NotLoaded,
    #[error("no route for {host}{path}")]
    NoRoute { host: String, path: String },
    #[error("service {service} has no healthy endpoint")]
    NoEndpoint { service: String },
    // The endpoint.
    #[error("service {service}: cannot connect to {endpoint}: {reason}")]
    UpstreamConnect {
        service: String,
        endpoint: String,
        reason: String,
    },
    #[error("service {service}: {endpoint} did not accept a connection within {secs:.1}s")]
    UpstreamConnectTimeout {
        service: String,
        endpoint: String,
        secs: f64,
    },
    #[error("service {service}: {endpoint} did not answer within {secs:.1}s")]
    UpstreamTimeout {
        service: String,
        endpoint: String,
        secs: f64,
    },
    #[error("service {service}: {endpoint} failed: {reason}")]
    Upstream {
        service: String,
        endpoint: String,
        reason: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NotLoaded | ProxyError::NoEndpoint { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect { .. } | ProxyError::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamConnectTimeout { .. } | ProxyError::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The client's request was at fault and its framing may not be
    /// trusted: the connection is closed after the answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::HeadersTooLarge { .. } | ProxyError::Connect
        )
    }

    /// The `kind` label of `corral_router_upstream_errors_total`, for
    /// errors that came from an endpoint.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::UpstreamConnect { .. } => Some("connect"),
            ProxyError::UpstreamConnectTimeout { .. } => Some("connect_timeout"),
            ProxyError::UpstreamTimeout { .. } => Some("timeout"),
            ProxyError::Upstream { .. } => Some("protocol"),
            _ => None,
        }
    }
}
