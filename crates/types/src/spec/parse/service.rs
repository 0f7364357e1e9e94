//! Services and health checks: a group's `service:` (one) or `services:`
//! (a list), each with `check:` (one) or `checks:` (a list), and a task's
//! own `check:` / `checks:`.
//!
//! They are read after the group's tasks, because they name the tasks'
//! ports and the tasks themselves. What the parser fills in, so the agent
//! never guesses:
//!
//! - `name`: `<service or task>-<type>` when not given, `-2`, `-3`, ...
//!   appended on clashes; unique within the group;
//! - `port` of an http or tcp check: the check's own, else the service's;
//! - `task`: the check's own, else the task that declares it (task checks),
//!   else the task declaring the check's (or the service's) port, else the
//!   group's only task.

use std::collections::BTreeMap;

use crate::spec::{CheckKind, CheckRestart, CheckSpec, ServiceSpec, TaskSpec};
use crate::units::Millis;

use super::ctx::{
    Ctx, Fields, choice, closest, duration, entries, fields, index, join, list, name, one_of,
    one_or_many, text, uint, word,
};
use super::policy::{self, PortDecl};
use super::tree::{Node, Pos, Value};

pub(super) const SERVICE_FIELDS: &[&str] = &[
    "name",
    "type",
    "port",
    "check",
    "checks",
    "route",
    "shutdown_delay",
];

pub(super) const CHECK_FIELDS: &[&str] = &[
    "name",
    "type",
    "path",
    "method",
    "status",
    "headers",
    "command",
    "port",
    "task",
    "interval",
    "timeout",
    "success_threshold",
    "failure_threshold",
    "grace",
    "check_restart",
];

pub(super) const CHECK_RESTART_FIELDS: &[&str] = &["limit", "grace"];

const TYPES: &[&str] = &["http", "tcp", "exec"];

/// Fields that only one type of check takes, and that type.
const TYPE_ONLY: &[(&str, &str)] = &[
    ("path", "http"),
    ("method", "http"),
    ("status", "http"),
    ("headers", "http"),
    ("command", "exec"),
];

/// The shortest interval accepted: probes more often than this are load,
/// not health.
const MIN_INTERVAL: Millis = Millis(100);

/// Default accepted HTTP statuses: success and redirects.
const DEFAULT_STATUS: (u16, u16) = (200, 399);

/// One `check:` mapping or one item of `checks:`, as found.
pub(super) struct Block<'n> {
    node: &'n Node,
    path: String,
}

/// The check blocks under `check:` or `checks:` of a service or a task.
pub(super) fn blocks<'n>(ctx: &mut Ctx<'_>, f: &Fields<'n>) -> Vec<Block<'n>> {
    let mut out = Vec::new();
    if let (Some(_), Some(x)) = (f.get("check"), f.get("checks")) {
        ctx.error(
            x.key_pos,
            &x.path,
            "give either `check` (one) or `checks` (a list), not both",
        );
        return out;
    }
    if let Some(x) = f.get("check") {
        match &x.node.value {
            Value::Map(_) => out.push(Block {
                node: x.node,
                path: x.path,
            }),
            Value::Seq(_) => ctx.error(
                x.node.pos,
                &x.path,
                "`check` takes one check; for a list of checks write `checks:`",
            ),
            _ => ctx.expected(x.node, &x.path, "a check like {type: http, path: /healthz}"),
        }
    }
    if let Some(x) = f.get("checks") {
        if let Value::Map(_) = &x.node.value {
            ctx.error(
                x.node.pos,
                &x.path,
                "`checks` takes a list of checks; for one check write `check:`",
            );
        } else if let Some(items) = list(
            ctx,
            x.node,
            &x.path,
            "a list of checks like [{type: http, path: /healthz}]",
        ) {
            out.extend(items.iter().enumerate().map(|(i, node)| Block {
                node,
                path: index(&x.path, i),
            }));
        }
    }
    out
}

