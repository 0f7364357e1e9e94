//! Images that do not come from a registry: OCI tarballs imported with
//! `ctr` into the namespace the CRI uses (`k8s.io`), where the CRI sees
//! them at once.

use std::path::{Path, PathBuf};

use super::ContainerdError;

/// containerd namespace of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// `ctr`, from the PATH or beside containerd.
pub fn find_ctr_binary() -> Option<PathBuf> {
    super::find_in_path("ctr")
}

/// Imports an OCI (or docker) image tarball into containerd at `address`
/// (its grpc socket) and returns the names of the imported images.
pub async fn import_image(address: &Path, tar: &Path) -> Result<Vec<String>, ContainerdError> {
    let ctr = find_ctr_binary().ok_or(ContainerdError::NotInstalled)?;
    let out = tokio::process::Command::new(&ctr)
        .arg("--address")
        .arg(address)
        .args(["-n", CRI_NAMESPACE, "images", "import", "--all-platforms"])
        .arg(tar)
        .output()
        .await
        .map_err(|source| ContainerdError::Spawn {
            bin: ctr.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(ContainerdError::Import {
            tar: tar.to_path_buf(),
            detail: format!("{} {}", stderr.trim(), stdout.trim())
                .trim()
                .to_string(),
        });
    }
    let names = imported_names(&stdout);
    if names.is_empty() {
        return Err(ContainerdError::Import {
            tar: tar.to_path_buf(),
            detail: format!(
                "ctr imported no named image (does index.json carry the io.containerd.image.name annotation?): {}",
                stdout.trim()
            ),
        });
    }
    Ok(names)
}

/// Names from ctr's `unpacking NAME (sha256:...)...done` lines.
pub fn imported_names(stdout: &str) -> Vec<String> {
    let mut names: Vec<String> = stdout
        .split("unpacking ")
        .skip(1)
        .filter_map(|rest| rest.split_once(" (").map(|(n, _)| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_ctr_output() {
        let out = "unpacking corral.local/pause:1 (sha256:4a5b...)...done\nunpacking corral.local/app:2 (sha256:77...)...done\n";
        assert_eq!(
            imported_names(out),
            vec!["corral.local/pause:1", "corral.local/app:2"]
        );
        assert!(imported_names("").is_empty());
    }
}
