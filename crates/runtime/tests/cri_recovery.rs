//! The `container` driver when things die under it (issue 13), against a
//! real private containerd (root only): a pause process killed, a
//! container that exited while the agent was away, the attempt number
//! across runs, a task's containers removed without a handle, a start
//! dropped half-way.

#![allow(clippy::unwrap_used)]

mod cri_support;

use std::time::{Duration, Instant};

use corral_runtime::driver::cri::CriDriver;
use corral_runtime::driver::cri::container::{ContainerParams, container_config};
use corral_runtime::driver::cri::pod::PodOptions;
use corral_runtime::driver::cri::sandbox::{LABEL_ALLOC, LABEL_TASK, sandbox_config};
use corral_runtime::driver::{Driver, TaskHandle};
use corral_types::units::{Bytes, MilliCpu};
use corral_types::{PullPolicy, Resources};
use cri_support::*;
use k8s_cri::v1 as cri;

const PATIENCE: Duration = Duration::from_secs(30);

fn sandbox_of(h: &TaskHandle) -> String {
    CriDriver::state_of(h).unwrap().sandbox_id
}

fn container_of(h: &TaskHandle) -> String {
    CriDriver::state_of(h).unwrap().container_id
}

/// The attempt number in the container's own CRI metadata.
async fn metadata_attempt(env: &Env, h: &TaskHandle) -> u32 {
    let st = env
        .driver
        .client()
        .container_status(&container_of(h))
        .await
        .unwrap();
    st.metadata.unwrap().attempt
}

