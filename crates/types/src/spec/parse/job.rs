//! Jobs, groups and tasks: the seed form and the full form.

use crate::spec::{
    Constraint, ConstraintOp, DriverKind, GroupSpec, JobSpec, NetworkMode, PullPolicy,
    ReschedulePolicy, RestartPolicy, TaskSpec, UpdatePolicy, default_kill_timeout,
};

use super::ctx::{
    Ctx, Field, Fields, boolean, choice, fields, index, join, list, name, name_problem, strings,
    text, uint, word,
};
use super::logs;
use super::policy::{self, PortDecl};
use super::service::{self, TaskChecks};
use super::tree::{Node, Pos};
use super::volume;

/// Group fields, also allowed at the top of the seed form.
pub(super) const GROUP_LEVEL: &[&str] = &[
    "count",
    "restart",
    "reschedule",
    "constraints",
    "spread",
    "distinct_hosts",
    "network",
    "service",
    "services",
    "volume",
    "volumes",
];

/// Task fields, also allowed at the top of the seed form (`restart` there
/// is the group's).
pub(super) const TASK_LEVEL: &[&str] = &[
    "driver",
    "image",
    "command",
    "args",
    "env",
    "workdir",
    "resources",
    "ports",
    "kill_timeout",
    "pull_policy",
    "security",
    "logs",
    "check",
    "checks",
];

pub(super) const TOP_FIELDS: &[&str] = &[
    "name",
    "image",
    "env",
    "count",
    "driver",
    "command",
    "args",
    "workdir",
    "resources",
    "ports",
    "restart",
    "reschedule",
    "constraints",
    "spread",
    "distinct_hosts",
    "update",
    "network",
    "kill_timeout",
    "pull_policy",
    "security",
    "logs",
    "service",
    "services",
    "check",
    "checks",
    "volume",
    "volumes",
    "groups",
];

pub(super) const GROUP_FIELDS: &[&str] = &[
    "name",
    "count",
    "restart",
    "reschedule",
    "constraints",
    "spread",
    "distinct_hosts",
    "update",
    "network",
    "service",
    "services",
    "volume",
    "volumes",
    "tasks",
];

pub(super) const TASK_FIELDS: &[&str] = &[
    "name",
    "driver",
    "image",
    "command",
    "args",
    "env",
    "workdir",
    "resources",
    "ports",
    "kill_timeout",
    "restart",
    "pull_policy",
    "security",
    "logs",
    "check",
    "checks",
];

/// A parsed job, group or task with where its name was written, for the
/// duplicate checks of the level above.
pub(super) struct Named<T> {
    pub spec: T,
    pub name: Option<String>,
    pub name_pos: Pos,
    pub name_path: String,
}

/// Read the name in `f`, or fall back to `default` (`Err` holds the message
/// for a missing name).
fn read_name(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    default: Result<&str, &str>,
) -> (Option<String>, Pos, String) {
    match f.get("name") {
        Some(x) => (name(ctx, x.node, &x.path), x.node.pos, x.path),
        None => {
            let path = join(&f.path, "name");
            if f.has_or_meant("name") {
                // A misspelt `name`, already reported.
                return (None, f.pos, path);
            }
            match default {
                Ok(d) => (Some(d.to_owned()), f.pos, path),
                Err(message) => {
                    ctx.error(f.pos, &f.path, message);
                    (None, f.pos, path)
                }
            }
        }
    }
}

