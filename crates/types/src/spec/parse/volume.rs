//! `volume:` (one, the seed form) and `volumes:` (a list) of a group.

use crate::spec::{
    BackupKeep, BackupPolicy, OnNodeLoss, SnapshotHooks, SnapshotPolicy, VolumeSpec,
    default_node_loss_grace,
};
use crate::units::Millis;

use super::ctx::{
    Ctx, Fields, boolean, choice, duration, fields, name, one_or_many, size, strings, text, uint,
    word,
};
use super::tree::{Node, Pos};

pub(super) const VOLUME_FIELDS: &[&str] = &[
    "name",
    "size",
    "mount",
    "read_only",
    "per_alloc",
    "snapshots",
    "backup",
    "on_node_loss",
    "node_loss_grace",
    "hooks",
];
pub(super) const HOOK_FIELDS: &[&str] = &["pre_snapshot", "post_snapshot", "timeout", "task"];
pub(super) const SNAPSHOT_FIELDS: &[&str] = &["every", "keep"];
pub(super) const BACKUP_FIELDS: &[&str] = &["every", "keep", "to"];
pub(super) const BACKUP_KEEP_FIELDS: &[&str] = &["last", "hourly", "daily", "weekly", "monthly"];

/// The shortest backup interval.
const MIN_BACKUP_EVERY: Millis = Millis(5 * 60_000);

/// Where nothing may be mounted: the container's own system directories.
const RESERVED_MOUNTS: &[&str] = &[
    "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/usr",
];

/// The shortest snapshot interval: each one is a subvolume on the node.
const MIN_EVERY: Millis = Millis(60_000);

/// What the volume checks need to know about the group.
pub(super) struct GroupFacts<'t> {
    pub count: u32,
    pub canaries: u32,
    /// The group's task names, in order.
    pub tasks: Vec<&'t str>,
}

pub(super) fn group_volumes(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    g: &GroupFacts<'_>,
) -> Vec<VolumeSpec> {
    let nodes = one_or_many(
        ctx,
        f,
        ("volume", "volumes"),
        "volume",
        "a list of volumes like [{name: data, size: 1G, mount: /data}]",
    );
    if g.canaries > 0
        && let Some((n, p)) = nodes.first()
    {
        ctx.error(n.pos, p, "a group with a volume cannot roll out with canaries: a canary runs beside the allocation it replaces, and a volume has one writer; use `update: {canary: 0}`");
    }
    let single = nodes.len() == 1;
    let mut out: Vec<(VolumeSpec, Pos, String)> = Vec::new();
    for (node, path) in nodes {
        if let Some(v) = volume(ctx, node, &path, single, g, &out) {
            out.push(v);
        }
    }
    out.into_iter().map(|(v, _, _)| v).collect()
}

