//! `corral service ls` and `corral service status NAME`: the catalog.

use anyhow::Result;
use corral_client::Client;
use corral_types::catalog::{RouteRule, ServiceEntry};

use crate::output::{Out, short, table};

pub async fn list(c: &Client, out: Out) -> Result<()> {
    let cat = c.services(None).await?;
    let services = &cat.services;
    if out.data(services, || {
        services.iter().map(|s| s.name.clone()).collect()
    })? {
        return Ok(());
    }
    if services.is_empty() {
        println!(
            "no services; give a group `service: {{name: web, port: http}}` and `corral run` it"
        );
        return Ok(());
    }
    let rows = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.as_str().to_owned(),
                format!("{}/{}", s.healthy().count(), s.endpoints.len()),
                format!("{}.{}", s.job, s.group),
                routes(s),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["name", "type", "healthy", "job.group", "routes"], rows)
    );
    Ok(())
}

pub async fn status(c: &Client, name: &str, out: Out) -> Result<()> {
    let cat = c.service(name, None).await?;
    let Some(s) = cat.services.first() else {
        anyhow::bail!("service {name} not found; list them with `corral service ls`");
    };
    if out.data(s, || {
        s.endpoints.iter().map(|e| e.alloc_id.clone()).collect()
    })? {
        return Ok(());
    }
    println!("name            {}", s.name);
    println!("type            {}", s.kind.as_str());
    println!("job             {} (group {})", s.job, s.group);
    println!("routes          {}", routes(s));
    println!(
        "shutdown_delay  {}",
        corral_types::units::Millis(s.shutdown_delay_ms)
    );
    println!(
        "endpoints       {} healthy of {}",
        s.healthy().count(),
        s.endpoints.len()
    );
    if s.endpoints.is_empty() {
        return Ok(());
    }
    println!();
    let rows = s
        .endpoints
        .iter()
        .map(|e| {
            vec![
                if out.wide() {
                    e.alloc_id.clone()
                } else {
                    short(&e.alloc_id).to_owned()
                },
                e.alloc_name.clone(),
                e.node_name.clone(),
                format!("{}:{}", e.address, e.port),
                e.status.as_str().to_owned(),
                e.reason.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["alloc", "name", "node", "address", "health", "reason"],
            rows
        )
    );
    Ok(())
}

/// `web.localhost/, shop.example.com/api (strip)`, or `tcp :5432`.
fn routes(s: &ServiceEntry) -> String {
    if let Some(p) = s.tcp_port {
        return format!("tcp :{p}");
    }
    let one = |r: &RouteRule| {
        let host = r.host.as_deref().unwrap_or("*");
        let strip = if r.strip_prefix { " (strip)" } else { "" };
        format!("{host}{}{strip}", r.path_prefix)
    };
    let all: Vec<String> = s.routes.iter().map(one).collect();
    if all.is_empty() {
        "-".to_owned()
    } else {
        all.join(", ")
    }
}
