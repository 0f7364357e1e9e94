//! Reading `/proc/PID/stat`: whether a process still runs, and its start
//! time (field 22, clock ticks since boot), which together with the pid
//! names one process for good (a pid alone may be reused).

use std::io;

/// The few fields of `/proc/PID/stat` the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    /// A zombie (`Z`) or dead (`X`) process has exited: only its parent
    /// (or PID 1, which on some machines reaps late) has yet to collect it.
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the content of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`.
pub fn parse_stat(content: &str) -> Option<ProcStat> {
    let rest = &content[content.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of the file.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        start_time,
    })
}

/// Reads `/proc/PID/stat`; `ErrorKind::NotFound` when no such process.
pub fn read_stat(pid: i32) -> io::Result<ProcStat> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&content).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// Whether `pid` exists and has not exited (a zombie counts as exited).
pub fn is_running(pid: i32) -> bool {
    matches!(read_stat(pid), Ok(st) if !st.is_exited())
}

/// Whether the process `pid` that started at `start_time` still runs: the
/// pid exists, is not a zombie, and was not reused by another process.
pub fn is_same_running(pid: i32, start_time: u64) -> bool {
    matches!(read_stat(pid), Ok(st) if !st.is_exited() && st.start_time == start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_the_command_name() {
        let line = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        let st = parse_stat(line).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.pgrp, 1234);
        assert_eq!(st.start_time, 98765);
        assert!(!st.is_exited());
    }

    #[test]
    fn zombie_counts_as_exited() {
        let line = "7 (sh) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        let st = parse_stat(line).expect("parses");
        assert!(st.is_exited());
    }

    #[test]
    fn own_process_is_running() {
        let pid = std::process::id() as i32;
        let st = read_stat(pid).expect("own stat");
        assert!(is_same_running(pid, st.start_time));
        assert!(!is_same_running(pid, st.start_time + 1));
    }

    #[test]
    fn truncated_stat_is_refused() {
        assert!(parse_stat("1 (x) S 1").is_none());
        assert!(parse_stat("garbage").is_none());
    }
}
