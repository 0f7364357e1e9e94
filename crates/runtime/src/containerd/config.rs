//! The files a private containerd runs from: its `config.toml` and the CNI
//! network list, both under the instance's root dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CNI plugins as Debian installs them (not /opt/cni/bin).
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Plugins a private containerd does not need: skipping them spares
/// their probing at boot. (containerd 1.6's tasks service, which the CRI
/// needs, refuses to start without `io.containerd.runtime.v1.linux`.)
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// One private containerd: everything it writes lives under `root_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    pub root_dir: PathBuf,
    /// Linux bridge of its CNI network (at most 15 characters, unique per
    /// instance on the machine).
    pub bridge_name: String,
    /// IPv4 subnet of the pods, e.g. `10.88.7.0/24` (unique per instance).
    pub subnet: String,
    /// The sandbox (pause) image tag, e.g. `corral.local/pause:1`.
    pub sandbox_image: String,
    /// `None`: found with [`super::find_containerd_binary`].
    pub containerd_bin: Option<PathBuf>,
    pub cni_bin_dir: PathBuf,
    /// How long the CRI may take to answer after the spawn.
    pub start_timeout: Duration,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
}

impl ContainerdConfig {
    pub fn new(
        root_dir: impl Into<PathBuf>,
        bridge_name: &str,
        subnet: &str,
        sandbox_image: &str,
    ) -> ContainerdConfig {
        ContainerdConfig {
            root_dir: root_dir.into(),
            bridge_name: bridge_name.to_string(),
            subnet: subnet.to_string(),
            sandbox_image: sandbox_image.to_string(),
            containerd_bin: None,
            cni_bin_dir: PathBuf::from(DEFAULT_CNI_BIN_DIR),
            start_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(10),
        }
    }

    pub fn paths(&self) -> Paths {
        Paths::new(&self.root_dir)
    }

    /// Checks what would otherwise fail later with a worse message.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bridge_name;
        if b.is_empty()
            || b.len() > 15
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "bridge name {b:?} must be 1 to 15 letters, digits, '-', '_' or '.'"
            ));
        }
        let Some((ip, len)) = self.subnet.split_once('/') else {
            return Err(format!(
                "subnet {:?} is not in CIDR form (a.b.c.d/n)",
                self.subnet
            ));
        };
        let ok_ip = ip.parse::<std::net::Ipv4Addr>().is_ok();
        let ok_len = len.parse::<u8>().is_ok_and(|l| (8..=30).contains(&l));
        if !ok_ip || !ok_len {
            return Err(format!(
                "subnet {:?} must be an IPv4 CIDR with a prefix from /8 to /30",
                self.subnet
            ));
        }
        if self.sandbox_image.trim().is_empty() {
            return Err("the sandbox image is empty".into());
        }
        // A Unix socket path holds at most 107 bytes.
        let sock = self.paths().socket;
        if sock.as_os_str().len() > 100 {
            return Err(format!(
                "root dir {} is too long for a Unix socket path under it",
                self.root_dir.display()
            ));
        }
        Ok(())
    }
}

/// Where a private containerd keeps what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config: PathBuf,
    pub log: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    /// grpc address: containerd's API and the CRI.
    pub socket: PathBuf,
    pub ttrpc_socket: PathBuf,
    pub opt: PathBuf,
    /// runc's state (`--root`).
    pub runc_root: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// host-local IPAM leases.
    pub cni_ipam_dir: PathBuf,
    /// `hosts.toml` per registry.
    pub certs_dir: PathBuf,
}

impl Paths {
    pub fn new(root_dir: &Path) -> Paths {
        Paths {
            config: root_dir.join("config.toml"),
            log: root_dir.join("containerd.log"),
            root: root_dir.join("root"),
            state: root_dir.join("state"),
            socket: root_dir.join("containerd.sock"),
            ttrpc_socket: root_dir.join("containerd.sock.ttrpc"),
            opt: root_dir.join("opt"),
            runc_root: root_dir.join("state").join("runc"),
            cni_conf_dir: root_dir.join("cni").join("net.d"),
            cni_ipam_dir: root_dir.join("cni").join("ipam"),
            certs_dir: root_dir.join("certs.d"),
        }
    }

