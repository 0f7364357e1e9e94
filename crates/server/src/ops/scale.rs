//! `corral job scale JOB [GROUP] N`: the current spec with one group's
//! `count` changed, stored as the next version (a count-only change
//! updates running allocations in place: nothing restarts).

use std::sync::Arc;

use corral_store::Write;
use corral_types::api::{SubmitResponse, SubmittedJob};
use corral_types::spec::SourceFormat;
use corral_types::{EvalTrigger, JobSpec};

use crate::ServerError;
use crate::core::{Core, now_ms};
use crate::error::Resource;

pub async fn scale(
    core: &Arc<Core>,
    job: &str,
    group: Option<String>,
    count: u32,
) -> Result<SubmitResponse, ServerError> {
    let now = now_ms();
    let name = job.to_owned();
    let (index, (submitted, eval)) = core
        .write(move |state, _| {
            let latest = state
                .job(&name)
                .ok_or_else(|| ServerError::not_found(Resource::Job, &name))?;
            if latest.stopped {
                return Err(ServerError::Conflict(format!(
                    "job {name} is stopped; start it with `corral run` (or `corral job revert {name} {}`) before scaling it",
                    latest.version
                )));
            }
            let spec = scaled(&latest.spec, group.as_deref(), count)?;
            if spec == latest.spec {
                let submitted = SubmittedJob {
                    name: name.clone(),
                    version: latest.version,
                    changed: false,
                    eval_id: String::new(),
                };
                return Ok((Vec::new(), (submitted, None)));
            }
            let job = super::jobs::new_version(spec, latest.version + 1, now);
            let mut job = job;
            job.claims = latest.claims.clone();
            let eval = Core::new_eval(&name, EvalTrigger::JobRegister, now);
            let submitted = SubmittedJob {
                name: name.clone(),
                version: job.version,
                changed: true,
                eval_id: eval.id.clone(),
            };
            Ok((
                vec![Write::Job(job), Write::Eval(eval.clone())],
                (submitted, Some(eval)),
            ))
        })
        .await?;
    core.enqueue(eval);
    Ok(SubmitResponse {
        index,
        jobs: vec![submitted],
    })
}

/// `spec` with `group`'s count set (the only group when not named),
/// checked as a job file would be (a count above 1 with a volume that is
/// not `per_alloc` is refused, as at submit).
fn scaled(spec: &JobSpec, group: Option<&str>, count: u32) -> Result<JobSpec, ServerError> {
    let names: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
    let target = match group {
        Some(g) if names.contains(&g) => g.to_owned(),
        Some(g) => {
            return Err(ServerError::BadRequest(format!(
                "job {} has no group `{g}`; its groups are {}",
                spec.name,
                names.join(", ")
            )));
        }
        None => match names.as_slice() {
            [one] => (*one).to_owned(),
            _ => {
                return Err(ServerError::BadRequest(format!(
                    "job {} has several groups ({}); name one: `corral job scale {} GROUP {count}`",
                    spec.name,
                    names.join(", "),
                    spec.name
                )));
            }
        },
    };
    let mut out = spec.clone();
    for g in out.groups.iter_mut().filter(|g| g.name == target) {
        g.count = count;
    }
    let text = serde_json::to_string(&corral_types::spec::render::document(&out))
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let file = format!("{}.json", spec.name);
    // The rendered file is not the user's: say the field, not its place.
    let mut parsed =
        corral_types::spec::parse_jobs(&text, &file, SourceFormat::Json).map_err(|e| {
            let why: Vec<String> = e
                .errors
                .iter()
                .map(|x| format!("{}: {}", x.path, x.message))
                .collect();
            ServerError::BadRequest(format!(
                "job {}: count {count} for group {target}: {}",
                spec.name,
                why.join("; ")
            ))
        })?;
    parsed
        .pop()
        .ok_or_else(|| ServerError::Internal("the scaled spec parsed to no job".into()))
}