fn volume(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    single: bool,
    g: &GroupFacts<'_>,
    before: &[(VolumeSpec, Pos, String)],
) -> Option<(VolumeSpec, Pos, String)> {
    let expected = "a volume like {size: 1G} or {name: data, size: 1G, mount: /data}";
    let vf = fields(ctx, node, path, VOLUME_FIELDS, expected)?;
    let name_v = match vf.get("name") {
        Some(x) => {
            let n = name(ctx, x.node, &x.path);
            if let Some(n) = &n
                && before.iter().any(|(v, _, _)| &v.name == n)
            {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("duplicate volume name `{n}`; give each volume its own name"),
                );
            }
            n
        }
        None if single => Some("data".to_owned()),
        None => {
            ctx.error(
                vf.pos,
                path,
                "the volume has no `name`; when a group has several volumes, each needs one",
            );
            None
        }
    };
    let size_v = match vf.get("size") {
        Some(x) => size(ctx, x.node, &x.path).and_then(|s| {
            if s < VolumeSpec::MIN_SIZE {
                ctx.error(x.node.pos, &x.path, format!("a volume needs at least {} (the smallest image a btrfs volume can be), found {s}", VolumeSpec::MIN_SIZE));
                None
            } else {
                Some(s)
            }
        }),
        None => {
            ctx.error(vf.pos, path, "the volume has no `size`; add one like `size: 1G`");
            None
        }
    };
    let mount_at = vf.get("mount").map(|x| (x.node.pos, x.path.clone()));
    let mount = match vf.get("mount") {
        Some(x) => text(ctx, x.node, &x.path, "an absolute path like /data").and_then(|m| {
            match mount_problem(&m) {
                Some(p) => {
                    ctx.error(x.node.pos, &x.path, p);
                    None
                }
                None => Some(m.trim_end_matches('/').to_owned()),
            }
        }),
        None if single => Some("/data".to_owned()),
        None => {
            ctx.error(
                vf.pos,
                path,
                "the volume has no `mount`; add the path the tasks see it at, like `mount: /data`",
            );
            None
        }
    };
    let (mpos, mpath) = mount_at.unwrap_or((vf.pos, path.to_owned()));
    if let Some(m) = &mount
        && let Some((other, _, _)) = before.iter().find(|(o, _, _)| nested(&o.mount, m))
    {
        ctx.error(mpos, &mpath, format!("mount `{m}` clashes with volume `{}` mounted at `{}`; give each volume its own directory, neither inside the other", other.name, other.mount));
    }
    let read_only = vf
        .get("read_only")
        .and_then(|x| boolean(ctx, x.node, &x.path))
        .unwrap_or(false);
    let per_alloc = vf
        .get("per_alloc")
        .and_then(|x| boolean(ctx, x.node, &x.path))
        .unwrap_or(false);
    let snapshots = vf
        .get("snapshots")
        .and_then(|x| snapshots(ctx, x.node, &x.path));
    let backup = vf.get("backup").and_then(|x| backup(ctx, x.node, &x.path));
    let on_node_loss = match vf.get("on_node_loss") {
        Some(x) => match choice(ctx, x.node, &x.path, "on_node_loss", &["restore", "wait"]) {
            Some(1) => OnNodeLoss::Wait,
            _ => OnNodeLoss::Restore,
        },
        None => OnNodeLoss::Restore,
    };
    let node_loss_grace = vf
        .get("node_loss_grace")
        .and_then(|x| duration(ctx, x.node, &x.path))
        .unwrap_or_else(default_node_loss_grace);
    let hooks = vf.get("hooks").and_then(|x| hooks(ctx, x.node, &x.path, g));
    if g.count > 1 && !per_alloc {
        ctx.error(vf.pos, path, format!("the group's count is {} but volume `{}` is one volume with one writer; add `per_alloc: true` to it to give each copy its own, or set count: 1", g.count, name_v.as_deref().unwrap_or("data")));
    }
    Some((
        VolumeSpec {
            name: name_v?,
            size: size_v?,
            mount: mount?,
            read_only,
            per_alloc,
            snapshots,
            backup,
            on_node_loss,
            node_loss_grace,
            hooks,
        },
        vf.pos,
        path.to_owned(),
    ))
}

fn snapshots(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<SnapshotPolicy> {
    let f = fields(
        ctx,
        node,
        path,
        SNAPSHOT_FIELDS,
        "snapshots like {every: 1h, keep: 24}",
    )?;
    let every = match f.get("every") {
        Some(x) => duration(ctx, x.node, &x.path).and_then(|d| {
            if d < MIN_EVERY {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("snapshots at most once a minute; found every {d}"),
                );
                None
            } else {
                Some(d)
            }
        }),
        None => {
            ctx.error(f.pos, path, "`snapshots` needs `every`, like `every: 1h`");
            None
        }
    };
    let keep = match f.get("keep") {
        Some(x) => uint(ctx, x.node, &x.path, "keep", 1),
        None => Some(24),
    };
    Some(SnapshotPolicy {
        every: every?,
        keep: keep?,
    })
}

fn backup(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BackupPolicy> {
    let f = fields(
        ctx,
        node,
        path,
        BACKUP_FIELDS,
        "a backup like {every: 24h, keep: {daily: 7, weekly: 4}, to: nas}",
    )?;
    let every = match f.get("every") {
        Some(x) => duration(ctx, x.node, &x.path).and_then(|d| {
            if d < MIN_BACKUP_EVERY {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("backups at most every 5m; found every {d}"),
                );
                None
            } else {
                Some(d)
            }
        }),
        None => {
            ctx.error(f.pos, path, "`backup` needs `every`, like `every: 24h`");
            None
        }
    };
    let to = match f.get("to") {
        Some(x) => word(
            ctx,
            x.node,
            &x.path,
            "backup target",
            "the name of a backup target of the server config",
        ),
        None => {
            ctx.error(f.pos, path, "`backup` needs `to`: the name of a backup target of the server config (`[backup_targets.NAME]`)");
            None
        }
    };
    let keep = match f.get("keep") {
        Some(x) => {
            let kf = fields(
                ctx,
                x.node,
                &x.path,
                BACKUP_KEEP_FIELDS,
                "a retention like {daily: 7, weekly: 4}",
            );
            let mut k = BackupKeep::default();
            if let Some(kf) = kf {
                let mut get = |name: &str| {
                    kf.get(name)
                        .and_then(|y| uint(ctx, y.node, &y.path, name, 1))
                };
                k.last = get("last");
                k.hourly = get("hourly");
                k.daily = get("daily");
                k.weekly = get("weekly");
                k.monthly = get("monthly");
                if k.is_empty() {
                    ctx.error(x.node.pos, &x.path, "`keep` keeps nothing; give at least one of last, hourly, daily, weekly, monthly");
                }
            }
            k
        }
        None => BackupKeep {
            last: Some(7),
            ..BackupKeep::default()
        },
    };
    Some(BackupPolicy {
        every: every?,
        keep,
        to: to?,
    })
}

