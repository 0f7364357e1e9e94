//! `corral deploy status|list|promote|fail|pause|resume JOB`: a job's
//! rollouts (one deployment per job version that needed new allocations).

use anyhow::{Result, anyhow};
use corral_client::{Client, ClientError};
use corral_types::api::DeploymentAction;
use corral_types::{Deployment, DeploymentStatus};

use crate::cmd::run::now_ms;
use crate::output::{Out, ago, short, table};
use crate::rollout;

/// A 404 from a deployment route, said the way a user can act on: is the
/// job unknown, or has it never had a deployment?
pub async fn no_deployment(c: &Client, job: &str, e: ClientError) -> anyhow::Error {
    if !e.is_not_found() {
        return e.into();
    }
    match c.job(job, None).await {
        Err(je) if je.is_not_found() => anyhow!(
            "no deployment for job {job}: there is no job {job}; run it with `corral run {job}.yaml` (`corral status` lists the jobs)"
        ),
        Err(je) => je.into(),
        Ok(_) => anyhow!(
            "no deployment for job {job}: none of its versions has been rolled out yet; each new version `corral run` submits gets one, unless every group has `max_parallel: 0`"
        ),
    }
}

pub async fn status(c: &Client, job: &str, out: Out) -> Result<()> {
    let d = match c.deployment(job, None).await {
        Ok(d) => d,
        Err(e) => return Err(no_deployment(c, job, e).await),
    };
    if out.data(&d, || vec![d.id.clone()])? {
        return Ok(());
    }
    let now = now_ms();
    println!("deployment   {}", d.id);
    match d.reverts_to {
        Some(v) => println!(
            "job          {} version {} (rollback to version {v})",
            d.job, d.job_version
        ),
        None => println!("job          {} version {}", d.job, d.job_version),
    }
    println!("status       {}", d.status);
    if !d.description.is_empty() {
        println!("description  {}", d.description);
    }
    println!("created      {}", ago(d.created_at));
    println!();
    println!(
        "{}",
        table(&rollout::STATUS_HEADER, rollout::status_rows(&d, now))
    );
    if let Some(hint) = next_step(&d) {
        println!();
        println!("{hint}");
    }
    Ok(())
}

/// What the user may want to do about a deployment in this state.
fn next_step(d: &Deployment) -> Option<String> {
    let job = &d.job;
    if rollout::awaiting_promotion(d) {
        return Some(format!(
            "canaries are healthy: promote with `corral deploy promote {job}`, or roll back with `corral deploy fail {job}`"
        ));
    }
    match d.status {
        DeploymentStatus::Paused => {
            Some(format!("paused: resume with `corral deploy resume {job}`"))
        }
        DeploymentStatus::Failed => Some(format!(
            "see `corral status {job}` for the allocations and `corral job history {job}` for the versions"
        )),
        _ => None,
    }
}

pub async fn list(c: &Client, job: &str, out: Out) -> Result<()> {
    let all = match c.deployments(job).await {
        Ok(all) => all,
        Err(e) => return Err(no_deployment(c, job, e).await),
    };
    if all.is_empty() {
        // An unknown job is an error, not an empty list.
        if let Err(e) = c.job(job, None).await {
            return Err(no_deployment(c, job, e).await);
        }
        if out.data(&all, Vec::new)? {
            return Ok(());
        }
        println!(
            "job {job} has no deployments yet; a deployment starts when `corral run` submits a spec that changes a group's tasks"
        );
        return Ok(());
    }
    if out.data(&all, || all.iter().map(|d| d.id.clone()).collect())? {
        return Ok(());
    }
    let rows = all
        .iter()
        .map(|d| {
            vec![
                short(&d.id).to_string(),
                match d.reverts_to {
                    Some(v) => format!("{} (rollback to {v})", d.job_version),
                    None => d.job_version.to_string(),
                },
                d.status.to_string(),
                rollout::healthy_summary(d),
                ago(d.created_at),
                d.description.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "id",
                "version",
                "status",
                "healthy",
                "created",
                "description"
            ],
            rows
        )
    );
    Ok(())
}

/// `corral deploy promote JOB`: promote, then follow the rest of the
/// rollout as `corral run` does (unless `detach`).
pub async fn promote(c: &Client, job: &str, detach: bool, out: Out) -> Result<()> {
    let d = act(c, job, DeploymentAction::Promote).await?;
    if detach || d.status.is_terminal() {
        return report(job, DeploymentAction::Promote, &d, out);
    }
    let id = d.id.clone();
    if !out.is_data() {
        report(job, DeploymentAction::Promote, &d, out)?;
    }
    let r = crate::cmd::run::follow_rollout(c, job, d, None).await;
    if out.is_data() {
        let end = c.deployments(job).await?.into_iter().find(|x| x.id == id);
        if let Some(end) = end {
            out.data(&end, || vec![end.id.clone()])?;
        }
    }
    r
}

pub async fn action(c: &Client, job: &str, a: DeploymentAction, out: Out) -> Result<()> {
    let d = act(c, job, a).await?;
    report(job, a, &d, out)
}

async fn act(c: &Client, job: &str, a: DeploymentAction) -> Result<Deployment> {
    let d = match c.deployment_action(job, a).await {
        Ok(d) => d,
        // A known job: the server says why (no active deployment, nothing
        // to promote).
        Err(e) if e.is_not_found() && c.job(job, None).await.is_ok() => {
            return Err(anyhow!(
                "cannot {} the deployment of job {job}: {e}\n`corral deploy status {job}` shows where it stands",
                a.as_str()
            ));
        }
        Err(e) => return Err(no_deployment(c, job, e).await),
    };
    Ok(d)
}

fn report(job: &str, a: DeploymentAction, d: &Deployment, out: Out) -> Result<()> {
    if out.data(d, || vec![d.id.clone()])? {
        return Ok(());
    }
    let done = match a {
        DeploymentAction::Promote => "promoted",
        DeploymentAction::Fail => "marked failed",
        DeploymentAction::Pause => "paused",
        DeploymentAction::Resume => "resumed",
    };
    let mut line = format!(
        "job {job}: deployment {} of version {} {done}; status {}",
        short(&d.id),
        d.job_version,
        d.status
    );
    if !d.description.is_empty() {
        line.push_str(&format!(": {}", d.description));
    }
    println!("{line}");
    if a == DeploymentAction::Fail {
        println!(
            "see `corral deploy list {job}` for a rollback (auto_revert) and `corral job history {job}` for the versions"
        );
    }
    Ok(())
}

/// `corral deploy health ALLOC --healthy|--unhealthy`.
pub async fn health(c: &Client, alloc: &str, healthy: bool, out: Out) -> Result<()> {
    // The server resolves id prefixes on reads.
    let id = c.alloc(alloc).await?.id;
    let a = c
        .set_alloc_health(&id, healthy)
        .await
        .map_err(|e| anyhow!("cannot set the health of allocation {alloc}: {e}"))?;
    if out.data(&a, || vec![a.id.clone()])? {
        return Ok(());
    }
    println!(
        "allocation {} marked {}; `corral deploy status {}` shows the rollout",
        a.name,
        if healthy { "healthy" } else { "unhealthy" },
        a.job
    );
    Ok(())
}