/// The check blocks of one task, read with the task and resolved once the
/// whole group is known.
pub(super) struct TaskChecks<'n> {
    pub task: String,
    pub blocks: Vec<Block<'n>>,
}

/// What a check may refer to: the group's tasks and their ports.
struct Group<'a> {
    tasks: Vec<&'a str>,
    ports: &'a [PortDecl],
    /// The tasks could be read: without them (an error already
    /// reported), names of tasks and ports cannot be checked.
    known: bool,
}

impl Group<'_> {
    fn port_owner(&self, port: &str) -> Option<&str> {
        self.ports
            .iter()
            .find(|d| d.name == port)
            .map(|d| d.task.as_str())
    }

    /// The declared port names, in declaration order.
    fn port_names(&self) -> Vec<&str> {
        self.ports.iter().map(|d| d.name.as_str()).collect()
    }
}

/// Where a check is declared.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Service {
        name: &'a str,
        port: Option<&'a str>,
    },
    Task(&'a str),
}

impl Owner<'_> {
    fn name(&self) -> &str {
        match self {
            Owner::Service { name, .. } => name,
            Owner::Task(t) => t,
        }
    }
}

/// A check as read, before it is named.
struct Parsed {
    spec: CheckSpec,
    /// The owner's name, for the default name.
    owner: String,
    /// Given in the spec: (name, where).
    explicit: Option<(String, Pos, String)>,
}

/// Reads the group's services and the checks of its tasks, names every
/// check, and puts each task's checks into its [`TaskSpec`]. `f` holds the
/// group's fields (or the top level of the seed form).
pub(super) fn group_services(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    tasks: &mut [TaskSpec],
    task_checks: Vec<TaskChecks<'_>>,
    ports: &[PortDecl],
) -> Vec<ServiceSpec> {
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let group = Group {
        tasks: names.iter().map(String::as_str).collect(),
        ports,
        known: !names.is_empty(),
    };
    let mut parsed: Vec<(Slot, Parsed)> = Vec::new();
    let services = services(ctx, f, &group, &mut parsed);
    for tc in &task_checks {
        let Some(i) = tasks.iter().position(|t| t.name == tc.task) else {
            continue;
        };
        for b in &tc.blocks {
            if let Some(p) = check(ctx, b, Owner::Task(&tc.task), &group) {
                parsed.push((Slot::Task(i), p));
            }
        }
    }
    let named = assign_names(ctx, parsed);
    let mut services = services;
    for (slot, spec) in named {
        match slot {
            Slot::Service(i) => services[i].checks.push(spec),
            Slot::Task(i) => tasks[i].checks.push(spec),
        }
    }
    services
}

/// Which service or task a check goes to.
#[derive(Clone, Copy)]
enum Slot {
    Service(usize),
    Task(usize),
}

