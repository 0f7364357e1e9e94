//! Slots: the names and the subnet of one cluster, claimed so that
//! clusters running at the same time (threads or processes) never collide,
//! and reaped when the process that claimed one died without cleaning up.
//!
//! Slot `n` owns the bridge `crlb<n>` (10.79.n.1/24), the namespaces
//! `crl<n>-<i>`, the veths `crl<n>v<i>` (root side) and the state dir
//! `$TMPDIR/corral-netns/<n>/` (data dirs, logs, `owner.pid` and
//! `server.pid`). The state dir is created first (the claim), then the
//! bridge; teardown goes the other way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use rustix::process::Signal;

use super::host::run;
use super::procs;

/// First two octets of every cluster subnet (`10.79.<slot>.0/24`); the
/// container tests use 10.77 and 10.78.
pub(crate) const NET_PREFIX: &str = "10.79";
const SLOTS: u32 = 251;

pub(crate) fn state_root() -> PathBuf {
    std::env::temp_dir().join("corral-netns")
}

pub(crate) fn bridge_name(n: u8) -> String {
    format!("crlb{n}")
}

pub(crate) fn netns_name(n: u8, i: usize) -> String {
    format!("crl{n}-{i}")
}

pub(crate) fn veth_name(n: u8, i: usize) -> String {
    format!("crl{n}v{i}")
}

pub(crate) fn peer_name(n: u8, i: usize) -> String {
    format!("crl{n}n{i}")
}

/// A claimed slot; [`teardown`] releases it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub n: u8,
    pub dir: PathBuf,
}

/// `pid start_time` of a live process, as written in the pid files.
pub(crate) fn pid_line(pid: i32) -> String {
    format!("{pid} {}\n", procs::start_time(pid).unwrap_or(0))
}

