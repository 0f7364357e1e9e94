//! A validated spec written back as a job file in the full form
//! (`groups:` and `tasks:`, every setting explicit, durations and sizes as
//! the spec writes them), so `corral job inspect JOB | corral run -`
//! stores the same spec again. The tests parse every rendering back.

use serde_json::{Map, Value, json};

use crate::spec::{
    CheckKind, CheckSpec, Constraint, ConstraintOp, DelayFunction, GroupSpec, JobSpec, LogPolicy,
    NetworkMode, PullPolicy, ReschedulePolicy, RestartMode, RestartPolicy, SecuritySpec,
    ServiceSpec, TaskSpec, UpdatePolicy,
};
use crate::units::Bytes;

/// The job file for `spec`.
pub fn document(spec: &JobSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(spec.name));
    m.insert("update".into(), update(&spec.update));
    m.insert(
        "groups".into(),
        Value::Array(spec.groups.iter().map(group).collect()),
    );
    Value::Object(m)
}

fn group(g: &GroupSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(g.name));
    m.insert("count".into(), json!(g.count));
    m.insert("restart".into(), restart(&g.restart));
    m.insert("reschedule".into(), reschedule(&g.reschedule));
    if !g.constraints.is_empty() {
        m.insert(
            "constraints".into(),
            Value::Array(g.constraints.iter().map(constraint).collect()),
        );
    }
    if let Some(s) = &g.spread {
        m.insert("spread".into(), json!({ "attr": s.attr }));
    }
    m.insert("update".into(), update(&g.update));
    m.insert(
        "network".into(),
        json!(match g.network {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
        }),
    );
    if !g.services.is_empty() {
        m.insert(
            "services".into(),
            Value::Array(g.services.iter().map(service).collect()),
        );
    }
    if !g.volumes.is_empty() {
        m.insert(
            "volumes".into(),
            Value::Array(g.volumes.iter().map(volume).collect()),
        );
    }
    m.insert(
        "tasks".into(),
        Value::Array(g.tasks.iter().map(task).collect()),
    );
    Value::Object(m)
}

fn volume(v: &crate::spec::VolumeSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(v.name));
    m.insert("size".into(), json!(v.size.to_string()));
    m.insert("mount".into(), json!(v.mount));
    if v.read_only {
        m.insert("read_only".into(), json!(true));
    }
    if v.per_alloc {
        m.insert("per_alloc".into(), json!(true));
    }
    if let Some(s) = &v.snapshots {
        m.insert(
            "snapshots".into(),
            json!({"every": s.every.to_string(), "keep": s.keep}),
        );
    }
    if let Some(b) = &v.backup {
        m.insert(
            "backup".into(),
            json!({"every": b.every.to_string(), "keep": b.keep, "to": b.to}),
        );
    }
    if v.on_node_loss == crate::spec::OnNodeLoss::Wait {
        m.insert("on_node_loss".into(), json!("wait"));
    }
    if let Some(h) = &v.hooks {
        let mut hm = Map::new();
        if !h.pre_snapshot.is_empty() {
            hm.insert("pre_snapshot".into(), json!(h.pre_snapshot));
        }
        if !h.post_snapshot.is_empty() {
            hm.insert("post_snapshot".into(), json!(h.post_snapshot));
        }
        hm.insert("timeout".into(), json!(h.timeout.to_string()));
        hm.insert("task".into(), json!(h.task));
        m.insert("hooks".into(), Value::Object(hm));
    }
    if v.node_loss_grace != crate::spec::default_node_loss_grace() {
        m.insert(
            "node_loss_grace".into(),
            json!(v.node_loss_grace.to_string()),
        );
    }
    Value::Object(m)
}

fn task(t: &TaskSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(t.name));
    m.insert("driver".into(), json!(t.driver.as_str()));
    if let Some(i) = &t.image {
        m.insert("image".into(), json!(i));
    }
    if !t.command.is_empty() {
        m.insert("command".into(), json!(t.command));
    }
    if !t.args.is_empty() {
        m.insert("args".into(), json!(t.args));
    }
    if !t.env.is_empty() {
        m.insert("env".into(), json!(t.env));
    }
    if let Some(w) = &t.workdir {
        m.insert("workdir".into(), json!(w));
    }
    m.insert(
        "resources".into(),
        json!({
            "cpu": t.resources.cpu.to_string(),
            "memory": size(t.resources.memory),
        }),
    );
    if !t.ports.is_empty() {
        m.insert("ports".into(), json!(t.ports));
    }
    m.insert("kill_timeout".into(), json!(t.kill_timeout.to_string()));
    if let Some(r) = &t.restart {
        m.insert("restart".into(), restart(r));
    }
    m.insert(
        "pull_policy".into(),
        json!(match t.pull_policy {
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Always => "always",
        }),
    );
    if t.security != SecuritySpec::default() {
        m.insert("security".into(), security(&t.security));
    }
    if t.logs != LogPolicy::default() {
        m.insert(
            "logs".into(),
            json!({ "max_size": size(t.logs.max_size), "max_files": t.logs.max_files }),
        );
    }
    if !t.checks.is_empty() {
        m.insert(
            "checks".into(),
            Value::Array(t.checks.iter().map(|c| check(c, false)).collect()),
        );
    }
    Value::Object(m)
}

