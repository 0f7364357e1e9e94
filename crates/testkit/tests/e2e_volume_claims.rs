//! A claim whose answer never arrives (issue 16; found by a hostile run):
//! the server stores the claim, the connection breaks before the agent
//! hears so. The agent must not take that for a refusal and delete its
//! copy: the store now names that copy (and the old node deletes its
//! own after a move), so deleting it would lose the volume. A proxy in
//! front of the server drops the answer of one claim; the count on the
//! volume must go on, on a first creation and at the end of a move.
//!
//! Needs root (exec tasks in cgroups, loop devices), btrfs and
//! btrfs-progs; skipped otherwise, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral_testkit::jobs::wait_running;
use corral_testkit::netns::unmount_under;
use corral_testkit::{TestCluster, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const D: Duration = Duration::from_secs(60);

fn can_run(test: &str) -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_string());
    }
    if corral_testkit::prereq::find_bin("mkfs.btrfs").is_none() {
        missing.push("mkfs.btrfs (btrfs-progs)".to_string());
    }
    corral_testkit::prereq::can_run(test, "make btrfs volumes", &missing)
}

/// One HTTP/1.1 message (head and a content-length or chunked body) from
/// `s`, or `None` at the end of the stream.
async fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(n) = len {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).await.ok()?;
        buf.extend(body);
    } else if head.contains("transfer-encoding: chunked") {
        while !buf.ends_with(b"\r\n0\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
    }
    Some(buf)
}

/// A proxy to `upstream` that forwards every request, and for the next
/// `drops` volume claims forwards the request but answers nothing (it
/// closes the connection instead).
async fn proxy(upstream: SocketAddr, drops: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let drops = drops.clone();
            tokio::spawn(async move {
                while let Some(req) = read_message(&mut client).await {
                    let first = String::from_utf8_lossy(&req[..req.len().min(200)]).into_owned();
                    let is_claim =
                        first.starts_with("POST /v1/volumes/") && first.contains("/claim ");
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if up.write_all(&req).await.is_err() {
                        return;
                    }
                    let Some(resp) = read_message(&mut up).await else {
                        return;
                    };
                    if is_claim
                        && drops
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        eprintln!("proxy: the claim was stored; its answer is dropped");
                        return;
                    }
                    if client.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn counter(trace: &Path) -> String {
    format!(
        "name: vol
driver: exec
command: [/bin/sh, -c, 'd=$CORRAL_VOLUME_DATA; n=$(cat $d/n 2>/dev/null || echo 0); while true; do n=$((n+1)); echo $CORRAL_NODE_ID $n >> {}; echo $n > $d/n.tmp; mv $d/n.tmp $d/n; sleep 0.1; done']
resources: {{cpu: 20m, memory: 16M}}
kill_timeout: 1s
volume: {{size: 256M}}
",
        trace.display()
    )
}

fn last(trace: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(trace).ok()?;
    let l = text.lines().last()?;
    let (node, n) = l.split_once(' ')?;
    Some((node.to_owned(), n.parse().ok()?))
}

async fn wait_count(trace: &Path, node: &str, past: u64) {
    eventually("the count goes on", D, || async {
        match last(trace) {
            Some((n, c)) if n == node && c > past => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_is_lost_keeps_the_copy_it_made_current() {
    let test = "volume-lost-claim-answer";
    if !can_run(test) {
        return;
    }
    let mut cluster = TestCluster::start().await;
    let drops = Arc::new(AtomicUsize::new(1));
    let via_proxy = format!("http://{}", proxy(cluster.addr, drops.clone()).await);
    let c = cluster.client.clone();
    let trace = cluster.dir.path().join("trace");

    // A first creation whose claim answer is lost.
    let s = via_proxy.clone();
    let first = cluster
        .add_agent_with("node-0", move |cfg| cfg.server = s)
        .await
        .node_id
        .clone();
    c.submit(&counter(&trace), "vol.yaml").await.unwrap();
    wait_running(&c, "vol", 1, D).await;
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the claim went through the proxy"
    );
    wait_count(&trace, &first, 5).await;
    let v = c.volume("vol.data").await.unwrap();
    assert_eq!((v.node_id.as_str(), v.generation), (first.as_str(), 1));

    // A move whose final claim answer is lost: the receiving agent is the
    // one behind the proxy.
    let s = via_proxy.clone();
    let second = cluster
        .add_agent_with("node-1", move |cfg| cfg.server = s)
        .await
        .node_id
        .clone();
    drops.store(1, Ordering::SeqCst);
    let before = last(&trace).unwrap().1;
    c.drain(&first, true, None).await.unwrap();
    wait_count(&trace, &second, before).await;
    let v = c.volume("vol.data").await.unwrap();
    assert_eq!((v.node_id.as_str(), v.generation), (second.as_str(), 2));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the move's claim answer was dropped"
    );
    // The old node's sweep deletes its copy; the new one must keep its.
    let new_copy = cluster
        .agent_data_dir("node-1")
        .join("volumes")
        .join("vol.data");
    let old_copy = cluster
        .agent_data_dir("node-0")
        .join("volumes")
        .join("vol.data");
    eventually("the old copy deleted, the new one kept", D, || async {
        if old_copy.exists() {
            Err("old copy still there".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    assert!(new_copy.join("image").exists(), "the live copy is gone");
    let at = last(&trace).unwrap().1;
    wait_count(&trace, &second, at + 5).await;
    corral_testkit::jobs::stop_and_wait(&c, "vol", D).await;
    c.volume_delete("vol.data", false).await.unwrap();
    let dir = cluster.dir.path().to_path_buf();
    drop(cluster);
    unmount_under(&dir);
}
