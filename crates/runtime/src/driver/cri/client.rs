//! A thin CRI client over a Unix socket: every call has a deadline, and
//! every error says which operation on which object failed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Deadline of an ordinary call (create, start, status, ...).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to the socket may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI runtime at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the CRI runtime at {}: no answer within {after:?}", socket.display())]
    ConnectTimeout { socket: PathBuf, after: Duration },
    #[error("{op}: {}: {}", code_name(status.code()), status.message())]
    Rpc { op: String, status: tonic::Status },
    #[error("{op}: no answer within {after:?}")]
    Timeout { op: String, after: Duration },
}

impl CriError {
    /// The runtime says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// The gRPC status, when the runtime answered with an error.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            CriError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    // "NotFound" rather than tonic's "Some requested entity was not found".
    let s = format!("{code:?}");
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// A connection to a CRI runtime (containerd) on a Unix socket. Cheap to
/// clone; the channel reconnects by itself when the runtime restarts.
#[derive(Debug, Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
    timeout: Duration,
}

fn endpoint() -> Endpoint {
    // The address is never dialled: the connector below opens the socket.
    Endpoint::from_static("http://[::]:50051")
}

fn connector(
    socket: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = Result<TokioIo<tokio::net::UnixStream>, std::io::Error>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let p = socket.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
    })
}

