//! `corral run`'s rollout view and `corral deploy ...` against a fake API
//! that plays a scripted deployment: each blocking read of
//! `GET /v1/jobs/{name}/deployment` moves the script one frame on, so the
//! binary sees a rollout succeed, fail and roll back, or wait for
//! promotion, in a fraction of a second and without a scheduler.
//!
//! Real rollouts (containers, checks, the deployment watcher) are tested
//! end to end elsewhere; this is the CLI's side of the contract.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::process::Output;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use corral_types::api::{
    ApiError, EvalView, GroupSummary, JobVersionView, JobView, SubmitResponse, SubmittedJob,
};
use corral_types::units::Millis;
use corral_types::{Deployment, DeploymentStatus, GroupDeployment, JobSpec, JobStatus};
use tokio::sync::Mutex;

const JOB: &str = "web";

#[derive(Default)]
struct Fake {
    /// Each frame: the job's deployments, newest first.
    frames: Vec<Vec<Deployment>>,
    at: usize,
    /// Stable flags of versions 1..=n.
    stable: Vec<bool>,
    /// Versions that revert to another: (version, reverts_to).
    reverts: Vec<(u64, u64)>,
    /// Each read of the versions makes every version stable from this
    /// read on (a revert without a deployment settling).
    stable_after_reads: Option<usize>,
    version_reads: usize,
    /// The submission equals the current version.
    unchanged: bool,
    /// What a deployment action answers (else 404).
    action_result: Option<Deployment>,
    actions: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ApiError {
            error: what.to_string(),
            hint: Some("list them with `corral status`".into()),
            spec_errors: vec![],
        }),
    )
        .into_response()
}

fn spec() -> JobSpec {
    JobSpec {
        name: JOB.into(),
        groups: vec![],
        update: Default::default(),
    }
}

async fn submit(State(f): State<Shared>) -> Json<SubmitResponse> {
    let unchanged = f.lock().await.unchanged;
    Json(SubmitResponse {
        index: 1,
        jobs: vec![SubmittedJob {
            name: JOB.into(),
            version: 2,
            changed: !unchanged,
            eval_id: "e1".into(),
        }],
    })
}

async fn job(Path(name): Path<String>) -> Response {
    if name != JOB {
        return not_found(&format!("job {name:?} not found"));
    }
    Json(JobView {
        name: JOB.into(),
        version: 2,
        status: JobStatus::Running,
        reason: String::new(),
        stopped: false,
        submitted_at: now_ms(),
        spec: spec(),
        groups: vec![GroupSummary {
            name: JOB.into(),
            count: 3,
            pending: 0,
            running: 3,
            complete: 0,
            failed: 0,
            lost: 0,
        }],
        allocations: vec![],
        latest_eval: Some(EvalView {
            id: "e1".into(),
            status: "complete".into(),
            trigger: "job-register".into(),
            description: String::new(),
            failures: vec![],
            modify_index: 1,
        }),
        index: 1,
    })
    .into_response()
}

async fn versions(State(f): State<Shared>, Path(name): Path<String>) -> Response {
    if name != JOB {
        return not_found(&format!("job {name:?} not found"));
    }
    let mut f = f.lock().await;
    f.version_reads += 1;
    let all_stable = f.stable_after_reads.is_some_and(|n| f.version_reads >= n);
    let v: Vec<JobVersionView> = f
        .stable
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| JobVersionView {
            version: i as u64 + 1,
            stopped: false,
            stable: *s || all_stable,
            reverts_to: f
                .reverts
                .iter()
                .find(|(v, _)| *v == i as u64 + 1)
                .map(|(_, to)| *to),
            submitted_at: now_ms(),
            spec: spec(),
        })
        .collect();
    Json(v).into_response()
}

async fn deployment(
    State(f): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut f = f.lock().await;
    if q.contains_key("index") && f.at + 1 < f.frames.len() {
        f.at += 1;
    }
    match f.frames.get(f.at).and_then(|fr| fr.first()) {
        Some(d) if name == JOB => Json(d.clone()).into_response(),
        _ => not_found(&format!("no deployment for job {name:?}")),
    }
}