fn read_pid_file(path: &Path) -> Option<(i32, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Claims a free slot and creates its bridge.
pub(crate) fn claim() -> Slot {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    reap_stale();
    let root = state_root();
    std::fs::create_dir_all(&root).expect("create the netns state root");
    let used = run("ip", &["-o", "addr"]).unwrap_or_default();
    let start = std::process::id().wrapping_mul(31) + COUNTER.fetch_add(1, Ordering::Relaxed) * 7;
    for k in 0..SLOTS {
        let n = ((start + k) % SLOTS) as u8;
        if used.contains(&format!(" {NET_PREFIX}.{n}.")) {
            continue;
        }
        let dir = root.join(n.to_string());
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        let me = std::process::id() as i32;
        if std::fs::write(dir.join("owner.pid"), pid_line(me)).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let br = bridge_name(n);
        // The bridge is the second lock: a reaper may still be removing
        // the namespaces of a slot whose dir it already took away.
        if run("ip", &["link", "add", &br, "type", "bridge"]).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let addr = format!("{NET_PREFIX}.{n}.1/24");
        let up = run("ip", &["addr", "add", &addr, "dev", &br])
            .and_then(|_| run("ip", &["link", "set", &br, "up"]));
        if let Err(e) = up {
            let _ = run("ip", &["link", "del", &br]);
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot set up the bridge {br}: {e}");
        }
        return Slot { n, dir };
    }
    panic!(
        "no free netns slot (all {SLOTS} in use under {})",
        root.display()
    );
}

/// Creates host `i` of slot `n`: namespace, veth pair into the bridge,
/// address `10.79.n.(i+2)/24`, loopback up.
pub(crate) fn create_host(n: u8, i: usize) -> Result<(), String> {
    let ns = netns_name(n, i);
    let veth = veth_name(n, i);
    let peer = peer_name(n, i);
    let addr = format!("{NET_PREFIX}.{n}.{}/24", i + 2);
    run("ip", &["netns", "add", &ns])?;
    run(
        "ip",
        &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
    )?;
    run("ip", &["link", "set", &peer, "netns", &ns])?;
    run(
        "ip",
        &["link", "set", &veth, "master", &bridge_name(n), "up"],
    )?;
    run("ip", &["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
    run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
    run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// The namespaces of slot `n` that exist.
fn slot_namespaces(n: u8) -> Vec<String> {
    let prefix = format!("crl{n}-");
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Allocation ids the agents of a slot recorded (`host-*/agent/allocs/*`).
fn recorded_allocs(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return ids;
    };
    for host in rd.filter_map(Result::ok) {
        if let Ok(allocs) = std::fs::read_dir(host.path().join("agent").join("allocs")) {
            ids.extend(
                allocs
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_string()),
            );
        }
    }
    ids
}

/// Removes everything of slot `n`: the server (from its pid file), every
/// process in its namespaces, the cgroups their tasks left, namespaces,
/// veths, bridge and `dir`. Idempotent; never fails (it warns).
pub(crate) fn teardown(n: u8, dir: &Path, extra_allocs: &BTreeSet<String>) {
    if let Some((pid, start)) = read_pid_file(&dir.join("server.pid"))
        && procs::same_process(pid, start)
    {
        procs::signal(pid, Signal::KILL);
    }
    let namespaces = slot_namespaces(n);
    let inodes: Vec<u64> = namespaces
        .iter()
        .filter_map(|ns| procs::netns_inode(&Path::new("/run/netns").join(ns)))
        .collect();
    let mut cgroups = procs::kill_netns(&inodes);
    let mut allocs = recorded_allocs(dir);
    allocs.extend(extra_allocs.iter().cloned());
    cgroups.extend(procs::alloc_cgroups(&allocs));
    procs::remove_cgroups(&cgroups);
    for ns in &namespaces {
        if let Err(e) = run("ip", &["netns", "del", ns]) {
            eprintln!("warning: {e}");
        }
    }
    // The veths die with their namespace's end; these catch a half-made
    // host whose peer never moved.
    for i in 0..16 {
        let veth = veth_name(n, i);
        if Path::new("/sys/class/net").join(&veth).exists() {
            let _ = run("ip", &["link", "del", &veth]);
        }
    }
    let br = bridge_name(n);
    if Path::new("/sys/class/net").join(&br).exists()
        && let Err(e) = run("ip", &["link", "del", &br])
    {
        eprintln!("warning: {e}");
    }
    // Volumes the agents left loop-mounted (a killed agent unmounts
    // nothing): deepest first, so the directory can go.
    unmount_under(dir);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        eprintln!("warning: cannot remove {}: {e}", dir.display());
    }
}

/// Unmount every mount point under `dir` and detach the loop devices of
/// files in it (volumes an agent left: a killed agent releases nothing).
pub fn unmount_under(dir: &Path) {
    corral_volumes::release::release_under(dir);
}

/// Tears down every slot whose owner process is gone (a test process
/// killed before its clusters were dropped), and bridges of slots that
/// have no state dir at all.
pub fn reap_stale() {
    let root = state_root();
    let Ok(rd) = std::fs::read_dir(&root) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(n) = name.parse::<u8>() else {
            continue;
        };
        let dir = e.path();
        let alive = match read_pid_file(&dir.join("owner.pid")) {
            Some((pid, start)) => procs::same_process(pid, start),
            // Being claimed right now, unless it is old.
            None => std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .map(|t| {
                    SystemTime::now()
                        .duration_since(t)
                        .unwrap_or(Duration::ZERO)
                        < Duration::from_secs(60)
                })
                .unwrap_or(false),
        };
        if alive {
            continue;
        }
        // Only one reaper wins the rename.
        let taken = root.join(format!(".reaping-{n}-{}", std::process::id()));
        if std::fs::rename(&dir, &taken).is_err() {
            continue;
        }
        eprintln!("reaping netns slot {n} left by a dead test process");
        teardown(n, &taken, &BTreeSet::new());
    }
    // Bridges without a slot dir and no reaper at work: leftovers.
    let Ok(links) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    let reaping: Vec<String> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(".reaping-"))
                .collect()
        })
        .unwrap_or_default();
    for l in links.filter_map(Result::ok) {
        let name = l.file_name().to_string_lossy().to_string();
        let Some(n) = name.strip_prefix("crlb").and_then(|s| s.parse::<u8>().ok()) else {
            continue;
        };
        if root.join(n.to_string()).exists()
            || reaping
                .iter()
                .any(|r| r.starts_with(&format!(".reaping-{n}-")))
        {
            continue;
        }
        eprintln!("removing the leftover bridge {name}");
        teardown(n, &root.join(format!(".gone-{n}")), &BTreeSet::new());
    }
}