/// One document: a job in the seed or the full form.
pub(super) fn job(ctx: &mut Ctx<'_>, doc: &Node, file_name: &str) -> Named<JobSpec> {
    let expected = "a job: a mapping of fields like `image: org/app:1.0`";
    let Some(f) = fields(ctx, doc, "", TOP_FIELDS, expected) else {
        return Named {
            spec: empty_job(),
            name: None,
            name_pos: doc.pos,
            name_path: String::new(),
        };
    };
    let (job_name, name_pos, name_path) = if f.has_or_meant("name") {
        read_name(ctx, &f, Err("the job has no name; add `name:`"))
    } else {
        match name_problem(file_name) {
            None => (Some(file_name.to_owned()), f.pos, "name".to_owned()),
            Some(problem) => {
                let message = if file_name.is_empty() {
                    "the job has no name; add `name:`".to_owned()
                } else {
                    format!("the job is named after the file, and {problem}; or add `name:`")
                };
                ctx.error(f.pos, "", message);
                (None, f.pos, "name".to_owned())
            }
        }
    };
    let job_update = match f.get("update") {
        Some(x) => policy::update(ctx, &x, &UpdatePolicy::default()),
        None => UpdatePolicy::default(),
    };
    let display_name = job_name.clone().unwrap_or_default();
    let groups = match f.get("groups") {
        Some(g) => {
            misplaced_seed_fields(ctx, &f);
            groups(ctx, &g, &display_name, &job_update)
        }
        None => vec![seed_group(ctx, &f, &display_name, &job_update)],
    };
    Named {
        spec: JobSpec {
            name: display_name,
            groups,
            update: job_update,
        },
        name: job_name,
        name_pos,
        name_path,
    }
}

fn empty_job() -> JobSpec {
    JobSpec {
        name: String::new(),
        groups: Vec::new(),
        update: UpdatePolicy::default(),
    }
}

/// Seed fields beside `groups:` belong inside a group or a task.
fn misplaced_seed_fields(ctx: &mut Ctx<'_>, f: &Fields<'_>) {
    let names: Vec<(&str, Pos)> = f.names().collect();
    for (k, pos) in names {
        if TASK_LEVEL.contains(&k) {
            ctx.error(
                pos,
                k,
                format!(
                    "`{k}` is a task field and cannot sit beside `groups:`; move it into a task under `groups`, or drop `groups:` for the short form"
                ),
            );
        } else if GROUP_LEVEL.contains(&k) {
            ctx.error(
                pos,
                k,
                format!(
                    "`{k}` is a group field and cannot sit beside `groups:`; move it into each group, or drop `groups:` for the short form"
                ),
            );
        }
    }
}

/// The seed form: one group and one task, both named after the job.
fn seed_group(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    job_name: &str,
    update: &UpdatePolicy,
) -> GroupSpec {
    let settings = group_settings(ctx, f);
    let (task, ports) = task_body(ctx, f, job_name);
    policy::check_port_clashes(ctx, &ports);
    let checks = vec![TaskChecks {
        task: task.name.clone(),
        blocks: service::blocks(ctx, f),
    }];
    let mut tasks = vec![task];
    let services = service::group_services(ctx, f, &mut tasks, checks, &ports);
    let volumes = volume::group_volumes(ctx, f, &facts(settings.count, update, &tasks));
    GroupSpec {
        name: job_name.to_owned(),
        count: settings.count,
        restart: settings.restart,
        reschedule: settings.reschedule,
        constraints: settings.constraints,
        spread: settings.spread,
        update: *update,
        network: settings.network,
        services,
        volumes,
        tasks,
    }
}

/// What the volume checks need of a group.
fn facts<'t>(count: u32, update: &UpdatePolicy, tasks: &'t [TaskSpec]) -> volume::GroupFacts<'t> {
    volume::GroupFacts {
        count,
        canaries: update.canary,
        tasks: tasks.iter().map(|t| t.name.as_str()).collect(),
    }
}

