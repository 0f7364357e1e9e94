//! Looking at real processes: count the live ones whose command line
//! carries a marker (zombies do not count: PID 1 reaps late here).

use std::path::Path;

/// Live processes whose command line contains `marker`.
pub fn live_with_marker(marker: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id();
    let marked = |pid: u32| {
        let dir = Path::new("/proc").join(pid.to_string());
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        cmd.contains(marker) && !is_zombie(&dir)
    };
    let found: Vec<u32> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| marked(*pid))
        .collect();
    // A server forking a child per request (busybox httpd answering a
    // health check) is one task, not two: children of a marked process
    // are not counted.
    found
        .iter()
        .copied()
        .filter(|pid| parent(*pid).is_none_or(|pp| !found.contains(&pp)))
        .collect()
}

/// The parent pid, from `/proc/<pid>/stat` (the field after the
/// parenthesised command name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (up to `deadline`, stretched by the harness's patience) until
/// exactly `n` live processes carry `marker`.
pub async fn wait_procs(marker: &str, n: usize, deadline: std::time::Duration) {
    crate::eventually(&format!("{n} processes of {marker}"), deadline, || async {
        let p = live_with_marker(marker);
        if p.len() == n {
            Ok(())
        } else {
            Err(format!("{} live: {p:?}", p.len()))
        }
    })
    .await
}

fn is_zombie(dir: &Path) -> bool {
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    // The state follows the last ')' (the command name may hold spaces).
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X'))
        .unwrap_or(true)
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