fn services(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    group: &Group<'_>,
    parsed: &mut Vec<(Slot, Parsed)>,
) -> Vec<ServiceSpec> {
    let nodes = one_or_many(
        ctx,
        f,
        ("service", "services"),
        "service",
        "a list of services like [{name: web, port: http}]",
    );
    let mut out: Vec<ServiceSpec> = Vec::new();
    for (node, path) in nodes {
        let expected =
            "a service like {name: web, port: http, check: {type: http, path: /healthz}}";
        let Some(sf) = fields(ctx, node, &path, SERVICE_FIELDS, expected) else {
            continue;
        };
        let name_at = sf.get("name").map(|x| (x.node.pos, x.path));
        let service_name = match sf.get("name") {
            Some(x) => {
                let n = name(ctx, x.node, &x.path);
                if let Some(n) = &n
                    && out.iter().any(|s| &s.name == n)
                {
                    ctx.error(
                        x.node.pos,
                        &x.path,
                        format!("duplicate service name `{n}`; give each service its own name"),
                    );
                }
                n
            }
            None => {
                if !sf.has_or_meant("name") {
                    ctx.error(
                        sf.pos,
                        &path,
                        "the service has no `name`; add one, like `name: web`",
                    );
                }
                None
            }
        };
        // `None`: not given; `Some(None)`: given and wrong (reported).
        let port: Option<Option<String>> = sf.get("port").map(|x| {
            let p = word(ctx, x.node, &x.path, "port", "a port name like http")?;
            known_port(ctx, x.node.pos, &x.path, &p, group).then_some(p)
        });
        let display = service_name.clone().unwrap_or_default();
        let owner = Owner::Service {
            name: &display,
            port: port.as_ref().and_then(|p| p.as_deref()),
        };
        let slot = Slot::Service(out.len());
        let port_broken = matches!(port, Some(None));
        for b in blocks(ctx, &sf) {
            if let Some(p) = check_in(ctx, &b, owner, group, port_broken) {
                parsed.push((slot, p));
            }
        }
        // A name already used in this group is reported once, above.
        let name_at = name_at.filter(|_| !out.iter().any(|s| s.name == display));
        let routing = super::route::routing(ctx, &sf, &display, port.is_some(), name_at);
        out.push(ServiceSpec {
            name: display.clone(),
            port: port.flatten(),
            checks: Vec::new(),
            kind: routing.kind,
            route: routing.route,
            shutdown_delay: routing.shutdown_delay,
        });
    }
    out
}

/// Whether `port` is declared by a task of the group; reports it when not.
fn known_port(ctx: &mut Ctx<'_>, pos: Pos, path: &str, port: &str, group: &Group<'_>) -> bool {
    if group.port_owner(port).is_some() || !group.known {
        return true;
    }
    let names = group.port_names();
    let message = if names.is_empty() {
        format!(
            "no task of the group declares port `{port}`, and there are no ports; add it to a task, like `ports: {{{port}: 8080}}`"
        )
    } else if let Some(s) = closest(port, &names) {
        format!("no task of the group declares port `{port}`; did you mean `{s}`?")
    } else {
        format!(
            "no task of the group declares port `{port}`; the ports are {}",
            one_of(&names)
        )
    };
    ctx.error(pos, path, message);
    false
}

fn check(ctx: &mut Ctx<'_>, b: &Block<'_>, owner: Owner<'_>, group: &Group<'_>) -> Option<Parsed> {
    check_in(ctx, b, owner, group, false)
}

