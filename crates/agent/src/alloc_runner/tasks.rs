//! The allocation's task runners: one per task, built from the spec, or
//! continued from what the allocation's directory kept across an agent
//! restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use corral_types::{Allocation, GroupSpec, TaskLifecycle, TaskSpec};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::RunnerEnv;
use crate::driver::{AllocContext, HostMount, TaskContext, TaskHandle};
use crate::layout::{AllocDir, RestartRecord};
use crate::logs;
use crate::task_runner::{TaskRunner, TaskStore, TaskView};

/// Persists a task's handle and restart record in the allocation's
/// directory.
struct DiskStore {
    dir: AllocDir,
    task: String,
}

#[async_trait]
impl TaskStore for DiskStore {
    async fn save_handle(&self, handle: &TaskHandle) -> std::io::Result<()> {
        self.dir.save_handle(&self.task, handle)
    }
    async fn remove_handle(&self, _handle: &TaskHandle) -> std::io::Result<()> {
        self.dir.remove_handle(&self.task)
    }
    async fn save_restarts(&self, record: &RestartRecord) -> std::io::Result<()> {
        self.dir.save_restarts(&self.task, record)
    }
}

/// `CORRAL_VOLUME_<NAME>`: where a task finds volume `name`.
pub fn volume_env_var(name: &str) -> String {
    format!("CORRAL_VOLUME_{}", name.to_uppercase().replace('-', "_"))
}

/// The group's volumes as the task sees them, in spec order: bound at
/// their `mount` in a container; an exec task (no mount namespace) finds
/// the host directory in `CORRAL_VOLUME_<NAME>`.
fn volume_mounts(
    env: &RunnerEnv,
    alloc: &Allocation,
    group: &GroupSpec,
    task: &TaskSpec,
) -> Vec<HostMount> {
    let Some(vols) = env.shared.volumes.as_ref() else {
        return Vec::new();
    };
    group
        .volumes
        .iter()
        .map(|v| {
            let id = GroupSpec::volume_id(&alloc.job, v, alloc.index);
            let host_path = vols.provider.data_dir(&corral_volumes::VolumeRef(id));
            let container_path = match task.driver {
                corral_types::DriverKind::Exec => host_path.display().to_string(),
                _ => v.mount.clone(),
            };
            HostMount {
                host_path,
                container_path,
                read_only: v.read_only,
            }
        })
        .collect()
}

/// The environment a task sees: its spec's env plus `CORRAL_*` facts.
pub fn task_env(
    alloc: &Allocation,
    group: &GroupSpec,
    task: &str,
    env: &BTreeMap<String, String>,
    alloc_dir: &Path,
    volumes: &[HostMount],
) -> BTreeMap<String, String> {
    let mut out = env.clone();
    for (v, m) in group.volumes.iter().zip(volumes) {
        out.insert(volume_env_var(&v.name), m.container_path.clone());
    }
    out.insert("CORRAL_JOB".into(), alloc.job.clone());
    out.insert("CORRAL_GROUP".into(), alloc.group.clone());
    out.insert("CORRAL_TASK".into(), task.to_string());
    out.insert("CORRAL_ALLOC_ID".into(), alloc.id.clone());
    out.insert("CORRAL_ALLOC_INDEX".into(), alloc.index.to_string());
    out.insert("CORRAL_ALLOC_NAME".into(), alloc.name());
    out.insert("CORRAL_NODE_ID".into(), alloc.node_id.clone());
    out.insert("CORRAL_ALLOC_DIR".into(), alloc_dir.display().to_string());
    for (t, name, _) in group.ports() {
        if let Some(p) = alloc.ports.get(&GroupSpec::port_key(t, name)) {
            out.insert(GroupSpec::port_env_var(name), p.to_string());
        }
    }
    out
}

/// What the allocation's tasks are: a runner to run, or a task that was
/// already dead when the agent went away (its view has its last state).
pub enum Task {
    Run(Box<TaskRunner>),
    Dead,
}

/// What building a task runner needs of its allocation.
pub struct Setup<'a> {
    pub env: &'a RunnerEnv,
    pub dir: &'a AllocDir,
    pub actx: &'a AllocContext,
    pub alloc: &'a Allocation,
    pub group: &'a GroupSpec,
    pub recovering: bool,
    pub stop: &'a CancellationToken,
}