async fn deployments(State(f): State<Shared>, Path(name): Path<String>) -> Response {
    if name != JOB {
        return not_found(&format!("job {name:?} not found"));
    }
    let f = f.lock().await;
    Json(f.frames.get(f.at).cloned().unwrap_or_default()).into_response()
}

async fn action(State(f): State<Shared>, Path((name, action)): Path<(String, String)>) -> Response {
    let mut f = f.lock().await;
    f.actions.push(action);
    match &f.action_result {
        Some(d) if name == JOB => Json(d.clone()).into_response(),
        _ => not_found(&format!("job {name:?} has no active deployment")),
    }
}

/// Serve the fake on a loopback port; returns its URL.
async fn serve(fake: Fake) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{name}", get(job))
        .route("/v1/jobs/{name}/versions", get(versions))
        .route("/v1/jobs/{name}/deployment", get(deployment))
        .route("/v1/jobs/{name}/deployments", get(deployments))
        .route("/v1/jobs/{name}/deployment/{action}", post(action))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), shared)
}

async fn corral(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", url)
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn group(desired: u32, placed: u32, healthy: u32) -> GroupDeployment {
    GroupDeployment {
        desired_total: desired,
        desired_canaries: 0,
        placed_canaries: vec![],
        promoted: false,
        auto_promote: false,
        auto_revert: false,
        max_parallel: 1,
        progress_deadline: Millis::from_secs(600),
        placed,
        healthy,
        unhealthy: 0,
        require_progress_by: Some(now_ms() + 600_000),
    }
}

fn dep(id: &str, version: u64, status: DeploymentStatus, g: GroupDeployment) -> Deployment {
    Deployment {
        id: id.into(),
        job: JOB.into(),
        job_version: version,
        status,
        description: String::new(),
        groups: BTreeMap::from([(JOB.to_string(), g)]),
        reverts_to: None,
        created_at: now_ms(),
        modified_at: now_ms(),
        create_index: version * 10,
        modify_index: version * 10,
    }
}

/// A job file for `corral run` (the fake ignores its content).
fn job_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("web.yaml");
    std::fs::write(&p, "image: org/app:2.0\ncount: 3\n").unwrap();
    let s = p.to_str().unwrap().to_string();
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_shows_the_rollout_and_exits_0_when_it_succeeds() {
    use DeploymentStatus::*;
    let (url, _) = serve(Fake {
        frames: vec![
            vec![dep("d2", 2, Running, group(3, 1, 0))],
            vec![dep("d2", 2, Running, group(3, 2, 1))],
            vec![dep("d2", 2, Running, group(3, 3, 2))],
            vec![dep("d2", 2, Successful, group(3, 3, 3))],
        ],
        stable: vec![true, false],
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", &file]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Without a terminal: one plain line per change, in order.
    let lines: Vec<&str> = err.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{err}"))
    };
    let a = at("web: version 2 running: web 0/3 healthy, 1 placed, deadline in ");
    let b = at("web: version 2 running: web 1/3 healthy, 2 placed");
    let c = at("web: version 2 running: web 2/3 healthy, 3 placed");
    let d = at("web: version 2 successful: web 3/3 healthy, 3 placed");
    let e = at("job web: version 2 deployed: 3/3 healthy");
    assert!(a < b && b < c && c < d && d < e, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_automatic_rollback_and_exits_non_zero() {
    use DeploymentStatus::*;
    let mut g = group(3, 1, 0);
    g.auto_revert = true;
    let mut failed = dep("d2", 2, Failed, g.clone());
    failed.description = "allocation web.web[0] unhealthy: check web-http failing".into();
    let mut rb = dep("d3", 3, Running, group(3, 1, 1));
    rb.reverts_to = Some(1);
    let mut rb_done = dep("d3", 3, Successful, group(3, 3, 3));
    rb_done.reverts_to = Some(1);
    let (url, _) = serve(Fake {
        frames: vec![
            vec![dep("d2", 2, Running, g)],
            // The watcher failed d2 and started the rollback at once.
            vec![rb.clone(), failed.clone()],
            vec![rb_done, failed],
        ],
        stable: vec![true, false, false],
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", &file]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "web: version 2 failed - allocation web.web[0] unhealthy: check web-http failing: web 0/3 healthy",
        "job web: rolling back to version 1 (as version 3)",
        "web: version 3 running (rollback to version 1): web 1/3 healthy",
        "job web: rolled back to version 1",
        "error: job web: version 2 failed (allocation web.web[0] unhealthy",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
}

/// Issue 12, case 8: a rollback placed without a deployment (its groups
/// have `max_parallel: 0`) is followed through the version, not reported
/// as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_a_rollback_that_got_no_deployment() {
    use DeploymentStatus::*;
    let mut g = group(3, 1, 0);
    g.auto_revert = true;
    let mut failed = dep("d2", 2, Failed, g.clone());
    failed.description = "allocation web.web[0] unhealthy: check web-http failing".into();
    let (url, _) = serve(Fake {
        frames: vec![vec![dep("d2", 2, Running, g)], vec![failed]],
        stable: vec![true, false, false],
        reverts: vec![(3, 1)],
        stable_after_reads: Some(4),
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", &file]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "job web: rolling back to version 1 (as version 3)",
        "job web: rolled back to version 1",
        "error: job web: version 2 failed (allocation web.web[0] unhealthy",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    assert!(!err.contains("no rollback started"), "{err}");
}

/// Found by a hostile run: running a job file again, unchanged, after its
/// rollout failed said "2/2 running" and exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_of_an_unchanged_version_whose_rollout_failed_says_so() {
    use DeploymentStatus::*;
    let mut failed = dep("d2", 2, Failed, group(2, 2, 0));
    failed.description = "allocation web.web[0] is unhealthy: check web-exec failing".into();
    let (url, _) = serve(Fake {
        frames: vec![vec![failed]],
        stable: vec![true, false],
        unchanged: true,
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", "--timeout", "20s", &file]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("job web: unchanged (version 2), and its rollout failed: allocation web.web[0] is unhealthy"),
        "{err}"
    );
    assert!(err.contains("corral job revert web VERSION"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails_with_the_reason_and_what_to_do_without_auto_revert() {
    use DeploymentStatus::*;
    let mut failed = dep("d2", 2, Failed, group(3, 1, 0));
    failed.description = "no allocation became healthy before the progress deadline".into();
    let (url, _) = serve(Fake {
        frames: vec![vec![dep("d2", 2, Running, group(3, 1, 0))], vec![failed]],
        stable: vec![true, false],
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", &file]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "the rollout of version 2 failed: no allocation became healthy before the progress deadline"
        ),
        "{err}"
    );
    assert!(err.contains("corral job revert web VERSION"), "{err}");
    assert!(!err.contains("rolled back"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_0_once_canaries_are_healthy_and_says_how_to_promote() {
    use DeploymentStatus::*;
    let canary = |healthy| {
        let mut g = group(3, 1, healthy);
        g.desired_canaries = 1;
        g.placed_canaries = vec!["c1".into()];
        g
    };
    let (url, _) = serve(Fake {
        frames: vec![
            vec![dep("d2", 2, Running, canary(0))],
            vec![dep("d2", 2, Running, canary(1))],
        ],
        stable: vec![true, false],
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", &file]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("canaries 0/1 healthy (1 placed, not promoted)"),
        "{err}"
    );
    assert!(
        err.contains("canaries 1/1 healthy (1 placed, not promoted)"),
        "{err}"
    );
    assert!(err.contains("corral deploy promote web"), "{err}");
}

/// A paused rollout goes nowhere until someone resumes it: `run` says so,
/// with the command, and exits non-zero instead of following it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_following_a_paused_rollout_and_says_how_to_resume() {
    use DeploymentStatus::*;
    let (url, _) = serve(Fake {
        frames: vec![
            vec![dep("d2", 2, Running, group(3, 1, 0))],
            vec![dep("d2", 2, Paused, group(3, 1, 1))],
        ],
        stable: vec![true, false],
        ..Fake::default()
    })
    .await;
    let (_dir, file) = job_file();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        corral(&url, &["run", &file]),
    )
    .await
    .expect("run returns at a paused deployment");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("job web: the rollout of version 2 is paused: 1/3 healthy"),
        "{err}"
    );
    assert!(err.contains("`corral deploy resume web`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_detach_returns_after_submission() {
    let (url, fake) = serve(Fake::default()).await;
    let (_dir, file) = job_file();
    let out = corral(&url, &["run", "--detach", &file]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("job web: version 2 submitted"));
    assert_eq!(fake.lock().await.at, 0, "nothing followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_status_json_shape_and_table() {
    use DeploymentStatus::*;
    let mut g = group(3, 1, 1);
    g.desired_canaries = 1;
    g.placed_canaries = vec!["c1".into()];
    let (url, _) = serve(Fake {
        frames: vec![vec![dep("d2", 2, Running, g)]],
        ..Fake::default()
    })
    .await;
    let out = corral(&url, &["deploy", "status", JOB, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "d2");
    assert_eq!(v["job"], "web");
    assert_eq!(v["job_version"], 2);
    assert_eq!(v["status"], "running");
    assert!(v["description"].is_string());
    let g = &v["groups"]["web"];
    for (k, want) in [
        ("desired_total", 3),
        ("placed", 1),
        ("healthy", 1),
        ("unhealthy", 0),
        ("desired_canaries", 1),
    ] {
        assert_eq!(g[k], want, "{k}: {v}");
    }
    assert_eq!(g["placed_canaries"], serde_json::json!(["c1"]));
    assert_eq!(g["promoted"], false);
    assert!(g["require_progress_by"].is_u64(), "{v}");

    let out = corral(&url, &["deploy", "status", JOB]).await;
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        s.contains("GROUP  DESIRED  PLACED  HEALTHY  UNHEALTHY  CANARIES  PROMOTED  DEADLINE"),
        "{s}"
    );
    assert!(s.contains("status       running"), "{s}");
    assert!(s.contains("corral deploy promote web"), "{s}");

    let out = corral(&url, &["deploy", "list", JOB, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["id"], "d2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_actions_print_the_resulting_status() {
    use DeploymentStatus::*;
    let mut g = group(3, 1, 1);
    g.desired_canaries = 1;
    g.placed_canaries = vec!["c1".into()];
    g.promoted = true;
    let (url, fake) = serve(Fake {
        action_result: Some(dep("d2-0000-1111", 2, Running, g)),
        ..Fake::default()
    })
    .await;
    // --detach: the action's own answer (following is tested against a
    // real rollout in cli_habits.rs).
    let out = corral(&url, &["deploy", "promote", JOB, "--detach"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "job web: deployment d2-0000- of version 2 promoted; status running"
    );
    for a in ["fail", "pause", "resume"] {
        let out = corral(&url, &["deploy", a, JOB, "--json"]).await;
        assert!(out.status.success(), "{a}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "running");
    }
    assert_eq!(
        fake.lock().await.actions,
        vec!["promote", "fail", "pause", "resume"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deployment_errors_say_what_to_do() {
    let (url, _) = serve(Fake::default()).await;
    // An unknown job.
    for args in [
        vec!["deploy", "status", "nosuch"],
        vec!["deploy", "list", "nosuch"],
        vec!["deploy", "promote", "nosuch"],
    ] {
        let out = corral(&url, &args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(
                "no deployment for job nosuch: there is no job nosuch; run it with `corral run nosuch.yaml`"
            ),
            "{args:?}: {err}"
        );
    }
    // A job that never had one.
    let out = corral(&url, &["deploy", "status", JOB]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no deployment for job web: none of its versions has been rolled out yet"),
        "{err}"
    );
    assert!(err.contains("`corral run`"), "{err}");
    // An action without an active deployment: the server's reason.
    let out = corral(&url, &["deploy", "promote", JOB]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has no active deployment"), "{err}");
    // An empty list is not an error for a known job.
    let out = corral(&url, &["deploy", "list", JOB, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
}
