//! The pod sandbox of an allocation: its CRI config (names, labels,
//! cgroup parent, log directory, port mappings, namespaces, security) and
//! the removal of the cgroups runc leaves behind.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;

use super::pod::{PodDns, PodOptions};
use crate::driver::AllocContext;

/// Kubernetes-style namespace of every corral sandbox.
pub const POD_NAMESPACE: &str = "corral";

pub const LABEL_ALLOC: &str = "corral.alloc";
pub const LABEL_JOB: &str = "corral.job";
pub const LABEL_GROUP: &str = "corral.group";
pub const LABEL_NODE: &str = "corral.node";
pub const LABEL_TASK: &str = "corral.task";
pub const ANNOTATION_INDEX: &str = "corral.index";
/// `host` or `bridge`: read back when the sandbox is found by its labels.
pub const ANNOTATION_NETWORK: &str = "corral.network";

/// The parent cgroup (below the hierarchy roots) of every sandbox.
pub const CGROUP_PARENT_ROOT: &str = "corral";

/// `<job>-<group>-<index>`: the sandbox name in the runtime.
pub fn sandbox_name(alloc: &AllocContext) -> String {
    format!("{}-{}-{}", alloc.job, alloc.group, alloc.index)
}

/// A valid host name (RFC 1123 label) from `<group>-<index>`.
pub fn hostname(group: &str, index: u32) -> String {
    let mut out = String::new();
    for c in group.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let suffix = format!("-{index}");
    let keep = 63 - suffix.len();
    out.truncate(keep);
    let mut out = out.trim_matches('-').to_string();
    if out.is_empty() {
        out.push_str("pod");
    }
    out.push_str(&suffix);
    out
}

/// `/corral/pod<alloc id>`; alloc ids become paths, so only plain names
/// are accepted.
pub fn cgroup_parent(alloc_id: &str) -> Result<String, String> {
    if alloc_id.is_empty()
        || alloc_id.len() > 128
        || !alloc_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || alloc_id.starts_with('.')
    {
        return Err(format!(
            "alloc id {alloc_id:?} cannot name a cgroup (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(format!("/{CGROUP_PARENT_ROOT}/pod{alloc_id}"))
}

/// Where the runtime writes the tasks' CRI log files: the allocation's
/// log directory, where the exec driver writes the same format (see
/// [`crate::logs`]).
pub fn log_directory(alloc_dir: &Path) -> PathBuf {
    crate::logs::log_dir(alloc_dir)
}

/// The CRI log file of a task: `<alloc_dir>/logs/<task>.log`.
pub fn log_file(alloc_dir: &Path, task: &str) -> PathBuf {
    crate::logs::log_file(alloc_dir, task)
}

pub fn labels(alloc: &AllocContext) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_ALLOC.to_string(), alloc.alloc_id.clone()),
        (LABEL_JOB.to_string(), alloc.job.clone()),
        (LABEL_GROUP.to_string(), alloc.group.clone()),
        (LABEL_NODE.to_string(), alloc.node_id.clone()),
    ])
}

/// One mapping per assigned host port, on every host address (so other
/// nodes reach it; portmap's `snat` makes 127.0.0.1 work too). None in
/// host network mode: the ports are the node's already.
pub fn port_mappings(alloc: &AllocContext, opts: &PodOptions) -> Vec<cri::PortMapping> {
    if opts.network_host {
        return vec![];
    }
    alloc
        .ports
        .iter()
        .map(|(key, host)| cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: i32::from(opts.container_port(key, *host)),
            host_port: i32::from(*host),
            host_ip: String::new(),
        })
        .collect()
}

/// The pod's `/etc/resolv.conf`, as the runtime writes it.
pub fn dns_config(dns: &PodDns) -> cri::DnsConfig {
    cri::DnsConfig {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    }
}

/// Network, pid and ipc namespaces: the pod's network (or the node's),
/// one pid namespace per container, a shared ipc namespace.
pub fn namespace_options(network_host: bool) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if network_host {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        },
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

pub fn runtime_default_seccomp() -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    }
}

pub fn sandbox_config(
    alloc: &AllocContext,
    opts: &PodOptions,
) -> Result<cri::PodSandboxConfig, String> {
    let cgroup_parent = cgroup_parent(&alloc.alloc_id)?;
    let mut annotations = HashMap::from([(ANNOTATION_INDEX.to_string(), alloc.index.to_string())]);
    annotations.insert(
        ANNOTATION_NETWORK.to_string(),
        if opts.network_host { "host" } else { "bridge" }.to_string(),
    );
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: sandbox_name(alloc),
            uid: alloc.alloc_id.clone(),
            namespace: POD_NAMESPACE.to_string(),
            attempt: 0,
        }),
        hostname: if opts.network_host {
            // The node's network namespace keeps the node's name.
            String::new()
        } else {
            hostname(&alloc.group, alloc.index)
        },
        log_directory: log_directory(&alloc.alloc_dir).display().to_string(),
        dns_config: opts.dns.as_ref().map(dns_config),
        port_mappings: port_mappings(alloc, opts),
        labels: labels(alloc),
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(opts.network_host)),
                privileged: opts.privileged,
                seccomp: Some(runtime_default_seccomp()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    })
}

/// Whether a sandbox found by its labels runs in the node's network.
pub fn is_network_host(sb: &cri::PodSandbox) -> bool {
    sb.annotations
        .get(ANNOTATION_NETWORK)
        .is_some_and(|v| v == "host")
}

