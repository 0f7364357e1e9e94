use super::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn chain_lists_rotated_files_oldest_first_and_the_current_last() {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    assert!(chain(&cur).unwrap().is_empty());
    write(&cur, "c");
    write(&d.path().join("logs/app.log.10"), "10");
    write(&d.path().join("logs/app.log.9"), "9");
    // Neither rotated files of this task nor its current file.
    write(&d.path().join("logs/app.log.x"), "");
    write(&d.path().join("logs/app.logs"), "");
    write(&d.path().join("logs/web.log.1"), "");
    let files = chain(&cur).unwrap();
    assert_eq!(
        files.iter().map(|f| f.seq).collect::<Vec<_>>(),
        vec![Some(9), Some(10), None]
    );
    assert_eq!(files[2].path, cur);
}

#[test]
fn rotate_renames_and_prunes() {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    for i in 0..5 {
        write(&cur, &format!("{i}"));
        let to = rotate(&cur, 3).unwrap();
        assert!(
            to.to_string_lossy()
                .ends_with(&format!("app.log.{}", i + 1))
        );
        assert!(!cur.exists());
    }
    let files = chain(&cur).unwrap();
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(&f.path).unwrap())
        .collect();
    assert_eq!(texts, vec!["3", "4"]);
    // One file at most: nothing rotated is kept.
    write(&cur, "x");
    rotate(&cur, 1).unwrap();
    assert!(chain(&cur).unwrap().is_empty());
}

#[test]
fn starts_are_recorded_and_trimmed() {
    let d = tempfile::tempdir().unwrap();
    assert!(starts(d.path(), "app").is_empty());
    for i in 0..(STARTS_KEPT * 2 + 1) as i64 {
        record_start(d.path(), "app", Timestamp(i * 1000)).unwrap();
    }
    let s = starts(d.path(), "app");
    assert_eq!(s.len(), STARTS_KEPT);
    assert_eq!(s.last(), Some(&Timestamp((STARTS_KEPT as i64 * 2) * 1000)));
    record_start(d.path(), "app", Timestamp(1)).unwrap();
    assert_eq!(starts(d.path(), "app").len(), STARTS_KEPT + 1);
}

#[test]
fn tasks_are_found_by_their_files() {
    let d = tempfile::tempdir().unwrap();
    assert!(tasks(d.path()).is_empty());
    write(&log_file(d.path(), "web"), "");
    write(&d.path().join("logs/web.log.3"), "");
    record_start(d.path(), "side", Timestamp(0)).unwrap();
    write(&d.path().join("logs/.web.5.stdout"), "");
    assert_eq!(tasks(d.path()), vec!["side", "web"]);
}
