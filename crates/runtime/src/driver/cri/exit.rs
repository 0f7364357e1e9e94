//! Watching containers for their exit: one relist loop per driver (as the
//! kubelet's PLEG does) lists every container in one ListContainers call
//! and asks ContainerStatus only about the ones that exited or vanished.
//! A poller per container cost one status call per container per interval,
//! which with 100 containers was most of the node's idle CPU and slowed
//! down starting more of them.
//!
//! An exit stays cached until the task is forgotten, so `wait` is
//! cancel-safe and can be called again and again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::{Notify, watch};

use super::client::CriClient;
use super::container::{exit_of, state_of};
use crate::driver::ExitResult;

/// Log a failing list call once, then every this many failures.
const WARN_EVERY: u32 = 50;

/// A task's view of its container's exit.
#[derive(Debug, Clone)]
pub struct Tracked {
    exit: watch::Receiver<Option<ExitResult>>,
}

impl Tracked {
    /// Resolves with the exit, now or later.
    pub async fn wait(&self) -> Option<ExitResult> {
        let mut rx = self.exit.clone();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
    }
}

#[derive(Debug)]
struct Watched {
    container_id: String,
    tx: watch::Sender<Option<ExitResult>>,
}

#[derive(Debug)]
struct Shared {
    client: CriClient,
    interval: Duration,
    /// handle id -> its container.
    watched: Mutex<HashMap<String, Watched>>,
}

/// The driver's exit watcher; its loop starts with the first container
/// watched and ends when the watcher is dropped.
#[derive(Debug)]
pub struct ExitWatcher {
    shared: Arc<Shared>,
    /// Relist now (a stop, or a first container to watch). Outside
    /// `shared`: the loop holds it while it holds `shared` only weakly.
    poke: Arc<Notify>,
    started: std::sync::Once,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExitWatcher {
    pub fn new(client: CriClient, interval: Duration) -> ExitWatcher {
        ExitWatcher {
            shared: Arc::new(Shared {
                client,
                interval,
                watched: Mutex::new(HashMap::new()),
            }),
            poke: Arc::new(Notify::new()),
            started: std::sync::Once::new(),
        }
    }

    /// Watches the container of a task (again: the same receiver).
    pub fn track(&self, handle_id: &str, container_id: &str) -> Tracked {
        // Spawned on first use: the driver may be built outside a runtime.
        self.started.call_once(|| {
            tokio::spawn(relist_loop(Arc::downgrade(&self.shared), self.poke.clone()));
        });
        let mut watched = lock(&self.shared.watched);
        let first = watched.is_empty();
        let rx = watched
            .entry(handle_id.to_string())
            .or_insert_with(|| Watched {
                container_id: container_id.to_string(),
                tx: watch::channel(None).0,
            })
            .tx
            .subscribe();
        drop(watched);
        if first {
            self.poke.notify_one();
        }
        Tracked { exit: rx }
    }

    /// Watches a container whose exit is already known (found exited
    /// after an agent restart): `wait` answers at once.
    pub fn track_exited(&self, handle_id: &str, container_id: &str, exit: ExitResult) -> Tracked {
        let t = self.track(handle_id, container_id);
        self.resolve(container_id, &exit);
        t
    }

    /// Gives the watchers of a container its exit now: it is about to be
    /// removed, and a listing would only find it gone.
    pub fn resolve(&self, container_id: &str, exit: &ExitResult) {
        let watched = lock(&self.shared.watched);
        for w in watched.values().filter(|w| w.container_id == container_id) {
            w.tx.send_if_modified(|cur| {
                let unknown = cur.is_none();
                if unknown {
                    *cur = Some(exit.clone());
                }
                unknown
            });
        }
    }

    /// Looks again at once (after a stop).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Stops watching a task's container (it was removed).
    pub fn forget(&self, handle_id: &str) {
        lock(&self.shared.watched).remove(handle_id);
    }

    /// Stops watching a container, whatever handle watched it (it was
    /// removed without one).
    pub fn forget_container(&self, container_id: &str) {
        lock(&self.shared.watched).retain(|_, w| w.container_id != container_id);
    }
}

/// What a listing says about a watched container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Listed as created or running: nothing to do.
    Alive,
    /// Listed as exited: its status has the exit.
    Exited,
    /// Not listed (or in an unknown state): its status says what became
    /// of it.
    Unclear,
}

