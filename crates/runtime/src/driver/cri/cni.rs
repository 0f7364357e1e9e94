//! What an interrupted CNI teardown leaves behind, and its removal.
//!
//! containerd tears a pod's network down inside StopPodSandbox. When that
//! call is cancelled (the agent was killed, or dropped the call), the
//! retry finds the pod's interface gone and the bridge plugin then skips
//! its masquerade cleanup: the `CNI-<hash>` nat chain and the POSTROUTING
//! rule that jumps to it stay (reproduced: a StopPodSandbox cut after
//! 200 ms, then done again, leaves both). portmap's `CNI-DN-<hash>` DNAT
//! chain and its jump in `CNI-HOSTPORT-DNAT` can stay the same way, and
//! then forward a host port to whatever pod gets the address next;
//! host-local leases (`<dataDir>/<network>/<ip>`, first line the sandbox
//! id) can stay too.
//!
//! Every such rule names its owner in a comment, `name: "<network>" id:
//! "<sandbox id>"` (`dnat name: ...` for portmap), and both chains are
//! named after a hash of the same pair. The driver removes them for a
//! sandbox it has just removed, and at agent start for every sandbox of
//! its runtime's own CNI networks (names from the runtime's status) that
//! the runtime no longer has. A sandbox being created by someone else at
//! that moment has a lease younger than [`MIN_LEASE_AGE`] (host-local
//! writes it before any rule): its id is left alone.
//!
//! Parsing and planning are pure; `iptables` runs behind [`Iptables`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha512};

/// A lease younger than this may belong to a sandbox being created.
pub const MIN_LEASE_AGE: Duration = Duration::from_secs(60);

/// Where host-local keeps leases when its config does not say.
const HOST_LOCAL_DEFAULT_DIR: &str = "/var/lib/cni/networks";

/// A CNI network the runtime uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNetwork {
    pub name: String,
    /// host-local's lease directory of this network, when it uses
    /// host-local.
    pub lease_dir: Option<PathBuf>,
}

/// containerd's `cniconfig` status info (the parts read here).
#[derive(Deserialize)]
struct CniConfigInfo {
    #[serde(rename = "Networks", default)]
    networks: Vec<NetworkInfo>,
}

#[derive(Deserialize)]
struct NetworkInfo {
    #[serde(rename = "Config")]
    config: NetworkConfigInfo,
}

#[derive(Deserialize)]
struct NetworkConfigInfo {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Plugins", default)]
    plugins: Vec<PluginInfo>,
}

#[derive(Deserialize)]
struct PluginInfo {
    /// The plugin's own JSON config.
    #[serde(rename = "Source", default)]
    source: String,
}

/// The CNI networks in the runtime's verbose status info (containerd:
/// `cniconfig`); the loopback network has nothing to leave behind.
pub fn networks_from_info(info: &HashMap<String, String>) -> Vec<CniNetwork> {
    let Some(raw) = info.get("cniconfig") else {
        return vec![];
    };
    let Ok(parsed) = serde_json::from_str::<CniConfigInfo>(raw) else {
        return vec![];
    };
    parsed
        .networks
        .into_iter()
        .map(|n| n.config)
        .filter(|c| c.name != "cni-loopback")
        .map(|c| {
            let lease_dir = c
                .plugins
                .iter()
                .find_map(|p| host_local_dir(&p.source))
                .map(|d| d.join(&c.name));
            CniNetwork {
                name: c.name,
                lease_dir,
            }
        })
        .collect()
}

/// host-local's `dataDir` in a plugin config using it as its IPAM.
fn host_local_dir(plugin_source: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(plugin_source).ok()?;
    let ipam = v.get("ipam")?;
    (ipam.get("type")?.as_str()? == "host-local").then(|| {
        PathBuf::from(
            ipam.get("dataDir")
                .and_then(|d| d.as_str())
                .unwrap_or(HOST_LOCAL_DEFAULT_DIR),
        )
    })
}

/// The nat table as `iptables -t nat -S` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    /// User-defined chains (`-N`).
    pub chains: BTreeSet<String>,
    pub rules: Vec<NatRule>,
}

/// One `-A <chain> <args>` line, its arguments unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    pub chain: String,
    pub args: Vec<String>,
}

impl NatRule {
    /// The argument after `flag`.
    fn arg(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    pub fn comment(&self) -> Option<&str> {
        self.arg("--comment")
    }

    pub fn jump(&self) -> Option<&str> {
        self.arg("-j")
    }
}

pub fn parse_table(text: &str) -> NatTable {
    let mut t = NatTable::default();
    for words in text.lines().filter_map(split_words) {
        match words.as_slice() {
            [n, chain] if n == "-N" => {
                t.chains.insert(chain.clone());
            }
            [a, chain, args @ ..] if a == "-A" => t.rules.push(NatRule {
                chain: chain.clone(),
                args: args.to_vec(),
            }),
            _ => {}
        }
    }
    t
}

/// Splits a line as iptables quotes it: words apart by spaces, `"..."`
/// around a word with spaces, `\"` and `\\` inside. `None` for an
/// unterminated quote.
pub fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = vec![];
    let mut cur = String::new();
    let (mut in_word, mut quoted) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => cur.push(chars.next()?),
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                }
                in_word = false;
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// The (network, sandbox id) a CNI rule comment names: the bridge plugin
/// writes `name: "N" id: "X"`, portmap `dnat name: "N" id: "X"`.
pub fn owner(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("dnat ").unwrap_or(comment);
    let rest = rest.strip_prefix("name: \"")?;
    let (name, rest) = rest.split_once("\" id: \"")?;
    let id = rest.strip_suffix('"')?;
    Some((name, id))
}

