//! Names that are not names, and readers that go away: the CLI neither
//! reaches another object nor panics.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};

use corral_client::Client;
use corral_testkit::TestCluster;

mod common;
use common::{corral, text};

/// `stop --purge 'nosuch/../j4'` used to purge j4, `alloc status
/// ../nodes` fetched the node list and `status 'x?index=abc'` sent a
/// query: each name is now one escaped segment, which the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_command_line_stay_names() {
    let cluster = TestCluster::start().await;
    let url = cluster.url();
    let c = Client::new(&url, None);
    c.submit("image: org/app:1.0\ncount: 1\n", "j4.yaml")
        .await
        .unwrap();
    let u = url.clone();
    let outs = tokio::task::spawn_blocking(move || {
        [
            vec!["stop", "--purge", "nosuch/../j4"],
            vec!["alloc", "status", "../nodes"],
            vec!["status", "x?index=abc"],
            vec!["stop", "--purge", ".."],
        ]
        .map(|args| (args.clone(), corral(&u, &args)))
    })
    .await
    .unwrap();
    for (args, out) in outs {
        assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("not a valid"), "{args:?}: {err}");
    }
    assert!(c.job("j4", None).await.is_ok(), "j4 was purged");
    cluster.shutdown().await;
}

/// `corral node ls | head -0`-like: the reader is gone before the output
/// is written. The CLI ends quietly, with SIGPIPE's status, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_cli_quietly() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        for args in [
            vec!["node", "ls"],
            vec!["node", "status", "node-0"],
            vec!["events", "--limit", "5000"],
            vec!["events", "--limit", "5000", "--json"],
        ] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
                .args(&args)
                .env("CORRAL_ADDR", &u)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("corral runs");
            // A real pipe whose reader closes before anything is written.
            drop(child.stdout.take());
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let status = child.wait().unwrap();
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(err.is_empty(), "{args:?}: {err}");
            assert_eq!(status.code(), Some(141), "{args:?}: {err}");
        }
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}
