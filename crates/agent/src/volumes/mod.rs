//! The node's volumes: the provider that holds them, the generation of
//! each local copy, and what the agent does with them for allocations
//! (`acquire`: create, take over or move here), for the server
//! (`endpoints`: snapshot, restore, delete; export to a peer) and on its
//! own (`upkeep`: report use and snapshots, set stale copies aside).
//!
//! Never two writers: a copy is mounted read-write only after the server
//! accepted this node's claim at the copy's generation (`acquire`); a
//! copy whose generation the store has moved past is stale and is set
//! aside, never mounted.

mod acquire;
mod backup;
pub mod endpoints;
mod meta;
mod restore_new;
pub mod upkeep;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use corral_client::Client;
use corral_types::VolumeSnapshot;
use corral_types::api::VolumeReport;
use corral_volumes::{ProviderKind, VolumeError, VolumeProvider, VolumeRef};

pub use acquire::Progress;

/// `[agent]` volume settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesConfig {
    /// Where the provider keeps volumes (`volumes_dir`).
    pub dir: PathBuf,
    /// `None`: btrfs images when the kernel has btrfs, else ext4 images.
    pub provider: Option<ProviderKind>,
    /// Kept back from the directory's filesystem (`volumes_reserved`).
    pub reserved_bytes: u64,
}

/// Scheduled snapshots are named `auto-<ms>`, those taken by hand
/// `manual-<ms>`, a move's `move-<alloc>-<n>` (internal, not reported).
pub const AUTO_PREFIX: &str = "auto-";
const MANUAL_PREFIX: &str = "manual-";
const MOVE_PREFIX: &str = "move-";

#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    #[error(transparent)]
    Provider(#[from] VolumeError),
    #[error("volume {vol}: {message}")]
    State { vol: String, message: String },
    #[error("volume {vol}: the server: {source}")]
    Server {
        vol: String,
        #[source]
        source: corral_client::ClientError,
    },
    #[error("volume {vol}: copying from {peer}: {message}")]
    Peer {
        vol: String,
        peer: String,
        message: String,
    },
    #[error("volume {vol}: stopped before it was ready")]
    Cancelled { vol: String },
}

/// The volumes of this node.
pub struct NodeVolumes {
    pub provider: Arc<dyn VolumeProvider>,
    pub kind: ProviderKind,
    pub dir: PathBuf,
    reserved: u64,
    meta: meta::Meta,
    client: Client,
    /// Agent-to-agent (exports of a move).
    peers: reqwest::Client,
    token: Option<String>,
    node_id: String,
    /// One operation at a time per volume (a snapshot during a restore...).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The allocations each mounted volume is mounted for: the last one
    /// to end unmounts it (a new allocation may have mounted it before the
    /// one it replaces finished its teardown).
    users: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    /// Volumes an allocation is acquiring (creating, moving, restoring):
    /// the sweep leaves them alone until the claim is settled.
    busy: Mutex<HashMap<String, usize>>,
    /// The spec's snapshot hooks of each volume an allocation runs with.
    hooks: Mutex<HashMap<String, Arc<dyn SnapshotHookRunner>>>,
}

/// Runs a volume's `hooks` in its task around a snapshot.
#[async_trait::async_trait]
pub trait SnapshotHookRunner: Send + Sync {
    /// `Err`: the snapshot is not taken.
    async fn pre(&self) -> Result<(), String>;
    async fn post(&self);
}

impl NodeVolumes {
    pub fn new(
        config: &VolumesConfig,
        client: Client,
        token: Option<String>,
        node_id: String,
    ) -> std::io::Result<NodeVolumes> {
        std::fs::create_dir_all(&config.dir)?;
        let kind = config.provider.unwrap_or_else(corral_volumes::detect);
        let meta = meta::Meta::new(config.dir.join(".corral"))?;
        Ok(NodeVolumes {
            provider: Arc::from(corral_volumes::by_kind(kind, config.dir.clone())),
            kind,
            dir: config.dir.clone(),
            reserved: config.reserved_bytes,
            meta,
            client,
            peers: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            token,
            node_id,
            locks: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            hooks: Mutex::new(HashMap::new()),
        })
    }

    /// What the node offers to volumes: its directory's filesystem less
    /// the reservation (image files are sparse: the scheduler counts the
    /// sizes it reserved, not the blocks written).
    pub fn capacity(&self) -> u64 {
        match rustix::fs::statvfs(&self.dir) {
            Ok(s) => (s.f_blocks.saturating_mul(s.f_frsize)).saturating_sub(self.reserved),
            Err(_) => 0,
        }
    }

