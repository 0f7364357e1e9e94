//! How full the filesystem under a path is (statvfs), as `df` counts it:
//! used / (used + available to unprivileged users).

use std::path::Path;

use super::rules::DiskUsage;

pub fn usage(path: &Path) -> Result<DiskUsage, String> {
    let st = rustix::fs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    let total = used + st.f_bavail;
    Ok(DiskUsage {
        path: path.display().to_string(),
        used: if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_temp_dir_has_a_usage_between_0_and_1() {
        let dir = std::env::temp_dir();
        let u = super::usage(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!((0.0..=1.0).contains(&u.used), "{u:?}");
        assert!(super::usage(std::path::Path::new("/no/such/dir")).is_err());
    }
}
