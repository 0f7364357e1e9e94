//! The CRI config of one task's container (command, env, labels, log
//! file, limits, security) and how its status reads as an [`ExitResult`].

use std::collections::HashMap;

use corral_types::units::Bytes;
use corral_types::{LogPolicy, Resources, SecuritySpec};
use k8s_cri::v1 as cri;

use super::sandbox::{LABEL_TASK, labels, namespace_options, runtime_default_seccomp};
use crate::cgroup::{CFS_PERIOD_US, CgroupLimits};
use crate::driver::{ExitResult, TaskContext};

/// CRI reason of a container the OOM killer ended.
pub const REASON_OOM: &str = "OOMKilled";

/// Annotations with the task's log rotation, read back by the periodic
/// rotation ([`super::CriDriver`]'s `rotate_logs`).
pub const ANNOTATION_LOG_MAX_SIZE: &str = "corral.logs.max_size";
pub const ANNOTATION_LOG_MAX_FILES: &str = "corral.logs.max_files";

/// The log policy a container was created with (the default when its
/// annotations do not say).
pub fn log_policy(annotations: &HashMap<String, String>) -> LogPolicy {
    let mut p = LogPolicy::default();
    if let Some(v) = annotations
        .get(ANNOTATION_LOG_MAX_SIZE)
        .and_then(|v| v.parse().ok())
    {
        p.max_size = Bytes(v);
    }
    if let Some(v) = annotations
        .get(ANNOTATION_LOG_MAX_FILES)
        .and_then(|v| v.parse().ok())
    {
        p.max_files = v;
    }
    p
}

/// Who the container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// `uid` or `uid:gid`.
    Id { uid: i64, gid: Option<i64> },
    /// A user name from the image's `/etc/passwd`.
    Name(String),
}

/// Parses `user` of the security spec: `1000`, `1000:1000` or `nobody`.
pub fn parse_user(user: &str) -> Result<RunAs, String> {
    let user = user.trim();
    let num = |s: &str| s.parse::<u32>().ok().map(i64::from);
    match user.split_once(':') {
        Some((u, g)) => match (num(u), num(g)) {
            (Some(uid), Some(gid)) => Ok(RunAs::Id {
                uid,
                gid: Some(gid),
            }),
            _ => Err(format!(
                "user {user:?}: with a group, both must be numeric (uid:gid)"
            )),
        },
        None if user.is_empty() => Err("user is empty".into()),
        None => Ok(match num(user) {
            Some(uid) => RunAs::Id { uid, gid: None },
            None => RunAs::Name(user.to_string()),
        }),
    }
}

/// Capability names as CRI wants them: upper case, without `CAP_`.
fn cap_names(caps: &[String]) -> Vec<String> {
    caps.iter()
        .map(|c| {
            let c = c.trim().to_ascii_uppercase();
            c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
        })
        .collect()
}

/// cpu (shares, CFS quota over a 100 ms period) and memory limits; with
/// `limit_swap`, no swap on top of the memory limit.
pub fn linux_resources(r: &Resources, limit_swap: bool) -> cri::LinuxContainerResources {
    let limits = CgroupLimits::from_resources(r);
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    cri::LinuxContainerResources {
        cpu_period: CFS_PERIOD_US as i64,
        cpu_quota: limits
            .cfs_quota_us()
            .map(|q| i64::try_from(q).unwrap_or(i64::MAX))
            .unwrap_or(0),
        cpu_shares: limits.cpu_shares() as i64,
        memory_limit_in_bytes: memory,
        memory_swap_limit_in_bytes: if limit_swap && memory > 0 { memory } else { 0 },
        ..Default::default()
    }
}

