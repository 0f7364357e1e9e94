//! Volumes end to end (issue 16) on real `corral` processes: a server and
//! two agents, each in its own network namespace, btrfs image volumes on
//! loop devices. A task counts into a file on its volume; the count must
//! go on, never restart and never skip, across a task crash, a drain that
//! moves the volume to the other node (the move's downtime is printed),
//! and the holding node's loss with its return (the replacement waits for
//! the data and takes it when the node is back). Snapshots, restore and
//! delete go through the API against the real agent.
//!
//! Needs root (namespaces, cgroups, loop devices), btrfs and btrfs-progs;
//! skipped otherwise, a failure with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_testkit::eventually;
use corral_testkit::jobs::{stop_and_wait, wait_running};
use corral_testkit::netns::{self, Cluster, ClusterOptions};
use corral_types::Volume;

const D: Duration = Duration::from_secs(60);

fn can_run(test: &str) -> bool {
    if !netns::can_run(test) {
        return false;
    }
    let mut missing = Vec::new();
    if corral_testkit::prereq::find_bin("mkfs.btrfs").is_none() {
        missing.push("mkfs.btrfs (btrfs-progs)".to_string());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.ends_with("btrfs")) {
        // Loading the module is enough where the kernel ships it.
        let _ = std::process::Command::new("modprobe").arg("btrfs").status();
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.lines().any(|l| l.ends_with("btrfs")) {
            missing.push("btrfs in the kernel".to_string());
        }
    }
    corral_testkit::prereq::can_run(test, "make btrfs volumes", &missing)
}

/// A task that counts into `$CORRAL_VOLUME_DATA/n` every 100 ms, each
/// count first appended as `<unix ns> <node id> <count>` to a trace
/// outside the volume (so a kill between the two repeats a count, and a
/// lost write shows as a count going back).
fn counter_job(trace: &Path) -> String {
    format!(
        "name: vol
driver: exec
command: [/bin/sh, -c, 'd=$CORRAL_VOLUME_DATA; n=$(cat $d/n 2>/dev/null || echo 0); while true; do n=$((n+1)); echo $(date +%s%N) $CORRAL_NODE_ID $n >> {}; echo $n > $d/n.tmp; mv $d/n.tmp $d/n; sleep 0.1; done']
resources: {{cpu: 20m, memory: 16M}}
kill_timeout: 1s
restart: {{attempts: 5, delay: 1s}}
volume: {{size: 256M}}
",
        trace.display()
    )
}

