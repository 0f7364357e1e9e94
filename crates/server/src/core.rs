//! The server's shared core and its lifecycle: open the store, start the
//! background loops (workers, applier, heartbeat monitor), serve the API,
//! and stop all of them on one shutdown signal.

use std::sync::Arc;

use corral_store::{SqliteStore, State, StateStore, StoreError, Write};
use corral_types::{EvalStatus, EvalTrigger, Evaluation, Index, UnixMillis};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::applier::{self, PlanRequest};
use crate::broker::Broker;
use crate::heartbeat::Heartbeats;
use crate::{ServerConfig, ServerError, api, worker};

/// Everything request handlers and background loops share.
pub struct Core {
    pub config: ServerConfig,
    pub store: StateStore,
    pub broker: Broker,
    pub heartbeats: Heartbeats,
    pub metrics: crate::metrics::Metrics,
    /// Latest usage per running task, as agents push it (memory only).
    pub usage: crate::usage::Usage,
    /// The latest committed index; blocking queries wait on it.
    pub index: watch::Sender<Index>,
    pub(crate) applier: mpsc::Sender<PlanRequest>,
    pub(crate) http: reqwest::Client,
    /// Volume backups in flight (one per volume).
    pub(crate) backups: crate::backups::InFlight,
    /// Volumes this server is restoring under a new id (`restore --as`):
    /// a record marked restoring that is not here was interrupted.
    pub(crate) restores: crate::backups::InFlight,
    pub shutdown: CancellationToken,
}

pub use corral_types::model::now_ms;

/// A new id, `rrrrrrrr-tttt-tttt-tttt-rrrrrrrrrrrr`: eight random hex
/// digits (what the CLI shows and matches by prefix), the time in
/// milliseconds (48 bits: ids made together sit together in the store's
/// maps, see `corral_store::idkey`), twelve more random digits.
pub fn new_id() -> String {
    id_at(uuid::Uuid::new_v4().as_u128(), now_ms())
}

/// When a server-made id was made (see [`new_id`]); `None` for anything
/// else.
pub fn id_time(id: &str) -> Option<UnixMillis> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    Some(((u.as_u128() >> 48) & 0xffff_ffff_ffff) as u64)
}

fn id_at(random: u128, ms: u64) -> String {
    let head = (random >> 96) as u32;
    let tail = random & 0xffff_ffff_ffff;
    format!(
        "{head:08x}-{:04x}-{:04x}-{:04x}-{tail:012x}",
        (ms >> 32) & 0xffff,
        (ms >> 16) & 0xffff,
        ms & 0xffff
    )
}

impl Core {
    /// Commit a batch built from the latest state (on the store's threads),
    /// then wake blocking queries.
    pub async fn write<T, F>(self: &Arc<Self>, build: F) -> Result<(Index, T), ServerError>
    where
        F: FnOnce(&State, Index) -> Result<(Vec<Write>, T), ServerError> + Send + 'static,
        T: Send + 'static,
    {
        let index = self.index.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Woken from the store's thread itself: if the caller's future is
        // dropped (a client hung up), the commit still wakes its readers.
        self.store.submit(build, move |r| {
            if let Ok(Ok((i, _))) = &r {
                let i = *i;
                index.send_if_modified(|cur| {
                    let newer = i > *cur;
                    if newer {
                        *cur = i;
                    }
                    newer
                });
            }
            let _ = tx.send(r);
        });
        let r = rx
            .await
            .map_err(|_| ServerError::Internal("the store dropped a write".into()))???;
        Ok(r)
    }

    /// Commit a fixed batch.
    pub async fn commit(self: &Arc<Self>, writes: Vec<Write>) -> Result<Index, ServerError> {
        self.write(move |_, _| Ok((writes, ())))
            .await
            .map(|(i, ())| i)
    }

