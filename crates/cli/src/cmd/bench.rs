//! `corral bench`: the benchmarks behind BENCHMARKS.md.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_bench::scheduler::{Scenario, StoreKind};

use crate::output::print_json;

pub async fn scheduler(s: Scenario, with_baseline: bool, json: bool) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark numbers need `cargo build --release`");
    }
    let sqlite = corral_bench::scheduler::run(Scenario {
        store: StoreKind::Sqlite,
        ..s.clone()
    })
    .await?;
    let baseline = if with_baseline {
        Some(
            corral_bench::scheduler::run(Scenario {
                store: StoreKind::Memory,
                ..s
            })
            .await?,
        )
    } else {
        None
    };
    if json {
        return print_json(&serde_json::json!({ "sqlite": sqlite, "memory": baseline }));
    }
    print!("{}", sqlite.render());
    if let Some(b) = baseline {
        println!(
            "  baseline, same scenario on an in-memory store: {:.0} placements/s (SQLite at synchronous=FULL reaches {:.2}x of it)",
            b.placements_per_second,
            sqlite.placements_per_second / b.placements_per_second.max(1e-9)
        );
    }
    Ok(())
}

pub async fn heartbeats(nodes: usize, window: Duration, json: bool) -> Result<()> {
    let bin = std::env::current_exe().context("cannot find the corral binary")?;
    let r = corral_bench::heartbeat::run(bin, nodes, window).await?;
    if json {
        return print_json(&r);
    }
    print!("{}", r.render());
    Ok(())
}