fn groups(
    ctx: &mut Ctx<'_>,
    fl: &Field<'_>,
    job_name: &str,
    job_update: &UpdatePolicy,
) -> Vec<GroupSpec> {
    let expected = "a list of groups, each with `name` and `tasks`";
    let Some(items) = list(ctx, fl.node, &fl.path, expected) else {
        return Vec::new();
    };
    if items.is_empty() {
        ctx.error(
            fl.node.pos,
            &fl.path,
            "`groups` is empty; add at least one group with `name` and `tasks`",
        );
    }
    let default = if items.len() == 1 {
        Ok(job_name)
    } else {
        Err("the group has no `name`; when a job has several groups, each needs one")
    };
    let mut out: Vec<Named<GroupSpec>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let g = group(ctx, item, &index(&fl.path, i), default, job_update);
        if let Some(n) = &g.name
            && out.iter().any(|o| o.name.as_ref() == Some(n))
        {
            ctx.error(
                g.name_pos,
                &g.name_path,
                format!("duplicate group name `{n}`; give each group its own name"),
            );
        }
        // A volume's id is `<job>.<name>`: two groups cannot both have
        // one of a name.
        for v in &g.spec.volumes {
            if let Some(other) = out
                .iter()
                .find(|o| o.spec.volumes.iter().any(|w| w.name == v.name))
            {
                ctx.error(
                    item.pos,
                    &join(&index(&fl.path, i), "volumes"),
                    format!(
                        "group `{}` has a volume `{}` already, and its id `{job_name}.{}` belongs to one group; give this one another name",
                        other.spec.name, v.name, v.name
                    ),
                );
            }
        }
        out.push(g);
    }
    out.into_iter().map(|g| g.spec).collect()
}

/// The most allocations one group may ask for: the scheduler plans a
/// group's slots in one pass (a count of 4 billion made a plan that never
/// ended).
pub const MAX_COUNT: u32 = 100_000;

struct GroupSettings {
    count: u32,
    restart: RestartPolicy,
    reschedule: ReschedulePolicy,
    constraints: Vec<Constraint>,
    spread: Option<crate::spec::Spread>,
    network: NetworkMode,
}

/// The group-level fields shared by a group and the seed form.
fn group_settings(ctx: &mut Ctx<'_>, f: &Fields<'_>) -> GroupSettings {
    let count = f
        .get("count")
        .and_then(|x| {
            let n = uint(ctx, x.node, &x.path, "count", 0)?;
            if n > MAX_COUNT {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!(
                        "count {n} is more than {MAX_COUNT}; split the group, or ask for fewer"
                    ),
                );
                return None;
            }
            Some(n)
        })
        .unwrap_or(1);
    let restart = match f.get("restart") {
        Some(x) => policy::restart(ctx, &x, &RestartPolicy::default()),
        None => RestartPolicy::default(),
    };
    let reschedule = match f.get("reschedule") {
        Some(x) => policy::reschedule(ctx, &x),
        None => ReschedulePolicy::default(),
    };
    let mut constraints = match f.get("constraints") {
        Some(x) => policy::constraints(ctx, &x),
        None => Vec::new(),
    };
    if let Some(x) = f.get("distinct_hosts")
        && boolean(ctx, x.node, &x.path) == Some(true)
        && !constraints
            .iter()
            .any(|c| c.op == ConstraintOp::DistinctHosts)
    {
        constraints.push(Constraint {
            attr: String::new(),
            op: ConstraintOp::DistinctHosts,
            values: Vec::new(),
        });
    }
    let spread = f.get("spread").and_then(|x| policy::spread(ctx, &x));
    let network = match f.get("network") {
        Some(x) => match choice(ctx, x.node, &x.path, "network mode", &["bridge", "host"]) {
            Some(1) => NetworkMode::Host,
            _ => NetworkMode::Bridge,
        },
        None => NetworkMode::Bridge,
    };
    GroupSettings {
        count,
        restart,
        reschedule,
        constraints,
        spread,
        network,
    }
}