pub fn security_context(
    sec: &SecuritySpec,
    network_host: bool,
) -> Result<cri::LinuxContainerSecurityContext, String> {
    let mut sc = cri::LinuxContainerSecurityContext {
        privileged: sec.privileged,
        namespace_options: Some(namespace_options(network_host)),
        readonly_rootfs: sec.read_only_rootfs,
        // A privileged task may gain privileges by definition.
        no_new_privs: !sec.privileged,
        seccomp: Some(runtime_default_seccomp()),
        ..Default::default()
    };
    if !sec.cap_add.is_empty() || !sec.cap_drop.is_empty() {
        sc.capabilities = Some(cri::Capability {
            add_capabilities: cap_names(&sec.cap_add),
            drop_capabilities: cap_names(&sec.cap_drop),
            add_ambient_capabilities: vec![],
        });
    }
    match sec.user.as_deref().map(parse_user).transpose()? {
        None => {}
        Some(RunAs::Id { uid, gid }) => {
            sc.run_as_user = Some(cri::Int64Value { value: uid });
            sc.run_as_group = gid.map(|value| cri::Int64Value { value });
        }
        Some(RunAs::Name(n)) => sc.run_as_username = n,
    }
    Ok(sc)
}

/// Everything CreateContainer needs for the task.
pub struct ContainerParams<'a> {
    pub ctx: &'a TaskContext,
    pub image: &'a str,
    pub attempt: u32,
    pub network_host: bool,
    pub limit_swap: bool,
}

pub fn container_config(p: &ContainerParams<'_>) -> Result<cri::ContainerConfig, String> {
    let ctx = p.ctx;
    let task = &ctx.task;
    let mut labels: HashMap<String, String> = labels(&ctx.alloc);
    labels.insert(LABEL_TASK.to_string(), task.name.clone());
    let working_dir = match task.workdir.as_deref() {
        None | Some("") => String::new(),
        Some(w) if w.starts_with('/') => w.to_string(),
        // Relative to the image's root.
        Some(w) => format!("/{w}"),
    };
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: task.name.clone(),
            attempt: p.attempt,
        }),
        image: Some(super::client::image_spec(p.image)),
        command: task.command.clone(),
        args: task.args.clone(),
        working_dir,
        envs: ctx
            .env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        labels,
        annotations: HashMap::from([
            (
                ANNOTATION_LOG_MAX_SIZE.to_string(),
                task.logs.max_size.0.to_string(),
            ),
            (
                ANNOTATION_LOG_MAX_FILES.to_string(),
                task.logs.max_files.to_string(),
            ),
        ]),
        // Relative to the sandbox's log directory; every run of the task
        // appends to it (see `crate::logs`).
        log_path: format!("{}.log", task.name),
        mounts: ctx
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                // Private: mounts made later under the volume stay out.
                propagation: cri::MountPropagation::PropagationPrivate as i32,
                ..Default::default()
            })
            .collect(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(&task.resources, p.limit_swap)),
            security_context: Some(security_context(&task.security, p.network_host)?),
        }),
        ..Default::default()
    })
}

