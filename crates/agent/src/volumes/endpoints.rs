//! The agent's volume endpoints: the server forwards what users ask of a
//! volume (snapshot now, restore, delete); a peer agent pulls an export
//! during a move. Each checks that this node's copy is the store's
//! generation (`?generation=`), so a stale copy is never served.

use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{NodeVolumes, VolumesError};
use crate::node::Shared;

#[derive(Debug, Deserialize)]
pub struct GenQuery {
    generation: u64,
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    generation: u64,
    snapshot: String,
    #[serde(default)]
    base: Option<String>,
    /// The allocation that held the volume here: the last copy (with a
    /// `base`) is refused while it still has a runner on this node (its
    /// tasks may still write, whatever the store says).
    #[serde(default)]
    holder: Option<String>,
}

fn err(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, format!("{msg}\n")).into_response()
}

/// Why a request is refused before anything is done.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        err(self.0, self.1)
    }
}

fn volumes(shared: &Shared) -> Result<&Arc<NodeVolumes>, Refusal> {
    shared.volumes.as_ref().ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            "this node has no volumes (volumes are off)".into(),
        )
    })
}

/// The node's volumes, when its copy of `id` is at `generation`.
fn held(shared: &Shared, id: &str, generation: u64) -> Result<Arc<NodeVolumes>, Refusal> {
    let v = volumes(shared)?;
    current(v, id, generation)?;
    Ok(v.clone())
}

/// The copy must be here at the generation the caller saw.
fn current(v: &NodeVolumes, id: &str, generation: u64) -> Result<(), Refusal> {
    match v.local_generation(id) {
        Some(g) if g == generation => Ok(()),
        Some(g) => Err(Refusal(
            StatusCode::CONFLICT,
            format!("volume {id}: this node's copy is at generation {g}, not {generation}"),
        )),
        None => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("volume {id}: no copy on this node"),
        )),
    }
}

fn failed(e: VolumesError) -> Response {
    err(StatusCode::INTERNAL_SERVER_ERROR, e)
}

pub async fn snapshot(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GenQuery>,
) -> Response {
    let v = match held(&shared, &id, q.generation) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if !v.provider.capabilities().snapshots {
        return err(
            StatusCode::BAD_REQUEST,
            format!(
                "volume {id}: the {} provider of its node takes no snapshots",
                v.kind_name()
            ),
        );
    }
    match v.snapshot_now(&id, false).await {
        Ok(s) => {
            if let Err(e) = v.report(&id).await {
                tracing::warn!(volume = %id, error = %e, "cannot report the new snapshot");
            }
            Json(s).into_response()
        }
        Err(e) => failed(e),
    }
}

pub async fn restore(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GenQuery>,
    Json(r): Json<corral_types::api::VolumeRestoreJob>,
) -> Response {
    let v = match held(&shared, &id, q.generation) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let done = match (&r.snapshot, r.backup, r.target) {
        (Some(s), _, _) => v.restore(&id, s).await.map(|()| s.clone()),
        (None, Some(b), Some(t)) => v.restore_backup_in_place(&id, &b, t).await.map(|()| b.id),
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "a restore needs a snapshot, or a backup and its target",
            );
        }
    };
    match done {
        Ok(what) => Json(serde_json::json!({"volume": id, "restored": what})).into_response(),
        Err(e) => failed(e),
    }
}

/// Make volume `id` here from another volume's snapshot or backup.
pub async fn restore_new(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(job): Json<corral_types::api::VolumeRestoreNew>,
) -> Response {
    let v = match volumes(&shared) {
        Ok(v) => v.clone(),
        Err(r) => return r.into_response(),
    };
    // Its own task: the server hanging up does not stop it halfway.
    let provider = v.kind_name();
    let vol = id.clone();
    match tokio::spawn(async move { v.restore_new(&vol, job).await }).await {
        Ok(Ok(())) => Json(serde_json::json!({"volume": id, "provider": provider})).into_response(),
        Ok(Err(e)) => failed(e),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GenQuery>,
) -> Response {
    let v = match volumes(&shared) {
        Ok(v) => v.clone(),
        Err(r) => return r.into_response(),
    };
    match v.local_generation(&id) {
        Some(g) if g != q.generation => {
            return err(
                StatusCode::CONFLICT,
                format!(
                    "volume {id}: this node's copy is at generation {g}, not {}",
                    q.generation
                ),
            );
        }
        _ => {}
    }
    match v.delete(&id).await {
        Ok(()) => Json(serde_json::json!({"volume": id, "deleted": true})).into_response(),
        Err(e) => failed(e),
    }
}

/// Stream snapshot `snapshot` (taken now unless it exists), only its
/// changes since `base` when given.
pub async fn export(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let v = match held(&shared, &id, q.generation) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if q.base.is_some()
        && let Some(h) = &q.holder
        && shared.is_active(h)
    {
        return err(
            StatusCode::CONFLICT,
            format!(
                "volume {id}: allocation {h} still runs on this node; the last copy waits for it to stop"
            ),
        );
    }
    let lock = v.lock(&id);
    let guard = lock.lock_owned().await;
    let snap = q.snapshot.clone();
    let base = q.base.clone();
    let made = v
        .blocking(&id, move |p, vol| {
            p.mount(vol)?;
            if !p.snapshots(vol)?.iter().any(|s| s.name == snap) {
                p.snapshot(vol, &snap)?;
            }
            p.export(vol, &snap, base.as_deref())
        })
        .await;
    let export = match made {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let vol = id.clone();
    tokio::task::spawn_blocking(move || {
        // Held until the stream is sent: no restore or delete meanwhile.
        let _guard = guard;
        let mut export = export;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match export.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        // A producer that failed at the end must break the stream: the
        // receiver must not take a truncated copy for a whole one.
        if let Err(e) = export.finish() {
            tracing::warn!(volume = %vol, error = %e, "volume export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// Back the volume up now (the server's schedule, or `corral volume
/// backup`), to the target the request carries.
pub async fn backup(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GenQuery>,
    Json(job): Json<corral_types::api::VolumeBackupJob>,
) -> Response {
    let v = match held(&shared, &id, q.generation) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match v.backup(&id, job).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => failed(e),
    }
}

/// The copies this node set aside.
pub async fn quarantined(State(shared): State<Arc<Shared>>) -> Response {
    let v = match volumes(&shared) {
        Ok(v) => v.clone(),
        Err(_) => return Json(Vec::<String>::new()).into_response(),
    };
    let p = v.provider.clone();
    match tokio::task::spawn_blocking(move || p.quarantined_copies()).await {
        Ok(Ok(names)) => Json(names).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