/// One check. `owner_port_broken`: the service's port was given and is
/// wrong (already reported), so a missing port is not reported again.
fn check_in(
    ctx: &mut Ctx<'_>,
    b: &Block<'_>,
    owner: Owner<'_>,
    group: &Group<'_>,
    owner_port_broken: bool,
) -> Option<Parsed> {
    let before = ctx.errors.len();
    let expected = "a check like {type: http, path: /healthz}";
    let f = fields(ctx, b.node, &b.path, CHECK_FIELDS, expected)?;

    let kind_index = match f.get("type") {
        Some(x) => choice(ctx, x.node, &x.path, "check type", TYPES),
        None => {
            if !f.has_or_meant("type") {
                ctx.error(
                    f.pos,
                    &b.path,
                    "the check has no `type`; add `type: http`, `type: tcp` or `type: exec`",
                );
            }
            None
        }
    };
    let type_name = kind_index.map(|i| TYPES[i]);
    if let Some(t) = type_name {
        for (field, only) in TYPE_ONLY {
            if *only != t
                && let Some(x) = f.get(field)
            {
                ctx.error(
                    x.key_pos,
                    &x.path,
                    format!(
                        "`{field}` is only for {only} checks; remove it, or use `type: {only}`"
                    ),
                );
            }
        }
    }

    let explicit = f.get("name").and_then(|x| {
        let n = name(ctx, x.node, &x.path)?;
        Some((n, x.node.pos, x.path))
    });

    // `None` inside: given and wrong (reported).
    let interval: Option<Option<Millis>> = f.get("interval").map(|x| {
        let d = duration(ctx, x.node, &x.path)?;
        if d < MIN_INTERVAL {
            ctx.error(
                x.node.pos,
                &x.path,
                format!("interval must be at least {MIN_INTERVAL}, found {d}"),
            );
            return None;
        }
        Some(d)
    });
    let timeout: Option<Option<Millis>> = f.get("timeout").map(|x| {
        let d = duration(ctx, x.node, &x.path)?;
        if d.0 == 0 {
            ctx.error(
                x.node.pos,
                &x.path,
                "timeout must be more than 0s; write e.g. 1s",
            );
            return None;
        }
        Some(d)
    });
    let timing_ok = !matches!(interval, Some(None)) && !matches!(timeout, Some(None));
    let interval = interval.flatten().unwrap_or(CheckSpec::DEFAULT_INTERVAL);
    let timeout = timeout.flatten().unwrap_or(CheckSpec::DEFAULT_TIMEOUT);
    let success_threshold = f
        .get("success_threshold")
        .and_then(|x| uint(ctx, x.node, &x.path, "success_threshold", 1))
        .unwrap_or(1);
    let failure_threshold = f
        .get("failure_threshold")
        .and_then(|x| uint(ctx, x.node, &x.path, "failure_threshold", 1))
        .unwrap_or(1);
    let grace = f
        .get("grace")
        .and_then(|x| duration(ctx, x.node, &x.path))
        .unwrap_or_default();
    let check_restart = f.get("check_restart").and_then(|x| {
        let expected = "a check restart like {limit: 3, grace: 10s}";
        let rf = fields(ctx, x.node, &x.path, CHECK_RESTART_FIELDS, expected)?;
        let limit = match rf.get("limit") {
            Some(l) => uint(ctx, l.node, &l.path, "limit", 1),
            None => {
                if !rf.has_or_meant("limit") {
                    ctx.error(
                        rf.pos,
                        &x.path,
                        "`check_restart` needs `limit`, the consecutive failures that restart the task, like `limit: 3`",
                    );
                }
                None
            }
        };
        let restart_grace = match rf.get("grace") {
            Some(g) => duration(ctx, g.node, &g.path),
            None => Some(grace),
        };
        Some(CheckRestart {
            limit: limit?,
            grace: restart_grace?,
        })
    });

    // The port: the check's own, else the service's.
    let own_port: Option<Option<String>> = f.get("port").map(|x| {
        let p = word(ctx, x.node, &x.path, "port", "a port name like http")?;
        known_port(ctx, x.node.pos, &x.path, &p, group).then_some(p)
    });
    let port_broken = matches!(own_port, Some(None)) || (own_port.is_none() && owner_port_broken);
    let port: Option<String> = match (&own_port, owner) {
        (Some(p), _) => p.clone(),
        (None, Owner::Service { port, .. }) => port.map(str::to_owned),
        (None, Owner::Task(_)) => None,
    };

    // The task.
    let own_task: Option<Option<String>> = f.get("task").map(|x| {
        let t = word(ctx, x.node, &x.path, "task", "a task name")?;
        if let Owner::Task(owner_task) = owner
            && t != owner_task
        {
            ctx.error(
                x.node.pos,
                &x.path,
                format!(
                    "a check declared on task `{owner_task}` runs in it; remove `task`, or move the check to a service of the group"
                ),
            );
            return None;
        }
        if group.tasks.contains(&t.as_str()) || !group.known {
            return Some(t);
        }
        let message = match closest(&t, &group.tasks) {
            Some(s) => format!("the group has no task `{t}`; did you mean `{s}`?"),
            None => format!(
                "the group has no task `{t}`; its tasks are {}",
                one_of(&group.tasks)
            ),
        };
        ctx.error(x.node.pos, &x.path, message);
        None
    });
    let task_broken = matches!(own_task, Some(None));
    let task: Option<String> = match (&own_task, owner) {
        (Some(t), _) => t.clone(),
        (None, Owner::Task(t)) => Some(t.to_owned()),
        (None, Owner::Service { .. }) => port
            .as_deref()
            .and_then(|p| group.port_owner(p))
            .map(str::to_owned)
            .or_else(|| match group.tasks.as_slice() {
                [only] => Some((*only).to_owned()),
                _ => None,
            }),
    };

    let kind = match type_name {
        Some("http") => http(ctx, &f),
        Some("exec") => match f.get("command") {
            Some(x) => policy::command(ctx, &x).map(|command| CheckKind::Exec { command }),
            None => {
                if !f.has_or_meant("command") {
                    ctx.error(
                        f.pos,
                        &b.path,
                        "an exec check needs `command`, run inside the task, like `command: [/bin/check]`; exit code 0 passes",
                    );
                }
                None
            }
        },
        Some(_) => Some(CheckKind::Tcp),
        None => None,
    };

    if let Some(t) = type_name.filter(|_| group.known) {
        let needs_port = t != "exec";
        if needs_port && port.is_none() && !port_broken && !f.has_or_meant("port") {
            let names = group.port_names();
            let place = match owner {
                Owner::Service { .. } => "to the check or to its service",
                Owner::Task(_) => "to the check",
            };
            let a = if t == "http" { "an" } else { "a" };
            let message = if names.is_empty() {
                format!(
                    "{a} {t} check needs a port to probe, and no task of the group declares one; add `ports: {{http: 8080}}` to a task and `port: http` {place}"
                )
            } else {
                format!(
                    "{a} {t} check needs a port to probe; add `port:` {place} (the ports are {})",
                    one_of(&names)
                )
            };
            ctx.error(f.pos, &b.path, message);
        }
        if !needs_port && task.is_none() && !task_broken && !port_broken && !f.has_or_meant("task")
        {
            ctx.error(
                f.pos,
                &b.path,
                format!(
                    "an exec check needs the task to run in; add `task:` ({}), or a `port:` of that task",
                    one_of(&group.tasks)
                ),
            );
        }
    }

    if timing_ok && timeout >= interval {
        let (pos, path) = ["timeout", "interval"]
            .iter()
            .find_map(|n| f.get(n))
            .map(|x| (x.node.pos, x.path))
            .unwrap_or((f.pos, b.path.clone()));
        ctx.error(
            pos,
            &path,
            format!(
                "timeout ({timeout}) must be shorter than interval ({interval}); lower `timeout` or raise `interval`"
            ),
        );
    }

    if ctx.errors.len() != before {
        return None;
    }
    let kind = kind?;
    let port = match kind {
        CheckKind::Exec { .. } => own_port.flatten(),
        _ => port,
    };
    Some(Parsed {
        spec: CheckSpec {
            name: String::new(),
            kind,
            port,
            task,
            interval,
            timeout,
            success_threshold,
            failure_threshold,
            grace,
            check_restart,
        },
        owner: owner.name().to_owned(),
        explicit,
    })
}

