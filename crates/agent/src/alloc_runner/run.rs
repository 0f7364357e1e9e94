//! One allocation's life on this node, in order: build its task runners,
//! run every hook's `prerun`, run the tasks while reporting their folded
//! status, then `postrun`/`destroy` and the last report. The hooks own the
//! concerns (see [`super::hooks`]); this keeps the order and the fold.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_types::{AllocUpdate, Allocation, ClientStatus, GroupSpec};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::RunnerEnv;
use super::hooks::{self, AllocHook, AllocView};
use super::status::Reporter;
use super::tasks::{self, Setup, Task};
use crate::driver::{AllocContext, PodOptions};
use crate::task_runner::{TaskOutcome, TaskRunner};

type Joins = JoinSet<(String, TaskOutcome)>;

pub(super) async fn run(
    env: Arc<RunnerEnv>,
    alloc: Allocation,
    group: GroupSpec,
    recovering: bool,
    stop: CancellationToken,
    alloc_rx: watch::Receiver<Allocation>,
) {
    let (view, runners) = prepare(env, &alloc, group, recovering, stop, alloc_rx);
    let mut hooks = hooks::hooks();
    if let Err(e) = hooks::prerun_all(&mut hooks, &view).await {
        let _ = view.env.updates.send(AllocUpdate {
            volume_sync: view.volume_sync.borrow().clone(),
            id: alloc.id.clone(),
            client: ClientStatus::Failed,
            tasks: BTreeMap::new(),
            message: e.message,
            checks: BTreeMap::new(),
            health: None,
        });
        return;
    }
    let mut reporter = Reporter::new(
        alloc.id.clone(),
        view.dir.clone(),
        view.env.updates.clone(),
        view.tasks
            .iter()
            .map(|(k, t)| (k.clone(), t.state.clone()))
            .collect(),
        view.checks.subscribe(),
        view.health.subscribe(),
        view.volume_sync.subscribe(),
    );
    // A failure decided before an agent restart stands: what still runs
    // of the allocation stops.
    let mut failure = if recovering {
        view.dir.load_failure()
    } else {
        None
    };
    if failure.is_some() {
        view.stop.cancel();
    }
    let mut joins = Joins::new();
    for (name, r) in runners {
        joins.spawn(async move { (name, r.run().await) });
    }
    reporter.send(failure.as_deref(), false);
    follow(&view, &mut hooks, &mut reporter, &mut joins, &mut failure).await;
    finish(&view, &mut hooks, &mut reporter, failure.as_deref()).await;
}

/// The view every hook gets, and the runners of the tasks to run.
fn prepare(
    env: Arc<RunnerEnv>,
    alloc: &Allocation,
    group: GroupSpec,
    recovering: bool,
    stop: CancellationToken,
    alloc_rx: watch::Receiver<Allocation>,
) -> (AllocView, Vec<(String, Box<TaskRunner>)>) {
    let dir = env.shared.alloc_dir(&alloc.id);
    let health_watch = recovering
        .then(|| dir.load_record().ok().flatten())
        .flatten()
        .and_then(|r| r.health_watch);
    let ctx = AllocContext {
        alloc_id: alloc.id.clone(),
        job: alloc.job.clone(),
        group: alloc.group.clone(),
        index: alloc.index,
        node_id: env.node_id.clone(),
        alloc_dir: dir.path().to_path_buf(),
        ports: alloc.ports.clone(),
        pod: PodOptions::from_group(&group).with_dns(env.pod_dns.clone()),
    };
    let setup = Setup {
        env: &env,
        dir: &dir,
        actx: &ctx,
        alloc,
        group: &group,
        recovering,
        stop: &stop,
    };
    let mut views = BTreeMap::new();
    let mut runners = Vec::new();
    for spec in &group.tasks {
        let Some((task, view)) = tasks::build(&setup, spec) else {
            continue;
        };
        views.insert(spec.name.clone(), view);
        if let Task::Run(r) = task {
            runners.push((spec.name.clone(), r));
        }
    }
    env.shared.set_restarts(
        &alloc.id,
        views
            .iter()
            .map(|(n, v): (&String, &crate::task_runner::TaskView)| (n.clone(), v.restart.clone()))
            .collect(),
    );
    let view = AllocView {
        env,
        dir,
        ctx,
        group,
        alloc: alloc_rx,
        recovering,
        stop,
        tasks: views,
        checks: Arc::new(watch::channel(BTreeMap::new()).0),
        health: Arc::new(watch::channel(None).0),
        health_watch: Arc::new(watch::channel(health_watch).0),
        volume_sync: Arc::new(watch::channel(None).0),
    };
    (view, runners)
}

