//! Images: present or pulled, with a deadline and errors that say what
//! went wrong in words (not found, registry unreachable, too slow).

use std::time::Duration;

use corral_types::PullPolicy;

use super::client::{CriClient, CriError};

/// Default deadline of one pull.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image not found: {image}")]
    NotFound { image: String, detail: String },
    #[error("registry unreachable: {detail}")]
    Unreachable { image: String, detail: String },
    #[error("pulling image {image} took longer than {after:?}")]
    Timeout { image: String, after: Duration },
    #[error("cannot pull image {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: CriError,
    },
    #[error("cannot look up image {image}: {source}")]
    Status {
        image: String,
        #[source]
        source: CriError,
    },
}

/// Words in a pull error that mean the registry could not be reached.
const UNREACHABLE: &[&str] = &[
    "connection refused",
    "no such host",
    "network is unreachable",
    "no route to host",
    "i/o timeout",
    "connection reset",
    "server misbehaving",
    "dial tcp",
];

/// Classifies a failed pull.
pub fn pull_error(image: &str, e: CriError) -> ImageError {
    match &e {
        CriError::Timeout { after, .. } => ImageError::Timeout {
            image: image.to_string(),
            after: *after,
        },
        CriError::Rpc { status, .. } => {
            let msg = status.message().to_string();
            let lower = msg.to_lowercase();
            if status.code() == tonic::Code::NotFound || lower.ends_with(": not found") {
                ImageError::NotFound {
                    image: image.to_string(),
                    detail: msg,
                }
            } else if UNREACHABLE.iter().any(|w| lower.contains(w)) {
                ImageError::Unreachable {
                    image: image.to_string(),
                    detail: msg,
                }
            } else {
                ImageError::Pull {
                    image: image.to_string(),
                    source: e,
                }
            }
        }
        _ => ImageError::Pull {
            image: image.to_string(),
            source: e,
        },
    }
}

/// Whether the runtime has the image.
pub async fn is_present(client: &CriClient, image: &str) -> Result<bool, ImageError> {
    client
        .image_status(image)
        .await
        .map(|i| i.is_some())
        .map_err(|source| ImageError::Status {
            image: image.to_string(),
            source,
        })
}

/// Makes sure the image is there: pulled when the policy says `always` or
/// when it is missing. Returns whether it was pulled.
pub async fn ensure(
    client: &CriClient,
    image: &str,
    policy: PullPolicy,
    deadline: Duration,
) -> Result<bool, ImageError> {
    if policy == PullPolicy::IfNotPresent && is_present(client, image).await? {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    client
        .pull_image(image, deadline)
        .await
        .map_err(|e| pull_error(image, e))?;
    tracing::info!(
        image,
        ms = started.elapsed().as_millis() as u64,
        "image pulled"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(status: tonic::Status) -> CriError {
        CriError::Rpc {
            op: "pull image x".into(),
            status,
        }
    }

    #[test]
    fn pull_errors_are_classified() {
        let e = pull_error(
            "127.0.0.1:5000/x:1",
            rpc(tonic::Status::not_found(
                "failed to pull and unpack image \"127.0.0.1:5000/x:1\": not found",
            )),
        );
        assert_eq!(e.to_string(), "image not found: 127.0.0.1:5000/x:1");
        let e = pull_error(
            "127.0.0.1:5001/x:1",
            rpc(tonic::Status::unknown(
                "failed to resolve reference: dial tcp 127.0.0.1:5001: connect: connection refused",
            )),
        );
        assert!(matches!(e, ImageError::Unreachable { .. }));
        assert!(
            e.to_string()
                .starts_with("registry unreachable: failed to resolve"),
            "{e}"
        );
        let e = pull_error(
            "x",
            CriError::Timeout {
                op: "pull image x".into(),
                after: Duration::from_secs(300),
            },
        );
        assert_eq!(e.to_string(), "pulling image x took longer than 300s");
        let e = pull_error("x", rpc(tonic::Status::internal("disk full")));
        assert_eq!(
            e.to_string(),
            "cannot pull image x: pull image x: internal: disk full"
        );
    }
}
