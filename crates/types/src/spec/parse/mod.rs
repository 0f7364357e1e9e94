//! Parsing and validation of job specs (YAML or JSON) with locations.
//!
//! JSON is parsed by the same YAML 1.2 parser (serde-saphyr), so both give
//! line:column. The source becomes a tree of nodes with positions
//! ([`tree`]), which is walked by hand into the validated types ([`job`],
//! [`policy`]) collecting every error rather than stopping at the first.
//!
//! Adding a field: list it in its block's `*_FIELDS` (what [`SPEC_BLOCKS`]
//! shows), read it, give it a row in docs/SPEC.md with its type, default
//! and an example (`tests/docs.rs` fails until it has one), and add its
//! mistakes to the corpus of `tests/bad/`.

mod ctx;
mod job;
mod logs;
mod policy;
mod route;
mod service;
mod tree;
mod volume;

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;

use super::{JobSpec, ServiceClaim, SpecErrors, clash_error, clashes};
use ctx::Ctx;
pub use ctx::name_problem;
pub use job::MAX_COUNT;
pub use route::host_problem;
use tree::Pos;

/// One mapping of a job spec and the fields the parser takes in it (any
/// other key is refused with a suggestion). docs/SPEC.md documents each,
/// and its test (`crates/types/tests/docs.rs`) holds it to these lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecBlock {
    /// `job`, `group`, `task`, or the field holding the mapping
    /// (`restart`, `update`, `check`, ...; `constraint` for one item of
    /// `constraints`).
    pub name: &'static str,
    pub fields: &'static [&'static str],
}

/// Every mapping of a job spec, outermost first. `job` is the top level,
/// which in the seed form also takes [`SEED_GROUP_FIELDS`] and
/// [`SEED_TASK_FIELDS`].
pub const SPEC_BLOCKS: &[SpecBlock] = &[
    SpecBlock {
        name: "job",
        fields: job::TOP_FIELDS,
    },
    SpecBlock {
        name: "group",
        fields: job::GROUP_FIELDS,
    },
    SpecBlock {
        name: "task",
        fields: job::TASK_FIELDS,
    },
    SpecBlock {
        name: "restart",
        fields: policy::RESTART_FIELDS,
    },
    SpecBlock {
        name: "reschedule",
        fields: policy::RESCHEDULE_FIELDS,
    },
    SpecBlock {
        name: "update",
        fields: policy::UPDATE_FIELDS,
    },
    SpecBlock {
        name: "constraint",
        fields: policy::CONSTRAINT_FIELDS,
    },
    SpecBlock {
        name: "spread",
        fields: policy::SPREAD_FIELDS,
    },
    SpecBlock {
        name: "resources",
        fields: policy::RESOURCES_FIELDS,
    },
    SpecBlock {
        name: "security",
        fields: policy::SECURITY_FIELDS,
    },
    SpecBlock {
        name: "logs",
        fields: logs::LOG_FIELDS,
    },
    SpecBlock {
        name: "service",
        fields: service::SERVICE_FIELDS,
    },
    SpecBlock {
        name: "route",
        fields: route::ROUTE_FIELDS,
    },
    SpecBlock {
        name: "check",
        fields: service::CHECK_FIELDS,
    },
    SpecBlock {
        name: "check_restart",
        fields: service::CHECK_RESTART_FIELDS,
    },
    SpecBlock {
        name: "volume",
        fields: volume::VOLUME_FIELDS,
    },
    SpecBlock {
        name: "snapshots",
        fields: volume::SNAPSHOT_FIELDS,
    },
    SpecBlock {
        name: "backup",
        fields: volume::BACKUP_FIELDS,
    },
    SpecBlock {
        name: "keep",
        fields: volume::BACKUP_KEEP_FIELDS,
    },
    SpecBlock {
        name: "hooks",
        fields: volume::HOOK_FIELDS,
    },
];

/// Group fields the seed form takes at the top level (`restart` there is
/// the group's).
pub const SEED_GROUP_FIELDS: &[&str] = job::GROUP_LEVEL;

/// Task fields the seed form takes at the top level.
pub const SEED_TASK_FIELDS: &[&str] = job::TASK_LEVEL;

/// Fields of the design that are refused as "not supported yet".
pub const NOT_YET_FIELDS: &[&str] = ctx::NOT_YET;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Yaml,
    Json,
}

impl SourceFormat {
    /// JSON when the file name ends in `.json` or the text starts with `{`.
    pub fn detect(file: &str, text: &str) -> SourceFormat {
        if file.ends_with(".json") || text.trim_start().starts_with('{') {
            SourceFormat::Json
        } else {
            SourceFormat::Yaml
        }
    }

