//! Running restic (0.14, Debian 12) for one volume against one target.
//!
//! # The fixed source path
//!
//! restic records the absolute path it was given. Backing up a snapshot
//! directory such as `.../snapshots/backup-1712` directly would record a new
//! path every time: restic would find no parent (so it rereads every file
//! instead of skipping unchanged ones), `forget` would group every backup
//! alone (so retention would keep them all), and a restore would land under
//! that long path. So every backup is taken from `/corral-backup/<volume>`:
//! restic runs in a private mount namespace (`unshare --mount --propagation
//! private`) in which a small tmpfs covers `/corral-backup` and the snapshot
//! is bind-mounted, read-only, at `/corral-backup/<volume>`. Nothing is
//! visible outside the namespace, it disappears with the process (no mount
//! to clean up after a crash), and two backups of the same volume cannot
//! trip over each other's mount point. The only trace on the host is the
//! empty directory `/corral-backup`. The namespace and its three mounts cost
//! 8-19 ms here (`dir_target_timing` prints it), against ~3 s for backing up
//! 200 MiB and ~1.7 s for an incremental one. Alternatives were worse: a bind mount
//! in the host namespace leaks on a crash; restic 0.14 has no option to
//! rewrite the recorded path; a symlink is backed up as a symlink.
//! All snapshots are also recorded with `--host corral`, because restic picks
//! the parent by host and path and a volume moves between nodes.
//!
//! # Restore
//!
//! restic 0.14 cannot restore a sub-path of a snapshot (`id:/path` arrived
//! in 0.17; tried here: "no matching ID found"), and restores the recorded
//! path under `--target`. So a restore runs in the same kind of namespace:
//! the destination directory is bind-mounted at
//! `/corral-backup/restore/corral-backup/<volume>` and restic restores into
//! `--target /corral-backup/restore`, which writes the files straight into
//! the destination. No copy, no move, nothing nested.
//!
//! # Secrets
//!
//! The repository password and the S3 keys go to the child's environment
//! only (`RESTIC_PASSWORD`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`);
//! any `RESTIC_*`/`AWS_*` the agent itself inherited is removed so it cannot
//! override them. restic's stderr goes into errors with every secret value
//! replaced by `***`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::target::BackupTarget;
use super::time::{format_restic_time, parse_rfc3339_ms};
use crate::provider::VolumeRef;

/// Where a volume's files appear to restic: `/corral-backup/<volume>`.
pub const MOUNT_ROOT: &str = "/corral-backup";

/// The host name recorded in every snapshot (restic's `--host`).
pub const SNAPSHOT_HOST: &str = "corral";

/// How much of restic's stderr an error keeps (the end, where the reason is).
const STDERR_KEEP: usize = 4000;

/// Runs restic. `cache_dir` is restic's local cache of repository metadata
/// (one subdirectory per repository); it may be deleted at any time. Its
/// `tmp` subdirectory takes restic's temporary pack files, which would
/// otherwise fill `/tmp` (often a small tmpfs) during a large backup.
#[derive(Debug, Clone)]
pub struct Restic {
    pub binary: PathBuf,
    pub cache_dir: PathBuf,
}

/// One backup (a restic snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// restic's full snapshot id (64 hex digits).
    pub id: String,
    /// Milliseconds since 1970 (UTC) the backup was taken (restic's `--time`).
    pub time: u64,
    pub tags: Vec<String>,
    /// Only known right after the backup: restic 0.14 does not store the
    /// summary in the snapshot (0.17 does), so `list` gives `None`.
    pub stats: Option<BackupStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes written to the repository (after dedup and compression).
    pub bytes_added: u64,
    /// Size of all files in the backup.
    pub total_bytes: u64,
    /// Wall time of the whole run (namespace, restic, lookup of the id).
    pub duration_ms: u64,
}

