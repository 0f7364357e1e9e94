//! A multi-host cluster on one machine, for fault tests: every host is a
//! network namespace joined to a bridge in the root namespace, running a
//! real `corral agent` process; the `corral server` process runs in the
//! root namespace and listens on the bridge's address.
//!
//! ```text
//!  root netns: corral server on 10.79.S.1:7070 (bridge crlbS)
//!    ├─ veth crlSv0 ── netns crlS-0 (eth0 10.79.S.2): corral agent "host-0", zone a
//!    ├─ veth crlSv1 ── netns crlS-1 (eth0 10.79.S.3): corral agent "host-1", zone b
//!    └─ veth crlSv2 ── netns crlS-2 (eth0 10.79.S.4): corral agent "host-2", zone c
//! ```
//!
//! `S` is a slot (0..=250) claimed per cluster, so clusters of tests that
//! run in parallel (threads or processes) never share a name or a subnet.
//! Processes enter a host with `nsenter --net` (not `ip netns exec`, which
//! remounts `/sys` and so hides the cgroup hierarchies the exec driver
//! needs); tasks started by an agent inherit its namespace, which is how
//! the harness finds "the processes of a host".
//!
//! Faults ([`Cluster`]): [`Cluster::kill_host`] (agent and every task
//! SIGKILLed: a crash), [`Cluster::kill_agent`] / [`Cluster::restart_agent`],
//! [`Cluster::pause_host`] / [`Cluster::resume_host`] (SIGSTOP/SIGCONT of the
//! agent), [`Cluster::cut_off`] / [`Cluster::heal`] (every packet in or out
//! of the host dropped), [`Cluster::kill_server`] / [`Cluster::restart_server`].
//!
//! Invariants: [`Cluster::no_duplicates`] checks that no (group, index) of
//! a job runs twice, per the server and per the processes on the machine
//! (read from each task's environment: `CORRAL_ALLOC_ID`,
//! `CORRAL_ALLOC_INDEX`, ...).
//!
//! Cleanup: dropping a [`Cluster`] (also while a test panics) kills every
//! process of the cluster, removes the cgroups its tasks left, the
//! namespaces, veths and bridge, and the data dirs. A test process killed
//! outright leaves its slot behind: the next cluster reaps every slot
//! whose owner process is gone ([`reap_stale`]).

mod bin;
mod cluster;
mod host;
mod procs;
mod slot;

pub use bin::corral_bin;
pub use cluster::{Cluster, ClusterOptions};
pub use host::Host;
pub use procs::TaskProc;
pub use slot::{reap_stale, unmount_under};

/// Set to 1 to make a missing prerequisite fail the tests instead of
/// skipping them (CI sets it).
pub use crate::prereq::REQUIRE_ENV;

/// What this machine lacks for multi-host tests (empty: nothing).
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = vec![];
    if !crate::procs::is_root() {
        missing.push("root (network namespaces, cgroups, iptables)".to_string());
    }
    for bin in ["ip", "nsenter", "iptables"] {
        if crate::prereq::find_bin(bin).is_none() {
            missing.push(format!("the `{bin}` binary"));
        }
    }
    missing
}

/// Whether the multi-host tests can run here. When they cannot: `false`
/// with a message on stderr, or a panic when [`REQUIRE_ENV`] is 1.
pub fn can_run(test: &str) -> bool {
    crate::prereq::can_run(test, "build a multi-host cluster", &missing_prerequisites())
}