    fn name(self) -> &'static str {
        match self {
            SourceFormat::Yaml => "YAML",
            SourceFormat::Json => "JSON",
        }
    }
}

/// The name errors give a spec read from standard input (`corral run -`);
/// it has no file to name the job after.
pub const STDIN_NAME: &str = "<stdin>";

/// The default job name: the file name without directory and extension
/// (none for standard input: the job must name itself).
fn file_stem(file: &str) -> &str {
    if file == STDIN_NAME {
        return "";
    }
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    }
}

/// Parse every job in `text`. `file` names the source in errors and gives
/// the default job name (file name without directory and extension).
pub fn parse_jobs(
    text: &str,
    file: &str,
    format: SourceFormat,
) -> Result<Vec<JobSpec>, SpecErrors> {
    parse_jobs_located(text, file, format).map(|jobs| jobs.into_iter().map(|j| j.spec).collect())
}

/// A parsed job with where its services' names and routes were written,
/// so a clash found later (against other jobs) names the place.
#[derive(Debug, Clone)]
pub struct LocatedJob {
    pub spec: JobSpec,
    pub claims: Vec<ServiceClaim>,
}

impl From<JobSpec> for LocatedJob {
    /// A spec from an in-process caller: its claims located by field path.
    fn from(spec: JobSpec) -> LocatedJob {
        let claims = super::spec_claims(&spec);
        LocatedJob { spec, claims }
    }
}

/// [`parse_jobs`], keeping each job's service claims.
pub fn parse_jobs_located(
    text: &str,
    file: &str,
    format: SourceFormat,
) -> Result<Vec<LocatedJob>, SpecErrors> {
    let mut ctx = Ctx::new(file);
    let docs = match tree::load(text) {
        Ok(docs) => docs,
        Err(e) => {
            ctx.error(
                e.pos,
                "",
                format!("invalid {}: {}; fix the syntax", format.name(), e.message),
            );
            return Err(SpecErrors { errors: ctx.errors });
        }
    };
    if docs.is_empty() {
        ctx.error(
            Pos { line: 1, column: 1 },
            "",
            "the file has no job; write one, e.g. `image: org/app:1.0`",
        );
        return Err(SpecErrors { errors: ctx.errors });
    }
    let stem = file_stem(file);
    let mut jobs: Vec<(job::Named<JobSpec>, Vec<ServiceClaim>)> = Vec::with_capacity(docs.len());
    for doc in &docs {
        if let tree::Value::Seq(_) = doc.value {
            let instead = match format {
                SourceFormat::Yaml => "put each job in its own document, separated by `---`",
                SourceFormat::Json => "write one job per JSON file",
            };
            ctx.error(
                doc.pos,
                "",
                format!(
                    "a job is a mapping of fields like `image: org/app:1.0`, found a list; {instead}"
                ),
            );
            continue;
        }
        let j = job::job(&mut ctx, doc, stem);
        let job_claims = std::mem::take(&mut ctx.claims);
        if let Some(n) = &j.name
            && jobs.iter().any(|(o, _)| o.name.as_ref() == Some(n))
        {
            ctx.error(
                j.name_pos,
                &j.name_path,
                format!("duplicate job name `{n}`; give each document its own `name:`"),
            );
        }
        jobs.push((j, job_claims));
    }
    ctx.errors.extend(clash_within(&jobs));
    if ctx.errors.is_empty() {
        Ok(jobs
            .into_iter()
            .map(|(j, claims)| LocatedJob {
                spec: j.spec,
                claims,
            })
            .collect())
    } else {
        // Source order; errors at one place keep the order they were found.
        ctx.errors.sort_by_key(|e| (e.line, e.column));
        Err(SpecErrors { errors: ctx.errors })
    }
}

/// Every service claim in a file that clashes with an earlier one (of the
/// same or an earlier job), as an error at the later place.
fn clash_within(jobs: &[(job::Named<JobSpec>, Vec<ServiceClaim>)]) -> Vec<super::SpecError> {
    let all: Vec<(&str, &ServiceClaim)> = jobs
        .iter()
        .flat_map(|(j, cs)| cs.iter().map(move |c| (j.spec.name.as_str(), c)))
        .collect();
    let mut out = Vec::new();
    for (i, (job, c)) in all.iter().enumerate() {
        if let Some((other_job, o)) = all[..i].iter().find(|(_, o)| clashes(c, o, None)) {
            out.push(clash_error(job, c, other_job, o, None));
        }
    }
    out
}
