//! The exec driver against real processes and real cgroups. These tests
//! need root and usable cgroups; elsewhere they are skipped with a message
//! (set `CORRAL_REQUIRE_ROOT_TESTS=1` to make a skip a failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::cgroup::{
    self, CgroupLimits, CgroupV1, CgroupV2, CgroupVersion, Cgroups, cgroup_name, join_on_exec,
    procfs,
};
use corral_runtime::driver::exec::{DEFAULT_PATH, ExecDriver, ExecState};
use corral_runtime::driver::{AllocContext, Driver, DriverError, TaskContext, TaskHandle};
use corral_runtime::logs::{
    self,
    read::{Query, Streams},
};
use corral_types::units::{Bytes, MilliCpu, Millis};
use corral_types::{DriverKind, PullPolicy, Resources, SecuritySpec, TaskSpec};

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

/// One stream of the task's log, as `corral logs` reads it.
async fn read_log(ctx: &TaskContext, streams: Streams) -> String {
    let q = Query {
        streams,
        ..Query::default()
    };
    let mut rx = logs::read::stream(&ctx.alloc.alloc_dir, &ctx.task.name, &q, Arc::new(|| true))
        .expect("log");
    let mut out = Vec::new();
    while let Some(c) = rx.recv().await {
        out.extend(c.expect("chunk"));
    }
    String::from_utf8(out).expect("utf-8")
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

async fn wait_for_file(p: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(p)
            && s.ends_with('\n')
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_exit(d: &ExecDriver, h: &TaskHandle) -> corral_runtime::driver::ExitResult {
    tokio::time::timeout(WAIT, d.wait(h))
        .await
        .expect("task exits in time")
        .expect("wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_workdir_and_logs_and_exit_code() {
    let Some(cg) = cgroups_or_skip("env_workdir_and_logs_and_exit_code") else {
        return;
    };
    let mut f = fixture(
        &[
            "sh",
            "-c",
            "echo foo=$FOO; echo home=${HOME-unset}; echo path=$PATH; pwd; echo oops >&2; exit 3",
        ],
        small(),
    );
    f.ctx.env.insert("FOO".into(), "bar baz".into());
    f.ctx.task.workdir = Some("sub".into());
    std::fs::create_dir_all(f.ctx.task_dir.join("sub")).expect("workdir");
    // The log is appended to, not truncated.
    let log = logs::log_file(&f.ctx.alloc.alloc_dir, "app");
    std::fs::create_dir_all(log.parent().expect("parent")).expect("logs");
    std::fs::write(&log, "2026-01-01T00:00:00Z stdout F earlier\n").expect("write");

    let d = ExecDriver::new(cg.clone());
    d.fingerprint().await.expect("fingerprint");
    let h = d.start(&f.ctx).await.expect("start");
    let exit = wait_exit(&d, &h).await;
    assert_eq!(exit.exit_code, Some(3));
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert_eq!(exit.message, "exited with code 3");
    // wait is repeatable.
    assert_eq!(wait_exit(&d, &h).await, exit);

    let out = read_log(&f.ctx, Streams::Stdout).await;
    let workdir = f.ctx.task_dir.join("sub");
    assert_eq!(
        out,
        format!(
            "earlier\nfoo=bar baz\nhome=unset\npath={DEFAULT_PATH}\n{}\n",
            workdir.display()
        )
    );
    let err = read_log(&f.ctx, Streams::Stderr).await;
    assert_eq!(err, "oops\n");

    d.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &state(&h).cgroup);
    // destroy is idempotent.
    d.destroy(&h).await.expect("destroy again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_applied_before_the_task_runs() {
    let Some(cg) = cgroups_or_skip("limits_are_applied_before_the_task_runs") else {
        return;
    };
    // The first thing the shell does is read its own cgroups.
    let f = fixture(
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup > cgroups.txt; exec sleep 300",
        ],
        small(),
    );
    let d = ExecDriver::new(cg.clone());
    let h = d.start(&f.ctx).await.expect("start");
    let st = state(&h);
    assert_eq!(st.cgroup, cgroup_name(&f.ctx.alloc.alloc_id, "app"));
    assert_eq!(st.pgid, st.pid);
    assert_eq!(procfs::read_stat(st.pid).expect("stat").pgrp, st.pid);

    let seen = wait_for_file(&f.ctx.task_dir.join("cgroups.txt")).await;
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    match cg.version() {
        CgroupVersion::V1 => {
            let v1 = CgroupV1::detect(cgroup::DEFAULT_PARENT).expect("v1");
            for c in ["memory", "cpu", "pids", "freezer"] {
                let line = seen
                    .lines()
                    .find(|l| {
                        l.split(':')
                            .nth(1)
                            .is_some_and(|cs| cs.split(',').any(|x| x == c))
                    })
                    .unwrap_or_else(|| panic!("no {c} line in {seen}"));
                assert!(
                    line.ends_with(&format!("/corral/{}", st.cgroup)),
                    "{c}: {line}"
                );
            }
            let cpu = v1.dir("cpu", &st.cgroup).expect("cpu");
            let mem = v1.dir("memory", &st.cgroup).expect("memory");
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(cpu.join("cpu.shares")), "256");
            assert_eq!(
                read(mem.join("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(memsw), (64u64 << 20).to_string());
            }
        }
        CgroupVersion::V2 => {
            let dir = cgroup_dirs(cg.as_ref(), &st.cgroup).remove(0);
            assert!(seen.contains(&format!("/corral/{}", st.cgroup)), "{seen}");
            assert_eq!(read(dir.join("cpu.max")), "25000 100000");
            assert_eq!(read(dir.join("memory.max")), (64u64 << 20).to_string());
        }
    }
    assert_eq!(cg.pids(&st.cgroup).expect("pids"), vec![st.pid]);
    let stats = d.stats(&h).await.expect("stats");
    assert!(stats.memory_bytes > 0);

    let t0 = Instant::now();
    d.stop(&h, Duration::from_secs(5)).await.expect("stop");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "sleep dies of sigterm at once"
    );
    let exit = wait_exit(&d, &h).await;
    assert_eq!(exit.signal, Some(15));
    assert_eq!(exit.exit_code, None);
    d.destroy(&h).await.expect("destroy");
    assert_dead(st.pid);
    assert_no_cgroup(cg.as_ref(), &st.cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_holds_and_oom_kill_is_reported() {
    let Some(cg) = cgroups_or_skip("memory_limit_holds_and_oom_kill_is_reported") else {
        return;
    };
    // The shell keeps ~200 MB of 'a' in memory: far past 32 MiB.
    let f = fixture(
        &[
            "sh",
            "-c",
            r#"x=$(head -c 200000000 /dev/zero | tr "\0" a); echo done ${#x}"#,
        ],
        Resources {
            disk: Default::default(),
            cpu: MilliCpu(1000),
            memory: Bytes(32 << 20),
        },
    );
    let d = ExecDriver::new(cg.clone());
    let h = d.start(&f.ctx).await.expect("start");
    let exit = wait_exit(&d, &h).await;
    assert!(exit.oom_killed, "{exit:?}");
    assert!(!exit.success());
    assert!(exit.message.starts_with("oom killed"), "{}", exit.message);
    let out = read_log(&f.ctx, Streams::Stdout).await;
    assert!(!out.contains("done"), "the allocation succeeded: {out}");
    d.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &state(&h).cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_kills_what_ignores_it() {
    let Some(cg) = cgroups_or_skip("stop_sends_sigterm_then_kills_what_ignores_it") else {
        return;
    };
    let script = r#"
trap 'echo term > term.marker; exit 0' TERM
sh -c 'trap "" TERM; exec sleep 1000' &
echo $! > child.pid
setsid sleep 1000 &
echo $! > escaped.pid
echo ready > ready.marker
wait
"#;
    let f = fixture(&["sh", "-c", script], small());
    let d = ExecDriver::new(cg.clone());
    let h = d.start(&f.ctx).await.expect("start");
    let st = state(&h);
    wait_for_file(&f.ctx.task_dir.join("ready.marker")).await;
    let pid_of = |name: &str| -> i32 {
        std::fs::read_to_string(f.ctx.task_dir.join(name))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    };
    let child = pid_of("child.pid");
    let escaped = pid_of("escaped.pid");
    let mut pids = cg.pids(&st.cgroup).expect("pids");
    pids.sort_unstable();
    let mut expected = vec![st.pid, child, escaped];
    expected.sort_unstable();
    assert_eq!(pids, expected);

    let t0 = Instant::now();
    d.stop(&h, Duration::from_millis(1500)).await.expect("stop");
    let took = t0.elapsed();
    // The child ignores TERM: stop had to wait out the timeout, then kill.
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        std::fs::read_to_string(f.ctx.task_dir.join("term.marker")).expect("trap ran"),
        "term\n"
    );
    let exit = wait_exit(&d, &h).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    for pid in [st.pid, child, escaped] {
        assert_dead(pid);
    }
    assert!(cg.pids(&st.cgroup).expect("pids").is_empty());
    d.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &st.cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_kills_every_process_of_the_cgroup() {
    let Some(cg) = cgroups_or_skip("destroy_kills_every_process_of_the_cgroup") else {
        return;
    };
    let script = r#"
i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done
setsid sh -c 'while true; do sleep 1000 & sleep 0.05; done' &
echo ready > ready.marker
wait
"#;
    let f = fixture(&["sh", "-c", script], small());
    let d = ExecDriver::new(cg.clone());
    let h = d.start(&f.ctx).await.expect("start");
    let st = state(&h);
    wait_for_file(&f.ctx.task_dir.join("ready.marker")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cg.pids(&st.cgroup).expect("pids");
    assert!(before.len() > 40, "{before:?}");
    d.destroy(&h).await.expect("destroy");
    for pid in before {
        assert_dead(pid);
    }
    assert_no_cgroup(cg.as_ref(), &st.cgroup);
    // wait still answers through the monitor? No: destroy forgets the task.
    assert!(matches!(
        d.wait(&h).await,
        Err(DriverError::UnknownHandle { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reattaches_from_a_persisted_handle() {
    let Some(cg) = cgroups_or_skip("recover_reattaches_from_a_persisted_handle") else {
        return;
    };
    let f = fixture(&["sleep", "300"], small());
    let first = ExecDriver::new(cg.clone());
    let h = first.start(&f.ctx).await.expect("start");
    let persisted = serde_json::to_string(&h).expect("json");
    drop(first);

    // A new agent process: a new driver, the handle from disk.
    let h: TaskHandle = serde_json::from_str(&persisted).expect("parse");
    let st = state(&h);
    let second = Arc::new(ExecDriver::new(
        cgroup::detect(cgroup::DEFAULT_PARENT).expect("cgroups"),
    ));

    // A handle whose start time does not match is a reused pid: not ours.
    let mut reused = h.clone();
    reused.id = "other".into();
    reused.state["start_time"] = serde_json::json!(st.start_time + 1);
    assert!(!second.recover(&reused).await.expect("recover"));

    assert!(second.recover(&h).await.expect("recover"));
    // Recovering twice is harmless.
    assert!(second.recover(&h).await.expect("recover again"));
    let waiter = {
        let (d, h) = (second.clone(), h.clone());
        tokio::spawn(async move { d.wait(&h).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the task still runs");

    second.stop(&h, Duration::from_secs(5)).await.expect("stop");
    let exit = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("wait ends after the stop")
        .expect("join")
        .expect("wait");
    // The exit status is known only when this process could reap it.
    assert!(!exit.oom_killed);
    assert!(
        exit.signal == Some(15) || exit.exit_code.is_none(),
        "{exit:?}"
    );
    assert_dead(st.pid);
    second.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &st.cgroup);
    // Gone for good: nothing to recover.
    assert!(!second.recover(&h).await.expect("recover after exit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_fails_to_start_and_leaves_nothing() {
    let Some(cg) = cgroups_or_skip("missing_binary_fails_to_start_and_leaves_nothing") else {
        return;
    };
    let f = fixture(&["/nonexistent/corral-test-binary", "x"], small());
    let d = ExecDriver::new(cg.clone());
    let err = d.start(&f.ctx).await.expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "task app of alloc {}: cannot start \"/nonexistent/corral-test-binary\"",
            f.ctx.alloc.alloc_id
        )),
        "{msg}"
    );
    assert_no_cgroup(cg.as_ref(), &cgroup_name(&f.ctx.alloc.alloc_id, "app"));

    let mut f = fixture(&[], small());
    f.ctx.task.command.clear();
    assert!(matches!(
        d.start(&f.ctx).await,
        Err(DriverError::InvalidTask { .. })
    ));
}

/// The v2 code on the hybrid machine's unified hierarchy (which has no
/// controllers: only placement, listing, killing and removal are real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_v2_placement_kill_and_removal() {
    let Some(_) = cgroups_or_skip("cgroup_v2_placement_kill_and_removal") else {
        return;
    };
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|r| Path::new(r).join("cgroup.controllers").exists());
    let Some(root) = root else {
        eprintln!("SKIPPED cgroup_v2_placement_kill_and_removal: no cgroup2 mount");
        return;
    };
    let v2 = CgroupV2::new(root, "corral-test").expect("v2");
    v2.check().expect("check");
    let name = format!("v2test{}", std::process::id());
    let has_memory = std::fs::read_to_string(Path::new(root).join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "memory");
    if !has_memory {
        // A limit that cannot be applied is refused, not ignored.
        let err = v2
            .create(
                &name,
                &CgroupLimits {
                    cpu_millis: 0,
                    memory_bytes: 1 << 30,
                },
            )
            .expect_err("no memory controller");
        assert!(
            err.to_string().contains("memory controller is not enabled"),
            "{err}"
        );
        assert!(!v2.exists(&name));
    }
    v2.create(&name, &CgroupLimits::default()).expect("create");
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "sleep 1000 & sleep 1000 & wait"]);
    join_on_exec(&mut cmd, v2.open_procs(&name).expect("open"));
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id().expect("pid") as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while v2.pids(&name).expect("pids").len() < 3 {
        assert!(Instant::now() < deadline, "children never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(v2.pids(&name).expect("pids").contains(&pid));
    assert!(!v2.oom_killed(&name).expect("oom"));
    let v = v2.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || v.kill_all(&n, Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("kill_all");
    let status = child.wait().await.expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    v2.remove(&name).expect("remove");
    assert!(!v2.exists(&name));
    let _ = std::fs::remove_dir(v2.parent_dir());
}

/// Recover a task this process is not the parent of (as after a real agent
/// restart): the exit is seen by polling, and its code is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_a_task_that_is_not_our_child() {
    let Some(cg) = cgroups_or_skip("recover_a_task_that_is_not_our_child") else {
        return;
    };
    let f = fixture(&["unused"], small());
    let name = cgroup_name(&f.ctx.alloc.alloc_id, "app");
    cg.create(&name, &CgroupLimits::from_resources(&small()))
        .expect("create");
    // The shell starts sleep in the background and exits: sleep is then
    // an orphan, adopted by PID 1.
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
        .stdout(std::process::Stdio::piped())
        .process_group(0);
    join_on_exec(&mut cmd, cg.open_procs(&name).expect("open"));
    let out = cmd.output().await.expect("run sh");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let stat = procfs::read_stat(pid).expect("stat");
    assert_ne!(stat.ppid, std::process::id() as i32);
    let h = TaskHandle {
        driver: DriverKind::Exec,
        task: "app".into(),
        alloc_id: f.ctx.alloc.alloc_id.clone(),
        id: format!("{name}.{pid}"),
        started_at_ms: 0,
        state: serde_json::to_value(ExecState {
            pid,
            start_time: stat.start_time,
            pgid: stat.pgrp,
            cgroup: name.clone(),
            logs: None,
        })
        .expect("json"),
    };
    let d = Arc::new(ExecDriver::new(cg.clone()));
    assert!(d.recover(&h).await.expect("recover"));
    let waiter = {
        let (d, h) = (d.clone(), h.clone());
        tokio::spawn(async move { d.wait(&h).await })
    };
    d.stop(&h, Duration::from_secs(5)).await.expect("stop");
    let exit = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("wait ends after the stop")
        .expect("join")
        .expect("wait");
    assert_eq!(exit.exit_code, None);
    assert_eq!(exit.signal, None);
    assert!(
        exit.message.contains("exit code unknown"),
        "{}",
        exit.message
    );
    assert_dead(pid);
    d.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &name);
}

/// `exec` (health checks): a command in the task's cgroup, with the task's
/// environment and working directory; its exit code and output; killed at
/// the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_a_command_inside_the_task() {
    let Some(cg) = cgroups_or_skip("exec_runs_a_command_inside_the_task") else {
        return;
    };
    let mut f = fixture(&["sh", "-c", "while true; do sleep 1; done"], small());
    f.ctx.env.insert("FOO".into(), "from the task".into());
    let d = ExecDriver::new(cg.clone());
    let h = d.start(&f.ctx).await.expect("start");
    let name = state(&h).cgroup;
    let cmd = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];

    let out = d
        .exec(
            &h,
            &cmd("echo \"$FOO\"; pwd; cat /proc/self/cgroup; echo err >&2"),
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(lines[0], "from the task");
    assert_eq!(lines[1], f.ctx.task_dir.display().to_string());
    assert!(
        lines.iter().any(|l| l.ends_with(&format!("/{name}"))),
        "not in the task's cgroup: {}",
        out.output
    );
    assert_eq!(lines.last(), Some(&"err"));

    let out = d
        .exec(&h, &cmd("echo down; exit 7"), Duration::from_secs(5))
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.output.as_str()), (7, "down"));

    let t0 = Instant::now();
    let e = d
        .exec(&h, &cmd("sleep 30 & sleep 30"), Duration::from_millis(300))
        .await
        .expect_err("times out");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
    // Nothing of the command is left in the task's cgroup: only the task's
    // shell and its sleep.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cg.pids(&name).expect("pids");
        if pids.len() <= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "left in the cgroup: {pids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let missing = d
        .exec(&h, &["/no/such/check".to_string()], Duration::from_secs(1))
        .await
        .expect_err("no such program");
    assert!(matches!(missing, DriverError::Spawn { .. }), "{missing:?}");
    d.stop(&h, Duration::from_secs(1)).await.expect("stop");
    d.destroy(&h).await.expect("destroy");
    assert_no_cgroup(cg.as_ref(), &name);
}
