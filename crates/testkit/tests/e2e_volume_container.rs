//! A volume inside a real container (issue 16): a private containerd, a
//! real agent with btrfs image volumes, a container that sees its volume
//! at the spec's `mount` with the spec's size (`df`), and whose writes
//! past that size fail with "No space left on device". The data survives
//! the job's stop and a new run; a restore brings back a snapshot, in
//! place or as a new volume beside the one in use.
//!
//! Needs root, containerd, runc, the CNI plugins, busybox-static, btrfs
//! and btrfs-progs; skipped with a message when missing, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use corral_testkit::containers::{ContainerNode, busybox_image, can_run};
use corral_testkit::jobs::{log_containing, running, stop_and_wait, wait_running};
use corral_testkit::netns::unmount_under;
use corral_testkit::{TestCluster, eventually};

const D: Duration = Duration::from_secs(60);

fn job(image: &str, script: &str) -> String {
    sized(image, script, "256M")
}

fn sized(image: &str, script: &str, size: &str) -> String {
    format!(
        "name: store
image: {image}
command: [/bin/sh, -c, {script:?}]
kill_timeout: 1s
restart: {{attempts: 0, mode: fail}}
volume:
  size: {size}
  mount: /srv/store
  hooks:
    pre_snapshot: [/bin/sh, -c, 'test ! -e /srv/store/nohook && echo pre >> /srv/store/hooks.log']
    post_snapshot: [/bin/sh, -c, 'echo post >> /srv/store/hooks.log']
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_sees_its_volume_with_its_size_and_cannot_write_past_it() {
    let test = "volume-container";
    if !can_run(test) || corral_testkit::prereq::find_bin("mkfs.btrfs").is_none() {
        if corral_testkit::prereq::find_bin("mkfs.btrfs").is_none() {
            corral_testkit::prereq::can_run(test, "make btrfs volumes", &["mkfs.btrfs".into()]);
        }
        return;
    }
    let node = ContainerNode::start(test).await;
    let mut cluster = TestCluster::start().await;
    let socket = node.socket().to_path_buf();
    let data = cluster.agent_data_dir("node-0");
    cluster
        .add_agent_with("node-0", move |c| {
            c.drivers = vec!["container".into()];
            c.cri_socket = socket;
        })
        .await;
    let c = cluster.client.clone();
    let mut image = busybox_image("corral.local/volprobe:1", &[]);
    for tool in [
        "df", "dd", "cat", "ls", "wc", "rm", "mount", "grep", "tail", "sed",
    ] {
        image.files.push(corral_agent::image::ImageFile::symlink(
            &format!("bin/{tool}"),
            "busybox",
        ));
    }
    let image = node.import(&image).await;

    // Fill it: the writes stop at the volume's size, and df says that size.
    let fill = "df -k /srv/store; echo hello > /srv/store/keep; \
                dd if=/dev/zero of=/srv/store/big bs=1M count=400 2>&1; \
                echo \"== written $(($(wc -c < /srv/store/big) / 1048576)) MiB\"; \
                while true; do df -k /srv/store | tail -1 | sed 's/^/df: /'; sleep 1; done";
    c.submit(&job(&image, fill), "store.yaml").await.unwrap();
    let j = wait_running(&c, "store", 1, D).await;
    let out = log_containing(&c, &j.allocations[0].id, "stdout", "== written", D).await;
    eprintln!("[{test}] {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let df = out
        .lines()
        .find(|l| l.contains("/srv/store"))
        .unwrap_or_else(|| panic!("no df line: {out}"));
    let kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (200 * 1024..=256 * 1024).contains(&kib),
        "df inside shows {kib} KiB for a 256M volume: {df}"
    );
    let written: u64 = out
        .split("== written ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(written < 256, "wrote {written} MiB into a 256M volume");

    // A new version that grows the volume: in place, the task keeps
    // running and sees the new size.
    let grown = sized(&image, fill, "512M");
    c.submit(&grown, "store.yaml").await.unwrap();
    let alloc = j.allocations[0].id.clone();
    let out = log_containing(&c, &alloc, "stdout", " 5000", D).await;
    let last = out.lines().rev().find(|l| l.starts_with("df: ")).unwrap();
    let kib: u64 = last.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        (450 * 1024..=512 * 1024).contains(&kib),
        "after growing to 512M: {last}"
    );
    let j2 = c.job("store", None).await.unwrap();
    assert_eq!(running(&j2)[0].id, alloc, "grown in place, not replaced");
    eventually("the record has the new size", D, || async {
        let v = c.volume("store.data").await.map_err(|e| e.to_string())?;
        if v.size.0 == 512_000_000 {
            Ok(())
        } else {
            Err(format!("{}", v.size))
        }
    })
    .await;

    // A snapshot now, then the data changes; stopped, the job's volume
    // goes back to the snapshot and the next run sees the old data.
    let snap = c.volume_snapshot("store.data").await.unwrap();
    let snap = snap["name"].as_str().unwrap().to_owned();
    stop_and_wait(&c, "store", D).await;
    let show = "cat /srv/store/keep 2>&1; ls /srv/store 2>&1; cat /srv/store/hooks.log 2>&1; mount 2>&1 | grep store; echo '== shown'; exec sleep 3600";
    c.submit(&sized(&image, show, "512M"), "store.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "store", 1, D).await;
    let out = log_containing(&c, &running(&j)[0].id, "stdout", "== shown", D).await;
    assert!(
        out.contains("hello") && out.contains("big"),
        "second run: {out}"
    );
    let write =
        "rm /srv/store/big; echo changed > /srv/store/keep; echo '== changed'; exec sleep 3600";
    let sub = c
        .submit(&sized(&image, write, "512M"), "store.yaml")
        .await
        .unwrap();
    let version = sub.jobs[0].version;
    let a = eventually("the new version runs", D, || async {
        let j = c.job("store", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .find(|a| a.job_version == version && a.state.as_str() == "running")
            .map(|a| a.id.clone())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    log_containing(&c, &a, "stdout", "== changed", D).await;
    stop_and_wait(&c, "store", D).await;
    c.volume_restore("store.data", &snap, None).await.unwrap();
    c.submit(&sized(&image, show, "512M"), "store.yaml")
        .await
        .unwrap();
    let j = wait_running(&c, "store", 1, D).await;
    let out = log_containing(&c, &running(&j)[0].id, "stdout", "== shown", D).await;
    assert!(
        out.contains("hello") && out.contains("big"),
        "restored: {out}"
    );
    // The snapshot holds what the pre_snapshot hook wrote, not the post's.
    assert!(
        out.contains("pre") && !out.contains("post"),
        "hooks.log in the snapshot: {out}"
    );
    // A failing pre_snapshot hook takes no snapshot.
    let before = c.volume("store.data").await.unwrap().snapshots.len();
    let fail = "touch /srv/store/nohook; echo '== touched'; exec sleep 3600";
    c.submit(&sized(&image, fail, "512M"), "store.yaml")
        .await
        .unwrap();
    let a = eventually("the failing-hook version runs", D, || async {
        let j = c.job("store", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        match r.first() {
            Some(a) if a.job_version == j.version => Ok(a.id.clone()),
            _ => Err("not yet".to_string()),
        }
    })
    .await;
    log_containing(&c, &a, "stdout", "== touched", D).await;
    let e = c.volume_snapshot("store.data").await.unwrap_err();
    assert!(e.to_string().contains("pre_snapshot hook failed"), "{e}");
    assert_eq!(
        c.volume("store.data").await.unwrap().snapshots.len(),
        before
    );

    // While `store` runs (and its data has moved on): an in-place restore
    // is refused and says how to restore beside it; restored as a new
    // volume, a second job sees the snapshot's data and `store` keeps
    // running on its own.
    let e = c
        .volume_restore("store.data", &snap, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--as"), "{e}");
    let made = c
        .volume_restore("store.data", &snap, Some("copy.data"))
        .await
        .unwrap();
    eprintln!("[{test}] restore --as: {made}");
    let v = c.volume("copy.data").await.unwrap();
    let origin = v.origin.clone().unwrap();
    assert!(
        origin.done && origin.snapshot.as_deref() == Some(snap.as_str()),
        "{v:?}"
    );
    assert_eq!(
        (v.size.0, v.generation, v.alloc_id.clone()),
        (512_000_000, 1, None)
    );
    let copy = sized(&image, show, "512M").replace("name: store", "name: copy");
    c.submit(&copy, "copy.yaml").await.unwrap();
    let j = wait_running(&c, "copy", 1, D).await;
    let out = log_containing(&c, &running(&j)[0].id, "stdout", "== shown", D).await;
    assert!(
        out.contains("hello") && out.contains("big") && !out.contains("nohook"),
        "the copy: {out}"
    );
    let v = c.volume("copy.data").await.unwrap();
    assert_eq!(v.alloc_id.as_deref(), Some(running(&j)[0].id.as_str()));
    assert_eq!(running(&c.job("store", None).await.unwrap())[0].id, a);
    // Its id is taken now.
    let e = c
        .volume_restore("store.data", &snap, Some("copy.data"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    stop_and_wait(&c, "copy", D).await;
    c.volume_delete("copy.data", false).await.unwrap();

    stop_and_wait(&c, "store", D).await;
    c.volume_delete("store.data", false).await.unwrap();
    drop(cluster);
    unmount_under(&data);
}