    pub fn kind_name(&self) -> String {
        kind_name(self.kind)
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_owned()).or_default().clone()
    }

    /// Run a provider call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&dyn VolumeProvider, &VolumeRef) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, VolumesError> {
        let p = self.provider.clone();
        let vol = VolumeRef(id.to_owned());
        let v = id.to_owned();
        tokio::task::spawn_blocking(move || f(p.as_ref(), &vol))
            .await
            .map_err(|e| VolumesError::State {
                vol: v,
                message: format!("the provider call panicked: {e}"),
            })?
            .map_err(Into::into)
    }

    /// The generation of this node's copy, if it has one.
    pub fn local_generation(&self, id: &str) -> Option<u64> {
        self.meta.get(id)
    }

    /// Take a snapshot now and report it.
    pub async fn snapshot_now(
        &self,
        id: &str,
        scheduled: bool,
    ) -> Result<VolumeSnapshot, VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let now = corral_types::now_ms();
        let name = format!(
            "{}{now}",
            if scheduled {
                AUTO_PREFIX
            } else {
                MANUAL_PREFIX
            }
        );
        let started = std::time::Instant::now();
        let n = name.clone();
        let info = self
            .with_hooks(id, self.blocking(id, move |p, v| p.snapshot(v, &n)))
            .await?;
        let took_ms = started.elapsed().as_millis() as u64;
        self.meta.set_took(id, &name, took_ms);
        Ok(VolumeSnapshot {
            name: info.name,
            created_at: info.created_at,
            scheduled,
            took_ms,
        })
    }

    /// Delete scheduled snapshots beyond the newest `keep`.
    pub async fn prune(&self, id: &str, keep: u32) -> Result<usize, VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let mut autos: Vec<_> = self
            .blocking(id, |p, v| p.snapshots(v))
            .await?
            .into_iter()
            .filter(|s| s.name.starts_with(AUTO_PREFIX))
            .collect();
        autos.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let old: Vec<String> = autos
            .into_iter()
            .skip(keep as usize)
            .map(|s| s.name)
            .collect();
        let n = old.len();
        for name in old {
            self.blocking(id, move |p, v| p.delete_snapshot(v, &name))
                .await?;
        }
        Ok(n)
    }

    /// Send the server this copy's snapshots and use.
    pub async fn report(&self, id: &str) -> Result<(), VolumesError> {
        let Some(generation) = self.meta.get(id) else {
            return Ok(());
        };
        let caps = self.provider.capabilities();
        let snaps = if caps.snapshots {
            self.blocking(id, |p, v| p.snapshots(v)).await?
        } else {
            Vec::new()
        };
        let usage = self.blocking(id, |p, v| p.usage(v)).await.ok();
        let mut snapshots: Vec<VolumeSnapshot> = snaps
            .into_iter()
            .filter(|s| {
                !s.name.starts_with(MOVE_PREFIX) && !s.name.starts_with(backup::BACKUP_PREFIX)
            })
            .map(|s| VolumeSnapshot {
                scheduled: s.name.starts_with(AUTO_PREFIX),
                took_ms: self.meta.took(id, &s.name),
                name: s.name,
                created_at: s.created_at,
            })
            .collect();
        snapshots.sort_by_key(|s| s.created_at);
        let report = VolumeReport {
            node: self.node_id.clone(),
            generation,
            snapshots,
            used: usage.map(|u| u.used),
            size: usage.map(|u| u.size),
        };
        self.client
            .volume_report(id, &report)
            .await
            .map(|_| ())
            .map_err(|source| VolumesError::Server {
                vol: id.to_owned(),
                source,
            })
    }

    /// Put the data back as it was at `snapshot` (the server checked that
    /// nothing uses the volume).
    pub async fn restore(&self, id: &str, snapshot: &str) -> Result<(), VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let s = snapshot.to_owned();
        self.blocking(id, move |p, v| p.rollback(v, &s)).await
    }

    /// Remove the copy and its record here.
    pub async fn delete(&self, id: &str) -> Result<(), VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        self.blocking(id, |p, v| p.delete(v)).await?;
        self.meta.remove(id);
        Ok(())
    }

    /// Set a stale copy aside: never mounted or served again.
    pub async fn quarantine(&self, id: &str, why: &str) -> Result<(), VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let gen_ = self.meta.get(id).unwrap_or(0);
        let suffix = format!("gen{gen_}-{}", corral_types::now_ms());
        self.blocking(id, move |p, v| p.quarantine(v, &suffix))
            .await?;
        self.meta.remove(id);
        tracing::warn!(
            volume = id,
            why,
            "stale volume copy set aside (quarantined)"
        );
        Ok(())
    }
}

pub fn kind_name(kind: ProviderKind) -> String {
    match kind {
        ProviderKind::BtrfsImage => "btrfs-image",
        ProviderKind::Ext4Image => "ext4-image",
        ProviderKind::Host => "host",
    }
    .to_owned()
}

impl NodeVolumes {
    /// When the newest scheduled snapshot was taken (0: none).
    pub async fn newest_scheduled(&self, id: &str) -> Result<u64, VolumesError> {
        Ok(self
            .blocking(id, |p, v| p.snapshots(v))
            .await?
            .iter()
            .filter(|s| s.name.starts_with(AUTO_PREFIX))
            .map(|s| s.created_at)
            .max()
            .unwrap_or(0))
    }

