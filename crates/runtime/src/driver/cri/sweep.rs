//! The driver's use of [`cni`]: after removing a sandbox, remove what an
//! interrupted teardown of its network left; at agent start, remove the
//! leftovers of sandboxes the runtime no longer has.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::SystemTime;

use super::CriDriver;
use super::client::CriError;
use super::cni::{self, CniNetwork, Iptables, MIN_LEASE_AGE, SystemIptables};

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// nat rules and chains.
    pub nat: usize,
    /// host-local leases.
    pub leases: usize,
}

impl CriDriver {
    /// The runtime's own CNI networks (from its verbose status).
    async fn cni_networks(&self) -> Result<Vec<CniNetwork>, CriError> {
        let st = self.client.runtime_status(true).await?;
        Ok(cni::networks_from_info(&st.info))
    }

    /// Redoes the network teardown of a sandbox just removed: its nat
    /// rules, chains and leases go, whatever StopPodSandbox did. Best
    /// effort: failures are logged.
    pub(super) async fn clear_network_of(&self, sandbox_id: &str) {
        let nets = match self.cni_networks().await {
            Ok(n) if !n.is_empty() => n,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox_id, error = %e, "cannot read the runtime's CNI networks");
                return;
            }
        };
        let ids = BTreeSet::from([sandbox_id.to_string()]);
        let r = tokio::task::spawn_blocking(move || {
            let table = cni::parse_table(&SystemIptables.list()?);
            let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
            let plan = cni::plan_for_ids(&table, &names, &ids);
            let leases = leases_of(&nets, |id| ids.contains(id));
            Ok::<_, std::io::Error>(remove(&SystemIptables, &plan, &leases))
        })
        .await;
        match r {
            Ok(Ok(s)) if s != Swept::default() => {
                tracing::info!(sandbox = %sandbox_id, nat = s.nat, leases = s.leases,
                    "removed what an interrupted network teardown of the sandbox left")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(sandbox = %sandbox_id, error = %e, "cannot check the sandbox's nat rules")
            }
            Err(e) => tracing::warn!(sandbox = %sandbox_id, error = %e, "the nat check panicked"),
        }
    }

    /// At agent start: removes the nat rules, chains and leases that the
    /// runtime's CNI networks hold for sandboxes it no longer has (a
    /// sandbox whose lease is younger than [`MIN_LEASE_AGE`] may be in
    /// creation: left alone).
    pub async fn sweep_cni_leftovers(&self) -> Result<Swept, CriError> {
        let nets = self.cni_networks().await?;
        if nets.is_empty() {
            return Ok(Swept::default());
        }
        // Read before the sandboxes are listed: a sandbox created in
        // between is then known, or absent from what was read.
        let read_nets = nets.clone();
        let read = tokio::task::spawn_blocking(move || {
            let table = SystemIptables.list().map(|t| cni::parse_table(&t));
            let leases: Vec<_> = read_nets
                .iter()
                .filter_map(|n| n.lease_dir.clone())
                .map(|d| (cni::leases(&d), d))
                .collect();
            (table, leases)
        });
        let (table, leases) = read.await.unwrap_or_else(|e| {
            (
                Err(std::io::Error::other(e.to_string())),
                Default::default(),
            )
        });
        let known: HashSet<String> = self
            .client
            .list_pod_sandbox(Default::default())
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let now = SystemTime::now();
        let young: HashSet<String> = leases
            .iter()
            .flat_map(|(l, _)| l.values())
            .filter(|(_, changed)| {
                now.duration_since(*changed)
                    .map_or(true, |age| age < MIN_LEASE_AGE)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let gone = move |id: &str| !known.contains(id) && !young.contains(id);
        let table = match table {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the nat table; leaving its CNI rules alone");
                Default::default()
            }
        };
        let swept = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
            let plan = cni::plan(&table, &names, &gone);
            let leases: Vec<(PathBuf, Vec<PathBuf>)> = leases
                .into_iter()
                .map(|(l, dir)| {
                    let files = l
                        .into_iter()
                        .filter(|(_, (id, _))| gone(id))
                        .map(|(p, _)| p)
                        .collect();
                    (dir, files)
                })
                .collect();
            remove(&SystemIptables, &plan, &leases)
        })
        .await
        .unwrap_or_default();
        Ok(swept)
    }
}

/// Lease files of the networks held by the sandbox ids `gone` names, by
/// lease directory.
fn leases_of(nets: &[CniNetwork], gone: impl Fn(&str) -> bool) -> Vec<(PathBuf, Vec<PathBuf>)> {
    nets.iter()
        .filter_map(|n| n.lease_dir.clone())
        .map(|dir| {
            let files = cni::leases(&dir)
                .into_iter()
                .filter(|(_, (id, _))| gone(id))
                .map(|(p, _)| p)
                .collect();
            (dir, files)
        })
        .collect()
}

/// Applies a nat cleanup and removes lease files; errors are logged.
fn remove(ipt: &dyn Iptables, plan: &cni::Cleanup, leases: &[(PathBuf, Vec<PathBuf>)]) -> Swept {
    let (nat, errors) = cni::apply(ipt, plan);
    for e in errors {
        tracing::warn!(error = %e, "cannot remove a CNI nat rule or chain");
    }
    let mut removed = 0;
    for (dir, files) in leases {
        match cni::remove_leases(dir, files) {
            Ok(n) => removed += n,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove CNI leases")
            }
        }
    }
    Swept {
        nat,
        leases: removed,
    }
}
