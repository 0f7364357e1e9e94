//! The task runner over the exec driver, against real processes and real
//! cgroups (the driver's own tests are in `crates/runtime/tests`). These
//! tests need root and usable cgroups; elsewhere they are skipped with a
//! message (set `CORRAL_REQUIRE_ROOT_TESTS=1` to make a skip a failure).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corral_agent::cgroup::{self, CgroupV1, CgroupV2, CgroupVersion, Cgroups, cgroup_name, procfs};
use corral_agent::driver::exec::{ExecDriver, ExecState};
use corral_agent::driver::{AllocContext, TaskContext, TaskHandle};
use corral_agent::task_runner::{MemorySink, TaskOutcome, TaskRunner};
use corral_types::units::{Bytes, MilliCpu, Millis};
use corral_types::{
    DriverKind, PullPolicy, Resources, RestartMode, RestartPolicy, SecuritySpec, TaskLifecycle,
    TaskSpec,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn cgroups_or_skip(test: &str) -> Option<Arc<dyn Cgroups>> {
    let skip = |why: String| {
        if std::env::var("CORRAL_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("{test}: {why}, and CORRAL_REQUIRE_ROOT_TESTS=1");
        }
        eprintln!("SKIPPED {test}: {why}");
        None
    };
    if !rustix::process::geteuid().is_root() {
        return skip("needs root".into());
    }
    let cg = match cgroup::detect(cgroup::DEFAULT_PARENT) {
        Ok(cg) => cg,
        Err(e) => return skip(format!("no cgroups: {e}")),
    };
    if let Err(e) = cg.check() {
        return skip(format!("cgroups unusable: {e}"));
    }
    Some(cg)
}

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: TaskContext,
}

fn fixture(command: &[&str], resources: Resources) -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let alloc_id = format!(
        "test{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let task_dir = dir.path().join("app");
    std::fs::create_dir_all(&task_dir).expect("task dir");
    let ctx = TaskContext {
        mounts: Default::default(),
        alloc: AllocContext {
            alloc_id: alloc_id.clone(),
            job: "job".into(),
            group: "grp".into(),
            index: 0,
            node_id: "node".into(),
            alloc_dir: dir.path().to_path_buf(),
            ports: BTreeMap::new(),
            pod: Default::default(),
        },
        task: TaskSpec {
            name: "app".into(),
            driver: DriverKind::Exec,
            image: None,
            command: command.iter().map(|s| s.to_string()).collect(),
            args: vec![],
            env: BTreeMap::new(),
            workdir: None,
            resources,
            ports: BTreeMap::new(),
            kill_timeout: Millis(1000),
            restart: None,
            pull_policy: PullPolicy::default(),
            security: SecuritySpec::default(),
            checks: Vec::new(),
            logs: Default::default(),
        },
        env: BTreeMap::new(),
        task_dir: task_dir.clone(),
        stdout_path: dir.path().join("logs/app.stdout"),
        stderr_path: dir.path().join("logs/app.stderr"),
    };
    Fixture { _dir: dir, ctx }
}

fn small() -> Resources {
    Resources {
        disk: Default::default(),
        cpu: MilliCpu(250),
        memory: Bytes(64 << 20),
    }
}

/// Every directory the task's cgroup may have.
fn cgroup_dirs(cg: &dyn Cgroups, name: &str) -> Vec<PathBuf> {
    match cg.version() {
        CgroupVersion::V1 => CgroupV1::detect(cgroup::DEFAULT_PARENT)
            .expect("v1")
            .dirs(name),
        CgroupVersion::V2 => vec![
            CgroupV2::new("/sys/fs/cgroup", cgroup::DEFAULT_PARENT)
                .expect("v2")
                .dir(name),
        ],
    }
}

fn assert_no_cgroup(cg: &dyn Cgroups, name: &str) {
    for d in cgroup_dirs(cg, name) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

/// Gone, or a zombie waiting for its reaper.
fn assert_dead(pid: i32) {
    if let Ok(st) = procfs::read_stat(pid) {
        assert!(st.is_exited(), "pid {pid} still runs (state {})", st.state);
    }
}

fn state(h: &TaskHandle) -> ExecState {
    ExecDriver::state_of(h).expect("exec state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runner_restarts_real_processes_and_stops_them() {
    let Some(cg) = cgroups_or_skip("task_runner_restarts_real_processes_and_stops_them") else {
        return;
    };
    // Exits 1 twice (counted in a file), then stays up.
    let script = r#"
echo run >> runs.txt
[ "$(wc -l < runs.txt)" -ge 3 ] && exec sleep 300
exit 1
"#;
    let f = fixture(&["sh", "-c", script], small());
    let driver = Arc::new(ExecDriver::new(cg.clone()));
    let sink = Arc::new(MemorySink::new());
    let cancel = CancellationToken::new();
    let policy = RestartPolicy {
        attempts: 3,
        interval: Millis::from_secs(60),
        delay: Millis(100),
        mode: RestartMode::Fail,
    };
    let runner = TaskRunner::new(
        driver.clone(),
        f.ctx.clone(),
        policy,
        sink.clone(),
        cancel.clone(),
    );
    let mut rx = runner.subscribe();
    let run = tokio::spawn(runner.run());
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| s.state == TaskLifecycle::Running && s.restarts == 2),
    )
    .await
    .expect("in time")
    .expect("running after 2 restarts");
    let s = rx.borrow().clone();
    assert_eq!(s.exit_code, Some(1));
    let h = sink.current().expect("persisted handle");
    let st = state(&h);
    assert!(st.main_alive());

    cancel.cancel();
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("stops in time")
        .expect("join");
    assert_eq!(outcome, TaskOutcome::Stopped);
    let s = rx.borrow().clone();
    assert_eq!(s.state, TaskLifecycle::Dead);
    assert_eq!(s.restarts, 2);
    assert_dead(st.pid);
    assert_no_cgroup(cg.as_ref(), &st.cgroup);
    assert_eq!(sink.current(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runner_gives_up_on_a_missing_binary() {
    let Some(cg) = cgroups_or_skip("task_runner_gives_up_on_a_missing_binary") else {
        return;
    };
    let f = fixture(&["/nonexistent/corral-test-binary"], small());
    let driver = Arc::new(ExecDriver::new(cg.clone()));
    let policy = RestartPolicy {
        attempts: 1,
        interval: Millis::from_secs(60),
        delay: Millis(10),
        mode: RestartMode::Fail,
    };
    let runner = TaskRunner::new(
        driver,
        f.ctx.clone(),
        policy,
        Arc::new(MemorySink::new()),
        CancellationToken::new(),
    );
    let rx = runner.subscribe();
    let TaskOutcome::Failed { reason } = runner.run().await else {
        panic!("expected failure");
    };
    assert!(reason.contains("failed to start"), "{reason}");
    assert!(
        reason.contains("cannot start \"/nonexistent/corral-test-binary\""),
        "{reason}"
    );
    let s = rx.borrow().clone();
    assert_eq!(s.state, TaskLifecycle::Dead);
    assert_eq!(s.restarts, 1);
    assert_no_cgroup(cg.as_ref(), &cgroup_name(&f.ctx.alloc.alloc_id, "app"));
}
