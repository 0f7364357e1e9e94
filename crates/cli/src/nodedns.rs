//! The node DNS setting of `corral dev` and `corral agent`: off, an
//! address the user set, or by default the gateway of the pod network
//! (where pods reach the node), port 53.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Result, anyhow};
use corral_agent::dns::{self, DnsConfig};

use crate::args::DnsArgs;

/// `file_addr`/`file_on`: the config file's `dns_addr` and `dns`. `cni_dir`:
/// the CNI conf dir of the node's containerd when the container driver is
/// used (no pods, no default).
pub fn config(
    a: &DnsArgs,
    file_addr: Option<&str>,
    file_on: Option<bool>,
    cni_dir: Option<&Path>,
) -> Result<Option<DnsConfig>> {
    if a.no_dns || (file_on == Some(false) && a.dns_addr.is_none()) {
        return Ok(None);
    }
    if let Some((key, s)) = a
        .dns_addr
        .as_deref()
        .map(|s| ("--dns-addr", s))
        .or(file_addr.map(|s| ("config key dns_addr", s)))
    {
        let addr = dns::parse_addr(s).map_err(|e| anyhow!("{key}: {e}"))?;
        return Ok(Some(DnsConfig::new(addr)));
    }
    let Some(dir) = cni_dir else {
        return Ok(None);
    };
    match corral_agent::containerd::cni_gateway(dir) {
        Some(ip) => {
            let mut c = DnsConfig::new(SocketAddr::new(ip, 53));
            c.optional = true;
            Ok(Some(c))
        }
        None => {
            tracing::info!(cni_dir = %dir.display(),
                "no node DNS: no pod bridge gateway in the CNI config; set --dns-addr to have one");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: Option<&str>, off: bool) -> DnsArgs {
        DnsArgs {
            dns_addr: addr.map(str::to_string),
            no_dns: off,
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_default_is_the_pod_gateway() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("10-x.conflist"),
            r#"{"plugins":[{"type":"bridge","isGateway":true,"ipam":{"ranges":[[{"subnet":"10.9.8.0/24"}]]}}]}"#,
        )
        .expect("write");
        let d = config(&args(None, false), None, None, Some(dir.path()))
            .expect("ok")
            .expect("on");
        assert_eq!(d.addr.to_string(), "10.9.8.1:53");
        assert!(d.optional);
        let d = config(
            &args(Some("10.0.0.1:5353"), false),
            Some("10.0.0.2"),
            Some(false),
            None,
        )
        .expect("ok")
        .expect("on");
        assert_eq!(d.addr.to_string(), "10.0.0.1:5353");
        assert!(!d.optional, "an address the user set must work");
        let d = config(&args(None, false), Some("10.0.0.2"), None, None)
            .expect("ok")
            .expect("on");
        assert_eq!(d.addr.to_string(), "10.0.0.2:53");
        assert!(
            config(&args(None, true), Some("10.0.0.2"), None, Some(dir.path()))
                .expect("ok")
                .is_none()
        );
        assert!(
            config(&args(None, false), None, Some(false), Some(dir.path()))
                .expect("ok")
                .is_none()
        );
        assert!(
            config(&args(None, false), None, None, None)
                .expect("ok")
                .is_none(),
            "no pods, no default"
        );
        let e = config(&args(Some("x"), false), None, None, None).expect_err("bad");
        assert!(e.to_string().contains("--dns-addr"), "{e}");
    }
}
