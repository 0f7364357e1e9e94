//! Health checks of one allocation, run on its node.
//!
//! [`plan`] resolves every check of the group (its services' checks, then
//! its tasks') to the task it belongs to and the port it probes. [`spawn`]
//! runs one loop per check:
//!
//! - it probes only while the check's task runs, first right after each
//!   start of the task, then every `interval`, each probe bounded by
//!   `timeout`; a probe that overlaps a restart of the task is dropped;
//! - the status follows the thresholds and the grace period
//!   ([`tracker::CheckTracker`]);
//! - `check_restart` sends a restart request to the task's runner, which
//!   restarts the task through its restart policy;
//! - every probe updates the live states ([`CheckStates`]); the allocation
//!   runner reports them when [`worth_reporting`] says so (a status
//!   changed, a passing check started failing), not on every probe.
//!
//! Where a probe goes ([`address`]): a container in a bridge-networked pod
//! is reached at its pod IP and the port as written (falling back to the
//! mapped host port on 127.0.0.1 when the pod IP is unknown); a container
//! on the node's network at 127.0.0.1 and the port as written; an exec task
//! at 127.0.0.1 and its assigned port (what `CORRAL_PORT_<NAME>` tells it).

mod exec;
pub mod http;
mod tcp;
pub mod tracker;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_types::units::Millis;
use corral_types::{
    CheckKind, CheckSpec, CheckState, CheckStatus, DriverKind, GroupSpec, NetworkMode,
    TaskLifecycle, TaskState,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::driver::now_unix_ms;
pub use crate::task_runner::TaskView;

pub use tracker::{CheckTracker, Probe, Recorded, RunId, SavedCheck};

/// Every check's latest state, by check name.
pub type CheckStates = BTreeMap<String, CheckState>;

/// Every check's tracker as it stands, by check name (what the allocation
/// persists; see [`SavedCheck`]).
pub type SavedChecks = BTreeMap<String, SavedCheck>;

/// One check of an allocation, resolved against its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCheck {
    pub spec: CheckSpec,
    /// The task the check belongs to: an exec check runs in it, its starts
    /// open the grace periods, `check_restart` restarts it.
    pub task: String,
    /// The port an http or tcp check probes.
    pub port: Option<PortRef>,
}

/// A task's port, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRef {
    pub task: String,
    pub name: String,
    pub number: u16,
}

impl PortRef {
    /// The key of its host port in `Allocation::ports`.
    pub fn key(&self) -> String {
        corral_types::GroupSpec::port_key(&self.task, &self.name)
    }
}

/// The group's checks, services' first. The parser fills in every check's
/// task and port; a check it could not resolve (a spec from elsewhere) is
/// left out with a warning.
pub fn plan(group: &GroupSpec) -> Vec<PlannedCheck> {
    let find_port = |name: &str| {
        group
            .ports()
            .find(|(_, n, _)| *n == name)
            .map(|(task, name, number)| PortRef {
                task: task.to_string(),
                name: name.to_string(),
                number,
            })
    };
    let only_task = match group.tasks.as_slice() {
        [t] => Some(t.name.clone()),
        _ => None,
    };
    let declared = group
        .services
        .iter()
        .flat_map(|s| s.checks.iter().map(move |c| (s.port.as_deref(), None, c)))
        .chain(group.tasks.iter().flat_map(|t| {
            t.checks
                .iter()
                .map(move |c| (None, Some(t.name.as_str()), c))
        }));
    let mut out = Vec::new();
    for (service_port, owner_task, c) in declared {
        let port = match c.kind {
            CheckKind::Exec { .. } => None,
            _ => c.port.as_deref().or(service_port).and_then(find_port),
        };
        let task = c
            .task
            .clone()
            .or_else(|| owner_task.map(str::to_string))
            .or_else(|| port.as_ref().map(|p| p.task.clone()))
            .or_else(|| {
                c.port
                    .as_deref()
                    .or(service_port)
                    .and_then(find_port)
                    .map(|p| p.task)
            })
            .or_else(|| only_task.clone());
        let needs_port = !matches!(c.kind, CheckKind::Exec { .. });
        match task {
            Some(task) if !needs_port || port.is_some() => out.push(PlannedCheck {
                spec: c.clone(),
                task,
                port,
            }),
            _ => tracing::warn!(group = %group.name, check = %c.name,
                "check left out: its task or port is not in the group"),
        }
    }
    out
}

/// Where an http or tcp check of a task reaches `port` (see the module
/// documentation). `task_ip` is what the task's driver says
/// ([`Driver::task_ip`]); `host_port` the port assigned on the node.
pub fn address(
    driver: DriverKind,
    network: NetworkMode,
    task_ip: Option<IpAddr>,
    port: u16,
    host_port: Option<u16>,
) -> SocketAddr {
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    match (driver, network, task_ip) {
        (DriverKind::Container, NetworkMode::Bridge, Some(ip)) => SocketAddr::new(ip, port),
        (DriverKind::Container, NetworkMode::Host, _) => SocketAddr::new(local, port),
        _ => SocketAddr::new(local, host_port.unwrap_or(port)),
    }
}

