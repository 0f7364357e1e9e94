//! Volume providers: where a volume's bytes live on a node, and how they are
//! snapshotted, exported to another node and backed up.
//!
//! Everything here is blocking and runs external tools (`mount`, `losetup`,
//! `btrfs`, `mkfs.*`, `restic`); the agent calls it from `spawn_blocking`.
//! Nothing here knows the store, the server or allocations: the agent decides
//! which volume a node may mount and at which generation.

pub mod backup;
pub mod btrfs_image;
mod cmd;
pub mod ext4_image;
pub mod host;
mod image;
pub mod names;
pub mod provider;
pub mod release;
mod tar;

use std::path::PathBuf;

pub use btrfs_image::BtrfsImage;
pub use cmd::find_program;
pub use ext4_image::Ext4Image;
pub use host::HostDir;
pub use names::check_name;
pub use provider::{
    Capabilities, Export, ProviderKind, SnapshotInfo, Usage, VolumeError, VolumeProvider, VolumeRef,
};

/// The best image provider this node can run: btrfs when the kernel has it
/// (listed in `/proc/filesystems`) and `mkfs.btrfs` is installed, else ext4.
/// (A btrfs module not loaded yet is not listed: `modprobe btrfs` first.)
pub fn detect() -> ProviderKind {
    let kernel_has_btrfs = std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("btrfs"))
        })
        .unwrap_or(false);
    if kernel_has_btrfs && find_program("mkfs.btrfs").is_some() {
        ProviderKind::BtrfsImage
    } else {
        ProviderKind::Ext4Image
    }
}

/// The provider of `kind` keeping its volumes under `dir`.
pub fn by_kind(kind: ProviderKind, dir: PathBuf) -> Box<dyn VolumeProvider> {
    match kind {
        ProviderKind::BtrfsImage => Box::new(BtrfsImage::new(dir)),
        ProviderKind::Ext4Image => Box::new(Ext4Image::new(dir)),
        ProviderKind::Host => Box::new(HostDir::new(dir)),
    }
}