/// The http-only fields of a check.
fn http(ctx: &mut Ctx<'_>, f: &Fields<'_>) -> Option<CheckKind> {
    let path = match f.get("path") {
        Some(x) => text(ctx, x.node, &x.path, "a path like /healthz").and_then(|p| {
            if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some(p)
            } else {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!(
                        "the path must start with `/` and have no spaces, like /healthz, found {}",
                        x.node.describe()
                    ),
                );
                None
            }
        }),
        None => {
            if !f.has_or_meant("path") {
                ctx.error(
                    f.pos,
                    &f.path,
                    "an http check needs `path`, the URL path to request, like `path: /healthz`",
                );
            }
            None
        }
    };
    let method = match f.get("method") {
        Some(x) => word(ctx, x.node, &x.path, "method", "an HTTP method like GET").and_then(|m| {
            if m.chars().all(|c| c.is_ascii_alphabetic()) {
                Some(m.to_ascii_uppercase())
            } else {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("`{m}` is not an HTTP method; write e.g. GET, HEAD or POST"),
                );
                None
            }
        }),
        None => Some("GET".to_owned()),
    };
    let status = match f.get("status") {
        Some(x) => status(ctx, x.node, &x.path),
        None => Some(DEFAULT_STATUS),
    };
    let headers = match f.get("headers") {
        Some(x) => headers(ctx, x.node, &x.path),
        None => Some(BTreeMap::new()),
    };
    Some(CheckKind::Http {
        path: path?,
        method: method?,
        status: status?,
        headers: headers?,
    })
}