/// Builds the runner of `spec` (or finds it dead) and its live view;
/// `None` when its driver is not on this node.
pub fn build(s: &Setup<'_>, spec: &TaskSpec) -> Option<(Task, TaskView)> {
    let driver = s.env.drivers.get(&spec.driver).cloned()?;
    let previous = s
        .recovering
        .then(|| s.dir.load_task_state(&spec.name))
        .flatten()
        .unwrap_or_default();
    if s.recovering && previous.state == TaskLifecycle::Dead {
        // Finished before the agent went away: nothing to run.
        let (state_tx, state) = watch::channel(previous);
        drop(state_tx);
        let view = TaskView {
            driver,
            state,
            handle: watch::channel(None).1,
            restart: mpsc::unbounded_channel().0,
        };
        return Some((Task::Dead, view));
    }
    let task_dir = s.dir.task_dir(&spec.name);
    let _ = std::fs::create_dir_all(&task_dir);
    let _ = std::fs::create_dir_all(s.dir.log_dir());
    let mounts = volume_mounts(s.env, s.alloc, s.group, spec);
    let ctx = TaskContext {
        mounts: mounts.clone(),
        alloc: s.actx.clone(),
        task: spec.clone(),
        env: task_env(
            s.alloc,
            s.group,
            &spec.name,
            &spec.env,
            s.dir.path(),
            &mounts,
        ),
        task_dir,
        stdout_path: logs::log_file(s.dir.path(), &spec.name),
        stderr_path: logs::log_file(s.dir.path(), &spec.name),
    };
    let store = Arc::new(DiskStore {
        dir: s.dir.clone(),
        task: spec.name.clone(),
    });
    let mut runner = TaskRunner::new(driver, ctx, s.group.restart, store, s.stop.child_token());
    if s.recovering {
        runner = match s.dir.load_handle(&spec.name) {
            Some(h) => runner.recovering(h, previous),
            None => runner.resuming(previous),
        };
        if let Some(rec) = s.dir.load_restarts(&spec.name) {
            runner = runner.with_restart_record(rec);
        }
    }
    let view = runner.view();
    Some((Task::Run(Box::new(runner)), view))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use corral_types::Allocation;
    use corral_types::spec::{SourceFormat, parse_jobs};

    use super::task_env;

    /// The variables of the table after `<!-- task-env -->` in SPEC.md.
    fn documented(doc: &str) -> BTreeSet<String> {
        doc.lines()
            .skip_while(|l| l.trim() != "<!-- task-env -->")
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('`').nth(1))
            .map(str::to_owned)
            .collect()
    }

    /// Issue 14, case 10: docs/SPEC.md lists every variable a task gets,
    /// and no other.
    #[test]
    fn the_task_environment_is_the_documented_one() {
        let spec = "name: shop\ngroups:\n  - name: web\n    tasks:\n      - {name: app, image: a:1, ports: {http: 8080}}\n      - {name: ui, image: b:1, ports: {web-ui: 9090}}\n";
        let jobs = parse_jobs(spec, "shop.yaml", SourceFormat::Yaml).expect("parses");
        let group = &jobs[0].groups[0];
        let alloc: Allocation = serde_json::from_value(serde_json::json!({
            "id": "a1", "job": "shop", "job_version": 1, "group": "web", "index": 2,
            "node_id": "n1", "desired": "run", "client": "pending",
            "resources": {"cpu": 100, "memory": 1000000},
            "ports": {"app.http": 20001, "ui.web-ui": 20002},
            "created_at": 0, "modified_at": 0, "create_index": 0, "modify_index": 0
        }))
        .expect("allocation");
        let own = BTreeMap::from([
            ("FOO".to_owned(), "bar".to_owned()),
            ("CORRAL_JOB".to_owned(), "mine".to_owned()),
        ]);
        let mounts = [crate::driver::HostMount {
            host_path: "/v/shop.data/mnt/data".into(),
            container_path: "/data".into(),
            read_only: false,
        }];
        let mut group = group.clone();
        group.volumes = serde_json::from_value(serde_json::json!([
            {"name": "data", "size": 1000000000, "mount": "/data"}
        ]))
        .expect("volume");
        let env = task_env(
            &alloc,
            &group,
            "ui",
            &own,
            Path::new("/data/allocs/a1"),
            &mounts,
        );
        assert_eq!(env["CORRAL_VOLUME_DATA"], "/data");
        assert_eq!(env["FOO"], "bar");
        // corral's own win over the spec's (as SPEC.md says).
        assert_eq!(env["CORRAL_JOB"], "shop");
        assert_eq!(env["CORRAL_ALLOC_NAME"], "shop.web[2]");
        assert_eq!(env["CORRAL_ALLOC_DIR"], "/data/allocs/a1");
        // Every task learns every port of its group.
        assert_eq!(env["CORRAL_PORT_HTTP"], "20001");
        assert_eq!(env["CORRAL_PORT_WEB_UI"], "20002");
        let set: BTreeSet<String> = env
            .keys()
            .filter(|k| k.starts_with("CORRAL_"))
            .map(|k| {
                if k.starts_with("CORRAL_PORT_") {
                    "CORRAL_PORT_<NAME>".to_owned()
                } else if k.starts_with("CORRAL_VOLUME_") {
                    "CORRAL_VOLUME_<NAME>".to_owned()
                } else {
                    k.clone()
                }
            })
            .collect();
        let doc = documented(include_str!("../../../../docs/SPEC.md"));
        assert_eq!(set, doc, "docs/SPEC.md, The task environment");
    }
}
