//! Readers for the blocks inside groups and tasks: restart and update
//! policies, constraints, spread, resources, ports, env, command, security.

use std::collections::BTreeMap;

use crate::spec::{
    Constraint, ConstraintOp, DelayFunction, GroupSpec, HealthCheckMode, ReschedulePolicy,
    Resources, RestartMode, RestartPolicy, SecuritySpec, Spread, UpdatePolicy,
};
use crate::units::Bytes;

use super::ctx::{
    Ctx, Field, Fields, boolean, choice, cpu, duration, entries, fields, index, join, list, size,
    strings, text, uint, word,
};
use super::tree::{Node, Pos, Value};

/// Where a cross-field error points: the first of `names` given in the
/// block, else the block itself.
fn at(f: &Fields<'_>, names: &[&str]) -> (Pos, String) {
    names
        .iter()
        .find_map(|n| f.get(n))
        .map(|x| (x.node.pos, x.path))
        .unwrap_or_else(|| (f.pos, f.path.clone()))
}

pub(super) const RESTART_FIELDS: &[&str] = &["attempts", "interval", "delay", "mode"];

/// A restart block; fields not given come from `base`.
pub(super) fn restart(ctx: &mut Ctx<'_>, fl: &Field<'_>, base: &RestartPolicy) -> RestartPolicy {
    let before = ctx.errors.len();
    let expected = "a restart policy like {attempts: 2, interval: 30m, delay: 15s, mode: fail}";
    let Some(f) = fields(ctx, fl.node, &fl.path, RESTART_FIELDS, expected) else {
        return *base;
    };
    let mut p = *base;
    if let Some(x) = f.get("attempts") {
        p.attempts = uint(ctx, x.node, &x.path, "attempts", 0).unwrap_or(p.attempts);
    }
    if let Some(x) = f.get("interval") {
        p.interval = duration(ctx, x.node, &x.path).unwrap_or(p.interval);
    }
    if let Some(x) = f.get("delay") {
        p.delay = duration(ctx, x.node, &x.path).unwrap_or(p.delay);
    }
    if let Some(x) = f.get("mode") {
        match choice(ctx, x.node, &x.path, "restart mode", &["fail", "delay"]) {
            Some(0) => p.mode = RestartMode::Fail,
            Some(_) => p.mode = RestartMode::Delay,
            None => {}
        }
    }
    if ctx.errors.len() == before {
        let needed = p.delay.0.saturating_mul(u64::from(p.attempts));
        if needed > p.interval.0 {
            let (pos, path) = at(&f, &["delay", "attempts", "interval"]);
            ctx.error(
                pos,
                &path,
                format!(
                    "{} restarts {} apart do not fit in the {} interval; raise `interval` or lower `delay` or `attempts`",
                    p.attempts, p.delay, p.interval
                ),
            );
        }
    }
    p
}

pub(super) const RESCHEDULE_FIELDS: &[&str] = &[
    "attempts",
    "interval",
    "delay",
    "delay_function",
    "max_delay",
    "unlimited",
];

