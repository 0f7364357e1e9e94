//! Names that are not names, and readers that go away: the CLI neither
//! reaches another object nor panics.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use corral_client::Client;
use corral_testkit::TestCluster;

fn corral(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", addr)
        .output()
        .expect("corral runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

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