/// Which watched containers need a status call, from one listing
/// (container id -> CRI state).
pub fn to_check<'a>(
    watched: impl IntoIterator<Item = &'a str>,
    listed: &HashMap<String, i32>,
) -> Vec<(&'a str, Seen)> {
    watched
        .into_iter()
        .filter_map(|id| {
            let seen = match listed.get(id).map(|s| cri::ContainerState::try_from(*s)) {
                Some(Ok(
                    cri::ContainerState::ContainerCreated | cri::ContainerState::ContainerRunning,
                )) => Seen::Alive,
                Some(Ok(cri::ContainerState::ContainerExited)) => Seen::Exited,
                _ => Seen::Unclear,
            };
            (seen != Seen::Alive).then_some((id, seen))
        })
        .collect()
}

async fn relist_loop(shared: Weak<Shared>, poke: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let interval = s.interval;
        let pending: Vec<String> = lock(&s.watched)
            .values()
            .filter(|w| w.tx.borrow().is_none())
            .map(|w| w.container_id.clone())
            .collect();
        if !pending.is_empty() {
            match s
                .client
                .list_containers(cri::ContainerFilter::default())
                .await
            {
                Ok(list) => {
                    failures = 0;
                    let listed: HashMap<String, i32> =
                        list.into_iter().map(|c| (c.id, c.state)).collect();
                    let ids = pending.iter().map(String::as_str);
                    // Concurrently: one slow status call must not hold back
                    // the exits of the other containers.
                    let client = &s.client;
                    let exits = futures::future::join_all(
                        to_check(ids, &listed)
                            .into_iter()
                            .map(|(id, _)| async move { (id, exit_now(client, id).await) }),
                    )
                    .await;
                    for (container_id, exit) in exits {
                        let Some(exit) = exit else { continue };
                        let watched = lock(&s.watched);
                        for w in watched.values().filter(|w| w.container_id == container_id) {
                            w.tx.send_replace(Some(exit.clone()));
                        }
                    }
                }
                Err(e) => {
                    if failures.is_multiple_of(WARN_EVERY) {
                        tracing::warn!(error = %e, failures,
                            "cannot list the containers to watch their exits; retrying");
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        // Only a weak reference across the wait, so dropping the driver
        // ends the loop.
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = poke.notified() => {}
        }
    }
}

/// The exit of a container the listing did not show as alive, if it has
/// one (a status call that fails for another reason is retried next time).
async fn exit_now(client: &CriClient, container_id: &str) -> Option<ExitResult> {
    match client.container_status(container_id).await {
        Ok(st) if state_of(&st) == cri::ContainerState::ContainerExited => Some(exit_of(&st)),
        Ok(_) => None,
        Err(e) if e.is_not_found() => Some(ExitResult {
            message: "the container is gone (removed outside corral)".into(),
            ..ExitResult::default()
        }),
        Err(e) => {
            // Retried at the next listing (every interval, while the
            // listing says it exited).
            tracing::warn!(container = %container_id, error = %e, "cannot get the status of a container that exited; retrying");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(items: &[(&str, cri::ContainerState)]) -> HashMap<String, i32> {
        items
            .iter()
            .map(|(id, s)| (id.to_string(), *s as i32))
            .collect()
    }

    #[test]
    fn only_exited_or_missing_containers_need_a_status_call() {
        use cri::ContainerState::*;
        let listed = listing(&[
            ("run", ContainerRunning),
            ("new", ContainerCreated),
            ("done", ContainerExited),
            ("odd", ContainerUnknown),
            ("other", ContainerExited),
        ]);
        let got = to_check(["run", "new", "done", "odd", "gone"], &listed);
        assert_eq!(
            got,
            vec![
                ("done", Seen::Exited),
                ("odd", Seen::Unclear),
                ("gone", Seen::Unclear)
            ]
        );
    }

    #[test]
    fn containers_not_watched_are_not_looked_at() {
        let listed = listing(&[("other", cri::ContainerState::ContainerExited)]);
        assert!(to_check(["run"], &listing(&[])).len() == 1);
        assert!(to_check(std::iter::empty(), &listed).is_empty());
    }
}
