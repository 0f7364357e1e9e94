//! The `corral` binary the clusters run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `corral` binary: `$CORRAL_BIN` when set, else
/// `<target>/debug/corral` (`$CARGO_TARGET_DIR` or the workspace's
/// `target/`), brought up to date once per test process with
/// `cargo build -p corral` (a no-op when it is current; skipped with
/// `CORRAL_TEST_NO_BUILD=1`). Panics, saying how to build it, when there
/// is none.
pub fn corral_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_build).clone()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn find_or_build() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_relative() { root.join(t) } else { t })
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("corral");
    if std::env::var("CORRAL_TEST_NO_BUILD").is_ok_and(|v| v == "1") && bin.is_file() {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let out = Command::new(&cargo)
        .args(["build", "-p", "corral", "--quiet"])
        .current_dir(&root)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let took = started.elapsed();
            if took.as_secs() >= 2 {
                eprintln!("built {} in {took:?}", bin.display());
            }
        }
        Ok(o) if bin.is_file() => eprintln!(
            "warning: `cargo build -p corral` failed; using the existing {} (maybe stale):\n{}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if bin.is_file() => eprintln!(
            "warning: cannot run cargo ({e}); using the existing {} (maybe stale)",
            bin.display()
        ),
        Ok(o) => panic!(
            "{} is missing and `cargo build -p corral` failed; build it with `cargo build -p corral`:\n{}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "{} is missing and cargo cannot run ({e}); build it with `cargo build -p corral` or set CORRAL_BIN",
            bin.display()
        ),
    }
    assert!(
        bin.is_file(),
        "{} is missing after `cargo build -p corral`; set CARGO_TARGET_DIR or CORRAL_BIN",
        bin.display()
    );
    bin
}
