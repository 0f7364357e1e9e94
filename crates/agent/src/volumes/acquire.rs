//! Getting a volume ready for an allocation on this node: create it here
//! (first placement), take it over from an allocation that stopped here,
//! or move it here from the node that holds it:
//!
//! 1. a full copy (a read-only snapshot streamed by the holder's agent)
//!    while the old allocation still runs there;
//! 2. report `copied`: the scheduler stops the old allocation;
//! 3. once it has stopped, a second snapshot and only its changes (the
//!    allocation's downtime);
//! 4. claim the volume at the generation copied: the store moves the
//!    volume here and bumps its generation, so the old copy is stale.
//!
//! Every step is retried while the allocation should still run; a claim
//! the store refuses (someone else moved it, the old one still runs)
//! starts over from the record.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral_types::api::VolumeClaim;
use corral_types::{Allocation, Volume, VolumePhase, VolumeSpec, VolumeSync};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{MOVE_PREFIX, NodeVolumes, VolumesError};

/// How the hook hears of a move's progress.
pub trait Progress: Send + Sync {
    fn report(&self, sync: VolumeSync, message: String);
}

const RETRY: Duration = Duration::from_secs(2);

impl NodeVolumes {
    /// Make volume `id` of `spec` ready for `alloc` here and return the
    /// directory to mount into its tasks.
    pub async fn acquire(
        &self,
        alloc: &Allocation,
        spec: &VolumeSpec,
        id: &str,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, VolumesError> {
        let vol = id.to_owned();
        let _busy = self.mark_busy(id);
        let mut last_err = String::new();
        // Seen being restored under this id (`restore --as`): if its record
        // then goes (the restore failed, or it was deleted), this
        // allocation was promised that data and must not start empty.
        let mut awaited: Option<String> = None;
        loop {
            if cancel.is_cancelled() {
                return Err(VolumesError::Cancelled { vol });
            }
            let step = match self.client.volume(id).await {
                // `corral volume restore --as` is still filling it.
                Ok(v) if v.restoring() => {
                    awaited = v.origin.as_ref().map(|o| o.volume.clone());
                    progress.report(
                        VolumeSync {
                            phase: VolumePhase::Copying,
                            bytes: 0,
                        },
                        match v.origin.as_ref() {
                            Some(o) => match &o.error {
                                Some(e) => format!(
                                    "volume {id}: its restore from volume {} failed ({e}); waiting until it is restored again",
                                    o.volume
                                ),
                                None => format!(
                                    "volume {id} is still being restored from volume {}; waiting",
                                    o.volume
                                ),
                            },
                            None => format!("volume {id} is still being restored; waiting"),
                        },
                    );
                    Ok(None)
                }
                Ok(v) if v.node_id == self.node_id => self.take_over(alloc, &v).await,
                Ok(v) => self.move_here(alloc, spec, &v, progress, cancel).await,
                Err(e) if e.status() == Some(404) => {
                    if let Some(src) = &awaited {
                        return Err(state(
                            id,
                            format!(
                                "its restore from volume {src} was abandoned (it failed, or the volume was deleted) before this allocation could take it; restore it again with `corral volume restore {src} SNAPSHOT|BACKUP --as {id}`: the allocation is rescheduled and takes it then"
                            ),
                        ));
                    }
                    self.create(alloc, spec, id).await
                }
                Err(source) => Err(VolumesError::Server {
                    vol: vol.clone(),
                    source,
                }),
            };
            match step {
                Ok(Some(())) => break,
                Ok(None) => {}
                Err(e @ VolumesError::Cancelled { .. }) => return Err(e),
                Err(e @ VolumesError::State { .. }) => return Err(e),
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_err {
                        tracing::warn!(volume = id, error = %msg, "volume not ready yet; retrying");
                        last_err = msg;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(VolumesError::Cancelled { vol }),
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let size = spec.size;
        let path = self
            .blocking(id, move |p, v| {
                let path = p.mount(v)?;
                // A new version may ask for more: grow in place.
                super::grow_if_smaller(p, v, size)?;
                Ok(path)
            })
            .await?;
        self.mounted_for(id, &alloc.id);
        progress.report(
            VolumeSync {
                phase: VolumePhase::Ready,
                bytes: 0,
            },
            String::new(),
        );
        Ok(path)
    }

    /// First placement: make it here, then claim it. `Some(())` when done,
    /// `None` to read the record again.
    async fn create(
        &self,
        alloc: &Allocation,
        spec: &VolumeSpec,
        id: &str,
    ) -> Result<Option<()>, VolumesError> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        match self.meta.get(id) {
            // Made here for a creation the store never recorded: empty,
            // never mounted for a task.
            Some(0) => {
                self.blocking(id, |p, v| p.delete(v)).await?;
                self.meta.remove(id);
            }
            // A copy the store does not know (deleted while this node was
            // away): never reused.
            Some(_) => {
                drop(_g);
                self.quarantine(id, "the store has no record of it").await?;
                return Ok(None);
            }
            None => {}
        }
        let size = spec.size;
        self.blocking(id, move |p, v| p.create(v, size)).await?;
        self.meta
            .set(id, 0)
            .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
        match self.claim(alloc, id, None, None).await {
            Ok(v) => {
                self.meta
                    .set(id, v.generation)
                    .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
                tracing::info!(volume = id, size = %spec.size, provider = %self.kind_name(), "volume created");
                Ok(Some(()))
            }
            Err(e) if refused(&e) => {
                // Someone else created it meanwhile: this empty one goes.
                self.blocking(id, |p, v| p.delete(v)).await?;
                self.meta.remove(id);
                Err(e)
            }
            // No answer: the claim may have been stored. Kept (generation
            // 0); the next look at the record settles it (`take_over`).
            Err(e) => Err(e),
        }
    }

    /// The copy is here: claim it for this allocation (the store refuses
    /// while the previous allocation may still run).
    async fn take_over(&self, alloc: &Allocation, v: &Volume) -> Result<Option<()>, VolumesError> {
        match self.meta.get(&v.id) {
            Some(g) if g == v.generation => {}
            // This allocation's own claim was stored but its answer lost
            // (the server restarted, the connection broke): the copy here
            // is the one the store names.
            Some(g)
                if g + 1 == v.generation && v.alloc_id.as_deref() == Some(alloc.id.as_str()) =>
            {
                self.meta
                    .set(&v.id, v.generation)
                    .map_err(|e| state(&v.id, format!("cannot record its generation: {e}")))?;
            }
            Some(g) => {
                return Err(state(
                    &v.id,
                    format!(
                        "this node's copy is at generation {g} but the store's is {}; it is not used (see `corral volume status {}`)",
                        v.generation, v.id
                    ),
                ));
            }
            None => {
                return Err(state(
                    &v.id,
                    format!(
                        "the store says this node holds it (generation {}) but there is no copy here; restore it with `corral volume restore` or delete it with `corral volume delete {} --yes`",
                        v.generation, v.id
                    ),
                ));
            }
        }
        self.claim(alloc, &v.id, Some(v.generation), None).await?;
        Ok(Some(()))
    }

    async fn claim(
        &self,
        alloc: &Allocation,
        id: &str,
        generation: Option<u64>,
        downtime_ms: Option<u64>,
    ) -> Result<Volume, VolumesError> {
        let c = VolumeClaim {
            restored_from: Default::default(),
            node: self.node_id.clone(),
            alloc: alloc.id.clone(),
            generation,
            provider: self.kind_name(),
            downtime_ms,
        };
        self.client
            .volume_claim(id, &c)
            .await
            .map_err(|source| VolumesError::Server {
                vol: id.to_owned(),
                source,
            })
    }

    /// Move the volume from the node holding it (see the module docs).
    async fn move_here(
        &self,
        alloc: &Allocation,
        spec: &VolumeSpec,
        v: &Volume,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Option<()>, VolumesError> {
        let id = v.id.as_str();
        let holder = self
            .client
            .node(&v.node_id)
            .await
            .map_err(|source| VolumesError::Server {
                vol: id.to_owned(),
                source,
            })?;
        if holder.status == "down" {
            let ask = corral_types::api::VolumeRecover {
                node: self.node_id.clone(),
                alloc: alloc.id.clone(),
            };
            return match self.client.volume_recover(id, &ask).await {
                Ok(r) => self.recover_here(alloc, spec, v, r, progress).await,
                Err(corral_client::ClientError::Api { status: 409, error }) => {
                    progress.report(
                        VolumeSync {
                            phase: VolumePhase::Copying,
                            bytes: 0,
                        },
                        error.error.clone(),
                    );
                    Err(peer(id, &holder.name, error.error))
                }
                Err(source) => Err(VolumesError::Server {
                    vol: id.to_owned(),
                    source,
                }),
            };
        }
        // A stale copy here (this node held it before) is set aside first.
        if self.meta.get(id).is_some() {
            self.quarantine(id, "older than the store's generation")
                .await?;
        }
        let short: String = alloc.id.chars().take(8).collect();
        let first = format!("{MOVE_PREFIX}{short}-1");
        let last = format!("{MOVE_PREFIX}{short}-2");
        let incremental = self.provider.capabilities().incremental_export;
        let copied = Arc::new(AtomicU64::new(0));
        let message = |what: &str| format!("volume {id}: {what} from node {}", holder.name);
        progress.report(
            VolumeSync {
                phase: VolumePhase::Copying,
                bytes: 0,
            },
            message("copying"),
        );
        let started = Instant::now();
        if incremental {
            self.fetch(
                v,
                &holder.address,
                &holder.name,
                &first,
                None,
                spec,
                &copied,
                progress,
                cancel,
            )
            .await?;
            tracing::info!(volume = id, from = %holder.name, bytes = copied.load(Ordering::Relaxed), took_ms = started.elapsed().as_millis() as u64, "volume copied while its allocation still runs there");
        }
        progress.report(
            VolumeSync {
                phase: VolumePhase::Copied,
                bytes: copied.load(Ordering::Relaxed),
            },
            message("copied; waiting for the old allocation to stop"),
        );
        self.wait_stopped(v, cancel).await?;
        progress.report(
            VolumeSync {
                phase: VolumePhase::Finishing,
                bytes: copied.load(Ordering::Relaxed),
            },
            message("copying the last changes"),
        );
        // The task is down from here until the new one starts.
        let downtime = Instant::now();
        let base = incremental.then_some(first.as_str());
        let mut failures = 0u32;
        loop {
            let e = match self
                .fetch(
                    v,
                    &holder.address,
                    &holder.name,
                    &last,
                    base,
                    spec,
                    &copied,
                    progress,
                    cancel,
                )
                .await
            {
                Ok(()) => break,
                Err(e) => e,
            };
            // The holder's runner may still be tearing down (409: the
            // store had it stopped first), or its agent restarting: the
            // same last copy is asked again, the full copy is kept. Only
            // other failures that repeat, a stop, or a store that moved
            // on start over.
            failures += 1;
            let waiting = e.to_string().contains("409");
            let moved_on = match self.client.volume(id).await {
                Ok(now) => now.generation != v.generation || now.node_id != v.node_id,
                Err(_) => false,
            };
            if matches!(e, VolumesError::Cancelled { .. })
                || moved_on
                || (!waiting && failures >= 5)
            {
                let _ = self.blocking(id, |p, v| p.delete(v)).await;
                self.meta.remove(id);
                return Err(e);
            }
            progress.report(
                VolumeSync {
                    phase: VolumePhase::Finishing,
                    bytes: copied.load(Ordering::Relaxed),
                },
                message(&format!("the last copy waits ({e})")),
            );
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = self.blocking(id, |p, v| p.delete(v)).await;
                    return Err(VolumesError::Cancelled { vol: id.to_owned() });
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        let downtime_ms = downtime.elapsed().as_millis() as u64;
        self.meta
            .set(id, v.generation)
            .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
        match self
            .claim(alloc, id, Some(v.generation), Some(downtime_ms))
            .await
        {
            Ok(nv) => {
                self.meta
                    .set(id, nv.generation)
                    .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
            }
            Err(e) if refused(&e) => {
                let _ = self.blocking(id, |p, v| p.delete(v)).await;
                self.meta.remove(id);
                return Err(e);
            }
            // No answer: kept; if the claim was stored, the next look at
            // the record finds this node holding it (`take_over`).
            Err(e) => return Err(e),
        }
        for s in [first, last] {
            let _ = self
                .blocking(id, move |p, v| p.delete_snapshot(v, &s))
                .await;
        }
        self.release(v, &holder.address).await;
        tracing::info!(volume = id, from = %holder.name, downtime_ms, total_ms = started.elapsed().as_millis() as u64, bytes = copied.load(Ordering::Relaxed), "volume moved here");
        Ok(Some(()))
    }

    /// The volume's node is lost and the server says to restore `r.backup`
    /// here: restore it, then claim the volume past the lost copy's
    /// generation (so that copy is set aside if its node returns).
    async fn recover_here(
        &self,
        alloc: &Allocation,
        spec: &VolumeSpec,
        v: &Volume,
        r: corral_types::api::VolumeRecovery,
        progress: &dyn Progress,
    ) -> Result<Option<()>, VolumesError> {
        let id = v.id.as_str();
        let when = corral_types::civil::utc(r.backup.taken_at);
        progress.report(
            VolumeSync {
                phase: VolumePhase::Finishing,
                bytes: 0,
            },
            format!(
                "volume {id}: its node is lost; restoring backup {} of {when} from target {} (writes after {when} are lost)",
                short(&r.backup.id),
                r.backup.target
            ),
        );
        let started = Instant::now();
        self.restore_backup(id, spec.size, &r.backup, r.target)
            .await?;
        self.meta
            .set(id, r.generation)
            .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
        let c = VolumeClaim {
            node: self.node_id.clone(),
            alloc: alloc.id.clone(),
            generation: Some(r.generation),
            provider: self.kind_name(),
            downtime_ms: None,
            restored_from: Some(r.backup.clone()),
        };
        match self.client.volume_claim(id, &c).await {
            Ok(nv) => {
                self.meta
                    .set(id, nv.generation)
                    .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
                tracing::warn!(volume = id, backup = %r.backup.id, taken = %when, took_ms = started.elapsed().as_millis() as u64, "volume restored from a backup: its node is lost; writes after the backup are lost");
                Ok(Some(()))
            }
            Err(source) => {
                let e = VolumesError::Server {
                    vol: id.to_owned(),
                    source,
                };
                if refused(&e) {
                    let _ = self.blocking(id, |p, v| p.delete(v)).await;
                    self.meta.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Tell the old holder its copy can go (best effort: its sweep
    /// deletes it anyway, see `upkeep`).
    async fn release(&self, v: &Volume, address: &str) {
        let url = format!(
            "{}/v1/agent/volumes/{}",
            address.trim_end_matches('/'),
            v.id
        );
        let mut req = self
            .peers
            .delete(&url)
            .query(&[("generation", v.generation)])
            .timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::debug!(volume = %v.id, status = %r.status(), "the old holder kept its copy; its sweep removes it")
            }
            Err(e) => {
                tracing::debug!(volume = %v.id, error = %e, "cannot reach the old holder; its sweep removes its copy")
            }
        }
    }

    /// Until the allocation holding the volume has stopped (the store
    /// knows it is terminal).
    async fn wait_stopped(
        &self,
        v: &Volume,
        cancel: &CancellationToken,
    ) -> Result<(), VolumesError> {
        let Some(holder) = v.alloc_id.as_deref() else {
            return Ok(());
        };
        loop {
            match self.client.alloc(holder).await {
                Ok(a) if a.status.is_terminal() => return Ok(()),
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => return Ok(()),
                Err(source) => {
                    tracing::debug!(volume = %v.id, error = %source, "cannot read the old allocation; retrying");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(VolumesError::Cancelled { vol: v.id.clone() }),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Stream snapshot `name` (against `base`) from the holder and import it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        v: &Volume,
        address: &str,
        peer_name: &str,
        name: &str,
        base: Option<&str>,
        spec: &VolumeSpec,
        copied: &Arc<AtomicU64>,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), VolumesError> {
        let id = v.id.as_str();
        let url = format!(
            "{}/v1/agent/volumes/{id}/export",
            address.trim_end_matches('/')
        );
        let mut q: Vec<(&str, String)> = vec![
            ("snapshot", name.to_owned()),
            ("generation", v.generation.to_string()),
        ];
        if let Some(b) = base {
            q.push(("base", b.to_owned()));
            if let Some(h) = &v.alloc_id {
                q.push(("holder", h.clone()));
            }
        }
        let mut req = self.peers.get(&url).query(&q);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| peer(id, peer_name, e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(peer(id, peer_name, format!("{status}: {}", text.trim())));
        }
        let stream = resp
            .bytes_stream()
            .map(|r| r.map_err(std::io::Error::other));
        let reader = tokio_util::io::StreamReader::new(stream);
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let counter = copied.clone();
        let size = spec.size;
        let snap = name.to_owned();
        let import = self.blocking(id, move |p, vol| {
            let mut r = Counting {
                inner: bridge,
                n: counter,
            };
            p.import(vol, &snap, size, &mut r)
        });
        tokio::pin!(import);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                r = &mut import => return r,
                _ = cancel.cancelled() => return Err(VolumesError::Cancelled { vol: id.to_owned() }),
                _ = tick.tick() => {
                    let bytes = copied.load(Ordering::Relaxed);
                    let phase = if base.is_some() { VolumePhase::Finishing } else { VolumePhase::Copying };
                    progress.report(VolumeSync { phase, bytes }, format!("volume {id}: {} MiB received from node {peer_name}", bytes >> 20));
                }
            }
        }
    }
}

/// Counts what an import reads, for the move's progress.
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// The server answered and said no (as opposed to no answer at all, when
/// the claim may have been stored).
fn refused(e: &VolumesError) -> bool {
    matches!(
        e,
        VolumesError::Server {
            source: corral_client::ClientError::Api { status, .. },
            ..
        } if (400..500).contains(status)
    )
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn state(vol: &str, message: String) -> VolumesError {
    VolumesError::State {
        vol: vol.to_owned(),
        message,
    }
}

fn peer(vol: &str, peer: &str, message: String) -> VolumesError {
    VolumesError::Peer {
        vol: vol.to_owned(),
        peer: peer.to_owned(),
        message,
    }
}
