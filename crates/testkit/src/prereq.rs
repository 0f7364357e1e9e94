//! What root-only test tiers need, and the one rule for when it is
//! missing: skip with a message, or fail when `CORRAL_REQUIRE_ROOT_TESTS=1`
//! (CI sets it, so a missing package cannot turn into a silent pass).

use std::path::PathBuf;

pub const REQUIRE_ENV: &str = "CORRAL_REQUIRE_ROOT_TESTS";

/// `true` when nothing is missing; otherwise skip (with a message) or
/// panic, as [`REQUIRE_ENV`] says.
pub fn can_run(test: &str, cannot: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: cannot {cannot} here; missing: {}",
        missing.join(", ")
    );
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{msg} ({REQUIRE_ENV}=1 forbids skipping)");
    }
    eprintln!("SKIPPED {msg} (set {REQUIRE_ENV}=1 to make this a failure)");
    false
}

/// A binary on PATH or in the usual system directories.
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
