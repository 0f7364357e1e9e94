//! The one place external tools run: every `mount`, `losetup`, `mkfs.*`,
//! `btrfs`, `tar` goes through [`Cmd`], so a failure always carries the
//! command line and its stderr, and a streamed child is always reaped.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::provider::{Export, VolumeError};

/// How much of a failing command's stderr goes into the error (its tail).
const STDERR_KEEP: usize = 4000;

/// Directories searched after `$PATH`: the agent may run with a PATH that
/// lacks the sbin directories where `mkfs.*`, `losetup` and `btrfs` live.
const EXTRA_PATH: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Full path of `prog`, searching `$PATH` then the sbin directories.
pub fn find_program(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PATH.iter().map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// One external command for one volume.
pub(crate) struct Cmd {
    vol: String,
    prog: &'static str,
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
    ok_codes: &'static [i32],
}

impl Cmd {
    pub fn new(vol: &str, prog: &'static str) -> Self {
        Cmd {
            vol: vol.to_string(),
            prog,
            args: Vec::new(),
            env: Vec::new(),
            ok_codes: &[0],
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn env(mut self, k: &'static str, v: &'static str) -> Self {
        self.env.push((k, v));
        self
    }

    /// Exit codes that mean success (e2fsck exits 1 after fixing things).
    pub fn ok_codes(mut self, codes: &'static [i32]) -> Self {
        self.ok_codes = codes;
        self
    }

    /// The command line as it would be typed, for errors and logs.
    pub fn line(&self) -> String {
        let mut s = self.prog.to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self) -> Command {
        let prog = find_program(self.prog).unwrap_or_else(|| PathBuf::from(self.prog));
        let mut c = Command::new(prog);
        c.args(&self.args);
        // Tools print localized messages and dates otherwise.
        c.env("LC_ALL", "C");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn spawn_failed(&self, e: io::Error) -> VolumeError {
        VolumeError::Command {
            vol: self.vol.clone(),
            what: self.line(),
            detail: format!("cannot start {}: {e}", self.prog),
        }
    }

    fn check(&self, status: ExitStatus, stderr: &[u8]) -> Result<(), VolumeError> {
        if status.code().is_some_and(|c| self.ok_codes.contains(&c)) {
            return Ok(());
        }
        Err(VolumeError::Command {
            vol: self.vol.clone(),
            what: self.line(),
            detail: format!("{status}: {}", tail(stderr)),
        })
    }

    /// Run to completion; stdout is returned, stderr only on failure.
    pub fn run(self) -> Result<String, VolumeError> {
        tracing::debug!(vol = %self.vol, cmd = %self.line(), "run");
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_failed(e))?;
        self.check(out.status, &out.stderr)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start with stdout as a stream the caller reads ([`Export`]).
    pub fn stream_stdout(self) -> Result<Box<dyn Export>, VolumeError> {
        tracing::debug!(vol = %self.vol, cmd = %self.line(), "stream");
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_failed(e))?;
        let stdout = child.stdout.take();
        let stderr = drain_stderr(&mut child);
        Ok(Box::new(ChildExport {
            cmd: self,
            child: Some(child),
            stdout,
            stderr,
        }))
    }

    /// Run with `input` copied into stdin until its end.
    pub fn feed(self, input: &mut dyn Read) -> Result<(), VolumeError> {
        tracing::debug!(vol = %self.vol, cmd = %self.line(), "feed");
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_failed(e))?;
        // Read stderr on the side so a chatty child never blocks on it
        // while we block writing its stdin.
        let stderr = drain_stderr(&mut child);
        let copied = match child.stdin.take() {
            Some(mut stdin) => copy_in(input, &mut stdin),
            None => Ok(()),
        };
        let status = child.wait();
        let err = join_stderr(stderr);
        let status = status.map_err(|e| VolumeError::Io {
            vol: self.vol.clone(),
            op: format!("wait for {}", self.line()),
            source: e,
        })?;
        // The child's own failure explains a broken pipe better than EPIPE.
        self.check(status, &err)?;
        match copied {
            Ok(()) => Ok(()),
            Err(CopyError::Read(e)) => Err(VolumeError::Io {
                vol: self.vol.clone(),
                op: format!("read the stream for {}", self.line()),
                source: e,
            }),
            Err(CopyError::Write(e)) => Err(VolumeError::Io {
                vol: self.vol.clone(),
                op: format!("write the stream into {}", self.line()),
                source: e,
            }),
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, but saying which side failed; closes stdin at the end.
fn copy_in(input: &mut dyn Read, stdin: &mut impl Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        stdin.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

fn drain_stderr(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    let mut stderr = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just ends the capture: stderr is only for messages.
        let _ = stderr.read_to_end(&mut buf);
        buf
    }))
}

fn join_stderr(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn tail(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.len() <= STDERR_KEEP {
        return s.to_string();
    }
    let mut start = s.len() - STDERR_KEEP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// A running producer (`btrfs send`, `tar -c`) whose stdout is the export.
struct ChildExport {
    cmd: Cmd,
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Read for ChildExport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stdout {
            Some(out) => out.read(buf),
            None => Ok(0),
        }
    }
}

impl Export for ChildExport {
    fn finish(mut self: Box<Self>) -> Result<(), VolumeError> {
        // Closing our end first: a producer not read to the end then dies
        // of SIGPIPE and reports failure instead of blocking forever.
        self.stdout = None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(|e| VolumeError::Io {
            vol: self.cmd.vol.clone(),
            op: format!("wait for {}", self.cmd.line()),
            source: e,
        })?;
        let err = join_stderr(self.stderr.take());
        self.cmd.check(status, &err)
    }
}

impl Drop for ChildExport {
    /// An export dropped without `finish` is abandoned: stop and reap it.
    fn drop(&mut self) {
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        join_stderr(self.stderr.take());
    }
}

/// Mount points in this process's namespace, decoded from mountinfo.
pub(crate) fn mount_points() -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is a mount point (compared after resolving symlinks, as
/// the kernel lists resolved paths).
pub(crate) fn is_mounted(path: &Path) -> io::Result<bool> {
    let Ok(real) = path.canonicalize() else {
        return Ok(false);
    };
    Ok(mount_points()?.contains(&real))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo(r"/a\04"), r"/a\04");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn failure_carries_line_and_stderr() {
        let e = Cmd::new("v", "sh")
            .arg("-c")
            .arg("echo boom >&2; exit 3")
            .run();
        let Err(VolumeError::Command { what, detail, .. }) = e else {
            panic!("expected a command error, got {e:?}");
        };
        assert!(what.starts_with("sh -c"), "{what}");
        assert!(detail.contains("boom") && detail.contains('3'), "{detail}");
    }

    #[test]
    fn missing_program_is_a_command_error() {
        let e = Cmd::new("v", "no-such-program-corral").run();
        assert!(matches!(e, Err(VolumeError::Command { .. })), "{e:?}");
    }

    #[test]
    fn stream_and_feed() {
        let mut ex = Cmd::new("v", "sh")
            .arg("-c")
            .arg("printf hello")
            .stream_stdout()
            .expect("start");
        let mut s = String::new();
        ex.read_to_string(&mut s).expect("read");
        ex.finish().expect("finish");
        assert_eq!(s, "hello");

        let bad = Cmd::new("v", "sh")
            .arg("-c")
            .arg("echo nope >&2; exit 1")
            .stream_stdout()
            .expect("start");
        assert!(bad.finish().is_err());

        Cmd::new("v", "sh")
            .arg("-c")
            .arg("test \"$(cat)\" = abc")
            .feed(&mut &b"abc"[..])
            .expect("feed");
        let e = Cmd::new("v", "sh")
            .arg("-c")
            .arg("exit 2")
            .feed(&mut &vec![0u8; 1 << 20][..]);
        assert!(matches!(e, Err(VolumeError::Command { .. })), "{e:?}");
    }
}