/// A reschedule block (Nomad's fields and service defaults). `attempts` or
/// `interval` without `unlimited` mean a limit: `unlimited` becomes false.
pub(super) fn reschedule(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> ReschedulePolicy {
    let before = ctx.errors.len();
    let expected = "a reschedule policy like {delay: 30s, delay_function: exponential, max_delay: 1h, unlimited: true} or {attempts: 3, interval: 1h}";
    let mut p = ReschedulePolicy::default();
    let Some(f) = fields(ctx, fl.node, &fl.path, RESCHEDULE_FIELDS, expected) else {
        return p;
    };
    let limited = f.get("attempts").is_some() || f.get("interval").is_some();
    let said_limited = f
        .get("unlimited")
        .is_some_and(|x| matches!(x.node.value, super::tree::Value::Bool(false)));
    if limited || said_limited {
        // Nomad's batch defaults for what is not given.
        p.unlimited = false;
        p.attempts = 1;
        p.interval = crate::units::Millis::from_secs(24 * 3600);
    }
    if let Some(x) = f.get("attempts") {
        p.attempts = uint(ctx, x.node, &x.path, "attempts", 0).unwrap_or(p.attempts);
    }
    if let Some(x) = f.get("interval") {
        p.interval = duration(ctx, x.node, &x.path).unwrap_or(p.interval);
    }
    if let Some(x) = f.get("delay") {
        p.delay = duration(ctx, x.node, &x.path).unwrap_or(p.delay);
    }
    if let Some(x) = f.get("max_delay") {
        p.max_delay = duration(ctx, x.node, &x.path).unwrap_or(p.max_delay);
    }
    if let Some(x) = f.get("delay_function") {
        let kinds = &["constant", "exponential", "fibonacci"];
        p.delay_function = match choice(ctx, x.node, &x.path, "delay_function", kinds) {
            Some(0) => DelayFunction::Constant,
            Some(1) => DelayFunction::Exponential,
            Some(_) => DelayFunction::Fibonacci,
            None => p.delay_function,
        };
    }
    if let Some(x) = f.get("unlimited") {
        let unlimited = boolean(ctx, x.node, &x.path);
        if unlimited == Some(true) && limited {
            let (pos, path) = at(&f, &["attempts", "interval"]);
            ctx.error(
                pos,
                &path,
                "`attempts` and `interval` limit reschedules, and `unlimited: true` has no limit; drop one or the other",
            );
        }
        p.unlimited = unlimited.unwrap_or(p.unlimited);
    }
    if ctx.errors.len() == before && !p.unlimited && p.interval.0 == 0 {
        let (pos, path) = at(&f, &["interval", "attempts"]);
        ctx.error(
            pos,
            &path,
            "`interval` is the window the attempts are counted in and must be longer than 0s, e.g. `interval: 1h`",
        );
    }
    if ctx.errors.len() == before && p.max_delay < p.delay {
        let (pos, path) = at(&f, &["max_delay", "delay"]);
        ctx.error(
            pos,
            &path,
            format!(
                "max_delay {} is shorter than delay {}; raise `max_delay` or lower `delay`",
                p.max_delay, p.delay
            ),
        );
    }
    p
}

pub(super) const UPDATE_FIELDS: &[&str] = &[
    "max_parallel",
    "min_healthy_time",
    "healthy_deadline",
    "progress_deadline",
    "auto_revert",
    "auto_promote",
    "canary",
    "health_check",
];

/// An update block; fields not given come from `base`.
pub(super) fn update(ctx: &mut Ctx<'_>, fl: &Field<'_>, base: &UpdatePolicy) -> UpdatePolicy {
    let before = ctx.errors.len();
    let expected = "an update policy like {max_parallel: 1, min_healthy_time: 10s}";
    let Some(f) = fields(ctx, fl.node, &fl.path, UPDATE_FIELDS, expected) else {
        return *base;
    };
    let mut p = *base;
    if let Some(x) = f.get("max_parallel") {
        // 0: no rolling update and no deployment; every allocation is
        // replaced at once (Nomad's `max_parallel = 0`).
        p.max_parallel = uint(ctx, x.node, &x.path, "max_parallel", 0).unwrap_or(p.max_parallel);
    }
    if let Some(x) = f.get("min_healthy_time") {
        p.min_healthy_time = duration(ctx, x.node, &x.path).unwrap_or(p.min_healthy_time);
    }
    if let Some(x) = f.get("healthy_deadline") {
        p.healthy_deadline = duration(ctx, x.node, &x.path).unwrap_or(p.healthy_deadline);
    }
    if let Some(x) = f.get("progress_deadline") {
        p.progress_deadline = duration(ctx, x.node, &x.path).unwrap_or(p.progress_deadline);
    }
    if let Some(x) = f.get("auto_revert") {
        p.auto_revert = boolean(ctx, x.node, &x.path).unwrap_or(p.auto_revert);
    }
    if let Some(x) = f.get("auto_promote") {
        p.auto_promote = boolean(ctx, x.node, &x.path).unwrap_or(p.auto_promote);
    }
    if let Some(x) = f.get("canary") {
        p.canary = uint(ctx, x.node, &x.path, "canary", 0).unwrap_or(p.canary);
    }
    if let Some(x) = f.get("health_check") {
        let modes = &["checks", "task_states", "manual"];
        p.health_check = match choice(ctx, x.node, &x.path, "health_check mode", modes) {
            Some(0) => HealthCheckMode::Checks,
            Some(1) => HealthCheckMode::TaskStates,
            Some(_) => HealthCheckMode::Manual,
            None => p.health_check,
        };
    }
    if ctx.errors.len() != before {
        return p;
    }
    if p.min_healthy_time >= p.healthy_deadline {
        let (pos, path) = at(&f, &["min_healthy_time", "healthy_deadline"]);
        ctx.error(
            pos,
            &path,
            format!(
                "min_healthy_time ({}) must be shorter than healthy_deadline ({}); lower one or raise the other",
                p.min_healthy_time, p.healthy_deadline
            ),
        );
    }
    if p.progress_deadline < p.healthy_deadline {
        let (pos, path) = at(&f, &["progress_deadline", "healthy_deadline"]);
        ctx.error(
            pos,
            &path,
            format!(
                "progress_deadline ({}) must be at least healthy_deadline ({}); raise it",
                p.progress_deadline, p.healthy_deadline
            ),
        );
    }
    if p.max_parallel == 0 {
        // Canaries and reverts belong to a deployment, which a group
        // replaced all at once never gets: refuse what would be ignored.
        if p.canary > 0 {
            let (pos, path) = at(&f, &["canary", "max_parallel"]);
            ctx.error(
                pos,
                &path,
                "canaries need a deployment, and `max_parallel: 0` replaces every allocation at once without one; set `max_parallel` to 1 or more, or `canary` to 0",
            );
        }
        if p.auto_revert {
            let (pos, path) = at(&f, &["auto_revert", "max_parallel"]);
            ctx.error(
                pos,
                &path,
                "auto_revert reverts a failed deployment, and `max_parallel: 0` replaces every allocation at once without one; set `max_parallel` to 1 or more, or `auto_revert: false`",
            );
        }
    }
    if p.auto_promote && p.canary == 0 {
        let (pos, path) = at(&f, &["auto_promote"]);
        ctx.error(
            pos,
            &path,
            "auto_promote promotes canaries, and there are none; set `canary` to 1 or more",
        );
    }
    p
}

pub(super) const CONSTRAINT_FIELDS: &[&str] = &["attr", "op", "value", "values"];
const OPS: &[&str] = &["=", "!=", "regexp", "in", "distinct_hosts"];

pub(super) fn constraints(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> Vec<Constraint> {
    let expected = "a list of constraints like [{attr: node.labels.zone, value: a}]";
    let Some(items) = list(ctx, fl.node, &fl.path, expected) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| constraint(ctx, item, &index(&fl.path, i)))
        .collect()
}

/// `attr` must name a node attribute.
fn node_attr(ctx: &mut Ctx<'_>, x: &Field<'_>) -> Option<String> {
    let attr = text(
        ctx,
        x.node,
        &x.path,
        "a node attribute like node.labels.zone",
    )?;
    if attr.len() > "node.".len() && attr.starts_with("node.") {
        Some(attr)
    } else {
        ctx.error(
            x.node.pos,
            &x.path,
            format!(
                "`attr` must name a node attribute starting with `node.`, like node.labels.zone or node.name, found {}",
                x.node.describe()
            ),
        );
        None
    }
}

fn constraint(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Constraint> {
    let expected = "a constraint like {attr: node.labels.zone, op: \"=\", value: a}";
    let f = fields(ctx, node, path, CONSTRAINT_FIELDS, expected)?;
    let op = match f.get("op") {
        None => ConstraintOp::Eq,
        Some(x) if matches!(x.node.value, Value::Null) => {
            // `op: !=` unquoted is a YAML tag with no value.
            ctx.error(
                x.key_pos,
                &x.path,
                "`op` has no value; write one of `=`, `\"!=\"` (quoted: YAML reads a bare `!` as a tag), `regexp`, `in` or `distinct_hosts`",
            );
            return None;
        }
        Some(x) => match choice(ctx, x.node, &x.path, "constraint op", OPS)? {
            0 => ConstraintOp::Eq,
            1 => ConstraintOp::Ne,
            2 => ConstraintOp::Regexp,
            3 => ConstraintOp::In,
            _ => ConstraintOp::DistinctHosts,
        },
    };
    if op == ConstraintOp::DistinctHosts {
        for extra in ["attr", "value", "values"] {
            if let Some(x) = f.get(extra) {
                ctx.error(
                    x.key_pos,
                    &x.path,
                    format!("op `distinct_hosts` takes no `{extra}`; remove it"),
                );
            }
        }
        return Some(Constraint {
            attr: String::new(),
            op,
            values: Vec::new(),
        });
    }
    let attr = match f.get("attr") {
        Some(x) => node_attr(ctx, &x),
        None if f.has_or_meant("attr") => None,
        None => {
            ctx.error(
                f.pos,
                path,
                "the constraint has no `attr`; add the node attribute to test, like `attr: node.labels.zone`",
            );
            None
        }
    };
    let values = if op == ConstraintOp::In {
        in_values(ctx, &f, path)
    } else {
        single_value(ctx, &f, path, op)
    };
    Some(Constraint {
        attr: attr?,
        op,
        values: values?,
    })
}

fn in_values(ctx: &mut Ctx<'_>, f: &Fields<'_>, path: &str) -> Option<Vec<String>> {
    let values = match (f.get("value"), f.get("values")) {
        (Some(_), Some(x)) => {
            ctx.error(
                x.key_pos,
                &x.path,
                "give either `value` or `values`, not both",
            );
            return None;
        }
        (None, None) => {
            ctx.error(
                f.pos,
                path,
                "op `in` needs the accepted values: `values: [a, b]` or `value: \"a,b\"`",
            );
            return None;
        }
        (Some(x), None) if !matches!(x.node.value, Value::Seq(_)) => {
            let all = text(ctx, x.node, &x.path, "values like \"a,b\"")?;
            (x, all.split(',').map(|v| v.trim().to_owned()).collect())
        }
        (Some(x), None) | (None, Some(x)) => {
            let all = strings(ctx, x.node, &x.path, "a list of values like [a, b]")?;
            (x, all)
        }
    };
    let (x, values) = values;
    let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        ctx.error(
            x.node.pos,
            &x.path,
            "op `in` needs at least one value, like `values: [a, b]`",
        );
        return None;
    }
    Some(values)
}

fn single_value(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    path: &str,
    op: ConstraintOp,
) -> Option<Vec<String>> {
    if let Some(x) = f.get("values") {
        ctx.error(
            x.key_pos,
            &x.path,
            format!(
                "`values` is only for op `in`; use `value` with op `{}`",
                op.as_str()
            ),
        );
        return None;
    }
    let Some(x) = f.get("value") else {
        ctx.error(
            f.pos,
            path,
            format!("op `{}` needs a `value` to compare with", op.as_str()),
        );
        return None;
    };
    let value = text(ctx, x.node, &x.path, "a value")?;
    if op == ConstraintOp::Regexp
        && let Err(e) = regex::Regex::new(&value)
    {
        ctx.error(
            x.node.pos,
            &x.path,
            format!(
                "bad regexp {value:?}: {}; fix the pattern",
                regex_reason(&e)
            ),
        );
        return None;
    }
    Some(vec![value])
}

/// The one-line reason of a regex error (its Display spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let full = e.to_string();
    full.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| full.lines().last().unwrap_or("invalid pattern"))
        .trim()
        .to_owned()
}