/// The chains the bridge plugin (masquerade) and portmap (DNAT) name
/// after a network and sandbox: `CNI-` and `CNI-DN-` plus a sha512 of
/// both, cut to 28 characters (the CNI plugins' `FormatChainName`).
pub fn chain_names(network: &str, id: &str) -> [String; 2] {
    let hash: String = Sha512::digest(format!("{network}{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cut = |prefix: &str| {
        let mut s = format!("{prefix}{hash}");
        s.truncate(28);
        s
    };
    [cut("CNI-"), cut("CNI-DN-")]
}

/// What to delete from the nat table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Rules outside the chains below (the jumps to them).
    pub rules: Vec<NatRule>,
    /// Chains to flush and delete.
    pub chains: BTreeSet<String>,
}

impl Cleanup {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.chains.is_empty()
    }
}

/// The rules and chains of `networks` owned by sandbox ids `gone` says
/// are gone. Shared chains (`CNI-HOSTPORT-*`) are never touched.
pub fn plan(table: &NatTable, networks: &[&str], gone: impl Fn(&str) -> bool) -> Cleanup {
    let mut owners = BTreeSet::new();
    let mut chains = BTreeSet::new();
    let mut owned = vec![];
    for r in &table.rules {
        let Some((net, id)) = r.comment().and_then(owner) else {
            continue;
        };
        if !networks.contains(&net) || !gone(id) {
            continue;
        }
        owners.insert((net.to_string(), id.to_string()));
        if let Some(j) = r.jump().filter(|j| is_pod_chain(j)) {
            chains.insert(j.to_string());
        }
        owned.push(r.clone());
    }
    // Chains whose jumps are gone already still carry the owner's name.
    for (net, id) in &owners {
        chains.extend(chain_names(net, id));
    }
    chains.retain(|c| table.chains.contains(c));
    Cleanup {
        rules: owned
            .into_iter()
            .filter(|r| !chains.contains(&r.chain))
            .collect(),
        chains,
    }
}

/// Like [`plan`], for the leftovers of known sandbox ids (their chains
/// are found by name even without a rule naming them).
pub fn plan_for_ids(table: &NatTable, networks: &[&str], ids: &BTreeSet<String>) -> Cleanup {
    let mut c = plan(table, networks, |id| ids.contains(id));
    for net in networks {
        for id in ids {
            c.chains.extend(
                chain_names(net, id)
                    .into_iter()
                    .filter(|ch| table.chains.contains(ch)),
            );
        }
    }
    c
}

fn is_pod_chain(chain: &str) -> bool {
    chain.starts_with("CNI-") && !chain.starts_with("CNI-HOSTPORT-")
}

/// The nat table, read and changed (the real one: `iptables`).
pub trait Iptables: Send + Sync {
    /// `iptables -t nat -S`.
    fn list(&self) -> io::Result<String>;
    /// `iptables -t nat <args>`.
    fn run(&self, args: &[String]) -> io::Result<()>;
}

/// The `iptables` command (waiting up to 5 s for the xtables lock, which
/// the CNI plugins take too).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemIptables;

impl SystemIptables {
    fn command(args: &[String]) -> io::Result<std::process::Output> {
        std::process::Command::new("iptables")
            .args(["-w", "5", "-t", "nat"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    }
}

impl Iptables for SystemIptables {
    fn list(&self) -> io::Result<String> {
        let out = Self::command(&["-S".to_string()])?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn run(&self, args: &[String]) -> io::Result<()> {
        let out = Self::command(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "iptables -t nat {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Deletes the rules, then flushes and deletes the chains; returns how
/// many rules and chains went, and the errors (a rule or chain gone
/// meanwhile is one of them, and harmless).
pub fn apply(ipt: &dyn Iptables, c: &Cleanup) -> (usize, Vec<io::Error>) {
    let mut done = 0;
    let mut errors = vec![];
    for r in &c.rules {
        let mut args = vec!["-D".to_string(), r.chain.clone()];
        args.extend(r.args.iter().cloned());
        match ipt.run(&args) {
            Ok(()) => done += 1,
            Err(e) => errors.push(e),
        }
    }
    for ch in &c.chains {
        let flushed = ipt.run(&["-F".to_string(), ch.clone()]);
        match flushed.and_then(|()| ipt.run(&["-X".to_string(), ch.clone()])) {
            Ok(()) => done += 1,
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}

/// host-local lease files (`<ip>`, first line the sandbox id) in a
/// network's lease directory: path -> (id, last change).
pub fn leases(dir: &Path) -> BTreeMap<PathBuf, (String, SystemTime)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name != "lock" && !name.starts_with("last_reserved_ip")
        })
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let id = text.lines().next()?.trim().to_string();
            let changed = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((e.path(), (id, changed)))
        })
        .collect()
}

/// Removes lease files while holding host-local's lock on the directory
/// (it holds it while it allocates or releases). Returns how many went.
pub fn remove_leases(dir: &Path, files: &[PathBuf]) -> io::Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let mut removed = 0;
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Unlocked when the file closes.
    Ok(removed)
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;