    /// Allocation `alloc` is done with the volume: unmount it unless
    /// another allocation here mounted it meanwhile.
    pub async fn unmount(&self, id: &str, alloc: &str) -> Result<(), VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let unused = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let set = users.entry(id.to_owned()).or_default();
            set.remove(alloc);
            set.is_empty()
        };
        if unused {
            self.blocking(id, |p, v| p.unmount(v)).await
        } else {
            Ok(())
        }
    }

    /// Called once the volume is mounted for `alloc` (or may be: an
    /// adopted allocation's tasks).
    pub(crate) fn mounted_for(&self, id: &str, alloc: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .entry(id.to_owned())
            .or_default()
            .insert(alloc.to_owned());
    }
}

impl NodeVolumes {
    /// Grow the volumes of `alloc` to what `group` (its new job version)
    /// asks (an in-place update); failures are logged, the task keeps
    /// running.
    /// The group as `alloc`'s job version has it.
    pub async fn group_of(
        &self,
        alloc: &corral_types::Allocation,
    ) -> Option<corral_types::GroupSpec> {
        let versions = match self.client.job_versions(&alloc.job).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(alloc = %alloc.id, error = %e, "cannot read the new job version of an allocation updated in place");
                return None;
            }
        };
        versions
            .into_iter()
            .find(|v| v.version == alloc.job_version)
            .and_then(|v| v.spec.groups.into_iter().find(|g| g.name == alloc.group))
    }

    pub async fn grow_to(&self, alloc: &corral_types::Allocation, group: &corral_types::GroupSpec) {
        for spec in &group.volumes {
            let id = corral_types::GroupSpec::volume_id(&alloc.job, spec, alloc.index);
            let size = spec.size;
            let lock = self.lock(&id);
            let _g = lock.lock().await;
            let grown = self
                .blocking(&id, move |p, v| grow_if_smaller(p, v, size))
                .await;
            match grown {
                Ok(true) => {
                    tracing::info!(volume = %id, size = %size, "volume grown in place");
                    drop(_g);
                    if let Err(e) = self.report(&id).await {
                        tracing::debug!(volume = %id, error = %e, "cannot report the volume");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(volume = %id, error = %e, "cannot grow the volume"),
            }
        }
    }
}

/// Marks a volume busy while it lives (see `NodeVolumes::busy`).
pub(crate) struct Busy<'a> {
    v: &'a NodeVolumes,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut b = self.v.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = b.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                b.remove(&self.id);
            }
        }
    }
}

impl NodeVolumes {
    pub(crate) fn mark_busy(&self, id: &str) -> Busy<'_> {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        *b.entry(id.to_owned()).or_default() += 1;
        Busy {
            v: self,
            id: id.to_owned(),
        }
    }

    pub(crate) fn is_busy(&self, id: &str) -> bool {
        self.busy.lock().map(|b| b.contains_key(id)).unwrap_or(true)
    }
}

impl NodeVolumes {
    /// The hooks volume `id`'s allocation runs around snapshots (`None`:
    /// none any more).
    pub fn set_hooks(&self, id: &str, hooks: Option<Arc<dyn SnapshotHookRunner>>) {
        let mut h = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        match hooks {
            Some(r) => h.insert(id.to_owned(), r),
            None => h.remove(id),
        };
    }

    /// `snapshot` between the volume's `pre_snapshot` and `post_snapshot`
    /// hooks, when it has some: a failed `pre_snapshot` takes no snapshot;
    /// `post_snapshot` runs whatever happened after a `pre_snapshot`.
    pub(crate) async fn with_hooks<T>(
        &self,
        id: &str,
        snapshot: impl std::future::Future<Output = Result<T, VolumesError>>,
    ) -> Result<T, VolumesError> {
        let hooks = self
            .hooks
            .lock()
            .map(|h| h.get(id).cloned())
            .unwrap_or_default();
        let Some(hooks) = hooks else {
            return snapshot.await;
        };
        if let Err(e) = hooks.pre().await {
            hooks.post().await;
            return Err(VolumesError::State {
                vol: id.to_owned(),
                message: format!("the pre_snapshot hook failed, no snapshot taken: {e}"),
            });
        }
        let r = snapshot.await;
        hooks.post().await;
        r
    }
}

/// Grow the volume to `size` if it is smaller; whether it grew.
pub(crate) fn grow_if_smaller(
    p: &dyn VolumeProvider,
    v: &VolumeRef,
    size: corral_types::units::Bytes,
) -> Result<bool, corral_volumes::VolumeError> {
    if p.usage(v)?.size < size {
        p.grow(v, size)?;
        return Ok(true);
    }
    Ok(false)
}
