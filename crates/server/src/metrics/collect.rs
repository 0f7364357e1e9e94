//! The server's `/metrics`: what [`super::Metrics`] counted, plus gauges
//! computed from state at scrape time (one store snapshot, so they are
//! consistent with each other), plus the text of any extra
//! [`super::Source`] (the agent, in `corral dev`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use corral_store::State;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::EvalOutcome;
use crate::core::Core;
use crate::usage::NodeUsage;

/// The Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of the server (and its extra sources) in the Prometheus
/// text format.
pub async fn encode(core: &Arc<Core>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector { core: core.clone() }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    for source in core.metrics.sources() {
        out.push_str(&source().await);
    }
    Ok(out)
}

struct ServerCollector {
    core: Arc<Core>,
}

impl fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerCollector")
    }
}

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let core = &self.core;
        let m = &core.metrics;
        let state = core.store.snapshot();

        nodes(&mut enc, &state, &core.usage.node_totals())?;
        volumes(&mut enc, &state, crate::core::now_ms())?;

        let outcomes: Vec<_> = EvalOutcome::ALL
            .iter()
            .map(|o| ([("outcome", o.as_str())], m.evals_by_outcome(*o)))
            .collect();
        counters(
            &mut enc,
            "corral_scheduler_evaluations",
            "Evaluations the scheduler workers finished, by outcome.",
            &outcomes,
        )?;
        counter(
            &mut enc,
            "corral_scheduler_placements",
            "Allocations placed by committed plans.",
            m.placements.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "corral_scheduler_plans_refused",
            "Plans the applier refused in part because the state moved under them.",
            m.plans_refused.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "corral_scheduler_blocked_evaluations",
            "Evaluations waiting for capacity.",
            core.broker.blocked_count() as f64,
        )?;
        gauge(
            &mut enc,
            "corral_scheduler_pending_evaluations",
            "Evaluations waiting for a scheduler worker.",
            core.broker.pending_count() as f64,
        )?;
        m.eval_latency.encode(enc.encode_descriptor(
            "corral_scheduler_placement_latency_seconds",
            "From an evaluation entering the queue to its plan committed.",
            None,
            MetricType::Histogram,
        )?)?;
        m.eval_processing.encode(enc.encode_descriptor(
            "corral_scheduler_evaluation_duration_seconds",
            "From a worker taking an evaluation to its plan committed.",
            None,
            MetricType::Histogram,
        )?)?;
        m.plan_apply.encode(enc.encode_descriptor(
            "corral_plan_apply_latency_seconds",
            "One plan's re-check against the latest state and its commit.",
            None,
            MetricType::Histogram,
        )?)?;

        let deployments: Vec<_> = deployments_by_status(&state)
            .into_iter()
            .map(|(s, n)| ([("status", s)], n as f64))
            .collect();
        gauges(
            &mut enc,
            "corral_deployments",
            "Deployments kept in the state, by status.",
            &deployments,
        )?;

        m.api_latency.encode(enc.encode_descriptor(
            "corral_api_request_duration_seconds",
            "API requests' time to the response head, by route template.",
            None,
            MetricType::Histogram,
        )?)?;
        m.api_requests.encode(enc.encode_descriptor(
            "corral_api_requests",
            "API requests, by route template and status code.",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// Where deployments plug into the metrics: every stored deployment,
/// counted by status (the known statuses always appear, at 0 when none).
pub(super) fn deployments_by_status(state: &State) -> BTreeMap<&'static str, u64> {
    let mut out: BTreeMap<&'static str, u64> =
        ["running", "paused", "successful", "failed", "cancelled"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    for d in state.deployments() {
        *out.entry(d.status.as_str()).or_default() += 1;
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    node_id: String,
}

fn nodes(
    enc: &mut DescriptorEncoder,
    state: &State,
    usage: &std::collections::HashMap<String, NodeUsage>,
) -> fmt::Result {
    let mut by_status: BTreeMap<&'static str, u64> = ["ready", "down", "draining", "ineligible"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let mut capacity_cpu = Vec::new();
    let mut capacity_mem = Vec::new();
    let mut alloc_cpu = Vec::new();
    let mut alloc_mem = Vec::new();
    let mut used_cpu = Vec::new();
    let mut used_mem = Vec::new();
    for n in state.nodes_iter() {
        *by_status.entry(n.display_status()).or_default() += 1;
        let labels = NodeLabels {
            node: n.name.clone(),
            node_id: n.id.clone(),
        };
        let (mut cpu, mut mem) = (0u64, 0u64);
        for a in state.node_allocs(&n.id) {
            if a.is_live() {
                cpu += a.resources.cpu.0;
                mem += a.resources.memory.0;
            }
        }
        let used = usage.get(&n.id).copied().unwrap_or_default();
        capacity_cpu.push((labels.clone(), n.resources.cpu.0 as f64 / 1e3));
        capacity_mem.push((labels.clone(), n.resources.memory.0 as f64));
        alloc_cpu.push((labels.clone(), cpu as f64 / 1e3));
        alloc_mem.push((labels.clone(), mem as f64));
        used_cpu.push((labels.clone(), used.cpu_cores));
        used_mem.push((labels, used.memory_bytes as f64));
    }
    let by_status: Vec<_> = by_status
        .into_iter()
        .map(|(s, n)| ([("status", s)], n as f64))
        .collect();
    gauges(enc, "corral_nodes", "Nodes, by status.", &by_status)?;
    gauges(
        enc,
        "corral_node_cpu_capacity_cores",
        "CPU the node offers to allocations, in cores.",
        &capacity_cpu,
    )?;
    gauges(
        enc,
        "corral_node_memory_capacity_bytes",
        "Memory the node offers to allocations.",
        &capacity_mem,
    )?;
    gauges(
        enc,
        "corral_node_cpu_allocated_cores",
        "CPU reserved by the node's live allocations, in cores.",
        &alloc_cpu,
    )?;
    gauges(
        enc,
        "corral_node_memory_allocated_bytes",
        "Memory reserved by the node's live allocations.",
        &alloc_mem,
    )?;
    gauges(
        enc,
        "corral_node_cpu_used_cores",
        "CPU the node's running tasks use, in cores (from the agents' 10 s usage pushes).",
        &used_cpu,
    )?;
    gauges(
        enc,
        "corral_node_memory_used_bytes",
        "Memory the node's running tasks use (from the agents' 10 s usage pushes).",
        &used_mem,
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
    job: String,
    /// The name of the node with its live copy (its id when the node is
    /// gone).
    node: String,
}

/// One series per stored volume; `used` only once its agent measured it,
/// the backup age only once it has a backup.
fn volumes(enc: &mut DescriptorEncoder, state: &State, now: u64) -> fmt::Result {
    let mut size = Vec::new();
    let mut used = Vec::new();
    let mut snapshots = Vec::new();
    let mut backups = Vec::new();
    let mut backup_age = Vec::new();
    let mut generation = Vec::new();
    for v in state.volumes() {
        let labels = VolumeLabels {
            volume: v.id.clone(),
            job: v.job.clone(),
            node: state
                .node_by_id(&v.node_id)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| v.node_id.clone()),
        };
        size.push((labels.clone(), v.size.0 as f64));
        if let Some(u) = v.used {
            used.push((labels.clone(), u.0 as f64));
        }
        snapshots.push((labels.clone(), v.snapshots.len() as f64));
        backups.push((labels.clone(), v.backups.len() as f64));
        if let Some(newest) = v.backups.iter().map(|b| b.taken_at).max() {
            backup_age.push((labels.clone(), now.saturating_sub(newest) as f64 / 1e3));
        }
        generation.push((labels, v.generation as f64));
    }
    gauges(
        enc,
        "corral_volume_size_bytes",
        "The volume's size (its limit).",
        &size,
    )?;
    gauges(
        enc,
        "corral_volume_used_bytes",
        "What the volume's agent last measured in use.",
        &used,
    )?;
    gauges(
        enc,
        "corral_volume_snapshots",
        "Snapshots kept on the volume's node.",
        &snapshots,
    )?;
    gauges(
        enc,
        "corral_volume_backups",
        "Backups kept in the volume's backup target.",
        &backups,
    )?;
    gauges(
        enc,
        "corral_volume_last_backup_age_seconds",
        "Time since the state in the volume's newest backup was taken.",
        &backup_age,
    )?;
    gauges(
        enc,
        "corral_volume_generation",
        "The volume's generation: one more at every move to another node.",
        &generation,
    )
}

pub(crate) fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, f64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// `name` without `_total`: the encoder adds it.
fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}
