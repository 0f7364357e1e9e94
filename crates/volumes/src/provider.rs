//! The provider trait: one shape for every backend, each saying what it can
//! do, so a cloud disk or CSI provider fits later (docs/VOLUMES.md).

use std::io::Read;
use std::path::PathBuf;

use corral_types::units::Bytes;
use serde::{Deserialize, Serialize};

/// Which backend holds a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// A sparse image file formatted btrfs, loop-mounted: size enforced,
    /// atomic read-only snapshots, incremental send/receive.
    BtrfsImage,
    /// The same with ext4: size enforced, no snapshots (only backups).
    Ext4Image,
    /// A directory under the node's configured path: no size enforcement.
    Host,
}

/// What a provider can do; callers check before they ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The volume's `size` is a hard limit (ENOSPC past it).
    pub size_enforced: bool,
    /// Read-only point-in-time snapshots.
    pub snapshots: bool,
    /// `export` against a base snapshot (only the changes).
    pub incremental_export: bool,
    /// `grow` while mounted.
    pub grow_online: bool,
}

/// A volume's name on a node: a file-system-safe key, unique per cluster
/// (the server makes it from job, volume name and slot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeRef(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Milliseconds since 1970 when it was taken.
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The limit (the image size); for `host`, the filesystem's size.
    pub size: Bytes,
    pub used: Bytes,
}

/// A stream of a snapshot (full or against a base) being produced; reading
/// it to the end and then calling `finish` says whether it was complete.
pub trait Export: Read + Send {
    /// Wait for the producer; an error means the stream is not to be trusted.
    fn finish(self: Box<Self>) -> Result<(), VolumeError>;
}

/// One backend on one node. Every method is idempotent where it can be
/// (create of an existing volume of the same size, delete of a missing one).
pub trait VolumeProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    fn capabilities(&self) -> Capabilities;
    /// Make the volume (formatted, empty) unless it exists.
    fn create(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError>;
    /// Grow to `size` (never shrinks).
    fn grow(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError>;
    /// Remove the volume, its snapshots and everything it holds on the node.
    fn delete(&self, vol: &VolumeRef) -> Result<(), VolumeError>;
    /// Mount (if not yet) and return the host directory to bind into tasks.
    fn mount(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError>;
    /// Where `mount` puts the data (known before it is mounted, so tasks
    /// can be described before the volume is ready).
    fn data_dir(&self, vol: &VolumeRef) -> PathBuf;
    fn unmount(&self, vol: &VolumeRef) -> Result<(), VolumeError>;
    fn snapshot(&self, vol: &VolumeRef, name: &str) -> Result<SnapshotInfo, VolumeError>;
    fn delete_snapshot(&self, vol: &VolumeRef, name: &str) -> Result<(), VolumeError>;
    fn snapshots(&self, vol: &VolumeRef) -> Result<Vec<SnapshotInfo>, VolumeError>;
    /// A read-only directory holding the snapshot's files (for backups).
    fn snapshot_dir(&self, vol: &VolumeRef, name: &str) -> Result<PathBuf, VolumeError>;
    /// Replace the live data with the snapshot's (the volume must not be in use).
    fn rollback(&self, vol: &VolumeRef, name: &str) -> Result<(), VolumeError>;
    /// Stream snapshot `name`, only its changes since `base` if given.
    fn export(
        &self,
        vol: &VolumeRef,
        name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn Export>, VolumeError>;
    /// Receive a stream made by `export` as snapshot `name` (creating the
    /// volume with `size` when absent) and make it the live data.
    fn import(
        &self,
        vol: &VolumeRef,
        name: &str,
        size: Bytes,
        input: &mut dyn Read,
    ) -> Result<(), VolumeError>;
    fn usage(&self, vol: &VolumeRef) -> Result<Usage, VolumeError>;
    /// Volumes present on this node.
    fn list(&self) -> Result<Vec<VolumeRef>, VolumeError>;
    /// Set the volume aside under a new name: never mounted or served again.
    fn quarantine(&self, vol: &VolumeRef, suffix: &str) -> Result<(), VolumeError>;
    /// What was set aside, as `<vol>.<suffix>`.
    fn quarantined_copies(&self) -> Result<Vec<String>, VolumeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {vol}: {what} failed: {detail}")]
    Command {
        vol: String,
        what: String,
        detail: String,
    },
    #[error("volume {vol}: {op}: {source}")]
    Io {
        vol: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {vol} does not exist on this node")]
    NotFound { vol: String },
    #[error("volume {vol}: snapshot {snapshot} does not exist")]
    SnapshotNotFound { vol: String, snapshot: String },
    #[error("volume {vol}: the {provider:?} provider cannot {what}")]
    Unsupported {
        vol: String,
        provider: ProviderKind,
        what: &'static str,
    },
    #[error("volume {vol}: {detail}")]
    Invalid { vol: String, detail: String },
}