fn group(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    default_name: Result<&str, &str>,
    job_update: &UpdatePolicy,
) -> Named<GroupSpec> {
    let expected = "a group: a mapping with `name` and `tasks`";
    let Some(f) = fields(ctx, node, path, GROUP_FIELDS, expected) else {
        return Named {
            spec: GroupSpec {
                name: String::new(),
                count: 0,
                restart: RestartPolicy::default(),
                reschedule: ReschedulePolicy::default(),
                constraints: Vec::new(),
                spread: None,
                update: *job_update,
                network: NetworkMode::Bridge,
                services: Vec::new(),
                volumes: Vec::new(),
                tasks: Vec::new(),
            },
            name: None,
            name_pos: node.pos,
            name_path: join(path, "name"),
        };
    };
    let (group_name, name_pos, name_path) = read_name(ctx, &f, default_name);
    let display_name = group_name.clone().unwrap_or_default();
    let settings = group_settings(ctx, &f);
    let update = match f.get("update") {
        Some(x) => policy::update(ctx, &x, job_update),
        None => *job_update,
    };
    let mut tasks = match f.get("tasks") {
        Some(x) => tasks(ctx, &x, &display_name, &settings.restart),
        None if f.has_or_meant("tasks") => Tasks::default(),
        None => {
            ctx.error(
                f.pos,
                path,
                "the group has no `tasks`; add a list of tasks, each with `name` and `image`",
            );
            Tasks::default()
        }
    };
    let services = service::group_services(ctx, &f, &mut tasks.specs, tasks.checks, &tasks.ports);
    let volumes = volume::group_volumes(ctx, &f, &facts(settings.count, &update, &tasks.specs));
    Named {
        spec: GroupSpec {
            name: display_name,
            count: settings.count,
            restart: settings.restart,
            reschedule: settings.reschedule,
            constraints: settings.constraints,
            spread: settings.spread,
            update,
            network: settings.network,
            services,
            volumes,
            tasks: tasks.specs,
        },
        name: group_name,
        name_pos,
        name_path,
    }
}

/// A group's tasks with what its services and checks need: the ports they
/// declare and their check blocks.
#[derive(Default)]
struct Tasks<'n> {
    specs: Vec<TaskSpec>,
    ports: Vec<PortDecl>,
    checks: Vec<TaskChecks<'n>>,
}

fn tasks<'n>(
    ctx: &mut Ctx<'_>,
    fl: &Field<'n>,
    group_name: &str,
    group_restart: &RestartPolicy,
) -> Tasks<'n> {
    let expected = "a list of tasks, each with `name` and `image`";
    let Some(items) = list(ctx, fl.node, &fl.path, expected) else {
        return Tasks::default();
    };
    if items.is_empty() {
        ctx.error(
            fl.node.pos,
            &fl.path,
            "`tasks` is empty; add at least one task with `name` and `image`",
        );
    }
    let default = if items.len() == 1 {
        Ok(group_name)
    } else {
        Err("the task has no `name`; when a group has several tasks, each needs one")
    };
    let mut out: Vec<Named<TaskSpec>> = Vec::new();
    let mut ports: Vec<PortDecl> = Vec::new();
    let mut checks: Vec<TaskChecks<'n>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(&fl.path, i);
        let expected = "a task: a mapping with `name` and `image`";
        let Some(f) = fields(ctx, item, &path, TASK_FIELDS, expected) else {
            continue;
        };
        let (task_name, name_pos, name_path) = read_name(ctx, &f, default);
        let display_name = task_name.clone().unwrap_or_default();
        if let Some(n) = &task_name
            && out.iter().any(|o| o.name.as_ref() == Some(n))
        {
            ctx.error(
                name_pos,
                &name_path,
                format!(
                    "duplicate task name `{n}` in group `{group_name}`; give each task its own name"
                ),
            );
        }
        let (mut task, task_ports) = task_body(ctx, &f, &display_name);
        if let Some(x) = f.get("restart") {
            task.restart = Some(policy::restart(ctx, &x, group_restart));
        }
        ports.extend(task_ports);
        checks.push(TaskChecks {
            task: task.name.clone(),
            blocks: service::blocks(ctx, &f),
        });
        out.push(Named {
            spec: task,
            name: task_name,
            name_pos,
            name_path,
        });
    }
    policy::check_port_clashes(ctx, &ports);
    Tasks {
        specs: out.into_iter().map(|t| t.spec).collect(),
        ports,
        checks,
    }
}

