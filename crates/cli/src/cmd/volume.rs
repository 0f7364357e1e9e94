//! `corral volume ls|status|snapshot|snapshots|restore|delete`.

use anyhow::Result;
use corral_client::Client;
use corral_types::Volume;

use crate::args::VolumeCmd;
use crate::output::{Out, ago, short, table};

pub async fn run(cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Ls {
            quarantined: true,
            out,
            conn,
            ..
        } => list_quarantined(&conn.client()?, out.out()).await,
        VolumeCmd::Ls { job, out, conn, .. } => {
            list(&conn.client()?, job.as_deref(), out.out()).await
        }
        VolumeCmd::Status { id, out, conn } => status(&conn.client()?, &id, out.out()).await,
        VolumeCmd::Snapshot { id, out, conn } => {
            let c = conn.client()?;
            let s = c.volume_snapshot(&id).await?;
            if !out.out().data(&s, || {
                vec![s["name"].as_str().unwrap_or_default().to_owned()]
            })? {
                println!(
                    "snapshot {} of volume {id} taken in {} ms",
                    s["name"].as_str().unwrap_or("?"),
                    s["took_ms"].as_u64().unwrap_or(0)
                );
            }
            Ok(())
        }
        VolumeCmd::Backup { id, out, conn } => {
            let c = conn.client()?;
            eprintln!("backing up volume {id} (restic, from a read-only snapshot)...");
            let b = c.volume_backup(&id).await?;
            if !out.out().data(&b, || vec![b.id.clone()])? {
                println!(
                    "backup {} of volume {id} in target {}: {} added in {} ms",
                    short(&b.id),
                    b.target,
                    corral_types::units::Bytes(b.bytes_added),
                    b.took_ms
                );
            }
            Ok(())
        }
        VolumeCmd::Snapshots { id, out, conn } => snapshots(&conn.client()?, &id, out.out()).await,
        VolumeCmd::Restore {
            id,
            snapshot,
            as_volume: Some(new_id),
            out,
            conn,
        } => {
            let c = conn.client()?;
            eprintln!("restoring {snapshot} of volume {id} as a new volume {new_id}...");
            let r = c.volume_restore(&id, &snapshot, Some(&new_id)).await?;
            if !out.out().data(&r, || vec![new_id.clone()])? {
                let (job, name) = new_id.split_once('.').unwrap_or((&new_id, "data"));
                let name = name.split('.').next().unwrap_or(name);
                println!(
                    "volume {new_id} made from {snapshot} of volume {id} on node {}; a job `{job}` with volume `{name}` uses it",
                    r["node"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        VolumeCmd::Restore {
            id,
            snapshot,
            as_volume: None,
            out,
            conn,
        } => {
            let c = conn.client()?;
            let r = c.volume_restore(&id, &snapshot, None).await?;
            if !out.out().data(&r, || vec![id.clone()])? {
                println!("volume {id} restored to {snapshot}; run its job again to use it");
            }
            Ok(())
        }
        VolumeCmd::Delete {
            id,
            yes,
            force,
            out,
            conn,
        } => {
            anyhow::ensure!(
                yes,
                "deleting volume {id} removes its data for good; add --yes to confirm"
            );
            let c = conn.client()?;
            let r = c.volume_delete(&id, force).await?;
            if !out.out().data(&r, || vec![id.clone()])? {
                println!("volume {id} deleted");
            }
            Ok(())
        }
    }
}

fn used(v: &Volume) -> String {
    v.used.map_or_else(|| "-".to_owned(), |u| u.to_string())
}

async fn list(c: &Client, job: Option<&str>, out: Out) -> Result<()> {
    let vols = c.volumes(job).await?;
    if out.data(&vols, || vols.iter().map(|v| v.id.clone()).collect())? {
        return Ok(());
    }
    if vols.is_empty() {
        println!("no volumes; give a group `volume: {{size: 1G}}` and `corral run` it");
        return Ok(());
    }
    let nodes = c.nodes().await.unwrap_or_default();
    let node_name = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| short(id).to_owned(), |n| n.name.clone())
    };
    let rows = vols
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                node_name(&v.node_id),
                v.size.to_string(),
                used(v),
                v.provider.clone(),
                v.generation.to_string(),
                v.snapshots.len().to_string(),
                v.alloc_id.as_deref().map_or("-", short).to_owned(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "id",
                "node",
                "size",
                "used",
                "provider",
                "generation",
                "snapshots",
                "alloc"
            ],
            rows
        )
    );
    Ok(())
}

