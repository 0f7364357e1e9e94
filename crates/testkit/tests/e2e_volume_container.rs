//! A volume inside a real container (issue 16): a private containerd, a
//! real agent with btrfs image volumes, a container that sees its volume
//! at the spec's `mount` with the spec's size (`df`), and whose writes
//! past that size fail with "No space left on device". The data survives
//! the job's stop and a new run; a restore brings back a snapshot.
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
    format!(
        "name: store
image: {image}
command: [/bin/sh, -c, {script:?}]
kill_timeout: 1s
restart: {{attempts: 0, mode: fail}}
volume: {{size: 256M, mount: /srv/store}}
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
    for tool in ["df", "dd", "cat", "ls", "wc", "rm", "mount", "grep"] {
        image.files.push(corral_agent::image::ImageFile::symlink(
            &format!("bin/{tool}"),
            "busybox",
        ));
    }
    let image = node.import(&image).await;

    // Fill it: the writes stop at the volume's size, and df says that size.
    let fill = "df -k /srv/store; echo hello > /srv/store/keep; \
                dd if=/dev/zero of=/srv/store/big bs=1M count=400 2>&1; \
                echo \"== written $(($(wc -c < /srv/store/big) / 1048576)) MiB\"; exec sleep 3600";
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

    // A snapshot now, then the data changes; stopped, the job's volume
    // goes back to the snapshot and the next run sees the old data.
    let snap = c.volume_snapshot("store.data").await.unwrap();
    let snap = snap["name"].as_str().unwrap().to_owned();
    stop_and_wait(&c, "store", D).await;
    let show = "cat /srv/store/keep 2>&1; ls /srv/store 2>&1; mount 2>&1 | grep store; echo '== shown'; exec sleep 3600";
    c.submit(&job(&image, show), "store.yaml").await.unwrap();
    let j = wait_running(&c, "store", 1, D).await;
    let out = log_containing(&c, &running(&j)[0].id, "stdout", "== shown", D).await;
    assert!(
        out.contains("hello") && out.contains("big"),
        "second run: {out}"
    );
    let write =
        "rm /srv/store/big; echo changed > /srv/store/keep; echo '== changed'; exec sleep 3600";
    c.submit(&job(&image, write), "store.yaml").await.unwrap();
    eventually("the change ran", D, || async {
        let j = c.job("store", None).await.map_err(|e| e.to_string())?;
        let a = j
            .allocations
            .iter()
            .find(|a| a.job_version == 3 && a.state.as_str() == "running")
            .ok_or("not yet")?;
        log_containing(&c, &a.id, "stdout", "== changed", Duration::from_secs(5)).await;
        Ok::<_, String>(())
    })
    .await;
    stop_and_wait(&c, "store", D).await;
    c.volume_restore("store.data", &snap).await.unwrap();
    c.submit(&job(&image, show), "store.yaml").await.unwrap();
    let j = wait_running(&c, "store", 1, D).await;
    let out = log_containing(&c, &running(&j)[0].id, "stdout", "== shown", D).await;
    assert!(
        out.contains("hello") && out.contains("big"),
        "restored: {out}"
    );

    stop_and_wait(&c, "store", D).await;
    c.volume_delete("store.data", false).await.unwrap();
    drop(cluster);
    unmount_under(&data);
}