/// `(time ns, node id, count)` per line of the trace.
fn trace(path: &Path) -> Vec<(u128, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.to_owned(),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The count never went back and never skipped: each line is the one
/// before plus one, or the same (a kill between the trace line and the
/// file's update repeats it).
fn assert_counts_on(t: &[(u128, String, u64)]) {
    for w in t.windows(2) {
        let (a, b) = (w[0].2, w[1].2);
        assert!(
            b == a + 1 || b == a,
            "the count went from {a} to {b}: the volume lost or reset data\n{t:?}"
        );
    }
}

async fn volume(c: &Client, id: &str) -> Volume {
    c.volume(id).await.unwrap()
}

async fn wait_volume(c: &Client, what: &str, f: impl Fn(&Volume) -> bool) -> Volume {
    eventually(what, D, || async {
        let v = c.volume("vol.data").await.map_err(|e| e.to_string())?;
        if f(&v) { Ok(v) } else { Err(format!("{v:?}")) }
    })
    .await
}

/// The index of the host whose node is `node_id`.
async fn host_of(cl: &Cluster, node_id: &str) -> usize {
    let nodes = cl.nodes().await.unwrap();
    let name = &nodes.iter().find(|n| n.id == node_id).unwrap().name;
    cl.host_of_node(name).unwrap()
}

fn volume_dir(cl: &Cluster, host: usize) -> PathBuf {
    cl.host(host).data_dir().join("volumes").join("vol.data")
}

async fn wait_count_past(path: &Path, node: &str, past: u64) {
    eventually("the count goes on", D, || async {
        let t = trace(path);
        match t.last() {
            Some((_, n, c)) if n == node && *c > past => Ok(()),
            other => Err(format!("last line {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_keeps_its_data_across_a_crash_a_drain_and_a_node_loss() {
    let test = "volumes";
    if !can_run(test) {
        return;
    }
    let mut cl = Cluster::start_with(test, ClusterOptions::new(2)).await;
    let c = cl.client.clone();
    let trace_path = cl.dir().join("trace");
    c.submit(&counter_job(&trace_path), "vol.yaml")
        .await
        .unwrap();
    wait_running(&c, "vol", 1, D).await;
    let v = wait_volume(&c, "the volume created", |v| v.generation == 1).await;
    let first = host_of(&cl, &v.node_id).await;
    assert!(volume_dir(&cl, first).join("image").exists());
    wait_count_past(&trace_path, &v.node_id, 5).await;

    // 1. The task crashes: its restart counts on from the file.
    let procs = cl.job_procs("vol");
    assert_eq!(procs.len(), 1, "{procs:?}");
    let before = trace(&trace_path).last().unwrap().2;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(procs[0].pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_count_past(&trace_path, &v.node_id, before + 3).await;
    assert_counts_on(&trace(&trace_path));

    // 2. A drain moves the volume: a full copy while the task runs, an
    // incremental once it stopped, then the task starts on the other node.
    let other = 1 - first;
    let other_id = cl.node(other).await.unwrap().id;
    c.drain(&v.node_id, true, None).await.unwrap();
    let moved = wait_volume(&c, "the volume moved", |x| {
        x.node_id == other_id && x.generation == 2
    })
    .await;
    wait_count_past(&trace_path, &other_id, 0).await;
    let t = trace(&trace_path);
    assert_counts_on(&t);
    let last_old = t.iter().rev().find(|l| l.1 == v.node_id).unwrap();
    let first_new = t.iter().find(|l| l.1 == other_id).unwrap();
    assert!(
        first_new.2 == last_old.2 + 1 || first_new.2 == last_old.2,
        "the new node must go on from the old node's last write: {last_old:?} then {first_new:?}"
    );
    eprintln!(
        "volume move: the task wrote nothing for {} ms (old task's stop, last incremental {} ms, new start)",
        (first_new.0 - last_old.0) / 1_000_000,
        moved.last_move_downtime_ms.unwrap_or(0)
    );
    assert_eq!(moved.moved_from.as_deref(), Some(v.node_id.as_str()));
    let q = corral_client::EventQuery {
        topics: vec!["volume".into()],
        ..Default::default()
    };
    let moves: Vec<_> = c
        .events(&q)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "volume.moved")
        .collect();
    assert_eq!(moves.len(), 1, "{moves:?}");
    // The old copy goes once the move is done (the agent's sweep).
    let old_dir = volume_dir(&cl, first);
    eventually("the old copy deleted", D, || async {
        if old_dir.exists() {
            Err(format!("{} still there", old_dir.display()))
        } else {
            Ok(())
        }
    })
    .await;
    c.drain(&v.node_id, false, None).await.unwrap();

    // 3. Snapshots go through the holding agent; a restore is refused
    // while the volume is in use.
    let snap = c.volume_snapshot("vol.data").await.unwrap();
    let name = snap["name"].as_str().unwrap().to_owned();
    let listed = volume(&c, "vol.data").await.snapshots;
    assert!(listed.iter().any(|s| s.name == name), "{listed:?}");
    let refused = c.volume_restore("vol.data", &name, None).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("corral stop vol"), "{refused}");

    // 4. The holding node is lost: the replacement waits for the data
    // (it is nowhere else) and takes it when the node comes back.
    let holder = cl
        .host_of_node(&cl.node(other).await.unwrap().name)
        .unwrap();
    cl.kill_host(holder);
    cl.wait_node_status(holder, "down", Duration::from_secs(90))
        .await;
    let waiting = eventually("the replacement waits for the volume", D, || async {
        let j = c.job("vol", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .find(|a| a.node_id != moved.node_id && a.reason.contains("which is down"))
            .map(|a| a.reason.clone())
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    j.allocations
                        .iter()
                        .map(|a| (&a.node_id, &a.reason))
                        .collect::<Vec<_>>()
                )
            })
    })
    .await;
    eprintln!("while the node is down: {waiting}");
    let count_at_loss = trace(&trace_path).last().unwrap().2;
    let t0 = Instant::now();
    cl.restart_agent(holder);
    let back = wait_volume(&c, "the volume moved after the node came back", |x| {
        x.generation == 3 && x.node_id != moved.node_id
    })
    .await;
    wait_count_past(&trace_path, &back.node_id, count_at_loss).await;
    eprintln!(
        "node back to task running elsewhere with its data: {:?}",
        t0.elapsed()
    );
    assert_counts_on(&trace(&trace_path));
    cl.assert_no_duplicates("vol").await;

    // 5. Stopped, a volume restores to a snapshot and deletes.
    stop_and_wait(&c, "vol", D).await;
    let taken = c.volume_snapshot("vol.data").await.unwrap();
    let taken = taken["name"].as_str().unwrap().to_owned();
    c.volume_restore("vol.data", &taken, None).await.unwrap();
    c.volume_delete("vol.data", false).await.unwrap();
    assert_eq!(c.volume("vol.data").await.unwrap_err().status(), Some(404));
    eventually("no copy left on any node", D, || async {
        match (0..2).find(|h| volume_dir(&cl, *h).exists()) {
            Some(h) => Err(format!("host {h} still holds a copy")),
            None => Ok(()),
        }
    })
    .await;
}

/// `on_node_loss: restore`: backups run on schedule (and by hand) to a
/// directory target; the holding node dies; after the grace the volume is
/// restored from the newest backup on the other node, the allocation says
/// which backup and since when writes are lost, and the count goes on
/// from the backup; the dead node comes back and its copy is set aside
/// (quarantined), never mounted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_volume_is_restored_from_its_backup_and_the_old_copy_set_aside() {
    let test = "volume-restore";
    if !can_run(test) {
        return;
    }
    if corral_testkit::prereq::find_bin("restic").is_none()
        && !corral_testkit::prereq::can_run(test, "back up volumes", &["restic".into()])
    {
        return;
    }
    let backups = tempfile::tempdir().unwrap();
    let mut opts = ClusterOptions::new(2);
    opts.server_config = Some(format!(
        "[server.backup_targets.local]\nkind = \"dir\"\npath = \"{}\"\npassword = \"test-password\"\n",
        backups.path().display()
    ));
    let mut cl = Cluster::start_with(test, opts).await;
    let c = cl.client.clone();
    let trace_path = cl.dir().join("trace");
    let job = counter_job(&trace_path).replace(
        "volume: {size: 256M}",
        "volume: {size: 256M, backup: {every: 1h, keep: {last: 3}, to: local}, node_loss_grace: 5s}",
    );
    let refused = c
        .submit(&job.replace("to: local", "to: nowhere"), "vol.yaml")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no backup target `nowhere`"),
        "{refused}"
    );
    c.submit(&job, "vol.yaml").await.unwrap();
    wait_running(&c, "vol", 1, D).await;
    // The schedule backs it up at once (no backup yet), then by hand.
    let v = wait_volume(&c, "the first scheduled backup", |v| !v.backups.is_empty()).await;
    wait_count_past(
        &trace_path,
        &v.node_id,
        trace(&trace_path).last().map_or(0, |l| l.2) + 5,
    )
    .await;
    let b = c.volume_backup("vol.data").await.unwrap();
    let v = wait_volume(&c, "two backups", |v| v.backups.len() == 2).await;
    assert_eq!(v.backups.last().unwrap().id, b.id);
    assert!(v.backup_error.is_none(), "{:?}", v.backup_error);
    let at_backup = trace(&trace_path)
        .iter()
        .rev()
        .find(|l| l.0 / 1_000_000 <= u128::from(b.taken_at))
        .unwrap()
        .2;
    wait_count_past(&trace_path, &v.node_id, at_backup + 10).await;

    // The holder dies; the other node restores the newest backup.
    let holder = host_of(&cl, &v.node_id).await;
    cl.kill_host(holder);
    let last_old = trace(&trace_path).last().unwrap().2;
    let restored = wait_volume(&c, "the volume restored elsewhere", |x| {
        x.node_id != v.node_id && x.restored_from.is_some()
    })
    .await;
    assert_eq!(restored.restored_from.as_ref().unwrap().id, b.id);
    assert_eq!(restored.generation, v.generation + 1);
    wait_count_past(&trace_path, &restored.node_id, 0).await;
    let t = trace(&trace_path);
    let first_new = t.iter().find(|l| l.1 == restored.node_id).unwrap().2;
    eprintln!(
        "restored from the backup: the count was {last_old} on the lost node, {at_backup} at the backup, goes on at {first_new}"
    );
    assert!(
        first_new >= at_backup && first_new <= at_backup + 3 && first_new <= last_old,
        "the restored volume holds the backup's data: {at_backup} at the backup, {first_new} after"
    );

    // The events say what happened, and what was lost.
    let q = corral_client::EventQuery {
        topics: vec!["volume".into()],
        ..Default::default()
    };
    let events = c.events(&q).await.unwrap();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.as_str().to_owned()).collect();
    for k in ["volume.created", "volume.backup_done", "volume.restored"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    let restored_event = events
        .iter()
        .find(|e| e.kind.as_str() == "volume.restored")
        .unwrap();
    assert!(
        restored_event.message.contains(&b.id[..8]) && restored_event.message.contains("lost"),
        "{}",
        restored_event.message
    );

    // The lost node returns: its copy is older than the store's and is
    // set aside, not mounted, not deleted.
    cl.restart_agent(holder);
    cl.wait_node_status(holder, "ready", D).await;
    let quarantine = cl
        .host(holder)
        .data_dir()
        .join("volumes")
        .join(".quarantine");
    eventually("the returning copy quarantined", D, || async {
        let names: Vec<String> = std::fs::read_dir(&quarantine)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n.starts_with("vol.data.")) && !volume_dir(&cl, holder).exists() {
            Ok(names)
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    let now = volume(&c, "vol.data").await;
    assert_eq!(
        now.node_id, restored.node_id,
        "the restored copy stays the live one"
    );
    cl.assert_no_duplicates("vol").await;

    // Stopped, the volume goes back to its first backup (restored in
    // place from the target) and the next run counts on from there.
    stop_and_wait(&c, "vol", D).await;
    let now = volume(&c, "vol.data").await;
    let first = now.backups.first().unwrap().clone();
    let at_first = trace(&trace_path)
        .iter()
        .rev()
        .find(|l| l.0 / 1_000_000 <= u128::from(first.taken_at))
        .unwrap()
        .2;
    c.volume_restore("vol.data", &first.id[..12], None)
        .await
        .unwrap();
    let before_run = trace(&trace_path).len();
    c.submit(&job, "vol.yaml").await.unwrap();
    wait_running(&c, "vol", 1, D).await;
    eventually("the re-run counts", D, || async {
        if trace(&trace_path).len() > before_run {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let rerun = trace(&trace_path)[before_run].2;
    assert!(
        rerun >= at_first && rerun <= at_first + 3,
        "restored to the first backup ({at_first}); the re-run starts at {rerun}"
    );
    stop_and_wait(&c, "vol", D).await;

    // The volume's node is lost for good: a backup is restored as a new
    // volume on the node that is left, and a job of that name counts on
    // from the backup's count there.
    let now = volume(&c, "vol.data").await;
    let gone = host_of(&cl, &now.node_id).await;
    cl.kill_host(gone);
    cl.wait_node_status(gone, "down", D).await;
    let made = c
        .volume_restore("vol.data", &b.id[..10], Some("copy.data"))
        .await
        .unwrap();
    eprintln!("restore --as while the source's node is down: {made}");
    let copy = c.volume("copy.data").await.unwrap();
    assert_ne!(copy.node_id, now.node_id);
    assert_eq!(
        copy.origin
            .as_ref()
            .and_then(|o| o.backup.as_ref())
            .map(|x| &x.id),
        Some(&b.id)
    );
    let before_copy = trace(&trace_path).len();
    c.submit(&job.replace("name: vol", "name: copy"), "copy.yaml")
        .await
        .unwrap();
    wait_running(&c, "copy", 1, D).await;
    wait_count_past(&trace_path, &copy.node_id, 0).await;
    let first_copy = trace(&trace_path)[before_copy].2;
    assert!(
        first_copy >= at_backup && first_copy <= at_backup + 3,
        "the copy holds backup {}'s count ({at_backup}); it starts at {first_copy}",
        &b.id[..8]
    );
    let events = c.events(&q).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind.as_str() == "volume.created"
            && e.message.contains("copy.data")
            && e.message.contains(&b.id)),
        "no creation event for the copy"
    );
    stop_and_wait(&c, "copy", D).await;
    c.volume_delete("copy.data", false).await.unwrap();
    c.volume_delete("vol.data", true).await.unwrap();
}

/// The old holder's agent is killed (-9) right after the replacement
/// copied the volume, so the old task keeps writing with no agent to stop
/// it; the store then gives the old allocation up as lost. The last copy
/// must wait until the returning agent has stopped that task: after the
/// new node's first count, the old node never writes again, and no count
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_the_old_task_even_when_its_agent_died_mid_move() {
    let test = "volume-kill";
    if !can_run(test) {
        return;
    }
    let mut cl = Cluster::start_with(test, ClusterOptions::new(2)).await;
    let c = cl.client.clone();
    let trace_path = cl.dir().join("trace");
    // A task that ignores SIGTERM and a long kill_timeout: its stop takes
    // 30 s, long enough to kill its agent in the middle of it.
    let job = counter_job(&trace_path)
        .replace(
            "'d=$CORRAL_VOLUME_DATA;",
            "'trap \"\" TERM; d=$CORRAL_VOLUME_DATA;",
        )
        .replace("kill_timeout: 1s", "kill_timeout: 30s");
    assert!(job.contains("trap") && job.contains("30s"), "{job}");
    c.submit(&job, "vol.yaml").await.unwrap();
    wait_running(&c, "vol", 1, D).await;
    let v = wait_volume(&c, "the volume created", |v| v.generation == 1).await;
    wait_count_past(&trace_path, &v.node_id, 5).await;
    let old = host_of(&cl, &v.node_id).await;
    c.drain(&v.node_id, true, None).await.unwrap();
    eventually("the replacement copied the volume", D, || async {
        let j = c.job("vol", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .find(|a| {
                a.node_id != v.node_id
                    && a.volume_sync
                        .as_ref()
                        .is_some_and(|s| s.phase >= corral_types::VolumePhase::Copied)
            })
            .map(|_| ())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    // The old allocation is told to stop; its task ignores the signal.
    eventually("the old allocation told to stop", D, || async {
        let j = c.job("vol", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .find(|a| a.node_id == v.node_id && a.desired == corral_types::DesiredStatus::Stop)
            .map(|_| ())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cl.kill_agent(old);
    // The old task runs on, unwatched, until its agent is back.
    let before = trace(&trace_path).last().unwrap().2;
    wait_count_past(&trace_path, &v.node_id, before + 10).await;
    // The store gives the old allocation up (its node is down) while
    // the task still writes.
    cl.wait_node_status(old, "down", Duration::from_secs(90))
        .await;
    let lost_at = trace(&trace_path).last().unwrap().2;
    wait_count_past(&trace_path, &v.node_id, lost_at + 3).await;
    cl.restart_agent(old);
    let moved = wait_volume(&c, "the volume moved", |x| x.generation == 2).await;
    wait_count_past(&trace_path, &moved.node_id, 0).await;
    wait_count_past(
        &trace_path,
        &moved.node_id,
        trace(&trace_path).last().unwrap().2 + 5,
    )
    .await;
    let t = trace(&trace_path);
    let first_new = t.iter().position(|l| l.1 == moved.node_id).unwrap();
    let late: Vec<_> = t[first_new..].iter().filter(|l| l.1 == v.node_id).collect();
    assert!(
        late.is_empty(),
        "the old task wrote after the new one started: {late:?}"
    );
    assert_counts_on(&t);
    cl.assert_no_duplicates("vol").await;
}