/// An expected status: `200`, `"200-299"`.
fn status(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<(u16, u16)> {
    const EXPECTED: &str = "an HTTP status like 200 or a range like \"200-299\"";
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let (lo, hi) = match &node.value {
        Value::Int(_) => {
            let c = code(&node.text);
            (c, c)
        }
        Value::Str(s) => match s.split_once('-') {
            Some((a, b)) => (code(a), code(b)),
            None => {
                let c = code(s);
                (c, c)
            }
        },
        _ => {
            ctx.expected(node, path, EXPECTED);
            return None;
        }
    };
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        (Some(lo), Some(hi)) => {
            ctx.error(
                node.pos,
                path,
                format!("the status range {lo}-{hi} is backwards; write {hi}-{lo}"),
            );
            None
        }
        _ => {
            ctx.error(
                node.pos,
                path,
                format!(
                    "expected {EXPECTED} with codes from 100 to 599, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn headers(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
    let raw = entries(
        ctx,
        node,
        path,
        "a mapping of header names to values, like {Host: shop.example.com}",
    )?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, key, value) in raw {
        let p = join(path, k);
        if !header_name_ok(k) {
            ctx.error(
                key.pos,
                &p,
                format!("`{k}` is not a valid header name; use letters, digits and `-`"),
            );
            ok = false;
            continue;
        }
        if out.keys().any(|o: &String| o.eq_ignore_ascii_case(k)) {
            ctx.error(
                key.pos,
                &p,
                format!("header `{k}` is given twice; keep one"),
            );
            ok = false;
            continue;
        }
        match text(ctx, value, &p, "a header value") {
            Some(v) if v.chars().any(|c| c.is_control()) => {
                ctx.error(
                    value.pos,
                    &p,
                    "a header value cannot hold line breaks or control characters",
                );
                ok = false;
            }
            Some(v) => {
                out.insert(k.to_owned(), v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Gives every check its name: explicit names must be unique in the group;
/// the others are `<owner>-<type>`, with `-2`, `-3`, ... on clashes.
fn assign_names(ctx: &mut Ctx<'_>, parsed: Vec<(Slot, Parsed)>) -> Vec<(Slot, CheckSpec)> {
    let mut taken: Vec<String> = Vec::new();
    for (_, p) in &parsed {
        if let Some((n, pos, path)) = &p.explicit {
            if taken.contains(n) {
                ctx.error(
                    *pos,
                    path,
                    format!(
                        "duplicate check name `{n}`; check names must be unique within a group"
                    ),
                );
            } else {
                taken.push(n.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(parsed.len());
    for (slot, mut p) in parsed {
        let name = match p.explicit.take() {
            Some((n, _, _)) => n,
            None => {
                let base = format!("{}-{}", p.owner, p.spec.kind.type_name());
                let mut candidate = base.clone();
                let mut n = 2;
                while taken.contains(&candidate) {
                    candidate = format!("{base}-{n}");
                    n += 1;
                }
                taken.push(candidate.clone());
                candidate
            }
        };
        p.spec.name = name;
        out.push((slot, p.spec));
    }
    out
}
