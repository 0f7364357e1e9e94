//! A service's `type`, `route:` and `shutdown_delay`, and the claims a
//! service makes on the cluster's name and route space (checked against
//! other jobs by the server at submit, since only it knows them).

use crate::spec::{Claim, RouteSpec, ServiceClaim, ServiceKind, SpecLocation};
use crate::units::Millis;

use super::ctx::{Ctx, Fields, boolean, choice, duration, fields, index, list, text, uint};
use super::tree::{Node, Pos};

pub(super) const ROUTE_FIELDS: &[&str] = &["hosts", "paths", "strip_prefix", "port"];

const KINDS: &[&str] = &["http", "tcp"];

/// The longest `shutdown_delay` accepted: a stop that waits longer is a
/// stuck stop.
const MAX_SHUTDOWN_DELAY: Millis = Millis(600_000);

/// What `route.rs` reads of one service.
pub(super) struct Routing {
    pub kind: ServiceKind,
    pub route: Option<RouteSpec>,
    pub shutdown_delay: Millis,
}

/// Reads `type`, `route` and `shutdown_delay` of the service in `sf`.
/// `has_port`: the service names a port (a route needs one). `name_at`:
/// where the service's name is, for its claim.
pub(super) fn routing(
    ctx: &mut Ctx<'_>,
    sf: &Fields<'_>,
    service: &str,
    has_port: bool,
    name_at: Option<(Pos, String)>,
) -> Routing {
    let kind = match sf.get("type") {
        Some(x) => match choice(ctx, x.node, &x.path, "service type", KINDS) {
            Some(1) => ServiceKind::Tcp,
            _ => ServiceKind::Http,
        },
        None => ServiceKind::Http,
    };
    if let Some(x) = sf.get("type")
        && kind == ServiceKind::Tcp
        && sf.get("port").is_none()
    {
        ctx.error(
            x.key_pos,
            &x.path,
            "a tcp service needs the `port` it proxies to, like `port: db`",
        );
    }
    let shutdown_delay = match sf.get("shutdown_delay") {
        Some(x) => match duration(ctx, x.node, &x.path) {
            Some(d) if d > MAX_SHUTDOWN_DELAY => {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("shutdown_delay is at most {MAX_SHUTDOWN_DELAY}, found {d}"),
                );
                Millis(0)
            }
            Some(d) => d,
            None => Millis(0),
        },
        None => crate::spec::ServiceSpec::DEFAULT_SHUTDOWN_DELAY,
    };
    if let Some((pos, path)) = name_at.clone()
        && !service.is_empty()
    {
        if let Some(problem) = dns_label_problem(service) {
            ctx.error(pos, &path, format!("service name: {problem}"));
        } else {
            let auto_host = kind == ServiceKind::Http && has_port;
            claim(ctx, service, Claim::Name { auto_host }, pos, &path);
        }
    }
    let route = sf
        .get("route")
        .and_then(|x| route(ctx, x.node, &x.path, x.key_pos, kind, has_port, service));
    Routing {
        kind,
        route,
        shutdown_delay,
    }
}

fn claim(ctx: &mut Ctx<'_>, service: &str, what: Claim, pos: Pos, path: &str) {
    let at = ctx.location(pos, path);
    ctx.claims.push(ServiceClaim {
        service: service.to_owned(),
        what,
        at,
    });
}

