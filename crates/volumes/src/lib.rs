//! Volume providers: where a volume's bytes live on a node, and how they are
//! snapshotted, exported to another node and backed up.
//!
//! Everything here is blocking and runs external tools (`mount`, `losetup`,
//! `btrfs`, `mkfs.*`, `restic`); the agent calls it from `spawn_blocking`.
//! Nothing here knows the store, the server or allocations: the agent decides
//! which volume a node may mount and at which generation.

pub mod backup;
pub mod provider;

pub use provider::{
    Capabilities, Export, ProviderKind, SnapshotInfo, Usage, VolumeError, VolumeProvider, VolumeRef,
};
