//! Service names and routes are shared by every job: a submission that
//! claims what another running job claims is refused, naming both places.

use corral_store::State;
use corral_types::spec::{
    Claim, LocatedJob, ServiceClaim, SpecError, SpecErrors, clash_error, clashes, spec_claims,
};
use corral_types::{DEFAULT_PORT_RANGE, Job};

use crate::ServerError;

/// What a stored version claims: as recorded at submit, else derived from
/// its spec (located by job and field path only).
pub fn of_job(job: &Job) -> Vec<ServiceClaim> {
    if job.claims.is_empty() {
        spec_claims(&job.spec)
    } else {
        job.claims.clone()
    }
}

/// Refuses `jobs` when one claims what another job (running, not in this
/// submission) or an earlier job of the submission claims.
pub fn check(state: &State, jobs: &[LocatedJob], domain: &str) -> Result<(), ServerError> {
    let submitted = |name: &str| jobs.iter().any(|j| j.spec.name == name);
    let mut taken: Vec<(String, ServiceClaim)> = state
        .jobs()
        .filter(|j| !j.stopped && !submitted(&j.name))
        .flat_map(|j| of_job(j).into_iter().map(|c| (j.name.clone(), c)))
        .collect();
    let mut errors = Vec::new();
    for job in jobs {
        let name = &job.spec.name;
        for c in &job.claims {
            if let Some(e) = in_port_range(state, c) {
                errors.push(e);
                continue;
            }
            if let Some((other, o)) = taken
                .iter()
                .find(|(other, o)| other != name && clashes(c, o, Some(domain)))
            {
                errors.push(clash_error(name, c, other, o, Some(domain)));
            }
        }
        taken.extend(job.claims.iter().map(|c| (name.clone(), c.clone())));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServerError::Spec(SpecErrors { errors }))
    }
}

/// A TCP router port inside a node's host-port range: a task's published
/// port there would take the router's traffic on that node.
fn in_port_range(state: &State, c: &ServiceClaim) -> Option<SpecError> {
    let Claim::TcpPort { port } = c.what else {
        return None;
    };
    let ranges = state
        .nodes_iter()
        .map(|n| (n.port_range, format!("node {}", n.name)))
        .chain(std::iter::once((
            DEFAULT_PORT_RANGE,
            "agents by default".to_owned(),
        )));
    for ((lo, hi), whose) in ranges {
        if (lo..=hi).contains(&port) {
            return Some(SpecError {
                file: c.at.file.clone(),
                line: c.at.line,
                column: c.at.column,
                path: c.at.path.clone(),
                message: format!(
                    "router port {port} is inside the host ports {lo}-{hi} that {whose} give tasks; a task's published port would take its traffic there: pick a port outside it"
                ),
            });
        }
    }
    None
}