fn security(s: &SecuritySpec) -> Value {
    let mut m = Map::new();
    m.insert("privileged".into(), json!(s.privileged));
    m.insert("read_only_rootfs".into(), json!(s.read_only_rootfs));
    if let Some(u) = &s.user {
        m.insert("user".into(), json!(u));
    }
    if !s.cap_add.is_empty() {
        m.insert("cap_add".into(), json!(s.cap_add));
    }
    if !s.cap_drop.is_empty() {
        m.insert("cap_drop".into(), json!(s.cap_drop));
    }
    Value::Object(m)
}

fn service(s: &ServiceSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(s.name));
    if let Some(p) = &s.port {
        m.insert("port".into(), json!(p));
    }
    if s.kind != crate::spec::ServiceKind::Http {
        m.insert("type".into(), json!(s.kind.as_str()));
    }
    if !s.checks.is_empty() {
        m.insert(
            "checks".into(),
            Value::Array(s.checks.iter().map(|c| check(c, true)).collect()),
        );
    }
    if let Some(r) = &s.route {
        let mut rm = Map::new();
        if !r.hosts.is_empty() {
            rm.insert("hosts".into(), json!(r.hosts));
        }
        if !r.paths.is_empty() {
            rm.insert("paths".into(), json!(r.paths));
        }
        if r.strip_prefix {
            rm.insert("strip_prefix".into(), json!(true));
        }
        if let Some(p) = r.port {
            rm.insert("port".into(), json!(p));
        }
        m.insert("route".into(), Value::Object(rm));
    }
    m.insert("shutdown_delay".into(), json!(s.shutdown_delay.to_string()));
    Value::Object(m)
}

/// `with_task`: a service check names its task; a task's own check is
/// in its task already.
fn check(c: &CheckSpec, with_task: bool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(c.name));
    m.insert("type".into(), json!(c.kind.type_name()));
    match &c.kind {
        CheckKind::Http {
            path,
            method,
            status,
            headers,
        } => {
            m.insert("path".into(), json!(path));
            m.insert("method".into(), json!(method));
            m.insert("status".into(), json!(format!("{}-{}", status.0, status.1)));
            if !headers.is_empty() {
                m.insert("headers".into(), json!(headers));
            }
        }
        CheckKind::Tcp => {}
        CheckKind::Exec { command } => {
            m.insert("command".into(), json!(command));
        }
    }
    if let Some(p) = &c.port {
        m.insert("port".into(), json!(p));
    }
    if with_task && let Some(t) = &c.task {
        m.insert("task".into(), json!(t));
    }
    m.insert("interval".into(), json!(c.interval.to_string()));
    m.insert("timeout".into(), json!(c.timeout.to_string()));
    m.insert("success_threshold".into(), json!(c.success_threshold));
    m.insert("failure_threshold".into(), json!(c.failure_threshold));
    m.insert("grace".into(), json!(c.grace.to_string()));
    if let Some(r) = &c.check_restart {
        m.insert(
            "check_restart".into(),
            json!({ "limit": r.limit, "grace": r.grace.to_string() }),
        );
    }
    Value::Object(m)
}

fn restart(r: &RestartPolicy) -> Value {
    json!({
        "attempts": r.attempts,
        "interval": r.interval.to_string(),
        "delay": r.delay.to_string(),
        "mode": match r.mode {
            RestartMode::Fail => "fail",
            RestartMode::Delay => "delay",
        },
    })
}

/// `attempts` and `interval` only when limited (with `unlimited: true`
/// they would be refused).
fn reschedule(r: &ReschedulePolicy) -> Value {
    let mut m = Map::new();
    if r.unlimited {
        m.insert("unlimited".into(), json!(true));
    } else {
        m.insert("attempts".into(), json!(r.attempts));
        m.insert("interval".into(), json!(r.interval.to_string()));
    }
    m.insert("delay".into(), json!(r.delay.to_string()));
    m.insert(
        "delay_function".into(),
        json!(match r.delay_function {
            DelayFunction::Constant => "constant",
            DelayFunction::Exponential => "exponential",
            DelayFunction::Fibonacci => "fibonacci",
        }),
    );
    m.insert("max_delay".into(), json!(r.max_delay.to_string()));
    Value::Object(m)
}

fn update(u: &UpdatePolicy) -> Value {
    json!({
        "max_parallel": u.max_parallel,
        "min_healthy_time": u.min_healthy_time.to_string(),
        "healthy_deadline": u.healthy_deadline.to_string(),
        "progress_deadline": u.progress_deadline.to_string(),
        "auto_revert": u.auto_revert,
        "auto_promote": u.auto_promote,
        "canary": u.canary,
        "health_check": u.health_check.as_str(),
    })
}

fn constraint(c: &Constraint) -> Value {
    match c.op {
        ConstraintOp::DistinctHosts => json!({ "op": "distinct_hosts" }),
        ConstraintOp::In => json!({ "attr": c.attr, "op": "in", "values": c.values }),
        op => json!({
            "attr": c.attr,
            "op": op.as_str(),
            "value": c.values.first().cloned().unwrap_or_default(),
        }),
    }
}

/// `256MiB` when the unit is exact, else the number of bytes (the
/// display form rounds).
fn size(b: Bytes) -> Value {
    let s = b.to_string();
    if s.contains('.') {
        json!(b.0)
    } else {
        json!(s)
    }
}

#[cfg(test)]
mod tests;
