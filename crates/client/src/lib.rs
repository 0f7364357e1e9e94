//! A typed client for corral's HTTP API v1. Errors say what to do next:
//! an unreachable server names the address and how to start one.

use std::time::Duration;

use corral_types::api::{
    AllocUpdates, AllocView, ApiError, EvalView, JobListEntry, JobVersionView, JobView,
    NodeAllocations, NodeView, PlanResponse, SubmitResponse,
};
use corral_types::{Deployment, HeartbeatResponse, Index, NodeRegistration};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

mod events;

pub use events::{EventQuery, EventStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the server at {addr}: is `corral dev` (or `corral server`) running? {setting}"
    )]
    Unreachable {
        addr: String,
        /// How the caller sets the address (differs for the CLI and an agent).
        setting: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the server at {addr} took the connection but did not answer within {}s: is it a corral server, and is it overloaded? ({setting})",
        .after.as_secs()
    )]
    TimedOut {
        addr: String,
        after: Duration,
        setting: &'static str,
    },
    #[error(
        "{addr:?} is not a server address: {problem}; write it as http://HOST:PORT ({setting})"
    )]
    BadAddress {
        addr: String,
        problem: String,
        setting: &'static str,
    },
    #[error("{}", render_api_error(.status, .error))]
    Api { status: u16, error: ApiError },
    #[error("{0:?} is not a valid name or id")]
    InvalidName(String),
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    #[error(
        "{url} answered {status} with {what}, not corral's API: is {addr} a corral server? ({setting})"
    )]
    NotCorral {
        url: String,
        addr: String,
        status: u16,
        what: String,
        setting: &'static str,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

fn render_api_error(_status: &u16, e: &ApiError) -> String {
    let mut s = e.error.clone();
    for se in &e.spec_errors {
        s.push_str(&format!("\n  {se}"));
    }
    if let Some(h) = &e.hint {
        s.push_str(&format!("\n{h}"));
    }
    s
}

/// A URL path from segments, each percent-encoded: names come from the
/// command line, and `nosuch/../j4` or `x?index=abc` must stay one
/// segment, never become another path or a query. `.` and `..` cannot be
/// sent as a segment at all (URL parsers resolve even their encoded
/// forms), nor can an empty one; no name or id is either.
pub fn path(segments: &[&str]) -> Result<String, ClientError> {
    // Everything but the RFC 3986 unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut out = String::new();
    for s in segments {
        if s.is_empty() || *s == "." || *s == ".." {
            return Err(ClientError::InvalidName(s.to_string()));
        }
        out.push('/');
        out.extend(utf8_percent_encode(s, SEGMENT));
    }
    Ok(out)
}

fn content_kind(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// How long a request for data may take before the server counts as not
/// answering (blocking queries get their wait on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an agent's register, heartbeat or status report may take.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A backup or a restore moves a volume's data: as long as the server
/// gives its agent.
pub const VOLUME_DATA_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
    http: reqwest::Client,
    setting: &'static str,
}

/// The API's port when an address names none (`corral dev`'s default).
pub const DEFAULT_PORT: u16 = 7070;

/// How the CLI's users point it elsewhere.
pub const CLI_ADDR_SETTING: &str = "set CORRAL_ADDR or --api to the server's address";

/// A server address as users write it: `http://host:port`, `host:port`
/// (http assumed, as kubectl does) or a bare `host` (port 7070, the
/// default). Anything else (https, which this build does not speak yet,
/// another scheme, a path, no host) is refused with what to write.
pub fn normalize_addr(addr: &str, setting: &'static str) -> Result<String, ClientError> {
    let bad = |problem: &str| ClientError::BadAddress {
        addr: addr.to_string(),
        problem: problem.to_string(),
        setting,
    };
    let trimmed = addr.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let schemeless = !trimmed.contains("://");
    let full = if schemeless {
        format!("http://{trimmed}")
    } else {
        trimmed.to_string()
    };
    let mut url = reqwest::Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "this build speaks plain http to the API only (TLS for the API is not built yet); put a TLS proxy in front and give its http address, or use http://",
            ));
        }
        other => return Err(bad(&format!("the scheme {other:?} is not http"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(bad("it has a path; the API lives at the root"));
    }
    if schemeless && url.port().is_none() {
        // `corral dev`'s and `corral server`'s default port, not http's 80.
        let _ = url.set_port(Some(DEFAULT_PORT));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Options for reading logs.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub task: Option<String>,
    /// `stdout`, `stderr` or `both` (the default).
    pub stream: Option<String>,
    /// Keep streaming new output (across task restarts) until the
    /// allocation stops.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines since a duration ago (`10m`) or a time (RFC 3339).
    pub since: Option<String>,
    /// Only the run before the task's last restart.
    pub previous: bool,
    /// Prefix each line with the time it was written.
    pub timestamps: bool,
}

impl Client {
    pub fn new(addr: &str, token: Option<String>) -> Client {
        Client {
            addr: addr.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            setting: CLI_ADDR_SETTING,
        }
    }

    /// How errors tell the user to change the address (an agent reads
    /// `--server`/`CORRAL_SERVER`, not the CLI's `CORRAL_ADDR`).
    pub fn with_addr_setting(mut self, setting: &'static str) -> Client {
        self.setting = setting;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.addr));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let (client, request) = rb.build_split();
        let request = request.map_err(|source| self.unreachable(source))?;
        self.execute(&client, request).await
    }

    /// Sends `request`; a failure says whether the server could not be
    /// reached or did not answer within the request's deadline.
    async fn execute(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, ClientError> {
        let after = request.timeout().copied().unwrap_or(REQUEST_TIMEOUT);
        let resp = client
            .execute(request)
            .await
            .map_err(|source| self.failed(source, after))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let kind = content_kind(&resp);
        let body = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(error) => Err(ClientError::Api { status, error }),
            Err(_) => Err(self.not_corral(url, status, &kind, &body)),
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            addr: self.addr.clone(),
            setting: self.setting,
            source,
        }
    }

    /// A request that failed: no answer in time, or no connection.
    fn failed(&self, source: reqwest::Error, after: Duration) -> ClientError {
        if source.is_timeout() {
            ClientError::TimedOut {
                addr: self.addr.clone(),
                after,
                setting: self.setting,
            }
        } else {
            self.unreachable(source)
        }
    }

    /// Something that is not corral answered (another web server on the
    /// port, a proxy's error page): one line, never its HTML.
    fn not_corral(&self, url: String, status: u16, kind: &str, body: &[u8]) -> ClientError {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let what = if kind.contains("html") || text.starts_with('<') {
            "an HTML page".to_string()
        } else if text.is_empty() {
            "an empty body".to_string()
        } else {
            let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
            format!("{first:?}")
        };
        ClientError::NotCorral {
            url,
            addr: self.addr.clone(),
            status,
            what,
            setting: self.setting,
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        // A server that takes the connection and never answers must not
        // hang a command: every request for data has a deadline (a
        // blocking query's is its wait plus this).
        let (client, request) = rb.build_split();
        let mut request = request.map_err(|source| self.unreachable(source))?;
        let after = *request.timeout_mut().get_or_insert(REQUEST_TIMEOUT);
        let resp = self.execute(&client, request).await?;
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let kind = content_kind(&resp);
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.failed(source, after))?;
        if !kind.contains("json") {
            return Err(self.not_corral(url, status, &kind, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url,
            message: e.to_string(),
        })
    }

    // Jobs.

    pub async fn submit(&self, text: &str, filename: &str) -> Result<SubmitResponse, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, "/v1/jobs")
                .query(&[("filename", filename)])
                .body(text.to_string()),
        )
        .await
    }

    pub async fn plan(&self, text: &str, filename: &str) -> Result<PlanResponse, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, "/v1/jobs")
                .query(&[("filename", filename), ("plan", "true")])
                .body(text.to_string()),
        )
        .await
    }

    pub async fn jobs(&self) -> Result<Vec<JobListEntry>, ClientError> {
        self.json(self.req(reqwest::Method::GET, "/v1/jobs")).await
    }

    /// The job; with `index`, blocks until something newer (or `wait`).
    pub async fn job(
        &self,
        name: &str,
        index: Option<(Index, Duration)>,
    ) -> Result<JobView, ClientError> {
        let rb = self.req(reqwest::Method::GET, &path(&["v1", "jobs", name])?);
        self.json(blocking(rb, index)).await
    }

    /// `GET /v1/services`: the whole catalog; with `index`, waits until it
    /// changes past that index (or `wait` runs out).
    pub async fn services(
        &self,
        index: Option<(Index, Duration)>,
    ) -> Result<corral_types::catalog::ServiceCatalog, ClientError> {
        let rb = self.req(reqwest::Method::GET, "/v1/services");
        self.json(blocking(rb, index)).await
    }

    /// `GET /v1/services/{name}`, blocking like [`Client::services`].
    pub async fn service(
        &self,
        name: &str,
        index: Option<(Index, Duration)>,
    ) -> Result<corral_types::catalog::ServiceCatalog, ClientError> {
        let rb = self.req(reqwest::Method::GET, &path(&["v1", "services", name])?);
        self.json(blocking(rb, index)).await
    }

    pub async fn job_versions(&self, name: &str) -> Result<Vec<JobVersionView>, ClientError> {
        self.json(self.req(
            reqwest::Method::GET,
            &path(&["v1", "jobs", name, "versions"])?,
        ))
        .await
    }

    /// Store the spec of `version` as the job's next version.
    pub async fn revert(&self, name: &str, version: u64) -> Result<SubmitResponse, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "jobs", name, "revert"])?,
            )
            .json(&corral_types::api::RevertRequest { version }),
        )
        .await
    }

    /// Store the current spec with `group`'s count set to `count`.
    pub async fn scale(
        &self,
        name: &str,
        group: Option<&str>,
        count: u32,
    ) -> Result<SubmitResponse, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "jobs", name, "scale"])?,
            )
            .json(&corral_types::api::ScaleRequest {
                group: group.map(str::to_owned),
                count,
            }),
        )
        .await
    }

    /// Restart a running allocation's task (every task without `task`)
    /// in place.
    pub async fn alloc_restart(
        &self,
        id: &str,
        task: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "allocations", id, "restart"])?,
            )
            .json(&serde_json::json!({ "task": task })),
        )
        .await
    }

    /// Stop one allocation; the scheduler fills its slot again.
    pub async fn alloc_stop(&self, id: &str) -> Result<AllocView, ClientError> {
        self.json(self.req(
            reqwest::Method::POST,
            &path(&["v1", "allocations", id, "stop"])?,
        ))
        .await
    }

    // Deployments.

    /// Set a deployment allocation's health by hand.
    pub async fn set_alloc_health(
        &self,
        id: &str,
        healthy: bool,
    ) -> Result<AllocView, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "allocations", id, "health"])?,
            )
            .json(&serde_json::json!({ "healthy": healthy })),
        )
        .await
    }

    /// The job's newest deployment; with `index`, blocks until something
    /// newer (or `wait`).
    pub async fn deployment(
        &self,
        job: &str,
        index: Option<(Index, Duration)>,
    ) -> Result<Deployment, ClientError> {
        let mut rb = self.req(
            reqwest::Method::GET,
            &path(&["v1", "jobs", job, "deployment"])?,
        );
        if let Some((i, wait)) = index {
            rb = rb
                .query(&[
                    ("index", i.to_string()),
                    ("wait", format!("{}ms", wait.as_millis())),
                ])
                .timeout(wait + REQUEST_TIMEOUT);
        }
        self.json(rb).await
    }

    /// Every deployment of a job, newest first.
    pub async fn deployments(&self, job: &str) -> Result<Vec<Deployment>, ClientError> {
        self.json(self.req(
            reqwest::Method::GET,
            &path(&["v1", "jobs", job, "deployments"])?,
        ))
        .await
    }

    /// Promote, fail, pause or resume the job's active deployment.
    pub async fn deployment_action(
        &self,
        job: &str,
        action: corral_types::api::DeploymentAction,
    ) -> Result<Deployment, ClientError> {
        self.json(self.req(
            reqwest::Method::POST,
            &path(&["v1", "jobs", job, "deployment", action.as_str()])?,
        ))
        .await
    }

    pub async fn stop(&self, name: &str, purge: bool) -> Result<serde_json::Value, ClientError> {
        self.json(
            self.req(reqwest::Method::DELETE, &path(&["v1", "jobs", name])?)
                .query(&[("purge", purge)]),
        )
        .await
    }

    // Allocations and evaluations.

    pub async fn allocs(&self, job: Option<&str>) -> Result<Vec<AllocView>, ClientError> {
        let mut rb = self.req(reqwest::Method::GET, "/v1/allocations");
        if let Some(j) = job {
            rb = rb.query(&[("job", j)]);
        }
        self.json(rb).await
    }

    pub async fn alloc(&self, id: &str) -> Result<AllocView, ClientError> {
        self.json(self.req(reqwest::Method::GET, &path(&["v1", "allocations", id])?))
            .await
    }

    /// A streaming response of log text (whole lines), from the node that
    /// runs or ran the allocation.
    pub async fn logs(&self, alloc: &str, q: &LogQuery) -> Result<reqwest::Response, ClientError> {
        let mut params: Vec<(&str, String)> = vec![];
        if let Some(t) = &q.task {
            params.push(("task", t.clone()));
        }
        if let Some(s) = &q.stream {
            params.push(("stream", s.clone()));
        }
        if q.follow {
            params.push(("follow", "true".into()));
        }
        if let Some(n) = q.tail {
            params.push(("tail", n.to_string()));
        }
        if let Some(s) = &q.since {
            params.push(("since", s.clone()));
        }
        if q.previous {
            params.push(("previous", "true".into()));
        }
        if q.timestamps {
            params.push(("timestamps", "true".into()));
        }
        self.send(
            self.req(
                reqwest::Method::GET,
                &path(&["v1", "allocations", alloc, "logs"])?,
            )
            .query(&params),
        )
        .await
    }

    pub async fn evals(&self, job: Option<&str>) -> Result<Vec<EvalView>, ClientError> {
        let mut rb = self.req(reqwest::Method::GET, "/v1/evaluations");
        if let Some(j) = job {
            rb = rb.query(&[("job", j)]);
        }
        self.json(rb).await
    }

    pub async fn eval(&self, id: &str) -> Result<EvalView, ClientError> {
        self.json(self.req(reqwest::Method::GET, &path(&["v1", "evaluations", id])?))
            .await
    }

    // Nodes.

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.json(self.req(reqwest::Method::GET, "/v1/nodes")).await
    }

    pub async fn node(&self, id: &str) -> Result<NodeView, ClientError> {
        self.json(self.req(reqwest::Method::GET, &path(&["v1", "nodes", id])?))
            .await
    }

    pub async fn set_eligibility(&self, id: &str, eligible: bool) -> Result<NodeView, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "nodes", id, "eligibility"])?,
            )
            .json(&serde_json::json!({ "eligible": eligible })),
        )
        .await
    }

    pub async fn drain(
        &self,
        id: &str,
        enable: bool,
        deadline: Option<&str>,
    ) -> Result<NodeView, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, &path(&["v1", "nodes", id, "drain"])?)
                .json(&serde_json::json!({ "enable": enable, "deadline": deadline })),
        )
        .await
    }

    /// Garbage-collect every finished record now (`corral system gc`).
    pub async fn system_gc(&self) -> Result<corral_types::api::GcReport, ClientError> {
        self.json(self.req(reqwest::Method::PUT, "/v1/system/gc"))
            .await
    }

    // Agent side.

    pub async fn register(&self, reg: &NodeRegistration) -> Result<HeartbeatResponse, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, "/v1/nodes/register")
                .json(reg),
        )
        .await
    }

    pub async fn heartbeat(&self, node: &str) -> Result<HeartbeatResponse, ClientError> {
        self.json(self.req(
            reqwest::Method::POST,
            &path(&["v1", "nodes", node, "heartbeat"])?,
        ))
        .await
    }

    pub async fn node_allocations(
        &self,
        node: &str,
        index: Index,
        wait: Duration,
    ) -> Result<NodeAllocations, ClientError> {
        self.json(
            self.req(
                reqwest::Method::GET,
                &path(&["v1", "nodes", node, "allocations"])?,
            )
            .query(&[
                ("index", index.to_string()),
                ("wait", format!("{}ms", wait.as_millis())),
            ])
            .timeout(wait + Duration::from_secs(10)),
        )
        .await
    }

    /// Push the node's running tasks' usage (see `corral_types::api::NodeStats`).
    pub async fn push_stats(
        &self,
        node: &str,
        stats: &corral_types::api::NodeStats,
    ) -> Result<(), ClientError> {
        self.send(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "nodes", node, "stats"])?,
            )
            .json(stats)
            .timeout(AGENT_CALL_TIMEOUT),
        )
        .await
        .map(|_| ())
    }

    // Volumes.

    pub async fn volumes(
        &self,
        job: Option<&str>,
    ) -> Result<Vec<corral_types::Volume>, ClientError> {
        let mut rb = self.req(reqwest::Method::GET, "/v1/volumes");
        if let Some(j) = job {
            rb = rb.query(&[("job", j)]);
        }
        self.json(rb).await
    }

    pub async fn quarantined_volumes(
        &self,
    ) -> Result<Vec<corral_types::api::QuarantinedCopy>, ClientError> {
        self.json(self.req(reqwest::Method::GET, "/v1/volumes/quarantined"))
            .await
    }

    pub async fn volume(&self, id: &str) -> Result<corral_types::Volume, ClientError> {
        self.json(self.req(reqwest::Method::GET, &path(&["v1", "volumes", id])?))
            .await
    }

    /// Take a snapshot now (on the volume's node).
    pub async fn volume_snapshot(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.json(self.req(
            reqwest::Method::POST,
            &path(&["v1", "volumes", id, "snapshot"])?,
        ))
        .await
    }

    /// Restore volume `id` in place to a snapshot or backup, or, with
    /// `as_volume`, make a new volume of that id from it.
    pub async fn volume_restore(
        &self,
        id: &str,
        snapshot: &str,
        as_volume: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "volumes", id, "restore"])?,
            )
            .json(&corral_types::api::VolumeRestoreRequest {
                snapshot: snapshot.to_owned(),
                as_volume: as_volume.map(str::to_owned),
            })
            .timeout(VOLUME_DATA_TIMEOUT),
        )
        .await
    }

    pub async fn volume_delete(
        &self,
        id: &str,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        self.json(
            self.req(reqwest::Method::DELETE, &path(&["v1", "volumes", id])?)
                .query(&[("force", force)]),
        )
        .await
    }

    pub async fn volume_claim(
        &self,
        id: &str,
        claim: &corral_types::api::VolumeClaim,
    ) -> Result<corral_types::Volume, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "volumes", id, "claim"])?,
            )
            .json(claim),
        )
        .await
    }

    pub async fn volume_recover(
        &self,
        id: &str,
        r: &corral_types::api::VolumeRecover,
    ) -> Result<corral_types::api::VolumeRecovery, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "volumes", id, "recover"])?,
            )
            .json(r),
        )
        .await
    }

    /// Back the volume up now.
    pub async fn volume_backup(&self, id: &str) -> Result<corral_types::VolumeBackup, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "volumes", id, "backup"])?,
            )
            .timeout(VOLUME_DATA_TIMEOUT),
        )
        .await
    }

    pub async fn volume_report(
        &self,
        id: &str,
        report: &corral_types::api::VolumeReport,
    ) -> Result<corral_types::Volume, ClientError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "volumes", id, "report"])?,
            )
            .json(report),
        )
        .await
    }

    pub async fn update_allocations(
        &self,
        node: &str,
        updates: &AllocUpdates,
    ) -> Result<(), ClientError> {
        self.send(
            self.req(
                reqwest::Method::POST,
                &path(&["v1", "nodes", node, "allocations"])?,
            )
            .json(updates),
        )
        .await
        .map(|_| ())
    }
}