/// Containers the runtime lists for the allocation's task.
async fn task_containers(env: &Env, alloc: &str, task: &str) -> Vec<cri::Container> {
    env.driver
        .client()
        .list_containers(cri::ContainerFilter {
            label_selector: [
                (LABEL_ALLOC.to_string(), alloc.to_string()),
                (LABEL_TASK.to_string(), task.to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Issue 13, case 14: every run of a task gets the next attempt number,
/// although the runner removes each run's container before the next one
/// starts (it was always 0), and a restarted agent goes on counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_count_the_runs_of_a_task() {
    if !can_run() {
        return;
    }
    let env = Env::start("attempt").await;
    let alloc = env.alloc("attempt1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let ctx = task_ctx(&alloc, task("app", "exit 1"));
    let mut seen = vec![];
    for _ in 0..2 {
        let h = env.driver.start(&ctx).await.unwrap();
        env.driver.wait(&h).await.unwrap();
        seen.push((
            CriDriver::state_of(&h).unwrap().attempt,
            metadata_attempt(&env, &h).await,
        ));
        // As the task runner does before the next run.
        env.driver.destroy(&h).await.unwrap();
    }
    assert_eq!(seen, vec![(0, 0), (1, 1)]);

    // A restarted agent recovers the last run's handle and counts on.
    let h = env.driver.start(&ctx).await.unwrap();
    let fresh = env.fresh_driver().await;
    assert!(fresh.recover(&h).await.unwrap());
    fresh.wait(&h).await.unwrap();
    fresh.destroy(&h).await.unwrap();
    let h = fresh.start(&ctx).await.unwrap();
    assert_eq!(CriDriver::state_of(&h).unwrap().attempt, 3);
    assert_eq!(metadata_attempt(&env, &h).await, 3);
    fresh.wait(&h).await.unwrap();
    fresh.destroy(&h).await.unwrap();
    fresh.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// Issue 13, case 11: a container that exited while the agent was away is
/// recovered with its exit code and OOM flag, answered by `wait` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_answers_the_exit_of_a_container_that_exited_while_away() {
    if !can_run() {
        return;
    }
    let env = Env::start("away").await;
    let alloc = env.alloc("away1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let code = env
        .driver
        .start(&task_ctx(&alloc, task("code", "exit 5")))
        .await
        .unwrap();
    let mut hog = task(
        "hog",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    hog.resources = Resources {
        disk: Default::default(),
        cpu: MilliCpu(500),
        memory: Bytes(24 << 20),
    };
    let hog = env.driver.start(&task_ctx(&alloc, hog)).await.unwrap();
    // The agent is away while both end.
    env.wait_exited(&container_of(&code)).await;
    env.wait_exited(&container_of(&hog)).await;

    let fresh = env.fresh_driver().await;
    assert!(fresh.recover(&code).await.unwrap(), "exited, status known");
    assert!(fresh.recover(&hog).await.unwrap(), "exited, status known");
    let exit = tokio::time::timeout(Duration::from_millis(100), fresh.wait(&code))
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(exit.exit_code, Some(5), "{exit:?}");
    assert_eq!(exit.message, "exited with code 5");
    let exit = tokio::time::timeout(Duration::from_millis(100), fresh.wait(&hog))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, Some(137), "{exit:?}");

    // Destroyed: nothing to recover any more.
    for h in [&code, &hog] {
        fresh.destroy(h).await.unwrap();
        assert!(!fresh.recover(h).await.unwrap());
    }
    fresh.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// Issue 13, case 8: a sandbox whose pause process died is noticed at the
/// next start, removed and replaced (with its network); what ran in it
/// ends with it and its runner learns how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sandbox_is_replaced_at_the_next_start() {
    if !can_run() {
        return;
    }
    let env = Env::start("deadpod").await;
    let alloc = env.alloc("deadpod1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let long = env
        .driver
        .start(&task_ctx(&alloc, task("long", "sleep 1000")))
        .await
        .unwrap();
    let old = sandbox_of(&long);
    env.kill_pause(&old).await;

    // The next start of any task of the allocation gets a new sandbox.
    let t = Instant::now();
    let h = env
        .driver
        .start(&task_ctx(
            &alloc,
            task("next", "ip -4 -o addr show eth0; sleep 1000"),
        ))
        .await
        .unwrap();
    eprintln!(
        "[deadpod] start with a new sandbox: {} ms",
        t.elapsed().as_millis()
    );
    let new = sandbox_of(&h);
    assert_ne!(new, old);
    let sandboxes = env
        .driver
        .client()
        .list_pod_sandbox(Default::default())
        .await
        .unwrap();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(sandboxes[0].id, new);
    assert_eq!(
        sandboxes[0].state,
        cri::PodSandboxState::SandboxReady as i32
    );
    // Its network: an address of the pod subnet, one veth on the bridge.
    let ip = env.driver.task_ip(&h).await.unwrap().expect("a pod IP");
    let subnet = env.containerd.config().subnet.clone();
    let prefix = subnet.rsplit_once('.').map(|(n, _)| n).unwrap();
    assert!(ip.to_string().starts_with(prefix), "{ip} not in {subnet}");
    assert_eq!(env.bridge_ports(), 1);
    assert_eq!(env.netns_left().len(), 1, "{:?}", env.netns_left());

    // The task of the dead sandbox ended with it, and its runner knows.
    let exit = tokio::time::timeout(Duration::from_secs(2), env.driver.wait(&long))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, Some(137), "{exit:?}");

    env.driver.stop(&h, Duration::from_secs(1)).await.unwrap();
    env.driver.destroy(&h).await.unwrap();
    env.driver.destroy(&long).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// Issue 13, case 8 (b): after an agent restart, `prepare_alloc` adopts a
/// ready sandbox, and replaces a dead one; a container that exited in the
/// dead one is still recovered with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_after_a_restart_adopts_a_ready_sandbox_or_replaces_a_dead_one() {
    if !can_run() {
        return;
    }
    let env = Env::start("reprep").await;
    let alloc = env.alloc("reprep1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let done = env
        .driver
        .start(&task_ctx(&alloc, task("done", "exit 3")))
        .await
        .unwrap();
    env.wait_exited(&container_of(&done)).await;
    let first = sandbox_of(&done);

    // A restarted agent prepares again: the same, ready sandbox.
    let fresh = env.fresh_driver().await;
    fresh.prepare_alloc(&alloc).await.unwrap();
    let listed = fresh.list_node_sandboxes(&env.node_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, first);

    // The pause process dies while the agent is away again.
    env.kill_pause(&first).await;
    let fresh = env.fresh_driver().await;
    fresh.prepare_alloc(&alloc).await.unwrap();
    let listed = fresh.list_node_sandboxes(&env.node_id).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0].id, first);
    assert!(listed[0].ready);
    // The exited container went with the dead sandbox; its exit did not.
    assert!(fresh.recover(&done).await.unwrap());
    let exit = tokio::time::timeout(Duration::from_millis(100), fresh.wait(&done))
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(exit.exit_code, Some(3), "{exit:?}");
    fresh.destroy(&done).await.unwrap();
    fresh.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// `clear_task` removes every container of the task, with or without a
/// handle (a created-but-not-started one included), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_task_removes_the_task_containers_without_a_handle() {
    if !can_run() {
        return;
    }
    let env = Env::start("clear").await;
    let alloc = env.alloc("clear1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let ctx = task_ctx(&alloc, task("app", "sleep 1000"));
    env.driver.start(&ctx).await.unwrap();
    let other = env
        .driver
        .start(&task_ctx(
            &alloc,
            task("other", "trap 'exit 0' TERM; sleep 1000 & wait"),
        ))
        .await
        .unwrap();
    // What a start interrupted after CreateContainer leaves: a container
    // of the task that never ran, and no handle anywhere.
    let sandbox_config = sandbox_config(&alloc, &PodOptions::default()).unwrap();
    let config = container_config(&ContainerParams {
        ctx: &ctx,
        image: IMAGE,
        attempt: 7,
        network_host: false,
        limit_swap: false,
    })
    .unwrap();
    env.driver
        .client()
        .create_container(&sandbox_of(&other), config, sandbox_config)
        .await
        .unwrap();
    assert_eq!(task_containers(&env, "clear1", "app").await.len(), 2);

    // A restarted agent, without the handle.
    let fresh = env.fresh_driver().await;
    fresh.clear_task(&alloc, "app").await.unwrap();
    assert!(task_containers(&env, "clear1", "app").await.is_empty());
    // Idempotent, and the other task runs on.
    fresh.clear_task(&alloc, "app").await.unwrap();
    fresh.clear_task(&alloc, "never-started").await.unwrap();
    assert_eq!(
        env.container_state(&container_of(&other)).await,
        Some(cri::ContainerState::ContainerRunning)
    );
    env.driver
        .stop(&other, Duration::from_secs(2))
        .await
        .unwrap();
    env.driver.destroy(&other).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// Issue 13, case 9 (the driver's part): a start dropped at any point
/// (here: after 0 to 400 ms, and during a pull from a registry that never
/// answers) leaves nothing `clear_task` and `cleanup_alloc` do not
/// remove, and the dropped pull does not hold containerd up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_dropped_half_way_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let env = Env::start("dropped").await;
    let alloc = env.alloc("dropped1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let ctx = task_ctx(&alloc, task("app", "sleep 1000"));
    for ms in [0u64, 5, 10, 20, 40, 80, 150, 400] {
        let r = tokio::time::timeout(Duration::from_millis(ms), env.driver.start(&ctx)).await;
        if let Ok(h) = r {
            // Started in time: it is the caller's, as any other.
            let h = h.unwrap();
            env.driver.stop(&h, Duration::from_secs(1)).await.unwrap();
            env.driver.destroy(&h).await.unwrap();
        }
        env.driver.clear_task(&alloc, "app").await.unwrap();
        let left = task_containers(&env, "dropped1", "app").await;
        assert!(left.is_empty(), "after {ms} ms: {left:?}");
    }

    // A registry that accepts connections and never answers.
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registry.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = registry.accept().await {
            let _ = accepted_tx.send(s);
        }
    });
    let mut spec = task("pulled", "exit 0");
    spec.image = Some(format!("127.0.0.1:{port}/never/answers:1"));
    spec.pull_policy = PullPolicy::Always;
    let ctx = task_ctx(&alloc, spec);
    let mut start = Box::pin(env.driver.start(&ctx));
    let mut conn = tokio::select! {
        r = &mut start => panic!("the pull ended: {:?}", r.map(|h| h.id)),
        c = accepted.recv() => c.unwrap(),
    };
    // The pull hangs on the registry; dropping the start ends it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(start);
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "containerd kept pulling after the drop");
    let t = Instant::now();
    env.driver.clear_task(&alloc, "pulled").await.unwrap();
    let cleared = t.elapsed();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    eprintln!(
        "[dropped] clear_task {} ms, cleanup_alloc {} ms",
        cleared.as_millis(),
        (t.elapsed() - cleared).as_millis()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    env.finish().await;
}

/// Issue 13, case 13: a sandbox whose network teardown was cut short (the
/// runtime's retry then skips the masquerade chain) loses what is left
/// when the driver removes it; another pod's rules stay. First with the
/// leftovers put back as such a stop leaves them, then with real
/// StopPodSandbox calls cut short at various points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_network_teardown_is_finished_on_removal() {
    if !can_run() {
        return;
    }
    let env = Env::start("teardown").await;
    let chains_before = cni_nat_rules().iter().any(|r| r.contains("CNI-HOSTPORT"));
    let live = env.alloc("live1", &[("web.http", free_port())]);
    env.driver.prepare_alloc(&live).await.unwrap();
    let live_id = env.driver.list_node_sandboxes(&env.node_id).await.unwrap()[0]
        .id
        .clone();
    let live_rules = cni_nat_of(&live_id);
    assert!(!live_rules.is_empty());

    let cut = env.alloc("cut1", &[("web.http", free_port())]);
    let id = env
        .driver
        .prepare_pod(&cut, &PodOptions::default())
        .await
        .unwrap();
    let leftovers = cni_nat_of(&id);
    assert!(
        leftovers.iter().any(|l| l.contains("MASQUERADE"))
            && leftovers.iter().any(|l| l.contains("DNAT")),
        "{leftovers:?}"
    );
    // The stop went through (the sandbox is still listed, not ready), but
    // its rules are back as a cut-short teardown leaves them.
    env.driver.client().stop_pod_sandbox(&id).await.unwrap();
    assert!(cni_nat_of(&id).is_empty());
    restore_nat(&leftovers);
    env.driver.cleanup_alloc(&cut).await.unwrap();
    assert!(cni_nat_of(&id).is_empty(), "{:?}", cni_nat_of(&id));
    assert_eq!(cni_nat_of(&live_id), live_rules);

    // Real stops cut short: whatever each leaves, the removal finishes.
    for ms in [100u64, 150, 200, 250, 300, 400] {
        let a = env.alloc(&format!("cut{ms}"), &[("web.http", free_port())]);
        let id = env
            .driver
            .prepare_pod(&a, &PodOptions::default())
            .await
            .unwrap();
        let short = env
            .driver
            .client()
            .clone()
            .with_timeout(Duration::from_millis(ms));
        let _ = short.stop_pod_sandbox(&id).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_cut = cni_nat_of(&id).len();
        env.driver.cleanup_alloc(&a).await.unwrap();
        let left = cni_nat_of(&id);
        eprintln!(
            "[teardown] stop cut at {ms} ms left {after_cut} nat lines; after removal: {}",
            left.len()
        );
        assert!(left.is_empty(), "cut at {ms} ms: {left:?}");
    }
    assert_eq!(cni_nat_of(&live_id), live_rules);
    env.driver.cleanup_alloc(&live).await.unwrap();
    if !chains_before {
        remove_portmap_chains();
    }
    env.finish().await;
}
