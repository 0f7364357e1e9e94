//! Processes as the kernel sees them: which network namespace each one is
//! in, its environment, its cgroups, and killing them for good.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// A task's main process found on the machine: a process with the
/// `CORRAL_*` environment the agent gives tasks whose parent is not part of
/// the same task (the `sleep` children of a shell loop do not count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProc {
    /// Index of the host (network namespace) it runs in.
    pub host: usize,
    pub pid: i32,
    pub job: String,
    pub group: String,
    pub task: String,
    pub index: u32,
    pub alloc_id: String,
    /// `CORRAL_NODE_ID` as the agent set it.
    pub node_id: String,
}

/// The inode of a network namespace file (`/run/netns/NAME` or
/// `/proc/PID/ns/net`).
pub fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .collect()
}

/// `(state, ppid, start_time)` from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    // Field 22 overall; the state is field 3.
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// The start time of a live (not zombie) process.
pub fn start_time(pid: i32) -> Option<u64> {
    match stat(pid)? {
        ('Z' | 'X', _, _) => None,
        (_, _, t) => Some(t),
    }
}

/// Whether `pid` is still the process that had `start` (not a reuse).
pub fn same_process(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// Live processes per network namespace inode, for the given inodes.
pub fn pids_by_netns(inodes: &[u64]) -> HashMap<u64, Vec<i32>> {
    let mut out: HashMap<u64, Vec<i32>> = HashMap::new();
    let me = std::process::id() as i32;
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let Some(ino) = netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))) else {
            continue;
        };
        if inodes.contains(&ino) && start_time(pid).is_some() {
            out.entry(ino).or_default().push(pid);
        }
    }
    out
}

pub fn environ(pid: i32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The task main processes among `pids` (all in host `host`).
pub fn task_procs(host: usize, pids: &[i32]) -> Vec<TaskProc> {
    let mut out = vec![];
    for &pid in pids {
        let env = environ(pid);
        let Some(alloc_id) = env.get("CORRAL_ALLOC_ID") else {
            continue;
        };
        let Some((_, ppid, _)) = stat(pid) else {
            continue;
        };
        let parent = environ(ppid);
        if parent.get("CORRAL_ALLOC_ID") == Some(alloc_id)
            && parent.get("CORRAL_TASK") == env.get("CORRAL_TASK")
        {
            continue;
        }
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        out.push(TaskProc {
            host,
            pid,
            job: get("CORRAL_JOB"),
            group: get("CORRAL_GROUP"),
            task: get("CORRAL_TASK"),
            index: get("CORRAL_ALLOC_INDEX").parse().unwrap_or(u32::MAX),
            alloc_id: alloc_id.clone(),
            node_id: get("CORRAL_NODE_ID"),
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

pub fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// SIGKILL every live process in the namespaces `inodes` until none is
/// left (a shell loop may fork between a listing and the kill). Returns
/// the corral cgroups those processes were in (see [`corral_cgroups`]).
pub fn kill_netns(inodes: &[u64]) -> BTreeSet<PathBuf> {
    let mut cgroups = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = pids_by_netns(inodes).into_values().flatten().collect();
        if pids.is_empty() {
            return cgroups;
        }
        for &pid in &pids {
            cgroups.extend(corral_cgroups(pid));
            // Freeze first so nothing forks while its siblings die.
            signal(pid, Signal::STOP);
        }
        for &pid in &pids {
            signal(pid, Signal::KILL);
        }
        if Instant::now() > deadline {
            eprintln!("warning: processes survive SIGKILL in the test namespaces: {pids:?}");
            return cgroups;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The roots of cgroup hierarchies that may hold corral's task cgroups:
/// `/sys/fs/cgroup/corral` (v2) and `/sys/fs/cgroup/<controller>/corral`
/// (v1).
pub fn corral_cgroup_parents() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut out = vec![];
    if base.join("corral").is_dir() {
        out.push(base.join("corral"));
    }
    if let Ok(rd) = std::fs::read_dir(base) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path().join("corral");
            if p.is_dir() {
                out.push(p);
            }
        }
    }
    out
}

/// The corral task cgroups (`.../corral/<name>`) a process is in.
pub fn corral_cgroups(pid: i32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        // `id:controllers:/path`
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if let Some(rest) = path.strip_prefix("/corral/")
            && !rest.is_empty()
            && !rest.contains('/')
        {
            names.insert(rest.to_string());
        }
    }
    let parents = corral_cgroup_parents();
    names
        .iter()
        .flat_map(|n| parents.iter().map(move |p| p.join(n)))
        .filter(|p| p.is_dir())
        .collect()
}

/// Task cgroups of the given allocations: every `.../corral/<alloc>-*`.
pub fn alloc_cgroups(alloc_ids: &BTreeSet<String>) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if alloc_ids.is_empty() {
        return out;
    }
    for parent in corral_cgroup_parents() {
        let Ok(rd) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            if alloc_ids
                .iter()
                .any(|id| name.starts_with(&format!("{id}-")))
            {
                out.insert(e.path());
            }
        }
    }
    out
}

/// Kill what is left in each cgroup and remove it (retrying while the
/// dying processes leave).
pub fn remove_cgroups(cgroups: &BTreeSet<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<&PathBuf> = cgroups.iter().filter(|p| p.is_dir()).collect();
    while !left.is_empty() {
        left.retain(|cg| {
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                signal(pid, Signal::KILL);
            }
            std::fs::remove_dir(cg).is_err() && cg.is_dir()
        });
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("warning: cannot remove cgroups {left:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
