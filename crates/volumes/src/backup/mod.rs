//! File-level backups of volumes with restic, from a read-only snapshot, to
//! the targets named in the server config (a directory, SFTP, S3).
//!
//! One restic repository per volume and target (`<target>/<volume>`), so
//! retention, locks and deleting a volume's backups never touch another
//! volume. Every backup is taken from the same path,
//! `/corral-backup/<volume>` (see [`restic`] for how and why), so restic
//! finds the previous backup as its parent and a restore puts the files
//! straight into the destination.

pub mod restic;
pub mod target;
mod time;

pub use restic::{
    BackupError, BackupErrorKind, BackupInfo, BackupStats, ForgetResult, MOUNT_ROOT, Restic,
    Retention, SNAPSHOT_HOST,
};
pub use target::{BackupTarget, BackupTargets, Secret, TargetKind};
