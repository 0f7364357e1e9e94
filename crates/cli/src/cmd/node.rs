use anyhow::Result;
use corral_client::Client;

use crate::output::{Out, ago, short, table};

pub async fn list(c: &Client, out: Out) -> Result<()> {
    let nodes = c.nodes().await?;
    if out.data(&nodes, || nodes.iter().map(|n| n.id.clone()).collect())? {
        return Ok(());
    }
    if nodes.is_empty() {
        println!("no nodes; start an agent with `corral agent --server URL` (or use `corral dev`)");
        return Ok(());
    }
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                if out.wide() {
                    n.id.clone()
                } else {
                    short(&n.id).to_string()
                },
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
                "heartbeat"
            ],
            rows
        )
    );
    Ok(())
}

pub async fn status(c: &Client, id: &str, out: Out) -> Result<()> {
    let n = c.node(id).await?;
    if out.data(&n, || vec![n.id.clone()])? {
        return Ok(());
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

/// A node as users name it (id, id prefix or name), resolved by the
/// server's read route; the write routes take the full id only.
async fn resolve(c: &Client, id: &str) -> Result<String> {
    Ok(c.node(id).await?.id)
}

pub async fn eligibility(c: &Client, id: &str, eligible: bool, out: Out) -> Result<()> {
    let n = c.set_eligibility(&resolve(c, id).await?, eligible).await?;
    if out.data(&n, || vec![n.id.clone()])? {
        return Ok(());
    }
    println!("node {} is now {}", n.name, n.status);
    Ok(())
}

pub async fn drain(c: &Client, id: &str, deadline: &str, disable: bool, out: Out) -> Result<()> {
    let n = c
        .drain(&resolve(c, id).await?, !disable, Some(deadline))
        .await?;
    if out.data(&n, || vec![n.id.clone()])? {
        return Ok(());
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