async fn list_quarantined(c: &Client, out: Out) -> Result<()> {
    let copies = c.quarantined_volumes().await?;
    if out.data(&copies, || copies.iter().map(|q| q.name.clone()).collect())? {
        return Ok(());
    }
    if copies.is_empty() {
        println!("no quarantined copies on the nodes that answered");
        return Ok(());
    }
    let rows = copies
        .iter()
        .map(|q| vec![q.node.clone(), q.name.clone()])
        .collect();
    println!(
        "{}",
        table(&["node", "copy (under <volumes_dir>/.quarantine)"], rows)
    );
    Ok(())
}

async fn status(c: &Client, id: &str, out: Out) -> Result<()> {
    let v = c.volume(id).await?;
    if out.data(&v, || vec![v.id.clone()])? {
        return Ok(());
    }
    let node = c
        .node(&v.node_id)
        .await
        .map(|n| format!("{} ({})", n.name, n.status))
        .unwrap_or_else(|_| v.node_id.clone());
    println!("id            {}", v.id);
    if v.group.is_empty() {
        println!("job           {} (no allocation has taken it yet)", v.job);
    } else {
        println!("job           {} (group {})", v.job, v.group);
    }
    println!("node          {node}");
    println!("provider      {}{}", v.provider, limit_note(&v.provider));
    println!("size          {}", v.size);
    println!("used          {}", used(&v));
    println!("generation    {}", v.generation);
    if let Some(a) = &v.alloc_id {
        let state = c
            .alloc(a)
            .await
            .map(|x| format!("{} ({})", x.name, x.state.as_str()))
            .unwrap_or_else(|_| "gone".into());
        println!("allocation    {} {state}", short(a));
    }
    if let Some(from) = &v.moved_from {
        let downtime = v.last_move_downtime_ms.map_or_else(String::new, |d| {
            format!(", the allocation waited {d} ms for the last changes")
        });
        println!("last move     from node {}{downtime}", short(from));
    }
    println!("created       {}", ago(v.created_at));
    println!("snapshots     {}", v.snapshots.len());
    if let Some(s) = v.snapshots.last() {
        println!("  newest      {} ({})", s.name, ago(s.created_at));
    }
    println!("backups       {}", v.backups.len());
    if let Some(b) = v.backups.last() {
        println!(
            "  newest      {} in {} ({}, data as of {})",
            short(&b.id),
            b.target,
            ago(b.taken_at),
            corral_types::civil::utc(b.taken_at)
        );
    }
    if let Some(e) = &v.backup_error {
        println!("  last error  {e}");
    }
    if let Some(r) = &v.restored_from {
        println!(
            "restored      from backup {} of {} after its node was lost: writes after that time were lost",
            short(&r.id),
            corral_types::civil::utc(r.taken_at)
        );
    }
    if let Some(o) = &v.origin {
        let what = match (&o.snapshot, &o.backup) {
            (Some(s), _) => format!("snapshot {s}"),
            (None, Some(b)) => format!(
                "backup {} of {} (data as of {})",
                short(&b.id),
                b.target,
                corral_types::civil::utc(b.taken_at)
            ),
            (None, None) => "?".to_owned(),
        };
        let again = format!(
            "`corral volume restore {} {} --as {}`",
            o.volume,
            o.snapshot
                .clone()
                .or_else(|| o.backup.as_ref().map(|b| short(&b.id).to_owned()))
                .unwrap_or_default(),
            v.id
        );
        let state = match (&o.error, o.done) {
            (_, true) => String::new(),
            (Some(e), false) => format!("; the restore failed ({e}); run {again} again"),
            (None, false) => {
                format!("; still being restored (if that was interrupted, run {again} again)")
            }
        };
        println!("origin        {what} of volume {}{state}", o.volume);
    }
    Ok(())
}

/// The size is a limit only for the image providers.
fn limit_note(provider: &str) -> &'static str {
    if provider == "host" {
        " (a directory: the size is not enforced)"
    } else {
        ""
    }
}

async fn snapshots(c: &Client, id: &str, out: Out) -> Result<()> {
    let v = c.volume(id).await?;
    let snaps = &v.snapshots;
    if out.data(snaps, || snaps.iter().map(|s| s.name.clone()).collect())? {
        return Ok(());
    }
    if snaps.is_empty() {
        println!(
            "volume {id} has no snapshots; take one with `corral volume snapshot {id}` or give it `snapshots: {{every: 1h, keep: 24}}`"
        );
        return Ok(());
    }
    let rows = snaps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                ago(s.created_at),
                if s.scheduled { "schedule" } else { "by hand" }.to_owned(),
                format!("{} ms", s.took_ms),
            ]
        })
        .collect();
    println!("{}", table(&["name", "taken", "by", "took"], rows));
    Ok(())
}