    /// A new pending evaluation for a job.
    pub fn new_eval(job: &str, trigger: EvalTrigger, now: UnixMillis) -> Evaluation {
        Evaluation {
            wait_until: None,
            id: new_id(),
            job: job.to_string(),
            trigger,
            status: EvalStatus::Pending,
            status_description: String::new(),
            failed_placements: vec![],
            snapshot_index: 0,
            created_at: now,
            modified_at: now,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Hand committed evaluations to the workers.
    pub fn enqueue(&self, evals: impl IntoIterator<Item = Evaluation>) {
        for e in evals {
            self.broker.enqueue(e);
        }
    }

    /// Capacity appeared (a node joined, an allocation ended): blocked
    /// evaluations get another try.
    pub fn capacity_changed(&self) {
        self.broker.unblock_all();
    }
}

/// A running server: the API router plus its background loops.
pub struct Server {
    pub core: Arc<Core>,
    tasks: TaskTracker,
}

impl Server {
    /// Open the state in `config.data_dir` and start the background loops.
    pub async fn start(
        config: ServerConfig,
        shutdown: CancellationToken,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::Internal(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let path = config.data_dir.join("state.db");
        let store = tokio::task::spawn_blocking(move || -> Result<StateStore, StoreError> {
            StateStore::open(Box::new(SqliteStore::open(&path)?))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        Self::start_with(config, store, shutdown).await
    }

    /// Start on an already opened store (tests, the simulator).
    pub async fn start_with(
        config: ServerConfig,
        store: StateStore,
        shutdown: CancellationToken,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        // Every commit from here on records its events.
        store.set_event_hook(crate::events::hook());
        let snapshot = store.snapshot();
        let (index, _) = watch::channel(snapshot.index());
        let (plan_tx, plan_rx) = mpsc::channel(256);
        let heartbeats = Heartbeats::new(&config);
        let core = Arc::new(Core {
            broker: Broker::new(),
            heartbeats,
            metrics: Default::default(),
            usage: Default::default(),
            index,
            applier: plan_tx,
            http: reqwest::Client::new(),
            backups: Default::default(),
            restores: Default::default(),
            shutdown: shutdown.clone(),
            store,
            config,
        });
        // Nodes known before a restart get a grace period before they can
        // be marked down: their agents need time to find us again.
        core.heartbeats.restore(&snapshot, &core.config);
        // Evaluations that were pending or blocked when we stopped.
        for e in snapshot.open_evals() {
            if e.status == EvalStatus::Blocked {
                core.broker.block((*e).clone());
            } else {
                core.broker.enqueue((*e).clone());
            }
        }
        core.broker.unblock_all();

        let tasks = TaskTracker::new();
        tasks.spawn(applier::run(core.clone(), plan_rx));
        for n in 0..core.config.workers.max(1) {
            tasks.spawn(worker::run(core.clone(), n));
        }
        tasks.spawn(crate::heartbeat::monitor(core.clone()));
        tasks.spawn(crate::maintenance::run(core.clone()));
        tasks.spawn(crate::backups::run(core.clone()));
        tasks.spawn(crate::deployments::watcher::run(core.clone()));
        tasks.spawn(crate::alerts::run(core.clone()));
        tasks.close();
        Ok(Server { core, tasks })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.core.clone())
    }

    /// Serve the API on `listener` until shutdown, then wait for the
    /// background loops to finish.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        let shutdown = self.core.shutdown.clone();
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|e| ServerError::Internal(format!("http server: {e}")))?;
        self.core.broker.close();
        self.tasks.wait().await;
        Ok(())
    }

    /// Wait for the background loops after shutdown was signalled (when
    /// the router is served elsewhere).
    pub async fn wait(self) {
        self.core.shutdown.cancelled().await;
        self.core.broker.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids_and_sort_by_time_after_the_head() {
        let a = id_at(u128::MAX, 0x0123_4567_89ab);
        assert_eq!(a, "ffffffff-0123-4567-89ab-ffffffffffff");
        let earlier = id_at(0, 1_700_000_000_000);
        let later = id_at(u128::MAX, 1_700_000_000_001);
        assert_eq!(earlier.len(), 36);
        assert!(earlier[9..] < later[9..], "{earlier} {later}");
        assert!(earlier[..8] < later[..8]);
        // The head is random: two ids made in the same millisecond differ
        // in their first eight digits.
        assert_ne!(new_id()[..8], new_id()[..8]);
        assert_eq!(id_time(&a), Some(0x0123_4567_89ab));
        assert_eq!(id_time(&later), Some(1_700_000_000_001));
        assert_eq!(id_time("not-an-id"), None);
    }

    /// An empty token would lock every client out: the server refuses to
    /// start with one, saying which key is wrong.
    #[tokio::test]
    async fn an_empty_api_token_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        for token in ["", "  "] {
            let mut config = ServerConfig::new(dir.path().to_path_buf());
            config.api_token = Some(token.into());
            let store =
                StateStore::open(Box::new(corral_store::MemoryStore::new())).expect("store");
            let Err(e) = Server::start_with(config, store, CancellationToken::new()).await else {
                panic!("a server started with api_token {token:?}");
            };
            assert!(e.to_string().contains("api_token is empty"), "{e}");
        }
    }
}
