//! Nodes that die: real `corral server` and `corral agent` processes, each
//! agent in its own network namespace (see `corral_testkit::netns`), and
//! the faults a cluster meets: a host crash, a partition longer and
//! shorter than the heartbeat grace, an agent killed again and again, the
//! server killed during a burst of submissions; and placement constraints
//! across real nodes.
//!
//! Every test ends with the same two checks: nothing acknowledged is lost
//! (every submitted job is still there) and no allocation index runs twice
//! at rest, neither per the server nor among the processes on the machine.
//!
//! Needs root (namespaces, cgroups, iptables); skipped otherwise, a failure
//! with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_testkit::eventually;
use corral_testkit::netns::{self, Cluster};
use corral_types::api::{AllocView, JobView};
use corral_types::{ClientStatus, DesiredStatus, TaskLifecycle};

/// For things that take a second or two.
const D: Duration = Duration::from_secs(30);
/// For what waits on failure detection: generous, the goals are printed.
const BIG: Duration = Duration::from_secs(60);

/// A job of `count` shell loops; each start of a task appends its
/// allocation id to the cluster's start log (see [`starts`]).
fn exec_job(cl: &Cluster, name: &str, count: u32, extra: &str) -> String {
    let log = cl.dir().join("starts");
    format!(
        "name: {name}
driver: exec
command: [/bin/sh, -c, 'echo $CORRAL_ALLOC_ID >> {}; while true; do sleep 1; done', {name}-task]
count: {count}
resources: {{cpu: 20m, memory: 16M}}
kill_timeout: 1s
{extra}",
        log.display()
    )
}

/// How many times each allocation's task started.
fn starts(cl: &Cluster) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(cl.dir().join("starts")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for id in text.lines().filter(|l| !l.is_empty()) {
        *out.entry(id.to_string()).or_default() += 1;
    }
    out
}