/// What to keep (restic `forget --keep-*`); a field left out keeps nothing
/// by that rule. In a config: `keep: {daily: 7, weekly: 4}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest N backups.
    pub last: Option<u32>,
    /// The newest backup of each of the last N hours that have one.
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Every backup younger than N days (relative to the newest backup, as
    /// restic's `--keep-within` does).
    pub within_days: Option<u32>,
}

impl Retention {
    fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, v: Option<u32>, suffix: &str| {
            if let Some(n) = v {
                out.push(flag.to_string());
                out.push(format!("{n}{suffix}"));
            }
        };
        push("--keep-last", self.last, "");
        push("--keep-hourly", self.hourly, "");
        push("--keep-daily", self.daily, "");
        push("--keep-weekly", self.weekly, "");
        push("--keep-monthly", self.monthly, "");
        push("--keep-yearly", self.yearly, "");
        push("--keep-within", self.within_days, "d");
        out
    }

    /// A policy keeping nothing would delete every backup; restic 0.14 treats
    /// it as "keep all" instead, and either way it is a config mistake.
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
            self.within_days,
        ]
        .iter()
        .all(|v| v.unwrap_or(0) == 0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetResult {
    /// Full ids of the backups removed (and pruned).
    pub removed: Vec<String>,
    /// Full ids of the backups kept.
    pub kept: Vec<String>,
}

/// Every failure says which target, volume and operation.
#[derive(Debug, thiserror::Error)]
#[error("backup target {target}, volume {volume}: {op}: {kind}")]
pub struct BackupError {
    pub target: String,
    pub volume: String,
    pub op: &'static str,
    pub kind: BackupErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupErrorKind {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wrong repository password (restic: {stderr})")]
    WrongPassword { stderr: String },
    #[error("the repository is locked by another restic (restic: {stderr})")]
    Locked { stderr: String },
    #[error("no repository there yet (restic: {stderr})")]
    NoRepository { stderr: String },
    #[error("restic failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("cannot read restic's output: {0}")]
    Parse(String),
}

/// Volume names become a path component and part of a repository URL.
fn check_volume(vol: &VolumeRef) -> Result<(), String> {
    let v = &vol.0;
    let ok = !v.is_empty()
        && v.len() <= 200
        && !v.starts_with(['.', '-'])
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "volume name {v:?} is not usable for a backup (letters, digits, '-', '_', '.')"
        ))
    }
}

/// Snapshot ids come from callers (the API); only hex prefixes or `latest`
/// reach restic, so nothing can be read as an option.
fn check_snapshot_id(id: &str) -> Result<(), String> {
    if id == "latest"
        || (id.len() >= 8 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(format!("{id:?} is not a snapshot id"))
    }
}