/// The exit of a container the runtime reports as exited.
pub fn exit_of(st: &cri::ContainerStatus) -> ExitResult {
    let oom = st.reason == REASON_OOM;
    let mut exit = ExitResult::from_status(Some(st.exit_code), None, oom);
    let usual = ["", "Completed", "Error", REASON_OOM];
    if !usual.contains(&st.reason.as_str()) || (!st.message.is_empty() && st.exit_code != 0) {
        let detail = [st.reason.as_str(), st.message.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ");
        exit.message = format!("{} ({detail})", exit.message);
    }
    exit
}

pub fn state_of(st: &cri::ContainerStatus) -> cri::ContainerState {
    cri::ContainerState::try_from(st.state).unwrap_or(cri::ContainerState::ContainerUnknown)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use corral_types::TaskSpec;
    use corral_types::units::{Bytes, MilliCpu};

    use super::*;
    use crate::driver::AllocContext;

    fn ctx() -> TaskContext {
        let mut task: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": "app", "driver": "container", "image": "x:1",
            "command": ["/bin/sh", "-c"], "args": ["echo hi"], "workdir": "srv"
        }))
        .expect("task");
        task.resources = Resources {
            disk: Default::default(),
            cpu: MilliCpu(500),
            memory: Bytes(64 << 20),
        };
        task.security.cap_drop = vec!["cap_net_raw".into()];
        task.security.user = Some("1000:100".into());
        TaskContext {
            mounts: Default::default(),
            alloc: AllocContext {
                alloc_id: "a1".into(),
                job: "j".into(),
                group: "g".into(),
                index: 0,
                node_id: "n".into(),
                alloc_dir: PathBuf::from("/a"),
                ports: BTreeMap::new(),
                pod: Default::default(),
            },
            task,
            env: BTreeMap::from([("FOO".to_string(), "bar".to_string())]),
            task_dir: PathBuf::from("/a/app"),
            stdout_path: PathBuf::from("/a/logs/app.stdout"),
            stderr_path: PathBuf::from("/a/logs/app.stderr"),
        }
    }

    #[test]
    fn users() {
        assert_eq!(
            parse_user("1000"),
            Ok(RunAs::Id {
                uid: 1000,
                gid: None
            })
        );
        assert_eq!(
            parse_user("1000:5"),
            Ok(RunAs::Id {
                uid: 1000,
                gid: Some(5)
            })
        );
        assert_eq!(parse_user("nobody"), Ok(RunAs::Name("nobody".into())));
        assert!(parse_user("nobody:users").is_err());
        assert!(parse_user(" ").is_err());
    }

    #[test]
    fn config_carries_the_task() {
        let c = ctx();
        let cfg = container_config(&ContainerParams {
            ctx: &c,
            image: "x:1",
            attempt: 3,
            network_host: false,
            limit_swap: true,
        })
        .expect("config");
        let m = cfg.metadata.as_ref().expect("metadata");
        assert_eq!((m.name.as_str(), m.attempt), ("app", 3));
        assert_eq!(cfg.command, vec!["/bin/sh", "-c"]);
        assert_eq!(cfg.args, vec!["echo hi"]);
        assert_eq!(cfg.working_dir, "/srv");
        assert_eq!(cfg.log_path, "app.log");
        assert_eq!(log_policy(&cfg.annotations), LogPolicy::default());
        assert_eq!(log_policy(&HashMap::new()), LogPolicy::default());
        assert_eq!(cfg.envs.len(), 1);
        assert_eq!(cfg.labels.get(LABEL_TASK).map(String::as_str), Some("app"));
        let linux = cfg.linux.as_ref().expect("linux");
        let r = linux.resources.as_ref().expect("resources");
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 512);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.memory_swap_limit_in_bytes, 64 << 20);
        let sc = linux.security_context.as_ref().expect("security");
        assert!(!sc.privileged);
        assert!(sc.no_new_privs);
        assert_eq!(
            sc.seccomp.as_ref().map(|s| s.profile_type),
            Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
        );
        assert_eq!(
            sc.capabilities
                .as_ref()
                .map(|c| c.drop_capabilities.clone()),
            Some(vec!["NET_RAW".to_string()])
        );
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.map(|v| v.value), Some(100));
    }

    #[test]
    fn tiny_cpu_keeps_kernel_minimums() {
        let r = linux_resources(
            &Resources {
                disk: Default::default(),
                cpu: MilliCpu(1),
                memory: Bytes(0),
            },
            true,
        );
        assert_eq!(r.cpu_shares, 2);
        assert_eq!(r.cpu_quota, 1000);
        assert_eq!(r.memory_limit_in_bytes, 0);
        assert_eq!(r.memory_swap_limit_in_bytes, 0);
    }

    #[test]
    fn exits() {
        let st = |code, reason: &str, message: &str| cri::ContainerStatus {
            exit_code: code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        };
        let e = exit_of(&st(0, "Completed", ""));
        assert!(e.success());
        assert_eq!(e.message, "exited with code 0");
        let e = exit_of(&st(137, "OOMKilled", ""));
        assert!(e.oom_killed);
        assert_eq!(e.exit_code, Some(137));
        let e = exit_of(&st(128, "StartError", "exec: \"nope\": not found"));
        assert_eq!(
            e.message,
            "exited with code 128 (StartError: exec: \"nope\": not found)"
        );
    }
}