impl CriClient {
    /// Connects now; fails when nothing answers on the socket.
    pub async fn connect(socket: &Path) -> Result<CriClient, CriError> {
        let ep = endpoint();
        let fut = ep.connect_with_connector(connector(socket.to_path_buf()));
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => {
                return Err(CriError::Connect {
                    socket: socket.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                return Err(CriError::ConnectTimeout {
                    socket: socket.to_path_buf(),
                    after: CONNECT_TIMEOUT,
                });
            }
        };
        Ok(Self::from_channel(channel, socket))
    }

    /// Connects on first use (and again after the runtime restarted).
    pub fn connect_lazy(socket: &Path) -> CriClient {
        let channel = endpoint().connect_with_connector_lazy(connector(socket.to_path_buf()));
        Self::from_channel(channel, socket)
    }

    fn from_channel(channel: Channel, socket: &Path) -> CriClient {
        CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: socket.to_path_buf(),
            timeout: DEFAULT_RPC_TIMEOUT,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Deadline of ordinary calls (default [`DEFAULT_RPC_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> CriClient {
        self.timeout = timeout;
        self
    }

    async fn call<T>(
        op: impl FnOnce() -> String,
        deadline: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(CriError::Rpc { op: op(), status }),
            Err(_) => Err(CriError::Timeout {
                op: op(),
                after: deadline,
            }),
        }
    }

    pub async fn version(&self) -> Result<cri::VersionResponse, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        Self::call(|| "version".into(), self.timeout, rt.version(req)).await
    }

    /// Version with a short deadline of its own (probes, fingerprints).
    pub async fn version_within(
        &self,
        deadline: Duration,
    ) -> Result<cri::VersionResponse, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        Self::call(|| "version".into(), deadline, rt.version(req)).await
    }

    /// The runtime's status; with `verbose`, its `info` map too
    /// (containerd: `cniconfig`, the CNI network it loaded).
    pub async fn runtime_status(&self, verbose: bool) -> Result<cri::StatusResponse, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::StatusRequest { verbose };
        Self::call(|| "runtime status".into(), self.timeout, rt.status(req)).await
    }

    pub async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, CriError> {
        let mut rt = self.runtime.clone();
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Self::call(
            || format!("run pod sandbox {name}"),
            self.timeout,
            rt.run_pod_sandbox(req),
        )
        .await
        .map(|r| r.pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        Self::call(
            || format!("stop pod sandbox {id}"),
            self.timeout,
            rt.stop_pod_sandbox(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        Self::call(
            || format!("remove pod sandbox {id}"),
            self.timeout,
            rt.remove_pod_sandbox(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> Result<cri::PodSandboxStatusResponse, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        Self::call(
            || format!("status of pod sandbox {id}"),
            self.timeout,
            rt.pod_sandbox_status(req),
        )
        .await
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::ListPodSandboxRequest {
            filter: Some(filter),
        };
        Self::call(
            || "list pod sandboxes".into(),
            self.timeout,
            rt.list_pod_sandbox(req),
        )
        .await
        .map(|r| r.items)
    }

    /// The sandbox config is required: containerd 1.6 dereferences it
    /// (and crashes without it).
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut rt = self.runtime.clone();
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Self::call(
            || format!("create container {name} in pod sandbox {sandbox_id}"),
            self.timeout,
            rt.create_container(req),
        )
        .await
        .map(|r| r.container_id)
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: cri::LinuxContainerResources,
    ) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(linux),
            ..Default::default()
        };
        Self::call(
            || format!("update resources of container {id}"),
            self.timeout,
            rt.update_container_resources(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        Self::call(
            || format!("start container {id}"),
            self.timeout,
            rt.start_container(req),
        )
        .await
        .map(|_| ())
    }

    /// Stops the container: SIGTERM (or the image's stop signal), SIGKILL
    /// after `grace_secs`.
    pub async fn stop_container(&self, id: &str, grace_secs: i64) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_secs,
        };
        let deadline = self.timeout + Duration::from_secs(grace_secs.max(0) as u64);
        Self::call(
            || format!("stop container {id}"),
            deadline,
            rt.stop_container(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        Self::call(
            || format!("remove container {id}"),
            self.timeout,
            rt.remove_container(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn list_containers(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::ListContainersRequest {
            filter: Some(filter),
        };
        Self::call(
            || "list containers".into(),
            self.timeout,
            rt.list_containers(req),
        )
        .await
        .map(|r| r.containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let op = || format!("status of container {id}");
        let r = Self::call(op, self.timeout, rt.container_status(req)).await?;
        r.status.ok_or_else(|| CriError::Rpc {
            op: op(),
            status: tonic::Status::not_found("the runtime returned no status"),
        })
    }

    /// Makes the runtime reopen the container's log file (after the file
    /// was rotated away).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::ReopenContainerLogRequest {
            container_id: id.to_string(),
        };
        Self::call(
            || format!("reopen the log of container {id}"),
            self.timeout,
            rt.reopen_container_log(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, CriError> {
        let mut rt = self.runtime.clone();
        let req = cri::ContainerStatsRequest {
            container_id: id.to_string(),
        };
        let op = || format!("stats of container {id}");
        let r = Self::call(op, self.timeout, rt.container_stats(req)).await?;
        r.stats.ok_or_else(|| CriError::Rpc {
            op: op(),
            status: tonic::Status::not_found("the runtime returned no stats"),
        })
    }

    /// Runs `cmd` in the container and waits for it. The runtime kills it
    /// after `timeout` (rounded up to whole seconds, as CRI counts); the
    /// call itself gives up a few seconds later.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        let mut rt = self.runtime.clone();
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.to_vec(),
            timeout: i64::try_from(secs.max(1)).unwrap_or(i64::MAX),
        };
        Self::call(
            || {
                format!(
                    "exec {:?} in container {id}",
                    cmd.first().map(String::as_str).unwrap_or("")
                )
            },
            timeout + Duration::from_secs(3),
            rt.exec_sync(req),
        )
        .await
    }

    /// The image as the runtime knows it, `None` when it is not present.
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, CriError> {
        let mut im = self.images.clone();
        let req = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Self::call(
            || format!("status of image {image}"),
            self.timeout,
            im.image_status(req),
        )
        .await
        .map(|r| r.image)
    }

    /// Pulls the image; returns the image reference (digest).
    pub async fn pull_image(&self, image: &str, deadline: Duration) -> Result<String, CriError> {
        let mut im = self.images.clone();
        let req = cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config: None,
        };
        Self::call(
            || format!("pull image {image}"),
            deadline,
            im.pull_image(req),
        )
        .await
        .map(|r| r.image_ref)
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_read_well() {
        let e = CriError::Rpc {
            op: "status of container abc".into(),
            status: tonic::Status::not_found("container \"abc\" not found"),
        };
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "status of container abc: not found: container \"abc\" not found"
        );
        let e = CriError::Rpc {
            op: "pull image x".into(),
            status: tonic::Status::unknown("connection refused"),
        };
        assert!(!e.is_not_found());
        assert_eq!(e.to_string(), "pull image x: unknown: connection refused");
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_with_the_socket_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("none.sock");
        let e = CriClient::connect(&sock)
            .await
            .expect_err("nothing listens");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