/// Replace every secret value in `text` with `***` and keep the tail.
fn scrub(target: &BackupTarget, text: &str) -> String {
    let mut out = text.trim().to_string();
    for s in target.secrets() {
        if !s.is_empty() {
            out = out.replace(s.expose(), "***");
        }
    }
    if out.len() > STDERR_KEEP {
        let mut cut = out.len() - STDERR_KEEP;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

/// The mount namespace a command runs in.
enum Namespace<'a> {
    /// Plain restic (init, snapshots, forget).
    None,
    /// `src` read-only at `/corral-backup/<vol>`.
    Backup { src: &'a Path },
    /// `dest` at `/corral-backup/restore/corral-backup/<vol>`.
    Restore { dest: &'a Path },
}

// `$1` = MOUNT_ROOT, `$2` = source/destination, `$3` = volume; the rest is the
// restic command line. Arguments, never interpolation: no quoting to get wrong.
const BACKUP_SCRIPT: &str = r#"set -eu
mount -t tmpfs -o mode=0755,size=1m corral-backup "$1"
mkdir "$1/$3"
mount --bind "$2" "$1/$3"
mount -o remount,bind,ro "$1/$3"
shift 3
exec "$@""#;

const RESTORE_SCRIPT: &str = r#"set -eu
mount -t tmpfs -o mode=0755,size=1m corral-backup "$1"
mkdir -p "$1/restore$1/$3"
mount --bind "$2" "$1/restore$1/$3"
shift 3
exec "$@""#;

#[derive(Deserialize)]
struct SnapshotJson {
    id: String,
    time: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct SummaryJson {
    message_type: String,
    #[serde(default)]
    files_new: u64,
    #[serde(default)]
    files_changed: u64,
    #[serde(default)]
    files_unmodified: u64,
    #[serde(default)]
    data_added: u64,
    #[serde(default)]
    total_bytes_processed: u64,
    #[serde(default)]
    snapshot_id: String,
}

#[derive(Deserialize)]
struct ForgetGroupJson {
    #[serde(default)]
    keep: Option<Vec<SnapshotJson>>,
    #[serde(default)]
    remove: Option<Vec<SnapshotJson>>,
}

impl Restic {
    pub fn new(binary: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Restic {
            binary: binary.into(),
            cache_dir: cache_dir.into(),
        }
    }

    /// The volume's fixed path as recorded in its snapshots.
    pub fn source_path(vol: &VolumeRef) -> String {
        format!("{MOUNT_ROOT}/{}", vol.0)
    }

    fn err(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        op: &'static str,
        kind: BackupErrorKind,
    ) -> BackupError {
        BackupError {
            target: target.name.clone(),
            volume: vol.0.clone(),
            op,
            kind,
        }
    }

    /// Run restic `args` (the subcommand first) for `vol` in `target`,
    /// returning its output when it exits 0.
    fn run(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        op: &'static str,
        ns: Namespace<'_>,
        args: &[String],
    ) -> Result<Output, BackupError> {
        check_volume(vol).map_err(|e| self.err(target, vol, op, BackupErrorKind::Invalid(e)))?;
        let tmp = self.cache_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|source| {
            self.err(
                target,
                vol,
                op,
                BackupErrorKind::Io {
                    path: tmp.display().to_string(),
                    source,
                },
            )
        })?;
        let mut restic_args: Vec<OsString> = args.iter().map(OsString::from).collect();
        restic_args.push("--repo".into());
        restic_args.push(target.repository(&vol.0).into());
        restic_args.push("--cache-dir".into());
        restic_args.push(self.cache_dir.clone().into_os_string());
        for o in target.restic_options() {
            restic_args.push("--option".into());
            restic_args.push(o.into());
        }

        let (program, mut cmd) = match ns {
            Namespace::None => {
                let mut c = Command::new(&self.binary);
                c.args(&restic_args);
                (self.binary.display().to_string(), c)
            }
            Namespace::Backup { src: dir } | Namespace::Restore { dest: dir } => {
                let script = if matches!(ns, Namespace::Backup { .. }) {
                    BACKUP_SCRIPT
                } else {
                    RESTORE_SCRIPT
                };
                // The mount point for the namespace's tmpfs; an empty
                // directory on the host, made once.
                std::fs::create_dir_all(MOUNT_ROOT).map_err(|source| {
                    self.err(
                        target,
                        vol,
                        op,
                        BackupErrorKind::Io {
                            path: MOUNT_ROOT.into(),
                            source,
                        },
                    )
                })?;
                let mut c = Command::new("unshare");
                c.args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                ])
                .arg(MOUNT_ROOT)
                .arg(dir)
                .arg(&vol.0)
                .arg(&self.binary)
                .args(&restic_args);
                ("unshare".to_string(), c)
            }
        };

        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("RESTIC_") || k.starts_with("AWS_") {
                cmd.env_remove(&*k);
            }
        }
        // UTC so that `--time` means what we formatted and restic's own
        // times come back with a `Z`.
        cmd.env("TZ", "UTC");
        cmd.env("TMPDIR", &tmp);
        for (k, v) in target.restic_env() {
            cmd.env(k, v);
        }
        // No terminal: restic and ssh must fail rather than prompt.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(target = %target.name, volume = %vol.0, op, "running restic");
        let out = cmd.output().map_err(|source| {
            self.err(target, vol, op, BackupErrorKind::Spawn { program, source })
        })?;
        if out.status.success() {
            return Ok(out);
        }
        let stderr = scrub(target, &String::from_utf8_lossy(&out.stderr));
        let kind = if stderr.contains("wrong password or no key found") {
            BackupErrorKind::WrongPassword { stderr }
        } else if stderr.contains("repository is already locked") {
            BackupErrorKind::Locked { stderr }
        } else if stderr.contains("unable to open config file")
            // restic asks "Is there a repository...?" for any failure to read
            // the config (connection refused too); only these mean "absent"
            // (dir, sftp, S3 key, S3 bucket as restic 0.14 words them).
            && ["no such file", "file does not exist", "key does not exist", "bucket does not exist"]
                .iter()
                .any(|m| stderr.contains(m))
        {
            BackupErrorKind::NoRepository { stderr }
        } else {
            BackupErrorKind::Failed {
                status: out.status.to_string(),
                stderr,
            }
        };
        Err(self.err(target, vol, op, kind))
    }

    /// Create the volume's repository unless it exists; `true` if created.
    /// For S3, restic creates the bucket too if it is missing.
    pub fn ensure_repo(&self, target: &BackupTarget, vol: &VolumeRef) -> Result<bool, BackupError> {
        match self.run(target, vol, "init", Namespace::None, &["init".into()]) {
            Ok(_) => Ok(true),
            Err(BackupError {
                kind: BackupErrorKind::Failed { stderr, .. },
                ..
            }) if stderr.contains("config file already exists")
                || stderr.contains("already initialized") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Back up the files of `src_dir` (a read-only snapshot of the volume)
    /// as `/corral-backup/<vol>`.
    pub fn backup(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        src_dir: &Path,
        tags: &[String],
    ) -> Result<BackupInfo, BackupError> {
        self.backup_at(target, vol, src_dir, tags, None)
    }

    /// [`Restic::backup`] recording `time_ms` (ms since 1970) as the backup's
    /// time instead of now: for imports of older data and for tests of
    /// retention.
    pub fn backup_at(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        src_dir: &Path,
        tags: &[String],
        time_ms: Option<u64>,
    ) -> Result<BackupInfo, BackupError> {
        const OP: &str = "backup";
        let started = Instant::now();
        if !src_dir.is_dir() {
            return Err(self.err(
                target,
                vol,
                OP,
                BackupErrorKind::Invalid(format!("{} is not a directory", src_dir.display())),
            ));
        }
        let mut args: Vec<String> = vec![
            "backup".into(),
            "--json".into(),
            "--quiet".into(),
            "--host".into(),
            SNAPSHOT_HOST.into(),
            // A snapshot is one file system; nothing is mounted inside it.
            "--one-file-system".into(),
        ];
        for t in tags {
            if t.is_empty() || t.contains([',', '\n']) {
                return Err(self.err(
                    target,
                    vol,
                    OP,
                    BackupErrorKind::Invalid(format!("tag {t:?} is empty or has a ','")),
                ));
            }
            args.push("--tag".into());
            args.push(t.clone());
        }
        if let Some(ms) = time_ms {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            args.push("--time".into());
            args.push(format_restic_time(ms));
        }
        args.push(Self::source_path(vol));
        let out = self.run(target, vol, OP, Namespace::Backup { src: src_dir }, &args)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .filter(|l| l.contains("\"summary\""))
            .find_map(|l| serde_json::from_str::<SummaryJson>(l).ok())
            .filter(|s| s.message_type == "summary" && !s.snapshot_id.is_empty())
            .ok_or_else(|| {
                self.err(
                    target,
                    vol,
                    OP,
                    BackupErrorKind::Parse("no summary line in `backup --json`".into()),
                )
            })?;
        // The summary has the short id only; look the snapshot up for its
        // full id and its recorded time.
        let snap = self
            .snapshots(target, vol, OP, Some(&summary.snapshot_id))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                self.err(
                    target,
                    vol,
                    OP,
                    BackupErrorKind::Parse(format!(
                        "snapshot {} not found after the backup",
                        summary.snapshot_id
                    )),
                )
            })?;
        let (id, time, tags, _) = snap;
        Ok(BackupInfo {
            id,
            time,
            tags,
            stats: Some(BackupStats {
                files_new: summary.files_new,
                files_changed: summary.files_changed,
                files_unmodified: summary.files_unmodified,
                bytes_added: summary.data_added,
                total_bytes: summary.total_bytes_processed,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
        })
    }

    /// `(id, time, tags, paths)` of every snapshot, or of the one `id`.
    #[allow(clippy::type_complexity)]
    fn snapshots(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        op: &'static str,
        id: Option<&str>,
    ) -> Result<Vec<(String, u64, Vec<String>, Vec<String>)>, BackupError> {
        let mut args = vec!["snapshots".to_string(), "--json".into()];
        if let Some(id) = id {
            args.push(id.to_string());
        }
        let out = self.run(target, vol, op, Namespace::None, &args)?;
        let snaps: Vec<SnapshotJson> = serde_json::from_slice(&out.stdout).map_err(|e| {
            self.err(
                target,
                vol,
                op,
                BackupErrorKind::Parse(format!("`snapshots --json`: {e}")),
            )
        })?;
        let mut res = Vec::with_capacity(snaps.len());
        for s in snaps {
            let time = parse_rfc3339_ms(&s.time)
                .and_then(|t| u64::try_from(t).ok())
                .ok_or_else(|| {
                    self.err(
                        target,
                        vol,
                        op,
                        BackupErrorKind::Parse(format!("snapshot time {:?}", s.time)),
                    )
                })?;
            res.push((
                s.id,
                time,
                s.tags.unwrap_or_default(),
                s.paths.unwrap_or_default(),
            ));
        }
        res.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(res)
    }

    /// Every backup of the volume in this target, oldest first.
    pub fn list(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
    ) -> Result<Vec<BackupInfo>, BackupError> {
        Ok(self
            .snapshots(target, vol, "list", None)?
            .into_iter()
            .map(|(id, time, tags, _)| BackupInfo {
                id,
                time,
                tags,
                stats: None,
            })
            .collect())
    }

    /// Put the files of backup `id` (a full id, a unique prefix of at least 8
    /// hex digits, or `latest`) directly into `dest_dir`, which must exist
    /// and be empty (a `lost+found` is allowed: a fresh ext4 volume has one).
    /// The directory itself gets the volume root's owner and mode.
    pub fn restore(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        id: &str,
        dest_dir: &Path,
    ) -> Result<(), BackupError> {
        const OP: &str = "restore";
        let invalid = |e: String| self.err(target, vol, OP, BackupErrorKind::Invalid(e));
        check_snapshot_id(id).map_err(invalid)?;
        let io = |source| {
            self.err(
                target,
                vol,
                OP,
                BackupErrorKind::Io {
                    path: dest_dir.display().to_string(),
                    source,
                },
            )
        };
        for entry in std::fs::read_dir(dest_dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_name() != "lost+found" {
                return Err(invalid(format!(
                    "{} is not empty (restore never mixes files into existing data)",
                    dest_dir.display()
                )));
            }
        }
        // Only snapshots taken from the fixed path restore into dest_dir
        // through the bind mount; anything else would land in the tmpfs
        // and vanish, so refuse it up front.
        let snap = self
            .snapshots(target, vol, OP, Some(id))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(format!("no snapshot {id}")))?;
        let want = Self::source_path(vol);
        if snap.3 != [want.clone()] {
            return Err(invalid(format!(
                "snapshot {} holds {:?}, not {want}: not a corral backup of this volume",
                snap.0, snap.3
            )));
        }
        let args = vec![
            "restore".to_string(),
            snap.0,
            "--target".into(),
            format!("{MOUNT_ROOT}/restore"),
        ];
        self.run(
            target,
            vol,
            OP,
            Namespace::Restore { dest: dest_dir },
            &args,
        )?;
        Ok(())
    }

    /// Remove the backups `keep` does not keep, and the data only they used
    /// (`forget --prune`). All of a volume's backups form one group, whatever
    /// node or path they came from.
    pub fn forget(
        &self,
        target: &BackupTarget,
        vol: &VolumeRef,
        keep: Retention,
    ) -> Result<ForgetResult, BackupError> {
        const OP: &str = "forget";
        if keep.is_empty() {
            return Err(self.err(
                target,
                vol,
                OP,
                BackupErrorKind::Invalid("the retention policy keeps nothing".into()),
            ));
        }
        let mut args = vec![
            "forget".to_string(),
            "--json".into(),
            "--prune".into(),
            "--group-by".into(),
            String::new(),
        ];
        args.extend(keep.args());
        let out = self.run(target, vol, OP, Namespace::None, &args)?;
        // With --prune, prune's progress text follows the JSON on stdout.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with('['))
            .ok_or_else(|| {
                self.err(
                    target,
                    vol,
                    OP,
                    BackupErrorKind::Parse("no JSON in `forget --json`".into()),
                )
            })?;
        let groups: Vec<ForgetGroupJson> = serde_json::from_str(line).map_err(|e| {
            self.err(
                target,
                vol,
                OP,
                BackupErrorKind::Parse(format!("`forget --json`: {e}")),
            )
        })?;
        let mut res = ForgetResult::default();
        for g in groups {
            res.kept
                .extend(g.keep.unwrap_or_default().into_iter().map(|s| s.id));
            res.removed
                .extend(g.remove.unwrap_or_default().into_iter().map(|s| s.id));
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_args_and_emptiness() {
        let r = Retention {
            daily: Some(7),
            weekly: Some(4),
            within_days: Some(3),
            ..Default::default()
        };
        assert_eq!(
            r.args(),
            [
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-within",
                "3d"
            ]
        );
        assert!(!r.is_empty());
        assert!(Retention::default().is_empty());
        assert!(
            Retention {
                last: Some(0),
                ..Default::default()
            }
            .is_empty()
        );
    }

    #[test]
    fn scrub_hides_every_secret_and_keeps_the_tail() {
        use super::super::target::{Secret, TargetKind};
        let t = BackupTarget {
            name: "s3".into(),
            kind: TargetKind::S3 {
                endpoint: "http://h".into(),
                bucket: "b".into(),
                prefix: String::new(),
                region: None,
                access_key: Secret::new("AKID-1"),
                secret_key: Secret::new("sk/with+chars"),
            },
            password: Secret::new("pw-x"),
        };
        let text = "Fatal: key AKID-1 secret sk/with+chars pass pw-x\n";
        assert_eq!(scrub(&t, text), "Fatal: key *** secret *** pass ***");
        let long = format!("{}END pw-x", "x".repeat(10_000));
        let s = scrub(&t, &long);
        assert!(s.starts_with("...") && s.ends_with("END ***") && s.len() < 4100);
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(check_volume(&VolumeRef("web-0.data_1".into())).is_ok());
        for bad in ["", "-r", ".hidden", "a/b", "a b", "x;y"] {
            assert!(check_volume(&VolumeRef(bad.into())).is_err(), "{bad}");
        }
        assert!(check_snapshot_id("latest").is_ok());
        assert!(check_snapshot_id("51f63cc3").is_ok());
        assert!(check_snapshot_id("--target").is_err());
        assert!(check_snapshot_id("51f6").is_err());
    }
}