/// Whether the live states differ from the last reported ones in a way
/// worth a report: a check appeared or went, a status changed, or a check
/// started or stopped failing probes.
pub fn worth_reporting(reported: &CheckStates, live: &CheckStates) -> bool {
    reported.len() != live.len()
        || live.iter().any(|(name, l)| match reported.get(name) {
            None => true,
            Some(r) => {
                r.status != l.status || (r.consecutive_failures > 0) != (l.consecutive_failures > 0)
            }
        })
}

/// The running check loops; dropping it stops them.
pub struct Running {
    _loops: JoinSet<()>,
}

/// What every check loop of an allocation shares.
struct Env {
    network: NetworkMode,
    /// Host ports by `task.port`.
    host_ports: BTreeMap<String, u16>,
    http: Option<reqwest::Client>,
}

/// Starts one loop per check; the states are published on the returned
/// channel. Dropping [`Running`] stops the loops.
pub fn spawn(
    checks: Vec<PlannedCheck>,
    tasks: &BTreeMap<String, TaskView>,
    network: NetworkMode,
    host_ports: BTreeMap<String, u16>,
) -> (watch::Receiver<CheckStates>, Running) {
    let (tx, rx) = watch::channel(CheckStates::new());
    let saved = Arc::new(Mutex::new(SavedChecks::new()));
    let running = spawn_into(checks, tasks, network, host_ports, Arc::new(tx), saved);
    (rx, running)
}

/// [`spawn`], publishing into `out`, and keeping every tracker in `saved`:
/// a check whose task is still in the run it was saved for carries on
/// from there (an agent restart re-attached to it).
pub fn spawn_into(
    checks: Vec<PlannedCheck>,
    tasks: &BTreeMap<String, TaskView>,
    network: NetworkMode,
    host_ports: BTreeMap<String, u16>,
    out: Arc<watch::Sender<CheckStates>>,
    saved: Arc<Mutex<SavedChecks>>,
) -> Running {
    let now = now_unix_ms();
    let previous = lock(&saved).clone();
    let initial: CheckStates = checks
        .iter()
        .map(|c| {
            let mut t = CheckTracker::new(&c.spec);
            if let Some(p) = previous.get(&c.spec.name) {
                t.restore(p);
            }
            (c.spec.name.clone(), t.state(&c.task, now))
        })
        .collect();
    out.send_replace(initial);
    let http = if checks
        .iter()
        .any(|c| matches!(c.spec.kind, CheckKind::Http { .. }))
    {
        match http::client() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the http client of health checks");
                None
            }
        }
    } else {
        None
    };
    let env = Arc::new(Env {
        network,
        host_ports,
        http,
    });
    let mut loops = JoinSet::new();
    for c in checks {
        let Some(link) = tasks.get(&c.task).cloned() else {
            // A task without a runner (it finished before an agent
            // restart): its checks stay pending.
            continue;
        };
        let port_link = c.port.as_ref().and_then(|p| tasks.get(&p.task)).cloned();
        let ends = Ends {
            out: out.clone(),
            saved: saved.clone(),
        };
        loops.spawn(run_check(c, link, port_link, env.clone(), ends));
    }
    Running { _loops: loops }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a check loop puts what it learns.
struct Ends {
    out: Arc<watch::Sender<CheckStates>>,
    saved: Arc<Mutex<SavedChecks>>,
}

fn run_id(s: &TaskState) -> Option<RunId> {
    (s.state == TaskLifecycle::Running).then_some((s.started_at, s.restarts))
}