pub(super) const SPREAD_FIELDS: &[&str] = &["attr"];

pub(super) fn spread(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> Option<Spread> {
    let expected = "a spread like {attr: node.labels.zone}";
    let f = fields(ctx, fl.node, &fl.path, SPREAD_FIELDS, expected)?;
    match f.get("attr") {
        Some(x) => node_attr(ctx, &x).map(|attr| Spread { attr }),
        None if f.has_or_meant("attr") => None,
        None => {
            ctx.error(
                f.pos,
                &f.path,
                "`spread` needs the node attribute to spread over, like `attr: node.labels.zone`",
            );
            None
        }
    }
}

/// The smallest memory limit accepted: below it a process cannot even start,
/// and a number without a unit (bytes) is the usual cause.
const MIN_MEMORY: Bytes = Bytes(1 << 20);

pub(super) const RESOURCES_FIELDS: &[&str] = &["cpu", "memory"];

pub(super) fn resources(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> Resources {
    let mut r = Resources::default();
    let expected = "resources like {cpu: 500m, memory: 256M}";
    let Some(f) = fields(ctx, fl.node, &fl.path, RESOURCES_FIELDS, expected) else {
        return r;
    };
    if let Some(x) = f.get("cpu")
        && let Some(c) = cpu(ctx, x.node, &x.path)
    {
        if c.0 == 0 {
            ctx.error(
                x.node.pos,
                &x.path,
                format!(
                    "cpu must be more than 0, found {}; write e.g. 100m",
                    x.node.describe()
                ),
            );
        }
        r.cpu = c;
    }
    if let Some(x) = f.get("memory")
        && let Some(m) = size(ctx, x.node, &x.path)
    {
        if m.0 == 0 {
            ctx.error(
                x.node.pos,
                &x.path,
                format!(
                    "memory must be more than 0, found {}; write e.g. 256M",
                    x.node.describe()
                ),
            );
        } else if m < MIN_MEMORY {
            let message = if matches!(x.node.value, Value::Int(_)) {
                format!(
                    "memory must be at least 1MiB, found {} bytes; write a unit, e.g. {}M",
                    m.0, m.0
                )
            } else {
                format!("memory must be at least 1MiB, found {}", x.node.describe())
            };
            ctx.error(x.node.pos, &x.path, message);
        }
        r.memory = m;
    }
    r
}

/// A port one task declares, with where it was written.
pub(super) struct PortDecl {
    pub task: String,
    pub name: String,
    pub number: u16,
    pub name_pos: Pos,
    pub number_pos: Pos,
    pub path: String,
}

fn port_name_ok(name: &str) -> bool {
    name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub(super) fn ports(
    ctx: &mut Ctx<'_>,
    fl: &Field<'_>,
    task: &str,
) -> (BTreeMap<String, u16>, Vec<PortDecl>) {
    let mut map = BTreeMap::new();
    let mut decls = Vec::new();
    let expected = "a mapping of port names to numbers, like {http: 8080}";
    let Some(raw) = entries(ctx, fl.node, &fl.path, expected) else {
        return (map, decls);
    };
    for (name, key, value) in raw {
        let path = join(&fl.path, name);
        if !port_name_ok(name) {
            let message = if matches!(key.value, Value::Int(_))
                && matches!(value.value, Value::Str(_))
            {
                format!("port name `{name}` is not valid; write the name first, like `http: 8080`")
            } else {
                format!(
                    "port name `{name}` is not valid; use lowercase letters, digits, `-` and `_`, starting with a letter"
                )
            };
            ctx.error(key.pos, &path, message);
            continue;
        }
        if map.contains_key(name) {
            ctx.error(key.pos, &path, format!("`{name}` is given twice; keep one"));
            continue;
        }
        let number = match value.value {
            Value::Int(n) => match u16::try_from(n) {
                Ok(p) if p > 0 => p,
                _ => {
                    ctx.error(
                        value.pos,
                        &path,
                        format!("port must be between 1 and 65535, found {}", value.text),
                    );
                    continue;
                }
            },
            _ => {
                ctx.expected(value, &path, "a port number like 8080");
                continue;
            }
        };
        map.insert(name.to_owned(), number);
        decls.push(PortDecl {
            task: task.to_owned(),
            name: name.to_owned(),
            number,
            name_pos: key.pos,
            number_pos: value.pos,
            path,
        });
    }
    (map, decls)
}

/// Ports clash within a group: its tasks share one network namespace.
pub(super) fn check_port_clashes(ctx: &mut Ctx<'_>, decls: &[PortDecl]) {
    for (i, d) in decls.iter().enumerate() {
        let earlier = &decls[..i];
        if let Some(e) = earlier.iter().find(|e| e.name == d.name) {
            ctx.error(
                d.name_pos,
                &d.path,
                format!(
                    "port name `{}` is already used by task `{}`; port names must be unique within a group",
                    d.name, e.task
                ),
            );
        } else if let Some(e) = earlier
            .iter()
            .find(|e| GroupSpec::port_env_var(&e.name) == GroupSpec::port_env_var(&d.name))
        {
            // Both would be told their port in the same variable.
            ctx.error(
                d.name_pos,
                &d.path,
                format!(
                    "port name `{}` gives the same variable as port `{}` of task `{}` ({}); rename one of them",
                    d.name,
                    e.name,
                    e.task,
                    GroupSpec::port_env_var(&d.name)
                ),
            );
        } else if let Some(e) = earlier.iter().find(|e| e.number == d.number) {
            let message = if e.task == d.task {
                format!(
                    "port {} is already used by port `{}`; give each port its own number",
                    d.number, e.name
                )
            } else {
                format!(
                    "port {} is already used by port `{}` of task `{}`; tasks of a group share a network, so give each port its own number",
                    d.number, e.name, e.task
                )
            };
            ctx.error(d.number_pos, &d.path, message);
        }
    }
}

fn env_name_ok(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn env(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let expected = "a mapping of variable names to values, like {FOO: bar}";
    let Some(raw) = entries(ctx, fl.node, &fl.path, expected) else {
        return out;
    };
    for (name, key, value) in raw {
        let path = join(&fl.path, name);
        if !env_name_ok(name) {
            ctx.error(
                key.pos,
                &path,
                format!(
                    "`{name}` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit"
                ),
            );
            continue;
        }
        if out.contains_key(name) {
            ctx.error(key.pos, &path, format!("`{name}` is given twice; keep one"));
            continue;
        }
        match &value.value {
            Value::Null => ctx.error(
                value.pos,
                &path,
                format!("`{name}` has no value; write `{name}: \"\"` for an empty one"),
            ),
            _ => {
                if let Some(v) = text(ctx, value, &path, "a string, number or boolean") {
                    out.insert(name.to_owned(), v);
                }
            }
        }
    }
    out
}

/// `command`: a list, or a string split on whitespace.
pub(super) fn command(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> Option<Vec<String>> {
    let parts = match &fl.node.value {
        Value::Str(s) => {
            if s.contains(['"', '\'', '\\']) {
                ctx.error(
                    fl.node.pos,
                    &fl.path,
                    "a `command` string is split on spaces and cannot hold quotes; write it as a list, like [sh, -c, 'echo hi']",
                );
                return None;
            }
            s.split_whitespace().map(str::to_owned).collect()
        }
        Value::Seq(_) => strings(
            ctx,
            fl.node,
            &fl.path,
            "a command as a list like [python, app.py]",
        )?,
        _ => {
            ctx.expected(
                fl.node,
                &fl.path,
                "a command as a list like [python, app.py] or a string",
            );
            return None;
        }
    };
    if parts.is_empty() || parts.iter().all(String::is_empty) {
        ctx.error(
            fl.node.pos,
            &fl.path,
            "`command` is empty; give the program and its arguments, like [python, app.py]",
        );
        return None;
    }
    Some(parts)
}

pub(super) const SECURITY_FIELDS: &[&str] = &[
    "privileged",
    "read_only_rootfs",
    "user",
    "cap_add",
    "cap_drop",
];

fn capabilities(ctx: &mut Ctx<'_>, x: &Field<'_>) -> Vec<String> {
    let Some(items) = list(
        ctx,
        x.node,
        &x.path,
        "a list of capabilities like [NET_ADMIN]",
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(&x.path, i);
        let Some(cap) = text(ctx, item, &path, "a capability name like NET_ADMIN") else {
            continue;
        };
        if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            ctx.error(
                item.pos,
                &path,
                format!("`{cap}` is not a capability name; write it like NET_ADMIN or ALL"),
            );
            continue;
        }
        out.push(cap);
    }
    out
}

pub(super) fn security(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> SecuritySpec {
    let mut s = SecuritySpec::default();
    let expected = "security options like {read_only_rootfs: true, cap_drop: [ALL]}";
    let Some(f) = fields(ctx, fl.node, &fl.path, SECURITY_FIELDS, expected) else {
        return s;
    };
    if let Some(x) = f.get("privileged") {
        s.privileged = boolean(ctx, x.node, &x.path).unwrap_or(false);
    }
    if let Some(x) = f.get("read_only_rootfs") {
        s.read_only_rootfs = boolean(ctx, x.node, &x.path).unwrap_or(false);
    }
    if let Some(x) = f.get("user") {
        s.user = word(ctx, x.node, &x.path, "user", "a user name or id like 1000");
    }
    if let Some(x) = f.get("cap_add") {
        s.cap_add = capabilities(ctx, &x);
    }
    if let Some(x) = f.get("cap_drop") {
        s.cap_drop = capabilities(ctx, &x);
    }
    s
}
