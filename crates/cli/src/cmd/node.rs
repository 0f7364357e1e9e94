use anyhow::Result;
use corral_client::Client;

use crate::output::{ago, print_json, short, table};

pub async fn list(c: &Client, json: bool) -> Result<()> {
    let nodes = c.nodes().await?;
    if json {
        return print_json(&nodes);
    }
    if nodes.is_empty() {
        println!("no nodes; start an agent with `corral agent --server URL` (or use `corral dev`)");
        return Ok(());
    }
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                short(&n.id).to_string(),
                n.name.clone(),
                n.status.clone(),
                n.address.clone(),
                n.drivers.join(","),
                n.allocations.to_string(),
                format!("{}/{}", n.allocated.cpu, n.resources.cpu),
                format!("{}/{}", n.allocated.memory, n.resources.memory),
                ago(n.last_heartbeat),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "id",
                "name",
                "status",
                "address",
                "drivers",
                "allocs",
                "cpu",
                "memory",
                "registered"
            ],
            rows
        )
    );
    Ok(())
}

pub async fn status(c: &Client, id: &str, json: bool) -> Result<()> {
    let n = c.node(id).await?;
    if json {
        return print_json(&n);
    }
    println!("id          {}", n.id);
    println!("name        {}", n.name);
    println!("status      {}", n.status);
    println!("address     {}", n.address);
    println!("eligible    {}", n.eligible);
    println!("drivers     {}", n.drivers.join(", "));
    println!(
        "cpu         {} of {} allocated",
        n.allocated.cpu, n.resources.cpu
    );
    println!(
        "memory      {} of {} allocated",
        n.allocated.memory, n.resources.memory
    );
    println!("allocations {}", n.allocations);
    println!("registered  {}", ago(n.registered_at));
    for (k, v) in &n.attributes {
        println!("attr.{k} = {v}");
    }
    for (k, v) in &n.labels {
        println!("labels.{k} = {v}");
    }
    Ok(())
}

pub async fn eligibility(c: &Client, id: &str, eligible: bool, json: bool) -> Result<()> {
    let n = c.set_eligibility(id, eligible).await?;
    if json {
        return print_json(&n);
    }
    println!("node {} is now {}", n.name, n.status);
    Ok(())
}

pub async fn drain(c: &Client, id: &str, deadline: &str, disable: bool, json: bool) -> Result<()> {
    let n = c.drain(id, !disable, Some(deadline)).await?;
    if json {
        return print_json(&n);
    }
    if disable {
        println!("node {} is no longer draining and is {}", n.name, n.status);
    } else {
        println!("{}", draining_message(&n, deadline));
    }
    Ok(())
}

/// The hint names the node by id: a name may be shared by several nodes
/// (or look like another node's id prefix), and `node status` refuses it.
fn draining_message(n: &corral_types::api::NodeView, deadline: &str) -> String {
    format!(
        "node {} is draining: its {} allocation(s) move off it (replacement first, update.max_parallel per group at a time); what is left stops after {deadline}. Watch with `corral node status {}`",
        n.name, n.allocations, n.id
    )
}

#[cfg(test)]
mod tests {
    use corral_types::Resources;
    use corral_types::api::NodeView;

    #[test]
    fn the_drain_hint_names_the_node_by_id() {
        let n = NodeView {
            id: "8c1f2e4a-0000-4000-8000-000000000002".into(),
            name: "n2".into(),
            address: String::new(),
            status: "draining".into(),
            eligible: false,
            draining: true,
            resources: Resources::default(),
            allocated: Resources::ZERO,
            allocations: 3,
            attributes: Default::default(),
            labels: Default::default(),
            drivers: vec![],
            last_heartbeat: 0,
            registered_at: 0,
        };
        let m = super::draining_message(&n, "1h");
        assert!(m.starts_with("node n2 is draining"), "{m}");
        assert!(
            m.ends_with("`corral node status 8c1f2e4a-0000-4000-8000-000000000002`"),
            "{m}"
        );
    }
}
