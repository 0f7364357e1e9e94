use std::path::Path;
use std::time::Duration;

use super::*;
use crate::layout::sweep;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn sweep_deletes_only_stopped_allocations_past_retention() {
    let d = tempfile::tempdir().unwrap();
    let allocs = d.path();
    for id in ["stopped", "running", "adopted"] {
        write(&log_file(&allocs.join(id), "app"), "x");
    }
    write(&allocs.join("adopted/alloc.json"), "{}");
    // Within the retention: all stay.
    assert_eq!(sweep(allocs, Duration::from_secs(3600), |_| false), 0);
    assert!(allocs.join("stopped").exists());
    // Past it: only the stopped one without a runner goes.
    assert_eq!(sweep(allocs, Duration::ZERO, |id| id == "running"), 1);
    assert!(!allocs.join("stopped").exists());
    assert!(allocs.join("running").exists());
    assert!(allocs.join("adopted").exists());
    // No allocations dir yet: nothing to do.
    assert_eq!(sweep(&allocs.join("nope"), Duration::ZERO, |_| false), 0);
}

#[test]
fn sweep_interval_follows_the_retention() {
    assert_eq!(sweep_interval(DEFAULT_RETENTION), Duration::from_secs(600));
    assert_eq!(
        sweep_interval(Duration::from_secs(8)),
        Duration::from_secs(2)
    );
    assert_eq!(sweep_interval(Duration::ZERO), Duration::from_secs(1));
}
