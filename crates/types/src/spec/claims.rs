//! What a service claims of the cluster's shared space: its name (which
//! is also its host `<name>.<domain>` and DNS name), its HTTP routes (host
//! and path prefix) and a TCP router port. Two jobs may not claim the
//! same; the parser checks one file, the server checks against the jobs it
//! runs.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{JobSpec, RouteSpec, ServiceKind, SpecError};

/// Where something was written: `file:line:column` and the field path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecLocation {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub path: String,
}

impl fmt::Display for SpecLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{} {}", self.file, self.path);
        }
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Claim {
    /// The service name; with `auto_host` (an HTTP service with a port)
    /// also `<name>.<domain>`, path `/`.
    Name {
        #[serde(default = "yes")]
        auto_host: bool,
    },
    /// An HTTP route: host (any when `None`) and path prefix.
    Route { host: Option<String>, path: String },
    /// A TCP router port.
    TcpPort { port: u16 },
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaim {
    pub service: String,
    pub what: Claim,
    pub at: SpecLocation,
}

/// The (host, path) an HTTP claim routes; a name routes its automatic
/// host's `/` once the domain is known.
fn route_key(c: &ServiceClaim, domain: Option<&str>) -> Option<(Option<String>, String)> {
    match &c.what {
        Claim::Route { host, path } => Some((host.clone(), path.clone())),
        Claim::Name { auto_host: true } => {
            domain.map(|d| (Some(format!("{}.{d}", c.service)), "/".to_owned()))
        }
        Claim::Name { auto_host: false } => None,
        Claim::TcpPort { .. } => None,
    }
}

/// Whether `a` and `b` claim the same thing. `domain`: the automatic host
/// names' domain, when known (the server's).
pub fn clashes(a: &ServiceClaim, b: &ServiceClaim, domain: Option<&str>) -> bool {
    match (&a.what, &b.what) {
        (Claim::Name { .. }, Claim::Name { .. }) => return a.service == b.service,
        (Claim::TcpPort { port: x }, Claim::TcpPort { port: y }) => return x == y,
        _ => {}
    }
    match (route_key(a, domain), route_key(b, domain)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The error for `new` (of job `new_job`) clashing with `old` (of job
/// `old_job`), at `new`'s place and naming `old`'s.
pub fn clash_error(
    new_job: &str,
    new: &ServiceClaim,
    old_job: &str,
    old: &ServiceClaim,
    domain: Option<&str>,
) -> SpecError {
    let owner = if new_job == old_job {
        format!("service `{}` of this job", old.service)
    } else {
        format!("service `{}` of job `{old_job}`", old.service)
    };
    let message = match (&new.what, route_key(new, domain)) {
        (Claim::Name { .. }, _) if matches!(old.what, Claim::Name { .. }) => format!(
            "service name `{}` is already taken by {owner} ({}); service names are unique in the cluster (they are host and DNS names), rename one",
            new.service, old.at
        ),
        (Claim::TcpPort { port }, _) => format!(
            "router port {port} is already claimed by {owner} ({}); pick another `port`",
            old.at
        ),
        (_, Some((host, path))) => {
            let host = host.map_or_else(|| "any host".to_owned(), |h| format!("host {h}"));
            format!(
                "{host}, path {path} is already routed to {owner} ({}); give one of them another host or path",
                old.at
            )
        }
        _ => format!("clashes with {owner} ({})", old.at),
    };
    SpecError {
        file: new.at.file.clone(),
        line: new.at.line,
        column: new.at.column,
        path: new.at.path.clone(),
        message,
    }
}

/// The claims of a spec known without its file (a version submitted by an
/// in-process caller, or stored before claims were recorded): each located
/// by its job and field path only.
pub fn spec_claims(spec: &JobSpec) -> Vec<ServiceClaim> {
    let mut out = Vec::new();
    for (g, group) in spec.groups.iter().enumerate() {
        for (i, s) in group.services.iter().enumerate() {
            let at = |field: &str| SpecLocation {
                file: format!("job `{}`", spec.name),
                line: 0,
                column: 0,
                path: format!("groups[{g}].services[{i}]{field}"),
            };
            let mut push = |what: Claim, field: &str| {
                out.push(ServiceClaim {
                    service: s.name.clone(),
                    what,
                    at: at(field),
                })
            };
            let auto_host = s.kind == ServiceKind::Http && s.port.is_some();
            push(Claim::Name { auto_host }, ".name");
            if let Some(r) = &s.route {
                let field = match s.kind {
                    ServiceKind::Tcp => ".route.port",
                    ServiceKind::Http => ".route",
                };
                for what in route_claims(s.kind, r) {
                    push(what, field);
                }
            }
        }
    }
    out
}

/// What a route claims: a TCP port, or every host (any, when none) with
/// every path prefix (`/`, when none).
pub fn route_claims(kind: ServiceKind, r: &RouteSpec) -> Vec<Claim> {
    match kind {
        ServiceKind::Tcp => r
            .port
            .map(|port| Claim::TcpPort { port })
            .into_iter()
            .collect(),
        ServiceKind::Http => {
            let paths = if r.paths.is_empty() {
                vec!["/".to_owned()]
            } else {
                r.paths.clone()
            };
            let hosts: Vec<Option<String>> = if r.hosts.is_empty() {
                vec![None]
            } else {
                r.hosts.iter().cloned().map(Some).collect()
            };
            hosts
                .iter()
                .flat_map(|h| {
                    paths.iter().map(move |p| Claim::Route {
                        host: h.clone(),
                        path: p.clone(),
                    })
                })
                .collect()
        }
    }
}