fn route(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    key_pos: Pos,
    kind: ServiceKind,
    has_port: bool,
    service: &str,
) -> Option<RouteSpec> {
    let before = ctx.errors.len();
    let expected = match kind {
        ServiceKind::Http => "a route like {hosts: [shop.example.com], paths: [/api]}",
        ServiceKind::Tcp => "a tcp route like {port: 5432}",
    };
    let f = fields(ctx, node, path, ROUTE_FIELDS, expected)?;
    if !has_port {
        ctx.error(
            key_pos,
            path,
            "a route sends traffic to the service's port, and the service has none; add `port:` to the service",
        );
    }
    let mut out = RouteSpec::default();
    match kind {
        ServiceKind::Http => {
            if let Some(x) = f.get("port") {
                ctx.error(
                    x.key_pos,
                    &x.path,
                    "`port` in a route is the router port of a tcp service; remove it, or add `type: tcp` to the service",
                );
            }
            if let Some(x) = f.get("hosts") {
                for (i, n) in list(ctx, x.node, &x.path, "a list of host names")
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let p = index(&x.path, i);
                    let Some(h) = text(ctx, n, &p, "a host name like shop.example.com") else {
                        continue;
                    };
                    match host_problem(&h) {
                        Some(problem) => ctx.error(n.pos, &p, problem),
                        None if out.hosts.contains(&h) => {
                            ctx.error(n.pos, &p, format!("host {h} is listed twice; keep one"))
                        }
                        None => out.hosts.push(h),
                    }
                }
            }
            if let Some(x) = f.get("paths") {
                for (i, n) in list(ctx, x.node, &x.path, "a list of path prefixes")
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let p = index(&x.path, i);
                    let Some(v) = text(ctx, n, &p, "a path prefix like /api") else {
                        continue;
                    };
                    match path_problem(&v) {
                        Some(problem) => ctx.error(n.pos, &p, problem),
                        None => {
                            let v = normalize_prefix(&v);
                            if out.paths.contains(&v) {
                                ctx.error(n.pos, &p, format!("path {v} is listed twice; keep one"));
                            } else {
                                out.paths.push(v);
                            }
                        }
                    }
                }
            }
            if let Some(x) = f.get("strip_prefix") {
                out.strip_prefix = boolean(ctx, x.node, &x.path).unwrap_or(false);
                if out.strip_prefix && f.get("paths").is_none() {
                    ctx.error(
                        x.key_pos,
                        &x.path,
                        "strip_prefix removes the matched path prefix, and the route has no `paths`; add `paths:` or remove it",
                    );
                }
            }
            if !f.has_or_meant("hosts") && !f.has_or_meant("paths") {
                ctx.error(
                    f.pos,
                    path,
                    "the route has neither `hosts` nor `paths`; the service already gets its automatic host name, so add one or remove `route`",
                );
            }
        }
        ServiceKind::Tcp => {
            for field in ["hosts", "paths", "strip_prefix"] {
                if let Some(x) = f.get(field) {
                    ctx.error(
                        x.key_pos,
                        &x.path,
                        format!(
                            "`{field}` is for http services; a tcp service is routed by `port` only"
                        ),
                    );
                }
            }
            match f.get("port") {
                Some(x) => {
                    out.port = uint(ctx, x.node, &x.path, "port", 1).and_then(|p| {
                        u16::try_from(p).ok().or_else(|| {
                            ctx.error(
                                x.node.pos,
                                &x.path,
                                format!("port must be at most 65535, found {p}"),
                            );
                            None
                        })
                    });
                }
                None => {
                    if !f.has_or_meant("port") {
                        ctx.error(
                            f.pos,
                            path,
                            "a tcp route needs the router `port` to listen on, like `port: 5432`",
                        );
                    }
                }
            }
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    // The claims, at the field that makes them.
    let at = match kind {
        ServiceKind::Tcp => f.get("port"),
        ServiceKind::Http => f.get("hosts").or_else(|| f.get("paths")),
    }
    .map(|x| (x.node.pos, x.path))
    .unwrap_or((f.pos, path.to_owned()));
    for what in crate::spec::claims::route_claims(kind, &out) {
        claim(ctx, service, what, at.0, &at.1);
    }
    Some(out)
}

/// `/api/` and `/api` are the same prefix (matched at segment bounds).
fn normalize_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".to_owned()
    } else {
        t.to_owned()
    }
}

fn path_problem(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return Some(format!(
            "a path prefix starts with `/`, like /api, found `{p}`"
        ));
    }
    if p.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Some(format!(
            "a path prefix has no spaces, `?` or `#`, found `{p}`"
        ));
    }
    // Routers match the path with its unreserved characters decoded
    // (`/%61pi` is `/api`); a prefix must be written the same way, and
    // percent-encoded or non-ASCII prefixes could be dodged by encoding.
    if p.contains('%') || !p.is_ascii() {
        return Some(format!(
            "a path prefix is plain ASCII without `%` escapes, found `{p}`"
        ));
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Some(format!(
            "a path prefix has no `.` or `..` segments, found `{p}`"
        ));
    }
    None
}

/// A DNS label, as a service name must be: it becomes `<name>.<domain>`
/// and `<name>.service.corral`.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.contains('_') {
        return Some(format!(
            "`{name}` is used as a host name and DNS name, which cannot hold `_`; use `-`, e.g. `{}`",
            name.replace('_', "-")
        ));
    }
    if name.ends_with('-') {
        return Some(format!(
            "`{name}` is used as a host name and DNS name, which cannot end with `-`"
        ));
    }
    None
}

/// A host name as routers match it: lowercase DNS labels, dot-separated.
pub fn host_problem(h: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "`{h}` is not a valid host name; write lowercase labels of letters, digits and `-` separated by dots, like shop.example.com (no scheme, port or path)"
        ))
    };
    if h.is_empty() || h.len() > 253 || h.starts_with('.') || h.ends_with('.') {
        return bad();
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            let lower = h.to_ascii_lowercase();
            if lower != h && host_problem(&lower).is_none() {
                return Some(format!(
                    "`{h}` is not a valid host name: write it in lowercase, `{lower}`"
                ));
            }
            return bad();
        }
    }
    None
}

impl Ctx<'_> {
    pub fn location(&self, pos: Pos, path: &str) -> SpecLocation {
        SpecLocation {
            file: self.file().to_owned(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
        }
    }
}