    /// Directories to create before containerd starts.
    pub fn dirs(&self) -> [&Path; 7] {
        [
            &self.root,
            &self.state,
            &self.opt,
            &self.runc_root,
            &self.cni_conf_dir,
            &self.cni_ipam_dir,
            &self.certs_dir,
        ]
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// containerd's `config.toml` (version 2).
pub fn render_config(cfg: &ContainerdConfig) -> String {
    let p = cfg.paths();
    let disabled = DISABLED_PLUGINS
        .iter()
        .map(|s| toml_str(s))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Written by corral for a private containerd; do not edit.
version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {sandbox}
    # CRI gives sandboxes oom_score_adj -998; without CAP_SYS_RESOURCE
    # runc cannot set it ("can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = {runc_root}
          SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = {certs}
"#,
        root = path_str(&p.root),
        state = path_str(&p.state),
        socket = path_str(&p.socket),
        ttrpc = path_str(&p.ttrpc_socket),
        opt = path_str(&p.opt),
        sandbox = toml_str(&cfg.sandbox_image),
        runc_root = path_str(&p.runc_root),
        cni_bin = path_str(&cfg.cni_bin_dir),
        cni_conf = path_str(&p.cni_conf_dir),
        certs = path_str(&p.certs_dir),
    )
}

/// File name of the network list in the CNI conf dir.
pub const CNI_CONFLIST: &str = "10-corral.conflist";

/// The CNI network list: a bridge (gateway, masquerade, hairpin) with
/// host-local addresses, and portmap for host ports (`snat` so that
/// 127.0.0.1 reaches them too).
pub fn render_cni(cfg: &ContainerdConfig) -> serde_json::Value {
    let p = cfg.paths();
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("corral-{}", cfg.bridge_name),
        "plugins": [
            {
                "type": "bridge",
                "bridge": cfg.bridge_name,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cfg.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": p.cni_ipam_dir.display().to_string(),
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true
            }
        ]
    })
}

/// Where Debian's containerd reads its CNI networks.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// The gateway of the pod network in CNI conf dir `dir`: the first
/// network file (in name order, as containerd takes it) whose bridge
/// plugin is the pods' gateway (`isGateway`): its IPAM `gateway`, else its
/// subnet's first address. `None` when there is no such network. This is
/// where pods reach the node (the node DNS listens there).
pub fn cni_gateway(dir: &Path) -> Option<std::net::IpAddr> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
        })
        .collect();
    files.sort();
    let first = files
        .into_iter()
        .find_map(|f| serde_json::from_slice::<serde_json::Value>(&std::fs::read(f).ok()?).ok())?;
    cni_network_gateway(&first)
}

/// The gateway of one CNI network (a `.conflist`, or a single-plugin
/// `.conf`).
pub fn cni_network_gateway(net: &serde_json::Value) -> Option<std::net::IpAddr> {
    let plugins = match net["plugins"].as_array() {
        Some(p) => p.iter().collect::<Vec<_>>(),
        None => vec![net],
    };
    let bridge = plugins
        .into_iter()
        .find(|p| p["type"] == "bridge" && p["isGateway"] == true)?;
    let ipam = &bridge["ipam"];
    let range = &ipam["ranges"][0][0];
    for g in [&range["gateway"], &ipam["gateway"]] {
        if let Some(ip) = g.as_str().and_then(|s| s.parse().ok()) {
            return Some(ip);
        }
    }
    let subnet = range["subnet"].as_str().or(ipam["subnet"].as_str())?;
    subnet_gateway(subnet)
}