/// The task fields of a task (or of the seed form) except `name` and
/// `restart`.
fn task_body(ctx: &mut Ctx<'_>, f: &Fields<'_>, task_name: &str) -> (TaskSpec, Vec<PortDecl>) {
    let driver = driver(ctx, f);
    let image = f
        .get("image")
        .and_then(|x| word(ctx, x.node, &x.path, "image", "an image like org/app:1.0"));
    let command = f
        .get("command")
        .and_then(|x| policy::command(ctx, &x))
        .unwrap_or_default();
    let args = f
        .get("args")
        .and_then(|x| {
            strings(
                ctx,
                x.node,
                &x.path,
                "a list of arguments like [--port, \"8080\"]",
            )
        })
        .unwrap_or_default();
    let env = f
        .get("env")
        .map(|x| policy::env(ctx, &x))
        .unwrap_or_default();
    let workdir = f.get("workdir").and_then(|x| {
        let dir = text(ctx, x.node, &x.path, "an absolute path like /app")?;
        if dir.starts_with('/') {
            Some(dir)
        } else {
            ctx.error(
                x.node.pos,
                &x.path,
                format!(
                    "workdir must be an absolute path like /app, found {}",
                    x.node.describe()
                ),
            );
            None
        }
    });
    let resources = f
        .get("resources")
        .map(|x| policy::resources(ctx, &x))
        .unwrap_or_default();
    let (ports, decls) = match f.get("ports") {
        Some(x) => policy::ports(ctx, &x, task_name),
        None => Default::default(),
    };
    let kill_timeout = f
        .get("kill_timeout")
        .and_then(|x| super::ctx::duration(ctx, x.node, &x.path))
        .unwrap_or_else(default_kill_timeout);
    let pull_policy = match f.get("pull_policy") {
        Some(x) => match choice(
            ctx,
            x.node,
            &x.path,
            "pull policy",
            &["if-not-present", "always"],
        ) {
            Some(1) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        },
        None => PullPolicy::IfNotPresent,
    };
    let security = match f.get("security") {
        // Accepting what the exec driver cannot do would be a lie: a task
        // asking for `user: nobody` would run as the agent's root.
        Some(x) if driver == DriverKind::Exec => {
            ctx.error(
                x.key_pos,
                &x.path,
                "`security` is for `driver: container`; the exec driver runs tasks as the agent's user with its capabilities. Remove it, or run the task in a container",
            );
            Default::default()
        }
        Some(x) => policy::security(ctx, &x),
        None => Default::default(),
    };
    let logs = f
        .get("logs")
        .map(|x| logs::logs(ctx, &x))
        .unwrap_or_default();
    let task = TaskSpec {
        name: task_name.to_owned(),
        driver,
        image,
        command,
        args,
        env,
        workdir,
        resources,
        ports,
        kill_timeout,
        restart: None,
        pull_policy,
        security,
        checks: Vec::new(),
        logs,
    };
    (task, decls)
}

/// The driver, from `driver` or from `image`, checked against `image` and
/// `command`.
fn driver(ctx: &mut Ctx<'_>, f: &Fields<'_>) -> DriverKind {
    let image = f.get("image");
    let command = f.get("command");
    let Some(d) = f.get("driver") else {
        if f.has_or_meant("image") || f.has_or_meant("driver") {
            return DriverKind::Container;
        }
        match command {
            _ if f.has_or_meant("command") && command.is_none() => {}
            Some(c) => ctx.error(
                c.key_pos,
                &c.path,
                "a task with `command` but no `image` needs `driver: exec`; add `driver: exec`, or an `image` to run the command in",
            ),
            None => ctx.error(
                f.pos,
                &f.path,
                "a task needs `image` (container) or `command` with `driver: exec`",
            ),
        }
        return DriverKind::Container;
    };
    match choice(ctx, d.node, &d.path, "driver", &["container", "exec"]) {
        Some(0) => {
            if image.is_none() {
                ctx.error(
                    d.node.pos,
                    &d.path,
                    "`driver: container` needs `image`; add e.g. `image: org/app:1.0`, or use `driver: exec` with `command`",
                );
            }
            DriverKind::Container
        }
        Some(_) => {
            if command.is_none() {
                ctx.error(
                    d.node.pos,
                    &d.path,
                    "`driver: exec` needs `command`, the program to run; add e.g. `command: [/usr/local/bin/app]`",
                );
            }
            if let Some(i) = image {
                ctx.error(
                    i.key_pos,
                    &i.path,
                    "`image` is only for `driver: container`; remove it, or remove `driver: exec`",
                );
            }
            DriverKind::Exec
        }
        None => DriverKind::Container,
    }
}