fn hooks(ctx: &mut Ctx<'_>, node: &Node, path: &str, g: &GroupFacts<'_>) -> Option<SnapshotHooks> {
    let expected =
        "hooks like {pre_snapshot: [sh, -c, \"...\"], post_snapshot: [...], timeout: 30s}";
    let f = fields(ctx, node, path, HOOK_FIELDS, expected)?;
    let command = |ctx: &mut Ctx<'_>, name: &str| -> Vec<String> {
        let Some(x) = f.get(name) else {
            return Vec::new();
        };
        let c = strings(
            ctx,
            x.node,
            &x.path,
            "a command as a list, like [sh, -c, \"sync\"]",
        )
        .unwrap_or_default();
        if c.is_empty() || c[0].is_empty() {
            ctx.error(
                x.node.pos,
                &x.path,
                format!("`{name}` is empty; give the command as a list, like [sh, -c, \"sync\"]"),
            );
        }
        c
    };
    let pre_snapshot = command(ctx, "pre_snapshot");
    let post_snapshot = command(ctx, "post_snapshot");
    if !f.has("pre_snapshot") && !f.has("post_snapshot") {
        ctx.error(
            f.pos,
            path,
            "`hooks` needs `pre_snapshot` or `post_snapshot` (or both)",
        );
    }
    let timeout = match f.get("timeout") {
        Some(x) => duration(ctx, x.node, &x.path).unwrap_or(Millis(30_000)),
        None => Millis(30_000),
    };
    let task = match f.get("task") {
        Some(x) => {
            let t = text(ctx, x.node, &x.path, "the name of a task of the group");
            if let Some(t) = &t
                && !g.tasks.is_empty()
                && !g.tasks.contains(&t.as_str())
            {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!(
                        "the group has no task `{t}`; its tasks are {}",
                        g.tasks.join(", ")
                    ),
                );
            }
            t.unwrap_or_default()
        }
        None => g.tasks.first().map(|t| (*t).to_owned()).unwrap_or_default(),
    };
    Some(SnapshotHooks {
        pre_snapshot,
        post_snapshot,
        timeout,
        task,
    })
}

/// Why `m` cannot be a volume's mount path inside the container.
fn mount_problem(m: &str) -> Option<String> {
    if !m.starts_with('/') {
        return Some(format!(
            "mount `{m}` is not an absolute path; write it like `/data`"
        ));
    }
    let trimmed = m.trim_end_matches('/');
    if trimmed.is_empty() {
        return Some("a volume cannot be mounted at `/`; pick a directory like `/data`".into());
    }
    if m.split('/').any(|s| s == ".." || s == ".") {
        return Some(format!(
            "mount `{m}` has a `.` or `..` segment; write the plain path"
        ));
    }
    if m.contains("//") || m.chars().any(|c| c.is_control() || c == ':' || c == ',') {
        return Some(format!(
            "mount `{m}` has `//`, `:`, `,` or a control character; write a plain path like `/data`"
        ));
    }
    if let Some(r) = RESERVED_MOUNTS.iter().find(|r| nested(r, trimmed)) {
        return Some(format!(
            "mount `{m}` would hide or sit inside the container's `{r}`; pick a directory of its own like `/data`"
        ));
    }
    None
}

/// Whether one of two absolute paths is the other or inside it.
fn nested(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || y.strip_prefix(x).is_some_and(|r| r.starts_with('/'));
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        assert!(mount_problem("/data").is_none());
        assert!(mount_problem("/var/lib/pg").is_none());
        assert!(mount_problem("data").is_some());
        assert!(mount_problem("/").is_some());
        assert!(mount_problem("/a/../etc").is_some());
        assert!(mount_problem("/proc/x").is_some());
        assert!(mount_problem("/etc").is_some());
        assert!(mount_problem("/a:b").is_some());
        assert!(nested("/data", "/data/x"));
        assert!(!nested("/data", "/database"));
    }
}