/// Reports every change until every task runner ended.
async fn follow(
    view: &AllocView,
    hooks: &mut [Box<dyn AllocHook>],
    reporter: &mut Reporter,
    joins: &mut Joins,
    failure: &mut Option<String>,
) {
    let mut changes = futures::stream::select_all(
        view.tasks
            .values()
            .map(|t| tokio_stream::wrappers::WatchStream::from_changes(t.state.clone())),
    );
    let mut alloc_rx = view.alloc.clone();
    let mut checks = view.checks.subscribe();
    let mut health = view.health.subscribe();
    // A watch whose sender is gone answers at once forever: stop polling
    // it, or this loop spins.
    let (mut alloc_open, mut checks_open, mut health_open) = (true, true, true);
    while !joins.is_empty() {
        tokio::select! {
            Some(_) = changes.next() => {}
            Some(r) = joins.join_next() => {
                // The task's last state is on disk before the allocation
                // acts on how it ended.
                reporter.send(failure.as_deref(), false);
                on_task_end(view, r, failure);
            }
            r = alloc_rx.changed(), if alloc_open => {
                alloc_open = r.is_ok();
                if r.is_ok() {
                    let a = alloc_rx.borrow_and_update().clone();
                    hooks::update_all(hooks, view, &a).await;
                }
                continue;
            }
            r = checks.changed(), if checks_open => {
                checks_open = r.is_ok();
                if !reporter.checks_worth_reporting() {
                    continue;
                }
            }
            r = health.changed(), if health_open => health_open = r.is_ok(),
        }
        reporter.send(failure.as_deref(), false);
    }
}

/// A task runner ended: when its task failed, so does the allocation;
/// the failure is persisted before the other tasks are stopped.
fn on_task_end(
    view: &AllocView,
    r: Result<(String, TaskOutcome), tokio::task::JoinError>,
    failure: &mut Option<String>,
) {
    let why = match r {
        Ok((name, TaskOutcome::Failed { reason })) => format!("task {name}: {reason}"),
        Ok((_, TaskOutcome::Stopped)) => return,
        Err(e) => format!("task runner crashed: {e}"),
    };
    if failure.is_none() {
        if let Err(e) = view.dir.save_failure(&why) {
            tracing::warn!(alloc = %view.ctx.alloc_id, error = %e, "cannot persist the allocation's failure");
        }
        *failure = Some(why);
        crate::killpoint::reached("alloc.after_failure");
    }
    view.stop.cancel();
}

/// Every task is dead: keep the last report, run the hooks' ends, send it.
async fn finish(
    view: &AllocView,
    hooks: &mut [Box<dyn AllocHook>],
    reporter: &mut Reporter,
    failure: Option<&str>,
) {
    // Kept before the record goes: a restarted agent must know the
    // allocation ended here, and how, even if the report never arrived.
    if let Err(e) = view.dir.save_final(&reporter.current(failure, true)) {
        tracing::warn!(alloc = %view.ctx.alloc_id, error = %e, "cannot keep the allocation's last report");
    }
    crate::killpoint::reached("alloc.after_final");
    hooks::finish_all(hooks, view).await;
    reporter.send_final(failure);
}
