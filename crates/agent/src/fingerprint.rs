//! What this node is: cores, memory, os, arch, hostname, kernel.

use std::collections::BTreeMap;

use corral_types::Resources;
use corral_types::units::{Bytes, MilliCpu};

pub struct Facts {
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub hostname: String,
}

pub fn detect() -> Facts {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let memory = meminfo_total().unwrap_or(1 << 30);
    let uname = rustix::system::uname();
    let hostname = uname.nodename().to_string_lossy().to_string();
    let mut attributes = BTreeMap::new();
    attributes.insert("os".into(), std::env::consts::OS.to_string());
    attributes.insert("arch".into(), std::env::consts::ARCH.to_string());
    attributes.insert("hostname".into(), hostname.clone());
    attributes.insert(
        "kernel".into(),
        uname.release().to_string_lossy().to_string(),
    );
    attributes.insert("cores".into(), cores.to_string());
    attributes.insert("memory".into(), Bytes(memory).to_string());
    Facts {
        resources: Resources {
            disk: Default::default(),
            cpu: MilliCpu(cores * 1000),
            memory: Bytes(memory),
        },
        attributes,
        hostname,
    }
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_this_machine() {
        let f = super::detect();
        assert!(f.resources.cpu.0 >= 1000);
        assert!(f.resources.memory.0 > 64 << 20);
        assert_eq!(f.attributes["os"], "linux");
        assert!(!f.attributes["kernel"].is_empty());
    }
}
