//! The node's volume settings from flags over the config file's `[agent]`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use corral_agent::volumes::VolumesConfig;
use corral_volumes::ProviderKind;

use crate::args::VolumeArgs;

/// File keys: `volumes_dir`, `volume_provider`, `volumes_reserved`, `volumes`.
pub struct FileKeys<'a> {
    pub dir: Option<&'a Path>,
    pub provider: Option<&'a str>,
    pub reserved: Option<&'a str>,
    pub on: Option<bool>,
}

pub fn config(
    a: &VolumeArgs,
    file: FileKeys<'_>,
    data_dir: &Path,
) -> Result<Option<VolumesConfig>> {
    if a.no_volumes || (file.on == Some(false) && a.volumes_dir.is_none()) {
        return Ok(None);
    }
    let dir = a
        .volumes_dir
        .clone()
        .or(file.dir.map(PathBuf::from))
        .unwrap_or_else(|| data_dir.join("volumes"));
    let provider = match a
        .volume_provider
        .as_deref()
        .map(|p| ("--volume-provider", p))
        .or(file.provider.map(|p| ("config key volume_provider", p)))
    {
        None => None,
        Some((what, p)) => Some(parse_provider(p).map_err(|e| anyhow::anyhow!("{what}: {e}"))?),
    };
    let reserved_bytes = match file.reserved {
        Some(r) => {
            corral_types::units::parse_size(r)
                .map_err(|e| anyhow::anyhow!("config key volumes_reserved: {e}"))?
                .0
        }
        None => 0,
    };
    Ok(Some(VolumesConfig {
        dir,
        provider,
        reserved_bytes,
    }))
}

fn parse_provider(p: &str) -> Result<ProviderKind, String> {
    match p {
        "btrfs-image" => Ok(ProviderKind::BtrfsImage),
        "ext4-image" => Ok(ProviderKind::Ext4Image),
        "host" => Ok(ProviderKind::Host),
        other => Err(format!(
            "unknown volume provider {other:?}; use btrfs-image, ext4-image or host"
        )),
    }
}