/// The first address of an IPv4 CIDR (`10.88.7.0/24` -> `10.88.7.1`): the
/// gateway the CNI bridge plugin gives itself when none is set.
pub fn subnet_gateway(cidr: &str) -> Option<std::net::IpAddr> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let net = u32::from(ip) & mask;
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(net + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_gateway_is_read_from_the_cni_network() {
        assert_eq!(
            subnet_gateway("10.88.7.0/24").map(|i| i.to_string()),
            Some("10.88.7.1".into())
        );
        assert_eq!(
            subnet_gateway("10.196.3.0/23").map(|i| i.to_string()),
            Some("10.196.2.1".into())
        );
        assert_eq!(subnet_gateway("10.0.0.0/31"), None);
        assert_eq!(subnet_gateway("nonsense"), None);
        // Ours.
        let g = cni_network_gateway(&render_cni(&cfg())).map(|i| i.to_string());
        assert_eq!(g.as_deref(), Some("10.88.7.1"));
        // An explicit gateway wins; a bridge that is not the gateway is no
        // answer; a single-plugin .conf with the old `subnet` key works.
        let explicit = serde_json::json!({"plugins": [{"type": "bridge", "isGateway": true,
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/16", "gateway": "10.1.0.254"}]]}}]});
        assert_eq!(
            cni_network_gateway(&explicit)
                .map(|i| i.to_string())
                .as_deref(),
            Some("10.1.0.254")
        );
        let no_gw = serde_json::json!({"plugins": [{"type": "bridge",
            "ipam": {"ranges": [[{"subnet": "10.1.0.0/16"}]]}}]});
        assert_eq!(cni_network_gateway(&no_gw), None);
        let conf = serde_json::json!({"type": "bridge", "isGateway": true,
            "ipam": {"subnet": "10.22.0.0/16"}});
        assert_eq!(
            cni_network_gateway(&conf).map(|i| i.to_string()).as_deref(),
            Some("10.22.0.1")
        );
        // From a directory: the first file in name order.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("20-other.conflist"), explicit.to_string()).expect("write");
        std::fs::write(
            dir.path().join(CNI_CONFLIST),
            render_cni(&cfg()).to_string(),
        )
        .expect("write");
        assert_eq!(
            cni_gateway(dir.path()).map(|i| i.to_string()).as_deref(),
            Some("10.88.7.1")
        );
        assert_eq!(cni_gateway(&dir.path().join("missing")), None);
    }

    fn cfg() -> ContainerdConfig {
        ContainerdConfig::new("/tmp/c1", "corral0", "10.88.7.0/24", "corral.local/pause:1")
    }

    #[test]
    fn config_toml_has_what_this_machine_needs() {
        let t = render_config(&cfg());
        for want in [
            "version = 2",
            "root = \"/tmp/c1/root\"",
            "state = \"/tmp/c1/state\"",
            "address = \"/tmp/c1/containerd.sock\"",
            "address = \"/tmp/c1/containerd.sock.ttrpc\"",
            "[plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/tmp/c1/opt\"",
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            "Root = \"/tmp/c1/state/runc\"",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/tmp/c1/cni/net.d\"",
            "config_path = \"/tmp/c1/certs.d\"",
            "sandbox_image = \"corral.local/pause:1\"",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }

    #[test]
    fn cni_list_has_bridge_and_portmap() {
        let v = render_cni(&cfg());
        assert_eq!(v["plugins"][0]["bridge"], "corral0");
        assert_eq!(v["plugins"][0]["isGateway"], true);
        assert_eq!(v["plugins"][0]["ipMasq"], true);
        assert_eq!(v["plugins"][0]["hairpinMode"], true);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.88.7.0/24"
        );
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/tmp/c1/cni/ipam");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(v["plugins"][1]["snat"], true);
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.bridge_name = "a-bridge-name-too-long".into();
        assert!(c.validate().unwrap_err().contains("bridge name"));
        let mut c = cfg();
        c.subnet = "10.88.7.0".into();
        assert!(c.validate().unwrap_err().contains("CIDR"));
        let mut c = cfg();
        c.root_dir = PathBuf::from(format!("/{}", "x".repeat(100)));
        assert!(c.validate().unwrap_err().contains("too long"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