/// Removes `<hierarchy>/corral/pod<alloc id>` (and what is below it) in
/// every cgroup hierarchy under `root` (v1 controllers, `unified`,
/// `systemd`, or the v2 root itself): runc removes the containers'
/// cgroups, never their parents. Missing directories are fine; returns the
/// directories that could not be removed, with the reason.
pub fn remove_pod_cgroups(root: &Path, alloc_id: &str) -> Vec<(PathBuf, io::Error)> {
    let Ok(parent) = cgroup_parent(alloc_id) else {
        return vec![];
    };
    let rel = parent.trim_start_matches('/');
    let mut bases = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.filter_map(Result::ok) {
            // cpu -> cpu,cpuacct and friends are symlinks to the same
            // hierarchy: visit each hierarchy once.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                bases.push(e.path());
            }
        }
    }
    let mut failed = vec![];
    for base in bases {
        let dir = base.join(rel);
        if let Err(e) = rmdir_tree(&dir) {
            failed.push((dir, e));
        }
    }
    failed
}

/// rmdir bottom-up (cgroup directories hold only kernel files); retries a
/// moment while the last processes leave.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd.filter_map(Result::ok) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if tries < 20
                    && e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn alloc() -> AllocContext {
        AllocContext {
            alloc_id: "a1b2".into(),
            job: "shop".into(),
            group: "Web_Front".into(),
            index: 2,
            node_id: "n1".into(),
            alloc_dir: PathBuf::from("/data/allocs/a1b2"),
            ports: BTreeMap::from([("app.http".to_string(), 20001)]),
            pod: Default::default(),
        }
    }

    #[test]
    fn hostnames_are_rfc1123_labels() {
        assert_eq!(hostname("Web_Front", 2), "web-front-2");
        assert_eq!(hostname("--x--", 0), "x-0");
        assert_eq!(hostname("___", 1), "pod-1");
        let long = "a".repeat(100);
        let h = hostname(&long, 12345);
        assert_eq!(h.len(), 63);
        assert!(h.ends_with("-12345"));
    }

    #[test]
    fn cgroup_parent_refuses_paths() {
        assert_eq!(cgroup_parent("a1b2").as_deref(), Ok("/corral/poda1b2"));
        assert!(cgroup_parent("../x").is_err());
        assert!(cgroup_parent("a/b").is_err());
        assert!(cgroup_parent("").is_err());
    }

    #[test]
    fn sandbox_config_has_names_labels_ports_and_security() {
        let opts = PodOptions {
            group_ports: BTreeMap::from([("app.http".to_string(), 8080)]),
            ..Default::default()
        };
        let c = sandbox_config(&alloc(), &opts).expect("config");
        let m = c.metadata.as_ref().expect("metadata");
        assert_eq!(m.name, "shop-Web_Front-2");
        assert_eq!(m.uid, "a1b2");
        assert_eq!(m.namespace, "corral");
        assert_eq!(c.hostname, "web-front-2");
        assert_eq!(c.log_directory, "/data/allocs/a1b2/logs");
        assert_eq!(c.labels.get(LABEL_NODE).map(String::as_str), Some("n1"));
        assert_eq!(
            c.annotations.get(ANNOTATION_INDEX).map(String::as_str),
            Some("2")
        );
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].container_port, 8080);
        assert_eq!(c.port_mappings[0].host_port, 20001);
        assert_eq!(c.port_mappings[0].host_ip, "");
        let linux = c.linux.as_ref().expect("linux");
        assert_eq!(linux.cgroup_parent, "/corral/poda1b2");
        let sc = linux.security_context.as_ref().expect("security");
        assert!(!sc.privileged);
        let ns = sc.namespace_options.as_ref().expect("namespaces");
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn sandbox_config_carries_the_node_dns() {
        let c = sandbox_config(&alloc(), &PodOptions::default()).expect("config");
        assert_eq!(c.dns_config, None, "no DNS given: the runtime's default");
        let opts = PodOptions::default().with_dns(Some(PodDns {
            servers: vec!["10.88.0.1".into()],
            searches: vec!["service.corral".into()],
            options: vec!["ndots:1".into()],
        }));
        let c = sandbox_config(&alloc(), &opts).expect("config");
        let d = c.dns_config.expect("dns config");
        assert_eq!(d.servers, ["10.88.0.1"]);
        assert_eq!(d.searches, ["service.corral"]);
        assert_eq!(d.options, ["ndots:1"]);
    }

    #[test]
    fn host_network_has_no_port_mappings() {
        let opts = PodOptions {
            network_host: true,
            ..Default::default()
        };
        let c = sandbox_config(&alloc(), &opts).expect("config");
        assert!(c.port_mappings.is_empty());
        assert_eq!(c.hostname, "");
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespaces");
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    }

    #[test]
    fn pod_cgroups_are_removed_bottom_up_in_every_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        for h in ["memory", "cpu,cpuacct", "unified"] {
            std::fs::create_dir_all(root.path().join(h).join("corral/poda1/c1")).expect("mkdir");
        }
        std::fs::create_dir_all(root.path().join("memory/corral/other")).expect("mkdir");
        let failed = remove_pod_cgroups(root.path(), "a1");
        assert!(failed.is_empty(), "{failed:?}");
        for h in ["memory", "cpu,cpuacct", "unified"] {
            assert!(!root.path().join(h).join("corral/poda1").exists());
        }
        assert!(root.path().join("memory/corral/other").exists());
        assert!(remove_pod_cgroups(root.path(), "a1").is_empty());
    }
}