/// Adds `?index=&wait=` to a blocking query, and a timeout that outlasts
/// the wait.
fn blocking(
    rb: reqwest::RequestBuilder,
    index: Option<(Index, Duration)>,
) -> reqwest::RequestBuilder {
    match index {
        Some((i, wait)) => rb
            .query(&[
                ("index", i.to_string()),
                ("wait", format!("{}ms", wait.as_millis())),
            ])
            .timeout(wait + REQUEST_TIMEOUT),
        None => rb,
    }
}

#[cfg(test)]
mod tests {
    use super::{CLI_ADDR_SETTING, ClientError, normalize_addr, path};

    #[test]
    fn addresses_as_users_write_them() {
        let ok = |a: &str| normalize_addr(a, CLI_ADDR_SETTING).unwrap();
        assert_eq!(ok("localhost:7401"), "http://localhost:7401");
        assert_eq!(ok("http://10.0.0.1:7070/"), "http://10.0.0.1:7070");
        assert_eq!(ok("10.0.0.1"), "http://10.0.0.1:7070");
        assert_eq!(ok("[::1]:7401"), "http://[::1]:7401");
        // With a scheme the URL means what it says (a proxy on port 80).
        assert_eq!(ok("http://corral.example"), "http://corral.example");
        for bad in [
            "",
            "https://h:1",
            "ftp://h:1",
            "http://h:1/v1",
            "h:1?x=1",
            "http://:1",
        ] {
            let e = normalize_addr(bad, CLI_ADDR_SETTING)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("http://HOST:PORT") && e.contains("CORRAL_ADDR"),
                "{bad}: {e}"
            );
        }
    }

    /// Names from the command line stay one path segment each.
    #[test]
    fn every_segment_is_escaped() {
        let p = |s: &[&str]| path(s).expect("a path");
        assert_eq!(p(&["v1", "jobs", "web"]), "/v1/jobs/web");
        assert_eq!(
            p(&["v1", "jobs", "nosuch/../j4"]),
            "/v1/jobs/nosuch%2F..%2Fj4"
        );
        assert_eq!(
            p(&["v1", "allocations", "../nodes"]),
            "/v1/allocations/..%2Fnodes"
        );
        assert_eq!(
            p(&["v1", "jobs", "x?index=abc"]),
            "/v1/jobs/x%3Findex%3Dabc"
        );
        assert_eq!(p(&["v1", "jobs", "a b#c%2e"]), "/v1/jobs/a%20b%23c%252e");
        assert_eq!(
            p(&["v1", "nodes", "node-1.example_x~"]),
            "/v1/nodes/node-1.example_x~"
        );
        for bad in ["..", ".", ""] {
            assert!(
                matches!(path(&["v1", "jobs", bad]), Err(ClientError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }
}