/// Waits until `n` allocations wrote their start line: a task process
/// shows before its first command ran, and a host killed in between
/// would leave a start unrecorded.
async fn wait_started(cl: &Cluster, n: usize) {
    eventually(&format!("{n} starts recorded"), D, || async {
        let s = starts(cl);
        if s.len() >= n {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

async fn job(c: &Client, name: &str) -> Result<JobView, String> {
    c.job(name, None).await.map_err(|e| e.to_string())
}

/// Allocations that run and should.
fn live(j: &JobView) -> Vec<&AllocView> {
    j.allocations
        .iter()
        .filter(|a| {
            a.desired == DesiredStatus::Run
                && a.status == ClientStatus::Running
                && a.tasks.values().all(|t| t.state == TaskLifecycle::Running)
        })
        .collect()
}

fn summary(j: &JobView) -> String {
    let mut s: Vec<String> = j
        .allocations
        .iter()
        .map(|a| {
            format!(
                "{}[{}] {} {:?}/{:?} on {}",
                a.group,
                a.index,
                &a.id[..8.min(a.id.len())],
                a.status,
                a.desired,
                a.node
            )
        })
        .collect();
    s.sort();
    s.join(", ")
}

/// Waits until exactly `n` allocations of `name` run and nothing else of
/// it is pending or stopping.
async fn wait_running(c: &Client, name: &str, n: usize, deadline: Duration) -> JobView {
    eventually(&format!("{n} of {name} running"), deadline, || async {
        let j = job(c, name).await?;
        let unsettled = j
            .allocations
            .iter()
            .any(|a| !a.status.is_terminal() && a.status != ClientStatus::Running);
        if live(&j).len() == n && !unsettled {
            Ok(j)
        } else {
            Err(summary(&j))
        }
    })
    .await
}

/// Waits until `n` task processes of `job` live on the machine.
async fn wait_procs(cl: &Cluster, job: &str, n: usize) {
    eventually(&format!("{n} processes of {job}"), D, || async {
        let p = cl.job_procs(job);
        if p.len() == n {
            Ok(())
        } else {
            Err(format!("{} live: {p:?}", p.len()))
        }
    })
    .await
}

/// The host whose node runs the most allocations of `j`, with their ids.
fn busiest(cl: &Cluster, j: &JobView) -> (usize, BTreeSet<String>) {
    let mut by_node: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for a in live(j) {
        by_node.entry(&a.node).or_default().insert(a.id.clone());
    }
    let (node, ids) = by_node
        .into_iter()
        .max_by_key(|(_, ids)| ids.len())
        .unwrap();
    (cl.host_of_node(node).unwrap(), ids)
}

/// Alloc id -> pid of every task process of `job`.
fn pids(cl: &Cluster, job: &str) -> BTreeMap<String, i32> {
    cl.job_procs(job)
        .into_iter()
        .map(|p| (p.alloc_id, p.pid))
        .collect()
}

/// Replacements of the allocations lost on host `victim` run elsewhere,
/// and the lost ones say so.
async fn wait_replaced(
    cl: &Cluster,
    name: &str,
    count: usize,
    victim: usize,
    lost: &BTreeSet<String>,
) -> JobView {
    let node = cl.host(victim).node_name.clone();
    eventually(
        &format!("{name}: replacements of {} allocations", lost.len()),
        BIG,
        || async {
            let j = job(&cl.client, name).await?;
            let running = live(&j);
            let elsewhere = running.iter().filter(|a| a.node != node).count();
            let marked = j
                .allocations
                .iter()
                .filter(|a| lost.contains(&a.id) && a.status == ClientStatus::Lost)
                .count();
            if running.len() == count && elsewhere == count && marked == lost.len() {
                Ok(j)
            } else {
                Err(summary(&j))
            }
        },
    )
    .await
}

/// Each replacement names the allocation it replaced.
fn assert_replacements_link(j: &JobView, lost: &BTreeSet<String>) {
    let previous: BTreeSet<String> = live(j)
        .iter()
        .filter_map(|a| a.previous.clone())
        .filter(|p| lost.contains(p))
        .collect();
    assert_eq!(
        &previous,
        lost,
        "every lost allocation has exactly one running replacement: {}",
        summary(j)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_crash_replaces_its_allocations_elsewhere() {
    if !netns::can_run("host_crash") {
        return;
    }
    let mut cl = Cluster::start("host-crash").await;
    let c = cl.client.clone();
    c.submit(&exec_job(&cl, "crash", 6, ""), "crash.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "crash", 6, D).await;
    wait_procs(&cl, "crash", 6).await;
    wait_started(&cl, 6).await;
    let (victim, lost) = busiest(&cl, &j);

    let t = Instant::now();
    cl.kill_host(victim);
    assert!(cl.host(victim).pids().is_empty(), "the host is dead");
    cl.wait_node_status(victim, "down", BIG).await;
    let down = t.elapsed();
    let j = wait_replaced(&cl, "crash", 6, victim, &lost).await;
    let replaced = t.elapsed();
    eprintln!(
        "host crash: node down {:.1}s after the kill, {} replacements running after {:.1}s (goal 15s)",
        down.as_secs_f64(),
        lost.len(),
        replaced.as_secs_f64()
    );
    assert_replacements_link(&j, &lost);
    wait_procs(&cl, "crash", 6).await;
    assert!(
        cl.job_procs("crash").iter().all(|p| p.host != victim),
        "nothing runs on the dead host"
    );
    cl.assert_no_duplicates("crash").await;

    // The host reboots: its agent finds the dead tasks on disk, and the
    // server no longer wants them there. None may start again.
    let t = Instant::now();
    cl.restart_agent(victim);
    cl.wait_node_status(victim, "ready", D).await;
    eprintln!(
        "host crash: rebooted node ready after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    while t.elapsed() < Duration::from_secs(3) {
        let again: Vec<_> = cl
            .job_procs("crash")
            .into_iter()
            .filter(|p| lost.contains(&p.alloc_id))
            .collect();
        assert!(again.is_empty(), "a lost allocation runs again: {again:?}");
        cl.assert_no_duplicates("crash").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = wait_running(&c, "crash", 6, D).await;
    assert!(
        j.allocations
            .iter()
            .filter(|a| lost.contains(&a.id))
            .all(|a| a.status == ClientStatus::Lost),
        "lost allocations stay lost: {}",
        summary(&j)
    );
    let started = starts(&cl);
    assert!(
        j.allocations.iter().all(|a| started.get(&a.id) == Some(&1)),
        "every allocation started once, none again after the reboot: {started:?}"
    );
    wait_procs(&cl, "crash", 6).await;
    cl.assert_jobs_present(&["crash"]).await;
}

/// A crashed host that reboots while still cut off from the server must not
/// start the allocations it finds on disk: they were replaced meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebooted_host_never_restarts_lost_allocations() {
    if !netns::can_run("reboot") {
        return;
    }
    let mut cl = Cluster::start("reboot").await;
    let c = cl.client.clone();
    // Restarts without delay, so a restart shows at once.
    let restart = "restart: {attempts: 3, interval: 30m, delay: 0s, mode: fail}\n";
    c.submit(&exec_job(&cl, "reboot", 6, restart), "reboot.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "reboot", 6, D).await;
    wait_procs(&cl, "reboot", 6).await;
    wait_started(&cl, 6).await;
    let (victim, lost) = busiest(&cl, &j);
    cl.kill_host(victim);
    wait_replaced(&cl, "reboot", 6, victim, &lost).await;

    // Reboot, still unreachable.
    cl.cut_off(victim);
    cl.restart_agent(victim);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let again: Vec<_> = cl
            .job_procs("reboot")
            .into_iter()
            .filter(|p| lost.contains(&p.alloc_id))
            .collect();
        assert!(
            again.is_empty(),
            "a lost allocation runs again on the rebooted host ({:.1}s after its agent started): {again:?}",
            t.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cl.heal(victim);
    cl.wait_node_status(victim, "ready", BIG).await;
    cl.wait_no_duplicates(&["reboot"], D).await;
    let started = starts(&cl);
    assert!(
        lost.iter().all(|id| started.get(id) == Some(&1)),
        "lost allocations started once only: {started:?}"
    );
    cl.assert_jobs_present(&["reboot"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_frozen_past_grace_is_replaced_then_stops_its_copies() {
    if !netns::can_run("frozen_agent") {
        return;
    }
    let mut cl = Cluster::start("frozen").await;
    let c = cl.client.clone();
    c.submit(&exec_job(&cl, "frozen", 6, ""), "frozen.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "frozen", 6, D).await;
    wait_procs(&cl, "frozen", 6).await;
    let (victim, lost) = busiest(&cl, &j);

    // SIGSTOP: a frozen agent (a VM paused, a long GC); its tasks run on.
    let t = Instant::now();
    cl.pause_host(victim);
    cl.wait_node_status(victim, "down", BIG).await;
    let down = t.elapsed();
    wait_replaced(&cl, "frozen", 6, victim, &lost).await;
    eprintln!(
        "frozen agent: node down after {:.1}s, replacements running after {:.1}s",
        down.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        cl.job_procs("frozen")
            .iter()
            .filter(|p| lost.contains(&p.alloc_id))
            .count(),
        lost.len(),
        "the frozen agent's tasks run on"
    );

    let r = Instant::now();
    cl.resume_host(victim);
    cl.wait_node_status(victim, "ready", BIG).await;
    let ready = r.elapsed();
    cl.wait_no_duplicates(&["frozen"], BIG).await;
    eprintln!(
        "frozen agent resumed: node ready after {:.1}s, old copies stopped after {:.1}s",
        ready.as_secs_f64(),
        r.elapsed().as_secs_f64()
    );
    let j = wait_running(&c, "frozen", 6, D).await;
    assert!(
        live(&j).iter().all(|a| !lost.contains(&a.id)),
        "{}",
        summary(&j)
    );
    wait_procs(&cl, "frozen", 6).await;
    cl.assert_no_duplicates("frozen").await;
    cl.assert_jobs_present(&["frozen"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_longer_than_grace_replaces_then_stops_the_old_copies() {
    if !netns::can_run("long_partition") {
        return;
    }
    let mut cl = Cluster::start("long-cut").await;
    let c = cl.client.clone();
    c.submit(&exec_job(&cl, "cut", 6, ""), "cut.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "cut", 6, D).await;
    wait_procs(&cl, "cut", 6).await;
    let (victim, lost) = busiest(&cl, &j);
    let old_pids: BTreeMap<String, i32> = pids(&cl, "cut")
        .into_iter()
        .filter(|(id, _)| lost.contains(id))
        .collect();
    assert_eq!(old_pids.len(), lost.len());

    let t = Instant::now();
    cl.cut_off(victim);
    cl.wait_node_status(victim, "down", BIG).await;
    let detected = t.elapsed();
    let j = wait_replaced(&cl, "cut", 6, victim, &lost).await;
    let replaced = t.elapsed();
    eprintln!(
        "partition: node down {:.1}s after the cut, replacements running after {:.1}s",
        detected.as_secs_f64(),
        replaced.as_secs_f64()
    );
    assert_replacements_link(&j, &lost);
    // The cut-off agent cannot hear of it: its copies run on, and the
    // checker must see each index twice on the machine.
    assert_eq!(
        pids(&cl, "cut")
            .into_iter()
            .filter(|(id, _)| lost.contains(id))
            .collect::<BTreeMap<_, _>>(),
        old_pids,
        "the cut-off host's tasks run on while it is away"
    );
    let dup = cl.no_duplicates(&["cut"]).await;
    assert!(
        dup.as_ref().is_err_and(|e| e.contains("machine")),
        "during the partition each lost index runs twice on the machine: {dup:?}"
    );

    let away = Duration::from_secs(20);
    if let Some(rest) = away.checked_sub(t.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    cl.heal(victim);
    let h = Instant::now();
    cl.wait_no_duplicates(&["cut"], BIG).await;
    let clean = h.elapsed();
    cl.wait_node_status(victim, "ready", BIG).await;
    let back = h.elapsed();
    eprintln!(
        "partition of {:.1}s healed: old copies stopped after {:.1}s, node ready after {:.1}s",
        away.as_secs_f64(),
        clean.as_secs_f64(),
        back.as_secs_f64()
    );
    let j = wait_running(&c, "cut", 6, D).await;
    for a in j.allocations.iter().filter(|a| lost.contains(&a.id)) {
        assert_eq!(
            a.status,
            ClientStatus::Lost,
            "a lost allocation stays lost: {}",
            summary(&j)
        );
    }
    assert!(
        live(&j).iter().all(|a| !lost.contains(&a.id)),
        "{}",
        summary(&j)
    );
    wait_procs(&cl, "cut", 6).await;
    let now = pids(&cl, "cut");
    assert!(
        old_pids.keys().all(|id| !now.contains_key(id)),
        "the old copies are gone: {now:?}"
    );
    cl.assert_no_duplicates("cut").await;
    cl.assert_jobs_present(&["cut"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_shorter_than_grace_changes_nothing() {
    if !netns::can_run("short_partition") {
        return;
    }
    let mut cl = Cluster::start("short-cut").await;
    let c = cl.client.clone();
    c.submit(&exec_job(&cl, "blip", 6, ""), "blip.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "blip", 6, D).await;
    wait_procs(&cl, "blip", 6).await;
    let ids: BTreeSet<String> = j.allocations.iter().map(|a| a.id.clone()).collect();
    let before = pids(&cl, "blip");
    let (victim, _) = busiest(&cl, &j);

    let t = Instant::now();
    cl.cut_off(victim);
    let mut healed = false;
    let mut statuses = BTreeSet::new();
    // Watch for 15 s from the cut: longer than the 10 s after which a
    // silent node is marked down.
    while t.elapsed() < Duration::from_secs(15) {
        if !healed && t.elapsed() >= Duration::from_secs(3) {
            cl.heal(victim);
            healed = true;
        }
        let n = cl.node(victim).await.unwrap();
        statuses.insert(n.status.clone());
        assert_ne!(n.status, "down", "a 3 s partition marks the node down");
        let j = job(&c, "blip").await.unwrap();
        let now: BTreeSet<String> = j.allocations.iter().map(|a| a.id.clone()).collect();
        assert_eq!(now, ids, "nothing is replaced: {}", summary(&j));
        assert!(
            j.allocations
                .iter()
                .all(|a| a.status == ClientStatus::Running && a.desired == DesiredStatus::Run),
            "nothing is lost or stopped: {}",
            summary(&j)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("3 s partition: node status seen {statuses:?}");
    assert_eq!(pids(&cl, "blip"), before, "the same processes run");
    cl.assert_no_duplicates("blip").await;
    cl.assert_jobs_present(&["blip"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_ten_times_keeps_every_task() {
    if !netns::can_run("agent_kill_loop") {
        return;
    }
    let mut cl = Cluster::start("agent-kill").await;
    let c = cl.client.clone();
    c.submit(&exec_job(&cl, "steady", 6, ""), "steady.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "steady", 6, D).await;
    wait_procs(&cl, "steady", 6).await;
    let ids: BTreeSet<String> = j.allocations.iter().map(|a| a.id.clone()).collect();
    let restarts = |j: &JobView| -> BTreeMap<String, Vec<u32>> {
        j.allocations
            .iter()
            .map(|a| (a.id.clone(), a.tasks.values().map(|t| t.restarts).collect()))
            .collect()
    };
    let restarts_before = restarts(&j);
    let before = pids(&cl, "steady");

    let t = Instant::now();
    let mut kills = 0;
    for k in 0..10 {
        let i = k % cl.hosts.len();
        let registered = cl.node(i).await.unwrap().last_heartbeat;
        cl.kill_agent(i);
        kills += 1;
        assert_eq!(pids(&cl, "steady"), before, "tasks outlive their agent");
        cl.restart_agent(i);
        if k % 2 == 1 {
            // Again, in the middle of its start (adopting, registering).
            tokio::time::sleep(Duration::from_millis(50 + 40 * k as u64)).await;
            cl.kill_agent(i);
            kills += 1;
            cl.restart_agent(i);
        }
        eventually(&format!("host-{i} registered again"), D, || async {
            let n = cl.node(i).await?;
            if n.last_heartbeat > registered && n.status == "ready" {
                Ok(())
            } else {
                Err(format!("{} since {}", n.status, n.last_heartbeat))
            }
        })
        .await;
    }
    eprintln!(
        "{kills} agent kills and restarts in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Give a wrong move (a restart, a stop, a replacement) time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = wait_running(&c, "steady", 6, D).await;
    let now: BTreeSet<String> = j.allocations.iter().map(|a| a.id.clone()).collect();
    assert_eq!(now, ids, "no allocation replaced: {}", summary(&j));
    assert_eq!(restarts(&j), restarts_before, "no restart counter moved");
    assert_eq!(pids(&cl, "steady"), before, "every task survived");
    for i in 0..cl.hosts.len() {
        assert_eq!(cl.node(i).await.unwrap().status, "ready");
    }
    cl.assert_no_duplicates("steady").await;
    cl.assert_jobs_present(&["steady"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_a_burst_keeps_every_acknowledged_job() {
    if !netns::can_run("server_kill_burst") {
        return;
    }
    const JOBS: usize = 200;
    const CLIENTS: usize = 8;
    let mut cl = Cluster::start("server-kill").await;
    let names: Vec<String> = (0..JOBS).map(|k| format!("burst-{k:03}")).collect();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = vec![];
    for w in 0..CLIENTS {
        let c = Client::new(&cl.server_url(), None);
        let mine: Vec<String> = names.iter().skip(w).step_by(CLIENTS).cloned().collect();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut failures = 0;
            for name in mine {
                let spec = format!(
                    "name: {name}\ndriver: exec\ncommand: [/bin/sleep, '100000']\n\
                     resources: {{cpu: 10m, memory: 8M}}\nkill_timeout: 1s\n"
                );
                // Until acknowledged: a submission cut by the kill may or
                // may not be stored; sending the same spec again is safe.
                loop {
                    match c.submit(&spec, &format!("{name}.yaml")).await {
                        Ok(_) => break,
                        Err(e) => {
                            failures += 1;
                            assert!(
                                start.elapsed() < Duration::from_secs(120),
                                "{name} never acknowledged: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                acked.lock().unwrap().push(name);
            }
            failures
        }));
    }
    eventually("60 submissions acknowledged", D, || async {
        let n = acked.lock().unwrap().len();
        if n >= 60 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    cl.kill_server();
    let before_kill = acked.lock().unwrap().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down_at = Instant::now();
    cl.restart_server().await;
    eprintln!(
        "server killed after {} acknowledgements; back after {:.1}s",
        before_kill.len(),
        down_at.elapsed().as_secs_f64() + 0.5
    );
    cl.assert_jobs_present(&before_kill).await;
    let mut failures = 0;
    for h in clients {
        failures += h.await.unwrap();
    }
    eprintln!("{failures} submissions failed while the server was away");
    assert_eq!(acked.lock().unwrap().len(), JOBS);
    cl.assert_jobs_present(&names).await;

    let t = Instant::now();
    let c = cl.client.clone();
    eventually(
        &format!("{JOBS} jobs running"),
        Duration::from_secs(120),
        || async {
            let allocs = c.allocs(None).await.map_err(|e| e.to_string())?;
            let mut running: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &allocs {
                if a.status == ClientStatus::Running && a.desired == DesiredStatus::Run {
                    *running.entry(a.job.as_str()).or_default() += 1;
                }
            }
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| running.get(n.as_str()) != Some(&1))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not running once: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ))
            }
        },
    )
    .await;
    eprintln!(
        "every job running {:.1}s after the last acknowledgement",
        t.elapsed().as_secs_f64()
    );
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    eventually("200 task processes", D, || async {
        let n = cl
            .task_procs()
            .iter()
            .filter(|p| p.job.starts_with("burst-"))
            .count();
        if n == JOBS {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    if let Err(e) = cl.no_duplicates(&all).await {
        panic!("an index runs twice: {e}");
    }
    for i in 0..cl.hosts.len() {
        assert_eq!(cl.node(i).await.unwrap().status, "ready");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_and_distinct_hosts_across_real_nodes() {
    if !netns::can_run("spread_distinct") {
        return;
    }
    let cl = Cluster::start("placement").await;
    let c = cl.client.clone();
    c.submit(
        &exec_job(&cl, "spread", 6, "spread: {attr: node.labels.zone}\n"),
        "spread.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &exec_job(&cl, "distinct", 3, "distinct_hosts: true\n"),
        "distinct.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &exec_job(&cl, "distinct4", 4, "distinct_hosts: true\n"),
        "distinct4.yaml",
    )
    .await
    .unwrap();

    let zone_of = |a: &AllocView| cl.host(cl.host_of_node(&a.node).unwrap()).zone.clone();
    let j = wait_running(&c, "spread", 6, D).await;
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for a in live(&j) {
        *per_zone.entry(zone_of(a)).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]),
        "{}",
        summary(&j)
    );

    let j = wait_running(&c, "distinct", 3, D).await;
    let nodes: BTreeSet<&str> = live(&j).iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one per node: {}", summary(&j));

    let j = eventually("distinct4: 3 running, 1 blocked", D, || async {
        let j = job(&c, "distinct4").await?;
        let blocked = j.latest_eval.as_ref().is_some_and(|e| {
            e.status == "blocked" && e.failures.iter().any(|f| f.contains("distinct_hosts"))
        });
        if live(&j).len() == 3 && blocked {
            Ok(j)
        } else {
            Err(format!("{} / {:?}", summary(&j), j.latest_eval))
        }
    })
    .await;
    let nodes: BTreeSet<&str> = live(&j).iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one per node: {}", summary(&j));
    eprintln!(
        "distinct_hosts with count 4 on 3 nodes: {:?}",
        j.latest_eval.as_ref().map(|e| &e.failures)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = job(&c, "distinct4").await.unwrap();
    assert_eq!(live(&j).len(), 3, "still 3: {}", summary(&j));

    // The processes run on the hosts the server placed them on.
    for name in ["spread", "distinct", "distinct4"] {
        let want = if name == "spread" { 6 } else { 3 };
        wait_procs(&cl, name, want).await;
        let j = job(&c, name).await.unwrap();
        let placed: BTreeMap<&str, &str> = live(&j)
            .iter()
            .map(|a| (a.id.as_str(), a.node.as_str()))
            .collect();
        for p in cl.job_procs(name) {
            assert_eq!(
                placed.get(p.alloc_id.as_str()).copied(),
                Some(cl.host(p.host).node_name.as_str()),
                "{name}: {p:?} runs on the host of its node"
            );
        }
        cl.assert_no_duplicates(name).await;
    }
    cl.assert_jobs_present(&["spread", "distinct", "distinct4"])
        .await;
}