async fn run_check(
    c: PlannedCheck,
    link: TaskView,
    port_link: Option<TaskView>,
    env: Arc<Env>,
    ends: Ends,
) {
    // Unix milliseconds advanced by tokio's clock: saved start times stay
    // meaningful across an agent restart, paused time drives tests.
    let (base_unix, base) = (now_unix_ms(), Instant::now());
    let clock = || base_unix + base.elapsed().as_millis() as u64;
    let interval = c.spec.interval.as_std().max(Duration::from_millis(100));
    let timeout = c.spec.timeout.as_std();
    let mut tracker = CheckTracker::new(&c.spec);
    let mut state = link.state.clone();
    let mut handle = link.handle.clone();
    let mut current: Option<RunId> = None;
    let mut restored = lock(&ends.saved).get(&c.spec.name).cloned();
    let mut addr_cache: Option<(String, SocketAddr)> = None;
    let publish = |t: &CheckTracker, run: Option<RunId>| {
        let st = t.state(&c.task, now_unix_ms());
        if let Some(run) = run {
            lock(&ends.saved).insert(c.spec.name.clone(), t.save(run));
        } else {
            lock(&ends.saved).remove(&c.spec.name);
        }
        ends.out.send_if_modified(|m| {
            if m.get(&c.spec.name) == Some(&st) {
                false
            } else {
                m.insert(c.spec.name.clone(), st);
                true
            }
        });
    };
    loop {
        if current.is_some() && run_id(&state.borrow()).is_none() {
            // The task stopped: nothing to vouch for until it runs again.
            current = None;
            tracker.task_stopped();
            publish(&tracker, None);
        }
        // Running, with a handle to probe (a state carried over an agent
        // restart says running before the runner re-attached).
        let run = loop {
            let s = state.borrow_and_update().clone();
            if s.state == TaskLifecycle::Running && handle.borrow_and_update().is_some() {
                break run_id(&s);
            }
            let changed = tokio::select! {
                r = state.changed() => r,
                r = handle.changed() => r,
            };
            if changed.is_err() {
                return;
            }
        };
        if run != current {
            current = run;
            match restored.take().filter(|s| Some(s.run) == run) {
                // Re-attached to the run it was saved for: carry on.
                Some(saved) => tracker.restore(&saved),
                None => tracker.task_started(clock()),
            }
            publish(&tracker, current);
        }
        let next = Instant::now() + interval;
        let probe = probe(
            &c,
            &link,
            port_link.as_ref(),
            &env,
            &mut addr_cache,
            timeout,
        )
        .await;
        // A probe across a stop or restart of the task says nothing.
        if run_id(&state.borrow()) != current || link.handle.borrow().is_none() {
            continue;
        }
        let rec = tracker.record(clock(), probe);
        publish(&tracker, current);
        if rec.status_changed {
            tracing::info!(check = %c.spec.name, task = %c.task, status = tracker.status().as_str(),
                "health check status changed");
        }
        if let Some(reason) = rec.restart {
            tracing::warn!(check = %c.spec.name, task = %c.task, %reason, "restarting the task");
            let _ = link.restart.send(crate::task_runner::RestartRequest {
                reason,
                by_user: false,
            });
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                r = state.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if run_id(&state.borrow()) != current {
                        break;
                    }
                }
            }
        }
    }
}

async fn probe(
    c: &PlannedCheck,
    link: &TaskView,
    port_link: Option<&TaskView>,
    env: &Env,
    addr_cache: &mut Option<(String, SocketAddr)>,
    timeout: Duration,
) -> Probe {
    match &c.spec.kind {
        CheckKind::Exec { command } => {
            let handle = link.handle.borrow().clone();
            match handle {
                Some(h) => exec::probe(link.driver.as_ref(), &h, command, timeout).await,
                None => Probe::Fail(format!("task {} is not running", c.task)),
            }
        }
        CheckKind::Http {
            path,
            method,
            status,
            headers,
        } => {
            let addr = match resolve(c, port_link, env, addr_cache).await {
                Ok(a) => a,
                Err(why) => return Probe::Fail(why),
            };
            let Some(client) = &env.http else {
                return Probe::Fail("the agent has no http client for checks".into());
            };
            let req = http::Request {
                method,
                path,
                status: *status,
                headers,
            };
            http::probe(client, addr, req, timeout).await
        }
        CheckKind::Tcp => match resolve(c, port_link, env, addr_cache).await {
            Ok(addr) => tcp::probe(addr, timeout).await,
            Err(why) => Probe::Fail(why),
        },
    }
}

/// The address of the check's port, cached per run of the port's task.
async fn resolve(
    c: &PlannedCheck,
    port_link: Option<&TaskView>,
    env: &Env,
    cache: &mut Option<(String, SocketAddr)>,
) -> Result<SocketAddr, String> {
    let (Some(port), Some(link)) = (&c.port, port_link) else {
        return Err("the check has no port to probe".into());
    };
    let Some(handle) = link.handle.borrow().clone() else {
        return Err(format!(
            "task {} (port {}) is not running",
            port.task, port.name
        ));
    };
    if let Some((id, addr)) = cache
        && *id == handle.id
    {
        return Ok(*addr);
    }
    let host_port = env.host_ports.get(&port.key()).copied();
    let ip = match (link.driver.kind(), env.network) {
        (DriverKind::Container, NetworkMode::Bridge) => match link.driver.task_ip(&handle).await {
            Ok(ip) => ip,
            Err(e) if host_port.is_some() => {
                tracing::debug!(check = %c.spec.name, error = %e,
                    "no pod IP; probing the mapped host port");
                None
            }
            Err(e) => return Err(format!("cannot find the task's address: {e}")),
        },
        _ => None,
    };
    let addr = address(link.driver.kind(), env.network, ip, port.number, host_port);
    *cache = Some((handle.id, addr));
    Ok(addr)
}

/// `2s`, `500ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    Millis(d.as_millis() as u64).to_string()
}

/// Whether every check passes (true when there are none).
pub fn all_passing(states: &CheckStates) -> bool {
    states.values().all(|s| s.status == CheckStatus::Passing)
}
